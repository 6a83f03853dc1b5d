//! CDB decoder: turns raw command descriptor blocks into typed commands.
//! Anything not recognised becomes `Err(INVALID COMMAND OPERATION CODE)`.

use super::sense::Sense;

pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ6: u8 = 0x08;
    pub const WRITE6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT6: u8 = 0x15;
    pub const RESERVE6: u8 = 0x16;
    pub const RELEASE6: u8 = 0x17;
    pub const MODE_SENSE6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY10: u8 = 0x25;
    pub const READ10: u8 = 0x28;
    pub const WRITE10: u8 = 0x2a;
    pub const WRITE_VERIFY10: u8 = 0x2e;
    pub const VERIFY10: u8 = 0x2f;
    pub const PREFETCH10: u8 = 0x34;
    pub const SYNC_CACHE10: u8 = 0x35;
    pub const WRITE_SAME10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT10: u8 = 0x55;
    pub const RESERVE10: u8 = 0x56;
    pub const RELEASE10: u8 = 0x57;
    pub const MODE_SENSE10: u8 = 0x5a;
    pub const PR_IN: u8 = 0x5e;
    pub const PR_OUT: u8 = 0x5f;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE16: u8 = 0x8a;
    pub const WRITE_VERIFY16: u8 = 0x8e;
    pub const VERIFY16: u8 = 0x8f;
    pub const PREFETCH16: u8 = 0x90;
    pub const SYNC_CACHE16: u8 = 0x91;
    pub const WRITE_SAME16: u8 = 0x93;
    pub const SERVICE_ACTION_IN16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ12: u8 = 0xa8;
    pub const WRITE12: u8 = 0xaa;
    pub const WRITE_VERIFY12: u8 = 0xae;
    pub const VERIFY12: u8 = 0xaf;
}

/// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
pub mod sa {
    pub const READ_CAPACITY16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
    pub const REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
    pub const REPORT_SUPPORTED_TMFS: u8 = 0x0d;
}

/// CDB length implied by the opcode's group code.
pub fn cdb_len(op: u8) -> usize {
    match op >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 16,
    }
}

/// A block-addressed transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rw {
    pub lba: u64,
    pub blocks: u32,
    pub fua: bool,
    /// RDPROTECT / WRPROTECT / VRPROTECT field.
    pub protect: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u32,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReadCapacity10 {
        lba: u32,
        pmi: bool,
    },
    ReadCapacity16 {
        alloc: u32,
    },
    Read(Rw),
    Write(Rw),
    /// VERIFY: `bytchk` 0 = medium check only, 1 = compare with data-out, 3 = one block pattern.
    Verify {
        rw: Rw,
        bytchk: u8,
    },
    WriteVerify {
        rw: Rw,
        bytchk: bool,
    },
    Prefetch {
        lba: u64,
        blocks: u32,
    },
    SyncCache {
        lba: u64,
        blocks: u32,
    },
    ModeSense {
        ten: bool,
        dbd: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc: u32,
    },
    ModeSelect {
        ten: bool,
        pf: bool,
        sp: bool,
        len: u32,
    },
    CompareAndWrite {
        rw: Rw,
    },
    WriteSame {
        rw: Rw,
        unmap: bool,
        anchor: bool,
        ndob: bool,
    },
    Unmap {
        anchor: bool,
        len: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    Reserve,
    Release,
    PrIn {
        action: u8,
        alloc: u32,
    },
    PrOut {
        action: u8,
        scope: u8,
        ty: u8,
        len: u32,
    },
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        op: u8,
        sa: u16,
        alloc: u32,
    },
    ReportSupportedTmfs {
        alloc: u32,
    },
    ExtendedCopy {
        len: u32,
    },
    ReceiveCopyResults {
        action: u8,
        list_id: u8,
        alloc: u32,
    },
    StartStopUnit {
        start: bool,
        loej: bool,
    },
    PreventAllow {
        prevent: u8,
    },
}

