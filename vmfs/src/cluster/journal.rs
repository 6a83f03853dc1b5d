//! Per-host redo journal. A transaction is the full new images of the
//! metadata blocks it changes, each tagged with the lock that protects the
//! block and that lock's generation. Commit = append record + flush; then
//! the blocks are written in place; a checkpoint (flush, then move the head)
//! frees journal space. Replay — by the host itself or by a recoverer — is
//! idempotent and skips any block whose lock has changed generation since
//! the record was written (someone else has legitimately written it since;
//! holders flush in-place writes before releasing a lock).
//!
//! Byte layouts: `docs/locking.md` (journal section).

use crate::dev::BlockDev;
use crate::format::block::{get_u32, get_u64, put_u32, put_u64, seal, verify};
use crate::format::{LockRecord, SECTOR};

use super::ClusterError;

/// Journal head magic ("VJHD").
pub const HEAD_MAGIC: u32 = u32::from_le_bytes(*b"VJHD");
/// Journal record magic ("VJRC").
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"VJRC");
/// Bytes of the head block at the start of the journal.
pub const HEAD_LEN: u64 = 4096;
const ENTRY_LEN: usize = 32;

/// One block image in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnBlock {
    /// Device offset of the block (sector aligned).
    pub addr: u64,
    /// Its full new image (a multiple of 512 bytes).
    pub data: Vec<u8>,
    /// Lock record protecting it, and that lock's generation while held.
    pub lock_addr: u64,
    pub lock_gen: u64,
}

/// A set of block images that must land all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub blocks: Vec<TxnBlock>,
}

impl Txn {
    pub fn add(&mut self, addr: u64, data: Vec<u8>, lock_addr: u64, lock_gen: u64) {
        self.blocks.push(TxnBlock {
            addr,
            data,
            lock_addr,
            lock_gen,
        });
    }
}

/// Decoded journal head. Two 512-byte copies sit at the start of the
/// journal and are written alternately (copy `epoch % 2`), so a head write
/// torn by a crash always leaves the previous copy intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHead {
    pub volume_uuid: [u8; 16],
    pub slot: u32,
    pub owner_hb_gen: u64,
    pub start_seq: u64,
    pub start_off: u64,
    pub epoch: u64,
}

impl JournalHead {
    fn copy_addr(journal: u64, epoch: u64) -> u64 {
        journal + (epoch % 2) * SECTOR as u64
    }

    fn encode(&self, addr: u64) -> Vec<u8> {
        let mut b = vec![0u8; SECTOR];
        b[16..32].copy_from_slice(&self.volume_uuid);
        put_u32(&mut b, 32, self.slot);
        put_u64(&mut b, 40, self.owner_hb_gen);
        put_u64(&mut b, 48, self.start_seq);
        put_u64(&mut b, 56, self.start_off);
        put_u64(&mut b, 64, self.epoch);
        seal(&mut b, HEAD_MAGIC, addr);
        b
    }

    fn decode_copy(b: &[u8], addr: u64) -> Option<JournalHead> {
        verify(b, "journal head", HEAD_MAGIC, addr).ok()?;
        let mut volume_uuid = [0u8; 16];
        volume_uuid.copy_from_slice(&b[16..32]);
        let h = JournalHead {
            volume_uuid,
            slot: get_u32(b, 32),
            owner_hb_gen: get_u64(b, 40),
            start_seq: get_u64(b, 48),
            start_off: get_u64(b, 56),
            epoch: get_u64(b, 64),
        };
        (Self::copy_addr(addr - (h.epoch % 2) * SECTOR as u64, h.epoch) == addr).then_some(h)
    }

    /// The newest valid copy; `None` if neither is valid. Head writes
    /// happen only at start and checkpoint, both after a flush, so "no
    /// valid copy" (never used, emptied by recovery, or a torn first write)
    /// means there is nothing to replay.
    fn read(dev: &dyn BlockDev, journal: u64) -> Result<Option<JournalHead>, ClusterError> {
        let mut b = vec![0u8; 2 * SECTOR];
        dev.read_at(&mut b, journal)?;
        let a = Self::decode_copy(&b[..SECTOR], journal);
        let c = Self::decode_copy(&b[SECTOR..], journal + SECTOR as u64);
        Ok(match (a, c) {
            (Some(x), Some(y)) => Some(if x.epoch >= y.epoch { x } else { y }),
            (x, y) => x.or(y),
        })
    }

    fn write(&self, dev: &dyn BlockDev, journal: u64) -> Result<(), ClusterError> {
        let addr = Self::copy_addr(journal, self.epoch);
        dev.write_at(&self.encode(addr), addr)?;
        dev.flush()?;
        Ok(())
    }
}

/// Where a journal lives and whose it is.
#[derive(Debug, Clone, Copy)]
pub struct JournalLocation {
    pub addr: u64,
    pub size: u64,
    pub slot: u32,
    pub volume_uuid: [u8; 16],
}

