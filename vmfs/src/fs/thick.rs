//! Making a range of a file eager-zeroed thick: holes allocated and zeroed
//! on the device, lazily zeroed blocks zeroed and their to-be-zeroed bit
//! cleared (`vmfs disk inflate`; what MULTI_WRITER opens require).

use crate::dev::BlockDev;
use crate::format::BlockAddr;

use super::change::Change;
use super::error::{FsError, FsResult};
use super::{exclusive, lock_st, Fs, WRITE_BATCH};

impl Fs {
    /// Allocate and zero every block of `off..off+len` of the file open for
    /// write as `fh` that is a hole or only lazily zeroed; data blocks are
    /// left alone. Zeros reach the device before the transaction that
    /// records the blocks commits (the commit flushes), one batch of blocks
    /// per transaction. The file size is not changed.
    pub fn materialize(&self, fh: u64, off: u64, len: u64) -> FsResult<()> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, write) = *st.handles.get(&fh).ok_or(FsError::BadHandle(fh))?;
        if !write {
            return Err(FsError::BadHandle(fh));
        }
        let Some(end) = off.checked_add(len) else {
            return Err(FsError::Invalid(format!("range {off} (+{len})")));
        };
        let mut o = st.open.remove(&ino).expect("open file of a handle");
        // Clearing to-be-zeroed bits: no read in flight may be between
        // resolving a block as zeros and the zeros reaching it.
        let data = std::sync::Arc::clone(&o.data);
        let _drained = exclusive(&data);
        if let Err(e) = inner.promote_for(&mut st, &mut o.map, off, end) {
            st.open.insert(ino, o);
            return Err(e);
        }
        let bs = o.map.block_size;
        let r = (|| {
            let mut n = off / bs;
            let last = end.div_ceil(bs);
            if end > o.map.max_bytes() {
                return Err(FsError::TooBig(format!(
                    "inode {ino}: {end} bytes is past the largest file"
                )));
            }
            while n < last {
                let stop = (n + WRITE_BATCH).min(last);
                let mut ch = Change::new();
                let staged = (|| {
                    for b in n..stop {
                        let a = match o.map.get(&inner.ctx, b)? {
                            Some(a) if !a.to_be_zeroed => continue,
                            Some(a) => a,
                            None => {
                                o.map.inode.blocks += 1;
                                BlockAddr {
                                    kind: o.map.data_kind,
                                    index: super::data::alloc_data(&mut st.alloc, &mut ch, &o.map)?,
                                    to_be_zeroed: false,
                                }
                            }
                        };
                        let a = BlockAddr {
                            to_be_zeroed: false,
                            ..a
                        };
                        inner
                            .ctx
                            .dev
                            .write_zeroes(o.map.data_addr(&inner.ctx, a), bs)?;
                        ch.data_written();
                        o.map
                            .set(&inner.ctx, &mut st.alloc, &mut ch, b, a.encode())?;
                    }
                    Ok(())
                })();
                if let Err(e) = staged {
                    st.alloc.invalidate(&ch);
                    o.map.reload(&inner.ctx)?;
                    return Err(e);
                }
                if !ch.is_empty() || o.map.inode_dirty {
                    inner.commit(&mut st, ch, &mut [&mut o.map])?;
                }
                n = stop;
            }
            Ok(())
        })();
        st.open.insert(ino, o);
        r
    }
}
