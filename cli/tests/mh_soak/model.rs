//! The in-test record of what the volume must hold: every name of a fixed
//! universe (present as a file, a directory, or absent) and every file's
//! last version whose fsync + close returned. Workers claim the names an
//! operation touches, so two workers never race on one name (hosts still
//! race on the directories); the record is updated only after the
//! operation returned, which makes it exact whenever nothing is claimed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Fixed directories, never removed.
pub const DIRS: [&str; 3] = ["d0", "d1", "d2"];
/// Directory of the pinned files (never renamed or unlinked).
pub const PIN_DIR: &str = "pin";
pub const PINS: usize = 3;
/// The victim host's own scratch directory (not modelled).
pub const CRASH_DIR: &str = "crash";
const FILES_PER_DIR: usize = 14;
const SUBDIRS_PER_DIR: usize = 3;
const FILES_PER_SUBDIR: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File(u64),
    Dir,
}

#[derive(Clone, Debug)]
pub struct Name {
    pub kind: Option<Kind>,
    pub claimed: bool,
    /// Bumped by every recorded change.
    pub epoch: u64,
    /// When the last change was recorded.
    pub changed: Instant,
}

/// A write-open of a file, recorded after the open returned and removed
/// before the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub host: usize,
    pub token: u64,
    /// The holder's host was SIGKILLed.
    pub dead: bool,
}

#[derive(Clone, Debug)]
pub struct File {
    pub name: String,
    pub ino: u64,
    /// Last version whose fsync + close returned.
    pub version: u64,
    pub committed: Instant,
    /// Bumped whenever the content may have changed or the file went away.
    pub epoch: u64,
    pub live: bool,
    /// Written without an fsync by a host that then crashed.
    pub uncertain: bool,
    /// Writes being set up (bumped before the open).
    pub busy: u32,
    pub holds: Vec<Hold>,
    /// The last things done to it (printed with a failure about it).
    pub history: Vec<String>,
}

pub struct Model {
    pub names: BTreeMap<String, Name>,
    pub files: HashMap<u64, File>,
    pub by_ino: HashMap<u64, u64>,
    next_id: u64,
    next_token: u64,
    /// Pinned files reserved for the crash and takeover sequence.
    pub reserved: Vec<bool>,
    /// How long another host's kernel may show an old name or size.
    pub window: Duration,
    start: Instant,
}

pub fn pin_name(i: usize) -> String {
    format!("{PIN_DIR}/p{i}")
}

/// The directory of `path` ("" for the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

impl Model {
    pub fn new(window: Duration) -> Model {
        let now = Instant::now();
        let mut names = BTreeMap::new();
        let mut add = |n: String, kind: Option<Kind>| {
            names.insert(
                n,
                Name {
                    kind,
                    claimed: false,
                    epoch: 0,
                    changed: now,
                },
            );
        };
        for d in DIRS {
            add(d.into(), Some(Kind::Dir));
            for f in 0..FILES_PER_DIR {
                add(format!("{d}/f{f}"), None);
            }
            for s in 0..SUBDIRS_PER_DIR {
                add(format!("{d}/s{s}"), None);
                for f in 0..FILES_PER_SUBDIR {
                    add(format!("{d}/s{s}/f{f}"), None);
                }
            }
        }
        add(PIN_DIR.into(), Some(Kind::Dir));
        for i in 0..PINS {
            add(pin_name(i), None);
        }
        Model {
            names,
            files: HashMap::new(),
            by_ino: HashMap::new(),
            next_id: 1,
            next_token: 1,
            reserved: vec![false; PINS],
            window,
            start: now,
        }
    }

    /// Add to file `id`'s history.
    pub fn note(&mut self, id: u64, who: &str, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        if let Some(f) = self.files.get_mut(&id) {
            f.history.push(format!("{t:8.3}s {who}: {what}"));
            if f.history.len() > 64 {
                f.history.remove(0);
            }
        }
    }

    /// File `id`'s history, one event a line.
    /// The histories of every file that ever held `path`.
    pub fn story_of(&self, path: &str) -> String {
        let mut out = String::new();
        for (id, f) in &self.files {
            let mentions = f.history.iter().any(|h| {
                h.split(|c: char| c.is_whitespace() || c == ',')
                    .any(|w| w == path)
            });
            if mentions {
                out.push_str(&format!(
                    "history of file {id} (inode {}):\n{}\n",
                    f.ino,
                    f.history.join("\n")
                ));
            }
        }
        out
    }

