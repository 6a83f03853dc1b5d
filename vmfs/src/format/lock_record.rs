//! Lock record: one 512-byte sector just before the metadata it protects.
//! Changed only by compare-and-write of the whole sector.
//!
//! ```text
//! offset size field
//!      0   16 envelope (magic "VLCK" = 0x4B434C56, crc32, self_addr)
//!     16    8 lock_gen      u64: bumped on every change; CAS version and fencing token
//!     24    1 mode          u8: 0 FREE, 1 EXCLUSIVE, 2 SHARED_READ, 3 MULTI_WRITER
//!     25    1 flags         u8: bit 0 TRANSFER (hand-off in progress)
//!     26    2 holder_count  u16: entries used in `holders` (0..=32)
//!     28    4 reserved      zero
//!     32    8 write_nonce   u64: random per image written; tells whether *our* CAS landed
//!     40    8 resource      u64: what this lock protects (inode number, cluster number), informative
//!     48   64 lvb           lock value block (holder-defined, e.g. cached size)
//!    112    2 xfer_slot     u16: TRANSFER destination heartbeat slot
//!    114    6 reserved      zero
//!    120    8 xfer_hb_gen   u64: TRANSFER destination hb_gen
//!    128  384 holders       32 x { slot u16, reserved u16, hb_gen u64 } (12 bytes each)
//! ```
//!
//! Invariants: FREE has no holders; EXCLUSIVE exactly one; SHARED_READ and
//! MULTI_WRITER one or more; TRANSFER only with EXCLUSIVE. A record that fails
//! its envelope check is never FREE (decode returns an error).

use super::block::{get_u16, get_u64, put_u16, put_u64, seal, verify_sized};
use super::{FormatError, SECTOR};

/// Magic of a lock record ("VLCK").
pub const LOCK_MAGIC: u32 = u32::from_le_bytes(*b"VLCK");
/// Most holders one record can name (SHARED_READ / MULTI_WRITER).
pub const MAX_HOLDERS: usize = 32;
/// Size of the lock value block.
pub const LVB_LEN: usize = 64;

const KIND: &str = "lock record";
const HOLDERS_OFF: usize = 128;
const HOLDER_LEN: usize = 12;

/// Lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum LockMode {
    Free,
    Exclusive,
    SharedRead,
    MultiWriter,
}

impl LockMode {
    fn to_u8(self) -> u8 {
        match self {
            LockMode::Free => 0,
            LockMode::Exclusive => 1,
            LockMode::SharedRead => 2,
            LockMode::MultiWriter => 3,
        }
    }

    fn from_u8(v: u8, addr: u64) -> Result<Self, FormatError> {
        Ok(match v {
            0 => LockMode::Free,
            1 => LockMode::Exclusive,
            2 => LockMode::SharedRead,
            3 => LockMode::MultiWriter,
            _ => {
                return Err(FormatError::BadField {
                    kind: KIND,
                    addr,
                    field: "mode",
                    why: format!("unknown lock mode {v}"),
                })
            }
        })
    }
}

/// A holder of a lock: a heartbeat slot under one heartbeat generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Holder {
    pub slot: u16,
    pub hb_gen: u64,
}

/// Decoded lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// Byte offset of this record on the device.
    pub addr: u64,
    pub lock_gen: u64,
    pub mode: LockMode,
    /// Set while a TRANSFER hand-off to `transfer_to` is in progress.
    pub transfer_to: Option<Holder>,
    pub write_nonce: u64,
    pub resource: u64,
    pub lvb: [u8; LVB_LEN],
    pub holders: Vec<Holder>,
}

impl LockRecord {
    /// The image mkfs writes: FREE, generation 0, no holders.
    pub fn free(addr: u64, resource: u64) -> Self {
        LockRecord {
            addr,
            lock_gen: 0,
            mode: LockMode::Free,
            transfer_to: None,
            write_nonce: 0,
            resource,
            lvb: [0; LVB_LEN],
            holders: Vec::new(),
        }
    }

