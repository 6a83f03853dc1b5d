//! A host process for the network cluster tests: joins the volume on a
//! device URL, mounts the filesystem and writes until told to stop,
//! printing every acknowledged fsync with a checksum.
//!
//! fs-host URL NAME SECONDS
//!
//! Writes `/NAME/fN` files (whole content checksummed), keeps `/shared/NAME.log`
//! open for write and appends a record per round (prefix checksummed), and
//! creates empty `/shared/NAME-N` entries, one round every 120 ms. Stdout, one line each:
//!
//! JOINED slot hb_gen | ACK path len crc32 | FENCED why | REJOINED slot hb_gen |
//! RECOVERED slot records | SWEPT n | DONE
//!
//! SIGUSR1: from now on write the marker pattern (the test cut our link and
//! checks that none of it reaches the disk); cleared when we rejoin.
//! SIGUSR2: open every file in /shared for write once (breaks the locks of
//! dead hosts, replaying their journals). Timeouts: the defaults scaled by
//! FS_HOST_SCALE (default 0.1: H 300 ms, T 800 ms, F 1.6 s, D 2.5 s).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig, HostEvent, Timeouts};
use vmfs::dev::{open_device, OpenOptions, OpenedDevice};
use vmfs::fs::Fs;
use vmfs::volume::Volume;

/// 16 bytes no legitimate content contains.
pub const MARKER: &[u8; 16] = b"!VMFS-CUT-MARK!!";

static MARK: AtomicBool = AtomicBool::new(false);
static SWEEP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    MARK.store(true, Ordering::SeqCst);
}
extern "C" fn on_usr2(_: libc::c_int) {
    SWEEP.store(true, Ordering::SeqCst);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    eprintln!("fs-host: {msg}");
    std::process::exit(1);
}

