//! Directories: an extendible hash keyed by a 56-bit hash of the name, kept
//! in the directory's data (small blocks), 4 KiB per structure:
//!
//! ```text
//! logical 0                header  "VDIR": global depth, bucket count, entries, hash seed
//! logical 64 KiB + 4 KiB t table block t "VDTB": 1020 u32 bucket numbers
//! logical 2 MiB + 4 KiB b  bucket b "VDBK": local depth, entries sorted by key
//! ```
//!
//! An entry's key is `hash56 << 8 | collision index`: unique in its
//! directory and stable for its lifetime, so it is the readdir cookie. The
//! table is indexed by the top `depth` bits of the key, bit-reversed, so
//! doubling the table only appends (entry i + 2^d copies entry i) and each
//! bucket covers one contiguous key range: readdir walks buckets in key
//! order and resumes at any key, across splits. Byte layouts:
//! `docs/format.md` section 11.

use crate::format::block::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, seal, verify};
use crate::format::BlockAddr;

use super::alloc::Allocator;
use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::Ctx;

/// Bytes of every directory structure.
pub const DIR_BLOCK: usize = 4096;
const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"VDIR");
const TABLE_MAGIC: u32 = u32::from_le_bytes(*b"VDTB");
const BUCKET_MAGIC: u32 = u32::from_le_bytes(*b"VDBK");
const TABLE_OFF: u64 = 64 << 10;
const BUCKET_OFF: u64 = 2 << 20;
const TABLE_PER_BLOCK: u64 = ((DIR_BLOCK - 16) / 4) as u64;
/// Deepest table: 2^18 buckets.
pub const MAX_DEPTH: u8 = 18;
const ENTRIES_OFF: usize = 32;
const ENTRY_FIXED: usize = 18;
/// Highest collision index (keeps key + 5 from overflowing: cookies).
const MAX_COLLISION: u64 = 250;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub key: u64,
    pub ino: u64,
    /// File type: `(st_mode & S_IFMT) >> 12`.
    pub dtype: u8,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    depth: u8,
    buckets: u32,
    entries: u64,
    seed: u64,
}

#[derive(Debug)]
struct Bucket {
    num: u32,
    depth: u8,
    entries: Vec<DirEntry>,
}

impl Bucket {
    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| ENTRY_FIXED + e.name.len())
            .sum()
    }
}

/// 56-bit hash of a name under a directory's seed.
pub fn name_hash(seed: u64, name: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h >> 8
}

/// Table index of `key` at global depth `d`.
fn index(key: u64, d: u8) -> u64 {
    if d == 0 {
        0
    } else {
        key.reverse_bits() & ((1u64 << d) - 1)
    }
}

fn corrupt(map: &FileMap, why: String) -> FsError {
    FsError::Corrupt {
        ino: map.ino(),
        why,
    }
}

/// Device offset of the directory structure at logical `lofs`, if allocated.
fn dev_addr(map: &mut FileMap, ctx: &Ctx, lofs: u64) -> FsResult<Option<u64>> {
    let bs = map.block_size;
    Ok(map
        .get(ctx, lofs / bs)?
        .map(|a: BlockAddr| map.data_addr(ctx, a) + lofs % bs))
}

/// Read the structure at logical `lofs` (staged images first). `None`: a hole.
fn read_block(
    map: &mut FileMap,
    ctx: &Ctx,
    ch: Option<&Change>,
    lofs: u64,
) -> FsResult<Option<(u64, Vec<u8>)>> {
    let Some(addr) = dev_addr(map, ctx, lofs)? else {
        return Ok(None);
    };
    if let Some(img) = ch.and_then(|c| c.get(addr)) {
        return Ok(Some((addr, img.to_vec())));
    }
    let mut b = vec![0u8; DIR_BLOCK];
    crate::dev::BlockDev::read_at(&ctx.dev, &mut b, addr)?;
    Ok(Some((addr, b)))
}

