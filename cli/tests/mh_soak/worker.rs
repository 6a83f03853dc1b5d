//! One worker thread: a seeded random mix of operations through one mount,
//! each checked against the model (`model.rs`). Errors a race allows are
//! counted; any other outcome is a failure naming seed, host, operation and
//! path.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::content::{content, mismatch, Rng};
use super::model::{parent, pin_name, Hold, Kind, Model, Name, DIRS, PINS, PIN_DIR};
use super::{errno, errno_name, Shared};

const ENOENT: i32 = libc::ENOENT;
const ESTALE: i32 = libc::ESTALE;
const EBUSY: i32 = libc::EBUSY;

pub struct Worker {
    pub host: usize,
    pub index: usize,
    pub root: PathBuf,
    pub rng: Rng,
    pub sh: Arc<Shared>,
}

/// close(2) that reports its error (dropping a `File` ignores it).
pub fn close(f: File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by its `File`; closed exactly once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes version `version` of `id` over the open file, fsyncs it.
/// `pause` is slept halfway (to let other hosts try the file meanwhile).
/// An error names the step that failed and keeps its errno.
pub fn write_version(f: &File, id: u64, version: u64, pause: Duration) -> std::io::Result<()> {
    let step = |what: &'static str| {
        move |e: std::io::Error| {
            let n = errno(&e);
            std::io::Error::new(e.kind(), format!("{what}: {} ({e})", errno_name(n)))
        }
    };
    let data = content(id, version);
    let half = data.len() / 2;
    f.write_all_at(&data[..half], 0).map_err(step("pwrite"))?;
    std::thread::sleep(pause);
    f.write_all_at(&data[half..], half as u64)
        .map_err(step("pwrite"))?;
    truncate_retrying(f, data.len() as u64).map_err(step("ftruncate"))?;
    f.sync_all().map_err(step("fsync"))
}

/// ftruncate(2) calls that answered EBUSY and were tried again.
pub static FTRUNCATE_EBUSY_RETRIED: AtomicU64 = AtomicU64::new(0);

