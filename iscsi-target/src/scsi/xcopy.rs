//! EXTENDED COPY (LID1) with identification-descriptor CSCDs and
//! block-to-block segments, plus RECEIVE COPY RESULTS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::info::naa;
use super::sense::{asc, key, Sense};
use super::{alloc, CmdResult, Fail, Lun};

pub const MAX_CSCD: u16 = 8;
pub const MAX_SEGMENTS: u16 = 64;
pub const MAX_LIST_LEN: u32 = 8 + 32 * MAX_CSCD as u32 + 28 * MAX_SEGMENTS as u32 + 8;
pub const MAX_SEGMENT_BLOCKS: u32 = 65535;

/// Results of completed copies, by I_T nexus (initiator port name) and list
/// identifier: SPC-4 scopes LID1 list identifiers to the nexus that sent the
/// copy, and results are discarded when that nexus goes away.
#[derive(Debug, Default)]
pub struct CopyState {
    done: HashMap<(String, u8), (u8, u16, u32)>,
}

impl CopyState {
    /// I_T nexus loss: forget the results of that nexus's copies.
    pub(crate) fn nexus_lost(&mut self, port: &str) {
        self.done.retain(|(p, _), _| p != port);
    }
}

fn registry() -> &'static Mutex<Vec<Weak<Lun>>> {
    static R: OnceLock<Mutex<Vec<Weak<Lun>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

/// Makes a LUN reachable as an EXTENDED COPY source/destination.
pub fn register(lun: &Arc<Lun>) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|w| w.strong_count() > 0);
    r.push(Arc::downgrade(lun));
}

fn find_by_naa(d: &[u8]) -> Option<Arc<Lun>> {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.iter()
        .filter_map(|w| w.upgrade())
        .find(|l| naa(l)[..] == d[..d.len().min(16)])
}

fn copy_aborted(code: (u8, u8)) -> Fail {
    Sense::new(key::COPY_ABORTED, code).into()
}

