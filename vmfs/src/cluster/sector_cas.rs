//! Compare-and-write of one sector with `Indeterminate` resolved by
//! re-reading: every image we write carries a fresh random write nonce, so
//! finding our exact new image on disk proves our write landed.

use crate::dev::{BlockDev, CasOutcome};
use crate::format::SECTOR;

use super::ClusterError;

/// Result of a resolved compare-and-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectorCas {
    /// Our image is on disk.
    Won,
    /// Someone else's image is there (carried).
    Lost(Vec<u8>),
}

const MAX_TRIES: u32 = 16;

/// CAS `expected` → `new` at `addr`, resolving lost responses.
pub fn cas_sector(
    dev: &dyn BlockDev,
    addr: u64,
    expected: &[u8; SECTOR],
    new: &[u8; SECTOR],
) -> Result<SectorCas, ClusterError> {
    for _ in 0..MAX_TRIES {
        match dev.compare_and_write(addr, expected, new)? {
            CasOutcome::Done => return Ok(SectorCas::Won),
            CasOutcome::Miscompare(cur) => {
                // A previous indeterminate attempt may have landed.
                if cur == new {
                    return Ok(SectorCas::Won);
                }
                return Ok(SectorCas::Lost(cur));
            }
            CasOutcome::Indeterminate => {
                let mut cur = [0u8; SECTOR];
                dev.read_at(&mut cur, addr)?;
                if cur == *new {
                    return Ok(SectorCas::Won);
                }
                if cur != *expected {
                    return Ok(SectorCas::Lost(cur.to_vec()));
                }
                // Unchanged: our write did not land (yet); try again. If it
                // lands later, the retry miscompares against our own image
                // and is resolved above.
            }
        }
    }
    Err(ClusterError::Indeterminate {
        addr,
        tries: MAX_TRIES,
    })
}

/// Read one sector.
pub fn read_sector(dev: &dyn BlockDev, addr: u64) -> Result<[u8; SECTOR], ClusterError> {
    let mut b = [0u8; SECTOR];
    dev.read_at(&mut b, addr)?;
    Ok(b)
}

/// A random nonce that is never zero (zero marks mkfs images).
pub fn nonce() -> u64 {
    loop {
        let n = rand::random::<u64>();
        if n != 0 {
            return n;
        }
    }
}
