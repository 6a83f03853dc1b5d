//! Starting and stopping what `vmfs up` serves: the FUSE mount, the iSCSI
//! export of the LUN and the NFS export of the filesystem. A service that
//! cannot start is reported with the reason and the others go on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_target::config::{ChapCredentials, Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;
use vmfs::fs::Fs;
use vmfs::fuse::{FuseOptions, Mounted, Unmounted};

use super::config::{FuseService, IscsiService, NfsService};

/// Why `/dev/fuse` cannot be used here, if it cannot.
pub fn fuse_unusable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (load the fuse module, or pass --device /dev/fuse to the container)".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse cannot be opened: {e}"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mounting needs root (this build mounts through /dev/fuse directly, without fusermount)".into());
    }
    None
}

/// The FUSE mount of this host's filesystem.
pub fn start_fuse(
    fs: &Fs,
    svc: &FuseService,
    fsname: &str,
    on_destroy: std::sync::mpsc::Sender<()>,
) -> Result<Mounted, String> {
    if let Some(why) = fuse_unusable() {
        return Err(why);
    }
    std::fs::create_dir_all(&svc.mountpoint)
        .map_err(|e| format!("creating {}: {e}", svc.mountpoint.display()))?;
    let opts = FuseOptions {
        ttl: Duration::from_millis(svc.attr_timeout_ms),
        threads: svc.threads,
        fsname: fsname.to_string(),
        allow_other: true,
        ..FuseOptions::default()
    };
    vmfs::fuse::mount(fs.clone(), &svc.mountpoint, &opts, Some(on_destroy))
        .map_err(|e| e.to_string())
}

/// Unmount, saying how it went.
pub fn stop_fuse(m: Mounted) -> Result<String, String> {
    let mp = m.mountpoint().to_path_buf();
    match m.unmount() {
        Ok(Unmounted::Clean) => Ok(format!("{} unmounted", mp.display())),
        Ok(Unmounted::Detached) => Ok(format!(
            "{} detached (files were open; they now fail with EIO)",
            mp.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The running iSCSI target (its own runtime; dropped to stop).
pub struct IscsiExport {
    rt: tokio::runtime::Runtime,
    pub bound: Vec<SocketAddr>,
    pub target: String,
}

/// Serve `image` as LUN 0 of `svc.target`.
pub fn start_iscsi(image: &Path, svc: &IscsiService) -> Result<IscsiExport, String> {
    let config = Config {
        portals: svc.listen.clone(),
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: svc.target.clone(),
            luns: vec![LunConfig {
                path: PathBuf::from(image),
                read_only: false,
            }],
            initiators: svc.allow_initiators.clone(),
            chap: svc.chap.as_ref().map(|(user, secret)| ChapCredentials {
                user: user.clone(),
                secret: secret.clone(),
            }),
            mutual_chap: None,
        }],
        discovery_chap: None,
    };
    config.validate().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("iscsi")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the iSCSI runtime: {e}"))?;
    let server: Arc<Server> = Server::new(config).map_err(|e| e.to_string())?;
    let run = rt.spawn(server.clone().run());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bound = server.bound.lock().map(|b| b.clone()).unwrap_or_default();
        if bound.len() == svc.listen.len() {
            return Ok(IscsiExport {
                rt,
                bound,
                target: svc.target.clone(),
            });
        }
        if run.is_finished() {
            let why = match rt.block_on(run) {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "the target stopped at once".into(),
                Err(e) => e.to_string(),
            };
            return Err(format!("listening on {}: {why}", fmt_addrs(&svc.listen)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "listening on {}: not bound after 5 s",
                fmt_addrs(&svc.listen)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl IscsiExport {
    /// Stop accepting and drop every session (initiators see the
    /// connection close and retry elsewhere or later).
    pub fn stop(self) {
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

pub fn fmt_addrs(a: &[SocketAddr]) -> String {
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The NFS gateway: a host of its own on the volume (identity
/// `DIR/host-id-nfs`), so files written over NFS are locked by the gateway
/// and `vmfs status` shows it beside this host.
pub struct NfsExport {
    gateway: nfs_gw::VmfsGateway,
    host: nfs_gw::vmfs_backend::VmfsHost,
    pub addr: SocketAddr,
    pub export: String,
}

pub fn start_nfs(
    image: &Path,
    dir: &Path,
    host_name: &str,
    svc: &NfsService,
    events: std::sync::mpsc::Sender<vmfs::cluster::HostEvent>,
) -> Result<NfsExport, String> {
    use nfs_gw::vmfs_backend::{load_host_id, VmfsHost};
    let clients = if svc.allow.is_empty() {
        nfs_gw::ExportOptions::default().clients
    } else {
        svc.allow
            .iter()
            .map(|a| a.parse().map_err(|e| format!("nfs.allow '{a}': {e}")))
            .collect::<Result<Vec<_>, String>>()?
    };
    let id = load_host_id(&dir.join("host-id-nfs")).map_err(|e| e.to_string())?;
    let image_s = image.to_str().ok_or("the image path is not UTF-8")?;
    let host = VmfsHost::join(image_s, &format!("{host_name}-nfs"), id, Some(events))
        .map_err(|e| e.to_string())?;
    let opts = nfs_gw::VmfsServeOptions {
        listen: svc.listen,
        export: nfs_gw::ExportOptions {
            clients,
            root_squash: svc.root_squash,
            read_only: svc.read_only,
        },
        ..nfs_gw::VmfsServeOptions::default()
    };
    match nfs_gw::serve_vmfs(host.fs.clone(), opts) {
        Ok(gateway) => Ok(NfsExport {
            addr: gateway.local_addr(),
            export: gateway.export_path().to_string(),
            gateway,
            host,
        }),
        Err(e) => {
            let _ = host.leave();
            Err(e.to_string())
        }
    }
}

impl NfsExport {
    /// Stop serving, close the gateway's files, leave the volume cleanly.
    pub fn stop(self) -> Result<(), String> {
        let mut errs = Vec::new();
        if let Err(e) = self.gateway.shutdown() {
            errs.push(format!("NFS gateway: {e}"));
        }
        if let Err(e) = self.host.leave() {
            errs.push(format!("NFS gateway host: {e}"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// A fenced gateway host: stop serving, abandon the slot.
    pub fn abandon(self) {
        drop(self.gateway);
        self.host.host.clone().abandon();
    }
}
