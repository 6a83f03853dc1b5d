//! Several queues at once, frontends that come and go (cleanly, mid-I/O, or
//! speaking garbage), and graceful shutdown.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::{driver, opts, pattern, Daemon};
use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_S_OK;
use vmfs_vhost_blk::frontend::{BlkQueue, DriverOptions, Layout, Request};
use vmfs_vhost_blk::{FileBackend, MemBackend, ServeError};

const MIB: u64 = 1 << 20;

/// Keep `depth` writes of 4 KiB in flight on `q` over sectors
/// `[first, first + count * 8)`, then read everything back.
fn pipelined_writes(q: &mut BlkQueue, first: u64, count: u64, depth: usize, seed: u8) {
    let mut next = 0u64;
    let mut done = 0u64;
    let mut inflight = 0usize;
    while done < count {
        while inflight < depth && next < count {
            let sector = first + next * 8;
            let data = pattern(sector * 512, 4096, seed);
            q.push(
                &Request::Write {
                    sector,
                    data: &data,
                },
                Layout::Direct,
            )
            .unwrap();
            next += 1;
            inflight += 1;
        }
        q.kick().unwrap();
        for c in q.wait().unwrap() {
            assert_eq!(c.status, VIRTIO_BLK_S_OK as u8);
            done += 1;
            inflight -= 1;
        }
    }
    for i in 0..count {
        let sector = first + i * 8;
        assert!(
            q.read(sector, 4096).unwrap() == pattern(sector * 512, 4096, seed),
            "sector {sector}"
        );
    }
}

#[test]
fn two_queues_serve_concurrent_io() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(16 * MIB).unwrap();
    let disk = Arc::new(FileBackend::open(f.path(), false).unwrap());
    let d = Daemon::start(disk, opts(2));
    let (_fe, qs) = d.connect(&driver(2));
    let mut it = qs.into_iter();
    let (mut q0, mut q1) = (it.next().unwrap(), it.next().unwrap());
    // Queue 0 writes the first 8 MiB, queue 1 the second, both at depth 16.
    let t0 = std::thread::spawn(move || {
        pipelined_writes(&mut q0, 0, 512, 16, 1);
        q0
    });
    let t1 = std::thread::spawn(move || {
        pipelined_writes(&mut q1, 16384, 512, 16, 2);
        q1
    });
    let mut q0 = t0.join().unwrap();
    let _q1 = t1.join().unwrap();
    q0.flush().unwrap();
    let content = std::fs::read(f.path()).unwrap();
    for i in 0..1024u64 {
        let (base, seed) = if i < 512 { (0, 1) } else { (16384, 2) };
        let sector = base + (i % 512) * 8;
        let off = (sector * 512) as usize;
        assert!(
            content[off..off + 4096] == pattern(sector * 512, 4096, seed),
            "file at sector {sector}"
        );
    }
    d.stop().unwrap();
}

#[test]
fn driver_without_event_idx_is_served() {
    let mem = Arc::new(MemBackend::new(8 * MIB, false));
    let d = Daemon::start(mem, opts(1));
    let o = DriverOptions {
        event_idx: false,
        ..driver(1)
    };
    let (fe, mut qs) = d.connect(&o);
    assert_eq!(fe.acked_features() & (1 << 29), 0, "EVENT_IDX not acked");
    pipelined_writes(&mut qs[0], 0, 256, 24, 4);
    d.stop().unwrap();
}

#[test]
fn daemon_serves_the_next_frontend_after_a_disconnect() {
    let mem = Arc::new(MemBackend::new(8 * MIB, false));
    let d = Daemon::start(mem.clone(), opts(2));
    // 1: clean I/O, then disconnect.
    {
        let (_fe, mut qs) = d.connect(&driver(2));
        qs[0].write(0, &pattern(0, 8192, 1)).unwrap();
        qs[1].write(100, &pattern(100 * 512, 4096, 2)).unwrap();
    }
    // 2: a frontend that sends garbage and vanishes.
    {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        let _ = s.write_all(&[0xde; 7]);
    }
    // 3: disconnect with requests in flight, never waited for.
    {
        let (_fe, mut qs) = d.connect(&driver(1));
        for i in 0..16u64 {
            let data = pattern((1000 + i * 8) * 512, 4096, 3);
            qs[0]
                .push(
                    &Request::Write {
                        sector: 1000 + i * 8,
                        data: &data,
                    },
                    Layout::Direct,
                )
                .unwrap();
        }
        qs[0].kick().unwrap();
    }
    // 4: the daemon still serves, with what was acknowledged before intact.
    let (mut fe, mut qs) = d.connect(&driver(2));
    assert_eq!(qs[0].read(0, 8192).unwrap(), pattern(0, 8192, 1));
    assert_eq!(qs[1].read(100, 4096).unwrap(), pattern(100 * 512, 4096, 2));
    // In-flight writes of the dropped frontend are each either fully done or
    // not done at all (the worker finishes what it popped).
    for i in 0..16u64 {
        let sector = 1000 + i * 8;
        let got = qs[0].read(sector, 4096).unwrap();
        assert!(
            got == pattern(sector * 512, 4096, 3) || got.iter().all(|&b| b == 0),
            "sector {sector} torn"
        );
    }
    // GET_VRING_BASE reports how far the device got in queue 1: the read
    // above and this flush.
    qs[1].flush().unwrap();
    assert_eq!(fe.stop_queue(1).unwrap(), 2);
    assert!(
        mem.flushes() >= 3,
        "backend flushed at each disconnect and on FLUSH"
    );
    drop(qs);
    drop(fe);
    d.stop().unwrap();
}

#[test]
fn shutdown_with_a_connected_frontend_flushes_and_removes_the_socket() {
    let mem = Arc::new(MemBackend::new(4 * MIB, false));
    let d = Daemon::start(mem.clone(), opts(1));
    let socket = d.socket.clone();
    let o = DriverOptions {
        timeout: std::time::Duration::from_millis(500),
        ..driver(1)
    };
    let (_fe, mut qs) = d.connect(&o);
    qs[0].write(0, &pattern(0, 4096, 8)).unwrap();
    let flushes = mem.flushes();
    d.stop().unwrap();
    assert!(mem.flushes() > flushes, "shutdown flushed the backend");
    assert!(!socket.exists(), "socket removed at shutdown");
    // The dropped connection's queue no longer completes anything.
    let r = qs[0]
        .push(&Request::Flush, Layout::Direct)
        .and_then(|_| qs[0].kick());
    if r.is_ok() {
        let o = qs[0].wait();
        assert!(o.is_err(), "no completion after shutdown");
    }
}

#[test]
fn bad_options_and_busy_socket_are_refused() {
    let mem = Arc::new(MemBackend::new(MIB, false));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    for (what, o) in [
        (
            "0 queues",
            vmfs_vhost_blk::ServeOptions {
                num_queues: 0,
                ..opts(1)
            },
        ),
        (
            "queue size 100",
            vmfs_vhost_blk::ServeOptions {
                queue_size: 100,
                ..opts(1)
            },
        ),
        (
            "21-byte serial",
            vmfs_vhost_blk::ServeOptions {
                serial: "x".repeat(21),
                ..opts(1)
            },
        ),
    ] {
        match vmfs_vhost_blk::serve(mem.clone(), &sock, o) {
            Err(ServeError::InvalidOption(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let d = Daemon::start(mem.clone(), opts(1));
    match vmfs_vhost_blk::serve(mem, &d.socket, opts(1)) {
        Err(ServeError::SocketInUse { .. }) => {}
        other => panic!("second daemon on a live socket: {other:?}"),
    }
    d.stop().unwrap();
}
