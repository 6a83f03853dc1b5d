//! The target server: configured targets and their LUNs, the portal
//! listeners, and the registry of live sessions (for reinstatement, task
//! management across sessions and PREEMPT AND ABORT).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ChapCredentials, Config, TargetConfig};
use crate::params::TargetLimits;
use crate::scsi::{Lun, LunOptions, Nexus};

/// One exported target.
pub struct Target {
    pub config: TargetConfig,
    pub luns: Vec<Arc<Lun>>,
}

/// A running task, for task management.
pub struct TaskEntry {
    pub lun: u64,
    pub cmdsn: u32,
    pub aborted: Arc<AtomicBool>,
}

/// A logged-in normal session.
pub struct Session {
    pub id: u64,
    pub tsih: u16,
    pub nexus: Nexus,
    pub target: Arc<Target>,
    pub tasks: Mutex<HashMap<u32, TaskEntry>>,
    /// Set to true to make the session's connection close.
    pub shutdown: watch::Sender<bool>,
}

impl Session {
    pub fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<u32, TaskEntry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Marks tasks matching `pred` aborted; returns how many.
    pub fn abort_where(&self, pred: impl Fn(u32, &TaskEntry) -> bool) -> usize {
        let mut n = 0;
        for (itt, t) in self.tasks().iter() {
            if pred(*itt, t) {
                t.aborted.store(true, Ordering::SeqCst);
                n += 1;
            }
        }
        n
    }
}

pub struct Server {
    pub config: Config,
    pub targets: Vec<Arc<Target>>,
    pub limits: TargetLimits,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    next_session: AtomicU64,
    next_tsih: AtomicU16,
    /// Addresses actually bound (for SendTargets).
    pub bound: Mutex<Vec<SocketAddr>>,
}

impl Server {
    /// Opens every LUN of every target.
    pub fn new(config: Config) -> std::io::Result<Arc<Server>> {
        let mut targets = Vec::new();
        for t in &config.targets {
            let mut luns = Vec::new();
            for l in &t.luns {
                let lun = Arc::new(Lun::open(&LunOptions {
                    path: l.path.clone(),
                    read_only: l.read_only,
                    target_iqn: t.iqn.clone(),
                    pr_file: None,
                })?);
                crate::scsi::xcopy_register(&lun);
                luns.push(lun);
            }
            targets.push(Arc::new(Target {
                config: t.clone(),
                luns,
            }));
        }
        let server = Arc::new(Server {
            config,
            targets,
            limits: TargetLimits::default(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            next_tsih: AtomicU16::new(1),
            bound: Mutex::new(Vec::new()),
        });
        for t in &server.targets {
            for (i, lun) in t.luns.iter().enumerate() {
                let weak: Weak<Server> = Arc::downgrade(&server);
                let iqn = t.config.iqn.clone();
                let lun_no = i as u64;
                lun.set_abort_hook(Box::new(move |ports: &[String]| {
                    if let Some(s) = weak.upgrade() {
                        for sess in s.sessions_of(&iqn) {
                            if ports.contains(&sess.nexus.port_name()) {
                                sess.abort_where(|_, t| t.lun == lun_no);
                            }
                        }
                    }
                }));
            }
        }
        Ok(server)
    }

    pub fn target(&self, iqn: &str) -> Option<Arc<Target>> {
        self.targets.iter().find(|t| t.config.iqn == iqn).cloned()
    }

    pub fn discovery_chap(&self) -> Option<&ChapCredentials> {
        self.config.discovery_chap.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sessions_of(&self, iqn: &str) -> Vec<Arc<Session>> {
        self.lock()
            .values()
            .filter(|s| s.target.config.iqn == iqn)
            .cloned()
            .collect()
    }

    /// A fresh, non-zero TSIH.
    pub fn alloc_tsih(&self) -> u16 {
        loop {
            let t = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }

    pub fn tsih_exists(&self, tsih: u16) -> bool {
        self.lock().values().any(|s| s.tsih == tsih)
    }

    /// Registers a new session, reinstating (closing) any older session
    /// with the same initiator name, ISID and target.
    pub fn add_session(&self, nexus: Nexus, target: Arc<Target>, tsih: u16) -> Arc<Session> {
        let (tx, _rx) = watch::channel(false);
        let s = Arc::new(Session {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            tsih,
            nexus,
            target,
            tasks: Mutex::new(HashMap::new()),
            shutdown: tx,
        });
        let mut map = self.lock();
        let old: Vec<u64> = map
            .values()
            .filter(|o| o.nexus == s.nexus && o.target.config.iqn == s.target.config.iqn)
            .map(|o| o.id)
            .collect();
        for id in old {
            if let Some(o) = map.remove(&id) {
                tracing::info!(initiator = %o.nexus.initiator, tsih = o.tsih, "session reinstated");
                o.abort_where(|_, _| true);
                let _ = o.shutdown.send(true);
            }
        }
        map.insert(s.id, s.clone());
        s
    }

    pub fn remove_session(&self, s: &Session) {
        let removed = self.lock().remove(&s.id).is_some();
        if removed {
            for lun in &s.target.luns {
                lun.nexus_lost(&s.nexus);
            }
        }
    }

    /// Binds the configured portals and serves until the process ends.
    pub async fn run(self: Arc<Server>) -> std::io::Result<()> {
        let mut listeners = Vec::new();
        for p in &self.config.portals {
            let l = TcpListener::bind(p)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {p}: {e}")))?;
            let addr = l.local_addr()?;
            tracing::info!(%addr, "listening");
            self.bound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(addr);
            listeners.push(l);
        }
        let mut handles = Vec::new();
        for l in listeners {
            let server = self.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((sock, peer)) => {
                            let _ = sock.set_nodelay(true);
                            let local = sock.local_addr().ok();
                            let server = server.clone();
                            tokio::spawn(async move {
                                if let Err(e) = crate::conn::serve(server, sock, local).await {
                                    tracing::debug!(%peer, error = %e, "connection ended");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        Ok(())
    }

    /// Serve on a runtime of its own in a background thread (tests, benches,
    /// embedding); returns the first bound portal address once listening.
    pub fn spawn_background(self: Arc<Server>) -> std::io::Result<SocketAddr> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("iscsi-target".into())
            .spawn(move || {
                if let Err(e) = rt.block_on(me.run()) {
                    tracing::error!(error = %e, "iSCSI target stopped");
                }
            })?;
        for _ in 0..500 {
            if let Some(a) = self.bound.lock().unwrap_or_else(|p| p.into_inner()).first() {
                return Ok(*a);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(std::io::Error::other(
            "the target did not start listening within 5 s",
        ))
    }
}