/// Stage a new image of the structure at logical `lofs` (allocating and
/// zeroing a small block if it is a hole). `img` is sealed here.
fn write_block(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    lofs: u64,
    mut img: Vec<u8>,
    magic: u32,
) -> FsResult<()> {
    let bs = map.block_size;
    let addr = match dev_addr(map, ctx, lofs)? {
        Some(a) => a,
        None => {
            let r = alloc.alloc(ch, map.data_kind)?;
            let a = BlockAddr::new(map.data_kind, r);
            let base = map.data_addr(ctx, a);
            crate::dev::BlockDev::write_zeroes(&ctx.dev, base, bs)?;
            // The zeros must not land after the record: a stale structure
            // left in the block would decode at its own address.
            ch.data_written();
            map.inode.blocks += 1;
            map.set(ctx, alloc, ch, lofs / bs, a.encode())?;
            base + lofs % bs
        }
    };
    seal(&mut img, magic, addr);
    let lock = map.lock.ok_or_else(|| FsError::Busy {
        ino: map.ino(),
        why: "changing a directory needs its lock EXCLUSIVE".into(),
    })?;
    ch.put(addr, img, &lock);
    Ok(())
}

/// Decode a directory header block read from `addr`.
fn decode_header(b: &[u8], addr: u64, ino: u64) -> FsResult<Header> {
    verify(b, "directory header", HEADER_MAGIC, addr)?;
    let depth = b[16];
    if depth > MAX_DEPTH {
        return Err(FsError::Corrupt {
            ino,
            why: format!("directory depth {depth} > {MAX_DEPTH}"),
        });
    }
    Ok(Header {
        depth,
        buckets: get_u32(b, 20),
        entries: get_u64(b, 24),
        seed: get_u64(b, 32),
    })
}

fn read_header(map: &mut FileMap, ctx: &Ctx, ch: Option<&Change>) -> FsResult<Option<Header>> {
    let Some((addr, b)) = read_block(map, ctx, ch, 0)? else {
        return Ok(None);
    };
    decode_header(&b, addr, map.ino()).map(Some)
}

fn write_header(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    h: &Header,
) -> FsResult<()> {
    let mut b = vec![0u8; DIR_BLOCK];
    b[16] = h.depth;
    put_u32(&mut b, 20, h.buckets);
    put_u64(&mut b, 24, h.entries);
    put_u64(&mut b, 32, h.seed);
    write_block(map, ctx, alloc, ch, 0, b, HEADER_MAGIC)
}

fn read_table_block(
    map: &mut FileMap,
    ctx: &Ctx,
    ch: Option<&Change>,
    t: u64,
) -> FsResult<Vec<u32>> {
    let lofs = TABLE_OFF + t * DIR_BLOCK as u64;
    let Some((addr, b)) = read_block(map, ctx, ch, lofs)? else {
        return Err(corrupt(
            map,
            format!("directory table block {t} is missing"),
        ));
    };
    verify(&b, "directory table", TABLE_MAGIC, addr)?;
    Ok((0..TABLE_PER_BLOCK as usize)
        .map(|i| get_u32(&b, 16 + 4 * i))
        .collect())
}

fn table_get(
    map: &mut FileMap,
    ctx: &Ctx,
    ch: Option<&Change>,
    h: &Header,
    i: u64,
) -> FsResult<u32> {
    let b = read_table_block(map, ctx, ch, i / TABLE_PER_BLOCK)?[(i % TABLE_PER_BLOCK) as usize];
    if b >= h.buckets {
        return Err(corrupt(
            map,
            format!("table entry {i} names bucket {b} of {}", h.buckets),
        ));
    }
    Ok(b)
}

/// Table edits of one change, staged block by block.
struct TableEdit {
    blocks: std::collections::BTreeMap<u64, Vec<u32>>,
}

impl TableEdit {
    fn new() -> TableEdit {
        TableEdit {
            blocks: Default::default(),
        }
    }

