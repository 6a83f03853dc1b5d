//! Heartbeats, on-disk locks, the per-host journal and dead-host recovery:
//! several hosts on one device with no lock server. The protocol and its
//! safety argument are in `docs/locking.md`.

pub mod clock;
mod error;
mod handoff;
mod heartbeat;
mod host;
mod host_dev;
pub mod journal;
pub mod liveness;
mod lock;
mod offline;
mod peers;
mod recovery;
pub mod sector_cas;
pub mod timeouts;

pub use clock::{BootClock, Clock, ManualClock};
pub use error::ClusterError;
pub use handoff::TransferOutcome;
pub use host::{read_region, HeldLock, Host, HostConfig, HostEvent, PrFencer};
pub use host_dev::HostDev;
pub use journal::{Journal, JournalLocation, ReplayReport, Txn};
pub use liveness::{Observer, Verdict};
pub use lock::{read_lock, WaitAnnouncement};
pub use offline::{recover_offline, RecoveredSlot};
pub use timeouts::Timeouts;

#[cfg(test)]
mod tests;
