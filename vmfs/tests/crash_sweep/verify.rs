//! Recover one crash image and hold it against the model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use vmfs::cluster::{recover_offline, Host, HostConfig, ManualClock, Timeouts};
use vmfs::dev::SharedDev;
use vmfs::fs::check::check;
use vmfs::fs::Fs;
use vmfs::volume::Volume;

use super::workload::{Entry, Model};

/// Largest file the workload makes; anything bigger is damage.
const MAX_FILE: u64 = 80 << 20;
const DT_DIR: u8 = 4;

pub fn timeouts() -> Timeouts {
    Timeouts::scaled(1.0 / 30.0)
}

/// Join a host on `dev` (a hand-moved clock: no heartbeat thread is needed
/// and nothing depends on real time) and mount.
pub fn mount(dev: SharedDev) -> Result<Fs, String> {
    let vol = Volume::open(dev).map_err(|e| format!("open volume: {e}"))?;
    let mut cfg = HostConfig::new("checker");
    cfg.clock = Arc::new(ManualClock::new(Duration::from_secs(1_000)));
    cfg.timeouts = Some(timeouts());
    cfg.join_timeout = Duration::from_secs(5);
    let host = Host::join(vol, cfg).map_err(|e| format!("join: {e}"))?;
    Fs::mount(host).map_err(|e| format!("mount: {e}"))
}

/// Unmount and leave.
pub fn stop(fs: Fs) -> Result<(), String> {
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let h = fs.host().clone();
    drop(fs);
    h.leave().map_err(|e| format!("leave: {e}"))
}

/// Check the volume; `finished`: no orphan may still be pending (the
/// mount after the crash finishes them all).
fn consistent(dev: &SharedDev, when: &str, finished: bool) -> Result<(), String> {
    let vol = Volume::open(dev.clone()).map_err(|e| format!("open volume: {e}"))?;
    let r = check(&vol).map_err(|e| format!("check {when}: {e}"))?;
    if !r.problems.is_empty() {
        return Err(format!("inconsistent {when}: {:?}", r.problems));
    }
    if finished && r.pending_orphans > 0 {
        return Err(format!(
            "{when}: {} orphans still pending (space not freed)",
            r.pending_orphans
        ));
    }
    Ok(())
}

/// Every name under the root: path -> (is a directory, inode).
fn walk(fs: &Fs) -> Result<BTreeMap<String, (bool, u64)>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), fs.root())];
    while let Some((path, ino)) = todo.pop() {
        let mut off = 0;
        loop {
            let items = fs
                .readdir(ino, off, 256)
                .map_err(|e| format!("readdir {path:?}: {e}"))?;
            let Some(last) = items.last() else { break };
            off = last.next;
            for it in items {
                if it.name == b"." || it.name == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(&it.name);
                let p = if path.is_empty() {
                    name.into_owned()
                } else {
                    format!("{path}/{name}")
                };
                let dir = it.dtype == DT_DIR;
                if dir {
                    todo.push((p.clone(), it.ino));
                }
                out.insert(p, (dir, it.ino));
            }
        }
    }
    Ok(out)
}

fn read_all(fs: &Fs, ino: u64) -> Result<Vec<u8>, String> {
    let size = fs
        .getattr(ino)
        .map_err(|e| format!("getattr {ino}: {e}"))?
        .size;
    if size > MAX_FILE {
        return Err(format!("inode {ino}: size {size}"));
    }
    let fh = fs
        .open(ino, false)
        .map_err(|e| format!("open {ino}: {e}"))?;
    let r = fs.read(fh, 0, size as usize);
    fs.close(fh).map_err(|e| format!("close {ino}: {e}"))?;
    r.map_err(|e| format!("read {ino}: {e}"))
}

type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

fn read_xattrs(fs: &Fs, ino: u64) -> Result<Xattrs, String> {
    let mut out = BTreeMap::new();
    for n in fs
        .listxattr(ino)
        .map_err(|e| format!("listxattr {ino}: {e}"))?
    {
        let v = fs
            .getxattr(ino, &n)
            .map_err(|e| format!("getxattr {ino}: {e}"))?;
        out.insert(n, v);
    }
    Ok(out)
}

