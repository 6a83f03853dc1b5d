//! The daemon loop: listen on a unix socket, serve one vhost-user frontend
//! at a time, listen again when it goes away, stop on request.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::BlockBackend;
use crate::device::BlkDevice;

/// How to serve the disk.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Number of virtqueues (1..=64), each served by its own worker thread.
    pub num_queues: u16,
    /// Largest queue size the driver may choose (power of two, 2..=32768).
    pub queue_size: u16,
    /// Refuse every write even if the backend could take it.
    pub read_only: bool,
    /// The GET_ID answer, at most 20 bytes.
    pub serial: String,
    /// Stop switch; keep a clone to stop the daemon from another thread.
    pub shutdown: ShutdownHandle,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            num_queues: 1,
            queue_size: 256,
            read_only: false,
            serial: "vmfs".into(),
            shutdown: ShutdownHandle::new(),
        }
    }
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid serve option: {0}")]
    InvalidOption(String),
    #[error("socket {path} is in use by a running daemon")]
    SocketInUse { path: PathBuf },
    #[error("listening on {path}: {message}")]
    Listen { path: PathBuf, message: String },
    #[error("setting up the vhost-user daemon on {path}: {message}")]
    Daemon { path: PathBuf, message: String },
    #[error("waiting for a frontend on {path}: {source}")]
    Poll {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Stops a running [`serve`]: the current frontend connection is closed,
/// in-flight requests finish, the backend is flushed and `serve` returns.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug)]
struct ShutdownInner {
    requested: AtomicBool,
    wake: Option<EventFd>,
    connection: Mutex<Option<ConnectionStop>>,
}

/// The daemon's own stop switch for the live connection.
struct ConnectionStop(vhost_user_backend::ShutdownHandle);

impl std::fmt::Debug for ConnectionStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionStop")
    }
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    /// A fresh, untriggered switch.
    pub fn new() -> Self {
        let wake = match EventFd::new(EFD_NONBLOCK) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::error!("vhost-user-blk: cannot create shutdown eventfd: {e}");
                None
            }
        };
        ShutdownHandle {
            inner: Arc::new(ShutdownInner {
                requested: AtomicBool::new(false),
                wake,
                connection: Mutex::new(None),
            }),
        }
    }

    /// Ask the daemon to stop. Idempotent; callable from any thread.
    pub fn shutdown(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        if let Some(wake) = &self.inner.wake {
            let _ = wake.write(1);
        }
        if let Some(conn) = self.lock_connection().as_ref() {
            conn.0.shutdown();
        }
    }

    /// Whether [`ShutdownHandle::shutdown`] was called.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Option<ConnectionStop>> {
        self.inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn check_options(
    backend: &dyn BlockBackend,
    opts: &ServeOptions,
) -> Result<[u8; VIRTIO_BLK_ID_BYTES as usize], ServeError> {
    let bad = |s: String| Err(ServeError::InvalidOption(s));
    if !(1..=64).contains(&opts.num_queues) {
        return bad(format!("{} queues: must be 1..=64", opts.num_queues));
    }
    if opts.queue_size < 2 || !opts.queue_size.is_power_of_two() {
        return bad(format!(
            "queue size {}: must be a power of two, 2..=32768",
            opts.queue_size
        ));
    }
    if opts.serial.len() > VIRTIO_BLK_ID_BYTES as usize {
        return bad(format!(
            "serial {:?} is {} bytes, at most 20 allowed",
            opts.serial,
            opts.serial.len()
        ));
    }
    let size = backend.size();
    if size == 0 || size % 512 != 0 {
        return bad(format!(
            "backend size {size} is not a positive multiple of 512"
        ));
    }
    let bs = backend.block_size();
    if bs < 512 || !bs.is_power_of_two() || u64::from(bs) > size {
        return bad(format!(
            "backend block size {bs} must be a power of two >= 512"
        ));
    }
    let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
    serial[..opts.serial.len()].copy_from_slice(opts.serial.as_bytes());
    Ok(serial)
}

