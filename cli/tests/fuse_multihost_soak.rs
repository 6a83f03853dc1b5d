//! Three `vmfs mount` processes of one image fight over it: worker threads
//! (two per mount) run a seeded random mix of create / write+fsync /
//! read / rename (replacing and not) / unlink / mkdir / rmdir / readdir+stat
//! in shared directories, and write-opens of "pinned" files other hosts hold
//! open for write (EBUSY is the only right answer). Every read of a settled
//! file is compared byte for byte with the version whose fsync + close last
//! returned (`mh_soak/model.rs`). Halfway, one mount is SIGKILLed while it
//! holds a pinned file open for write and another thread creates and renames
//! files on it; a survivor must write-open that file within D + 2H. At the
//! end the survivors unmount cleanly, `vmfs-fsck` must find the volume clean
//! and a fresh mount must hold exactly what the model says.
//!
//! VMFS_MH_SECS (default 20, the test run's length) seconds of operations;
//! VMFS_MH_SEED replays a seed (the thread interleaving is the kernel's, so a
//! replay repeats each worker's choices, not their timing); VMFS_MH_STRICT=1
//! also fails on the known-limit ftruncate EBUSY and holds the takeover to
//! D + 2H exactly; VMFS_MH_KEEP=DIR keeps a failed run's image there.

mod fuse_util;
mod mh_soak;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuse_util::{check_image, env_or, fuse_or_skip, make_image, mount, timeouts, MountProc};
use mh_soak::content::{content, Rng};
use mh_soak::model::{pin_name, Hold, Kind, Model, CRASH_DIR, DIRS, PINS, PIN_DIR};
use mh_soak::worker::{close, write_version, Worker};
use mh_soak::{errno, errno_name, Shared};

const HOSTS: usize = 3;
const WORKERS_PER_HOST: usize = 2;
/// The host that is SIGKILLed halfway.
const VICTIM: usize = 2;
/// The pinned file it holds open for write when it dies.
const VICTIM_PIN: usize = 0;
/// `vmfs mount`'s default `--attr-timeout-ms`: how long a kernel may show
/// another host's old names and sizes.
const ATTR_TIMEOUT: Duration = Duration::from_millis(1000);
/// Added to it for scheduling delays on a loaded machine.
const SLACK: Duration = Duration::from_millis(500);

