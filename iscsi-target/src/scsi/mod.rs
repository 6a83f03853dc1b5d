//! SCSI block device server (SBC-3 / SPC-4) behind the iSCSI layer.

pub mod backing;
pub mod cdb;
mod info;
pub mod lun;
mod mode;
pub mod ofd;
mod opcodes;
pub mod page_cache;
pub mod pr;
pub mod range_lock;
mod rw;
pub mod sense;
mod thin;
mod xcopy;

pub use info::report_luns;
pub use lun::{Lun, LunOptions};
pub use sense::Sense;
pub use xcopy::register as xcopy_register;

/// The I_T nexus a command arrived on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// iSCSI initiator name.
    pub initiator: String,
    /// Initiator session ID (6 bytes).
    pub isid: [u8; 6],
    /// Target portal group tag (our relative target port).
    pub tpgt: u16,
}

impl Nexus {
    /// The iSCSI initiator port name `<name>,i,0x<isid>` (SPC-4 TransportID form).
    pub fn port_name(&self) -> String {
        let mut s = format!("{},i,0x", self.initiator);
        for b in self.isid {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// A command as handed from the transport.
pub struct Request<'a> {
    pub cdb: &'a [u8],
    /// Data-out buffer if the initiator set the W bit (may be shorter than the CDB needs).
    pub data_out: Option<&'a [u8]>,
    pub nexus: &'a Nexus,
}

/// Outcome of one command.
#[derive(Debug, Default)]
pub struct Response {
    pub status: u8,
    pub data_in: Vec<u8>,
    pub sense: Vec<u8>,
    /// Number of data-out bytes the command wanted (SCSI-level transfer length).
    pub out_len: Option<u32>,
}

/// Why a command did not complete with GOOD.
#[derive(Debug)]
pub enum Fail {
    Check(Sense),
    Conflict,
    Status(u8),
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Fail {
        Fail::Check(s)
    }
}

pub type CmdResult = Result<Vec<u8>, Fail>;

/// Truncates `v` to an allocation length.
pub(crate) fn alloc(mut v: Vec<u8>, len: u32) -> Vec<u8> {
    v.truncate(len as usize);
    v
}
