//! A fixed pool of I/O worker threads per LUN. Commands that may block
//! (page-cache misses, fdatasync, range-lock waits, OFD locks) run here:
//! the connection's reader hands the job over and goes on reading PDUs, and
//! the worker sends the response itself (responses go through the
//! connection's writer channel, which never blocks). The queue needs no
//! bound of its own: each session's CmdSN window bounds what it can queue.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Default number of workers per LUN: enough to keep a QD32 initiator's
/// page-cache misses all in flight at the device.
pub const DEFAULT_WORKERS: usize = 32;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// Worker threads draining one job queue.
pub struct IoPool {
    shared: Arc<Shared>,
}

impl IoPool {
    /// Starts `workers` threads named `name-N`.
    pub fn new(name: &str, workers: usize) -> std::io::Result<IoPool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..workers.max(1) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&s))?;
        }
        Ok(IoPool { shared })
    }

    /// Queues a job; some idle worker runs it.
    pub fn submit(&self, job: Job) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(job);
        drop(q);
        self.shared.ready.notify_one();
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        // Workers finish the queued jobs, then exit.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker(s: &Shared) {
    loop {
        let job = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.closed {
                    return;
                }
                q = s.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panicking command must not take the worker down with it; the
        // job's own completion path reports the failure.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_in_parallel_workers() {
        let pool = IoPool::new("t", 4).unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..100 {
            let (n, tx) = (n.clone(), tx.clone());
            pool.submit(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            }));
        }
        // A panicking job leaves the pool working.
        pool.submit(Box::new(|| panic!("job panics")));
        for _ in 0..100 {
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 100);
        let tx2 = tx.clone();
        pool.submit(Box::new(move || tx2.send(()).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    }
}