    fn block(
        &mut self,
        map: &mut FileMap,
        ctx: &Ctx,
        ch: &Change,
        t: u64,
        fresh: bool,
    ) -> FsResult<&mut Vec<u32>> {
        match self.blocks.entry(t) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(v) => {
                let b = if fresh {
                    vec![0; TABLE_PER_BLOCK as usize]
                } else {
                    read_table_block(map, ctx, Some(ch), t)?
                };
                Ok(v.insert(b))
            }
        }
    }

    fn get(&mut self, map: &mut FileMap, ctx: &Ctx, ch: &Change, i: u64) -> FsResult<u32> {
        Ok(self.block(map, ctx, ch, i / TABLE_PER_BLOCK, false)?[(i % TABLE_PER_BLOCK) as usize])
    }

    /// Set entry `i`; `fresh_from`: entries at or past it have never been
    /// written (their blocks need not be read).
    fn set(
        &mut self,
        map: &mut FileMap,
        ctx: &Ctx,
        ch: &Change,
        i: u64,
        v: u32,
        fresh_from: u64,
    ) -> FsResult<()> {
        let t = i / TABLE_PER_BLOCK;
        let fresh = t * TABLE_PER_BLOCK >= fresh_from;
        self.block(map, ctx, ch, t, fresh)?[(i % TABLE_PER_BLOCK) as usize] = v;
        Ok(())
    }

    fn stage(
        self,
        map: &mut FileMap,
        ctx: &Ctx,
        alloc: &mut Allocator,
        ch: &mut Change,
    ) -> FsResult<()> {
        for (t, entries) in self.blocks {
            let mut b = vec![0u8; DIR_BLOCK];
            for (i, v) in entries.iter().enumerate() {
                put_u32(&mut b, 16 + 4 * i, *v);
            }
            write_block(
                map,
                ctx,
                alloc,
                ch,
                TABLE_OFF + t * DIR_BLOCK as u64,
                b,
                TABLE_MAGIC,
            )?;
        }
        Ok(())
    }
}

fn read_bucket(map: &mut FileMap, ctx: &Ctx, ch: Option<&Change>, num: u32) -> FsResult<Bucket> {
    let lofs = BUCKET_OFF + u64::from(num) * DIR_BLOCK as u64;
    let Some((addr, b)) = read_block(map, ctx, ch, lofs)? else {
        return Err(corrupt(map, format!("directory bucket {num} is missing")));
    };
    decode_bucket(&b, addr, num, map.ino())
}

/// Decode bucket `num` of directory `ino` read from `addr`.
fn decode_bucket(b: &[u8], addr: u64, num: u32, ino: u64) -> FsResult<Bucket> {
    let bad = |why: String| FsError::Corrupt { ino, why };
    verify(b, "directory bucket", BUCKET_MAGIC, addr)?;
    let depth = b[16];
    let count = get_u16(b, 18) as usize;
    if get_u32(b, 24) != num || depth > MAX_DEPTH {
        return Err(bad(format!(
            "directory bucket at {addr} is not bucket {num}"
        )));
    }
    let mut entries = Vec::with_capacity(count);
    let mut o = ENTRIES_OFF;
    for _ in 0..count {
        if o + ENTRY_FIXED > DIR_BLOCK {
            return Err(bad(format!("directory bucket at {addr} overruns")));
        }
        let len = b[o + 17] as usize;
        if len == 0 || o + ENTRY_FIXED + len > DIR_BLOCK {
            return Err(bad(format!("directory bucket at {addr}: bad entry at {o}")));
        }
        entries.push(DirEntry {
            key: get_u64(b, o),
            ino: get_u64(b, o + 8),
            dtype: b[o + 16],
            name: b[o + ENTRY_FIXED..o + ENTRY_FIXED + len].to_vec(),
        });
        o += ENTRY_FIXED + len;
    }
    if entries.windows(2).any(|w| w[0].key >= w[1].key) {
        return Err(bad(format!("directory bucket at {addr} is not sorted")));
    }
    Ok(Bucket {
        num,
        depth,
        entries,
    })
}

fn write_bucket(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    bk: &Bucket,
) -> FsResult<()> {
    let mut b = vec![0u8; DIR_BLOCK];
    b[16] = bk.depth;
    put_u16(&mut b, 18, bk.entries.len() as u16);
    put_u32(&mut b, 24, bk.num);
    let mut o = ENTRIES_OFF;
    for e in &bk.entries {
        put_u64(&mut b, o, e.key);
        put_u64(&mut b, o + 8, e.ino);
        b[o + 16] = e.dtype;
        b[o + 17] = e.name.len() as u8;
        b[o + ENTRY_FIXED..o + ENTRY_FIXED + e.name.len()].copy_from_slice(&e.name);
        o += ENTRY_FIXED + e.name.len();
    }
    let lofs = BUCKET_OFF + u64::from(bk.num) * DIR_BLOCK as u64;
    write_block(map, ctx, alloc, ch, lofs, b, BUCKET_MAGIC)
}

