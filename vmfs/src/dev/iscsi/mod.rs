//! `IscsiDev`: a userspace iSCSI initiator (RFC 7143) behind [`BlockDev`].
//!
//! One session with one connection per device, shared by every thread:
//! commands are tagged and many may be outstanding (`session.rs`). Reads,
//! writes, cache flushes, WRITE SAME, UNMAP and COMPARE AND WRITE map one to
//! one onto SBC-3 commands (`io.rs`); persistent reservations fence dead hosts
//! (`pr.rs`). Every command has a deadline of the lock protocol's I/O timeout
//! T: a command with no answer by then drops the connection (the target ends
//! the session's tasks when the initiator reinstates it), and the next
//! command reconnects with the same ISID. Reads, writes and flushes that lose
//! their connection are retried on the new one within the same deadline; a
//! COMPARE AND WRITE never is: it reports `Indeterminate` and the lock layer
//! re-reads. See `docs/devices.md`.

mod cdb;
mod error;
mod io;
mod login;
mod pr;
mod session;

pub use error::{IscsiError, SenseCode};
pub use login::ChapSecret;
pub use pr::pr_key_for;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DevError, DevOp};
use cdb::{key, status, Cdb};
use login::LoginSpec;
use session::{Conn, Reply};

/// Default I/O timeout T until the lock protocol sets its own.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(8);

/// How to log in and what to require of the target.
#[derive(Debug, Clone)]
pub struct IscsiOptions {
    /// Our iSCSI name; default `VMFS_ISCSI_INITIATOR` or
    /// `iqn.2024-01.org.vmfs:<hostname>`.
    pub initiator: String,
    /// One-way CHAP (`VMFS_ISCSI_CHAP_USER` / `VMFS_ISCSI_CHAP_SECRET`).
    pub chap: Option<ChapSecret>,
    /// Mutual CHAP (`VMFS_ISCSI_MUTUAL_USER` / `VMFS_ISCSI_MUTUAL_SECRET`).
    pub mutual: Option<ChapSecret>,
    /// Per-command deadline (the lock protocol's T).
    pub io_timeout: Duration,
    /// Refuse to open a LUN whose target lacks COMPARE AND WRITE: every
    /// read-write user of a shared LUN joins the cluster, and the on-disk
    /// locks are only safe with a real atomic test-and-set.
    pub require_caw: bool,
    pub read_only: bool,
}

fn env_chap(user: &str, secret: &str) -> Result<Option<ChapSecret>, String> {
    match (std::env::var(user).ok(), std::env::var(secret).ok()) {
        (None, None) => Ok(None),
        (Some(u), Some(s)) if !u.is_empty() && !s.is_empty() => {
            Ok(Some(ChapSecret { user: u, secret: s }))
        }
        _ => Err(format!(
            "{user} and {secret} must be set together (and not empty)"
        )),
    }
}

impl IscsiOptions {
    /// Options from the environment (initiator name, CHAP credentials).
    pub fn from_env(read_only: bool) -> Result<IscsiOptions, String> {
        let initiator = match std::env::var("VMFS_ISCSI_INITIATOR") {
            Ok(n) if !n.is_empty() => n,
            _ => default_initiator_name(),
        };
        let chap = env_chap("VMFS_ISCSI_CHAP_USER", "VMFS_ISCSI_CHAP_SECRET")?;
        let mutual = env_chap("VMFS_ISCSI_MUTUAL_USER", "VMFS_ISCSI_MUTUAL_SECRET")?;
        if mutual.is_some() && chap.is_none() {
            return Err(
                "mutual CHAP (VMFS_ISCSI_MUTUAL_*) needs one-way CHAP credentials too".into(),
            );
        }
        Ok(IscsiOptions {
            initiator,
            chap,
            mutual,
            io_timeout: DEFAULT_IO_TIMEOUT,
            require_caw: !read_only,
            read_only,
        })
    }
}

/// `iqn.2024-01.org.vmfs:<hostname>`, reduced to the characters iSCSI
/// names allow.
pub fn default_initiator_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "iqn.2024-01.org.vmfs:{}",
        if host.is_empty() { "host" } else { &host }
    )
}

/// What the LUN told us when we opened it.
#[derive(Debug, Clone, Copy)]
struct LunInfo {
    size: u64,
    block_size: u32,
    /// Thin provisioning (LBPME) and "unmapped blocks read as zeros" (LBPRZ).
    lbpme: bool,
    lbprz: bool,
    caw: bool,
    max_caw_blocks: u32,
    max_write_same_blocks: u32,
    max_unmap_blocks: u32,
    pr: bool,
}

