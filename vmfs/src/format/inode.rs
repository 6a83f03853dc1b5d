//! Inode: 4 KiB = `[lock record 512 B][inode body 3584 B]`. The body is
//! meaningful only while the inode's bit is set in its cluster bitmap; the
//! allocator writes it when it allocates the inode.
//!
//! ```text
//! inode body (at inode offset + 512)
//! offset size field
//!      0   16 envelope (magic "VINO", crc32, self_addr)
//!     16    8 ino            u64: inode number (must match the position)
//!     24    8 generation     u64: bumped each time the number is reused
//!     32    4 mode           u32: POSIX st_mode (type and permission bits)
//!     36    4 uid            u32
//!     40    4 gid            u32
//!     44    4 nlink          u32
//!     48    8 size           u64: bytes
//!     56    8 blocks         u64: resources held (data + pointer blocks)
//!     64    8 atime_ns       i64 (ns since the epoch)
//!     72    8 mtime_ns       i64
//!     80    8 ctime_ns       i64
//!     88    8 btime_ns       i64 (creation)
//!     96    4 flags          u32: bit 0 INLINE (data lives in the inline area),
//!                             bit 1 SMALL_BLOCKS (regular file whose map
//!                             addresses small blocks, all below one file block)
//!    100    4 inline_len     u32: bytes used in the inline area
//!    104    8 parent         u64: directories: parent inode (".."); files: 0
//!    112    8 xattr          u64: block address of the xattr block, 0 = none
//!    120    8 orphans        u64: root only: block address of the orphan table, 0 = none
//!    128  512 direct[64]     u64 block addresses (0 = hole)
//!    640    8 indirect       u64: pointer block of the next 8188 blocks
//!    648    8 double         u64: pointer block of pointer blocks
//!    656 2928 inline         inline data (INLINE) — zero otherwise
//! ```

use super::block::{get_u32, get_u64, put_u32, put_u64, seal, verify_sized};
use super::{FormatError, SECTOR};

/// Magic of an inode body ("VINO").
pub const INODE_MAGIC: u32 = u32::from_le_bytes(*b"VINO");
/// Bytes of an inode (lock record + body).
pub const INODE_SIZE: u64 = 4096;
/// Bytes of the body.
pub const INODE_BODY_LEN: usize = INODE_SIZE as usize - SECTOR;
/// Direct block addresses in an inode.
pub const DIRECT: usize = 64;
/// Inline data capacity.
pub const INLINE_CAP: usize = INODE_BODY_LEN - 656;
/// Flag: data is inline.
pub const FLAG_INLINE: u32 = 1;
/// Flag: a regular file whose block map addresses small blocks (every one
/// of them below the small-file limit, one file block); without it a
/// regular file's map addresses file blocks.
pub const FLAG_SMALL_BLOCKS: u32 = 2;
/// Every inode flag this build knows.
pub const KNOWN_FLAGS: u32 = FLAG_INLINE | FLAG_SMALL_BLOCKS;
/// `S_IFMT` and `S_IFREG` (the format does not depend on libc).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

const KIND: &str = "inode";

/// Decoded inode body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Byte offset of the body (inode offset + 512).
    pub addr: u64,
    pub ino: u64,
    pub generation: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub btime_ns: i64,
    pub flags: u32,
    pub parent: u64,
    pub xattr: u64,
    /// Root directory only: the orphan table's block address (0: none).
    pub orphans: u64,
    pub direct: [u64; DIRECT],
    pub indirect: u64,
    pub double: u64,
    pub inline: Vec<u8>,
}

impl Inode {
    /// A fresh inode body at `addr` with everything zero but the identity.
    pub fn new(addr: u64, ino: u64, generation: u64, mode: u32) -> Inode {
        Inode {
            addr,
            ino,
            generation,
            mode,
            uid: 0,
            gid: 0,
            nlink: 0,
            size: 0,
            blocks: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            btime_ns: 0,
            flags: 0,
            parent: 0,
            xattr: 0,
            orphans: 0,
            direct: [0; DIRECT],
            indirect: 0,
            double: 0,
            inline: Vec::new(),
        }
    }