/// The bucket that holds `key`.
fn bucket_of(
    map: &mut FileMap,
    ctx: &Ctx,
    ch: Option<&Change>,
    h: &Header,
    key: u64,
) -> FsResult<Bucket> {
    let b = table_get(map, ctx, ch, h, index(key, h.depth))?;
    read_bucket(map, ctx, ch, b)
}

/// Find `name`.
pub fn lookup(
    map: &mut FileMap,
    ctx: &Ctx,
    ch: Option<&Change>,
    name: &[u8],
) -> FsResult<Option<DirEntry>> {
    let Some(h) = read_header(map, ctx, ch)? else {
        return Ok(None);
    };
    let hash = name_hash(h.seed, name);
    let bk = bucket_of(map, ctx, ch, &h, hash << 8)?;
    Ok(bk
        .entries
        .into_iter()
        .find(|e| e.key >> 8 == hash && e.name == name))
}

/// Entries in the directory (0 for one never written).
pub fn count(map: &mut FileMap, ctx: &Ctx, ch: Option<&Change>) -> FsResult<u64> {
    Ok(read_header(map, ctx, ch)?.map(|h| h.entries).unwrap_or(0))
}

/// Add an entry (the caller has checked that `name` is absent). Returns its key.
pub fn insert(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    name: &[u8],
    ino: u64,
    dtype: u8,
) -> FsResult<u64> {
    let mut h = match read_header(map, ctx, Some(ch))? {
        Some(h) => h,
        None => {
            let h = Header {
                depth: 0,
                buckets: 1,
                entries: 0,
                seed: rand::random(),
            };
            let mut t = TableEdit::new();
            t.set(map, ctx, ch, 0, 0, 0)?;
            t.stage(map, ctx, alloc, ch)?;
            let empty = Bucket {
                num: 0,
                depth: 0,
                entries: Vec::new(),
            };
            write_bucket(map, ctx, alloc, ch, &empty)?;
            h
        }
    };
    let hash = name_hash(h.seed, name);
    let need = ENTRY_FIXED + name.len();
    loop {
        let idx = index(hash << 8, h.depth);
        let mut t = TableEdit::new();
        let num = t.get(map, ctx, ch, idx)?;
        let mut bk = read_bucket(map, ctx, Some(ch), num)?;
        if ENTRIES_OFF + bk.bytes() + need <= DIR_BLOCK {
            let used: Vec<u64> = bk
                .entries
                .iter()
                .filter(|e| e.key >> 8 == hash)
                .map(|e| e.key & 0xff)
                .collect();
            let ci = (0..=MAX_COLLISION)
                .find(|c| !used.contains(c))
                .ok_or_else(|| {
                    FsError::NoSpace(format!(
                        "directory inode {}: too many names share one hash",
                        map.ino()
                    ))
                })?;
            let key = hash << 8 | ci;
            let pos = bk.entries.partition_point(|e| e.key < key);
            bk.entries.insert(
                pos,
                DirEntry {
                    key,
                    ino,
                    dtype,
                    name: name.to_vec(),
                },
            );
            write_bucket(map, ctx, alloc, ch, &bk)?;
            h.entries += 1;
            write_header(map, ctx, alloc, ch, &h)?;
            return Ok(key);
        }
        // Split the full bucket (doubling the table first if needed).
        if bk.depth == h.depth {
            if h.depth == MAX_DEPTH {
                return Err(FsError::NoSpace(format!(
                    "directory inode {} is full (hash table at its maximum depth)",
                    map.ino()
                )));
            }
            let n = 1u64 << h.depth;
            for i in 0..n {
                let v = t.get(map, ctx, ch, i)?;
                t.set(map, ctx, ch, i + n, v, n)?;
            }
            h.depth += 1;
        }
        let l = bk.depth;
        let bit = 63 - u32::from(l);
        let new_num = h.buckets;
        h.buckets += 1;
        let (stay, go): (Vec<_>, Vec<_>) = std::mem::take(&mut bk.entries)
            .into_iter()
            .partition(|e| (e.key >> bit) & 1 == 0);
        bk.entries = stay;
        bk.depth = l + 1;
        let nb = Bucket {
            num: new_num,
            depth: l + 1,
            entries: go,
        };
        let pattern = idx & ((1u64 << l) - 1);
        let mut j = pattern | (1u64 << l);
        while j < (1u64 << h.depth) {
            t.set(map, ctx, ch, j, new_num, u64::MAX)?;
            j += 1u64 << (l + 1);
        }
        t.stage(map, ctx, alloc, ch)?;
        write_bucket(map, ctx, alloc, ch, &bk)?;
        write_bucket(map, ctx, alloc, ch, &nb)?;
        write_header(map, ctx, alloc, ch, &h)?;
    }
}