/// ftruncate, tried again (up to 20 times, 50 ms apart) when it answers
/// EBUSY: the known limit of docs/fuse.md ("freeing into a cluster another
/// host keeps", a wait that ends in EBUSY after D + T when two hosts'
/// operations wait for each other's cluster and directory locks). With
/// `VMFS_MH_STRICT=1` the first EBUSY fails the run instead.
fn truncate_retrying(f: &File, len: u64) -> std::io::Result<()> {
    let strict = std::env::var("VMFS_MH_STRICT").is_ok_and(|v| v == "1");
    let mut tries = 0;
    loop {
        match f.set_len(len) {
            Err(e) if errno(&e) == EBUSY && !strict && tries < 20 => {
                tries += 1;
                FTRUNCATE_EBUSY_RETRIED.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// [`close`] with the step named in the error.
pub fn close_named(f: File) -> std::io::Result<()> {
    close(f).map_err(|e| {
        let n = errno(&e);
        std::io::Error::new(e.kind(), format!("close: {} ({e})", errno_name(n)))
    })
}

fn is_churn_file(path: &str) -> bool {
    !Model::is_pin(path) && path.rsplit('/').next().unwrap().starts_with('f')
}

fn pick(rng: &mut Rng, m: &Model, pred: impl Fn(&str, &Name) -> bool) -> Option<String> {
    let c: Vec<&String> = m
        .names
        .iter()
        .filter(|(p, n)| pred(p, n))
        .map(|(p, _)| p)
        .collect();
    if c.is_empty() {
        None
    } else {
        Some(c[rng.below(c.len() as u64) as usize].clone())
    }
}

/// Epoch and claim of `path` and each directory above it.
fn stamps(m: &Model, path: &str) -> Vec<(u64, bool)> {
    let mut v = Vec::new();
    let mut p = path;
    while !p.is_empty() {
        if let Some(n) = m.names.get(p) {
            v.push((n.epoch, n.claimed));
        }
        p = parent(p);
    }
    v
}

/// Nothing about the name changed or was in flight between two stamps.
fn unchanged(before: &[(u64, bool)], after: &[(u64, bool)]) -> bool {
    before == after && before.iter().all(|s| !s.1)
}

impl Worker {
    pub fn run(&mut self, until: Instant) {
        while Instant::now() < until
            && !self.sh.aborted()
            && !self.sh.stop[self.host].load(Ordering::SeqCst)
        {
            let sh = self.sh.clone();
            let _between = sh.gate[self.host].read().unwrap();
            match self.rng.below(100) {
                0..=13 => self.create(),
                14..=27 => self.rewrite(),
                28..=45 => self.read(),
                46..=57 => self.rename(),
                58..=64 => self.unlink(),
                65..=68 => self.mkdir(),
                69..=72 => self.rmdir(),
                73..=84 => self.readdir(),
                _ => self.pin_write(),
            }
        }
    }

    fn who(&self) -> String {
        format!("host {} worker {}", self.host, self.index)
    }

    fn note(&self, id: u64, what: String) {
        self.sh.model.lock().unwrap().note(id, &self.who(), what);
    }

    /// After a wrong read or listing: `look(root)` on every host's mount,
    /// 1.2 s later (past the attribute timeout: tells a stale cache from
    /// damage on the volume), one line per host.
    fn on_every_host_later(&self, look: impl Fn(&std::path::Path) -> String) -> String {
        std::thread::sleep(Duration::from_millis(1200));
        let mut out = String::new();
        let Some(top) = self.root.parent() else {
            return out;
        };
        for h in 0..16 {
            let root = top.join(format!("m{h}"));
            if !root.exists() {
                break;
            }
            let mine = if root == self.root {
                " (this host)"
            } else {
                ""
            };
            out.push_str(&format!("  1.2 s later on m{h}{mine}: {}\n", look(&root)));
        }
        out
    }

    /// After a wrong read: what each host sees of `path` now.
    fn look_again(&self, path: &str, id: u64, version: u64) -> String {
        self.on_every_host_later(|root| {
            let p = root.join(path);
            let seen = std::fs::metadata(&p).and_then(|md| {
                let got = std::fs::read(&p)?;
                Ok(format!(
                    "stat {} bytes, read {}",
                    md.len(),
                    mismatch(&got, id, version).unwrap_or_else(|| "right".into())
                ))
            });
            format!("{seen:?}")
        })
    }

    /// After a wrong listing: whether each host lists `name` in `dir` now.
    fn list_again(&self, dir: &str, name: &str) -> String {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.on_every_host_later(|root| {
            let listed = std::fs::read_dir(root.join(dir)).map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy() == base)
                    .map(|e| e.ino())
                    .collect::<Vec<_>>()
            });
            let st = std::fs::symlink_metadata(root.join(name)).map(|md| md.ino());
            format!("listed with inode {listed:?}, lookup {st:?}")
        })
    }

    /// A failure about file `id`: its history is appended.
    fn fail_file(&self, op: &str, path: &str, id: u64, what: String) {
        let h = self.sh.model.lock().unwrap().history(id);
        self.fail(op, path, format!("{what}\nhistory of file {id}:\n{h}"));
    }

    fn fail(&self, op: &str, path: &str, what: String) {
        self.sh.fail(format!(
            "seed {} host {} worker {}: {op} {path}: {what}",
            self.sh.seed, self.host, self.index
        ));
    }

    /// An error: `always` errnos are allowed races, `if_racy` ones only when
    /// the names involved changed within the window; anything else fails.
    fn error(
        &self,
        op: &str,
        path: &str,
        e: &std::io::Error,
        always: &[i32],
        if_racy: &[i32],
        racy: bool,
    ) {
        let n = errno(e);
        // EBUSY is always allowed: besides open files and held locks, a
        // lookup or readdir gives up on a directory that kept changing
        // under other hosts' locks (`Fs::lock_wait`).
        if n == EBUSY || always.contains(&n) || (racy && if_racy.contains(&n)) {
            self.sh.count_race(op, n);
        } else if if_racy.contains(&n) {
            self.fail(
                op,
                path,
                format!(
                    "{} ({e}) although the names involved were settled for longer than the attribute timeout",
                    errno_name(n)
                ),
            );
        } else {
            self.fail(op, path, format!("{} ({e})", errno_name(n)));
        }
    }

    fn idle(&self) {
        self.sh.stats.lock().unwrap().idle += 1;
        std::thread::sleep(Duration::from_millis(1));
    }

    /// Claims (all or none) the names of `paths`; returns the claim list.
    /// Pick a name nobody has claimed that `pred` accepts (given the
    /// model, the path and its name) and claim it; `None` if there is none
    /// or the claim fails.
    fn pick_and_claim(
        &mut self,
        m: &mut Model,
        pred: impl Fn(&Model, &str, &Name) -> bool,
    ) -> Option<(String, Vec<String>)> {
        let path = pick(&mut self.rng, m, |p, n| !n.claimed && pred(m, p, n))?;
        let claims = self.claim(m, &[&path])?;
        Some((path, claims))
    }

    fn claim(&self, m: &mut Model, paths: &[&str]) -> Option<Vec<String>> {
        let mut c: Vec<String> = paths.iter().flat_map(|p| Model::claim_set(p)).collect();
        c.sort();
        c.dedup();
        m.claim(&c).then_some(c)
    }

    /// A write-open returned inode `ino`: record the hold, failing if
    /// another live host holds the same file open for write.
    fn hold(&self, op: &str, path: &str, ino: u64) -> Option<(u64, Hold)> {
        let mut m = self.sh.model.lock().unwrap();
        let id = *m.by_ino.get(&ino)?;
        let token = m.new_token();
        let f = m.files.get_mut(&id).unwrap();
        if let Some(o) = f.holds.iter().find(|h| h.host != self.host && !h.dead) {
            let o = *o;
            drop(m);
            self.fail(
                op,
                path,
                format!(
                    "write-open succeeded while host {} holds file {id} (inode {ino}) open for write",
                    o.host
                ),
            );
            return None;
        }
        let h = Hold {
            host: self.host,
            token,
            dead: false,
        };
        f.holds.push(h);
        Some((id, h))
    }

    fn unhold(&self, id: u64, h: Hold) {
        let mut m = self.sh.model.lock().unwrap();
        m.files.get_mut(&id).unwrap().holds.retain(|x| *x != h);
    }

    fn create(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        let Some((path, claims)) = self.pick_and_claim(&mut m, |m, p, n| {
            is_churn_file(p) && n.kind.is_none() && m.kind(parent(p)) == Some(Kind::Dir)
        }) else {
            drop(m);
            return self.idle();
        };
        let id = m.new_id();
        let racy = m.recent(&path);
        drop(m);
        sh.count_op("create");
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.root.join(&path))
        {
            Err(e) => self.error(
                "create",
                &path,
                &e,
                &[],
                &[ENOENT, ESTALE, libc::EEXIST],
                racy,
            ),
            Ok(f) => {
                let r = f.metadata().and_then(|md| {
                    write_version(&f, id, 1, Duration::ZERO)?;
                    close_named(f)?;
                    Ok(md.ino())
                });
                match r {
                    Ok(ino) => {
                        sh.model.lock().unwrap().created(&path, id, ino, 1);
                        self.note(id, "created it (write+fsync+close done)".into());
                    }
                    Err(e) => self.fail("create+write+fsync+close", &path, format!("{e}")),
                }
            }
        }
        sh.model.lock().unwrap().release(&claims);
    }

    fn rewrite(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        let Some((path, claims)) = self.pick_and_claim(&mut m, |_, p, n| {
            is_churn_file(p) && matches!(n.kind, Some(Kind::File(_)))
        }) else {
            drop(m);
            return self.idle();
        };
        let Some(Kind::File(id)) = m.kind(&path) else {
            unreachable!()
        };
        let racy = m.recent(&path);
        let f = m.files.get_mut(&id).unwrap();
        f.busy += 1;
        f.epoch += 1;
        let (version, ino) = (f.version + 1, f.ino);
        m.note(
            id,
            &self.who(),
            format!("write of version {version} through {path} begins"),
        );
        drop(m);
        sh.count_op("write");
        match OpenOptions::new().write(true).open(self.root.join(&path)) {
            Err(e) => {
                self.note(id, format!("write-open: {}", errno_name(errno(&e))));
                self.error("write-open", &path, &e, &[EBUSY], &[ENOENT, ESTALE], racy)
            }
            Ok(f) => self.rewrite_open(&path, f, id, version, ino, racy),
        }
        let mut m = sh.model.lock().unwrap();
        let f = m.files.get_mut(&id).unwrap();
        f.busy -= 1;
        f.epoch += 1;
        m.release(&claims);
    }

    fn rewrite_open(&mut self, path: &str, f: File, id: u64, version: u64, ino: u64, racy: bool) {
        let got = match f.metadata() {
            Ok(md) => md.ino(),
            Err(e) => return self.fail("fstat", path, format!("{e}")),
        };
        let Some((held, h)) = self.hold("write-open", path, got) else {
            if got != ino && racy {
                // A stale name on this host led to an inode no longer
                // recorded; nothing written.
                self.sh.count_race("write-open (stale name)", ESTALE);
            } else if got != ino {
                self.fail(
                    "write-open",
                    path,
                    format!("opened inode {got}, the name's file {id} is inode {ino}"),
                );
            }
            let _ = close(f);
            return;
        };
        if got != ino {
            self.unhold(held, h);
            self.note(
                id,
                format!("write-open reached inode {got} (file {held}); nothing written"),
            );
            if racy {
                self.sh.count_race("write-open (stale name)", ESTALE);
            } else {
                self.fail(
                    "write-open",
                    path,
                    format!(
                        "opened inode {got} (file {held}), the name's file {id} is inode {ino}"
                    ),
                );
            }
            let _ = close(f);
            return;
        }
        let pause = Duration::from_millis(self.rng.below(3));
        let r = write_version(&f, id, version, pause);
        self.unhold(id, h);
        match r.and_then(|()| close_named(f)) {
            Ok(()) => {
                self.sh.model.lock().unwrap().committed(id, version);
                self.note(
                    id,
                    format!("wrote version {version} (write+fsync+close done)"),
                );
            }
            Err(e) => self.fail_file("write+fsync+close", path, id, format!("{e}")),
        }
    }

    fn read(&mut self) {
        let sh = self.sh.clone();
        let m = sh.model.lock().unwrap();
        // Mostly files settled now, so that most reads are compared.
        let settled_only = self.rng.below(10) < 7;
        let now = Instant::now();
        let readable = |p: &str, n: &Name, settled_only: bool| match n.kind {
            Some(Kind::File(id)) => {
                !m.reserved_pin(p)
                    && (!settled_only || (!n.claimed && m.settled(id, now).is_some()))
            }
            _ => false,
        };
        let path = pick(&mut self.rng, &m, |p, n| readable(p, n, settled_only))
            .or_else(|| pick(&mut self.rng, &m, |p, n| readable(p, n, false)));
        let Some(path) = path else {
            drop(m);
            return self.idle();
        };
        let Some(Kind::File(named)) = m.kind(&path) else {
            unreachable!()
        };
        let recent = m.recent(&path);
        let before = stamps(&m, &path);
        drop(m);
        sh.count_op("read");
        let t_open = Instant::now();
        let r = File::open(self.root.join(&path));
        let name_settled = || {
            let m = sh.model.lock().unwrap();
            !recent && unchanged(&before, &stamps(&m, &path))
        };
        let f = match r {
            Err(e) => {
                let racy = !name_settled();
                return self.error("read-open", &path, &e, &[EBUSY], &[ENOENT, ESTALE], racy);
            }
            Ok(f) => f,
        };
        let (ino, size_at_open) = match f.metadata() {
            Ok(md) => (md.ino(), md.len()),
            // Removed and reclaimed by another host since the open (the
            // open held no lock: that host had the file open for write).
            Err(e) => {
                let racy = !name_settled();
                return self.error("fstat", &path, &e, &[], &[ESTALE], racy);
            }
        };
        let (id, s1) = {
            let m = sh.model.lock().unwrap();
            let id = m.by_ino.get(&ino).copied();
            (id, id.and_then(|id| m.settled(id, t_open)))
        };
        let mut got = Vec::new();
        let r = (&f).read_to_end(&mut got);
        let _ = close(f);
        if let Err(e) = r {
            let racy = s1.is_none() || !name_settled();
            return self.error("read", &path, &e, &[], &[ESTALE], racy);
        }
        if name_settled() && id != Some(named) {
            return self.fail(
                "read-open",
                &path,
                format!("opened inode {ino} (file {id:?}); the settled name holds file {named}"),
            );
        }
        let s2 = id.and_then(|id| sh.model.lock().unwrap().settled(id, t_open));
        match (id, s1) {
            (Some(id), Some((version, _))) if s1 == s2 => {
                if let Some(why) = mismatch(&got, id, version) {
                    self.note(
                        id,
                        format!(
                            "read {} bytes after an open at which fstat said {size_at_open}",
                            got.len()
                        ),
                    );
                    let again = self.look_again(&path, id, version);
                    return self.fail_file(
                        "read",
                        &path,
                        id,
                        format!(
                            "settled file {id} (inode {ino}) read wrong: {why}; fstat at open \
                             said {size_at_open} bytes\n{again}"
                        ),
                    );
                }
                sh.stats.lock().unwrap().reads_verified += 1;
            }
            _ => sh.stats.lock().unwrap().reads_unsettled += 1,
        }
    }

    fn rename(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        // Only names that have not changed within the window: the kernel
        // decides a rename between two names it maps to one inode by
        // itself (rename(2): "nothing, and success"), from its own cached
        // dentries. With a name another host changed moments ago, that
        // cache may put both names on the old inode, and the kernel would
        // report success for a rename the volume never saw (the caching
        // rule, docs/filesystem.md). The model cannot know which it was.
        let src = pick(&mut self.rng, &m, |p, n| {
            is_churn_file(p)
                && matches!(n.kind, Some(Kind::File(_)))
                && !n.claimed
                && !m.name_recent(p)
        });
        let replace = self.rng.below(2) == 0;
        let dst = src.as_ref().and_then(|src| {
            pick(&mut self.rng, &m, |p, n| {
                is_churn_file(p)
                    && p != src
                    && !n.claimed
                    && !m.name_recent(p)
                    && m.kind(parent(p)) == Some(Kind::Dir)
                    && n.kind.is_some() == replace
            })
        });
        let (Some(src), Some(dst)) = (src, dst) else {
            drop(m);
            return self.idle();
        };
        let Some(claims) = self.claim(&mut m, &[&src, &dst]) else {
            drop(m);
            return self.idle();
        };
        let racy = m.recent(&src) || m.recent(&dst);
        drop(m);
        sh.count_op(if replace { "rename-replace" } else { "rename" });
        match std::fs::rename(self.root.join(&src), self.root.join(&dst)) {
            Ok(()) => {
                let mut m = sh.model.lock().unwrap();
                m.renamed(&src, &dst);
                if let Some(Kind::File(id)) = m.kind(&dst) {
                    m.note(id, &self.who(), format!("rename {src} -> {dst} returned"));
                }
            }
            Err(e) => self.error(
                "rename",
                &format!("{src} -> {dst}"),
                &e,
                &[EBUSY],
                &[ENOENT, ESTALE],
                racy,
            ),
        }
        sh.model.lock().unwrap().release(&claims);
    }

    fn unlink(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        let Some((path, claims)) = self.pick_and_claim(&mut m, |_, p, n| {
            is_churn_file(p) && matches!(n.kind, Some(Kind::File(_)))
        }) else {
            drop(m);
            return self.idle();
        };
        let racy = m.recent(&path);
        drop(m);
        sh.count_op("unlink");
        match std::fs::remove_file(self.root.join(&path)) {
            Ok(()) => {
                let mut m = sh.model.lock().unwrap();
                if let Some(Kind::File(id)) = m.kind(&path) {
                    m.note(id, &self.who(), format!("unlink {path} returned"));
                }
                m.unlinked(&path);
            }
            Err(e) => self.error("unlink", &path, &e, &[EBUSY], &[ENOENT, ESTALE], racy),
        }
        sh.model.lock().unwrap().release(&claims);
    }

    fn mkdir(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        let Some((path, claims)) =
            self.pick_and_claim(&mut m, |_, p, n| Model::is_subdir(p) && n.kind.is_none())
        else {
            drop(m);
            return self.idle();
        };
        let racy = m.recent(&path);
        drop(m);
        sh.count_op("mkdir");
        match std::fs::create_dir(self.root.join(&path)) {
            Ok(()) => sh.model.lock().unwrap().dir_made(&path),
            Err(e) => self.error("mkdir", &path, &e, &[], &[libc::EEXIST, ESTALE], racy),
        }
        sh.model.lock().unwrap().release(&claims);
    }

    fn rmdir(&mut self) {
        let sh = self.sh.clone();
        let mut m = sh.model.lock().unwrap();
        let Some((path, claims)) =
            self.pick_and_claim(&mut m, |_, p, n| Model::is_subdir(p) && n.kind.is_some())
        else {
            drop(m);
            return self.idle();
        };
        let racy = m.recent(&path);
        // Every operation inside claims the subdirectory too: what the
        // model lists inside is exactly what is there.
        let full = m.children(&path).iter().any(|c| m.kind(c).is_some());
        drop(m);
        sh.count_op("rmdir");
        match std::fs::remove_dir(self.root.join(&path)) {
            Ok(()) if full => self.fail(
                "rmdir",
                &path,
                "removed a directory that holds files".into(),
            ),
            Ok(()) => sh.model.lock().unwrap().dir_removed(&path),
            Err(e) if errno(&e) == libc::ENOTEMPTY && full => {
                sh.count_race("rmdir", libc::ENOTEMPTY)
            }
            Err(e) => self.error("rmdir", &path, &e, &[EBUSY], &[ENOENT, ESTALE], racy),
        }
        sh.model.lock().unwrap().release(&claims);
    }

    fn readdir(&mut self) {
        let sh = self.sh.clone();
        let m = sh.model.lock().unwrap();
        let Some(dir) = pick(&mut self.rng, &m, |p, n| {
            (DIRS.contains(&p) || p == PIN_DIR || Model::is_subdir(p)) && n.kind == Some(Kind::Dir)
        }) else {
            drop(m);
            return self.idle();
        };
        let children = m.children(&dir);
        let before: Vec<_> = children
            .iter()
            .map(|c| (stamps(&m, c), m.recent(c), m.kind(c)))
            .collect();
        let dir_before = stamps(&m, &dir);
        // Changed lately, or claimed by an operation in flight.
        let dir_racy = m.recent(&dir) || dir_before.iter().any(|s| s.1);
        drop(m);
        sh.count_op("readdir");
        let rd = match std::fs::read_dir(self.root.join(&dir)) {
            Ok(rd) => rd,
            Err(e) => {
                let racy =
                    dir_racy || !unchanged(&dir_before, &stamps(&sh.model.lock().unwrap(), &dir));
                return self.error("readdir", &dir, &e, &[], &[ENOENT, ESTALE], racy);
            }
        };
        let mut seen = Vec::new();
        for ent in rd {
            let ent = match ent {
                Ok(x) => x,
                Err(e) => return self.error("readdir", &dir, &e, &[], &[ENOENT, ESTALE], true),
            };
            let name = format!("{dir}/{}", ent.file_name().to_string_lossy());
            if !children.contains(&name) {
                return self.fail(
                    "readdir",
                    &dir,
                    format!("lists {name}, a name no host made"),
                );
            }
            let st = std::fs::symlink_metadata(self.root.join(&name));
            seen.push((name, st));
        }
        // Errors other than a race's fail whatever the model says; EBUSY
        // (a lookup that gave up on a busy directory) is a race even for a
        // settled name, which is then not judged.
        let mut busy = Vec::new();
        for (name, st) in &seen {
            if let Err(e) = st {
                let n = errno(e);
                if ![ENOENT, ESTALE, EBUSY].contains(&n) {
                    return self.fail("stat", name, format!("{} ({e})", errno_name(n)));
                }
                if n == EBUSY {
                    sh.count_race("stat", EBUSY);
                    busy.push(name.clone());
                }
            }
        }
        let m = sh.model.lock().unwrap();
        if !unchanged(&dir_before, &stamps(&m, &dir)) || dir_racy {
            return;
        }
        for (c, (st_before, recent, kind)) in children.iter().zip(before) {
            if recent || !unchanged(&st_before, &stamps(&m, c)) {
                continue;
            }
            if busy.contains(c) {
                continue;
            }
            let found = seen.iter().find(|(n, _)| n == c);
            let what = match (kind, found) {
                (None, None) => continue,
                (Some(_), None) => "is missing from the listing".to_string(),
                (None, Some((_, st))) => {
                    let st = st.as_ref().map(|md| (md.ino(), md.nlink(), md.len()));
                    let again = self.list_again(&dir, c);
                    format!(
                        "is listed but was removed (stat as (ino, nlink, size): {st:?})\n{again}"
                    )
                }
                (Some(k), Some((_, Err(e)))) => format!("stat: {e} (model: {k:?})"),
                (Some(Kind::Dir), Some((_, Ok(md)))) if md.is_dir() => continue,
                (Some(Kind::File(id)), Some((_, Ok(md))))
                    if md.is_file() && md.ino() == m.files[&id].ino =>
                {
                    continue
                }
                (Some(k), Some((_, Ok(md)))) => format!(
                    "stat says {:?} inode {}, model {k:?}",
                    md.file_type(),
                    md.ino()
                ),
            };
            let what = format!("settled name {c} {what}\n{}", m.story_of(c));
            drop(m);
            return self.fail("readdir+stat", &dir, what);
        }
    }

    /// Write-open a pinned file; while another host holds it open for
    /// write (recorded before and after the attempt) EBUSY is the only
    /// right answer.
    fn pin_write(&mut self) {
        let sh = self.sh.clone();
        let i = self.rng.below(PINS as u64) as usize;
        let path = pin_name(i);
        let mut m = sh.model.lock().unwrap();
        let Some(Kind::File(id)) = m.kind(&path) else {
            unreachable!("pinned file {path} missing from the model")
        };
        if m.reserved[i] {
            drop(m);
            return self.idle();
        }
        let f = m.files.get_mut(&id).unwrap();
        if f.holds.iter().any(|h| h.host == self.host) {
            drop(m);
            return self.idle();
        }
        let others = |f: &super::model::File, me: usize| -> Vec<Hold> {
            f.holds
                .iter()
                .filter(|h| h.host != me && !h.dead)
                .copied()
                .collect()
        };
        let s1 = others(f, self.host);
        f.busy += 1;
        f.epoch += 1;
        let ino = f.ino;
        drop(m);
        sh.count_op("pin-write");
        let r = OpenOptions::new().write(true).open(self.root.join(&path));
        let s2 = others(&sh.model.lock().unwrap().files[&id], self.host);
        let through: Vec<&Hold> = s1.iter().filter(|h| s2.contains(h)).collect();
        match r {
            Err(e) if errno(&e) == EBUSY && !through.is_empty() => {
                sh.stats.lock().unwrap().ebusy_confirmed += 1;
            }
            Err(e) if !through.is_empty() => self.fail(
                "pin write-open",
                &path,
                format!(
                    "{} ({e}) while host {} held it open for write; only EBUSY is right",
                    errno_name(errno(&e)),
                    through[0].host
                ),
            ),
            Err(e) => self.error("pin write-open", &path, &e, &[EBUSY], &[], false),
            Ok(_) if !through.is_empty() => self.fail(
                "pin write-open",
                &path,
                format!(
                    "succeeded while host {} held it open for write since before the attempt",
                    through[0].host
                ),
            ),
            Ok(f) => self.pin_open(&path, f, id, ino),
        }
        let mut m = sh.model.lock().unwrap();
        let f = m.files.get_mut(&id).unwrap();
        f.busy -= 1;
        f.epoch += 1;
    }

    fn pin_open(&mut self, path: &str, f: File, id: u64, ino: u64) {
        match f.metadata() {
            Ok(md) if md.ino() == ino => {}
            Ok(md) => {
                return self.fail(
                    "pin write-open",
                    path,
                    format!("opened inode {}, not {ino}", md.ino()),
                )
            }
            Err(e) => return self.fail("fstat", path, format!("{e}")),
        }
        let Some((_, h)) = self.hold("pin write-open", path, ino) else {
            return;
        };
        let mut m = self.sh.model.lock().unwrap();
        let file = &m.files[&id];
        if file.holds.iter().any(|x| x.host == self.host && *x != h) {
            // Another worker of this host holds it (one host, one lock):
            // it is the writer.
            m.files.get_mut(&id).unwrap().holds.retain(|x| *x != h);
            drop(m);
            let _ = close(f);
            return;
        }
        let version = file.version + 1;
        m.note(
            id,
            &self.who(),
            format!("pinned write of version {version} holds it"),
        );
        drop(m);
        // vmfs retries a busy open for 300 ms: only a hold longer than
        // that makes another host's attempt end in EBUSY.
        let pause = if self.rng.below(3) == 0 {
            Duration::from_millis(350 + self.rng.below(400))
        } else {
            Duration::from_millis(5 + self.rng.below(45))
        };
        let r = write_version(&f, id, version, pause);
        self.unhold(id, h);
        match r.and_then(|()| close_named(f)) {
            Ok(()) => self.sh.model.lock().unwrap().committed(id, version),
            Err(e) => self.fail_file("pin write+fsync+close", path, id, format!("{e}")),
        }
    }
}
