//! Directories as fsck handles them (format: `docs/format.md` §11):
//! salvaging the entries still readable from a damaged directory, and
//! rebuilding a directory whole from a list of entries — one bucket per
//! table entry at the smallest depth where every bucket fits, in the
//! directory's own blocks (small blocks are allocated for missing ones).
//! The journaled code in `vmfs::fs::dir` works on a mounted, locked
//! directory; fsck has neither, and must read past damage.

use std::collections::{BTreeMap, HashSet};

use vmfs::format::block::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, seal, verify};
use vmfs::format::inode::DIRECT;
use vmfs::format::{BlockAddr, Inode, LockRecord, ResourceKind, SECTOR};
use vmfs::fs::dir::{name_hash, DirEntry, DIR_BLOCK};
use vmfs::volume::Volume;

use crate::alloc::alloc;
use crate::{Disk, FsckError};

const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"VDIR");
const TABLE_MAGIC: u32 = u32::from_le_bytes(*b"VDTB");
const BUCKET_MAGIC: u32 = u32::from_le_bytes(*b"VDBK");
const TABLE_OFF: u64 = 64 << 10;
const BUCKET_OFF: u64 = 2 << 20;
const ENTRIES_OFF: usize = 32;
const ENTRY_FIXED: usize = 18;
const MAX_COLLISION: u64 = 250;
const MAX_BUCKETS: u32 = 1 << 18;
/// Deepest table a rebuild makes: 512 buckets, all in direct blocks.
const MAX_REBUILD_DEPTH: u8 = 9;
/// Name of the directory orphans are linked into.
pub const LOST_FOUND: &[u8] = b"lost+found";

/// What could be read of a directory.
#[derive(Debug, Default)]
pub struct Salvage {
    /// The hash seed, if the header was readable.
    pub seed: Option<u64>,
    pub entries: Vec<DirEntry>,
}

fn dev_addr(vol: &Volume, blocks: &BTreeMap<u64, BlockAddr>, lofs: u64) -> Option<u64> {
    let bs = u64::from(vol.header.small_block_size);
    blocks
        .get(&(lofs / bs))
        .map(|a| vol.resource_addr(a.kind, a.index) + lofs % bs)
}

/// A name a directory may hold.
pub fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && !n.contains(&b'/') && !n.contains(&0) && n != b"." && n != b".."
}

/// Entries of a bucket block, up to the first malformed one.
fn bucket_entries(b: &[u8], out: &mut Vec<DirEntry>) {
    let count = get_u16(b, 18) as usize;
    let mut o = ENTRIES_OFF;
    for _ in 0..count {
        if o + ENTRY_FIXED > b.len() {
            return;
        }
        let len = b[o + 17] as usize;
        if len == 0 || o + ENTRY_FIXED + len > b.len() {
            return;
        }
        let name = b[o + ENTRY_FIXED..o + ENTRY_FIXED + len].to_vec();
        if valid_name(&name) {
            out.push(DirEntry {
                key: get_u64(b, o),
                ino: get_u64(b, o + 8),
                dtype: b[o + 16],
                name,
            });
        }
        o += ENTRY_FIXED + len;
    }
}

