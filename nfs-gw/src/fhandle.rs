//! NFSv3 file handles.
//!
//! Layout (32 bytes, big-endian):
//!
//! | bytes  | field                                             |
//! |--------|---------------------------------------------------|
//! | 0..4   | magic `"VMFH"`                                    |
//! | 4      | layout version (1)                                |
//! | 5..8   | reserved, zero                                    |
//! | 8..16  | export id (FNV-1a 64 of the export name)          |
//! | 16..24 | inode number                                      |
//! | 24..32 | generation                                        |
//!
//! Handles carry no MAC: like knfsd's, they are not secret (AUTH_SYS trusts
//! the client anyway), but they are validated strictly: any other length,
//! magic, version or non-zero reserved byte is BADHANDLE; an unknown export
//! id is STALE (the export is gone); a known export with a dead (ino, gen)
//! is STALE from the backend. The export id is derived from the export
//! *name*, so handles survive restarts and reordering of the configuration.

use crate::backend::FileId;

pub const FH_LEN: usize = 32;
/// Largest handle a client may send (NFS3_FHSIZE).
pub const FH_MAX: u32 = 64;
const MAGIC: &[u8; 4] = b"VMFH";
const VERSION: u8 = 1;

/// A decoded handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    pub export_id: u64,
    pub id: FileId,
}

/// The export id of an export name (FNV-1a 64).
pub fn export_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Handle {
    pub fn encode(&self) -> [u8; FH_LEN] {
        let mut b = [0u8; FH_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[8..16].copy_from_slice(&self.export_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.id.ino.to_be_bytes());
        b[24..32].copy_from_slice(&self.id.gen.to_be_bytes());
        b
    }

    /// Parses a handle; `None` means BADHANDLE.
    pub fn decode(b: &[u8]) -> Option<Handle> {
        if b.len() != FH_LEN || &b[0..4] != MAGIC || b[4] != VERSION || b[5..8] != [0, 0, 0] {
            return None;
        }
        let u = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[r]);
            u64::from_be_bytes(a)
        };
        Some(Handle {
            export_id: u(8..16),
            id: FileId {
                ino: u(16..24),
                gen: u(24..32),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h = Handle {
            export_id: export_id("/vol"),
            id: FileId { ino: 42, gen: 7 },
        };
        let b = h.encode();
        assert_eq!(Handle::decode(&b), Some(h));
        assert_eq!(Handle::decode(&b[..31]), None);
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Handle::decode(&bad), None);
        let mut bad = b;
        bad[6] = 1;
        assert_eq!(Handle::decode(&bad), None);
        let mut bad = b;
        bad[4] = 2;
        assert_eq!(Handle::decode(&bad), None);
        assert_ne!(export_id("/a"), export_id("/b"));
    }
}
