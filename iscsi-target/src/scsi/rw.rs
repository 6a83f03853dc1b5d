//! READ, WRITE, VERIFY, WRITE AND VERIFY and COMPARE AND WRITE.

use super::cdb::Rw;
use super::info::{MAX_CAW_BLOCKS, MAX_TRANSFER_BLOCKS};
use super::sense::{asc, key, Sense};
use super::{CmdResult, Fail, Lun};

fn medium_read_error(_: std::io::Error) -> Fail {
    Sense::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR).into()
}
pub(crate) fn medium_write_error(_: std::io::Error) -> Fail {
    Sense::new(key::MEDIUM_ERROR, asc::WRITE_ERROR).into()
}

fn check_protect(r: &Rw) -> Result<(), Sense> {
    if r.protect != 0 {
        return Err(Sense::invalid_cdb(1, Some(7)));
    }
    Ok(())
}

/// Checks that enough data-out arrived for `need` bytes.
pub(crate) fn need_data(data: &[u8], need: usize) -> Result<(), Sense> {
    if data.len() < need {
        return Err(Sense::illegal(asc::INVALID_FIELD_IN_INFORMATION_UNIT));
    }
    Ok(())
}

pub(crate) fn read(lun: &Lun, r: &Rw) -> CmdResult {
    check_protect(r)?;
    lun.check_lba(r.lba, r.blocks as u64)?;
    if r.blocks > MAX_TRANSFER_BLOCKS {
        return Err(Sense::invalid_cdb(7, None).into());
    }
    let bs = lun.block_size as u64;
    let mut buf = vec![0u8; (r.blocks as u64 * bs) as usize];
    if buf.is_empty() {
        return Ok(buf);
    }
    let _g = lun.range.lock(r.lba, r.blocks as u64, false);
    lun.backing
        .read_at(&mut buf, r.lba * bs)
        .map_err(medium_read_error)?;
    Ok(buf)
}

pub(crate) fn write(lun: &Lun, r: &Rw, data: &[u8], out_len: &mut Option<u32>) -> CmdResult {
    let bs = lun.block_size as u64;
    let need = r.blocks as u64 * bs;
    *out_len = Some(need.min(u32::MAX as u64) as u32);
    lun.check_writable()?;
    check_protect(r)?;
    lun.check_lba(r.lba, r.blocks as u64)?;
    if r.blocks > MAX_TRANSFER_BLOCKS {
        return Err(Sense::invalid_cdb(7, None).into());
    }
    // iSCSI EDTL below the SCSI transfer length: write only the whole
    // blocks that arrived (the transport reports the overflow residual).
    let blocks = (r.blocks as u64).min(data.len() as u64 / bs);
    let need = blocks * bs;
    if need == 0 {
        return Ok(Vec::new());
    }
    let _g = lun.range.lock(r.lba, blocks, true);
    // Shared OFD lock: a COMPARE AND WRITE by another process on this
    // machine (a vmfs FileDev host on the same file) cannot interleave.
    let _ofd = lun
        .backing
        .lock_shared(r.lba * bs, need)
        .map_err(medium_write_error)?;
    lun.backing
        .write_at(&data[..need as usize], r.lba * bs)
        .map_err(medium_write_error)?;
    if r.fua || !lun.lock_state().mode.wce {
        lun.backing.sync().map_err(medium_write_error)?;
    }
    Ok(Vec::new())
}

/// Offset of the first differing byte.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub(crate) fn verify(
    lun: &Lun,
    r: &Rw,
    bytchk: u8,
    data: &[u8],
    out_len: &mut Option<u32>,
) -> CmdResult {
    check_protect(r)?;
    let bs = lun.block_size as u64;
    let need = match bytchk {
        0 => 0,
        1 => r.blocks as u64 * bs,
        3 => bs,
        _ => return Err(Sense::invalid_cdb(1, Some(1)).into()),
    };
    *out_len = Some(need as u32);
    lun.check_lba(r.lba, r.blocks as u64)?;
    if r.blocks > MAX_TRANSFER_BLOCKS {
        return Err(Sense::invalid_cdb(7, None).into());
    }
    need_data(data, need as usize)?;
    if r.blocks == 0 {
        return Ok(Vec::new());
    }
    let mut cur = vec![0u8; (r.blocks as u64 * bs) as usize];
    let _g = lun.range.lock(r.lba, r.blocks as u64, false);
    lun.backing
        .read_at(&mut cur, r.lba * bs)
        .map_err(medium_read_error)?;
    let diff = match bytchk {
        1 => first_difference(&cur, &data[..cur.len()]),
        3 => cur.chunks(bs as usize).enumerate().find_map(|(i, c)| {
            first_difference(c, &data[..bs as usize]).map(|o| i * bs as usize + o)
        }),
        _ => None,
    };
    match diff {
        Some(off) => Err(Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY)
            .with_info(off as u64)
            .into()),
        None => Ok(Vec::new()),
    }
}

/// COMPARE AND WRITE: atomic against every other command on the range (the
/// range lock is exclusive) and against other processes' OFD-locked
/// compare-and-writes and writes on the same file; durable before GOOD.
pub(crate) fn compare_and_write(
    lun: &Lun,
    r: &Rw,
    data: &[u8],
    out_len: &mut Option<u32>,
) -> CmdResult {
    let bs = lun.block_size as u64;
    let len = r.blocks as u64 * bs;
    *out_len = Some((2 * len) as u32);
    lun.check_writable()?;
    check_protect(r)?;
    if r.blocks > MAX_CAW_BLOCKS as u32 {
        return Err(Sense::invalid_cdb(13, None).into());
    }
    lun.check_lba(r.lba, r.blocks as u64)?;
    if r.blocks == 0 {
        // Zero blocks transfer nothing; data sent anyway means a bad CDB.
        if !data.is_empty() {
            return Err(Sense::invalid_cdb(13, None).into());
        }
        return Ok(Vec::new());
    }
    if data.len() as u64 != 2 * len {
        // The data-out must be exactly the verify and write instances: a
        // mismatch means initiator and CDB disagree on the length, and
        // comparing a guess could write the wrong bytes.
        return Err(Sense::invalid_cdb(13, None).into());
    }
    let (expected, new) = data.split_at(len as usize);
    let _g = lun.range.lock(r.lba, r.blocks as u64, true);
    // The same exclusive OFD range lock vmfs's FileDev takes for its
    // emulated ATS: atomic also against other processes on this machine.
    let _ofd = lun
        .backing
        .lock_exclusive(r.lba * bs, len)
        .map_err(medium_write_error)?;
    let mut cur = vec![0u8; len as usize];
    lun.backing
        .read_at(&mut cur, r.lba * bs)
        .map_err(medium_read_error)?;
    if let Some(off) = first_difference(&cur, expected) {
        return Err(Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY)
            .with_info(off as u64)
            .into());
    }
    lun.backing
        .write_at(new, r.lba * bs)
        .map_err(medium_write_error)?;
    lun.backing.sync().map_err(medium_write_error)?;
    Ok(Vec::new())
}