/// Read what can be read of directory `ino` through its block map.
pub fn salvage(
    disk: &Disk,
    vol: &Volume,
    blocks: &BTreeMap<u64, BlockAddr>,
) -> Result<Salvage, FsckError> {
    let mut s = Salvage::default();
    let Some(haddr) = dev_addr(vol, blocks, 0) else {
        return Ok(s);
    };
    let hb = disk.read(haddr, DIR_BLOCK)?;
    let buckets: Vec<u32> = if verify(&hb, "directory header", HEADER_MAGIC, haddr).is_ok() {
        s.seed = Some(get_u64(&hb, 32));
        (0..get_u32(&hb, 20).min(MAX_BUCKETS)).collect()
    } else {
        // Without the header the bucket count is unknown: every bucket
        // block that decodes as its own number.
        let bs = u64::from(vol.header.small_block_size);
        let per = (bs / DIR_BLOCK as u64) as u32;
        blocks
            .keys()
            .filter(|&&n| n * bs >= BUCKET_OFF)
            .flat_map(|&n| {
                let first = ((n * bs - BUCKET_OFF) / DIR_BLOCK as u64) as u32;
                first..first + per
            })
            .filter(|&b| b < MAX_BUCKETS)
            .collect()
    };
    for num in buckets {
        let lofs = BUCKET_OFF + u64::from(num) * DIR_BLOCK as u64;
        let Some(addr) = dev_addr(vol, blocks, lofs) else {
            continue;
        };
        let b = disk.read(addr, DIR_BLOCK)?;
        if verify(&b, "directory bucket", BUCKET_MAGIC, addr).is_err() || get_u32(&b, 24) != num {
            continue;
        }
        bucket_entries(&b, &mut s.entries);
    }
    let mut seen = HashSet::new();
    s.entries.retain(|e| seen.insert(e.name.clone()));
    Ok(s)
}

fn index(key: u64, d: u8) -> u64 {
    if d == 0 {
        0
    } else {
        key.reverse_bits() & ((1u64 << d) - 1)
    }
}

/// Give every entry a key valid under `seed`, unique in the directory.
fn assign_keys(seed: u64, entries: &mut [DirEntry]) -> Result<(), FsckError> {
    let mut used = HashSet::new();
    let mut redo = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        if e.key >> 8 == name_hash(seed, &e.name)
            && e.key & 0xff <= MAX_COLLISION
            && used.insert(e.key)
        {
            continue;
        }
        redo.push(k);
    }
    for k in redo {
        let h = name_hash(seed, &entries[k].name) << 8;
        let key = (0..=MAX_COLLISION)
            .map(|c| h | c)
            .find(|key| !used.contains(key))
            .ok_or_else(|| FsckError::Refused("too many names with one hash".into()))?;
        used.insert(key);
        entries[k].key = key;
    }
    Ok(())
}

