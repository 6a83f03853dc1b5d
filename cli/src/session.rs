//! A joined host with its filesystem mounted: for one job (`vmfs disk …`,
//! `vmfs swap …`: join, do the job, leave cleanly) and for the serving
//! commands (`vmfs mount`, `vmfs up`), which start it the same way.

use std::sync::mpsc::Sender;
use std::time::Duration;

use vmfs::cluster::{Host, HostConfig, HostEvent};
use vmfs::disk::swap::Reclaimer;
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
        Session::start(device, vol, cfg, None).map_err(|e| format!("{device}: {e}"))
    }

    /// Join `vol` as a host, start its heartbeat and mount its filesystem
    /// (leaving again if the mount fails). `events` gets the host's events
    /// from the first beat on. Every command that joins comes through here.
    pub fn start(
        device: &str,
        vol: Volume,
        cfg: HostConfig,
        events: Option<Sender<HostEvent>>,
    ) -> Result<Session, String> {
        let label = vol.header.label.clone();
        let host = Host::join(vol, cfg).map_err(|e| format!("joining '{label}': {e}"))?;
        if let Some(tx) = events {
            host.subscribe(tx);
        }
        host.start();
        match Fs::mount(host.clone()) {
            Ok(fs) => Ok(Session {
                device: device.to_string(),
                host,
                fs,
            }),
            Err(e) => {
                let _ = host.leave();
                Err(format!("mounting the filesystem of '{label}': {e}"))
            }
        }
    }

    /// Reclaim the swap files of hosts that die, every H (at least 250
    /// ms), for as long as the returned value lives; each reported as
    /// `"{who}: …"`.
    pub fn reclaim_swap(&self, who: &'static str) -> Reclaimer {
        let interval = self
            .host
            .timeouts()
            .heartbeat
            .max(Duration::from_millis(250));
        Reclaimer::start(self.fs.clone(), interval, move |r| println!("{who}: {r}"))
    }

    /// Close every file, release every lock, leave the volume (slot
    /// CLEAN_EXIT). Failures are added to `errors`; true when the host
    /// left cleanly.
    pub fn leave(self, errors: &mut Vec<String>) -> bool {
        if let Err(e) = self.fs.unmount() {
            errors.push(format!("closing files: {e}"));
        }
        drop(self.fs);
        match self.host.leave() {
            Ok(()) => true,
            Err(e) => {
                errors.push(format!("leaving the volume: {e}"));
                false
            }
        }
    }

    /// Prefix an error with the device.
    pub fn err(&self, e: impl std::fmt::Display) -> String {
        format!("{}: {e}", self.device)
    }

    /// [`Session::leave`], the errors as one, prefixed with the device.
    pub fn close(self) -> Result<(), String> {
        let device = self.device.clone();
        let mut errs = Vec::new();
        self.leave(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("{device}: {}", errs.join("; ")))
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
