//! `IscsiDev` against the workspace's iSCSI target, in process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iscsi_target::config::{ChapCredentials, Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;

use super::*;
use crate::dev::{BlockDev, CasOutcome, DevError};

const IQN: &str = "iqn.2024-01.org.vmfs.test:lun";

struct Target {
    addr: SocketAddr,
    server: Arc<Server>,
    _dir: tempfile::TempDir,
}

fn target_with(size: u64, chap: Option<(&str, &str)>, mutual: Option<(&str, &str)>) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun0.img");
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let creds = |c: Option<(&str, &str)>| {
        c.map(|(u, s)| ChapCredentials {
            user: u.into(),
            secret: s.into(),
        })
    };
    let config = Config {
        portals: vec!["127.0.0.1:0".parse().unwrap()],
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: IQN.into(),
            luns: vec![LunConfig {
                path: img,
                read_only: false,
            }],
            initiators: vec![],
            chap: creds(chap),
            mutual_chap: creds(mutual),
        }],
        discovery_chap: None,
    };
    let server = Server::new(config).unwrap();
    let addr = server.clone().spawn_background().unwrap();
    Target {
        addr,
        server,
        _dir: dir,
    }
}

fn opts() -> IscsiOptions {
    IscsiOptions {
        initiator: "iqn.2024-01.org.vmfs.test:init".into(),
        chap: None,
        mutual: None,
        io_timeout: Duration::from_secs(5),
        require_caw: true,
        read_only: false,
    }
}

