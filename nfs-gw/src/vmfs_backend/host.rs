//! The gateway as a vmfs host: open the device, join the volume with a
//! persistent host identity, start heartbeating, mount the filesystem; and
//! leave cleanly (files closed, locks released, slot CLEAN_EXIT).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use thiserror::Error;
use vmfs::cluster::{Host, HostConfig, HostEvent};
use vmfs::dev::{FileDev, FileDevOptions};
use vmfs::fs::Fs;
use vmfs::volume::Volume;

/// Why the gateway could not become (or stop being) a host of a volume.
#[derive(Debug, Error)]
pub enum JoinError {
    #[error("{device}: {why}")]
    Device { device: String, why: String },
    #[error("host id file {path}: {why}")]
    HostId { path: PathBuf, why: String },
    #[error("joining volume '{label}' on {device}: {why}")]
    Join {
        device: String,
        label: String,
        why: String,
    },
    #[error("mounting the filesystem of '{label}': {why}")]
    Mount { label: String, why: String },
    #[error("leaving volume '{label}': {why}")]
    Leave { label: String, why: String },
}

/// Reads the 16-byte host identity from `path` (32 hex digits, dashes
/// allowed), creating it with a random one when the file does not exist.
/// The same identity across restarts lets a restarted gateway recognise
/// its previous slot.
pub fn load_host_id(path: &Path) -> Result<[u8; 16], JoinError> {
    let err = |why: String| JoinError::HostId {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err("not a host id (32 hex digits expected)".into()));
            }
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id: [u8; 16] = rand::random();
            let text = vmfs::format::header::uuid_string(&id) + "\n";
            std::fs::write(path, text).map_err(|e| err(format!("creating: {e}")))?;
            Ok(id)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A joined, heartbeating host with the filesystem mounted.
pub struct VmfsHost {
    pub host: Host,
    pub fs: Fs,
    pub device: String,
}

impl VmfsHost {
    /// Opens `device` (an image file or block device), joins its volume as
    /// `host_name` with identity `host_id`, starts the heartbeat and mounts
    /// the filesystem. `events` receives fencing and recovery reports.
    pub fn join(
        device: &str,
        host_name: &str,
        host_id: [u8; 16],
        events: Option<Sender<HostEvent>>,
    ) -> Result<VmfsHost, JoinError> {
        let dev_err = |why: String| JoinError::Device {
            device: device.to_string(),
            why,
        };
        let dev = FileDev::open(
            device,
            FileDevOptions {
                read_only: false,
                create_size: None,
                no_uring: false,
            },
        )
        .map_err(|e| dev_err(e.to_string()))?;
        let vol = Volume::open(Arc::new(dev)).map_err(|e| dev_err(e.to_string()))?;
        let label = vol.header.label.clone();
        let mut cfg = HostConfig::new(host_name);
        cfg.host_uuid = host_id;
        let host = Host::join(vol, cfg).map_err(|e| JoinError::Join {
            device: device.to_string(),
            label: label.clone(),
            why: e.to_string(),
        })?;
        if let Some(tx) = events {
            host.subscribe(tx);
        }
        host.start();
        let fs = match Fs::mount(host.clone()) {
            Ok(fs) => fs,
            Err(e) => {
                let _ = host.leave();
                return Err(JoinError::Mount {
                    label,
                    why: e.to_string(),
                });
            }
        };
        Ok(VmfsHost {
            host,
            fs,
            device: device.to_string(),
        })
    }

    /// The volume label (the export name).
    pub fn label(&self) -> String {
        self.host.volume().header.label.clone()
    }

    /// Closes every file and releases every lock, then leaves the volume
    /// (slot CLEAN_EXIT). Close the gateway's handles first
    /// ([`super::VmfsBackend::close_all`]).
    pub fn leave(self) -> Result<(), JoinError> {
        let label = self.label();
        let mut errs = Vec::new();
        if let Err(e) = self.fs.unmount() {
            errs.push(format!("closing files: {e}"));
        }
        drop(self.fs);
        if let Err(e) = self.host.leave() {
            errs.push(e.to_string());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(JoinError::Leave {
                label,
                why: errs.join("; "),
            })
        }
    }
}
