//! Real host processes on one image file: mutual exclusion under SIGKILL and
//! SIGSTOP (pauses shorter and longer than D), and takeover of a killed
//! host's lock with journal replay. Timeouts are the defaults scaled by 1/30:
//! H = 100 ms, F = 533 ms, D = 833 ms.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmfs::cluster::Timeouts;
use vmfs::dev::{FileDev, FileDevOptions};
use vmfs::format::ResourceKind;
use vmfs::volume::Volume;

const BIN: &str = env!("CARGO_BIN_EXE_lock-host");

fn mkfs(dir: &tempfile::TempDir) -> String {
    let img = dir.path().join("vol.img").to_str().unwrap().to_string();
    let st = Command::new(BIN).args(["mkfs", &img]).status().unwrap();
    assert!(st.success());
    img
}

/// A running host whose stdout lines are collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    Proc { child, lines }
}

fn signal(p: &Proc, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let r = unsafe { libc::kill(p.child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({sig})");
}

fn wait_for(p: &Proc, what: &str, limit: Duration) {
    let start = Instant::now();
    while !p.lines.lock().unwrap().iter().any(|l| l.contains(what)) {
        assert!(start.elapsed() < limit, "no '{what}' within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn counter(img: &str) -> u64 {
    let dev: vmfs::dev::SharedDev =
        Arc::new(FileDev::open(img, FileDevOptions::default()).unwrap());
    let vol = Volume::open(dev.clone()).unwrap();
    let mut b = [0u8; 512];
    dev.read_at(&mut b, vol.resource_addr(ResourceKind::FileBlock, 0))
        .unwrap();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

#[test]
fn mutual_exclusion_survives_sigkill_and_sigstop() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(&dir);
    let secs = "12";
    let mut procs: Vec<Proc> = (0..4)
        .map(|i| spawn(&["mutex", &img, &i.to_string(), secs]))
        .collect();
    let t = Timeouts::scaled(1.0 / 30.0);
    std::thread::sleep(Duration::from_secs(2));
    // SIGKILL one host (possibly mid-hold) and start a replacement.
    signal(&procs[0], libc::SIGKILL);
    let _ = procs[0].child.wait();
    procs.push(spawn(&["mutex", &img, "4", "9"]));
    std::thread::sleep(Duration::from_secs(2));
    // Pause one host for longer than D: the others must take over safely,
    // and it must not write when it wakes.
    signal(&procs[1], libc::SIGSTOP);
    std::thread::sleep(t.dead_after * 3);
    signal(&procs[1], libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(1));
    // A pause shorter than D: nobody may break its locks.
    signal(&procs[2], libc::SIGSTOP);
    std::thread::sleep(t.dead_after / 3);
    signal(&procs[2], libc::SIGCONT);
    let mut holds = 0u64;
    let mut violations = Vec::new();
    let mut fenced = 0;
    for (i, p) in procs.iter_mut().enumerate() {
        if i != 0 {
            let st = p.child.wait().unwrap();
            assert!(st.success(), "host {i} exited {st}");
        }
        let lines = p.lines.lock().unwrap();
        holds += lines.iter().filter(|l| l.starts_with("hold ")).count() as u64;
        fenced += lines.iter().filter(|l| l.starts_with("fenced")).count();
        violations.extend(lines.iter().filter(|l| l.contains("VIOLATION")).cloned());
    }
    let c = counter(&img);
    println!(
        "holds reported {holds}, counter {c}, fenced incarnations {fenced}, violations {}",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:?}");
    assert!(holds > 100, "too little progress: {holds} holds");
    // The killed host may have written its increment without reporting it.
    assert!(
        c >= holds && c <= holds + 1,
        "counter {c} vs {holds} reported holds"
    );
}

#[test]
fn a_killed_holders_lock_is_taken_within_d_plus_2h_and_its_journal_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(&dir);
    let mut a = spawn(&["commit-and-hang", &img]);
    wait_for(&a, "committed", Duration::from_secs(10));
    signal(&a, libc::SIGKILL);
    let _ = a.child.wait();
    let killed = Instant::now();
    let mut b = spawn(&["take", &img]);
    let st = b.child.wait().unwrap();
    let elapsed = killed.elapsed();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(50));
    let lines = b.lines.lock().unwrap().clone();
    let line = lines
        .iter()
        .find(|l| l.starts_with("took"))
        .expect("taker reports");
    let t = Timeouts::scaled(1.0 / 30.0);
    let ms: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    println!(
        "{line}; kill to release of the taker process: {elapsed:?}; D + 2H = {:?}",
        t.dead_after + t.heartbeat * 2
    );
    assert!(line.ends_with("data replayed"), "{line}");
    assert!(
        Duration::from_millis(ms) <= t.dead_after + t.heartbeat * 2,
        "{line}"
    );
}
