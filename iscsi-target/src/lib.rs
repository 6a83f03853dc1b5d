//! iSCSI target (RFC 7143) serving files and block devices as SCSI block
//! LUNs (SBC-3/SPC-4), with COMPARE AND WRITE, thin provisioning and
//! persistent reservations; plus a small initiator for tests and tools.

pub mod chap;
pub mod config;
pub mod conn;
pub mod initiator;
pub mod io_pool;
pub mod login;
pub mod params;
pub mod pdu;
pub mod scsi;
pub mod server;
pub mod task;
pub mod text;
pub mod tmf;
