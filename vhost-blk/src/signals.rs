//! Stopping the daemon on SIGINT / SIGTERM, for command-line front ends
//! (`vmfs serve-disk`, the `vmfs-vhost-blk` binary).

use std::io;

use vmm_sys_util::signal::{block_signal, create_sigset};

use crate::server::ShutdownHandle;

/// Block SIGINT and SIGTERM in the calling thread and start a thread that
/// waits for them and triggers `handle`. Call it from `main` before any
/// other thread is spawned: threads inherit the signal mask, so the signal
/// can then only be taken by the waiting thread.
pub fn shutdown_on_signals(handle: ShutdownHandle) -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        block_signal(sig).map_err(|e| io::Error::other(format!("blocking signal {sig}: {e}")))?;
    }
    let set = create_sigset(&[libc::SIGINT, libc::SIGTERM])
        .map_err(|e| io::Error::other(format!("signal set: {e}")))?;
    std::thread::Builder::new()
        .name("vhost-blk-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t owned by this closure
            // and `sig` a valid out-pointer; sigwait touches nothing else.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                tracing::info!(signal = sig, "vhost-user-blk: stopping on signal");
                handle.shutdown();
                return;
            }
        })?;
    Ok(())
}
