//! Shared harness: run the daemon on a socket in a temp dir, in a thread of
//! the test process, and stop it gracefully at the end.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmfs_vhost_blk::frontend::{BlkFrontend, BlkQueue, DriverOptions};
use vmfs_vhost_blk::{serve, BlockBackend, ServeError, ServeOptions, ShutdownHandle};

pub struct Daemon {
    pub socket: PathBuf,
    pub shutdown: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(backend: Arc<dyn BlockBackend>, opts: ServeOptions) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("blk.sock");
        let shutdown = opts.shutdown.clone();
        let s = socket.clone();
        let thread = std::thread::spawn(move || serve(backend, &s, opts));
        wait_for_socket(&socket);
        Daemon {
            socket,
            shutdown,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn connect(&self, opts: &DriverOptions) -> (BlkFrontend, Vec<BlkQueue>) {
        BlkFrontend::connect(&self.socket, opts).expect("frontend connects and sets up its queues")
    }

    /// Stop the daemon and return what `serve` returned.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("serve thread panicked")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shutdown.shutdown();
            let _ = t.join();
        }
    }
}

pub fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "daemon never created {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A deterministic pattern: every byte depends on its byte address and `seed`.
pub fn pattern(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let a = offset + i;
            (a.wrapping_mul(31) ^ (a >> 9) ^ u64::from(seed)) as u8
        })
        .collect()
}

pub fn opts(queues: u16) -> ServeOptions {
    ServeOptions {
        num_queues: queues,
        serial: "vmfs-test-disk".into(),
        ..ServeOptions::default()
    }
}

pub fn driver(queues: u16) -> DriverOptions {
    DriverOptions {
        num_queues: queues,
        ..DriverOptions::default()
    }
}
