//! Torn reads: another host writes an inode body in place while this host
//! reads it without holding the lock. The reader sees a mix of old and new
//! bytes; the checksum catches it and the read is retried, so lookups and
//! getattr never report a live volume as corrupt.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::cluster::{Host, HostConfig};
use crate::dev::{BlockDev, DevError, SharedDev};
use crate::volume::Volume;

use super::tests::{stop, Rig};
use super::{Fs, SetAttr};

/// Delegates to `inner`; the next `tears` reads covering `at` come back
/// with a byte flipped at `at` (what a read racing a write can return).
#[derive(Debug)]
struct TearDev {
    inner: SharedDev,
    at: AtomicU64,
    tears: AtomicU32,
}

impl TearDev {
    fn arm(&self, at: u64, tears: u32) {
        self.at.store(at, Ordering::SeqCst);
        self.tears.store(tears, Ordering::SeqCst);
    }
}

impl crate::dev::DevWrapper for TearDev {
    fn inner(&self) -> &dyn BlockDev {
        &*self.inner
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.inner.read_at(buf, offset)?;
        let at = self.at.load(Ordering::SeqCst);
        if (offset..offset + buf.len() as u64).contains(&at)
            && self
                .tears
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok()
        {
            buf[(at - offset) as usize] ^= 0x5a;
        }
        Ok(())
    }
}

fn tearing_fs(r: &Rig, name: &str) -> (Fs, Arc<TearDev>) {
    let tear = Arc::new(TearDev {
        inner: r.dev.clone(),
        at: AtomicU64::new(u64::MAX),
        tears: AtomicU32::new(0),
    });
    let dev: SharedDev = tear.clone();
    let h = Host::join(Volume::open(dev).unwrap(), HostConfig::new(name)).unwrap();
    h.start();
    (Fs::mount(h).unwrap(), tear)
}

#[test]
fn a_torn_inode_read_is_retried_and_real_damage_still_reported() {
    let r = Rig::new(256 << 20, None);
    let a = r.fs("a");
    let (b, tear) = tearing_fs(&r, "b");
    let root = a.root();
    let dir = a.mkdir(root, b"vm1", 0o755, 0, 0).unwrap();
    let f = a.create(dir.ino, b"vm1.vmx", 0o644, 0, 0).unwrap();
    // A keeps the file open for write: it may rewrite the body any time.
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, b"config").unwrap();
    a.fsync(fh).unwrap();
    let sa = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    a.setattr(f.ino, &sa).unwrap();

    // Inode bodies start one sector into the inode; flip a byte well inside.
    let body = |ino: u64| a.host().volume().inode_addr(ino) + 512 + 100;

    // A few torn reads of the file's body: getattr and lookup still answer.
    tear.arm(body(f.ino), 3);
    assert_eq!(b.getattr(f.ino).unwrap().mode & 0o7777, 0o600);
    tear.arm(body(f.ino), 3);
    assert_eq!(b.lookup(dir.ino, b"vm1.vmx").unwrap().size, 6);
    // The directory's own body torn while a lookup walks it.
    tear.arm(body(dir.ino), 3);
    assert_eq!(b.lookup(dir.ino, b"vm1.vmx").unwrap().ino, f.ino);
    tear.arm(body(dir.ino), 3);
    assert!(b
        .readdir(dir.ino, 0, 100)
        .unwrap()
        .iter()
        .any(|d| d.name == b"vm1.vmx"));

    // Damage that does not heal is still an error (EIO), not a wrong answer.
    tear.arm(body(f.ino), u32::MAX);
    let e = b.getattr(f.ino).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    tear.arm(body(dir.ino), u32::MAX);
    let e = b.lookup(dir.ino, b"vm1.vmx").unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    tear.arm(u64::MAX, 0);

    a.close(fh).unwrap();
    stop(a);
    stop(b);
    r.check();
}