/// Rewrite directory `dir` whole to hold exactly `entries`. Returns the
/// directory inode as written (its block map may have grown).
pub fn rebuild(
    disk: &Disk,
    vol: &Volume,
    dir: &Inode,
    blocks: &BTreeMap<u64, BlockAddr>,
    seed: u64,
    mut entries: Vec<DirEntry>,
) -> Result<Inode, FsckError> {
    assign_keys(seed, &mut entries)?;
    entries.sort_by_key(|e| e.key);
    let depth = (0..=MAX_REBUILD_DEPTH)
        .find(|&d| {
            let mut bytes = vec![0usize; 1 << d];
            let mut count = vec![0usize; 1 << d];
            for e in &entries {
                let i = index(e.key, d) as usize;
                bytes[i] += ENTRY_FIXED + e.name.len();
                count[i] += 1;
            }
            bytes.iter().all(|&b| b <= DIR_BLOCK - ENTRIES_OFF)
                && count.iter().all(|&c| c <= usize::from(u16::MAX))
        })
        .ok_or_else(|| {
            FsckError::Refused(format!(
                "directory {} has too many entries ({}) for fsck to rebuild",
                dir.ino,
                entries.len()
            ))
        })?;
    let buckets = 1u64 << depth;
    let bs = u64::from(vol.header.small_block_size);
    let mut needed: Vec<u64> = vec![0, TABLE_OFF / bs];
    needed.extend(BUCKET_OFF / bs..=(BUCKET_OFF + (buckets - 1) * DIR_BLOCK as u64) / bs);
    needed.dedup();
    let mut inode = dir.clone();
    let mut blocks = blocks.clone();
    for n in needed {
        if blocks.contains_key(&n) {
            continue;
        }
        let slot = usize::try_from(n)
            .ok()
            .filter(|&s| s < DIRECT)
            .ok_or_else(|| {
                FsckError::Refused(format!("directory {}: block {n} is not direct", dir.ino))
            })?;
        let r = alloc(disk, vol, ResourceKind::SmallBlock)?;
        let a = BlockAddr::new(ResourceKind::SmallBlock, r);
        disk.zero(vol.resource_addr(a.kind, a.index), bs)?;
        inode.direct[slot] = a.encode();
        inode.blocks += 1;
        blocks.insert(n, a);
    }
    let at = |lofs: u64| dev_addr(vol, &blocks, lofs).expect("block mapped above");
    let mut h = vec![0u8; DIR_BLOCK];
    h[16] = depth;
    put_u32(&mut h, 20, buckets as u32);
    put_u64(&mut h, 24, entries.len() as u64);
    put_u64(&mut h, 32, seed);
    let mut t = vec![0u8; DIR_BLOCK];
    for i in 0..buckets as usize {
        put_u32(&mut t, 16 + 4 * i, i as u32);
    }
    let mut bk: Vec<Vec<u8>> = (0..buckets)
        .map(|num| {
            let mut b = vec![0u8; DIR_BLOCK];
            b[16] = depth;
            put_u32(&mut b, 24, num as u32);
            b
        })
        .collect();
    let mut fill = vec![ENTRIES_OFF; buckets as usize];
    for e in &entries {
        let i = index(e.key, depth) as usize;
        let (b, o) = (&mut bk[i], fill[i]);
        put_u64(b, o, e.key);
        put_u64(b, o + 8, e.ino);
        b[o + 16] = e.dtype;
        b[o + 17] = e.name.len() as u8;
        b[o + ENTRY_FIXED..o + ENTRY_FIXED + e.name.len()].copy_from_slice(&e.name);
        let c = get_u16(b, 18);
        put_u16(b, 18, c + 1);
        fill[i] += ENTRY_FIXED + e.name.len();
    }
    for (num, mut b) in bk.into_iter().enumerate() {
        let addr = at(BUCKET_OFF + num as u64 * DIR_BLOCK as u64);
        seal(&mut b, BUCKET_MAGIC, addr);
        disk.write(addr, &b)?;
    }
    let taddr = at(TABLE_OFF);
    seal(&mut t, TABLE_MAGIC, taddr);
    disk.write(taddr, &t)?;
    let haddr = at(0);
    seal(&mut h, HEADER_MAGIC, haddr);
    disk.write(haddr, &h)?;
    disk.flush()?;
    if inode != *dir {
        disk.write(inode.addr, &inode.encode())?;
        disk.flush()?;
    }
    Ok(inode)
}

/// Directory-entry type of an inode mode.
pub fn dtype(mode: u32) -> u8 {
    ((mode & libc::S_IFMT) >> 12) as u8
}

/// A fresh inode of `mode` (a lock record FREE at the next generation and a
/// body), its bit set first. Returns it unlinked.
pub fn new_inode(disk: &Disk, vol: &Volume, mode: u32, parent: u64) -> Result<Inode, FsckError> {
    let ino = alloc(disk, vol, ResourceKind::Inode)?;
    let addr = vol.inode_addr(ino);
    let old = disk.read(addr, 4096)?;
    let lock_gen = LockRecord::decode(&old[..SECTOR], addr)
        .map(|l| l.lock_gen + 1)
        .unwrap_or(1);
    let generation = Inode::decode(&old[SECTOR..], addr + SECTOR as u64)
        .map(|i| i.generation + 1)
        .unwrap_or(1);
    let mut rec = LockRecord::free(addr, ino);
    rec.lock_gen = lock_gen;
    rec.write_nonce = rand::random();
    disk.write(addr, &rec.encode())?;
    let mut i = Inode::new(addr + SECTOR as u64, ino, generation, mode);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    (i.atime_ns, i.mtime_ns, i.ctime_ns, i.btime_ns) = (now, now, now, now);
    if mode & libc::S_IFMT == libc::S_IFDIR {
        i.nlink = 2;
        i.parent = parent;
    } else {
        i.nlink = 1;
    }
    disk.write(i.addr, &i.encode())?;
    disk.flush()?;
    Ok(i)
}
