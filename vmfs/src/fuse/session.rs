//! Mounting through `/dev/fuse` (as root, straight `mount(2)`: no libfuse,
//! no fusermount) and unmounting.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::fs::{Fs, FsError};

use super::dispatch::Served;
use super::{FuseOptions, Gate, VmfsFuse};

/// Why a mount could not be made or undone.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("/dev/fuse is missing: load the fuse module (modprobe fuse)")]
    NoFuseDevice,
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// The mount is gone and the session has ended.
    Clean,
    /// Files were still open: the mount was detached (`umount -l`); it
    /// goes away when they are closed, and requests get EIO until then.
    Detached,
}

/// A live FUSE mount of an [`Fs`].
#[derive(Debug)]
pub struct Mounted {
    session: BackgroundSession,
    gate: Arc<Gate>,
    mountpoint: PathBuf,
}

/// Mount `fs` at `mountpoint` and serve it from background threads.
/// `on_destroy` is told when the kernel ends the session (someone ran
/// `umount`).
pub fn mount(
    fs: Fs,
    mountpoint: &Path,
    opts: &FuseOptions,
    on_destroy: Option<Sender<()>>,
) -> Result<Mounted, MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuseDevice);
    }
    let io_err = |op, source| MountError::Io {
        path: mountpoint.to_path_buf(),
        op,
        source,
    };
    if !mountpoint.is_dir() {
        return Err(io_err(
            "mount point",
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let vf = VmfsFuse::new(fs, opts)?;
    if let Some(tx) = on_destroy {
        vf.notify_destroy(tx);
    }
    let gate = vf.gate();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("vmfs".into()),
        MountOption::DefaultPermissions,
        // Reads do not update atime (no metadata write per read).
        MountOption::NoAtime,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // Session threads read /dev/fuse and answer what cannot wait; the
    // rest goes to the workers (dispatch.rs).
    config.n_threads = Some(opts.session_threads.max(1));
    let served = Served::new(vf, opts.threads);
    let session =
        fuser::spawn_mount(served, mountpoint, &config).map_err(|e| io_err("mount", e))?;
    raise_readahead(mountpoint);
    Ok(Mounted {
        session,
        gate,
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    /// The switch that makes every request fail with EIO.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Has the session ended (an outside `umount`)?
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmount: plainly if nothing holds the mount busy, else detach it.
    /// Every request still arriving gets EIO.
    pub fn unmount(self) -> Result<Unmounted, MountError> {
        self.gate.stop();
        let mountpoint = self.mountpoint.clone();
        match self.session.umount_and_join() {
            Ok(()) => Ok(Unmounted::Clean),
            // Not a mount point any more: someone ran `umount`, and the
            // session ends (or has ended) by itself.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Unmounted::Clean),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                detach(&mountpoint)?;
                Ok(Unmounted::Detached)
            }
            Err(e) => Err(MountError::Io {
                path: mountpoint,
                op: "unmount",
                source: e,
            }),
        }
    }
}

/// Readahead window asked of the kernel for the mount, in KiB.
const READAHEAD_KB: u32 = 4096;

/// Widen the kernel's readahead window for the mount from the 128 KiB it
/// offers at FUSE_INIT (and which init cannot raise) to [`READAHEAD_KB`]:
/// sequential reads then go out as 1 MiB requests (max_pages permitting)
/// instead of 128 KiB ones. The knob is the mount's backing-device info
/// in sysfs; it must be written after the INIT reply, which lowers it, so
/// a stat of the mount root (answered only once INIT is done) comes first.
/// Failing is not fatal: the mount works with the smaller window.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(md) => md.dev(),
        Err(e) => {
            tracing::warn!("fuse: stat {}: {e}", mountpoint.display());
            return;
        }
    };
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
        tracing::info!("fuse: readahead stays at the kernel's default: {knob}: {e}");
    }
}

/// Lazily unmount `mountpoint` (MNT_DETACH).
pub fn detach(mountpoint: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Io {
        path: mountpoint.to_path_buf(),
        op: "detach",
        source,
    };
    let c = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}
