//! REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): the command table with
//! per-command CDB usage bitmaps.

use super::cdb::{opcode as op, sa};
use super::sense::Sense;
use super::{alloc, CmdResult};

struct Entry {
    op: u8,
    sa: Option<u8>,
    usage: &'static [u8],
}

const fn e(op: u8, sa: Option<u8>, usage: &'static [u8]) -> Entry {
    Entry { op, sa, usage }
}

const TABLE: &[Entry] = &[
    e(op::TEST_UNIT_READY, None, &[0x00, 0, 0, 0, 0, 0]),
    e(op::REQUEST_SENSE, None, &[0x03, 0x01, 0, 0, 0xff, 0]),
    e(op::READ6, None, &[0x08, 0x1f, 0xff, 0xff, 0xff, 0]),
    e(op::WRITE6, None, &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0]),
    e(op::INQUIRY, None, &[0x12, 0x01, 0xff, 0xff, 0xff, 0]),
    e(op::MODE_SELECT6, None, &[0x15, 0x11, 0, 0, 0xff, 0]),
    e(op::RESERVE6, None, &[0x16, 0, 0, 0, 0, 0]),
    e(op::RELEASE6, None, &[0x17, 0, 0, 0, 0, 0]),
    e(op::MODE_SENSE6, None, &[0x1a, 0x08, 0xff, 0xff, 0xff, 0]),
    e(op::START_STOP_UNIT, None, &[0x1b, 0x01, 0, 0x0f, 0xf7, 0]),
    e(op::PREVENT_ALLOW, None, &[0x1e, 0, 0, 0, 0x03, 0]),
    e(
        op::READ_CAPACITY10,
        None,
        &[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0],
    ),
    e(
        op::READ10,
        None,
        &[0x28, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::WRITE10,
        None,
        &[0x2a, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::WRITE_VERIFY10,
        None,
        &[0x2e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::VERIFY10,
        None,
        &[0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::PREFETCH10,
        None,
        &[0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::SYNC_CACHE10,
        None,
        &[0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::WRITE_SAME10,
        None,
        &[0x41, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::UNMAP,
        None,
        &[0x42, 0x00, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0],
    ),
    e(
        op::MODE_SELECT10,
        None,
        &[0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(op::RESERVE10, None, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    e(op::RELEASE10, None, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    e(
        op::MODE_SENSE10,
        None,
        &[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(
        op::PR_IN,
        Some(0),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(
        op::PR_IN,
        Some(1),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(
        op::PR_IN,
        Some(2),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(
        op::PR_IN,
        Some(3),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(0),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(1),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(2),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(3),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(4),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(5),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::PR_OUT,
        Some(6),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
    ),
    e(
        op::EXTENDED_COPY,
        Some(0),
        &[
            0x83, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    e(
        op::RECEIVE_COPY_RESULTS,
        Some(0),
        &[
            0x84, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    e(
        op::RECEIVE_COPY_RESULTS,
        Some(3),
        &[
            0x84, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    e(
        op::READ16,
        None,
        &[
            0x88, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::COMPARE_AND_WRITE,
        None,
        &[
            0x89, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0,
        ],
    ),
    e(
        op::WRITE16,
        None,
        &[
            0x8a, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::WRITE_VERIFY16,
        None,
        &[
            0x8e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::VERIFY16,
        None,
        &[
            0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::PREFETCH16,
        None,
        &[
            0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::SYNC_CACHE16,
        None,
        &[
            0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::WRITE_SAME16,
        None,
        &[
            0x93, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0,
        ],
    ),
    e(
        op::SERVICE_ACTION_IN16,
        Some(sa::READ_CAPACITY16),
        &[
            0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    e(
        op::SERVICE_ACTION_IN16,
        Some(sa::GET_LBA_STATUS),
        &[
            0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0,
        ],
    ),
    e(
        op::REPORT_LUNS,
        None,
        &[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
    ),
    e(
        op::MAINTENANCE_IN,
        Some(sa::REPORT_SUPPORTED_OPCODES),
        &[
            0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    e(
        op::MAINTENANCE_IN,
        Some(sa::REPORT_SUPPORTED_TMFS),
        &[0xa3, 0x0d, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
    ),
    e(
        op::READ12,
        None,
        &[
            0xa8, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    e(
        op::WRITE12,
        None,
        &[
            0xaa, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    e(
        op::WRITE_VERIFY12,
        None,
        &[
            0xae, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    e(
        op::VERIFY12,
        None,
        &[
            0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
];

/// Command timeouts descriptor (no timeouts reported).
fn timeouts() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t
}

pub(crate) fn report(rctd: bool, options: u8, opc: u8, sact: u16, alloc_len: u32) -> CmdResult {
    let mut v = Vec::new();
    match options {
        0 => {
            for en in TABLE {
                let mut d = vec![en.op, 0];
                d.extend_from_slice(&(en.sa.unwrap_or(0) as u16).to_be_bytes());
                d.push(0);
                d.push(if en.sa.is_some() { 0x01 } else { 0 } | if rctd { 0x02 } else { 0 });
                d.extend_from_slice(&(en.usage.len() as u16).to_be_bytes());
                if rctd {
                    d.extend_from_slice(&timeouts());
                }
                v.extend(d);
            }
            let n = v.len() as u32;
            let mut out = n.to_be_bytes().to_vec();
            out.extend(v);
            return Ok(alloc(out, alloc_len));
        }
        1..=3 => {
            let has_sa = TABLE.iter().any(|e| e.op == opc && e.sa.is_some());
            if options == 1 && has_sa {
                return Err(Sense::invalid_cdb(2, None).into());
            }
            if options == 2 && !has_sa && TABLE.iter().any(|e| e.op == opc) {
                return Err(Sense::invalid_cdb(2, None).into());
            }
            let found = TABLE.iter().find(|e| {
                e.op == opc
                    && match e.sa {
                        Some(s) => options != 1 && s as u16 == sact,
                        None => true,
                    }
            });
            match found {
                None => v.extend_from_slice(&[0, 0x01, 0, 0]),
                Some(en) => {
                    v.extend_from_slice(&[0, 0x03 | if rctd { 0x80 } else { 0 }]);
                    v.extend_from_slice(&(en.usage.len() as u16).to_be_bytes());
                    let mut usage = en.usage.to_vec();
                    if let Some(s) = en.sa {
                        usage[1] = s | (usage[1] & 0xe0);
                    }
                    v.extend(usage);
                    if rctd {
                        v.extend_from_slice(&timeouts());
                    }
                }
            }
        }
        _ => return Err(Sense::invalid_cdb(2, Some(0)).into()),
    }
    Ok(alloc(v, alloc_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lengths_match_cdb_lengths() {
        for en in TABLE {
            assert_eq!(en.usage[0], en.op);
            assert_eq!(
                en.usage.len(),
                super::super::cdb::cdb_len(en.op),
                "opcode {:#x}",
                en.op
            );
        }
    }
}
