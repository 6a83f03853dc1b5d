//! The envelope every metadata block shares: magic, CRC, self address.
//!
//! ```text
//! offset  size  field
//!      0     4  magic      (u32 LE, one per structure kind)
//!      4     4  crc32      (IEEE CRC-32 of the whole block with this field zeroed)
//!      8     8  self_addr  (u64 LE, byte offset of this block on the device)
//!     16     -  payload    (structure-specific)
//! ```
//!
//! The self address catches misdirected writes and reads (a block that landed
//! at the wrong place decodes as an error, never as valid metadata). A block
//! whose magic, CRC or address is wrong is never interpreted — in particular
//! never as FREE.

use super::FormatError;

/// Size of the envelope at the start of every metadata block.
pub const ENVELOPE_LEN: usize = 16;

/// Fill in magic, self address and CRC of `block` (payload already written).
pub fn seal(block: &mut [u8], magic: u32, self_addr: u64) {
    block[0..4].copy_from_slice(&magic.to_le_bytes());
    block[4..8].fill(0);
    block[8..16].copy_from_slice(&self_addr.to_le_bytes());
    let crc = crc32fast::hash(block);
    block[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Check the envelope of `block` read from `addr`, expecting `magic`.
pub fn verify(block: &[u8], kind: &'static str, magic: u32, addr: u64) -> Result<(), FormatError> {
    if block.len() < ENVELOPE_LEN {
        return Err(FormatError::Truncated {
            kind,
            addr,
            len: block.len(),
        });
    }
    let found_magic = get_u32(block, 0);
    if found_magic != magic {
        return Err(FormatError::BadMagic {
            kind,
            addr,
            found: found_magic,
            expected: magic,
        });
    }
    let stored = get_u32(block, 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&block[0..4]);
    hasher.update(&[0u8; 4]);
    hasher.update(&block[8..]);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(FormatError::BadChecksum {
            kind,
            addr,
            stored,
            computed,
        });
    }
    let self_addr = get_u64(block, 8);
    if self_addr != addr {
        return Err(FormatError::Misdirected {
            kind,
            addr,
            self_addr,
        });
    }
    Ok(())
}

/// [`verify`] a block that must be exactly `len` bytes (the fixed-size
/// structures: header, slot, lock record, cluster header, inode body).
pub fn verify_sized(
    block: &[u8],
    len: usize,
    kind: &'static str,
    magic: u32,
    addr: u64,
) -> Result<(), FormatError> {
    if block.len() != len {
        return Err(FormatError::Truncated {
            kind,
            addr,
            len: block.len(),
        });
    }
    verify(block, kind, magic, addr)
}

/// True if every byte is zero (a region never written since mkfs).
pub fn is_zeroed(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Little-endian field readers/writers. Callers pass in-bounds offsets of
/// fixed layouts; the envelope length has been checked by `verify`.
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_verify() {
        let mut b = vec![7u8; 512];
        seal(&mut b, 0x1234_5678, 4096);
        verify(&b, "test", 0x1234_5678, 4096).unwrap();
        assert!(matches!(
            verify(&b, "test", 0x1234_5678, 8192),
            Err(FormatError::Misdirected { .. })
        ));
        b[100] ^= 1;
        assert!(matches!(
            verify(&b, "test", 0x1234_5678, 4096),
            Err(FormatError::BadChecksum { .. })
        ));
        assert!(matches!(
            verify(&[0u8; 512], "test", 0x1234_5678, 0),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            verify(&[0u8; 3], "test", 0x1234_5678, 0),
            Err(FormatError::Truncated { .. })
        ));
    }
}
