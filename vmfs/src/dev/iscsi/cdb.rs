//! SCSI command descriptor blocks the initiator sends (SBC-3, SPC-4) and
//! the sense data it decodes.

use super::error::SenseCode;

pub const READ16: u8 = 0x88;
pub const WRITE16: u8 = 0x8a;
pub const COMPARE_AND_WRITE: u8 = 0x89;
pub const SYNC_CACHE16: u8 = 0x91;
pub const WRITE_SAME16: u8 = 0x93;
pub const UNMAP: u8 = 0x42;
pub const SERVICE_ACTION_IN16: u8 = 0x9e;
pub const READ_CAPACITY16_SA: u8 = 0x10;
pub const INQUIRY: u8 = 0x12;
pub const TEST_UNIT_READY: u8 = 0x00;
pub const MAINTENANCE_IN: u8 = 0xa3;
pub const REPORT_OPCODES_SA: u8 = 0x0c;
pub const PR_IN: u8 = 0x5e;
pub const PR_OUT: u8 = 0x5f;

/// SCSI status bytes.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
}

/// Sense keys acted upon.
pub mod key {
    pub const NOT_READY: u8 = 0x2;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const MISCOMPARE: u8 = 0xe;
}

/// A CDB with the name used in errors.
#[derive(Debug, Clone)]
pub struct Cdb {
    pub bytes: [u8; 16],
    pub len: usize,
    pub name: &'static str,
    /// Starting LBA, for errors (0 for commands without one).
    pub lba: u64,
}