/// A LUN on an iSCSI target.
#[derive(Debug)]
pub struct IscsiDev {
    name: String,
    spec: LoginSpec,
    lun: u16,
    conn: Mutex<Option<Arc<Conn>>>,
    info: LunInfo,
    timeout_ns: AtomicU64,
    /// Our persistent-reservation key, once registered.
    pr_key: Mutex<Option<u64>>,
    /// Another host removed our registration (PREEMPT AND ABORT): we were
    /// declared dead, and writes are refused until the host registers anew.
    preempted: AtomicBool,
    /// Bumped by every registration: a command issued under an older key is
    /// not reissued after a reconnect (it belongs to an earlier incarnation).
    epoch: AtomicU64,
    read_only: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn(tsih {})", self.params.tsih)
    }
}

/// Largest transfer per READ/WRITE command.
const MAX_XFER: usize = 1 << 20;

impl IscsiDev {
    /// Log in to `target` at `addr` (`host:port`) and open `lun`.
    pub fn open(
        addr: &str,
        target: &str,
        lun: u16,
        opts: &IscsiOptions,
    ) -> Result<IscsiDev, IscsiError> {
        let mut isid: [u8; 6] = rand::random();
        // Random ISID format (RFC 7143 §11.12.5: T = 10b).
        isid[0] = 0x80 | (isid[0] & 0x3f);
        let spec = LoginSpec {
            addr: addr.to_string(),
            target: target.to_string(),
            initiator: opts.initiator.clone(),
            isid,
            chap: opts.chap.clone(),
            mutual: opts.mutual.clone(),
            timeout: opts.io_timeout,
        };
        let mut dev = IscsiDev {
            name: format!("iscsi://{addr}/{target}/{lun}"),
            spec,
            lun,
            conn: Mutex::new(None),
            info: LunInfo {
                size: 0,
                block_size: 512,
                lbpme: false,
                lbprz: false,
                caw: false,
                max_caw_blocks: 1,
                max_write_same_blocks: 0,
                max_unmap_blocks: 0,
                pr: false,
            },
            timeout_ns: AtomicU64::new(opts.io_timeout.as_nanos() as u64),
            pr_key: Mutex::new(None),
            preempted: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            read_only: opts.read_only,
        };
        dev.info = io::probe(&dev, opts.read_only)?;
        if opts.require_caw && !dev.info.caw {
            return Err(IscsiError::Unsupported {
                command: "COMPARE AND WRITE",
                opcode: cdb::COMPARE_AND_WRITE,
                needed_for: "read-write use of a shared vmfs LUN needs it (heartbeats and on-disk locks are atomic test-and-sets): open it read-only or use a target that implements it",
            });
        }
        if !opts.read_only && dev.info.pr {
            // Before any write: once some host holds the registrants-only
            // reservation, only registered initiators may write. Joining
            // replaces this key with the incarnation's own.
            dev.register_unjoined()?;
        }
        Ok(dev)
    }

    /// Set the per-command deadline (the lock protocol's T).
    pub fn set_io_timeout(&self, t: Duration) {
        self.timeout_ns
            .store(t.as_nanos().max(1) as u64, Ordering::SeqCst);
    }