fn timeouts() -> Timeouts {
    let f = std::env::var("FS_HOST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.1);
    Timeouts::scaled(f)
}

fn content(name: &str, i: u64, len: usize) -> Vec<u8> {
    if MARK.load(Ordering::SeqCst) {
        return MARKER.iter().copied().cycle().take(len).collect();
    }
    let mut x = crc32fast::hash(format!("{name}-{i}").as_bytes()) as u64 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Mounted {
    host: Host,
    fs: Fs,
    log: Option<(u64, u64)>,  // (fh, size)
    dirs: Option<(u64, u64)>, // (own, shared)
}

fn join(dev: &OpenedDevice, uuid: [u8; 16], name: &str) -> Mounted {
    let t = timeouts();
    dev.set_io_timeout(t.io_timeout);
    let start = Instant::now();
    loop {
        let vol = match Volume::open(dev.dev.clone()) {
            Ok(v) => v,
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("fs-host {name}: opening the volume: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(e) => die(&e.to_string()),
        };
        let mut cfg = HostConfig::new(name);
        cfg.host_uuid = uuid;
        cfg.timeouts = Some(t);
        cfg.fencer = dev.fencer();
        cfg.join_timeout = Duration::from_secs(60);
        match Host::join(vol, cfg) {
            Ok(host) => {
                let (tx, rx) = channel();
                host.subscribe(tx);
                std::thread::spawn(move || print_events(rx));
                host.start();
                let fs = Fs::mount(host.clone()).unwrap_or_else(|e| die(&e.to_string()));
                return Mounted {
                    host,
                    fs,
                    log: None,
                    dirs: None,
                };
            }
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("fs-host {name}: joining: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => die(&format!("joining: {e}")),
        }
    }
}

/// Print host events as they happen (the main loop may be inside a stuck I/O).
fn print_events(rx: Receiver<HostEvent>) {
    for ev in rx {
        match ev {
            HostEvent::Fenced(why) => say(&format!("FENCED {why}")),
            HostEvent::Recovered { slot, records } => say(&format!("RECOVERED {slot} {records}")),
        }
    }
}

fn dir(fs: &Fs, name: &str) -> Result<u64, vmfs::fs::FsError> {
    match fs.mkdir(fs.root(), name.as_bytes(), 0o755, 0, 0) {
        Ok(a) => Ok(a.ino),
        Err(vmfs::fs::FsError::Exists(_)) => Ok(fs.lookup(fs.root(), name.as_bytes())?.ino),
        Err(e) => Err(e),
    }
}

fn write_file(fs: &Fs, parent: u64, fname: &str, data: &[u8]) -> Result<bool, vmfs::fs::FsError> {
    let a = match fs.create(parent, fname.as_bytes(), 0o644, 0, 0) {
        Ok(a) => a,
        Err(vmfs::fs::FsError::Exists(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let fh = fs.open(a.ino, true)?;
    let r = if data.is_empty() {
        fs.fsync(fh)
    } else {
        fs.write(fh, 0, data).and_then(|_| fs.fsync(fh))
    };
    let c = fs.close(fh);
    r?;
    c?;
    Ok(true)
}

/// One round of work; Err means the host should check whether it is fenced.
fn round(m: &mut Mounted, name: &str, i: u64) -> Result<(), vmfs::fs::FsError> {
    let fs = &m.fs;
    let marked = MARK.load(Ordering::SeqCst);
    if m.dirs.is_none() {
        m.dirs = Some((dir(fs, name)?, dir(fs, "shared")?));
    }
    let (own, shared) = m.dirs.expect("looked up above");
    // The log stays open for write: another host can take it only by
    // breaking our lock, i.e. after declaring us dead.
    if m.log.is_none() {
        let lname = format!("{name}.log");
        let ino = match fs.create(shared, lname.as_bytes(), 0o644, 0, 0) {
            Ok(a) => a.ino,
            Err(vmfs::fs::FsError::Exists(_)) => fs.lookup(shared, lname.as_bytes())?.ino,
            Err(e) => return Err(e),
        };
        let fh = fs.open(ino, true)?;
        let size = fs.getattr(ino)?.size;
        m.log = Some((fh, size));
    }
    let (fh, size) = m.log.expect("opened above");
    let rec = content(name, i + 2_000_000, 256);
    if marked {
        say("MARKING");
    }
    fs.write(fh, size, &rec)?;
    fs.fsync(fh)?;
    m.log = Some((fh, size + rec.len() as u64));
    if !marked {
        let whole = fs.read(fh, 0, (size + 256) as usize)?;
        say(&format!(
            "ACK /shared/{name}.log {} {:08x}",
            whole.len(),
            crc32fast::hash(&whole)
        ));
    }
    let len = 4096 * (1 + (i % 8) as usize) + (i % 3) as usize * 100;
    let data = content(name, i, len);
    let path = format!("/{name}/f{i}");
    if write_file(fs, own, &format!("f{i}"), &data)? && !marked {
        say(&format!(
            "ACK {path} {} {:08x}",
            data.len(),
            crc32fast::hash(&data)
        ));
    }
    // An empty entry in the shared directory (no data block: the volume
    // stays small).
    if write_file(fs, shared, &format!("{name}-{i}"), &[])? && !marked {
        say(&format!(
            "ACK /shared/{name}-{i} 0 {:08x}",
            crc32fast::hash(&[])
        ));
    }
    Ok(())
}

/// Open every other file in /shared for write once: a file a dead host
/// held open is taken by breaking its lock (after recovering that host).
/// Files live hosts hold stay busy and are skipped.
fn sweep(m: &Mounted, name: &str) -> Result<usize, vmfs::fs::FsError> {
    let fs = &m.fs;
    let shared = dir(fs, "shared")?;
    let own_log = format!("{name}.log");
    let mut n = 0;
    let mut off = 0;
    loop {
        let items = fs.readdir(shared, off, 256)?;
        if items.is_empty() {
            break;
        }
        for it in &items {
            off = it.next;
            if it.dtype != 8 || it.name == own_log.as_bytes() {
                continue;
            }
            match fs.open(it.ino, true) {
                Ok(fh) => {
                    fs.close(fh)?;
                    n += 1;
                }
                Err(vmfs::fs::FsError::Busy { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        die("usage: fs-host URL NAME SECONDS");
    }
    let (url, name) = (&args[1], &args[2]);
    let secs: f64 = args[3].parse().unwrap_or_else(|_| die("SECONDS"));
    // SAFETY: installing async-signal-safe handlers (they only store to atomics).
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
    let dev = open_device(url, OpenOptions::default()).unwrap_or_else(|e| die(&e.to_string()));
    let uuid: [u8; 16] = rand::random();
    let mut m = join(&dev, uuid, name);
    say(&format!(
        "JOINED {} {}",
        m.host.slot(),
        m.host.holder().hb_gen
    ));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        if m.host.is_fenced() {
            // This incarnation is over: join again as a new one.
            m.host.clone().abandon();
            MARK.store(false, Ordering::SeqCst);
            m = join(&dev, uuid, name);
            say(&format!(
                "REJOINED {} {}",
                m.host.slot(),
                m.host.holder().hb_gen
            ));
            continue;
        }
        if SWEEP.swap(false, Ordering::SeqCst) {
            match sweep(&m, name) {
                Ok(n) => say(&format!("SWEPT {n}")),
                Err(e) => eprintln!("fs-host {name}: sweep: {e}"),
            }
            continue;
        }
        i += 1;
        if let Err(e) = round(&mut m, name, i) {
            if !m.host.is_fenced() && !MARK.load(Ordering::SeqCst) {
                eprintln!("fs-host {name}: round {i}: {e}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    if let Some((fh, _)) = m.log.take() {
        let _ = m.fs.close(fh);
    }
    let _ = m.fs.unmount();
    if let Err(e) = m.host.leave() {
        die(&format!("leaving: {e}"));
    }
    say("DONE");
}
