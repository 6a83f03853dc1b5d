//! A change being staged: the block images of one journaled metadata
//! transaction, each tagged with the lock that protects it, plus what to do
//! once it has committed (discard freed data blocks).

use std::collections::{BTreeSet, HashMap};

use crate::cluster::{HeldLock, Host, Txn};
use crate::dev::BlockDev;

use super::discard::Pending;
use super::error::FsResult;

/// Staged metadata images of one transaction.
#[derive(Debug, Default)]
pub struct Change {
    txn: Txn,
    /// Block address -> index in `txn.blocks` (a later image replaces an
    /// earlier one of the same block).
    index: HashMap<u64, usize>,
    /// Clusters whose bitmaps this change alters (their images are added by
    /// the allocator when the change is committed).
    pub(crate) clusters: BTreeSet<(u8, u32)>,
    /// Data blocks to discard once the transaction has committed.
    pub(crate) discard: Vec<Pending>,
    /// Data was written into blocks this change makes reachable (newly
    /// allocated, or to-be-zeroed until now): it must be durable before the
    /// record is, or a crash could land the record alone and the file would
    /// show whatever the blocks held before.
    data_first: bool,
}

impl Change {
    pub fn new() -> Change {
        Change::default()
    }

    /// Stage the new image of the block at `addr`, protected by `lock`.
    pub fn put(&mut self, addr: u64, data: Vec<u8>, lock: &HeldLock) {
        match self.index.get(&addr) {
            Some(&i) => {
                let b = &mut self.txn.blocks[i];
                b.data = data;
                b.lock_addr = lock.addr;
                b.lock_gen = lock.lock_gen;
            }
            None => {
                self.index.insert(addr, self.txn.blocks.len());
                self.txn.add(addr, data, lock.addr, lock.lock_gen);
            }
        }
    }

    /// The staged image of the block at `addr`, if any.
    pub fn get(&self, addr: u64) -> Option<&[u8]> {
        self.index
            .get(&addr)
            .map(|&i| self.txn.blocks[i].data.as_slice())
    }

    /// Data this change makes reachable has been written: flush it before
    /// the record goes to the journal (ordered data, as ext4's
    /// `data=ordered`).
    pub(crate) fn data_written(&mut self) {
        self.data_first = true;
    }

    /// Nothing staged at all.
    pub fn is_empty(&self) -> bool {
        self.txn.blocks.is_empty() && self.clusters.is_empty()
    }

    /// Bytes of block images staged so far (to keep a transaction within
    /// the journal).
    pub fn bytes(&self) -> usize {
        self.txn.blocks.iter().map(|b| b.data.len()).sum::<usize>() + self.clusters.len() * 4096
    }

    /// Journal the staged images (flush of new data first if any, commit +
    /// flush, then write in place). The caller has already added the cluster
    /// header images; freed data blocks are then the allocator's to discard.
    pub(crate) fn run(&mut self, host: &Host) -> FsResult<()> {
        if !self.txn.blocks.is_empty() {
            if self.data_first {
                host.dev().flush()?;
            }
            host.run_txn(&self.txn)?;
        }
        Ok(())
    }
}
