//! Malformed and refused requests: IOERR / UNSUPP with the daemon alive
//! afterwards, never a hang or a changed disk; read-only mode.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{driver, opts, pattern, Daemon};
use virtio_bindings::bindings::virtio_blk::*;
use vmfs_vhost_blk::frontend::{Buf, Layout, Request, Segment, STATUS_UNWRITTEN};
use vmfs_vhost_blk::{FileBackend, MemBackend};

const MIB: u64 = 1 << 20;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Everything the daemon logs in this test binary (the daemon runs in other
/// threads, so the subscriber is the global one).
fn captured_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(buf))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

#[test]
fn out_of_range_unaligned_and_malformed_requests_fail_cleanly() {
    let log = captured_log();
    let size = 4 * MIB;
    let original = pattern(0, size as usize, 5);
    let mem = Arc::new(MemBackend::with_contents(original.clone(), false));
    let d = Daemon::start(mem.clone(), opts(1));
    let (_fe, mut qs) = d.connect(&driver(1));
    let q = &mut qs[0];
    let last = size / 512;
    let data = vec![0xAAu8; 4096];
    let cases: Vec<(&str, Request<'_>, u8)> = vec![
        (
            "read past the end",
            Request::Read {
                sector: last,
                len: 512,
            },
            IOERR,
        ),
        (
            "read straddling the end",
            Request::Read {
                sector: last - 1,
                len: 1024,
            },
            IOERR,
        ),
        (
            "write past the end",
            Request::Write {
                sector: last - 4,
                data: &data,
            },
            IOERR,
        ),
        (
            "sector * 512 overflows",
            Request::Read {
                sector: u64::MAX / 256,
                len: 512,
            },
            IOERR,
        ),
        (
            "read not a sector multiple",
            Request::Read {
                sector: 0,
                len: 100,
            },
            IOERR,
        ),
        (
            "write not a sector multiple",
            Request::Write {
                sector: 0,
                data: &data[..700],
            },
            IOERR,
        ),
        (
            "unknown request type",
            Request::Other {
                kind: 99,
                sector: 0,
            },
            UNSUPP,
        ),
        (
            "GET_LIFETIME not offered",
            Request::Other {
                kind: 10,
                sector: 0,
            },
            UNSUPP,
        ),
        (
            "SECURE_ERASE not offered",
            Request::Other {
                kind: VIRTIO_BLK_T_SECURE_ERASE,
                sector: 0,
            },
            UNSUPP,
        ),
        ("discard without segments", Request::Discard(&[]), IOERR),
        (
            "discard segment too large",
            Request::Discard(&[Segment {
                sector: 0,
                sectors: u32::MAX,
                flags: 0,
            }]),
            IOERR,
        ),
    ];
    for (what, req, want) in &cases {
        let c = q.run(req, Layout::Direct).unwrap();
        assert_eq!(c.status, *want, "{what}");
        assert_eq!(
            c.used_len, 1,
            "{what}: only the status byte is reported written"
        );
    }

    // Hand-built chains the request builder would never produce.
    let (tag, meta, data_area) = q.alloc_slot().unwrap();
    let status = meta.0 + 16;
    // Header of 8 bytes only.
    q.write_guest(meta, &header(VIRTIO_BLK_T_IN, 0)).unwrap();
    let short = [
        Buf {
            addr: meta,
            len: 8,
            writable: false,
        },
        Buf {
            addr: data_area,
            len: 512,
            writable: true,
        },
        Buf {
            addr: vm_memory::GuestAddress(status),
            len: 1,
            writable: true,
        },
    ];
    q.push_chain(tag, &short).unwrap();
    q.kick().unwrap();
    let c = q.wait_tag(tag).unwrap();
    assert_eq!(c.status, IOERR, "short header");
    // OUT with a device-writable data buffer besides the status.
    let (tag, meta, data_area) = q.alloc_slot().unwrap();
    q.write_guest(meta, &header(VIRTIO_BLK_T_OUT, 0)).unwrap();
    let bufs = [
        Buf {
            addr: meta,
            len: 16,
            writable: false,
        },
        Buf {
            addr: data_area,
            len: 512,
            writable: true,
        },
        Buf {
            addr: vm_memory::GuestAddress(meta.0 + 16),
            len: 1,
            writable: true,
        },
    ];
    q.push_chain(tag, &bufs).unwrap();
    q.kick().unwrap();
    assert_eq!(
        q.wait_tag(tag).unwrap().status,
        IOERR,
        "write with writable data"
    );
    // IN with extra readable data after the header.
    let (tag, meta, data_area) = q.alloc_slot().unwrap();
    q.write_guest(meta, &header(VIRTIO_BLK_T_IN, 0)).unwrap();
    let bufs = [
        Buf {
            addr: meta,
            len: 16,
            writable: false,
        },
        Buf {
            addr: data_area,
            len: 512,
            writable: false,
        },
        Buf {
            addr: vm_memory::GuestAddress(meta.0 + 16),
            len: 1,
            writable: true,
        },
    ];
    q.push_chain(tag, &bufs).unwrap();
    q.kick().unwrap();
    assert_eq!(
        q.wait_tag(tag).unwrap().status,
        IOERR,
        "read with readable data"
    );
    // No device-writable byte at all: nowhere to put a status; the chain is
    // still returned (used length 0) so the queue does not stall.
    let (tag, meta, data_area) = q.alloc_slot().unwrap();
    q.write_guest(meta, &header(VIRTIO_BLK_T_OUT, 0)).unwrap();
    let bufs = [
        Buf {
            addr: meta,
            len: 16,
            writable: false,
        },
        Buf {
            addr: data_area,
            len: 512,
            writable: false,
        },
    ];
    q.push_chain(tag, &bufs).unwrap();
    q.kick().unwrap();
    let c = q.wait_tag(tag).unwrap();
    assert_eq!(
        (c.status, c.used_len),
        (STATUS_UNWRITTEN, 0),
        "chain without status byte"
    );
    // A buffer outside guest RAM.
    let (tag, meta, _) = q.alloc_slot().unwrap();
    q.write_guest(meta, &header(VIRTIO_BLK_T_IN, 0)).unwrap();
    let bufs = [
        Buf {
            addr: meta,
            len: 16,
            writable: false,
        },
        Buf {
            addr: vm_memory::GuestAddress(0x7000_0000_0000),
            len: 512,
            writable: true,
        },
        Buf {
            addr: vm_memory::GuestAddress(meta.0 + 16),
            len: 1,
            writable: true,
        },
    ];
    q.push_chain(tag, &bufs).unwrap();
    q.kick().unwrap();
    let c = q.wait_tag(tag).unwrap();
    assert_eq!(
        c.used_len, 0,
        "chain pointing outside guest RAM is returned unprocessed"
    );

    // Each failure was logged with what was wrong.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    for needle in [
        "read at sector 8192 (+512 bytes) is beyond the end of the 4194304-byte disk",
        "data length 100 is not a multiple of 512",
        "request type 99 is not supported",
        "request header is 8 device-readable bytes",
        "no device-writable status byte",
        "bad descriptor chain",
    ] {
        assert!(text.contains(needle), "log mentions {needle:?}:\n{text}");
    }

    // The daemon is still serving, and nothing above changed the disk.
    assert_eq!(q.read(0, 4096).unwrap(), original[..4096]);
    drop(qs);
    d.stop().unwrap();
    assert!(
        mem.contents() == original,
        "no failed request modified the disk"
    );
}