pub(crate) fn extended_copy(lun: &Lun, port: &str, len: u32, data: &[u8]) -> CmdResult {
    if len == 0 {
        return Ok(Vec::new());
    }
    if len < 16 {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    if len > MAX_LIST_LEN {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    super::rw::need_data(data, len as usize)?;
    let p = &data[..len as usize];
    let list_id = p[0];
    if (p[1] >> 3) & 3 == 3 && list_id != 0 {
        return Err(Sense::invalid_param(0, None).into());
    }
    if p[1] & 0x07 != 0 {
        // PRIORITY is not supported beyond 0.
        return Err(Sense::invalid_param(1, None).into());
    }
    let cscd_len = u16::from_be_bytes([p[2], p[3]]) as usize;
    let seg_len = u32::from_be_bytes(p[8..12].try_into().expect("4")) as usize;
    let inline_len = u32::from_be_bytes(p[12..16].try_into().expect("4")) as usize;
    if inline_len != 0 {
        return Err(Sense::invalid_param(12, None).into());
    }
    if 16 + cscd_len + seg_len > p.len() {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    if cscd_len % 32 != 0 {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    if cscd_len / 32 > MAX_CSCD as usize {
        return Err(Sense::illegal(asc::TOO_MANY_TARGET_DESCRIPTORS).into());
    }
    let mut targets = Vec::new();
    for (i, d) in p[16..16 + cscd_len].chunks_exact(32).enumerate() {
        let off = 16 + i * 32;
        if d[0] != 0xe4 {
            let mut s = Sense::illegal(asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE);
            s.field = Some(super::sense::FieldPointer {
                in_cdb: false,
                byte: off as u16,
                bit: None,
            });
            return Err(s.into());
        }
        if d[1] & 0x1f != 0 {
            // Only direct-access block devices.
            return Err(Sense::invalid_param(off as u16 + 1, None).into());
        }
        let desig_type = d[5] & 0x0f;
        let dlen = d[7] as usize;
        if desig_type != 3 || dlen > 20 {
            return Err(Sense::invalid_param(off as u16 + 5, None).into());
        }
        let block_len = u32::from_be_bytes([0, d[29], d[30], d[31]]);
        targets.push((d[8..8 + dlen].to_vec(), block_len));
    }
    let segs = &p[16 + cscd_len..16 + cscd_len + seg_len];
    // Count segments first to enforce the limit.
    let mut pos = 0;
    let mut parsed = Vec::new();
    while pos < segs.len() {
        if pos + 4 > segs.len() {
            return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        let s = &segs[pos..];
        let dlen = u16::from_be_bytes([s[2], s[3]]) as usize + 4;
        if s[0] != 0x02 {
            let mut e = Sense::illegal(asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE);
            e.field = Some(super::sense::FieldPointer {
                in_cdb: false,
                byte: (16 + cscd_len + pos) as u16,
                bit: None,
            });
            return Err(e.into());
        }
        if dlen != 28 || pos + dlen > segs.len() {
            return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        parsed.push(s[..28].to_vec());
        pos += dlen;
        if parsed.len() > MAX_SEGMENTS as usize {
            return Err(Sense::illegal(asc::TOO_MANY_SEGMENT_DESCRIPTORS).into());
        }
    }
    let mut done_segments = 0u16;
    let mut moved = 0u32;
    for s in &parsed {
        let src = u16::from_be_bytes([s[4], s[5]]) as usize;
        let dst = u16::from_be_bytes([s[6], s[7]]) as usize;
        let blocks = u16::from_be_bytes([s[10], s[11]]) as u64;
        let src_lba = u64::from_be_bytes(s[12..20].try_into().expect("8"));
        let dst_lba = u64::from_be_bytes(s[20..28].try_into().expect("8"));
        let (Some(st), Some(dt)) = (targets.get(src), targets.get(dst)) else {
            return Err(copy_aborted(asc::COPY_TARGET_DEVICE_NOT_REACHABLE));
        };
        let same = |d: &[u8]| naa(lun)[..] == d[..d.len().min(16)];
        let src_lun = if same(&st.0) {
            None
        } else {
            Some(
                find_by_naa(&st.0)
                    .ok_or_else(|| copy_aborted(asc::COPY_TARGET_DEVICE_NOT_REACHABLE))?,
            )
        };
        let dst_lun = if same(&dt.0) {
            None
        } else {
            Some(
                find_by_naa(&dt.0)
                    .ok_or_else(|| copy_aborted(asc::COPY_TARGET_DEVICE_NOT_REACHABLE))?,
            )
        };
        let src_l: &Lun = src_lun.as_deref().unwrap_or(lun);
        let dst_l: &Lun = dst_lun.as_deref().unwrap_or(lun);
        for (l, t) in [(src_l, st), (dst_l, dt)] {
            if t.1 != 0 && t.1 != l.block_size {
                return Err(copy_aborted(asc::INVALID_FIELD_IN_PARAMETER_LIST));
            }
        }
        if src_l.check_lba(src_lba, blocks).is_err() || dst_l.check_lba(dst_lba, blocks).is_err() {
            return Err(copy_aborted(asc::NO_ADDITIONAL));
        }
        dst_l.check_writable()?;
        copy_blocks(src_l, src_lba, dst_l, dst_lba, blocks)?;
        done_segments += 1;
        moved = moved.saturating_add(blocks as u32);
    }
    lun.lock_state()
        .copy
        .done
        .insert((port.to_string(), list_id), (1, done_segments, moved));
    Ok(Vec::new())
}

fn copy_blocks(src: &Lun, src_lba: u64, dst: &Lun, dst_lba: u64, blocks: u64) -> Result<(), Fail> {
    let bs = src.block_size as u64;
    let chunk = 2048u64;
    let mut buf = vec![0u8; (chunk * bs) as usize];
    let mut done = 0;
    while done < blocks {
        let n = (blocks - done).min(chunk);
        let b = &mut buf[..(n * bs) as usize];
        {
            let _g = src.range.lock(src_lba + done, n, false);
            src.backing
                .read_at(b, (src_lba + done) * bs)
                .map_err(|_| copy_aborted(asc::UNRECOVERED_READ_ERROR))?;
        }
        let _g = dst.range.lock(dst_lba + done, n, true);
        dst.backing
            .write_at(b, (dst_lba + done) * bs)
            .map_err(|_| copy_aborted(asc::WRITE_ERROR))?;
        done += n;
    }
    Ok(())
}

/// Appends one third-party copy descriptor (type, length, body padded to a
/// multiple of four bytes).
fn tpc_descriptor(out: &mut Vec<u8>, ty: u16, mut body: Vec<u8>) {
    while body.len() % 4 != 0 {
        body.push(0);
    }
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend(body);
}

/// Body of the Third-party Copy VPD page (0x8F, SPC-4 §7.8.17): what this
/// copy manager does, for LID1 EXTENDED COPY only.
pub(crate) fn third_party_copy_vpd(lun: &Lun) -> Vec<u8> {
    let mut v = Vec::new();
    // Supported Commands: EXTENDED COPY(LID1); RECEIVE COPY STATUS(LID1)
    // and RECEIVE COPY OPERATING PARAMETERS.
    let cmds = [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03];
    let mut b = vec![cmds.len() as u8];
    b.extend_from_slice(&cmds);
    tpc_descriptor(&mut v, 0x0001, b);
    // Parameter Data (length 0x1C).
    let mut b = vec![0u8; 0x1c];
    b[4..6].copy_from_slice(&MAX_CSCD.to_be_bytes());
    b[6..8].copy_from_slice(&MAX_SEGMENTS.to_be_bytes());
    b[8..12].copy_from_slice(&MAX_LIST_LEN.to_be_bytes());
    tpc_descriptor(&mut v, 0x0004, b);
    // Supported Descriptors: block-to-block segment, identification CSCD.
    tpc_descriptor(&mut v, 0x0008, vec![2, 0x02, 0xe4]);
    // Supported CSCD Descriptor IDs: none beyond the descriptor list index.
    tpc_descriptor(&mut v, 0x000c, vec![0, 0]);
    // General Copy Operations (length 0x20).
    let mut b = vec![0u8; 0x20];
    b[0..4].copy_from_slice(&1u32.to_be_bytes()); // total concurrent copies
    b[4..8].copy_from_slice(&1u32.to_be_bytes()); // identified concurrent copies
    b[8..12].copy_from_slice(&(MAX_SEGMENT_BLOCKS * lun.block_size).to_be_bytes());
    b[12] = lun.block_size.trailing_zeros() as u8; // data segment granularity (log2)
    b[13] = 0; // no inline data
    tpc_descriptor(&mut v, 0x0106, b);
    v
}

pub(crate) fn receive_copy_results(
    lun: &Lun,
    port: &str,
    action: u8,
    list_id: u8,
    alloc_len: u32,
) -> CmdResult {
    match action {
        0x00 => {
            // Results of a completed LID1 copy are reported once, then discarded.
            let mut st = lun.lock_state();
            let Some((status, segs, count)) = st.copy.done.remove(&(port.to_string(), list_id))
            else {
                return Err(Sense::invalid_cdb(2, None).into());
            };
            let mut v = vec![0u8; 12];
            v[0..4].copy_from_slice(&8u32.to_be_bytes());
            v[4] = status;
            v[5..7].copy_from_slice(&segs.to_be_bytes());
            v[7] = 0xf1; // transfer count units: blocks
            v[8..12].copy_from_slice(&count.to_be_bytes());
            Ok(alloc(v, alloc_len))
        }
        0x03 => {
            let mut v = vec![0u8; 44 + 2];
            let n = (v.len() - 4) as u32;
            v[0..4].copy_from_slice(&n.to_be_bytes());
            v[4] = 0x01; // SNLID
            v[8..10].copy_from_slice(&MAX_CSCD.to_be_bytes());
            v[10..12].copy_from_slice(&MAX_SEGMENTS.to_be_bytes());
            v[12..16].copy_from_slice(&MAX_LIST_LEN.to_be_bytes());
            v[16..20].copy_from_slice(&(MAX_SEGMENT_BLOCKS * lun.block_size).to_be_bytes());
            v[20..24].copy_from_slice(&0u32.to_be_bytes());
            v[24..28].copy_from_slice(&0u32.to_be_bytes());
            v[36..38].copy_from_slice(&1u16.to_be_bytes());
            v[38] = 1;
            v[39] = 9; // data segment granularity 512
            v[40] = 0;
            v[41] = 0;
            v[43] = 2;
            v[44] = 0x02;
            v[45] = 0xe4;
            Ok(alloc(v, alloc_len))
        }
        _ => Err(Sense::invalid_cdb(1, Some(4)).into()),
    }
}
