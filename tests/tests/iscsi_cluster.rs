//! Hosts over the network: `fs-host` processes join one LUN served by the
//! workspace's iSCSI target through `IscsiDev`, each in its own network
//! namespace joined by a veth pair when run as root (otherwise on loopback,
//! said on stdout). Timeouts: defaults scaled by 0.1 (H 300 ms, T 800 ms,
//! F 1.6 s, D 2.5 s).
//!
//! - a host SIGKILLed mid-write: survivors break its locks after D (PREEMPT
//!   AND ABORT, then journal replay); every acknowledged fsync verifies by
//!   checksum and the volume checks clean.
//! - path loss (root only): one host's link is cut; it self-fences within F,
//!   the others break its locks after D, it rejoins under a new hb_gen when
//!   the link returns, and the marker it wrote after the cut is nowhere on disk.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{BlockDev, FileDev, FileDevOptions, SharedDev};
use vmfs::fs::Fs;
use vmfs::volume::Volume;
use vmfs_tests::net::{acks, make_volume, serve, Netns, Proc, Target};

const BIN: &str = env!("CARGO_BIN_EXE_fs-host");
const SCALE: f64 = 0.1;
const MARKER: &[u8; 16] = b"!VMFS-CUT-MARK!!";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn t() -> Timeouts {
    Timeouts::scaled(SCALE)
}

/// Where each host runs: its namespace (None: loopback) and the URL it uses.
struct Place {
    ns: Option<Netns>,
    url: String,
}

fn places(target: &Target, net: u8, n: u8) -> Vec<Place> {
    let mut out = Vec::new();
    for i in 0..n {
        match Netns::create(net, i) {
            Ok(ns) => {
                let url = target.url(&ns.outer);
                out.push(Place { ns: Some(ns), url });
            }
            Err(e) => {
                println!("network namespaces unavailable ({e}): hosts run on loopback");
                return (0..n)
                    .map(|_| Place {
                        ns: None,
                        url: target.url("127.0.0.1"),
                    })
                    .collect();
            }
        }
    }
    out
}

fn spawn(p: &Place, name: &str, secs: f64) -> Proc {
    let mut c = match &p.ns {
        Some(ns) => ns.command(BIN),
        None => Command::new(BIN),
    };
    c.args([&p.url, name, &secs.to_string()]);
    c.env("FS_HOST_SCALE", SCALE.to_string());
    Proc::spawn(c, name)
}

