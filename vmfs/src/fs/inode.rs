//! Inodes: reading a body, allocating a number (lock record and body
//! written), attributes as the POSIX layer sees them.

use std::time::Duration;

use crate::cluster::sector_cas::{cas_sector, nonce, read_sector, SectorCas};
use crate::cluster::{HeldLock, Host, HostDev};
use crate::dev::BlockDev;
use crate::format::inode::{INODE_BODY_LEN, INODE_SIZE};
use crate::format::{Inode, LockMode, LockRecord, ResourceKind, SECTOR};
use crate::volume::Volume;

use super::alloc::Allocator;
use super::change::Change;
use super::error::{FsError, FsResult};

/// How long a block that fails to decode is re-read before it is called
/// corrupt: a torn read (racing another host's in-place write) heals in
/// microseconds; real damage stays.
pub const TORN_READ_PATIENCE: Duration = Duration::from_millis(16);

/// What an operation needs to reach the disk as this host.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub host: Host,
    pub vol: Volume,
    pub dev: HostDev,
}

impl Ctx {
    pub fn new(host: Host) -> Ctx {
        Ctx {
            vol: host.volume().clone(),
            dev: host.dev(),
            host,
        }
    }

    /// Offset of inode `ino`'s lock record.
    pub fn lock_addr(&self, ino: u64) -> u64 {
        self.vol.inode_addr(ino)
    }

    /// Is `ino` a possible inode number?
    pub fn check_ino(&self, ino: u64) -> FsResult<()> {
        let count = self.vol.header.region(ResourceKind::Inode).count;
        if ino == 0 || ino >= count {
            return Err(FsError::NotFound(format!(
                "inode {ino} (the volume has inodes 1..{count})"
            )));
        }
        Ok(())
    }

    /// Read and decode inode `ino`'s body.
    pub fn read_inode(&self, ino: u64) -> FsResult<Inode> {
        self.check_ino(ino)?;
        let addr = self.vol.inode_addr(ino) + SECTOR as u64;
        self.read_decoded(addr, INODE_BODY_LEN, |b| {
            let i = Inode::decode(b, addr)?;
            if i.ino != ino {
                return Err(FsError::Corrupt {
                    ino,
                    why: format!("inode body at {addr} names inode {}", i.ino),
                });
            }
            Ok(i)
        })
    }

    /// Read `len` bytes at `addr` and decode them.
    ///
    /// Another host may be writing this block in place right now (it holds
    /// the lock that protects it; we do not), and a read racing a write can
    /// return a mix of old and new bytes. The checksum catches that, so a
    /// block that fails to decode is read again a few times, over about
    /// [`TORN_READ_PATIENCE`], before it is called corrupt.
    pub fn read_decoded<T>(
        &self,
        addr: u64,
        len: usize,
        decode: impl Fn(&[u8]) -> FsResult<T>,
    ) -> FsResult<T> {
        let mut b = vec![0u8; len];
        let mut pause = Duration::ZERO;
        loop {
            self.dev.read_at(&mut b, addr)?;
            match decode(&b) {
                Err(e) if pause < TORN_READ_PATIENCE => {
                    tracing::debug!(addr, error = %e, "block did not decode; reading again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).max(Duration::from_micros(500));
                }
                r => return r,
            }
        }
    }

    /// The current lock record of inode `ino`.
    pub fn read_lock(&self, ino: u64) -> FsResult<LockRecord> {
        let addr = self.lock_addr(ino);
        Ok(LockRecord::decode(&read_sector(&self.dev, addr)?, addr)?)
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// File type bits of a mode.
pub fn file_type(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

pub fn is_dir(mode: u32) -> bool {
    file_type(mode) == libc::S_IFDIR
}

/// Allocate an inode number and make the inode ours: its lock record is
/// (re)written FREE with the next generation, then taken EXCLUSIVE, and its
/// fresh body staged in `ch` under that lock. The caller stages whatever
/// makes it reachable (a directory entry) in the same change.
pub fn alloc_inode(
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    mode: u32,
) -> FsResult<(Inode, HeldLock)> {
    let ino = loop {
        let r = alloc.alloc(ch, ResourceKind::Inode)?;
        if r != 0 {
            break r;
        }
    };
    let addr = ctx.vol.inode_addr(ino);
    let mut old = vec![0u8; INODE_SIZE as usize];
    ctx.dev.read_at(&mut old, addr)?;
    let old_lock = LockRecord::decode(&old[..SECTOR], addr).ok();
    let generation = Inode::decode(&old[SECTOR..], addr + SECTOR as u64)
        .map(|i| i.generation + 1)
        .unwrap_or(1);
    // The number is free in its bitmap and we hold its cluster, so nobody
    // else may hold or take this lock: overwrite it (by CAS, so a stray
    // writer is noticed) with a FREE record of the next generation.
    let mut rec = LockRecord::free(addr, ino);
    rec.lock_gen = old_lock.as_ref().map(|l| l.lock_gen + 1).unwrap_or(1);
    rec.write_nonce = nonce();
    let mut expected = [0u8; SECTOR];
    expected.copy_from_slice(&old[..SECTOR]);
    if let SectorCas::Lost(_) = cas_sector(&ctx.dev, addr, &expected, &rec.encode())? {
        return Err(FsError::Busy {
            ino,
            why: "the lock record of a free inode changed under us".into(),
        });
    }
    let lock = ctx
        .host
        .try_lock(addr, ino, LockMode::Exclusive)?
        .ok_or_else(|| FsError::Busy {
            ino,
            why: "a fresh inode lock was taken by another host".into(),
        })?;
    let mut body = Inode::new(addr + SECTOR as u64, ino, generation, mode);
    let now = now_ns();
    (body.atime_ns, body.mtime_ns, body.ctime_ns, body.btime_ns) = (now, now, now, now);
    body.nlink = 1;
    ch.put(body.addr, body.encode(), &lock);
    Ok((body, lock))
}

/// Attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Bytes of storage held (data and pointer blocks).
    pub allocated: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub btime_ns: i64,
}

impl Attr {
    pub fn of(i: &Inode, vol: &Volume) -> Attr {
        let data = super::bmap::data_kind(i);
        let bs = u64::from(vol.header.region(data).resource_size);
        Attr {
            ino: i.ino,
            generation: i.generation,
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            size: i.size,
            // Pointer blocks are counted at data block size: an upper bound.
            allocated: i.blocks * bs,
            atime_ns: i.atime_ns,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
            btime_ns: i.btime_ns,
        }
    }

    pub fn is_dir(&self) -> bool {
        is_dir(self.mode)
    }

    /// File type as a directory entry records it: `(st_mode & S_IFMT) >> 12`.
    pub fn dtype(&self) -> u8 {
        (file_type(self.mode) >> 12) as u8
    }

    /// Is this the inode a directory entry of type `dtype` can name? An
    /// entry read without the directory's lock, and the inode read after
    /// it, may come from different moments: another host may have removed
    /// the name and reused the number meanwhile (for a directory, say).
    pub fn matches_entry(&self, dtype: u8) -> bool {
        self.nlink > 0 && self.dtype() == dtype
    }
}
