//! `BlockDev` over SBC-3 commands, and what the LUN is probed for at open.

use super::cdb::{self, key, status};
use super::error::IscsiError;
use super::{good, IscsiDev, LunInfo, MAX_XFER};
use crate::dev::{
    apply_op, check_cas, check_io, BlockDev, CasOutcome, DevCapabilities, DevError, DevOp,
    FenceToken, FencedOp,
};

/// READ CAPACITY(16), Block Limits VPD, and whether COMPARE AND WRITE and
/// persistent reservations work.
pub(super) fn probe(dev: &IscsiDev, read_only: bool) -> Result<LunInfo, IscsiError> {
    // The first command after login usually meets a power-on unit
    // attention; exec retries it.
    dev.exec_good(&cdb::test_unit_ready(), &[], 0, true)?;
    let c = cdb::read_capacity16();
    let r = dev.exec_good(&c, &[], 32, true)?;
    if r.received < 32 {
        return Err(IscsiError::Protocol {
            command: c.name,
            why: format!("{} bytes of capacity data, expected 32", r.received),
        });
    }
    let d = &r.data;
    let last = u64::from_be_bytes(d[0..8].try_into().expect("8"));
    let block_size = u32::from_be_bytes(d[8..12].try_into().expect("4"));
    if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(IscsiError::Protocol {
            command: c.name,
            why: format!("logical block length {block_size} is not a power of two in 512..=65536"),
        });
    }
    let size = last
        .checked_add(1)
        .and_then(|b| b.checked_mul(u64::from(block_size)))
        .ok_or_else(|| IscsiError::Protocol {
            command: c.name,
            why: format!("last LBA {last} overflows the capacity"),
        })?;
    let mut info = LunInfo {
        size,
        block_size,
        lbpme: d[14] & 0x80 != 0,
        lbprz: d[14] & 0x40 != 0,
        caw: false,
        max_caw_blocks: 1,
        max_write_same_blocks: 0,
        max_unmap_blocks: 0,
        pr: false,
    };
    // Block Limits VPD (SBC-3 §6.6.4): optional.
    let c = cdb::inquiry_vpd(0xb0, 64);
    if let Ok(r) = dev.exec_good(&c, &[], 64, true) {
        let v = &r.data;
        if v.len() >= 44 && v[1] == 0xb0 {
            info.max_caw_blocks = u32::from(v[5]).max(1);
            info.max_unmap_blocks = u32::from_be_bytes(v[20..24].try_into().expect("4"));
            let ws = u64::from_be_bytes(v[36..44].try_into().expect("8"));
            info.max_write_same_blocks = u32::try_from(ws).unwrap_or(u32::MAX);
        }
    }
    info.caw = probe_caw(dev, read_only, block_size)?;
    // PERSISTENT RESERVE IN / READ KEYS answers if reservations exist at all.
    let c = cdb::pr_in(0, 8);
    info.pr = dev.exec_good(&c, &[], 8, true).is_ok();
    Ok(info)
}