fn slot_of(p: &Proc, prefix: &str) -> (u32, u64) {
    let l = p.wait_for(prefix, Duration::from_secs(30));
    let f: Vec<&str> = l.split_whitespace().collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

fn count(p: &Proc, prefix: &str) -> usize {
    p.lines().iter().filter(|l| l.starts_with(prefix)).count()
}

fn wait_exit(p: &mut Proc, limit: Duration) {
    let start = Instant::now();
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            assert!(
                st.success(),
                "{} exited {st}; lines {:?}",
                p.name,
                p.lines()
            );
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{} still running after {limit:?}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lookup_path(fs: &Fs, path: &str) -> u64 {
    let mut ino = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs
            .lookup(ino, c.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .ino;
    }
    ino
}

/// Every acknowledged fsync is on disk, the volume checks clean.
fn verify(image: &std::path::Path, procs: &[&Proc]) -> usize {
    let dev: SharedDev = Arc::new(FileDev::open(image, FileDevOptions::default()).unwrap());
    let vol = Volume::open(dev.clone()).unwrap();
    let mut cfg = HostConfig::new("verifier");
    cfg.timeouts = Some(t());
    let host = Host::join(vol, cfg).unwrap();
    host.start();
    let fs = Fs::mount(host.clone()).unwrap();
    let acked = acks(procs);
    for (path, len, crc) in &acked {
        let ino = lookup_path(&fs, path);
        let fh = fs.open(ino, false).unwrap();
        let data = fs.read(fh, 0, *len).unwrap();
        fs.close(fh).unwrap();
        assert_eq!(data.len(), *len, "{path}: acknowledged {len} bytes");
        assert_eq!(
            crc32fast::hash(&data),
            *crc,
            "{path}: acknowledged bytes differ"
        );
    }
    fs.unmount().unwrap();
    host.leave().unwrap();
    let vol = Volume::open(dev).unwrap();
    let report = vmfs::fs::check::check(&vol).unwrap();
    assert!(
        report.problems.is_empty(),
        "inconsistent volume: {:?}",
        report.problems
    );
    println!(
        "verified {} acknowledged fsyncs; check: {} inodes, {} directories, {} entries, clean",
        acked.len(),
        report.inodes,
        report.directories,
        report.entries
    );
    acked.len()
}

#[test]
fn three_hosts_one_sigkilled_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("lun.img");
    make_volume(&image, 1 << 30, SCALE);
    let loopback = !is_root();
    let target = serve(&image, if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" });
    let at = places(&target, 231, 3);
    let mut hosts: Vec<Proc> = vec![
        spawn(&at[0], "victim", 60.0),
        spawn(&at[1], "alpha", 14.0),
        spawn(&at[2], "beta", 14.0),
    ];
    let (victim_slot, _) = slot_of(&hosts[0], "JOINED");
    for h in &hosts[1..] {
        slot_of(h, "JOINED");
    }
    let start = Instant::now();
    while count(&hosts[0], "ACK") < 12 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "victim made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    hosts[0].signal(libc::SIGKILL);
    let _ = hosts[0].child.wait();
    let killed = Instant::now();
    // After D the survivors may declare it dead; make them need its locks.
    std::thread::sleep(t().dead_after + t().heartbeat * 2);
    for h in &hosts[1..] {
        h.signal(libc::SIGUSR2);
    }
    for h in &hosts[1..] {
        h.wait_for("SWEPT", Duration::from_secs(30));
    }
    let recovered: Vec<String> = hosts[1..]
        .iter()
        .flat_map(|h| h.lines())
        .filter(|l| l.starts_with(&format!("RECOVERED {victim_slot} ")))
        .collect();
    println!("kill to sweep done: {:?}; {recovered:?}", killed.elapsed());
    assert!(
        !recovered.is_empty(),
        "no survivor recovered the killed host's slot {victim_slot}"
    );
    for h in &mut hosts[1..] {
        wait_exit(h, Duration::from_secs(60));
        assert!(h.has("DONE"));
        assert!(!h.has("FENCED"), "{} was fenced: {:?}", h.name, h.lines());
    }
    let n = verify(&target.image, &[&hosts[0], &hosts[1], &hosts[2]]);
    assert!(n > 30, "too little acknowledged work: {n}");
}

fn image_contains(image: &std::path::Path, needle: &[u8]) -> bool {
    let dev = FileDev::open(image, FileDevOptions::default()).unwrap();
    let chunk = 4 << 20;
    let mut buf = vec![0u8; chunk + needle.len()];
    let mut off = 0u64;
    while off < dev.size() {
        let n = (dev.size() - off).min(chunk as u64) as usize;
        dev.read_at(&mut buf[..n], off).unwrap();
        if buf[..n].windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        off += n as u64;
    }
    false
}

#[test]
fn path_loss_self_fence_takeover_and_rejoin() {
    if !is_root() {
        println!("SKIP: cutting one host's link needs root (ip netns + veth)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("lun.img");
    make_volume(&image, 1 << 30, SCALE);
    let target = serve(&image, "0.0.0.0:0");
    let at = places(&target, 232, 3);
    if at[0].ns.is_none() {
        println!("SKIP: network namespaces unavailable");
        return;
    }
    let mut hosts: Vec<Proc> = vec![
        spawn(&at[0], "cut", 22.0),
        spawn(&at[1], "alpha", 22.0),
        spawn(&at[2], "beta", 22.0),
    ];
    let (cut_slot, cut_gen) = slot_of(&hosts[0], "JOINED");
    for h in &hosts[1..] {
        slot_of(h, "JOINED");
    }
    let start = Instant::now();
    while count(&hosts[0], "ACK") < 9 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ns = at[0].ns.as_ref().unwrap();
    ns.set_link(false);
    let cut = Instant::now();
    hosts[0].signal(libc::SIGUSR1);
    hosts[0].wait_for("FENCED", Duration::from_secs(20));
    let fenced_after = cut.elapsed();
    // F counts from the last beat that landed, which was issued before the cut.
    println!(
        "self-fenced {fenced_after:?} after the cut (F = {:?})",
        t().self_fence
    );
    assert!(
        fenced_after <= t().self_fence + t().heartbeat,
        "fenced after {fenced_after:?}, F = {:?}",
        t().self_fence
    );
    assert!(
        hosts[0].has("MARKING"),
        "no marker write was issued after the cut"
    );
    // The others declare it dead after D and break its locks.
    std::thread::sleep((t().dead_after + t().heartbeat * 2).saturating_sub(cut.elapsed()));
    for h in &hosts[1..] {
        h.signal(libc::SIGUSR2);
    }
    for h in &hosts[1..] {
        h.wait_for("SWEPT", Duration::from_secs(30));
    }
    let recovered = hosts[1..]
        .iter()
        .flat_map(|h| h.lines())
        .any(|l| l.starts_with(&format!("RECOVERED {cut_slot} ")));
    assert!(recovered, "nobody broke the cut host's locks");
    ns.set_link(true);
    let (slot, gen) = slot_of(&hosts[0], "REJOINED");
    println!("rejoined in slot {slot} with hb_gen {gen} (was slot {cut_slot}, hb_gen {cut_gen})");
    assert!(
        slot != cut_slot || gen > cut_gen + 1,
        "rejoin reused the old incarnation"
    );
    for h in &mut hosts {
        wait_exit(h, Duration::from_secs(60));
    }
    verify(&target.image, &[&hosts[0], &hosts[1], &hosts[2]]);
    assert!(
        !image_contains(&target.image, MARKER),
        "a write issued after the cut reached the disk"
    );
}
