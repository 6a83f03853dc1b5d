//! A host process for the multi-process lock tests (the tests kill it with
//! SIGKILL and pause it with SIGSTOP).
//!
//! lock-host mkfs IMAGE                 format a small volume with H = 100 ms timeouts
//! lock-host mutex IMAGE ID SECONDS     take/verify/release the shared lock in a loop
//! lock-host commit-and-hang IMAGE      take the lock, commit a journaled update
//!                                      whose in-place writes stay in a volatile
//!                                      cache, print "committed", then hang
//! lock-host take IMAGE                 take the lock (waiting), print the data

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs::cluster::{ClusterError, Host, HostConfig, Timeouts, Txn};
use vmfs::dev::{BlockDev, FaultDev, FileDev, FileDevOptions, SharedDev};
use vmfs::format::{LockMode, ResourceKind};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

fn timeouts() -> Timeouts {
    Timeouts::scaled(1.0 / 30.0)
}

fn open(image: &str) -> SharedDev {
    Arc::new(
        FileDev::open(image, FileDevOptions::default()).unwrap_or_else(|e| die(&e.to_string())),
    )
}

fn die(msg: &str) -> ! {
    eprintln!("lock-host: {msg}");
    std::process::exit(1);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The lock and the two blocks it protects.
fn places(vol: &Volume) -> (u64, u64, u64) {
    let lock = vol.cluster_lock_addr(ResourceKind::FileBlock, 0);
    let data = vol.resource_addr(ResourceKind::FileBlock, 0);
    (lock, data, data + 4096)
}

fn join(dev: SharedDev, name: &str) -> Host {
    let vol = Volume::open(dev).unwrap_or_else(|e| die(&e.to_string()));
    let mut cfg = HostConfig::new(name);
    cfg.timeouts = Some(timeouts());
    let h = Host::join(vol, cfg).unwrap_or_else(|e| die(&e.to_string()));
    h.start();
    h
}

fn read_counter(dev: &dyn BlockDev, addr: u64) -> Result<(u64, u64), ClusterError> {
    let mut b = [0u8; 512];
    dev.read_at(&mut b, addr)?;
    Ok((
        u64::from_le_bytes(b[..8].try_into().expect("8")),
        u64::from_le_bytes(b[8..16].try_into().expect("8")),
    ))
}

fn write_counter(dev: &dyn BlockDev, addr: u64, v: u64, tag: u64) -> Result<(), ClusterError> {
    let mut b = [0u8; 512];
    b[..8].copy_from_slice(&v.to_le_bytes());
    b[8..16].copy_from_slice(&tag.to_le_bytes());
    dev.write_at(&b, addr)?;
    dev.flush()?;
    Ok(())
}

fn mutex(image: &str, id: u64, seconds: u64) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut host = join(open(image), &format!("mutex-{id}"));
    let (lock, data, _) = places(host.volume());
    let tag = u64::from(std::process::id());
    while Instant::now() < end {
        let r = (|| -> Result<bool, ClusterError> {
            let held = match host.lock(lock, 0, LockMode::Exclusive, Duration::from_millis(300)) {
                Ok(h) => h,
                Err(ClusterError::Busy { .. }) | Err(ClusterError::Timeout { .. }) => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            };
            let dev = host.dev();
            let (v, _) = read_counter(&dev, data)?;
            write_counter(&dev, data, v + 1, tag)?;
            say(&format!("hold {} gen {}", v + 1, held.lock_gen));
            std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 5));
            let (v2, t2) = read_counter(&dev, data)?;
            if (v2, t2) != (v + 1, tag) {
                say(&format!(
                    "VIOLATION: wrote {} tag {tag}, found {v2} tag {t2}",
                    v + 1
                ));
            }
            host.unlock(lock)?;
            Ok(true)
        })();
        if let Err(e) = r {
            if host.is_fenced()
                || matches!(e, ClusterError::Fenced(_) | ClusterError::LockLost { .. })
            {
                say(&format!("fenced: {e}"));
                host.clone().abandon();
                host = join(open(image), &format!("mutex-{id}"));
            } else {
                say(&format!("error: {e}"));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = host.leave();
    say("done");
}

fn commit_and_hang(image: &str) {
    // In-place writes go to a volatile cache that the SIGKILL will lose;
    // the journal commit is flushed through it.
    let fault: SharedDev = Arc::new(FaultDev::new(open(image), 1));
    let host = join(fault, "committer");
    let (lock, a, b) = places(host.volume());
    let held = host
        .lock(lock, 0, LockMode::Exclusive, Duration::from_secs(10))
        .unwrap_or_else(|e| die(&e.to_string()));
    let mut txn = Txn::default();
    txn.add(a, vec![0x77; 4096], lock, held.lock_gen);
    txn.add(b, vec![0x77; 4096], lock, held.lock_gen);
    host.run_txn(&txn).unwrap_or_else(|e| die(&e.to_string()));
    say("committed");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn take(image: &str) {
    let host = join(open(image), "taker");
    let (lock, a, b) = places(host.volume());
    let start = Instant::now();
    host.lock(lock, 0, LockMode::Exclusive, Duration::from_secs(30))
        .unwrap_or_else(|e| die(&e.to_string()));
    let took = start.elapsed();
    let dev = host.dev();
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    dev.read_at(&mut x, a)
        .unwrap_or_else(|e| die(&e.to_string()));
    dev.read_at(&mut y, b)
        .unwrap_or_else(|e| die(&e.to_string()));
    let state = if x == y && x.iter().all(|&c| c == 0x77) {
        "replayed"
    } else if x == y {
        "unchanged"
    } else {
        "torn"
    };
    say(&format!("took {} ms data {state}", took.as_millis()));
    let _ = host.leave();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("mkfs") if args.len() == 3 => {
            let dev: SharedDev = Arc::new(
                FileDev::open(
                    &args[2],
                    FileDevOptions {
                        create_size: Some(256 << 20),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| die(&e.to_string())),
            );
            let opts = MkfsOptions {
                label: "locktest".into(),
                max_hosts: 16,
                journal_size: 1 << 20,
                timeouts: timeouts().to_minimums(),
                ..Default::default()
            };
            mkfs(&dev, &opts, true).unwrap_or_else(|e| die(&e.to_string()));
        }
        Some("mutex") if args.len() == 5 => mutex(
            &args[2],
            args[3].parse().unwrap_or_else(|_| die("ID is a number")),
            args[4]
                .parse()
                .unwrap_or_else(|_| die("SECONDS is a number")),
        ),
        Some("commit-and-hang") if args.len() == 3 => commit_and_hang(&args[2]),
        Some("take") if args.len() == 3 => take(&args[2]),
        _ => die("usage: lock-host mkfs|mutex|commit-and-hang|take IMAGE ..."),
    }
}
