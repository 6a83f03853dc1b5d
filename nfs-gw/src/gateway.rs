//! Running the gateway from synchronous code: [`Gateway`] owns a thread
//! with its own tokio runtime, and [`serve_vmfs`] exports a mounted vmfs
//! filesystem through one — the entry point `vmfs up` and tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use vmfs::fs::Fs;

use crate::backend::BackendError;
use crate::export::{Export, ExportOptions};
use crate::server::Server;
use crate::vmfs_backend::VmfsBackend;

/// A gateway serving on its own thread until [`Gateway::stop`].
pub struct Gateway {
    addr: SocketAddr,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Binds `listen` (port 0: the kernel picks) and serves `exports`.
    /// With `rpcbind`, registers NFS and MOUNT with a local rpcbind if one
    /// runs (failure is only logged).
    pub fn start(
        listen: SocketAddr,
        exports: Vec<Export>,
        rpcbind: bool,
    ) -> std::io::Result<Gateway> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nfs-gw")
            .enable_all()
            .build()?;
        let server = rt.block_on(Server::bind(listen, exports))?;
        let addr = server.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("nfs-gw server".into())
            .spawn(move || {
                let r = rt.block_on(async move {
                    if rpcbind {
                        tokio::spawn(register(addr));
                    }
                    server
                        .run_until(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                });
                // Ends open connections; calls still in a backend finish.
                rt.shutdown_timeout(Duration::from_secs(30));
                r
            })?;
        Ok(Gateway {
            addr,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends every connection and waits for calls in
    /// progress. Returns the server's error, if it failed before.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("gateway thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

async fn register(addr: SocketAddr) {
    let pmap = SocketAddr::from(([127, 0, 0, 1], 111));
    match crate::portmap::register(pmap, addr.port()).await {
        Ok(true) => tracing::info!(port = addr.port(), "registered with rpcbind"),
        Ok(false) => tracing::warn!("rpcbind refused the registration"),
        Err(e) => tracing::info!(error = %e, "no rpcbind registration (not running?)"),
    }
}

/// Options of [`serve_vmfs`].
#[derive(Debug, Clone)]
pub struct VmfsServeOptions {
    /// Address to listen on (loopback by default).
    pub listen: SocketAddr,
    /// Client networks, root squash, read-only.
    pub export: ExportOptions,
    /// How long a file handle opened for NFS stays open unused.
    pub idle_close: Duration,
    /// Register with a local rpcbind when one runs.
    pub rpcbind: bool,
}

impl Default for VmfsServeOptions {
    fn default() -> Self {
        VmfsServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 2049)),
            export: ExportOptions::default(),
            idle_close: crate::vmfs_backend::DEFAULT_IDLE_CLOSE,
            rpcbind: true,
        }
    }
}

/// Why [`serve_vmfs`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("exporting volume: {0}")]
    Backend(#[from] BackendError),
    #[error("the volume has no label, and the export path is / + label")]
    NoLabel,
    #[error("NFS gateway on {listen}: {err}")]
    Bind {
        listen: SocketAddr,
        err: std::io::Error,
    },
}

/// A vmfs datastore served over NFS by [`serve_vmfs`].
pub struct VmfsGateway {
    gateway: Option<Gateway>,
    backend: Arc<VmfsBackend>,
    path: String,
}

impl VmfsGateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.as_ref().expect("running").local_addr()
    }

    /// The export path clients mount (`/` + volume label).
    pub fn export_path(&self) -> &str {
        &self.path
    }

    /// The backend (open-handle count, the filesystem).
    pub fn backend(&self) -> &Arc<VmfsBackend> {
        &self.backend
    }

    /// Stops serving, then fsyncs and closes every file the gateway opened
    /// (their locks released). The caller then unmounts the filesystem and
    /// leaves the volume.
    pub fn shutdown(mut self) -> Result<(), String> {
        let mut errs = Vec::new();
        if let Some(g) = self.gateway.take() {
            if let Err(e) = g.stop() {
                errs.push(format!("server: {e}"));
            }
        }
        if let Err(e) = self.backend.close_all() {
            errs.push(format!("closing files: {e}"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

impl Drop for VmfsGateway {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            let _ = g.stop();
        }
        let _ = self.backend.close_all();
    }
}

/// Serves the mounted filesystem `fs` over NFSv3 + MOUNT v3 as the export
/// `/` + its volume label, on its own thread, until
/// [`VmfsGateway::shutdown`]. `fs`'s host must be joined and heartbeating
/// (the caller owns it, and leaves the volume after the shutdown).
///
/// ```no_run
/// # fn demo(fs: vmfs::fs::Fs) -> Result<(), Box<dyn std::error::Error>> {
/// let gw = nfs_gw::serve_vmfs(fs.clone(), nfs_gw::VmfsServeOptions::default())?;
/// println!("NFS on {} exporting {}", gw.local_addr(), gw.export_path());
/// // ... until a signal ...
/// gw.shutdown()?;
/// fs.unmount()?;
/// # Ok(()) }
/// ```
pub fn serve_vmfs(fs: Fs, opts: VmfsServeOptions) -> Result<VmfsGateway, ServeError> {
    let backend = Arc::new(VmfsBackend::new(fs, opts.idle_close)?);
    let name = backend.label().to_string();
    if name.trim_matches('/').is_empty() {
        return Err(ServeError::NoLabel);
    }
    let export = Export::new(&name, backend.clone(), opts.export.clone());
    let path = export.path.clone();
    let gateway = Gateway::start(opts.listen, vec![export], opts.rpcbind).map_err(|err| {
        ServeError::Bind {
            listen: opts.listen,
            err,
        }
    })?;
    Ok(VmfsGateway {
        gateway: Some(gateway),
        backend,
        path,
    })
}
