//! The async model: a small pool of worker threads per disk, and a
//! completion future that works under any executor.
//!
//! Why not tokio `spawn_blocking`: the filesystem below is synchronous
//! (positional reads and writes on the device, journal commits), so every
//! request needs a thread that may block either way. A private pool keeps
//! the library free of a runtime: a tokio VMM `.await`s the futures, a
//! vhost-user backend (epoll threads, no runtime) calls [`IoFuture::wait`],
//! and the number of threads one disk can tie up is bounded by its pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads running one disk's requests.
#[derive(Debug)]
pub struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Start `n` (at least 1) workers named `name`.
    pub fn new(name: &str, n: usize) -> Pool {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    })
                    .expect("spawning a disk worker thread")
            })
            .collect();
        Pool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        }
    }

    /// Run `f` on a worker; its result completes the returned future. After
    /// [`Pool::shutdown`] the future completes at once with `failed()`, and
    /// so does it if `f` panics (a waiter must never hang).
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        failed: impl Fn() -> T + Send + Sync + 'static,
    ) -> IoFuture<T> {
        let slot = Arc::new(Slot::default());
        let s2 = slot.clone();
        let failed = Arc::new(failed);
        let f2 = failed.clone();
        let job: Job =
            Box::new(
                move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    Ok(v) => s2.complete(v),
                    Err(_) => s2.complete(f2()),
                },
            );
        let sent = match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            slot.complete(failed());
        }
        IoFuture { slot }
    }

    /// Stop taking requests, finish the queued ones, join the workers.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            // A worker dropping the last reference to its disk cannot join itself.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct SlotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Slot<T> {
    st: Mutex<SlotState<T>>,
    cv: Condvar,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            st: Mutex::new(SlotState {
                value: None,
                waker: None,
            }),
            cv: Condvar::new(),
        }
    }
}

impl<T> Slot<T> {
    fn complete(&self, v: T) {
        let waker = {
            let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            st.value = Some(v);
            st.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The result of one disk request, when it is done. `.await` it, or
/// [`IoFuture::wait`] for it from a thread.
#[must_use = "a disk request's result says whether it happened"]
pub struct IoFuture<T> {
    slot: Arc<Slot<T>>,
}

impl<T> IoFuture<T> {
    /// Block this thread until the request is done.
    pub fn wait(self) -> T {
        let mut st = self.slot.st.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = st.value.take() {
                return v;
            }
            st = self.slot.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<T> Future for IoFuture<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.slot.st.lock().unwrap_or_else(|e| e.into_inner());
        match st.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> std::fmt::Debug for IoFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoFuture")
    }
}
