//! Persistent reservations (SPC-4 §5.13) as the fence of the lock
//! protocol. Each host registers its own key, derived from its heartbeat
//! slot and generation, and makes sure a WRITE EXCLUSIVE – REGISTRANTS ONLY
//! reservation is in place: from then on only registered I_T nexuses can
//! write. A host that declares another dead removes the dead host's key with
//! PREEMPT AND ABORT *before* it touches the dead host's slot or locks, so
//! the target refuses (RESERVATION CONFLICT) every later write of the dead
//! incarnation, including one that was already queued (ABORT).

use std::sync::atomic::Ordering;

use super::cdb::{self, status};
use super::error::IscsiError;
use super::IscsiDev;
use crate::cluster::{ClusterError, PrFencer};
use crate::dev::DevOp;
use crate::format::Holder;

/// WRITE EXCLUSIVE – REGISTRANTS ONLY.
const WERO: u8 = 0x5;
const SA_RESERVE: u8 = 0x1;
const SA_PREEMPT_AND_ABORT: u8 = 0x5;
const SA_REGISTER_AND_IGNORE: u8 = 0x6;

/// Top 16 bits of the random key a read-write opener registers before it
/// has joined ("JN"); never equal to an incarnation key ("VM").
pub(crate) const UNJOINED_KEY_TAG: u64 = 0x4a4e_0000_0000_0000;

/// The reservation key of incarnation `h`: "VM", the slot, the low 32 bits
/// of `hb_gen`. Unique per slot and generation, never zero.
pub fn pr_key_for(h: Holder) -> u64 {
    0x564d_0000_0000_0000 | (u64::from(h.slot) << 32) | (h.hb_gen & 0xffff_ffff)
}

impl IscsiDev {
    fn pr_err(&self, e: IscsiError) -> ClusterError {
        ClusterError::Device(self.dev_err(DevOp::Reservation, 0, 0, e))
    }

    /// Keys registered on the LUN (PERSISTENT RESERVE IN / READ KEYS).
    pub fn read_keys(&self) -> Result<Vec<u64>, IscsiError> {
        let c = cdb::pr_in(0, 8 + 8 * 256);
        let r = self.exec_good(&c, &[], 8 + 8 * 256, true)?;
        let n = u32::from_be_bytes(r.data[4..8].try_into().expect("4")) as usize;
        let n = n.min(r.data.len() - 8) / 8;
        Ok((0..n)
            .map(|i| u64::from_be_bytes(r.data[8 + i * 8..16 + i * 8].try_into().expect("8")))
            .collect())
    }

    /// Type of the current reservation (READ RESERVATION), if any.
    pub fn reservation_type(&self) -> Result<Option<u8>, IscsiError> {
        let c = cdb::pr_in(1, 24);
        let r = self.exec_good(&c, &[], 24, true)?;
        let len = u32::from_be_bytes(r.data[4..8].try_into().expect("4"));
        Ok((len >= 16).then_some(r.data[21] & 0x0f))
    }

    fn pr_out(&self, name: &'static str, sa: u8, key: u64, sa_key: u64) -> Result<u8, IscsiError> {
        let (c, p) = cdb::pr_out(name, sa, WERO, key, sa_key);
        let r = self.exec(&c, &p, 0, true)?;
        match r.status {
            status::GOOD | status::RESERVATION_CONFLICT => Ok(r.status),
            _ => super::good(&c, r).map(|_| status::GOOD),
        }
    }

    /// Make sure some registrants-only reservation is in force; take it if not.
    fn ensure_reservation(&self, key: u64) -> Result<(), IscsiError> {
        for _ in 0..4 {
            match self.reservation_type()? {
                Some(t) if t == WERO || t == 0x7 || t == 0x8 => return Ok(()),
                Some(t) => {
                    return Err(IscsiError::Protocol {
                        command: "PERSISTENT RESERVE IN",
                        why: format!(
                            "the LUN carries a reservation of type {t:#x}, not WRITE EXCLUSIVE – REGISTRANTS ONLY; another initiator is using the LUN in a way vmfs cannot share"
                        ),
                    })
                }
                None => {
                    // A conflict means someone else reserved first: look again.
                    self.pr_out("PERSISTENT RESERVE OUT (RESERVE)", SA_RESERVE, key, 0)?;
                }
            }
        }
        Err(IscsiError::Protocol {
            command: "PERSISTENT RESERVE OUT (RESERVE)",
            why: "no reservation could be established".into(),
        })
    }

    /// Register `key` for this I_T nexus (replacing any older key of ours)
    /// and make sure the reservation is in force.
    pub fn register_key(&self, key: u64) -> Result<(), IscsiError> {
        let st = self.pr_out(
            "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)",
            SA_REGISTER_AND_IGNORE,
            0,
            key,
        )?;
        if st != status::GOOD {
            return Err(IscsiError::Status {
                command: "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)",
                lba: 0,
                status: st,
                meaning: "RESERVATION CONFLICT",
            });
        }
        *self.pr_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.preempted.store(false, Ordering::SeqCst);
        self.ensure_reservation(key)
    }

    /// Remove `victim` with PREEMPT AND ABORT (its queued commands are
    /// aborted too). A key that is already gone is not an error.
    pub fn preempt_key(&self, victim: u64) -> Result<(), IscsiError> {
        let Some(mine) = *self.pr_key.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Err(IscsiError::Protocol {
                command: "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)",
                why: "this host has not registered a reservation key, so it cannot preempt".into(),
            });
        };
        if victim == mine || !self.read_keys()?.contains(&victim) {
            return Ok(());
        }
        let st = self.pr_out(
            "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)",
            SA_PREEMPT_AND_ABORT,
            mine,
            victim,
        )?;
        if st == status::RESERVATION_CONFLICT {
            // Either our own key was preempted meanwhile, or the victim's
            // key vanished between READ KEYS and now.
            let keys = self.read_keys()?;
            if !keys.contains(&mine) {
                self.preempted.store(true, Ordering::SeqCst);
                return Err(IscsiError::Status {
                    command: "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)",
                    lba: 0,
                    status: st,
                    meaning: "RESERVATION CONFLICT: our own key was preempted",
                });
            }
            if keys.contains(&victim) {
                return Err(IscsiError::Status {
                    command: "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)",
                    lba: 0,
                    status: st,
                    meaning: "RESERVATION CONFLICT",
                });
            }
        }
        tracing::warn!(device = %self.name, key = format!("{victim:#018x}"), "preempted a dead host's reservation key");
        // Preempting the holder of a registrants-only reservation can
        // leave none in force; a registrant-less LUN must not accept writes
        // from the fenced host.
        self.ensure_reservation(mine)
    }
}

impl IscsiDev {
    /// Register a provisional random key unless a live one is in place.
    pub(super) fn register_unjoined(&self) -> Result<(), IscsiError> {
        let have = self
            .pr_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if have && !self.preempted.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.register_key(UNJOINED_KEY_TAG | (rand::random::<u64>() & 0xffff_ffff_ffff))
    }
}

impl PrFencer for IscsiDev {
    fn prepare_join(&self) -> Result<(), ClusterError> {
        if !self.info.pr {
            return Ok(());
        }
        self.register_unjoined().map_err(|e| self.pr_err(e))
    }

    fn register(&self, me: Holder) -> Result<(), ClusterError> {
        self.register_key(pr_key_for(me))
            .map_err(|e| self.pr_err(e))
    }

    fn preempt(&self, victim: Holder) -> Result<(), ClusterError> {
        self.preempt_key(pr_key_for(victim))
            .map_err(|e| self.pr_err(e))
    }
}
