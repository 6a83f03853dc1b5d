//! The scripted workload and the model of what each step makes durable.
//!
//! Every filesystem operation commits its journal transaction before it
//! returns, so a finished namespace operation (create, mkdir, rename,
//! unlink, link, rmdir) is durable, and so is everything written before
//! it (the commit flushes the device). File data is promised only by
//! fsync, truncate and punch (each ends in a flush); a plain write makes a
//! file's content unpromised until then.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vmfs::dev::{FaultDev, LogEntry};
use vmfs::format::inode::DIRECT;
use vmfs::format::pointer::entries_per_block;
use vmfs::format::ResourceKind;
use vmfs::fs::{Falloc, Fs, SetAttr, XattrSet};

/// A name in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A regular file, by model id (hard links share one).
    File(u32),
}

/// What a crash must preserve.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Path ("d1/a") -> what it names.
    pub names: BTreeMap<String, Entry>,
    /// File id -> its promised content (None: nothing promised).
    pub data: BTreeMap<u32, Option<Vec<u8>>>,
    /// File id -> its user.* attributes (each change is durable on return).
    pub xattrs: BTreeMap<u32, BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// One workload step and the log entries it issued.
#[derive(Debug, Clone)]
pub struct Step {
    pub what: String,
    /// Log entries `start..end` were issued by this step.
    pub start: usize,
    pub end: usize,
    /// Files whose content the step changes (unpromised while it runs).
    pub touched: Vec<u32>,
    /// The model once the step has returned.
    pub after: Model,
}

/// A recorded run.
#[derive(Debug)]
pub struct Recording {
    pub log: Vec<LogEntry>,
    /// Model before the first step (the empty root).
    pub start: Model,
    pub steps: Vec<Step>,
}

impl Recording {
    /// Index of the last flush among a step's entries.
    pub fn last_flush(&self, s: &Step) -> Option<usize> {
        (s.start..s.end)
            .rev()
            .find(|&i| self.log[i] == LogEntry::Flush)
    }
}

/// Deterministic file content.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Runner {
    fs: Fs,
    fault: Arc<FaultDev>,
    log: Vec<LogEntry>,
    model: Model,
    /// File id -> what reads return now.
    cur: HashMap<u32, Vec<u8>>,
    /// File id -> open write handle.
    fhs: HashMap<u32, u64>,
    next_id: u32,
    steps: Vec<Step>,
    touched: Vec<u32>,
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    }
}