/// The owner's handle on its journal.
#[derive(Debug)]
pub struct Journal {
    loc: JournalLocation,
    hb_gen: u64,
    epoch: u64,
    next_seq: u64,
    /// Offset of the next record, relative to the journal start.
    tail: u64,
}

fn round_up(v: u64) -> u64 {
    v.div_ceil(SECTOR as u64) * SECTOR as u64
}

fn encode_record(uuid: &[u8; 16], hb_gen: u64, seq: u64, addr: u64, txn: &Txn) -> Vec<u8> {
    let table_len = round_up((txn.blocks.len() * ENTRY_LEN) as u64) as usize;
    let images: usize = txn.blocks.iter().map(|b| b.data.len()).sum();
    let total = SECTOR + table_len + images;
    let mut rec = vec![0u8; total];
    for (i, b) in txn.blocks.iter().enumerate() {
        let o = SECTOR + i * ENTRY_LEN;
        put_u64(&mut rec, o, b.addr);
        put_u64(&mut rec, o + 8, b.data.len() as u64);
        put_u64(&mut rec, o + 16, b.lock_addr);
        put_u64(&mut rec, o + 24, b.lock_gen);
    }
    let mut o = SECTOR + table_len;
    for b in &txn.blocks {
        rec[o..o + b.data.len()].copy_from_slice(&b.data);
        o += b.data.len();
    }
    let payload_crc = crc32fast::hash(&rec[SECTOR..]);
    rec[16..32].copy_from_slice(uuid);
    put_u64(&mut rec, 32, hb_gen);
    put_u64(&mut rec, 40, seq);
    put_u32(&mut rec, 48, txn.blocks.len() as u32);
    put_u64(&mut rec, 56, total as u64);
    put_u32(&mut rec, 64, payload_crc);
    seal(&mut rec[..SECTOR], RECORD_MAGIC, addr);
    rec
}

impl Journal {
    /// Start a fresh journal for a host that has just joined under
    /// `hb_gen` (its slot was FREE or CLEAN_EXIT: nothing to replay).
    pub fn start(
        dev: &dyn BlockDev,
        loc: JournalLocation,
        hb_gen: u64,
    ) -> Result<Journal, ClusterError> {
        let epoch = JournalHead::read(dev, loc.addr)?.map_or(0, |h| h.epoch + 1);
        let head = JournalHead {
            volume_uuid: loc.volume_uuid,
            slot: loc.slot,
            owner_hb_gen: hb_gen,
            start_seq: 1,
            start_off: HEAD_LEN,
            epoch,
        };
        head.write(dev, loc.addr)?;
        Ok(Journal {
            loc,
            hb_gen,
            epoch,
            next_seq: 1,
            tail: HEAD_LEN,
        })
    }

    /// Append `txn` and flush: once this returns, the transaction survives a
    /// crash. The caller then writes the blocks in place ([`Journal::apply`]).
    pub fn commit(&mut self, dev: &dyn BlockDev, txn: &Txn) -> Result<u64, ClusterError> {
        for b in &txn.blocks {
            if b.data.is_empty() || b.data.len() % SECTOR != 0 || b.addr % SECTOR as u64 != 0 {
                return Err(ClusterError::Journal {
                    slot: self.loc.slot,
                    why: format!(
                        "block at {} of {} bytes is not sector-aligned",
                        b.addr,
                        b.data.len()
                    ),
                });
            }
        }
        let len = SECTOR as u64
            + round_up((txn.blocks.len() * ENTRY_LEN) as u64)
            + txn.blocks.iter().map(|b| b.data.len() as u64).sum::<u64>();
        if len > self.loc.size - HEAD_LEN {
            return Err(ClusterError::Journal {
                slot: self.loc.slot,
                why: format!(
                    "transaction of {len} bytes exceeds the journal ({} bytes)",
                    self.loc.size
                ),
            });
        }
        if self.tail + len > self.loc.size {
            self.checkpoint(dev)?;
        }
        let seq = self.next_seq;
        let addr = self.loc.addr + self.tail;
        let rec = encode_record(&self.loc.volume_uuid, self.hb_gen, seq, addr, txn);
        dev.write_at(&rec, addr)?;
        dev.flush()?;
        self.next_seq += 1;
        self.tail += len;
        Ok(seq)
    }

    /// Write a committed transaction's blocks in place (not flushed: the
    /// journal covers them until the next checkpoint or lock release).
    pub fn apply(&self, dev: &dyn BlockDev, txn: &Txn) -> Result<(), ClusterError> {
        for b in &txn.blocks {
            dev.write_at(&b.data, b.addr)?;
        }
        Ok(())
    }

    /// Commit, then apply.
    pub fn run(&mut self, dev: &dyn BlockDev, txn: &Txn) -> Result<u64, ClusterError> {
        let seq = self.commit(dev, txn)?;
        self.apply(dev, txn)?;
        Ok(seq)
    }

