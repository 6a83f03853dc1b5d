//! A short-lived host for one command (`vmfs disk …`, `vmfs swap …`): join
//! the volume, mount its filesystem, do the job, leave cleanly.

use vmfs::cluster::{Host, HostConfig};
use vmfs::fs::Fs;
use vmfs::volume::Volume;

use crate::device::open_device;
use crate::process::machine_name;

/// Options every job command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    /// Host name recorded in the heartbeat slot (default: the machine's).
    #[arg(long)]
    pub host_name: Option<String>,
}

/// A joined host with its filesystem mounted.
pub struct Session {
    pub device: String,
    pub host: Host,
    pub fs: Fs,
}

impl Session {
    pub fn join(device: &str, a: &HostArgs) -> Result<Session, String> {
        let dev = open_device(device, None, false)?;
        let vol = Volume::open(dev).map_err(|e| format!("{device}: {e}"))?;
        let cfg = HostConfig::new(&a.host_name.clone().unwrap_or_else(machine_name));
        let host =
            Host::join(vol, cfg).map_err(|e| format!("{device}: joining the volume: {e}"))?;
        host.start();
        match Fs::mount(host.clone()) {
            Ok(fs) => Ok(Session {
                device: device.to_string(),
                host,
                fs,
            }),
            Err(e) => {
                let _ = host.leave();
                Err(format!("{device}: mounting the filesystem: {e}"))
            }
        }
    }

    /// Prefix an error with the device.
    pub fn err(&self, e: impl std::fmt::Display) -> String {
        format!("{}: {e}", self.device)
    }

    /// Close every file, release every lock, leave the volume.
    pub fn close(self) -> Result<(), String> {
        let mut errs = Vec::new();
        if let Err(e) = self.fs.unmount() {
            errs.push(format!("closing files: {e}"));
        }
        drop(self.fs);
        if let Err(e) = self.host.leave() {
            errs.push(format!("leaving the volume: {e}"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.device, errs.join("; ")))
        }
    }

    /// Run `f`, then close (keeping `f`'s error first).
    pub fn run<T>(self, f: impl FnOnce(&Session) -> Result<T, String>) -> Result<T, String> {
        let r = f(&self);
        let c = self.close();
        let v = r?;
        c?;
        Ok(v)
    }
}