    /// Encode to the 3584-byte body. Inline data beyond [`INLINE_CAP`] is a
    /// caller bug reported by [`Inode::validate`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; INODE_BODY_LEN];
        put_u64(&mut b, 16, self.ino);
        put_u64(&mut b, 24, self.generation);
        put_u32(&mut b, 32, self.mode);
        put_u32(&mut b, 36, self.uid);
        put_u32(&mut b, 40, self.gid);
        put_u32(&mut b, 44, self.nlink);
        put_u64(&mut b, 48, self.size);
        put_u64(&mut b, 56, self.blocks);
        put_u64(&mut b, 64, self.atime_ns as u64);
        put_u64(&mut b, 72, self.mtime_ns as u64);
        put_u64(&mut b, 80, self.ctime_ns as u64);
        put_u64(&mut b, 88, self.btime_ns as u64);
        put_u32(&mut b, 96, self.flags);
        let n = self.inline.len().min(INLINE_CAP);
        put_u32(&mut b, 100, n as u32);
        put_u64(&mut b, 104, self.parent);
        put_u64(&mut b, 112, self.xattr);
        put_u64(&mut b, 120, self.orphans);
        for (i, a) in self.direct.iter().enumerate() {
            put_u64(&mut b, 128 + i * 8, *a);
        }
        put_u64(&mut b, 640, self.indirect);
        put_u64(&mut b, 648, self.double);
        b[656..656 + n].copy_from_slice(&self.inline[..n]);
        seal(&mut b, INODE_MAGIC, self.addr);
        b
    }

    /// Decode and validate a body read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<Inode, FormatError> {
        verify_sized(b, INODE_BODY_LEN, KIND, INODE_MAGIC, addr)?;
        let inline_len = get_u32(b, 100) as usize;
        if inline_len > INLINE_CAP {
            return Err(bad(
                addr,
                "inline_len",
                format!("{inline_len} > {INLINE_CAP}"),
            ));
        }
        let mut direct = [0u64; DIRECT];
        for (i, a) in direct.iter_mut().enumerate() {
            *a = get_u64(b, 128 + i * 8);
        }
        let ino = Inode {
            addr,
            ino: get_u64(b, 16),
            generation: get_u64(b, 24),
            mode: get_u32(b, 32),
            uid: get_u32(b, 36),
            gid: get_u32(b, 40),
            nlink: get_u32(b, 44),
            size: get_u64(b, 48),
            blocks: get_u64(b, 56),
            atime_ns: get_u64(b, 64) as i64,
            mtime_ns: get_u64(b, 72) as i64,
            ctime_ns: get_u64(b, 80) as i64,
            btime_ns: get_u64(b, 88) as i64,
            flags: get_u32(b, 96),
            parent: get_u64(b, 104),
            xattr: get_u64(b, 112),
            orphans: get_u64(b, 120),
            direct,
            indirect: get_u64(b, 640),
            double: get_u64(b, 648),
            inline: b[656..656 + inline_len].to_vec(),
        };
        ino.validate()?;
        Ok(ino)
    }

    /// Field checks that need no other block.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(bad(
                self.addr,
                "flags",
                format!("unknown flags {:#x}", self.flags),
            ));
        }
        if self.flags & FLAG_SMALL_BLOCKS != 0
            && (self.flags & FLAG_INLINE != 0 || self.mode & S_IFMT != S_IFREG)
        {
            return Err(bad(
                self.addr,
                "flags",
                format!(
                    "SMALL_BLOCKS on an inode of mode {:#o} with flags {:#x} (only regular files with a block map)",
                    self.mode, self.flags
                ),
            ));
        }
        if self.inline.len() > INLINE_CAP {
            return Err(bad(
                self.addr,
                "inline",
                format!("{} bytes > {INLINE_CAP}", self.inline.len()),
            ));
        }
        let map_used =
            self.direct.iter().any(|&a| a != 0) || self.indirect != 0 || self.double != 0;
        if self.flags & FLAG_INLINE != 0 && map_used {
            return Err(bad(
                self.addr,
                "flags",
                "inline inode also has a block map".into(),
            ));
        }
        if self.flags & FLAG_INLINE == 0 && !self.inline.is_empty() {
            return Err(bad(
                self.addr,
                "inline_len",
                "inline bytes without the INLINE flag".into(),
            ));
        }
        use super::addr::{BlockAddr, ResourceKind};
        for (i, &a) in self.direct.iter().enumerate() {
            if let Some(b) = BlockAddr::decode(a).map_err(|why| bad(self.addr, "block map", why))? {
                if b.kind == ResourceKind::PointerBlock {
                    return Err(bad(
                        self.addr,
                        "direct",
                        format!("direct[{i}] names a pointer block"),
                    ));
                }
            }
        }
        for (field, a) in [("indirect", self.indirect), ("double", self.double)] {
            if let Some(b) = BlockAddr::decode(a).map_err(|why| bad(self.addr, "block map", why))? {
                if b.kind != ResourceKind::PointerBlock {
                    return Err(bad(
                        self.addr,
                        field,
                        "does not name a pointer block".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn bad(addr: u64, field: &'static str, why: String) -> FormatError {
    FormatError::BadField {
        kind: KIND,
        addr,
        field,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::addr::{BlockAddr, ResourceKind};
    use proptest::prelude::*;

    fn inode() -> impl Strategy<Value = Inode> {
        (
            any::<[u64; 4]>(),
            any::<[u32; 4]>(),
            any::<[i64; 4]>(),
            prop::collection::vec(0u64..1 << 40, DIRECT),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..INLINE_CAP)),
        )
            .prop_map(|(w, m, t, map, inline)| {
                let mut ino = Inode::new(4096 * (w[0] % 1000 + 1) + 512, w[1], w[2], m[0]);
                ino.uid = m[1];
                ino.gid = m[2];
                ino.nlink = m[3];
                ino.size = w[3];
                ino.atime_ns = t[0];
                ino.mtime_ns = t[1];
                ino.ctime_ns = t[2];
                ino.btime_ns = t[3];
                match inline {
                    Some(data) => {
                        ino.flags = FLAG_INLINE;
                        ino.inline = data;
                    }
                    None => {
                        for (i, idx) in map.into_iter().enumerate() {
                            if idx % 3 != 0 {
                                ino.direct[i] =
                                    BlockAddr::new(ResourceKind::FileBlock, idx).encode();
                            }
                        }
                        ino.indirect = BlockAddr::new(ResourceKind::PointerBlock, 7).encode();
                    }
                }
                ino
            })
    }

    #[test]
    fn small_blocks_flag_only_on_regular_files_with_a_map() {
        let mut f = Inode::new(4096 + 512, 1, 1, S_IFREG | 0o644);
        f.flags = FLAG_SMALL_BLOCKS;
        f.direct[0] = BlockAddr::new(ResourceKind::SmallBlock, 3).encode();
        assert_eq!(Inode::decode(&f.encode(), f.addr).unwrap(), f);
        let mut d = f.clone();
        d.mode = 0o040_755;
        let e = Inode::decode(&d.encode(), d.addr).unwrap_err().to_string();
        assert!(e.contains("SMALL_BLOCKS"), "{e}");
        let mut i = Inode::new(4096 + 512, 1, 1, S_IFREG | 0o644);
        i.flags = FLAG_SMALL_BLOCKS | FLAG_INLINE;
        i.inline = b"x".to_vec();
        assert!(Inode::decode(&i.encode(), i.addr).is_err());
        let mut u = Inode::new(4096 + 512, 1, 1, S_IFREG | 0o644);
        u.flags = 4;
        let e = Inode::decode(&u.encode(), u.addr).unwrap_err().to_string();
        assert!(e.contains("unknown flags 0x4"), "{e}");
    }

    proptest! {
        #[test]
        fn round_trip(ino in inode()) {
            prop_assert_eq!(Inode::decode(&ino.encode(), ino.addr).unwrap(), ino);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), INODE_BODY_LEN..=INODE_BODY_LEN), addr in any::<u64>()) {
            let _ = Inode::decode(&bytes, addr);
        }

        #[test]
        fn bit_flips_are_detected(ino in inode(), bit in 0usize..INODE_BODY_LEN * 8) {
            let mut b = ino.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Inode::decode(&b, ino.addr).is_err());
        }
    }
}
