//! Thin provisioning: WRITE SAME (with UNMAP), UNMAP and GET LBA STATUS.

use super::backing::Extent;
use super::cdb::Rw;
use super::info::{MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS};
use super::rw::{medium_write_error, need_data};
use super::sense::{asc, key, Sense};
use super::{alloc, CmdResult, Fail, Lun};

pub(crate) fn write_same(
    lun: &Lun,
    r: &Rw,
    unmap: bool,
    anchor: bool,
    ndob: bool,
    data: &[u8],
    out_len: &mut Option<u32>,
) -> CmdResult {
    let bs = lun.block_size as usize;
    *out_len = Some(if ndob { 0 } else { bs as u32 });
    lun.check_writable()?;
    if r.protect != 0 {
        return Err(Sense::invalid_cdb(1, Some(7)).into());
    }
    if anchor {
        return Err(Sense::invalid_cdb(1, Some(4)).into());
    }
    if r.blocks == 0 {
        // WSNZ is set in the block limits page.
        return Err(Sense::invalid_cdb(10, None).into());
    }
    lun.check_lba(r.lba, r.blocks as u64)?;
    if r.blocks as u64 > MAX_WRITE_SAME_BLOCKS {
        return Err(Sense::invalid_cdb(10, None).into());
    }
    let zero_block = vec![0u8; bs];
    let block: &[u8] = if ndob {
        &zero_block
    } else {
        // Exactly one block of data-out: anything else means initiator and
        // CDB disagree about what is being replicated.
        if data.len() != bs {
            return Err(Sense::invalid_cdb(1, None).into());
        }
        data
    };
    let _g = lun.range.lock(r.lba, r.blocks as u64, true);
    let off = r.lba * bs as u64;
    let len = r.blocks as u64 * bs as u64;
    if unmap && lun.backing.thin() && block.iter().all(|&b| b == 0) {
        lun.backing
            .punch_hole(off, len)
            .map_err(medium_write_error)?;
        return Ok(Vec::new());
    }
    let chunk_blocks = (1 << 20) / bs;
    let mut chunk = Vec::with_capacity(chunk_blocks * bs);
    for _ in 0..chunk_blocks.min(r.blocks as usize) {
        chunk.extend_from_slice(block);
    }
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        lun.backing
            .write_at(&chunk[..n], off + done)
            .map_err(medium_write_error)?;
        done += n as u64;
    }
    if !lun.lock_state().mode.wce {
        lun.backing.sync().map_err(medium_write_error)?;
    }
    Ok(Vec::new())
}

pub(crate) fn unmap(lun: &Lun, anchor: bool, len: u32, data: &[u8]) -> CmdResult {
    lun.check_writable()?;
    if anchor {
        return Err(Sense::invalid_cdb(1, Some(0)).into());
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    if len < 8 {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    need_data(data, len as usize)?;
    let data = &data[..len as usize];
    let bd_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let avail = data.len() - 8;
    let bd_len = bd_len.min(avail) / 16 * 16;
    let descs: Vec<(u64, u64)> = data[8..8 + bd_len]
        .chunks_exact(16)
        .map(|d| {
            (
                u64::from_be_bytes(d[0..8].try_into().expect("8")),
                u32::from_be_bytes(d[8..12].try_into().expect("4")) as u64,
            )
        })
        .collect();
    if descs.len() > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(Sense::invalid_param(2, None).into());
    }
    for (i, &(lba, n)) in descs.iter().enumerate() {
        lun.check_lba(lba, n)?;
        if n > MAX_UNMAP_BLOCKS as u64 {
            return Err(Sense::invalid_param((8 + i * 16 + 8) as u16, None).into());
        }
    }
    if !lun.backing.thin() {
        return Ok(Vec::new());
    }
    let bs = lun.block_size as u64;
    for (lba, n) in descs {
        if n == 0 {
            continue;
        }
        let _g = lun.range.lock(lba, n, true);
        lun.backing
            .punch_hole(lba * bs, n * bs)
            .map_err(medium_write_error)?;
    }
    Ok(Vec::new())
}

pub(crate) fn get_lba_status(lun: &Lun, lba: u64, alloc_len: u32) -> CmdResult {
    if lba >= lun.blocks {
        return Err(Sense::lba_out_of_range().into());
    }
    let bs = lun.block_size as u64;
    let mut v = vec![0u8; 8];
    let mut pos = lba;
    let max_desc = ((alloc_len as usize).saturating_sub(8) / 16).clamp(1, 64);
    let mut n = 0;
    while pos < lun.blocks && n < max_desc {
        let ext = lun
            .backing
            .extent_at(pos * bs)
            .map_err(|_| Fail::Check(Sense::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR)))?;
        let (end, state) = match ext {
            Extent::Mapped(e) => (e, 0u8),
            Extent::Hole(e) => (e, 1u8),
        };
        // Round to whole blocks, always making progress.
        let end_blk = (end.div_ceil(bs)).clamp(pos + 1, lun.blocks);
        let count = (end_blk - pos).min(u32::MAX as u64);
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&pos.to_be_bytes());
        d[8..12].copy_from_slice(&(count as u32).to_be_bytes());
        d[12] = state;
        v.extend_from_slice(&d);
        pos += count;
        n += 1;
    }
    let plen = (v.len() - 4) as u32;
    v[0..4].copy_from_slice(&plen.to_be_bytes());
    Ok(alloc(v, alloc_len))
}