impl Runner {
    fn ino(&self, path: &str) -> u64 {
        let mut ino = self.fs.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self
                .fs
                .lookup(ino, part.as_bytes())
                .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
                .ino;
        }
        ino
    }

    fn parent(&self, path: &str) -> (u64, Vec<u8>) {
        let (d, n) = split(path);
        (self.ino(d), n.as_bytes().to_vec())
    }

    fn id(&self, path: &str) -> u32 {
        match self.model.names.get(path) {
            Some(Entry::File(id)) => *id,
            other => panic!("{path} is not a file in the model: {other:?}"),
        }
    }

    fn step(&mut self, what: &str, f: impl FnOnce(&mut Runner)) {
        self.log.extend(self.fault.take_log());
        let start = self.log.len();
        self.touched.clear();
        f(self);
        self.log.extend(self.fault.take_log());
        self.steps.push(Step {
            what: what.to_string(),
            start,
            end: self.log.len(),
            touched: std::mem::take(&mut self.touched),
            after: self.model.clone(),
        });
    }

    fn mkdir(&mut self, path: &str) {
        self.step(&format!("mkdir {path}"), |r| {
            let (p, n) = r.parent(path);
            r.fs.mkdir(p, &n, 0o755, 0, 0).expect("mkdir");
            r.model.names.insert(path.into(), Entry::Dir);
        });
    }

    fn rmdir(&mut self, path: &str) {
        self.step(&format!("rmdir {path}"), |r| {
            let (p, n) = r.parent(path);
            r.fs.rmdir(p, &n).expect("rmdir");
            r.model.names.remove(path);
        });
    }

    fn create(&mut self, path: &str) {
        self.step(&format!("create {path}"), |r| {
            let (p, n) = r.parent(path);
            r.fs.create(p, &n, 0o644, 0, 0).expect("create");
            let id = r.next_id;
            r.next_id += 1;
            r.cur.insert(id, Vec::new());
            r.model.data.insert(id, Some(Vec::new()));
            r.model.names.insert(path.into(), Entry::File(id));
        });
    }

    fn fh(&mut self, path: &str) -> u64 {
        let id = self.id(path);
        if let Some(&fh) = self.fhs.get(&id) {
            return fh;
        }
        let fh = self.fs.open(self.ino(path), true).expect("open");
        self.fhs.insert(id, fh);
        fh
    }

    /// Write `len` bytes of pattern `seed` at `off`; fsync if `sync`.
    fn write(&mut self, path: &str, off: u64, len: usize, seed: u64, sync: bool) {
        let what = format!(
            "write {path} {off}+{len}{}",
            if sync { " fsync" } else { "" }
        );
        self.step(&what, |r| {
            let id = r.id(path);
            r.touched.push(id);
            let fh = r.fh(path);
            let d = pattern(seed, len);
            assert_eq!(r.fs.write(fh, off, &d).expect("write"), len);
            let c = r.cur.get_mut(&id).expect("content");
            let end = off as usize + len;
            if c.len() < end {
                c.resize(end, 0);
            }
            c[off as usize..end].copy_from_slice(&d);
            if sync {
                r.fs.fsync(fh).expect("fsync");
                r.promise(id);
            } else {
                r.model.data.insert(id, None);
            }
        });
    }

    /// Preallocate `len` bytes from 0 (lazily zeroed, size extended). Not
    /// fsynced: the content stays unpromised (and unread by the checks).
    fn preallocate(&mut self, path: &str, len: u64) {
        self.step(&format!("preallocate {path} {len}"), |r| {
            let id = r.id(path);
            r.touched.push(id);
            let fh = r.fh(path);
            r.fs.fallocate(fh, 0, len, Falloc::AllocateLazy { keep_size: false })
                .expect("fallocate");
            let c = r.cur.get_mut(&id).expect("content");
            if (c.len() as u64) < len {
                c.resize(len as usize, 0);
            }
            r.model.data.insert(id, None);
        });
    }

    /// Preallocate (eager, size kept) one block past the small-file limit
    /// of a small-block file: the file is promoted to file blocks (its
    /// small blocks copied into a file block, then one transaction switches
    /// the map) and a zeroed block added past its end. The content does
    /// not change, so whatever was promised stays promised through every
    /// crash point of the promotion.
    fn promote(&mut self, path: &str) {
        self.step(&format!("promote {path}"), |r| {
            let fh = r.fh(path);
            let before = r.fs.getattr(r.ino(path)).expect("getattr").allocated;
            r.fs.fallocate(fh, 1 << 20, 64 << 10, Falloc::Allocate { keep_size: true })
                .expect("fallocate past the small-file limit");
            let after = r.fs.getattr(r.ino(path)).expect("getattr").allocated;
            assert!(
                before < 1 << 20 && after == 2 << 20,
                "{path}: {before} bytes in small blocks became {after} in two file blocks"
            );
        });
    }

    fn promise(&mut self, id: u32) {
        let c = self.cur[&id].clone();
        self.model.data.insert(id, Some(c));
    }

    fn fsync(&mut self, path: &str) {
        self.step(&format!("fsync {path}"), |r| {
            let fh = r.fh(path);
            r.fs.fsync(fh).expect("fsync");
            let id = r.id(path);
            r.promise(id);
        });
    }

    fn close(&mut self, path: &str) {
        self.step(&format!("close {path}"), |r| {
            let id = r.id(path);
            if let Some(fh) = r.fhs.remove(&id) {
                r.fs.close(fh).expect("close");
            }
        });
    }

    /// Write one byte into each of `n` file blocks that each sit under a
    /// pointer block of their own (past the direct slots and the single
    /// indirect range): a file of few blocks whose free still carries `n`
    /// pointer-block images. Content unpromised (never fsynced).
    fn scatter(&mut self, path: &str, n: u64) {
        self.step(&format!("scatter {path} over {n} pointer blocks"), |r| {
            let id = r.id(path);
            r.touched.push(id);
            let fh = r.fh(path);
            let h = r.fs.host().volume().header.clone();
            let ptr_size = h.region(ResourceKind::PointerBlock).resource_size;
            let entries = entries_per_block(ptr_size);
            let fbs = u64::from(h.file_block_size);
            for k in 0..n {
                let block = DIRECT as u64 + entries + k * entries;
                r.fs.write(fh, block * fbs, b"x").expect("write");
            }
            r.model.data.insert(id, None);
        });
    }

    fn truncate(&mut self, path: &str, size: u64) {
        self.step(&format!("truncate {path} {size}"), |r| {
            let id = r.id(path);
            r.touched.push(id);
            let ino = r.ino(path);
            let sa = SetAttr {
                size: Some(size),
                ..Default::default()
            };
            r.fs.setattr(ino, &sa).expect("truncate");
            r.cur
                .get_mut(&id)
                .expect("content")
                .resize(size as usize, 0);
            r.promise(id);
        });
    }

    fn punch(&mut self, path: &str, off: u64, len: u64) {
        self.step(&format!("punch {path} {off}+{len}"), |r| {
            let id = r.id(path);
            r.touched.push(id);
            let fh = r.fh(path);
            r.fs.fallocate(fh, off, len, Falloc::PunchHole)
                .expect("punch");
            let c = r.cur.get_mut(&id).expect("content");
            let s = (off as usize).min(c.len());
            let e = ((off + len) as usize).min(c.len());
            c[s..e].fill(0);
            r.promise(id);
        });
    }

    fn setxattr(&mut self, path: &str, name: &str, len: usize, seed: u64) {
        self.step(&format!("setxattr {path} {name} ({len} bytes)"), |r| {
            let id = r.id(path);
            let v = pattern(seed, len);
            r.fs.setxattr(r.ino(path), name.as_bytes(), &v, XattrSet::Any)
                .expect("setxattr");
            r.model
                .xattrs
                .entry(id)
                .or_default()
                .insert(name.as_bytes().to_vec(), v);
        });
    }

    fn removexattr(&mut self, path: &str, name: &str) {
        self.step(&format!("removexattr {path} {name}"), |r| {
            let id = r.id(path);
            r.fs.removexattr(r.ino(path), name.as_bytes())
                .expect("removexattr");
            let x = r.model.xattrs.get_mut(&id).expect("has attributes");
            x.remove(name.as_bytes());
            if x.is_empty() {
                r.model.xattrs.remove(&id);
            }
        });
    }

    fn link(&mut self, from: &str, to: &str) {
        self.step(&format!("link {from} {to}"), |r| {
            let id = r.id(from);
            let ino = r.ino(from);
            let (p, n) = r.parent(to);
            r.fs.link(ino, p, &n).expect("link");
            r.model.names.insert(to.into(), Entry::File(id));
        });
    }

    fn unlink(&mut self, path: &str) {
        self.step(&format!("unlink {path}"), |r| {
            let (p, n) = r.parent(path);
            r.fs.unlink(p, &n).expect("unlink");
            r.forget(path);
        });
    }

    /// Drop a name; drop the file's promise when it was the last one.
    fn forget(&mut self, path: &str) {
        if let Some(Entry::File(id)) = self.model.names.remove(path) {
            if !self.model.names.values().any(|e| *e == Entry::File(id)) {
                self.model.data.remove(&id);
                self.model.xattrs.remove(&id);
            }
        }
    }

    fn rename(&mut self, from: &str, to: &str) {
        self.step(&format!("rename {from} {to}"), |r| {
            let (op, on) = r.parent(from);
            let (np, nn) = r.parent(to);
            r.fs.rename(op, &on, np, &nn).expect("rename");
            r.forget(to);
            let moved: Vec<(String, Entry)> = r
                .model
                .names
                .iter()
                .filter(|(k, _)| *k == from || k.starts_with(&format!("{from}/")))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for (k, v) in moved {
                r.model.names.remove(&k);
                r.model.names.insert(format!("{to}{}", &k[from.len()..]), v);
            }
        });
    }
}