    /// Make every applied block durable, then drop all records.
    pub fn checkpoint(&mut self, dev: &dyn BlockDev) -> Result<(), ClusterError> {
        dev.flush()?;
        self.epoch += 1;
        let head = JournalHead {
            volume_uuid: self.loc.volume_uuid,
            slot: self.loc.slot,
            owner_hb_gen: self.hb_gen,
            start_seq: self.next_seq,
            start_off: HEAD_LEN,
            epoch: self.epoch,
        };
        head.write(dev, self.loc.addr)?;
        self.tail = HEAD_LEN;
        Ok(())
    }

    /// Records committed since the journal started (for tests/metrics).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub blocks_applied: u64,
    /// Blocks whose lock had moved to a newer generation.
    pub blocks_skipped: u64,
}

/// Replay the journal at `loc` (records of other volumes, or of another
/// generation than the head names, are ignored), writing through `dev` (the
/// replaying host's fenced device). Then empty it (zero head). The head is
/// written by each owner when it joins, so a non-empty head always names the
/// last incarnation that used this journal.
pub fn replay(dev: &dyn BlockDev, loc: JournalLocation) -> Result<ReplayReport, ClusterError> {
    scan(dev, loc, true)
}

/// What [`replay`] would do, without writing anything (for fsck): the
/// records it would replay and how many of their blocks still carry their
/// lock's generation.
pub fn pending(dev: &dyn BlockDev, loc: JournalLocation) -> Result<ReplayReport, ClusterError> {
    scan(dev, loc, false)
}

fn scan(
    dev: &dyn BlockDev,
    loc: JournalLocation,
    apply: bool,
) -> Result<ReplayReport, ClusterError> {
    let mut report = ReplayReport::default();
    let Some(head) = JournalHead::read(dev, loc.addr)? else {
        return Ok(report);
    };
    let owner_hb_gen = head.owner_hb_gen;
    if head.volume_uuid != loc.volume_uuid || head.slot != loc.slot {
        // A journal of an earlier mount or another volume: nothing of this
        // incarnation to replay.
        if !apply {
            return Ok(report);
        }
        return empty(dev, loc).map(|_| report);
    }
    let mut off = head.start_off;
    let mut seq = head.start_seq;
    while off + SECTOR as u64 <= loc.size {
        let addr = loc.addr + off;
        let mut h = [0u8; SECTOR];
        dev.read_at(&mut h, addr)?;
        if verify(&h, "journal record", RECORD_MAGIC, addr).is_err()
            || h[16..32] != loc.volume_uuid
            || get_u64(&h, 32) != owner_hb_gen
            || get_u64(&h, 40) != seq
        {
            break; // end of log (or a torn / stale record)
        }
        let n = get_u32(&h, 48) as usize;
        let total = get_u64(&h, 56);
        if total < SECTOR as u64 || off + total > loc.size || total % SECTOR as u64 != 0 {
            break;
        }
        let mut rec = vec![0u8; total as usize];
        dev.read_at(&mut rec, addr)?;
        if crc32fast::hash(&rec[SECTOR..]) != get_u32(&h, 64) {
            break; // torn tail
        }
        let table_len = round_up((n * ENTRY_LEN) as u64) as usize;
        let mut img = SECTOR + table_len;
        for i in 0..n {
            let o = SECTOR + i * ENTRY_LEN;
            let (baddr, blen) = (get_u64(&rec, o), get_u64(&rec, o + 8) as usize);
            let (laddr, lgen) = (get_u64(&rec, o + 16), get_u64(&rec, o + 24));
            if img + blen > rec.len() {
                return Err(ClusterError::Journal {
                    slot: loc.slot,
                    why: format!("record {seq} at {addr} overruns itself"),
                });
            }
            let mut lb = [0u8; SECTOR];
            dev.read_at(&mut lb, laddr)?;
            let current = LockRecord::decode(&lb, laddr).map(|l| l.lock_gen);
            if current == Ok(lgen) {
                if apply {
                    dev.write_at(&rec[img..img + blen], baddr)?;
                }
                report.blocks_applied += 1;
            } else {
                report.blocks_skipped += 1;
            }
            img += blen;
        }
        report.records += 1;
        seq += 1;
        off += total;
    }
    if apply {
        dev.flush()?;
        empty(dev, loc)?;
    }
    Ok(report)
}

fn empty(dev: &dyn BlockDev, loc: JournalLocation) -> Result<(), ClusterError> {
    // One copy at a time: a crash between them leaves a valid older copy,
    // and replaying it again is harmless (idempotent, generation-checked).
    for copy in [1u64, 0] {
        dev.write_zeroes(loc.addr + copy * SECTOR as u64, SECTOR as u64)?;
        dev.flush()?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