fn open(t: &Target) -> IscsiDev {
    IscsiDev::open(&t.addr.to_string(), IQN, 0, &opts()).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn reads_writes_flushes_zeroes_and_unmaps() {
    let t = target_with(64 << 20, None, None);
    let d = open(&t);
    assert_eq!(d.size(), 64 << 20);
    assert_eq!(d.logical_block_size(), 512);
    assert!(d.capabilities().cross_machine_atomic_cas);
    assert!(d.capabilities().persistent_reservations);
    // Larger than one command (1 MiB) and than FirstBurstLength: R2T path.
    let data = pattern(3 * (1 << 20) + 4096, 7);
    d.write_at(&data, 1 << 20).unwrap();
    d.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    d.read_at(&mut back, 1 << 20).unwrap();
    assert!(back == data, "read back differs");
    d.write_zeroes((1 << 20) + 4096, 8192).unwrap();
    d.read_at(&mut back[..16384], 1 << 20).unwrap();
    assert_eq!(&back[..4096], &data[..4096]);
    assert!(back[4096..12288].iter().all(|&b| b == 0));
    assert_eq!(&back[12288..16384], &data[12288..16384]);
    if d.capabilities().unmap_zeroes {
        d.unmap(2 << 20, 1 << 20).unwrap();
        let mut z = vec![1u8; 1 << 20];
        d.read_at(&mut z, 2 << 20).unwrap();
        assert!(z.iter().all(|&b| b == 0));
    }
    // Errors name the device and the range, never panic.
    let e = d.read_at(&mut [0u8; 512], 64 << 20).unwrap_err();
    assert!(matches!(e, DevError::OutOfRange { .. }), "{e}");
    let e = d.write_at(&[0u8; 100], 0).unwrap_err();
    assert!(matches!(e, DevError::Misaligned { .. }), "{e}");
}

#[test]
fn compare_and_write_outcomes() {
    let t = target_with(1 << 20, None, None);
    let d = open(&t);
    let zero = [0u8; 512];
    let a = [0xaau8; 512];
    assert_eq!(
        d.compare_and_write(4096, &zero, &a).unwrap(),
        CasOutcome::Done
    );
    match d.compare_and_write(4096, &zero, &[1u8; 512]).unwrap() {
        CasOutcome::Miscompare(cur) => assert_eq!(cur, a.to_vec()),
        other => panic!("{other:?}"),
    }
    let e = d.compare_and_write(4096, &a, &[0u8; 1024]).unwrap_err();
    assert!(matches!(e, DevError::CasLength { .. }), "{e}");
}

#[test]
fn many_threads_many_outstanding_commands_count_exactly() {
    let t = target_with(1 << 20, None, None);
    let d = Arc::new(open(&t));
    let threads = 8;
    let per = 150u64;
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                let mut cur = [0u8; 512];
                d.read_at(&mut cur, 0).unwrap();
                while done < per {
                    let n = u64::from_le_bytes(cur[..8].try_into().unwrap());
                    let mut next = cur;
                    next[..8].copy_from_slice(&(n + 1).to_le_bytes());
                    match d.compare_and_write(0, &cur, &next).unwrap() {
                        CasOutcome::Done => {
                            done += 1;
                            cur = next;
                        }
                        CasOutcome::Miscompare(c) => cur.copy_from_slice(&c),
                        CasOutcome::Indeterminate => panic!("indeterminate on a healthy link"),
                    }
                    // Interleave bulk I/O on other threads' behalf.
                    let mut b = vec![0u8; 65536];
                    d.read_at(&mut b, 65536).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let mut cur = [0u8; 512];
    d.read_at(&mut cur, 0).unwrap();
    assert_eq!(
        u64::from_le_bytes(cur[..8].try_into().unwrap()),
        threads * per
    );
}

#[test]
fn chap_one_way_and_mutual() {
    let t = target_with(1 << 20, Some(("alice", "secret-12-chars")), None);
    let mut o = opts();
    let e = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap_err();
    assert!(e.to_string().contains("VMFS_ISCSI_CHAP_USER"), "{e}");
    o.chap = Some(ChapSecret {
        user: "alice".into(),
        secret: "wrong-secret-xx".into(),
    });
    let e = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap_err();
    assert!(e.to_string().contains("authentication failure"), "{e}");
    o.chap = Some(ChapSecret {
        user: "alice".into(),
        secret: "secret-12-chars".into(),
    });
    let d = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap();
    d.write_at(&[5u8; 512], 0).unwrap();

    let t = target_with(
        1 << 20,
        Some(("alice", "secret-12-chars")),
        Some(("target", "tsecret-12chars")),
    );
    o.mutual = Some(ChapSecret {
        user: "target".into(),
        secret: "not-the-secret!".into(),
    });
    let e = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap_err();
    assert!(e.to_string().contains("mutual CHAP failed"), "{e}");
    o.mutual = Some(ChapSecret {
        user: "target".into(),
        secret: "tsecret-12chars".into(),
    });
    let d = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap();
    let mut b = [0u8; 512];
    d.read_at(&mut b, 0).unwrap();
}

#[test]
fn target_without_compare_and_write_is_refused_for_read_write() {
    let t = target_with(1 << 20, None, None);
    t.server.targets[0].luns[0].set_compare_and_write_disabled(true);
    let e = IscsiDev::open(&t.addr.to_string(), IQN, 0, &opts()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("COMPARE AND WRITE") && msg.contains("0x89"),
        "{msg}"
    );
    let mut o = opts();
    o.read_only = true;
    o.require_caw = false;
    // Read-only opens work (reads only).
    let d = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap();
    let mut b = [1u8; 512];
    d.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0u8; 512]);
    // Without the probe's refusal, the command itself fails, naming it.
    let mut o = opts();
    o.require_caw = false;
    let d = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap();
    assert!(!d.capabilities().cross_machine_atomic_cas);
    let e = d.compare_and_write(0, &[0; 512], &[1; 512]).unwrap_err();
    assert!(e.to_string().contains("COMPARE AND WRITE"), "{e}");
}

#[test]
fn reconnects_with_session_reinstatement() {
    let t = target_with(1 << 20, None, None);
    let d = open(&t);
    d.write_at(&[9u8; 512], 512).unwrap();
    let first = d.tsih();
    assert_ne!(first, 0);
    d.drop_connection("test: path lost");
    assert_eq!(d.tsih(), 0);
    let mut b = [0u8; 512];
    d.read_at(&mut b, 512).unwrap();
    assert_eq!(b, [9u8; 512]);
    assert_ne!(d.tsih(), 0);
    assert_ne!(
        d.tsih(),
        first,
        "a new session (new TSIH) after reinstatement"
    );
}

