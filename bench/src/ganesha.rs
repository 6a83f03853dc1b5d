//! The nfs-ganesha anchor: `ganesha.nfsd` with the VFS FSAL exporting a
//! plain directory over NFSv3/TCP on loopback, NFS and MOUNT on their own
//! ports (ganesha cannot serve both on one).
//!
//! Ganesha 4.x always registers with rpcbind and exits when it cannot
//! (there is no setting to skip it), so when no rpcbind answers on port
//! 111 one is started (`rpcbind -f -w`) for the anchor's lifetime.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

/// A running ganesha (and the rpcbind started for it, if any).
pub struct Ganesha {
    child: Child,
    rpcbind: Option<Child>,
    pub nfs_port: u16,
    pub mnt_port: u16,
    pub export: PathBuf,
    pub log: PathBuf,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The VFS FSAL plugin, installing `nfs-ganesha-vfs` when missing (root).
fn ensure_vfs_fsal() -> Result<(), String> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu/ganesha",
        "/usr/lib/aarch64-linux-gnu/ganesha",
        "/usr/lib64/ganesha",
        "/usr/lib/ganesha",
    ];
    let present = || {
        dirs.iter()
            .any(|d| Path::new(d).join("libfsalvfs.so").exists())
    };
    if present() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the VFS FSAL (Debian nfs-ganesha-vfs) is missing; install it as root".into());
    }
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq", "nfs-ganesha-vfs"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get install nfs-ganesha-vfs: {e}"))?;
    if !st.success() || !present() {
        return Err(format!("apt-get install nfs-ganesha-vfs failed ({st})"));
    }
    Ok(())
}

fn config(export: &Path, nfs_port: u16, mnt_port: u16) -> String {
    format!(
        r#"NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {nfs_port};
    MNT_Port = {mnt_port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
    Export_Id = 77;
    Path = {path};
    Pseudo = /anchor;
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"#,
        path = export.display()
    )
}

impl Ganesha {
    /// Starts ganesha exporting `export` (created), with its files in `dir`.
    pub fn start(dir: &Path, export: &Path) -> Result<Ganesha, String> {
        let bin = tools::ensure("ganesha.nfsd", "nfs-ganesha")?;
        ensure_vfs_fsal()?;
        std::fs::create_dir_all(export).map_err(|e| format!("{}: {e}", export.display()))?;
        let rpcbind = if answers(111) {
            None
        } else {
            let rb = tools::ensure("rpcbind", "rpcbind")?;
            let child = Command::new(rb)
                .args(["-f", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting rpcbind: {e}"))?;
            let t = Instant::now();
            while !answers(111) {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err("rpcbind did not come up on port 111".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(child)
        };
        let (nfs_port, mnt_port) = (free_port()?, free_port()?);
        let conf = dir.join("ganesha.conf");
        let log = dir.join("ganesha.log");
        std::fs::write(&conf, config(export, nfs_port, mnt_port))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting ganesha.nfsd: {e}"))?;
        let mut g = Ganesha {
            child,
            rpcbind,
            nfs_port,
            mnt_port,
            export: export.to_path_buf(),
            log,
        };
        g.wait_ready()?;
        Ok(g)
    }

    /// A libnfs URL for `name` in the export.
    pub fn url(&self, name: &str) -> String {
        format!(
            "nfs://127.0.0.1{}/{name}?nfsport={}&mountport={}",
            self.export.display(),
            self.nfs_port,
            self.mnt_port
        )
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let t = Instant::now();
        let ls = tools::ensure("nfs-ls", "libnfs-utils")?;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "ganesha.nfsd exited ({st}); see {}",
                    self.log.display()
                ));
            }
            let ok = Command::new(&ls)
                .arg(self.url(""))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "ganesha.nfsd did not serve the export within 30 s; see {}",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut r) = self.rpcbind.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}
