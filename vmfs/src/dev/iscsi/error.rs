//! Errors of the iSCSI initiator: each names the command and, for I/O, the
//! LBA; SCSI failures carry the status and the sense key/ASC/ASCQ.

use std::fmt;

/// Sense data reduced to what decisions are made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseCode {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl fmt::Display for SenseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sense key {:#04x} ({}), ASC/ASCQ {:#04x}/{:#04x}",
            self.key,
            key_name(self.key),
            self.asc,
            self.ascq
        )
    }
}

fn key_name(k: u8) -> &'static str {
    match k {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE ERROR",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0xb => "ABORTED COMMAND",
        0xe => "MISCOMPARE",
        _ => "other",
    }
}

/// Error of the iSCSI transport or of one SCSI command.
#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("login to {target}: {why}")]
    Login { target: String, why: String },
    #[error("login to {target}: {why}")]
    LoginTransport { target: String, why: String },
    #[error("login to {target} refused with status {class:#04x}/{detail:#04x} ({meaning})")]
    LoginStatus {
        target: String,
        class: u8,
        detail: u8,
        meaning: &'static str,
    },
    #[error("{command} at LBA {lba}: connection lost: {why}")]
    ConnectionLost {
        command: &'static str,
        lba: u64,
        why: String,
    },
    #[error("{command} at LBA {lba}: no response within {timeout_ms} ms")]
    Timeout {
        command: &'static str,
        lba: u64,
        timeout_ms: u64,
    },
    #[error("{command} at LBA {lba}: CHECK CONDITION, {sense}")]
    Check {
        command: &'static str,
        lba: u64,
        sense: SenseCode,
    },
    #[error("{command} at LBA {lba}: SCSI status {status:#04x} ({meaning})")]
    Status {
        command: &'static str,
        lba: u64,
        status: u8,
        meaning: &'static str,
    },
    #[error("{command} at LBA {lba}: target rejected the PDU (reason {reason:#04x})")]
    Rejected {
        command: &'static str,
        lba: u64,
        reason: u8,
    },
    #[error(
        "{command} at LBA {lba}: target reported iSCSI response {response:#04x} (target failure)"
    )]
    TargetFailure {
        command: &'static str,
        lba: u64,
        response: u8,
    },
    #[error("{command}: malformed response from the target: {why}")]
    Protocol { command: &'static str, why: String },
    #[error("the target does not support {command} (opcode {opcode:#04x}); {needed_for}")]
    Unsupported {
        command: &'static str,
        opcode: u8,
        needed_for: &'static str,
    },
}

impl IscsiError {
    /// The sense code, for CHECK CONDITION errors.
    pub fn sense(&self) -> Option<SenseCode> {
        match self {
            IscsiError::Check { sense, .. } => Some(*sense),
            _ => None,
        }
    }
}

/// Meaning of a login status class/detail (RFC 7143 §11.13.5).
pub fn login_status_meaning(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (1, _) => "target moved",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failure",
        (2, 2) => "authorization failure",
        (2, 3) => "target not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "cannot include in session",
        (2, 9) => "session type not supported",
        (2, 10) => "session does not exist",
        (2, 11) => "invalid during login",
        (2, _) => "initiator error",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        _ => "unknown status",
    }
}

/// Meaning of a SCSI status byte (SAM-5).
pub fn status_meaning(status: u8) -> &'static str {
    match status {
        0x00 => "GOOD",
        0x02 => "CHECK CONDITION",
        0x04 => "CONDITION MET",
        0x08 => "BUSY",
        0x18 => "RESERVATION CONFLICT",
        0x28 => "TASK SET FULL",
        0x30 => "ACA ACTIVE",
        0x40 => "TASK ABORTED",
        _ => "unknown status",
    }
}
