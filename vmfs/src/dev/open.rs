//! Opening a device named by a [`DeviceUrl`]: an image file or block device
//! through [`FileDev`], or a LUN through [`IscsiDev`].

use std::sync::Arc;
use std::time::Duration;

use super::iscsi::{IscsiDev, IscsiOptions};
use super::url::DeviceUrl;
use super::{FileDev, FileDevOptions, SharedDev};
use crate::cluster::PrFencer;

/// How to open.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    pub read_only: bool,
    /// Create a sparse image of this size if the path does not exist.
    pub create_size: Option<u64>,
    /// For a path: pread/pwrite instead of io_uring. Callers issuing one
    /// synchronous I/O at a time per thread (the FUSE mount) gain from it
    /// on image files, whose buffered io_uring writes are handed to kernel
    /// worker threads (one more context switch per I/O).
    pub pread_engine: bool,
}

/// An opened device, with the iSCSI handle when it is one (for fencing and
/// for tying its command timeout to the volume's I/O timeout).
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    pub dev: SharedDev,
    pub iscsi: Option<Arc<IscsiDev>>,
}

impl OpenedDevice {
    /// The persistent-reservation fencer for `HostConfig::fencer`.
    pub fn fencer(&self) -> Option<Arc<dyn PrFencer>> {
        self.iscsi.clone().map(|d| d as Arc<dyn PrFencer>)
    }

    /// Per-command deadline of network devices (the lock protocol's T).
    pub fn set_io_timeout(&self, t: Duration) {
        if let Some(d) = &self.iscsi {
            d.set_io_timeout(t);
        }
    }
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Url(#[from] super::url::UrlError),
    #[error(transparent)]
    File(#[from] super::DevError),
    #[error("{url}: {source}")]
    Iscsi {
        url: String,
        #[source]
        source: super::iscsi::IscsiError,
    },
    #[error("{url}: {why}")]
    Config { url: String, why: String },
}

/// Open `spec` (a path or `iscsi://HOST[:PORT]/IQN/LUN`). iSCSI logins take
/// their initiator name and CHAP credentials from the environment
/// ([`IscsiOptions::from_env`]); a read-write open refuses a target without
/// COMPARE AND WRITE.
pub fn open_device(spec: &str, opts: OpenOptions) -> Result<OpenedDevice, OpenError> {
    match DeviceUrl::parse(spec)? {
        DeviceUrl::Path(p) => {
            let dev = FileDev::open(
                &p,
                FileDevOptions {
                    read_only: opts.read_only,
                    create_size: opts.create_size,
                    no_uring: opts.pread_engine,
                },
            )?;
            Ok(OpenedDevice {
                dev: Arc::new(dev),
                iscsi: None,
            })
        }
        DeviceUrl::Iscsi(u) => {
            let io = IscsiOptions::from_env(opts.read_only).map_err(|why| OpenError::Config {
                url: u.to_string(),
                why,
            })?;
            let d = IscsiDev::open(&u.addr(), &u.target, u.lun, &io).map_err(|source| {
                OpenError::Iscsi {
                    url: u.to_string(),
                    source,
                }
            })?;
            let d = Arc::new(d);
            Ok(OpenedDevice {
                dev: d.clone(),
                iscsi: Some(d),
            })
        }
    }
}