impl Cdb {
    fn new(name: &'static str, len: usize, op: u8, lba: u64) -> Cdb {
        let mut bytes = [0u8; 16];
        bytes[0] = op;
        Cdb {
            bytes,
            len,
            name,
            lba,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn lba_len16(name: &'static str, op: u8, lba: u64, blocks: u32) -> Cdb {
    let mut c = Cdb::new(name, 16, op, lba);
    c.bytes[2..10].copy_from_slice(&lba.to_be_bytes());
    c.bytes[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn read16(lba: u64, blocks: u32) -> Cdb {
    lba_len16("READ(16)", READ16, lba, blocks)
}

pub fn write16(lba: u64, blocks: u32) -> Cdb {
    lba_len16("WRITE(16)", WRITE16, lba, blocks)
}

/// SYNCHRONIZE CACHE(16) of the whole medium (LBA 0, 0 blocks).
pub fn sync_cache16() -> Cdb {
    lba_len16("SYNCHRONIZE CACHE(16)", SYNC_CACHE16, 0, 0)
}

/// WRITE SAME(16) of one zero block over `blocks`, deallocating when `unmap`.
pub fn write_same16(lba: u64, blocks: u32, unmap: bool) -> Cdb {
    let mut c = lba_len16("WRITE SAME(16)", WRITE_SAME16, lba, blocks);
    if unmap {
        c.bytes[1] |= 0x08;
    }
    c
}

/// COMPARE AND WRITE of `blocks` (data-out is verify data then write data).
pub fn compare_and_write(lba: u64, blocks: u8) -> Cdb {
    let mut c = Cdb::new("COMPARE AND WRITE", 16, COMPARE_AND_WRITE, lba);
    c.bytes[2..10].copy_from_slice(&lba.to_be_bytes());
    c.bytes[13] = blocks;
    c
}

/// UNMAP with one block descriptor; returns the CDB and parameter list.
pub fn unmap(lba: u64, blocks: u32) -> (Cdb, Vec<u8>) {
    let mut p = vec![0u8; 24];
    p[0..2].copy_from_slice(&22u16.to_be_bytes());
    p[2..4].copy_from_slice(&16u16.to_be_bytes());
    p[8..16].copy_from_slice(&lba.to_be_bytes());
    p[16..20].copy_from_slice(&blocks.to_be_bytes());
    let mut c = Cdb::new("UNMAP", 10, UNMAP, lba);
    c.bytes[7..9].copy_from_slice(&24u16.to_be_bytes());
    (c, p)
}

pub fn read_capacity16() -> Cdb {
    let mut c = Cdb::new("READ CAPACITY(16)", 16, SERVICE_ACTION_IN16, 0);
    c.bytes[1] = READ_CAPACITY16_SA;
    c.bytes[10..14].copy_from_slice(&32u32.to_be_bytes());
    c
}

pub fn test_unit_ready() -> Cdb {
    Cdb::new("TEST UNIT READY", 6, TEST_UNIT_READY, 0)
}

/// INQUIRY of VPD page `page` (EVPD set).
pub fn inquiry_vpd(page: u8, alloc: u16) -> Cdb {
    let mut c = Cdb::new("INQUIRY", 6, INQUIRY, 0);
    c.bytes[1] = 0x01;
    c.bytes[2] = page;
    c.bytes[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// REPORT SUPPORTED OPERATION CODES for one opcode without service action.
pub fn report_one_opcode(opcode: u8) -> Cdb {
    let mut c = Cdb::new("REPORT SUPPORTED OPERATION CODES", 12, MAINTENANCE_IN, 0);
    c.bytes[1] = REPORT_OPCODES_SA;
    c.bytes[2] = 0x01;
    c.bytes[3] = opcode;
    c.bytes[6..10].copy_from_slice(&64u32.to_be_bytes());
    c
}

/// PERSISTENT RESERVE IN with service action `sa` (0 READ KEYS, 1 READ RESERVATION).
pub fn pr_in(sa: u8, alloc: u16) -> Cdb {
    let mut c = Cdb::new("PERSISTENT RESERVE IN", 10, PR_IN, 0);
    c.bytes[1] = sa & 0x1f;
    c.bytes[7..9].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// PERSISTENT RESERVE OUT: CDB and its 24-byte parameter list.
pub fn pr_out(name: &'static str, sa: u8, rtype: u8, key: u64, sa_key: u64) -> (Cdb, Vec<u8>) {
    let mut c = Cdb::new(name, 10, PR_OUT, 0);
    c.bytes[1] = sa & 0x1f;
    c.bytes[2] = rtype & 0x0f;
    c.bytes[5..9].copy_from_slice(&24u32.to_be_bytes());
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (c, p)
}

/// Sense key/ASC/ASCQ of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
pub fn decode_sense(s: &[u8]) -> Option<SenseCode> {
    match s.first().map(|b| b & 0x7f) {
        Some(0x70) | Some(0x71) if s.len() >= 14 => Some(SenseCode {
            key: s[2] & 0xf,
            asc: s[12],
            ascq: s[13],
        }),
        Some(0x70) | Some(0x71) if s.len() >= 3 => Some(SenseCode {
            key: s[2] & 0xf,
            asc: 0,
            ascq: 0,
        }),
        Some(0x72) | Some(0x73) if s.len() >= 4 => Some(SenseCode {
            key: s[1] & 0xf,
            asc: s[2],
            ascq: s[3],
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdbs_are_laid_out_per_sbc() {
        let c = write16(0x0102_0304_0506_0708, 9);
        assert_eq!(c.as_slice()[0], 0x8a);
        assert_eq!(&c.as_slice()[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&c.as_slice()[10..14], &[0, 0, 0, 9]);
        let c = compare_and_write(5, 1);
        assert_eq!((c.bytes[0], c.bytes[9], c.bytes[13]), (0x89, 5, 1));
        let c = write_same16(1, 2, true);
        assert_eq!(c.bytes[1], 0x08);
        let (c, p) = unmap(7, 3);
        assert_eq!((c.len, c.bytes[8]), (10, 24));
        assert_eq!((p[1], p[3], p[15], p[19]), (22, 16, 7, 3));
        let (c, p) = pr_out("PR", 5, 5, 1, 2);
        assert_eq!((c.bytes[1], c.bytes[2], c.bytes[8]), (5, 5, 24));
        assert_eq!((p[7], p[15]), (1, 2));
    }

    #[test]
    fn sense_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x0e;
        fixed[12] = 0x1d;
        assert_eq!(
            decode_sense(&fixed),
            Some(SenseCode {
                key: 0xe,
                asc: 0x1d,
                ascq: 0
            })
        );
        assert_eq!(
            decode_sense(&[0x72, 0x06, 0x2a, 0x05]),
            Some(SenseCode {
                key: 6,
                asc: 0x2a,
                ascq: 5
            })
        );
        assert_eq!(decode_sense(&[0x70]), None);
        assert_eq!(decode_sense(&[]), None);
    }
}