#[test]
fn three_hosts_fight_over_one_volume() {
    if !fuse_or_skip("fuse_multihost_soak") {
        return;
    }
    let secs: f64 = env_or("VMFS_MH_SECS", 20.0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed: u64 = env_or("VMFS_MH_SEED", Rng(clock).next() % 1_000_000);
    eprintln!("fuse_multihost_soak: seed {seed}, {secs} s (replay: VMFS_MH_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let mut mounts: Vec<Option<MountProc>> = (0..HOSTS)
        .map(|h| {
            Some(mount(
                &img,
                &dir.path().join(format!("m{h}")),
                &format!("host-{h}"),
            ))
        })
        .collect();
    let sh = Arc::new(Shared::new(seed, Model::new(ATTR_TIMEOUT + SLACK), HOSTS));
    populate(&mounts[0].as_ref().unwrap().mountpoint, &sh);

    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut workers: Vec<(usize, std::thread::JoinHandle<()>)> = Vec::new();
    for (h, m) in mounts.iter().enumerate() {
        for w in 0..WORKERS_PER_HOST {
            let index = h * WORKERS_PER_HOST + w;
            let mut worker = Worker {
                host: h,
                index,
                root: m.as_ref().unwrap().mountpoint.clone(),
                rng: Rng(seed.wrapping_mul(1000).wrapping_add(index as u64)),
                sh: sh.clone(),
            };
            workers.push((h, std::thread::spawn(move || worker.run(until))));
        }
    }

    sleep_until(&sh, start + Duration::from_secs_f64(secs / 2.0));
    let mut takeover = None;
    let victim_slot = slot_of(&mounts[VICTIM].as_ref().unwrap().output());
    if !sh.aborted() {
        sh.stop[VICTIM].store(true, Ordering::SeqCst);
        for (_, t) in workers.extract_if(.., |(h, _)| *h == VICTIM) {
            t.join().unwrap();
        }
        let victim = mounts[VICTIM].take().unwrap();
        let survivor = mounts[0].as_ref().unwrap().mountpoint.clone();
        takeover = crash_and_take_over(victim, &survivor, &sh);
    }
    for (_, t) in workers {
        t.join().unwrap();
    }
    let ran = start.elapsed();

    let failures = sh.failures.lock().unwrap().clone();
    if !failures.is_empty() {
        for m in mounts.iter().flatten() {
            eprintln!("--- {} said:\n{}", m.mountpoint.display(), m.output());
        }
        keep_image(&img, seed);
        panic!(
            "fuse_multihost_soak (seed {seed}): {} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    // Survivors leave cleanly; one of them recovered the victim's slot.
    let mut said = String::new();
    for m in mounts.into_iter().flatten() {
        let (st, out) = m.stop();
        assert!(st.success(), "a surviving vmfs mount exited {st}:\n{out}");
        assert!(out.contains("left the volume cleanly"), "{out}");
        said.push_str(&out);
    }
    assert!(
        said.contains("recovered dead host slot"),
        "no survivor recovered the killed host's slot:\n{said}"
    );

    let stale_locks = mh_soak::checker::fsck_clean_but_stale_locks(&img, victim_slot, seed);

    let fresh = mount(&img, &dir.path().join("verify"), "host-verify");
    let checked = {
        let m = sh.model.lock().unwrap();
        mh_soak::verify::volume_matches(&fresh.mountpoint, &m)
    };
    let (st, out) = fresh.stop();
    let (files, bytes) = checked.unwrap_or_else(|bad| {
        keep_image(&img, seed);
        panic!(
            "fuse_multihost_soak (seed {seed}): the volume differs from the model:\n{}",
            bad.join("\n")
        )
    });
    assert!(st.success(), "verifying mount exited {st}:\n{out}");
    check_image(&img);

    let stats = sh.stats.lock().unwrap();
    let ops: Vec<String> = stats.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let races: Vec<String> = stats
        .races
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let t = timeouts();
    eprintln!(
        "fuse_multihost_soak: seed {seed}: {HOSTS} hosts × {WORKERS_PER_HOST} workers, {ran:.1?}; \
         ops: {}; allowed races: {}; reads verified {} (unsettled {}); EBUSY confirmed {}; \
         takeover {:?} (D + 2H = {:?}); final: {files} files, {bytes} bytes exact, \
         fsck clean (after repairing {stale_locks} stale lock(s) of the killed host); \
         known-limit ftruncate EBUSY retried {} time(s) (VMFS_MH_STRICT=1 fails on them)",
        ops.join(", "),
        if races.is_empty() {
            "none".into()
        } else {
            races.join(", ")
        },
        stats.reads_verified,
        stats.reads_unsettled,
        stats.ebusy_confirmed,
        takeover.unwrap_or_default(),
        t.dead_after + 2 * t.heartbeat,
        mh_soak::worker::FTRUNCATE_EBUSY_RETRIED.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        stats.reads_verified > 0 && stats.ebusy_confirmed > 0,
        "the run checked too little (raise VMFS_MH_SECS)"
    );
}

/// With `VMFS_MH_KEEP=DIR`, a failed run's image is copied there (sparse)
/// for a look with `vmfs-fsck -n` and friends; the mounts are still up, so
/// it is the volume as the hosts left it at that moment.
fn keep_image(img: &std::path::Path, seed: u64) {
    let Some(dir) = std::env::var_os("VMFS_MH_KEEP") else {
        return;
    };
    let to = std::path::Path::new(&dir).join(format!("mh-soak-{seed}.img"));
    let st = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(img)
        .arg(&to)
        .status();
    eprintln!(
        "fuse_multihost_soak: image kept as {} ({st:?})",
        to.display()
    );
}

/// The heartbeat slot `vmfs mount` said it joined with.
fn slot_of(said: &str) -> u32 {
    said.split("(host slot ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no host slot in: {said}"))
}

fn sleep_until(sh: &Shared, t: Instant) {
    while Instant::now() < t && !sh.aborted() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shared directories and the pinned files (version 1), made through
/// the first mount.
fn populate(root: &Path, sh: &Shared) {
    for d in DIRS.iter().chain([&PIN_DIR, &CRASH_DIR]) {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let mut m = sh.model.lock().unwrap();
    for i in 0..PINS {
        let id = m.new_id();
        let f = std::fs::File::create(root.join(pin_name(i))).unwrap();
        write_version(&f, id, 1, Duration::ZERO).unwrap();
        let ino = f.metadata().unwrap().ino();
        close(f).unwrap();
        m.created(&pin_name(i), id, ino, 1);
    }
}

/// The victim write-opens a pinned file, writes half a new version without
/// fsync, keeps creating and renaming files in `crash/`, and is SIGKILLed;
/// a survivor must then write-open the file within D + 2H. Returns the
/// takeover time (failures are recorded in `sh`).
fn crash_and_take_over(mut victim: MountProc, survivor: &Path, sh: &Shared) -> Option<Duration> {
    let path = pin_name(VICTIM_PIN);
    let id = loop {
        let mut m = sh.model.lock().unwrap();
        let Some(Kind::File(id)) = m.kind(&path) else {
            unreachable!()
        };
        if m.files[&id].holds.is_empty() && m.files[&id].busy == 0 {
            m.reserved[VICTIM_PIN] = true;
            break id;
        }
        drop(m);
        std::thread::sleep(Duration::from_millis(5));
    };
    // Readers' shared locks may refuse it for a moment (EBUSY).
    let t = Instant::now();
    let held = loop {
        match OpenOptions::new()
            .write(true)
            .open(victim.mountpoint.join(&path))
        {
            Ok(f) => break f,
            Err(e) if errno(&e) == libc::EBUSY && t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => {
                sh.fail(format!("seed {}: victim write-open {path}: {e}", sh.seed));
                return None;
            }
        }
    };
    let version = {
        let mut m = sh.model.lock().unwrap();
        let token = m.new_token();
        let f = m.files.get_mut(&id).unwrap();
        f.holds.push(Hold {
            host: VICTIM,
            token,
            dead: false,
        });
        f.uncertain = true;
        f.epoch += 1;
        let version = f.version + 1;
        m.note(
            id,
            "driver",
            format!("host {VICTIM} holds it, writes half of version {version}, no fsync"),
        );
        version
    };
    let data = content(id, version);
    if let Err(e) = held.write_all_at(&data[..data.len() / 2], 0) {
        sh.fail(format!("seed {}: victim write {path}: {e}", sh.seed));
    }

    // Metadata in flight at the moment of death: creates, writes, renames
    // and unlinks in crash/ (not modelled; the volume must stay consistent).
    let chaff_stop = Arc::new(AtomicBool::new(false));
    let chaff_ops = Arc::new(Mutex::new(0u64));
    let chaff = {
        let root = victim.mountpoint.join(CRASH_DIR);
        let stop = chaff_stop.clone();
        let count = chaff_ops.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let a = root.join(format!("c{}", i % 8));
                let b = root.join(format!("r{}", i % 5));
                let step = std::fs::write(&a, content(1_000_000 + i, 1))
                    .and_then(|()| std::fs::rename(&a, &b))
                    .and_then(|()| {
                        if i % 3 == 0 {
                            std::fs::remove_file(&b)
                        } else {
                            Ok(())
                        }
                    });
                if step.is_err() {
                    return; // the mount died
                }
                i += 1;
                *count.lock().unwrap() += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    // The takeover is timed on host 0 with its workers held between
    // operations: one host runs one operation at a time, and one waiting
    // for a busy lock (up to D + T) would delay the open for reasons that
    // are not the crash. Host 1's workers keep going.
    let quiet = sh.gate[0].write().unwrap();
    let killed = Instant::now();
    victim.kill(); // SIGKILL, wait, lazy detach of the dead mount point
    chaff_stop.store(true, Ordering::SeqCst);
    chaff.join().unwrap();
    drop(held);
    {
        let mut m = sh.model.lock().unwrap();
        for h in &mut m.files.get_mut(&id).unwrap().holds {
            h.dead = true;
        }
    }
    eprintln!(
        "fuse_multihost_soak: killed host {VICTIM} holding {path} open for write ({} crash/ steps done)",
        chaff_ops.lock().unwrap()
    );

    let t = timeouts();
    let limit = t.dead_after + 2 * t.heartbeat;
    let f = loop {
        match OpenOptions::new().write(true).open(survivor.join(&path)) {
            Ok(f) => break f,
            Err(e)
                if errno(&e) == libc::EBUSY
                    && killed.elapsed() < limit + Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => {
                sh.fail(format!(
                    "seed {}: host 0 write-open {path} {:?} after host {VICTIM} was killed: {} ({e})",
                    sh.seed,
                    killed.elapsed(),
                    errno_name(errno(&e))
                ));
                return None;
            }
        }
    };
    let took = killed.elapsed();
    drop(quiet);
    // The bound itself is proven on a quiet pair of mounts by
    // fuse_two_hosts; here three hosts load the machine, and the
    // recovery's journal replay ends in a flush of an image the others
    // keep writing (100+ ms seen on a loaded 2-core machine). So a little
    // scheduling slack unless VMFS_MH_STRICT=1.
    let strict = std::env::var("VMFS_MH_STRICT").is_ok_and(|v| v == "1");
    let slack = if strict {
        Duration::ZERO
    } else {
        Duration::from_millis(250)
    };
    if took > limit + slack {
        sh.fail(format!(
            "seed {}: host 0 took {path} over {took:?} after host {VICTIM} was killed, more than D + 2H = {limit:?} (+ {slack:?} slack)",
            sh.seed
        ));
    }
    let version = version + 1;
    match write_version(&f, id, version, Duration::ZERO).and_then(|()| close(f)) {
        Ok(()) => {
            let mut m = sh.model.lock().unwrap();
            m.files.get_mut(&id).unwrap().holds.clear();
            m.note(id, "driver", format!("host 0 took it over after {took:?}"));
            m.committed(id, version);
            m.reserved[VICTIM_PIN] = false;
        }
        Err(e) => sh.fail(format!(
            "seed {}: host 0 write after taking {path} over: {e}",
            sh.seed
        )),
    }
    Some(took)
}