/// Remove `name`; returns the entry removed.
pub fn remove(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    name: &[u8],
) -> FsResult<DirEntry> {
    let missing = || FsError::NotFound(String::from_utf8_lossy(name).into_owned());
    let mut h = read_header(map, ctx, Some(ch))?.ok_or_else(missing)?;
    let hash = name_hash(h.seed, name);
    let mut bk = bucket_of(map, ctx, Some(ch), &h, hash << 8)?;
    let pos = bk
        .entries
        .iter()
        .position(|e| e.key >> 8 == hash && e.name == name)
        .ok_or_else(missing)?;
    let e = bk.entries.remove(pos);
    write_bucket(map, ctx, alloc, ch, &bk)?;
    h.entries = h.entries.saturating_sub(1);
    write_header(map, ctx, alloc, ch, &h)?;
    Ok(e)
}

/// Change the inode an existing entry points at (rename over a name).
pub fn replace(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    name: &[u8],
    ino: u64,
    dtype: u8,
) -> FsResult<DirEntry> {
    let missing = || FsError::NotFound(String::from_utf8_lossy(name).into_owned());
    let h = read_header(map, ctx, Some(ch))?.ok_or_else(missing)?;
    let hash = name_hash(h.seed, name);
    let mut bk = bucket_of(map, ctx, Some(ch), &h, hash << 8)?;
    let e = bk
        .entries
        .iter_mut()
        .find(|e| e.key >> 8 == hash && e.name == name)
        .ok_or_else(missing)?;
    let old = e.clone();
    e.ino = ino;
    e.dtype = dtype;
    write_bucket(map, ctx, alloc, ch, &bk)?;
    Ok(old)
}

/// Up to `max` entries with key >= `from`, in key order.
pub fn list(map: &mut FileMap, ctx: &Ctx, from: u64, max: usize) -> FsResult<Vec<DirEntry>> {
    let mut out = Vec::new();
    let Some(h) = read_header(map, ctx, None)? else {
        return Ok(out);
    };
    let mut s = from;
    loop {
        let bk = bucket_of(map, ctx, None, &h, s)?;
        if bk.depth > h.depth {
            return Err(corrupt(
                map,
                format!("bucket {} deeper than its table", bk.num),
            ));
        }
        for e in bk.entries.into_iter().filter(|e| e.key >= s) {
            if out.len() >= max {
                return Ok(out);
            }
            out.push(e);
        }
        let shift = 64 - u32::from(bk.depth);
        let end: u128 = ((u128::from(s) >> shift) + 1) << shift;
        if end > u128::from(u64::MAX) {
            return Ok(out);
        }
        s = end as u64;
    }
}

/// A directory's contents for the consistency walker: reads the structures
/// through `block_of` (logical offset -> device offset, `None` for a hole).
pub fn walk_entries(
    dev: &dyn crate::dev::BlockDev,
    ino: u64,
    block_of: impl Fn(u64) -> Option<u64>,
) -> FsResult<(u64, Vec<DirEntry>)> {
    let read = |lofs: u64| -> FsResult<Option<(u64, Vec<u8>)>> {
        let Some(addr) = block_of(lofs) else {
            return Ok(None);
        };
        let mut b = vec![0u8; DIR_BLOCK];
        dev.read_at(&mut b, addr)?;
        Ok(Some((addr, b)))
    };
    let Some((addr, b)) = read(0)? else {
        return Ok((0, Vec::new()));
    };
    let h = decode_header(&b, addr, ino)?;
    let mut out = Vec::new();
    for num in 0..h.buckets {
        let lofs = BUCKET_OFF + u64::from(num) * DIR_BLOCK as u64;
        let (addr, b) = read(lofs)?.ok_or_else(|| FsError::Corrupt {
            ino,
            why: format!("directory bucket {num} is missing"),
        })?;
        out.extend(decode_bucket(&b, addr, num, ino)?.entries);
    }
    Ok((h.entries, out))
}