    pub fn io_timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns.load(Ordering::SeqCst))
    }

    /// Whether the target implements COMPARE AND WRITE.
    pub fn supports_compare_and_write(&self) -> bool {
        self.info.caw
    }

    /// The session's current TSIH (0 when disconnected), for tests.
    pub fn tsih(&self) -> u16 {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| !c.is_dead())
            .map_or(0, |c| c.params.tsih)
    }

    /// Drop the connection now (tests: a lost path; the next command
    /// reconnects and reinstates the session).
    pub fn drop_connection(&self, why: &str) {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            c.kill(why);
        }
    }

    /// The live connection, logging in again (same ISID, TSIH 0: session
    /// reinstatement) if it was lost.
    fn connection(&self, deadline: Instant, cdb: &Cdb) -> Result<Arc<Conn>, IscsiError> {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_ref() {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        *g = None;
        let mut backoff = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IscsiError::Timeout {
                    command: cdb.name,
                    lba: cdb.lba,
                    timeout_ms: self.io_timeout().as_millis() as u64,
                });
            }
            let mut spec = self.spec.clone();
            spec.timeout = left.max(Duration::from_millis(50));
            match login::login(&spec) {
                Ok((sock, params)) => {
                    let c = Conn::start(sock, params, self.lun)?;
                    tracing::debug!(device = %self.name, tsih = c.params.tsih, "logged in");
                    *g = Some(c.clone());
                    return Ok(c);
                }
                // Refusals are final; transport failures are retried.
                Err(e @ (IscsiError::LoginStatus { .. } | IscsiError::Login { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(device = %self.name, "reconnect failed: {e}");
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Run one command to a final status. Unit attentions, BUSY and TASK
    /// SET FULL are retried (the command did not run); a lost connection is
    /// retried on a new one when `idempotent`; no answer within T drops the
    /// connection and fails. Any other status is returned for the caller.
    fn exec(
        &self,
        cdb: &Cdb,
        data_out: &[u8],
        read_len: usize,
        idempotent: bool,
    ) -> Result<Reply, IscsiError> {
        let t = self.io_timeout();
        let deadline = Instant::now() + t;
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut attentions = 0;
        loop {
            let c = self.connection(deadline, cdb)?;
            match c.command(cdb, data_out, read_len, deadline) {
                Ok(r) => match r.status {
                    status::CHECK_CONDITION => {
                        let s = cdb::decode_sense(&r.sense);
                        match s {
                            Some(s) if s.key == key::UNIT_ATTENTION && attentions < 16 => {
                                attentions += 1;
                                if s.asc == 0x2a && s.ascq == 0x05 {
                                    tracing::warn!(device = %self.name, "our persistent-reservation registration was preempted: this host was declared dead");
                                    self.preempted.store(true, Ordering::SeqCst);
                                }
                            }
                            Some(s) if s.key == key::NOT_READY && s.asc == 0x04 => {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            _ => return Ok(r),
                        }
                    }
                    status::BUSY | status::TASK_SET_FULL => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => return Ok(r),
                },
                Err(IscsiError::Timeout { .. }) => {
                    c.kill(&format!(
                        "{} at LBA {} got no answer within {t:?}",
                        cdb.name, cdb.lba
                    ));
                    return Err(IscsiError::Timeout {
                        command: cdb.name,
                        lba: cdb.lba,
                        timeout_ms: t.as_millis() as u64,
                    });
                }
                Err(e @ IscsiError::ConnectionLost { .. }) => {
                    if !idempotent || self.epoch.load(Ordering::SeqCst) != epoch {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(IscsiError::Timeout {
                    command: cdb.name,
                    lba: cdb.lba,
                    timeout_ms: t.as_millis() as u64,
                });
            }
        }
    }

    /// `exec`, then anything but GOOD is an error naming the command.
    fn exec_good(
        &self,
        cdb: &Cdb,
        data_out: &[u8],
        read_len: usize,
        idempotent: bool,
    ) -> Result<Reply, IscsiError> {
        let r = self.exec(cdb, data_out, read_len, idempotent)?;
        good(cdb, r)
    }

    fn dev_err(&self, op: DevOp, offset: u64, len: u64, e: IscsiError) -> DevError {
        if let IscsiError::Status {
            status: status::RESERVATION_CONFLICT,
            ..
        } = e
        {
            return DevError::Fenced {
                device: self.name.clone(),
                why: format!("{e}: this host's persistent-reservation key is not registered (it was preempted)"),
            };
        }
        let kind = match e {
            IscsiError::Timeout { .. } => std::io::ErrorKind::TimedOut,
            IscsiError::ConnectionLost { .. } | IscsiError::Connect { .. } => {
                std::io::ErrorKind::ConnectionAborted
            }
            _ => std::io::ErrorKind::Other,
        };
        DevError::Io {
            device: self.name.clone(),
            op,
            offset,
            len,
            source: std::io::Error::new(kind, e),
        }
    }

    fn fenced_err(&self) -> DevError {
        DevError::Fenced {
            device: self.name.clone(),
            why: "another host preempted this host's persistent-reservation key".into(),
        }
    }
}

/// GOOD, or an error naming the command, LBA and sense.
fn good(cdb: &Cdb, r: Reply) -> Result<Reply, IscsiError> {
    match r.status {
        status::GOOD => Ok(r),
        status::CHECK_CONDITION => match cdb::decode_sense(&r.sense) {
            Some(sense) => Err(IscsiError::Check {
                command: cdb.name,
                lba: cdb.lba,
                sense,
            }),
            None => Err(IscsiError::Protocol {
                command: cdb.name,
                why: format!(
                    "CHECK CONDITION at LBA {} without decodable sense data ({} bytes)",
                    cdb.lba,
                    r.sense.len()
                ),
            }),
        },
        s => Err(IscsiError::Status {
            command: cdb.name,
            lba: cdb.lba,
            status: s,
            meaning: error::status_meaning(s),
        }),
    }
}

impl Drop for IscsiDev {
    fn drop(&mut self) {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.logout();
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