/// Run the script on a mounted `fs` whose device `fault` records.
pub fn run(fs: Fs, fault: Arc<FaultDev>, rounds: u32) -> Recording {
    let mut r = Runner {
        fs,
        fault,
        log: Vec::new(),
        model: Model::default(),
        cur: HashMap::new(),
        fhs: HashMap::new(),
        next_id: 0,
        steps: Vec::new(),
        touched: Vec::new(),
    };
    r.log.extend(r.fault.take_log());
    let start = r.model.clone();
    const MIB: u64 = 1 << 20;
    for round in 0..rounds {
        let s = u64::from(round) * 100;
        let d1 = format!("r{round}a");
        let d2 = format!("r{round}b");
        r.mkdir(&d1);
        r.mkdir(&d2);
        // A file kept open for write across the crash, fsynced.
        r.create(&format!("{d1}/a"));
        r.write(&format!("{d1}/a"), 0, 5000, s + 1, true);
        // Written, fsynced, closed.
        r.create(&format!("{d1}/b"));
        r.write(&format!("{d1}/b"), 0, 100 << 10, s + 2, true);
        r.close(&format!("{d1}/b"));
        // Written, never fsynced, left open.
        r.create(&format!("{d2}/c"));
        r.write(&format!("{d2}/c"), 0, 3000, s + 3, false);
        // A multi-block file.
        r.create(&format!("{d1}/big"));
        r.write(&format!("{d1}/big"), 0, (3 * MIB) as usize, s + 4, true);
        r.close(&format!("{d1}/big"));
        // Attributes: on a file open for write, on closed ones (replaced,
        // removed), on one renamed over and one deleted with its blocks.
        r.setxattr(&format!("{d1}/a"), "user.open", 100, s + 20);
        r.setxattr(&format!("{d1}/b"), "user.one", 3000, s + 21);
        r.setxattr(&format!("{d1}/b"), "user.two", 10, s + 22);
        r.setxattr(&format!("{d1}/b"), "user.one", 40, s + 23);
        r.removexattr(&format!("{d1}/b"), "user.two");
        r.setxattr(&format!("{d1}/big"), "user.big", 5000, s + 24);
        // Rename across directories.
        r.rename(&format!("{d1}/b"), &format!("{d2}/b2"));
        // Rename replacing an existing file.
        r.create(&format!("{d2}/t"));
        r.write(&format!("{d2}/t"), 0, 2000, s + 5, true);
        r.close(&format!("{d2}/t"));
        r.setxattr(&format!("{d2}/t"), "user.replaced", 200, s + 25);
        r.rename(&format!("{d2}/b2"), &format!("{d2}/t"));
        // Hard link, then drop one name.
        r.link(&format!("{d2}/t"), &format!("{d1}/tl"));
        r.unlink(&format!("{d2}/t"));
        // Shrink, punch, overwrite in place.
        r.truncate(&format!("{d1}/big"), MIB + MIB / 2 + 123);
        r.punch(&format!("{d1}/big"), 4096, MIB);
        r.close(&format!("{d1}/big"));
        r.write(&format!("{d1}/a"), 1000, 2000, s + 6, false);
        r.fsync(&format!("{d1}/a"));
        // Extend past a hole and fsync.
        r.write(&format!("{d1}/a"), 2 * MIB + 17, 700, s + 7, true);
        // Unlink a multi-block file.
        r.unlink(&format!("{d1}/big"));
        // A directory with a file in it, renamed across directories.
        r.mkdir(&format!("{d1}/sub"));
        r.create(&format!("{d1}/sub/x"));
        r.write(&format!("{d1}/sub/x"), 0, 1234, s + 8, true);
        r.close(&format!("{d1}/sub/x"));
        r.rename(&format!("{d1}/sub"), &format!("{d2}/sub"));
        // Create and remove.
        r.mkdir(&format!("{d2}/gone"));
        r.rmdir(&format!("{d2}/gone"));
        r.create(&format!("{d2}/tmp"));
        r.unlink(&format!("{d2}/tmp"));
        // The unsynced file finally synced.
        r.write(&format!("{d2}/c"), 1000, 5000, s + 9, false);
        r.fsync(&format!("{d2}/c"));
        // Unlinked while open (on the orphan table until its last close),
        // written through the handle after the unlink, then closed.
        r.create(&format!("{d1}/uo"));
        r.write(&format!("{d1}/uo"), 0, 300 << 10, s + 30, true);
        r.setxattr(&format!("{d1}/uo"), "user.x", 100, s + 31);
        let uo = r.fh(&format!("{d1}/uo"));
        r.unlink(&format!("{d1}/uo"));
        r.step("write unlinked", |r| {
            r.fs.write(uo, 4096, &pattern(s + 32, 5000)).expect("write");
        });
        r.step("close unlinked", |r| r.fs.close(uo).expect("close"));
        // A file of more than one free batch: truncated (the orphan table
        // covers the free), then deleted (likewise).
        if round == 0 {
            r.create(&format!("{d2}/huge"));
            r.write(&format!("{d2}/huge"), 0, 3000, s + 40, false);
            r.preallocate(&format!("{d2}/huge"), 66 * MIB);
            r.close(&format!("{d2}/huge"));
            r.truncate(&format!("{d2}/huge"), MIB + 10);
            r.preallocate(&format!("{d2}/huge"), 66 * MIB);
            r.close(&format!("{d2}/huge"));
            r.unlink(&format!("{d2}/huge"));
            // A file of few blocks (no free batches, so not listed up
            // front) whose free still does not fit the unlink's own
            // transaction: 1 MiB journal, 64 KiB pointer blocks, a quarter
            // of the journal in pointer-block images and more. It goes on
            // the orphan table before the unlink commits.
            r.create(&format!("{d2}/scattered"));
            r.scatter(&format!("{d2}/scattered"), 8);
            r.close(&format!("{d2}/scattered"));
            r.unlink(&format!("{d2}/scattered"));
        }
        // A small-block file with a hole, promoted to a file block by a
        // preallocation past the small-file limit (content unchanged and
        // promised throughout), then written in its file block.
        r.create(&format!("{d1}/p"));
        r.write(&format!("{d1}/p"), 0, 200 << 10, s + 60, true);
        r.write(&format!("{d1}/p"), 300 << 10, 5000, s + 61, true);
        r.promote(&format!("{d1}/p"));
        r.write(&format!("{d1}/p"), MIB - 100, 3000, s + 62, true);
        r.close(&format!("{d1}/p"));
        // One left unlinked and open at the crash.
        r.create(&format!("{d2}/left"));
        r.write(&format!("{d2}/left"), 0, 20000, s + 50, true);
        let left = r.fh(&format!("{d2}/left"));
        r.unlink(&format!("{d2}/left"));
        let _ = left;
    }
    Recording {
        log: r.log,
        start,
        steps: r.steps,
    }
}
