//! Live-migration hand-off between real host processes (`disk-host`): A
//! serves vm/d.vmdk with writes acknowledged after flush; the TRANSFER
//! protocol moves it to B. At each step of the protocol in turn, A or B is
//! killed with SIGKILL; the survivor takes the disk over. Checked every
//! time: exactly one owner in the disk's lock record (the survivor) and
//! every acknowledged write of either host present.
//! Timeouts are the defaults scaled by 1/30 (D = 833 ms).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmfs::cluster::read_lock;
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::format::Holder;
use vmfs::fs::offline::resolve_path;
use vmfs::volume::Volume;

const BIN: &str = env!("CARGO_BIN_EXE_disk-host");
const REGION: u64 = 2048;

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<String>>>,
    holder: Holder,
}

fn spawn(img: &str, name: &str, role: &str) -> Proc {
    let mut child = Command::new(BIN)
        .args(["serve", img, name, role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    let mut p = Proc {
        child,
        stdin,
        lines,
        holder: Holder { slot: 0, hb_gen: 0 },
    };
    let h = wait_for(&p, "HOLDER", Duration::from_secs(20));
    let w: Vec<u64> = h.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
    p.holder = Holder {
        slot: w[0] as u16,
        hb_gen: w[1],
    };
    p
}

fn send(p: &mut Proc, cmd: &str) {
    writeln!(p.stdin, "{cmd}").unwrap();
    p.stdin.flush().unwrap();
}

/// The first line starting with `prefix` (panics on ERROR or timeout).
fn wait_for(p: &Proc, prefix: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        {
            let l = p.lines.lock().unwrap();
            if let Some(x) = l.iter().find(|x| x.starts_with(prefix)) {
                return x.clone();
            }
            if let Some(e) = l.iter().find(|x| x.starts_with("ERROR")) {
                panic!("host failed: {e}");
            }
        }
        assert!(start.elapsed() < limit, "no '{prefix}' within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn acks(p: &Proc) -> usize {
    p.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("ACK"))
        .count()
}

/// Let the current owner acknowledge a few more writes.
fn some_writes(p: &Proc) {
    let n = acks(p);
    let start = Instant::now();
    while acks(p) < n + 5 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no writes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(p: &mut Proc) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let r = unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0);
    let _ = p.child.wait();
}

fn holders(img: &str) -> Vec<Holder> {
    let dev: SharedDev = Arc::new(FileDev::open(img, FileDevOptions::default()).unwrap());
    let vol = Volume::open(dev.clone()).unwrap();
    let ino = resolve_path(&vol, "vm/d-flat.vmdk").unwrap();
    read_lock(dev.as_ref(), vol.inode_addr(ino))
        .unwrap()
        .holders
}

/// Run the protocol up to `step`, kill `victim` ('A' source, 'B'
/// destination), let the other take over, check.
///  step 0: A writing, nothing offered
///  step 1: A has offered (TRANSFER pending)
///  step 2: B has accepted and writes
///  step 3: A has seen the hand-off complete and closed the disk
fn scenario(step: u32, victim: char) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img").to_str().unwrap().to_string();
    assert!(Command::new(BIN)
        .args(["mkfs", &img])
        .status()
        .unwrap()
        .success());
    let mut a = spawn(&img, "A", "src");
    wait_for(&a, "OWNER", Duration::from_secs(20));
    let mut b = spawn(&img, "B", "dst");
    some_writes(&a);
    if step >= 1 {
        let (slot, gen) = (b.holder.slot, b.holder.hb_gen);
        send(&mut a, &format!("offer {slot} {gen}"));
        wait_for(&a, "OFFERED", Duration::from_secs(20));
    }
    if step >= 2 {
        send(&mut b, "accept");
        wait_for(&b, "ACCEPTED", Duration::from_secs(20));
        some_writes(&b);
    }
    if step >= 3 {
        send(&mut a, "outcome");
        let o = wait_for(&a, "OUTCOME", Duration::from_secs(20));
        assert_eq!(o, "OUTCOME Taken");
    }
    let (mut dead, mut alive) = if victim == 'A' { (a, b) } else { (b, a) };
    kill(&mut dead);
    send(&mut alive, "takeover");
    wait_for(&alive, "OWNER", Duration::from_secs(30));
    some_writes(&alive);
    send(&mut alive, "verify");
    wait_for(&alive, "VERIFIED", Duration::from_secs(30));
    // Exactly one owner: the survivor.
    assert_eq!(
        holders(&img),
        vec![alive.holder],
        "step {step}, killed {victim}"
    );
    // Every acknowledged write of both hosts is on the disk.
    let mut blocks: HashMap<u64, (char, u64)> = HashMap::new();
    for l in alive.lines.lock().unwrap().iter() {
        if let Some(rest) = l.strip_prefix("BLOCK ") {
            let w: Vec<&str> = rest.split(' ').collect();
            blocks.insert(
                w[0].parse().unwrap(),
                (w[1].chars().next().unwrap(), w[2].parse().unwrap()),
            );
        }
    }
    let mut checked = 0;
    for p in [&dead, &alive] {
        for l in p.lines.lock().unwrap().iter() {
            if let Some(rest) = l.strip_prefix("ACK ") {
                let w: Vec<&str> = rest.split(' ').collect();
                let tag = w[0].chars().next().unwrap();
                let seq: u64 = w[1].parse().unwrap();
                let idx = if tag == 'A' { seq } else { REGION + seq };
                assert_eq!(
                    blocks.get(&idx),
                    Some(&(tag, seq)),
                    "step {step}, killed {victim}: acknowledged write {tag} {seq} lost"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "too few writes to judge: {checked}");
    send(&mut alive, "quit");
    wait_for(&alive, "BYE", Duration::from_secs(20));
    let _ = alive.child.wait();
    println!("step {step}, killed {victim}: {checked} acknowledged writes present, one owner");
}

#[test]
fn handoff_survives_killing_the_source_at_every_step() {
    for step in 0..=3 {
        scenario(step, 'A');
    }
}

#[test]
fn handoff_survives_killing_the_destination_at_every_step() {
    for step in 0..=3 {
        scenario(step, 'B');
    }
}