/// Does COMPARE AND WRITE work? A read-write open tries one that cannot
/// change anything (LBA 0 compared with, and rewritten to, its own current
/// contents); otherwise, or if a reservation stops that, REPORT SUPPORTED
/// OPERATION CODES decides.
fn probe_caw(dev: &IscsiDev, read_only: bool, bs: u32) -> Result<bool, IscsiError> {
    let bs = bs as usize;
    if !read_only {
        let c = cdb::read16(0, 1);
        let cur = dev.exec_good(&c, &[], bs, true)?.data;
        let mut both = cur.clone();
        both.extend_from_slice(&cur);
        let c = cdb::compare_and_write(0, 1);
        match dev.exec(&c, &both, 0, false) {
            Ok(r) => match r.status {
                status::GOOD => return Ok(true),
                status::CHECK_CONDITION => match cdb::decode_sense(&r.sense) {
                    Some(s) if s.key == key::MISCOMPARE => return Ok(true),
                    Some(s) if s.key == key::ILLEGAL_REQUEST && s.asc == 0x20 => return Ok(false),
                    _ => {
                        good(&c, r)?;
                    }
                },
                status::RESERVATION_CONFLICT => {}
                _ => {
                    good(&c, r)?;
                }
            },
            // A lost answer says nothing either way; ask the table.
            Err(IscsiError::Timeout { .. } | IscsiError::ConnectionLost { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let c = cdb::report_one_opcode(cdb::COMPARE_AND_WRITE);
    match dev.exec_good(&c, &[], 64, true) {
        // SUPPORT field: 011b/101b supported, 001b not supported.
        Ok(r) => Ok(matches!(r.data.get(1).map(|b| b & 7), Some(3) | Some(5))),
        Err(_) => Ok(false),
    }
}

impl IscsiDev {
    fn lba(&self, offset: u64) -> u64 {
        offset / u64::from(self.info.block_size)
    }

    fn check_writable(&self, op: DevOp) -> Result<(), DevError> {
        if self.read_only {
            return Err(DevError::Unsupported {
                device: self.name.clone(),
                op,
                why: "the LUN was opened read-only".into(),
            });
        }
        if self.preempted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.fenced_err());
        }
        Ok(())
    }

    /// WRITE SAME(16) of zeros, in chunks the target accepts.
    fn write_same(&self, offset: u64, len: u64, unmap: bool, op: DevOp) -> Result<(), DevError> {
        let bs = u64::from(self.info.block_size);
        let zero = vec![0u8; bs as usize];
        let max = match self.info.max_write_same_blocks {
            0 => 1 << 16,
            m => u64::from(m).min(1 << 22),
        };
        let mut pos = offset;
        while pos < offset + len {
            let blocks = ((offset + len - pos) / bs).min(max);
            let c = cdb::write_same16(self.lba(pos), blocks as u32, unmap);
            self.exec_good(&c, &zero, 0, true)
                .map_err(|e| self.dev_err(op, pos, blocks * bs, e))?;
            pos += blocks * bs;
        }
        Ok(())
    }
}

impl BlockDev for IscsiDev {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.info.size
    }

    fn logical_block_size(&self) -> u32 {
        self.info.block_size
    }

    fn capabilities(&self) -> DevCapabilities {
        DevCapabilities {
            cross_machine_atomic_cas: self.info.caw,
            unmap_zeroes: self.info.lbpme && self.info.lbprz,
            persistent_reservations: self.info.pr,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        let bs = self.info.block_size as usize;
        for (i, chunk) in buf.chunks_mut(MAX_XFER).enumerate() {
            let off = offset + (i * MAX_XFER) as u64;
            let c = cdb::read16(self.lba(off), (chunk.len() / bs) as u32);
            let r = self
                .exec_good(&c, &[], chunk.len(), true)
                .map_err(|e| self.dev_err(DevOp::Read, off, chunk.len() as u64, e))?;
            if r.received != chunk.len() {
                return Err(self.dev_err(
                    DevOp::Read,
                    off,
                    chunk.len() as u64,
                    IscsiError::Protocol {
                        command: c.name,
                        why: format!(
                            "READ(16) at LBA {} returned {} bytes of {}",
                            c.lba,
                            r.received,
                            chunk.len()
                        ),
                    },
                ));
            }
            chunk.copy_from_slice(&r.data);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Write, offset, buf.len() as u64)?;
        self.check_writable(DevOp::Write)?;
        let bs = self.info.block_size as usize;
        for (i, chunk) in buf.chunks(MAX_XFER).enumerate() {
            let off = offset + (i * MAX_XFER) as u64;
            let c = cdb::write16(self.lba(off), (chunk.len() / bs) as u32);
            self.exec_good(&c, chunk, 0, true)
                .map_err(|e| self.dev_err(DevOp::Write, off, chunk.len() as u64, e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), DevError> {
        let c = cdb::sync_cache16();
        self.exec_good(&c, &[], 0, true)
            .map_err(|e| self.dev_err(DevOp::Flush, 0, 0, e))?;
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::WriteZeroes, offset, len)?;
        self.check_writable(DevOp::WriteZeroes)?;
        // With LBPRZ, deallocating is the same as zeroing and cheaper.
        let unmap = self.info.lbpme && self.info.lbprz;
        self.write_same(offset, len, unmap, DevOp::WriteZeroes)
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Unmap, offset, len)?;
        self.check_writable(DevOp::Unmap)?;
        if !self.info.lbpme {
            return Err(DevError::Unsupported {
                device: self.name.clone(),
                op: DevOp::Unmap,
                why: "the LUN is not thin-provisioned (READ CAPACITY(16) LBPME is 0)".into(),
            });
        }
        let bs = u64::from(self.info.block_size);
        let max = match self.info.max_unmap_blocks {
            0 | u32::MAX => 1 << 20,
            m => u64::from(m),
        };
        let mut pos = offset;
        while pos < offset + len {
            let blocks = ((offset + len - pos) / bs).min(max);
            let (c, param) = cdb::unmap(self.lba(pos), blocks as u32);
            self.exec_good(&c, &param, 0, true)
                .map_err(|e| self.dev_err(DevOp::Unmap, pos, blocks * bs, e))?;
            pos += blocks * bs;
        }
        Ok(())
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        check_cas(self, offset, expected, new)?;
        self.check_writable(DevOp::CompareAndWrite)?;
        let len = new.len() as u64;
        let blocks = new.len() / self.info.block_size as usize;
        if !self.info.caw || blocks == 0 || blocks > self.info.max_caw_blocks.min(255) as usize {
            return Err(DevError::Unsupported {
                device: self.name.clone(),
                op: DevOp::CompareAndWrite,
                why: if self.info.caw {
                    format!(
                        "{blocks} blocks; the target's COMPARE AND WRITE takes 1 to {}",
                        self.info.max_caw_blocks.min(255)
                    )
                } else {
                    "the target does not implement COMPARE AND WRITE".into()
                },
            });
        }
        let mut data = Vec::with_capacity(new.len() * 2);
        data.extend_from_slice(expected);
        data.extend_from_slice(new);
        let c = cdb::compare_and_write(self.lba(offset), blocks as u8);
        let r = match self.exec(&c, &data, 0, false) {
            Ok(r) => r,
            // The command may or may not have run.
            Err(IscsiError::Timeout { .. } | IscsiError::ConnectionLost { .. }) => {
                return Ok(CasOutcome::Indeterminate)
            }
            Err(e) => return Err(self.dev_err(DevOp::CompareAndWrite, offset, len, e)),
        };
        if r.status == status::CHECK_CONDITION {
            if let Some(s) = cdb::decode_sense(&r.sense) {
                if s.key == key::MISCOMPARE {
                    // Nothing was written; report what is there now.
                    let mut cur = vec![0u8; new.len()];
                    self.read_at(&mut cur, offset)?;
                    return Ok(CasOutcome::Miscompare(cur));
                }
            }
        }
        good(&c, r).map_err(|e| self.dev_err(DevOp::CompareAndWrite, offset, len, e))?;
        Ok(CasOutcome::Done)
    }

    /// With a persistent-reservation key registered, the target itself
    /// refuses our writes once another host has preempted the key (which it
    /// does before it touches our heartbeat slot), so the write goes straight
    /// out. Without one, the slot is checked first (not atomic with the
    /// slot's compare-and-write: the timing argument of D > F + T covers it).
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        let registered = self
            .pr_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !registered {
            let mut sector = vec![0u8; self.info.block_size as usize];
            let slot_block = fence.slot_addr - fence.slot_addr % u64::from(self.info.block_size);
            self.read_at(&mut sector, slot_block)?;
            let at = (fence.slot_addr - slot_block) as usize;
            if !fence.admits(&sector[at..at + 512]) {
                return Err(fence.refused(&self.name));
            }
        }
        apply_op(self, op, offset)
    }
}
