//! A host process serving a virtual disk, for the multi-process hand-off
//! and swap tests (killed with SIGKILL by the tests). Timeouts are the
//! defaults scaled by 1/30 (H = 100 ms, D = 833 ms).
//!
//! disk-host mkfs IMAGE            format, create thin disk vm/d.vmdk (16 MiB)
//! disk-host serve IMAGE NAME src  open vm/d.vmdk EXCLUSIVE, write in a loop
//! disk-host serve IMAGE NAME dst  wait for commands
//!   stdin commands: offer SLOT GEN | outcome | cancel | accept | takeover |
//!                   verify | quit
//!   stdout: HOLDER slot gen, ACK tag seq (after write + flush), OFFERED,
//!           OUTCOME x, CANCEL bool, ACCEPTED / NOT-OFFERED, OWNER,
//!           BLOCK idx tag seq …, VERIFIED n, ERROR …
//! disk-host swap IMAGE NAME       create a held 32 MiB swap file, print
//!                                 SWAP path, hang
//! disk-host reclaim IMAGE NAME    print FREE n, run the swap reclaimer until
//!                                 it reclaims one file, print RECLAIMED and
//!                                 FREE n

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::disk::swap::{Reclaimer, SwapFile};
use vmfs::disk::{DiskOptions, FsStore, ReadLock, VirtualDisk, WriteLock};
use vmfs::format::Holder;
use vmfs::fs::Fs;
use vmfs::vmdk::{create_flat_disk, FlatDiskOptions};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

const DISK: &str = "vm/d.vmdk";
const BLOCK: usize = 4096;
/// Blocks of each writer's region (A: 0.., B: REGION..).
const REGION: u64 = 2048;

fn die(msg: &str) -> ! {
    say(&format!("ERROR {msg}"));
    eprintln!("disk-host: {msg}");
    std::process::exit(1);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn mount(image: &str, name: &str) -> Fs {
    let dev: SharedDev = Arc::new(
        FileDev::open(image, FileDevOptions::default()).unwrap_or_else(|e| die(&e.to_string())),
    );
    let vol = Volume::open(dev).unwrap_or_else(|e| die(&e.to_string()));
    let mut cfg = HostConfig::new(name);
    cfg.timeouts = Some(Timeouts::scaled(1.0 / 30.0));
    let h = Host::join(vol, cfg).unwrap_or_else(|e| die(&e.to_string()));
    h.start();
    Fs::mount(h).unwrap_or_else(|e| die(&e.to_string()))
}

fn make(image: &str) {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            image,
            FileDevOptions {
                create_size: Some(512 << 20),
                ..FileDevOptions::default()
            },
        )
        .unwrap_or_else(|e| die(&e.to_string())),
    );
    let opts = MkfsOptions {
        label: "disk-test".into(),
        max_hosts: 8,
        journal_size: 1 << 20,
        timeouts: Timeouts::scaled(1.0 / 30.0).to_minimums(),
        ..Default::default()
    };
    mkfs(&dev, &opts, false).unwrap_or_else(|e| die(&e.to_string()));
    drop(dev);
    let fs = mount(image, "mkfs");
    fs.mkdir(fs.root(), b"vm", 0o755, 0, 0)
        .unwrap_or_else(|e| die(&e.to_string()));
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
    create_flat_disk(&store, DISK, 16 << 20, &FlatDiskOptions::default())
        .unwrap_or_else(|e| die(&e.to_string()));
    let host = fs.host().clone();
    fs.unmount().unwrap_or_else(|e| die(&e.to_string()));
    drop(fs);
    host.leave().unwrap_or_else(|e| die(&e.to_string()));
}

/// Block content: tag byte, seq, repeated.
fn block(tag: u8, seq: u64) -> Vec<u8> {
    let mut unit = vec![tag];
    unit.extend_from_slice(&seq.to_le_bytes());
    unit.iter().copied().cycle().take(BLOCK).collect()
}

struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

fn start_writer(disk: VirtualDisk, tag: u8, mut seq: u64) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let base = if tag == b'A' { 0 } else { REGION };
    let thread = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            if seq + 1 >= REGION {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let off = (base + seq + 1) * BLOCK as u64;
            let r = disk
                .write(off, block(tag, seq + 1))
                .wait()
                .and_then(|_| disk.flush().wait());
            if let Err(e) = r {
                say(&format!("WRITE-ERROR {e}"));
                return seq;
            }
            seq += 1;
            say(&format!("ACK {} {seq}", tag as char));
            std::thread::sleep(Duration::from_millis(3));
        }
        seq
    });
    Writer { stop, thread }
}

fn stop_writer(w: &mut Option<Writer>, seq: &mut u64) {
    if let Some(w) = w.take() {
        w.stop.store(true, Ordering::SeqCst);
        *seq = w.thread.join().unwrap_or(*seq);
    }
}

/// Open the disk, waiting while another host holds it (until it is
/// declared dead and its lock broken).
fn open_waiting(fs: &Fs) -> VirtualDisk {
    let start = Instant::now();
    loop {
        match VirtualDisk::open(fs, DISK, &DiskOptions::default()) {
            Ok(d) => return d,
            Err(e) if e.is_busy() && start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => die(&format!("opening {DISK}: {e}")),
        }
    }
}