#[test]
fn read_only_mode_refuses_every_modification() {
    let original = pattern(0, (2 * MIB) as usize, 7);
    let mem = Arc::new(MemBackend::with_contents(original.clone(), false));
    let mut o = opts(1);
    o.read_only = true;
    let d = Daemon::start(mem.clone(), o);
    let (fe, mut qs) = d.connect(&driver(1));
    assert_ne!(
        fe.acked_features() & (1 << VIRTIO_BLK_F_RO),
        0,
        "VIRTIO_BLK_F_RO offered"
    );
    let q = &mut qs[0];
    let data = vec![1u8; 4096];
    let seg = [Segment {
        sector: 0,
        sectors: 8,
        flags: 0,
    }];
    for (what, req) in [
        (
            "write",
            Request::Write {
                sector: 0,
                data: &data,
            },
        ),
        ("discard", Request::Discard(&seg)),
        ("write-zeroes", Request::WriteZeroes(&seg)),
    ] {
        assert_eq!(
            q.run(&req, Layout::Direct).unwrap().status,
            IOERR,
            "{what} on a read-only disk"
        );
    }
    assert_eq!(q.read(0, 8192).unwrap(), original[..8192]);
    assert_eq!(q.run(&Request::Flush, Layout::Direct).unwrap().status, OK);
    drop(qs);
    drop(fe);
    d.stop().unwrap();
    assert!(mem.contents() == original);

    // A file opened read-only is served read-only without the option.
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &original).unwrap();
    let disk = Arc::new(FileBackend::open(f.path(), true).unwrap());
    let d = Daemon::start(disk, opts(1));
    let (fe, mut qs) = d.connect(&driver(1));
    assert_ne!(fe.acked_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let c = qs[0]
        .run(
            &Request::Write {
                sector: 0,
                data: &data,
            },
            Layout::Direct,
        )
        .unwrap();
    assert_eq!(c.status, IOERR);
    drop(qs);
    drop(fe);
    d.stop().unwrap();
    assert!(std::fs::read(f.path()).unwrap() == original);
}
