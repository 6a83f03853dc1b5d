//! Where fio and a FUSE server run. On a 2-CPU machine a QD1 request's
//! cost is dominated by the two wakeups per request (fio → server → fio):
//! cheap when both run on one CPU, an inter-processor wakeup each when
//! they run on two. Left free, the scheduler co-locates a single-threaded
//! server (bindfs) with fio in some runs and not in others, which swings
//! bindfs' 4k QD1 figures 5× between runs minutes apart. Pinned, the same
//! comparison repeats; the suites report the free placement and both
//! pinned ones side by side.

use std::path::Path;

/// Where a sample's fio job and the server it talks to may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Free,
    /// fio and every server thread on CPU 0.
    OneCpu,
    /// fio on CPU 0, every server thread on the other CPUs.
    Split,
}

impl Placement {
    /// The placements worth measuring on this machine (pinning needs two
    /// CPUs to mean anything).
    pub fn all() -> Vec<Placement> {
        if cpus() >= 2 {
            vec![Placement::Free, Placement::OneCpu, Placement::Split]
        } else {
            vec![Placement::Free]
        }
    }

    /// Suffix for a case name.
    pub fn label(self) -> &'static str {
        match self {
            Placement::Free => "",
            Placement::OneCpu => ", fio and server on CPU 0",
            Placement::Split => ", fio on CPU 0, server on the others",
        }
    }

    /// fio's `--cpus_allowed`, if pinned.
    pub fn fio_cpus(self) -> Option<&'static str> {
        match self {
            Placement::Free => None,
            Placement::OneCpu | Placement::Split => Some("0"),
        }
    }

    fn server_cpus(self) -> Vec<usize> {
        let n = cpus();
        match self {
            Placement::Free => (0..n).collect(),
            Placement::OneCpu => vec![0],
            Placement::Split => (1..n.max(2)).collect(),
        }
    }

    /// Pin every thread of server process `pid` (threads it starts later
    /// inherit the mask of the thread that starts them).
    pub fn pin_server(self, pid: u32) -> Result<(), String> {
        let cpus = self.server_cpus();
        let tasks = format!("/proc/{pid}/task");
        let dir = std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?;
        for t in dir.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            set_affinity(tid, &cpus).map_err(|e| format!("pinning thread {tid} of {pid}: {e}"))?;
        }
        Ok(())
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn set_affinity(tid: i32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `set` is a valid cpu_set_t and `c` is below the number
        // of CPUs, far below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` outlives the call and its size is passed with it.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if r == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        // A thread that exited since the listing: nothing to pin.
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        }
    }
}

/// The process whose command line names `prog` and `mountpoint` (a
/// daemonized FUSE server such as bindfs, which is not our child).
pub fn find_server(prog: &str, mountpoint: &Path) -> Option<u32> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmd.split(|&b| b == 0);
        let is_prog = args
            .next()
            .is_some_and(|a0| a0.rsplit(|&b| b == b'/').next() == Some(prog.as_bytes()));
        if is_prog && args.any(|a| a == want) {
            return Some(pid);
        }
    }
    None
}