fn serve(image: &str, name: &str, role: &str) {
    let fs = mount(image, name);
    let me = fs.host().holder();
    say(&format!("HOLDER {} {}", me.slot, me.hb_gen));
    let tag = if role == "src" { b'A' } else { b'B' };
    let mut seq = 0u64;
    let mut disk: Option<VirtualDisk> = None;
    let mut writer: Option<Writer> = None;
    if role == "src" {
        let d = open_waiting(&fs);
        writer = Some(start_writer(d.clone(), tag, seq));
        disk = Some(d);
        say("OWNER");
    }
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut offered = false;
    while let Ok(line) = rx.recv() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["offer", slot, gen] => {
                let dst = Holder {
                    slot: slot.parse().unwrap_or_else(|_| die("slot")),
                    hb_gen: gen.parse().unwrap_or_else(|_| die("gen")),
                };
                stop_writer(&mut writer, &mut seq);
                let d = disk.as_ref().unwrap_or_else(|| die("offer without a disk"));
                d.begin_handoff(dst)
                    .unwrap_or_else(|e| die(&format!("offer: {e}")));
                offered = true;
                say("OFFERED");
            }
            ["outcome"] => {
                let d = disk
                    .as_ref()
                    .unwrap_or_else(|| die("outcome without a disk"));
                let o = d
                    .handoff_outcome()
                    .unwrap_or_else(|e| die(&format!("outcome: {e}")));
                if o == vmfs::cluster::TransferOutcome::Taken {
                    if let Some(d) = disk.take() {
                        let _ = d.close();
                    }
                    offered = false;
                }
                say(&format!("OUTCOME {o:?}"));
            }
            ["accept"] => match VirtualDisk::accept_handoff(&fs, DISK, &DiskOptions::default()) {
                Ok(Some(d)) => {
                    writer = Some(start_writer(d.clone(), tag, seq));
                    disk = Some(d);
                    say("ACCEPTED");
                }
                Ok(None) => say("NOT-OFFERED"),
                Err(e) => die(&format!("accept: {e}")),
            },
            ["takeover"] => {
                if offered {
                    let d = disk.take().unwrap_or_else(|| die("offered without a disk"));
                    let kept = d
                        .cancel_handoff()
                        .unwrap_or_else(|e| die(&format!("cancel: {e}")));
                    offered = false;
                    say(&format!("CANCEL {kept}"));
                    if kept {
                        disk = Some(d);
                    } else {
                        let _ = d.close();
                    }
                }
                if disk.is_none() && role == "dst" {
                    match VirtualDisk::accept_handoff(&fs, DISK, &DiskOptions::default()) {
                        Ok(Some(d)) => {
                            say("ACCEPTED");
                            disk = Some(d);
                        }
                        Ok(None) => {}
                        Err(e) => die(&format!("accept: {e}")),
                    }
                }
                if disk.is_none() {
                    disk = Some(open_waiting(&fs));
                }
                if writer.is_none() {
                    let d = disk.clone().expect("set above");
                    writer = Some(start_writer(d, tag, seq));
                }
                say("OWNER");
            }
            ["verify"] => {
                stop_writer(&mut writer, &mut seq);
                let d = disk
                    .as_ref()
                    .unwrap_or_else(|| die("verify without the disk"));
                let all = d
                    .read(0, (2 * REGION) as usize * BLOCK)
                    .wait()
                    .unwrap_or_else(|e| die(&format!("verify read: {e}")));
                let mut n = 0;
                for (i, b) in all.chunks(BLOCK).enumerate() {
                    if b.iter().all(|&x| x == 0) {
                        continue;
                    }
                    let s = u64::from_le_bytes(b[1..9].try_into().expect("8"));
                    if b != block(b[0], s).as_slice() {
                        die(&format!("block {i} is torn or foreign"));
                    }
                    say(&format!("BLOCK {i} {} {s}", b[0] as char));
                    n += 1;
                }
                say(&format!("VERIFIED {n}"));
            }
            ["quit"] => break,
            _ => die(&format!("unknown command {line:?}")),
        }
    }
    stop_writer(&mut writer, &mut seq);
    if let Some(d) = disk {
        let _ = d.close();
    }
    let host = fs.host().clone();
    let _ = fs.unmount();
    drop(fs);
    let _ = host.leave();
    say("BYE");
}

fn hold_swap(image: &str, name: &str) {
    let fs = mount(image, name);
    let s = SwapFile::create(&fs, "vm1", 32 << 20).unwrap_or_else(|e| die(&e.to_string()));
    say(&format!("SWAP {}", s.path()));
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn reclaim(image: &str, name: &str) {
    let fs = mount(image, name);
    let free = |fs: &Fs| {
        fs.statfs()
            .unwrap_or_else(|e| die(&e.to_string()))
            .blocks_free
    };
    say(&format!("FREE {}", free(&fs)));
    let (tx, rx) = mpsc::channel();
    let r = Reclaimer::start(fs.clone(), Duration::from_millis(100), move |r| {
        let _ = tx.send(r.clone());
    });
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| die("nothing reclaimed within 30 s"));
    drop(r);
    say(&format!("RECLAIMED {} {}", got.path, got.bytes));
    say(&format!("FREE {}", free(&fs)));
    let host = fs.host().clone();
    let _ = fs.unmount();
    drop(fs);
    let _ = host.leave();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["mkfs", img] => make(img),
        ["serve", img, name, role @ ("src" | "dst")] => serve(img, name, role),
        ["swap", img, name] => hold_swap(img, name),
        ["reclaim", img, name] => reclaim(img, name),
        _ => die("usage: see the module documentation"),
    }
}