    pub fn history(&self, id: u64) -> String {
        self.files
            .get(&id)
            .map(|f| f.history.join("\n"))
            .unwrap_or_default()
    }

    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    pub fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token - 1
    }

    /// A pinned file set aside for the crash sequence.
    pub fn reserved_pin(&self, path: &str) -> bool {
        (0..PINS).any(|i| self.reserved[i] && path == pin_name(i))
    }

    pub fn is_pin(path: &str) -> bool {
        parent(path) == PIN_DIR
    }

    /// Is `path` one of the removable subdirectories?
    pub fn is_subdir(path: &str) -> bool {
        path.matches('/').count() == 1 && path.rsplit('/').next().unwrap().starts_with('s')
    }

    /// The names an operation on `path` must claim: itself and, inside a
    /// removable subdirectory, that subdirectory.
    pub fn claim_set(path: &str) -> Vec<String> {
        let mut v = vec![path.to_string()];
        if Model::is_subdir(parent(path)) {
            v.push(parent(path).to_string());
        }
        v
    }

    /// Claim every name in `paths` (all or none).
    pub fn claim(&mut self, paths: &[String]) -> bool {
        if paths.iter().any(|p| self.names[p].claimed) {
            return false;
        }
        for p in paths {
            self.names.get_mut(p).unwrap().claimed = true;
        }
        true
    }

    pub fn release(&mut self, paths: &[String]) {
        for p in paths {
            self.names.get_mut(p).unwrap().claimed = false;
        }
    }

    pub fn kind(&self, path: &str) -> Option<Kind> {
        self.names.get(path).and_then(|n| n.kind)
    }

    /// Did `path` (or its directory) change within the window before now?
    /// Another host may then still see the old name.
    pub fn recent(&self, path: &str) -> bool {
        let now = Instant::now();
        let mut p = path;
        loop {
            if let Some(n) = self.names.get(p) {
                if n.changed + self.window > now {
                    return true;
                }
            }
            if p.is_empty() {
                return false;
            }
            p = parent(p);
        }
    }

    /// Did the name `path` itself (not its directory) change within the
    /// window? Another kernel may then still map it to the old inode.
    pub fn name_recent(&self, path: &str) -> bool {
        self.names
            .get(path)
            .is_some_and(|n| n.changed + self.window > Instant::now())
    }

    fn set_name(&mut self, path: &str, kind: Option<Kind>) {
        let n = self.names.get_mut(path).unwrap();
        n.kind = kind;
        n.epoch += 1;
        n.changed = Instant::now();
    }

    /// A file made and committed (fsync + close returned) at `path`.
    pub fn created(&mut self, path: &str, id: u64, ino: u64, version: u64) {
        self.set_name(path, Some(Kind::File(id)));
        self.by_ino.insert(ino, id);
        self.files.insert(
            id,
            File {
                name: path.into(),
                ino,
                version,
                committed: Instant::now(),
                epoch: 0,
                live: true,
                uncertain: false,
                busy: 0,
                holds: Vec::new(),
                history: Vec::new(),
            },
        );
        self.note(
            id,
            "model",
            format!("version {version} at {path}, inode {ino}"),
        );
    }

    /// Version `version` of `id` committed.
    pub fn committed(&mut self, id: u64, version: u64) {
        let f = self.files.get_mut(&id).unwrap();
        f.version = version;
        f.committed = Instant::now();
        f.uncertain = false;
        f.epoch += 1;
        self.note(id, "model", format!("version {version} committed"));
    }

    fn gone(&mut self, id: u64) {
        let f = self.files.get_mut(&id).unwrap();
        f.live = false;
        f.epoch += 1;
        let ino = f.ino;
        if self.by_ino.get(&ino) == Some(&id) {
            self.by_ino.remove(&ino);
        }
    }

    pub fn renamed(&mut self, src: &str, dst: &str) {
        let Some(Kind::File(id)) = self.kind(src) else {
            unreachable!("rename of {src}, not a file in the model")
        };
        if let Some(Kind::File(old)) = self.kind(dst) {
            self.gone(old);
            self.note(
                old,
                "model",
                format!("replaced by a rename of {src} to {dst}"),
            );
        }
        self.note(id, "model", format!("renamed {src} -> {dst}"));
        self.set_name(dst, Some(Kind::File(id)));
        self.set_name(src, None);
        self.files.get_mut(&id).unwrap().name = dst.into();
    }

    pub fn unlinked(&mut self, path: &str) {
        if let Some(Kind::File(id)) = self.kind(path) {
            self.gone(id);
            self.note(id, "model", format!("unlinked {path}"));
        }
        self.set_name(path, None);
    }

    pub fn dir_made(&mut self, path: &str) {
        self.set_name(path, Some(Kind::Dir));
    }

    pub fn dir_removed(&mut self, path: &str) {
        self.set_name(path, None);
    }

    /// Names directly inside `dir`.
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.names
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Is file `id` settled: live, not being written, last committed
    /// before `since - window`, so any host reads exactly that version?
    pub fn settled(&self, id: u64, since: Instant) -> Option<(u64, u64)> {
        let f = self.files.get(&id)?;
        let ok = f.live
            && !f.uncertain
            && f.busy == 0
            && f.holds.is_empty()
            && f.committed + self.window < since;
        ok.then_some((f.version, f.epoch))
    }
}