/// Serve `backend` as a vhost-user-blk device on the unix socket `socket`
/// until `opts.shutdown` is triggered. One frontend is served at a time;
/// when it disconnects the backend is flushed and the daemon waits for the
/// next. Returns after a shutdown request, having flushed the backend and
/// removed the socket.
pub fn serve(
    backend: Arc<dyn BlockBackend>,
    socket: &Path,
    opts: ServeOptions,
) -> Result<(), ServeError> {
    let serial = check_options(&*backend, &opts)?;
    if UnixStream::connect(socket).is_ok() {
        return Err(ServeError::SocketInUse {
            path: socket.to_owned(),
        });
    }
    let mut listener = Listener::new(socket, true).map_err(|e| ServeError::Listen {
        path: socket.to_owned(),
        message: e.to_string(),
    })?;
    let poll_err = |source| ServeError::Poll {
        path: socket.to_owned(),
        source,
    };
    let epoll = Epoll::new().map_err(poll_err)?;
    epoll
        .ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )
        .map_err(poll_err)?;
    if let Some(wake) = &opts.shutdown.inner.wake {
        epoll
            .ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 1),
            )
            .map_err(poll_err)?;
    }
    tracing::info!(
        socket = %socket.display(),
        size = backend.size(),
        queues = opts.num_queues,
        read_only = opts.read_only || backend.read_only(),
        "vhost-user-blk: listening"
    );
    let mut events = [EpollEvent::default(); 2];
    while !opts.shutdown.is_requested() {
        // Without a wake eventfd fall back to a periodic check.
        let timeout = if opts.shutdown.inner.wake.is_some() {
            -1
        } else {
            200
        };
        match epoll.wait(timeout, &mut events) {
            Ok(n) if n == 0 || events[..n].iter().all(|e| e.data() != 0) => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(poll_err(e)),
        }
        if opts.shutdown.is_requested() {
            break;
        }
        serve_connection(&backend, socket, &opts, serial, &mut listener)?;
    }
    if let Err(e) = backend.flush() {
        tracing::error!("vhost-user-blk: flush at shutdown failed: {e}");
    }
    tracing::info!(socket = %socket.display(), "vhost-user-blk: shut down");
    Ok(())
}

/// Accept the pending frontend and serve it until it disconnects.
fn serve_connection(
    backend: &Arc<dyn BlockBackend>,
    socket: &Path,
    opts: &ServeOptions,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    listener: &mut Listener,
) -> Result<(), ServeError> {
    let daemon_err = |e: vhost_user_backend::Error| ServeError::Daemon {
        path: socket.to_owned(),
        message: e.to_string(),
    };
    let device = Arc::new(BlkDevice::new(
        backend.clone(),
        opts.read_only,
        opts.num_queues,
        opts.queue_size,
        serial,
    ));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::<()>::new());
    let mut daemon =
        VhostUserDaemon::new("vhost-user-blk".into(), device.clone(), mem).map_err(daemon_err)?;
    if let Err(e) = daemon.start(listener) {
        // A frontend that connected and vanished at once: keep listening,
        // pausing so that a persistent accept error (EMFILE) cannot spin.
        tracing::warn!("vhost-user-blk: accepting a frontend failed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        return Ok(());
    }
    tracing::info!(socket = %socket.display(), "vhost-user-blk: frontend connected");
    if let Some(stop) = daemon.shutdown_handle() {
        *opts.shutdown.lock_connection() = Some(ConnectionStop(stop));
    }
    // A shutdown that raced with the accept must still end this connection.
    if opts.shutdown.is_requested() {
        daemon.request_shutdown();
    }
    let result = daemon.wait();
    opts.shutdown.lock_connection().take();
    match result {
        Ok(()) => tracing::info!(
            requests = device.completed.load(Ordering::Relaxed),
            "vhost-user-blk: frontend disconnected"
        ),
        Err(e) => tracing::warn!(
            requests = device.completed.load(Ordering::Relaxed),
            "vhost-user-blk: frontend connection ended: {e}"
        ),
    }
    // Dropping the daemon stops and joins the queue workers: no request of
    // this connection runs after this point.
    drop(daemon);
    if let Err(e) = backend.flush() {
        tracing::error!("vhost-user-blk: flush after disconnect failed: {e}");
    }
    Ok(())
}