fn be16(b: &[u8]) -> u32 {
    u16::from_be_bytes([b[0], b[1]]) as u32
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The control byte's NACA/link bits are not supported.
fn check_control(cdb: &[u8]) -> Result<(), Sense> {
    let last = cdb.len() - 1;
    if cdb[last] & 0x07 != 0 {
        return Err(Sense::invalid_cdb(last as u16, Some(2)));
    }
    Ok(())
}

/// Decodes a CDB. The slice may be longer than the command (iSCSI pads to 16).
pub fn decode(cdb: &[u8]) -> Result<Command, Sense> {
    use opcode::*;
    let Some(&op) = cdb.first() else {
        return Err(Sense::invalid_opcode());
    };
    let n = cdb_len(op);
    if cdb.len() < n {
        return Err(Sense::invalid_opcode());
    }
    let c = &cdb[..n];
    check_control(c)?;
    let rw10 = |c: &[u8], protect_ok: bool| -> Result<Rw, Sense> {
        let _ = protect_ok;
        Ok(Rw {
            lba: be32(&c[2..6]) as u64,
            blocks: be16(&c[7..9]),
            fua: c[1] & 0x08 != 0,
            protect: c[1] >> 5,
        })
    };
    let rw12 = |c: &[u8]| Rw {
        lba: be32(&c[2..6]) as u64,
        blocks: be32(&c[6..10]),
        fua: c[1] & 0x08 != 0,
        protect: c[1] >> 5,
    };
    let rw16 = |c: &[u8]| Rw {
        lba: be64(&c[2..10]),
        blocks: be32(&c[10..14]),
        fua: c[1] & 0x08 != 0,
        protect: c[1] >> 5,
    };
    let rw6 = |c: &[u8]| Rw {
        lba: (((c[1] & 0x1f) as u64) << 16) | ((c[2] as u64) << 8) | c[3] as u64,
        blocks: if c[4] == 0 { 256 } else { c[4] as u32 },
        fua: false,
        protect: 0,
    };
    Ok(match op {
        TEST_UNIT_READY => Command::TestUnitReady,
        REQUEST_SENSE => Command::RequestSense {
            desc: c[1] & 1 != 0,
            alloc: c[4] as u32,
        },
        INQUIRY => {
            let evpd = c[1] & 1 != 0;
            if c[1] & 0xfe != 0 {
                return Err(Sense::invalid_cdb(1, None));
            }
            if !evpd && c[2] != 0 {
                return Err(Sense::invalid_cdb(2, None));
            }
            Command::Inquiry {
                evpd,
                page: c[2],
                alloc: be16(&c[3..5]),
            }
        }
        REPORT_LUNS => Command::ReportLuns {
            select: c[2],
            alloc: be32(&c[6..10]),
        },
        READ_CAPACITY10 => Command::ReadCapacity10 {
            lba: be32(&c[2..6]),
            pmi: c[8] & 1 != 0,
        },
        READ6 => Command::Read(rw6(c)),
        WRITE6 => Command::Write(rw6(c)),
        READ10 => Command::Read(rw10(c, true)?),
        WRITE10 => Command::Write(rw10(c, true)?),
        READ12 => Command::Read(rw12(c)),
        WRITE12 => Command::Write(rw12(c)),
        READ16 => Command::Read(rw16(c)),
        WRITE16 => Command::Write(rw16(c)),
        VERIFY10 | VERIFY12 | VERIFY16 => {
            let rw = match op {
                VERIFY10 => rw10(c, true)?,
                VERIFY12 => rw12(c),
                _ => rw16(c),
            };
            Command::Verify {
                rw: Rw { fua: false, ..rw },
                bytchk: (c[1] >> 1) & 3,
            }
        }
        WRITE_VERIFY10 | WRITE_VERIFY12 | WRITE_VERIFY16 => {
            let rw = match op {
                WRITE_VERIFY10 => rw10(c, true)?,
                WRITE_VERIFY12 => rw12(c),
                _ => rw16(c),
            };
            Command::WriteVerify {
                rw: Rw { fua: true, ..rw },
                bytchk: c[1] & 0x02 != 0,
            }
        }
        PREFETCH10 => Command::Prefetch {
            lba: be32(&c[2..6]) as u64,
            blocks: be16(&c[7..9]),
        },
        PREFETCH16 => Command::Prefetch {
            lba: be64(&c[2..10]),
            blocks: be32(&c[10..14]),
        },
        SYNC_CACHE10 => Command::SyncCache {
            lba: be32(&c[2..6]) as u64,
            blocks: be16(&c[7..9]),
        },
        SYNC_CACHE16 => Command::SyncCache {
            lba: be64(&c[2..10]),
            blocks: be32(&c[10..14]),
        },
        MODE_SENSE6 | MODE_SENSE10 => Command::ModeSense {
            ten: op == MODE_SENSE10,
            dbd: c[1] & 0x08 != 0,
            pc: c[2] >> 6,
            page: c[2] & 0x3f,
            subpage: c[3],
            alloc: if op == MODE_SENSE10 {
                be16(&c[7..9])
            } else {
                c[4] as u32
            },
        },
        MODE_SELECT6 | MODE_SELECT10 => Command::ModeSelect {
            ten: op == MODE_SELECT10,
            pf: c[1] & 0x10 != 0,
            sp: c[1] & 0x01 != 0,
            len: if op == MODE_SELECT10 {
                be16(&c[7..9])
            } else {
                c[4] as u32
            },
        },
        COMPARE_AND_WRITE => Command::CompareAndWrite {
            rw: Rw {
                lba: be64(&c[2..10]),
                blocks: c[13] as u32,
                fua: c[1] & 0x08 != 0,
                protect: c[1] >> 5,
            },
        },
        WRITE_SAME10 => Command::WriteSame {
            rw: rw10(c, true)?,
            unmap: c[1] & 0x08 != 0,
            anchor: c[1] & 0x10 != 0,
            ndob: false,
        },
        WRITE_SAME16 => Command::WriteSame {
            rw: Rw {
                fua: false,
                ..rw16(c)
            },
            unmap: c[1] & 0x08 != 0,
            anchor: c[1] & 0x10 != 0,
            ndob: c[1] & 0x01 != 0,
        },
        UNMAP => Command::Unmap {
            anchor: c[1] & 1 != 0,
            len: be16(&c[7..9]),
        },
        SERVICE_ACTION_IN16 => match c[1] & 0x1f {
            sa::READ_CAPACITY16 => Command::ReadCapacity16 {
                alloc: be32(&c[10..14]),
            },
            sa::GET_LBA_STATUS => Command::GetLbaStatus {
                lba: be64(&c[2..10]),
                alloc: be32(&c[10..14]),
            },
            _ => return Err(Sense::invalid_cdb(1, Some(4))),
        },
        MAINTENANCE_IN => match c[1] & 0x1f {
            sa::REPORT_SUPPORTED_OPCODES => Command::ReportSupportedOpcodes {
                rctd: c[2] & 0x80 != 0,
                options: c[2] & 0x07,
                op: c[3],
                sa: be16(&c[4..6]) as u16,
                alloc: be32(&c[6..10]),
            },
            sa::REPORT_SUPPORTED_TMFS => Command::ReportSupportedTmfs {
                alloc: be32(&c[6..10]),
            },
            _ => return Err(Sense::invalid_cdb(1, Some(4))),
        },
        RESERVE6 | RESERVE10 => {
            if op == RESERVE10 && c[1] & 0x03 != 0 {
                return Err(Sense::invalid_cdb(1, None));
            }
            Command::Reserve
        }
        RELEASE6 | RELEASE10 => Command::Release,
        PR_IN => Command::PrIn {
            action: c[1] & 0x1f,
            alloc: be16(&c[7..9]),
        },
        PR_OUT => Command::PrOut {
            action: c[1] & 0x1f,
            scope: c[2] >> 4,
            ty: c[2] & 0x0f,
            len: be32(&c[5..9]),
        },
        EXTENDED_COPY => {
            if c[1] & 0x1f != 0 {
                return Err(Sense::invalid_cdb(1, Some(4)));
            }
            Command::ExtendedCopy {
                len: be32(&c[10..14]),
            }
        }
        RECEIVE_COPY_RESULTS => Command::ReceiveCopyResults {
            action: c[1] & 0x1f,
            list_id: c[2],
            alloc: be32(&c[10..14]),
        },
        START_STOP_UNIT => Command::StartStopUnit {
            start: c[4] & 1 != 0,
            loej: c[4] & 2 != 0,
        },
        PREVENT_ALLOW => Command::PreventAllow { prevent: c[4] & 3 },
        _ => return Err(Sense::invalid_opcode()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_read_write() {
        let mut c = [0u8; 16];
        c[0] = opcode::READ10;
        c[5] = 9;
        c[8] = 2;
        assert_eq!(
            decode(&c).unwrap(),
            Command::Read(Rw {
                lba: 9,
                blocks: 2,
                fua: false,
                protect: 0
            })
        );
        c[0] = opcode::WRITE6;
        c[5] = 0;
        c[4] = 0;
        assert!(matches!(
            decode(&c).unwrap(),
            Command::Write(Rw { blocks: 256, .. })
        ));
        c[0] = 0xff;
        assert_eq!(decode(&c).unwrap_err(), Sense::invalid_opcode());
        assert!(decode(&[]).is_err());
        assert!(decode(&[opcode::READ16, 0, 0]).is_err());
    }
}