#[test]
fn preempt_and_abort_fences_the_victim() {
    let t = target_with(1 << 20, None, None);
    let a = open(&t);
    let b = open(&t);
    let ka = pr_key_for(crate::format::Holder { slot: 0, hb_gen: 3 });
    let kb = pr_key_for(crate::format::Holder { slot: 1, hb_gen: 7 });
    a.register_key(ka).unwrap();
    b.register_key(kb).unwrap();
    let mut keys = a.read_keys().unwrap();
    keys.sort();
    assert_eq!(keys, vec![ka, kb]);
    b.write_at(&[1u8; 512], 0).unwrap();
    a.preempt_key(kb).unwrap();
    assert_eq!(a.read_keys().unwrap(), vec![ka]);
    let e = b.write_at(&[2u8; 512], 0).unwrap_err();
    assert!(matches!(e, DevError::Fenced { .. }), "{e}");
    let e = b
        .compare_and_write(0, &[1u8; 512], &[2u8; 512])
        .unwrap_err();
    assert!(matches!(e, DevError::Fenced { .. }), "{e}");
    // Reads stay allowed (registrants-only is a write exclusion).
    let mut r = [0u8; 512];
    b.read_at(&mut r, 0).unwrap();
    assert_eq!(r, [1u8; 512]);
    // A read-write open registers a provisional ("JN") key before any
    // write, and is fenced the same way.
    let c = open(&t);
    let kc = *a
        .read_keys()
        .unwrap()
        .iter()
        .find(|k| *k >> 48 == 0x4a4e)
        .expect("provisional key of the third initiator");
    c.write_at(&[3u8; 512], 0).unwrap();
    a.preempt_key(kc).unwrap();
    let e = c.write_at(&[3u8; 512], 0).unwrap_err();
    assert!(matches!(e, DevError::Fenced { .. }), "{e}");
    // A read-only open refuses writes itself.
    let mut o = opts();
    o.read_only = true;
    o.require_caw = false;
    let ro = IscsiDev::open(&t.addr.to_string(), IQN, 0, &o).unwrap();
    let e = ro.write_at(&[3u8; 512], 0).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    // Preempting a key that is gone is not an error; A still writes.
    a.preempt_key(kb).unwrap();
    a.write_at(&[4u8; 512], 0).unwrap();
    // The victim registers anew (a new incarnation) and may write again.
    b.register_key(pr_key_for(crate::format::Holder { slot: 1, hb_gen: 9 }))
        .unwrap();
    b.write_at(&[5u8; 512], 0).unwrap();
}

/// A TCP relay that can swallow everything the target sends.
struct Blackhole {
    addr: SocketAddr,
    swallow: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, swallow: Option<Arc<AtomicBool>>) {
    let mut b = [0u8; 65536];
    loop {
        let n = match from.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if swallow.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&b[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

fn blackhole(upstream: SocketAddr) -> Blackhole {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let swallow = Arc::new(AtomicBool::new(false));
    let s = swallow.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(u) = TcpStream::connect(upstream) else {
                continue;
            };
            let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            std::thread::spawn(move || pump(c, u, None));
            let s = s.clone();
            std::thread::spawn(move || pump(u2, c2, Some(s)));
        }
    });
    Blackhole { addr, swallow }
}

#[test]
fn lost_responses_make_compare_and_write_indeterminate() {
    let t = target_with(1 << 20, None, None);
    let bh = blackhole(t.addr);
    let d = IscsiDev::open(&bh.addr.to_string(), IQN, 0, &opts()).unwrap();
    d.set_io_timeout(Duration::from_millis(300));
    bh.swallow.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let r = d.compare_and_write(0, &[0u8; 512], &[7u8; 512]).unwrap();
    assert_eq!(r, CasOutcome::Indeterminate);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Reads time out with an error naming the command and LBA.
    let e = d.read_at(&mut [0u8; 512], 1024).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("READ(16) at LBA 2")
            || msg.contains("timed out")
            || msg.contains("no response"),
        "{msg}"
    );
    // The path comes back: the next command reconnects; the CAS landed.
    bh.swallow.store(false, Ordering::SeqCst);
    d.set_io_timeout(Duration::from_secs(5));
    let mut b = [0u8; 512];
    d.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [7u8; 512]);
}