    /// Encode into one sector. Panics only on a caller bug (more than
    /// [`MAX_HOLDERS`] holders), which [`LockRecord::validate`] reports.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        put_u64(&mut b, 16, self.lock_gen);
        b[24] = self.mode.to_u8();
        b[25] = u8::from(self.transfer_to.is_some());
        put_u16(&mut b, 26, self.holders.len() as u16);
        put_u64(&mut b, 32, self.write_nonce);
        put_u64(&mut b, 40, self.resource);
        b[48..48 + LVB_LEN].copy_from_slice(&self.lvb);
        if let Some(t) = self.transfer_to {
            put_u16(&mut b, 112, t.slot);
            put_u64(&mut b, 120, t.hb_gen);
        }
        assert!(
            self.holders.len() <= MAX_HOLDERS,
            "lock record holder overflow"
        );
        for (i, h) in self.holders.iter().enumerate() {
            let o = HOLDERS_OFF + i * HOLDER_LEN;
            put_u16(&mut b, o, h.slot);
            put_u64(&mut b, o + 4, h.hb_gen);
        }
        seal(&mut b, LOCK_MAGIC, self.addr);
        b
    }

    /// Decode and validate a sector read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<Self, FormatError> {
        verify_sized(b, SECTOR, KIND, LOCK_MAGIC, addr)?;
        let mode = LockMode::from_u8(b[24], addr)?;
        let flags = b[25];
        if flags & !1 != 0 {
            return Err(bad(
                addr,
                "flags",
                format!("unknown flag bits {flags:#04x}"),
            ));
        }
        let count = usize::from(get_u16(b, 26));
        if count > MAX_HOLDERS {
            return Err(bad(
                addr,
                "holder_count",
                format!("{count} > {MAX_HOLDERS}"),
            ));
        }
        let holders = (0..count)
            .map(|i| {
                let o = HOLDERS_OFF + i * HOLDER_LEN;
                Holder {
                    slot: get_u16(b, o),
                    hb_gen: get_u64(b, o + 4),
                }
            })
            .collect();
        let transfer_to = (flags & 1 != 0).then(|| Holder {
            slot: get_u16(b, 112),
            hb_gen: get_u64(b, 120),
        });
        let mut lvb = [0u8; LVB_LEN];
        lvb.copy_from_slice(&b[48..48 + LVB_LEN]);
        let rec = LockRecord {
            addr,
            lock_gen: get_u64(b, 16),
            mode,
            transfer_to,
            write_nonce: get_u64(b, 32),
            resource: get_u64(b, 40),
            lvb,
            holders,
        };
        rec.validate()?;
        Ok(rec)
    }

    /// Check the mode/holder invariants.
    pub fn validate(&self) -> Result<(), FormatError> {
        let n = self.holders.len();
        let ok = match self.mode {
            LockMode::Free => n == 0,
            LockMode::Exclusive => n == 1,
            LockMode::SharedRead | LockMode::MultiWriter => (1..=MAX_HOLDERS).contains(&n),
        };
        if !ok {
            return Err(bad(
                self.addr,
                "holders",
                format!("{n} holders in mode {:?}", self.mode),
            ));
        }
        if self.transfer_to.is_some() && self.mode != LockMode::Exclusive {
            return Err(bad(
                self.addr,
                "flags",
                format!("TRANSFER set in mode {:?}", self.mode),
            ));
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
    use proptest::prelude::*;

    fn holder() -> impl Strategy<Value = Holder> {
        (any::<u16>(), any::<u64>()).prop_map(|(slot, hb_gen)| Holder { slot, hb_gen })
    }

    fn record() -> impl Strategy<Value = LockRecord> {
        let addr = (0u64..1 << 40).prop_map(|a| a * 512);
        (
            addr,
            any::<u64>(),
            0u8..4,
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(holder(), 1..=MAX_HOLDERS),
            prop::option::of(holder()),
            any::<[u8; 32]>(),
        )
            .prop_map(|(addr, gen, mode, nonce, res, mut holders, xfer, lvb32)| {
                let mode = LockMode::from_u8(mode, 0).unwrap();
                match mode {
                    LockMode::Free => holders.clear(),
                    LockMode::Exclusive => holders.truncate(1),
                    _ => {}
                }
                let mut lvb = [0u8; LVB_LEN];
                lvb[..32].copy_from_slice(&lvb32);
                LockRecord {
                    addr,
                    lock_gen: gen,
                    mode,
                    transfer_to: if mode == LockMode::Exclusive {
                        xfer
                    } else {
                        None
                    },
                    write_nonce: nonce,
                    resource: res,
                    lvb,
                    holders,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(rec in record()) {
            let b = rec.encode();
            prop_assert_eq!(LockRecord::decode(&b, rec.addr).unwrap(), rec);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), addr in any::<u64>()) {
            let _ = LockRecord::decode(&bytes, addr);
        }

        #[test]
        fn any_bit_flip_is_detected(rec in record(), bit in 0usize..SECTOR * 8) {
            let mut b = rec.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(LockRecord::decode(&b, rec.addr).is_err());
        }
    }

    #[test]
    fn zeroed_sector_is_not_free() {
        assert!(LockRecord::decode(&[0u8; SECTOR], 0).is_err());
    }
}