/// What is wrong with the recovered tree if it should be `m`.
fn mismatches(
    m: &Model,
    tree: &BTreeMap<String, (bool, u64)>,
    content: &HashMap<u64, Vec<u8>>,
    xattrs: &HashMap<u64, Xattrs>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (p, e) in &m.names {
        match (e, tree.get(p)) {
            (_, None) => bad.push(format!("{p} missing")),
            (Entry::Dir, Some((false, _))) => bad.push(format!("{p} is not a directory")),
            (Entry::File(_), Some((true, _))) => bad.push(format!("{p} is a directory")),
            _ => {}
        }
    }
    for p in tree.keys() {
        if !m.names.contains_key(p) {
            bad.push(format!("{p} should not exist"));
        }
    }
    let mut ino_of: HashMap<u32, u64> = HashMap::new();
    for (p, e) in &m.names {
        let (Entry::File(id), Some(&(false, ino))) = (e, tree.get(p)) else {
            continue;
        };
        if *ino_of.entry(*id).or_insert(ino) != ino {
            bad.push(format!("{p}: hard link names another inode"));
        }
        let want_x = m.xattrs.get(id).cloned().unwrap_or_default();
        if xattrs.get(&ino) != Some(&want_x) {
            bad.push(format!(
                "{p}: attributes {:?}, want {:?}",
                xattrs.get(&ino).map(|x| x.keys().collect::<Vec<_>>()),
                want_x.keys().collect::<Vec<_>>()
            ));
        }
        if let Some(Some(want)) = m.data.get(id) {
            match content.get(&ino) {
                Some(got) if got == want => {}
                Some(got) => {
                    let first = got.iter().zip(want).position(|(a, b)| a != b);
                    bad.push(format!(
                        "{p}: {} bytes, want {} (first difference at {first:?})",
                        got.len(),
                        want.len()
                    ));
                }
                None => bad.push(format!("{p}: unread")),
            }
        }
    }
    bad
}

/// Recover the image on `dev` offline, check it, mount it, and compare it
/// with each candidate model (it must match one). Then use the volume a
/// little (breaking the dead host's locks) and check it again.
pub fn recover_and_verify(dev: SharedDev, candidates: &[Model]) -> Result<(), String> {
    let vol = Volume::open(dev.clone()).map_err(|e| format!("open volume: {e}"))?;
    recover_offline(&vol).map_err(|e| format!("offline recovery: {e}"))?;
    consistent(&dev, "after recovery", false)?;
    let fs = mount(dev.clone())?;
    let tree = walk(&fs)?;
    // Content is read only where some candidate promises it (a large
    // unpromised file would cost a read per crash state for nothing).
    let promised: std::collections::HashSet<&String> = candidates
        .iter()
        .flat_map(|m| {
            m.names.iter().filter(move |(_, e)| match e {
                Entry::File(id) => matches!(m.data.get(id), Some(Some(_))),
                Entry::Dir => false,
            })
        })
        .map(|(p, _)| p)
        .collect();
    let mut content = HashMap::new();
    let mut xattrs = HashMap::new();
    for (p, (dir, ino)) in &tree {
        if !dir {
            if promised.contains(p) {
                content.insert(*ino, read_all(&fs, *ino)?);
            }
            xattrs.insert(*ino, read_xattrs(&fs, *ino)?);
        }
    }
    let mut best: Option<Vec<String>> = None;
    for m in candidates {
        let bad = mismatches(m, &tree, &content, &xattrs);
        if bad.is_empty() {
            best = None;
            break;
        }
        if best.as_ref().is_none_or(|b| bad.len() < b.len()) {
            best = Some(bad);
        }
    }
    if let Some(bad) = best {
        return Err(format!("does not match the model: {bad:?}"));
    }
    // Every file the dead host had open (or locked) is writable again.
    for (p, (dir, ino)) in &tree {
        if *dir {
            fs.create(*ino, b"after-crash", 0o644, 0, 0)
                .map_err(|e| format!("create in {p}: {e}"))?;
            fs.unlink(*ino, b"after-crash")
                .map_err(|e| format!("unlink in {p}: {e}"))?;
        } else {
            let fh = fs
                .open(*ino, true)
                .map_err(|e| format!("open {p} for write: {e}"))?;
            fs.write(fh, 0, b"x")
                .map_err(|e| format!("write {p}: {e}"))?;
            fs.close(fh).map_err(|e| format!("close {p}: {e}"))?;
        }
    }
    stop(fs)?;
    consistent(&dev, "after use", true)
}
