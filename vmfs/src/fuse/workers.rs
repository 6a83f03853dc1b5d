//! The threads that run requests which may wait. The one session thread
//! reading `/dev/fuse` answers itself only what cannot wait for another
//! host (see `dispatch.rs`); everything else is queued here. Threads are
//! started as work arrives and none is idle, up to a limit, and stay:
//! a lookup waiting seconds for another host's busy directory holds one,
//! while the others go on serving.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// No more jobs: threads exit once the queue is empty.
    closing: bool,
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    ready: Condvar,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pool of worker threads.
pub struct Workers {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    max: usize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("max", &self.max).finish()
    }
}

impl Workers {
    /// A pool of at most `max` threads (at least 1), none started yet.
    pub fn new(max: usize) -> Workers {
        Workers {
            shared: Arc::default(),
            threads: Mutex::new(Vec::new()),
            max: max.max(1),
        }
    }

    /// Run `job` on a worker thread. If no thread can be started (the
    /// system refuses one) and none exists, it runs on the caller's.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = lock(&self.shared.q);
        let start = q.idle <= q.jobs.len() && threads.len() < self.max;
        q.jobs.push_back(Box::new(job));
        drop(q);
        self.shared.ready.notify_one();
        if start {
            let shared = self.shared.clone();
            let name = format!("vmfs-fuse-{}", threads.len());
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || work(&shared))
            {
                Ok(t) => threads.push(t),
                Err(e) if threads.is_empty() => {
                    tracing::warn!("fuse: no worker thread ({e}): running inline");
                    drop(threads);
                    let job = lock(&self.shared.q).jobs.pop_back();
                    if let Some(job) = job {
                        job();
                    }
                }
                Err(e) => tracing::debug!("fuse: worker thread not started: {e}"),
            }
        }
    }

    /// Let the queued jobs finish, then end every thread.
    pub fn shut_down(&self) {
        lock(&self.shared.q).closing = true;
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::warn!("fuse: a worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn work(shared: &Shared) {
    let mut q = lock(&shared.q);
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job();
            q = lock(&shared.q);
            continue;
        }
        if q.closing {
            return;
        }
        q.idle += 1;
        q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        q.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_waiting_job_does_not_hold_up_the_next() {
        let w = Workers::new(4);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        w.run(move || {
            let _ = gate_rx.recv_timeout(Duration::from_secs(10));
        });
        let d = done_tx.clone();
        w.run(move || d.send(1).unwrap());
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        gate_tx.send(()).unwrap();
        w.shut_down();
    }

    #[test]
    fn runs_every_job_with_few_threads() {
        let w = Workers::new(2);
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            w.run(move || tx.send(i).unwrap());
        }
        w.shut_down();
        let mut got: Vec<i32> = rx.try_iter().collect();
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(w.threads.lock().unwrap().is_empty());
    }
}
