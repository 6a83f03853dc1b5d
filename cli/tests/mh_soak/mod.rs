//! The multi-host FUSE exerciser's parts: file contents, the model, the
//! workers, the final check. Used by `fuse_multihost_soak.rs`.

pub mod checker;
pub mod content;
pub mod model;
pub mod verify;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use model::Model;

/// Everything the workers and the driver share.
pub struct Shared {
    pub seed: u64,
    pub model: Mutex<Model>,
    pub stats: Mutex<Stats>,
    pub failures: Mutex<Vec<String>>,
    /// Set on the first failure: every worker stops.
    pub abort: AtomicBool,
    /// Per host: its workers stop (end of the run, or before its crash).
    pub stop: Vec<AtomicBool>,
    /// Per host: each operation runs under a read guard; the driver takes
    /// the write side to hold that host's workers between operations.
    pub gate: Vec<RwLock<()>>,
}

#[derive(Default)]
pub struct Stats {
    /// Operations started, per kind.
    pub ops: BTreeMap<&'static str, u64>,
    /// Errors the rules allow under races, per operation and errno.
    pub races: BTreeMap<String, u64>,
    /// Reads compared byte for byte with a settled version.
    pub reads_verified: u64,
    /// Reads of files that were being changed (not compared).
    pub reads_unsettled: u64,
    /// Write-opens refused with EBUSY while another host's hold was
    /// recorded before and after the attempt.
    pub ebusy_confirmed: u64,
    /// Operations not started: everything they needed was claimed.
    pub idle: u64,
}

impl Shared {
    pub fn new(seed: u64, model: Model, hosts: usize) -> Shared {
        Shared {
            seed,
            model: Mutex::new(model),
            stats: Mutex::new(Stats::default()),
            failures: Mutex::new(Vec::new()),
            abort: AtomicBool::new(false),
            stop: (0..hosts).map(|_| AtomicBool::new(false)).collect(),
            gate: (0..hosts).map(|_| RwLock::new(())).collect(),
        }
    }

    pub fn fail(&self, msg: String) {
        eprintln!("fuse_multihost_soak: FAILURE: {msg}");
        self.failures.lock().unwrap().push(msg);
        self.abort.store(true, Ordering::SeqCst);
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    pub fn count_op(&self, kind: &'static str) {
        *self.stats.lock().unwrap().ops.entry(kind).or_default() += 1;
    }

    pub fn count_race(&self, op: &str, errno: i32) {
        *self
            .stats
            .lock()
            .unwrap()
            .races
            .entry(format!("{op} {}", errno_name(errno)))
            .or_default() += 1;
    }
}

pub fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "ENOENT".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::ENOTEMPTY => "ENOTEMPTY".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::EIO => "EIO".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::EINVAL => "EINVAL".into(),
        other => format!("errno {other}"),
    }
}

/// The errno of `e` (0 if it carries none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
