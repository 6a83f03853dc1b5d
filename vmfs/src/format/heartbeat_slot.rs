//! Heartbeat slot: one 512-byte sector per host in the heartbeat region.
//! Written only by compare-and-write of the whole sector.
//!
//! ```text
//! offset size field
//!      0   16 envelope (magic "VHBT" = 0x54424856, crc32, self_addr)
//!     16    1 state           u8: 0 FREE, 1 LIVE, 2 RECOVERING, 3 CLEAN_EXIT
//!     17    7 reserved        zero
//!     24    8 hb_gen          u64: bumped on every mount and state change, never reused
//!     32    8 counter         u64: bumped on every beat
//!     40   16 host_uuid       UUID of the host process (random per host identity)
//!     56    8 mount_nonce     u64: random per mount; detects a second host in this slot
//!     64    4 interval_ms     u32: advertised heartbeat interval H
//!     68    4 io_timeout_ms   u32: advertised I/O timeout T
//!     72    4 dead_after_ms   u32: advertised dead-after D (observers wait at least this)
//!     76    4 self_fence_ms   u32: advertised self-fence F
//!     80    8 journal_addr    u64: byte offset of this slot's journal
//!     88    8 journal_len     u64: bytes of this slot's journal
//!     96    8 write_nonce     u64: random per image written
//!    104    2 recoverer_slot  u16: in RECOVERING, the slot doing recovery
//!    106    6 reserved        zero
//!    112    8 recoverer_gen   u64: in RECOVERING, the recoverer's hb_gen
//!    120   64 host_name       UTF-8, NUL padded
//!    184    8 wanted_lock     u64: lock record address this host is waiting for, 0 = none
//!    192  320 reserved        zero
//! ```

use super::block::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, seal, verify_sized};
use super::lock_record::Holder;
use super::{FormatError, SECTOR};

/// Magic of a heartbeat slot ("VHBT").
pub const HEARTBEAT_MAGIC: u32 = u32::from_le_bytes(*b"VHBT");
/// Bytes kept for the host name.
pub const HOST_NAME_LEN: usize = 64;

const KIND: &str = "heartbeat slot";

/// State of a heartbeat slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SlotState {
    Free,
    Live,
    Recovering,
    CleanExit,
}

impl SlotState {
    fn to_u8(self) -> u8 {
        match self {
            SlotState::Free => 0,
            SlotState::Live => 1,
            SlotState::Recovering => 2,
            SlotState::CleanExit => 3,
        }
    }
}

/// Decoded heartbeat slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSlot {
    pub addr: u64,
    pub state: SlotState,
    pub hb_gen: u64,
    pub counter: u64,
    pub host_uuid: [u8; 16],
    pub mount_nonce: u64,
    pub interval_ms: u32,
    pub io_timeout_ms: u32,
    pub dead_after_ms: u32,
    pub self_fence_ms: u32,
    pub journal_addr: u64,
    pub journal_len: u64,
    pub write_nonce: u64,
    /// In RECOVERING: the host doing the recovery.
    pub recoverer: Option<Holder>,
    pub host_name: String,
    /// The lock record this host is waiting for (0: none). Advisory: a
    /// holder that keeps a lock only for its own convenience (a resource
    /// cluster) lets it go when another live host wants it.
    pub wanted_lock: u64,
}

impl HeartbeatSlot {
    /// The image mkfs writes: FREE, generation 0.
    pub fn free(addr: u64, journal_addr: u64, journal_len: u64) -> Self {
        HeartbeatSlot {
            addr,
            state: SlotState::Free,
            hb_gen: 0,
            counter: 0,
            host_uuid: [0; 16],
            mount_nonce: 0,
            interval_ms: 0,
            io_timeout_ms: 0,
            dead_after_ms: 0,
            self_fence_ms: 0,
            journal_addr,
            journal_len,
            write_nonce: 0,
            recoverer: None,
            host_name: String::new(),
            wanted_lock: 0,
        }
    }

    /// Encode into one sector. A host name longer than 64 bytes is cut at a
    /// character boundary.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        b[16] = self.state.to_u8();
        put_u64(&mut b, 24, self.hb_gen);
        put_u64(&mut b, 32, self.counter);
        b[40..56].copy_from_slice(&self.host_uuid);
        put_u64(&mut b, 56, self.mount_nonce);
        put_u32(&mut b, 64, self.interval_ms);
        put_u32(&mut b, 68, self.io_timeout_ms);
        put_u32(&mut b, 72, self.dead_after_ms);
        put_u32(&mut b, 76, self.self_fence_ms);
        put_u64(&mut b, 80, self.journal_addr);
        put_u64(&mut b, 88, self.journal_len);
        put_u64(&mut b, 96, self.write_nonce);
        if let Some(r) = self.recoverer {
            put_u16(&mut b, 104, r.slot);
            put_u64(&mut b, 112, r.hb_gen);
        }
        let mut name_len = self.host_name.len().min(HOST_NAME_LEN);
        while !self.host_name.is_char_boundary(name_len) {
            name_len -= 1;
        }
        b[120..120 + name_len].copy_from_slice(&self.host_name.as_bytes()[..name_len]);
        put_u64(&mut b, 184, self.wanted_lock);
        seal(&mut b, HEARTBEAT_MAGIC, self.addr);
        b
    }

    /// Decode and validate a sector read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<Self, FormatError> {
        verify_sized(b, SECTOR, KIND, HEARTBEAT_MAGIC, addr)?;
        let state = match b[16] {
            0 => SlotState::Free,
            1 => SlotState::Live,
            2 => SlotState::Recovering,
            3 => SlotState::CleanExit,
            v => return Err(bad(addr, "state", format!("unknown slot state {v}"))),
        };
        let name_raw = &b[120..120 + HOST_NAME_LEN];
        let name_end = name_raw
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(HOST_NAME_LEN);
        let host_name = std::str::from_utf8(&name_raw[..name_end])
            .map_err(|e| bad(addr, "host_name", format!("not UTF-8: {e}")))?
            .to_string();
        let mut host_uuid = [0u8; 16];
        host_uuid.copy_from_slice(&b[40..56]);
        let recoverer = (state == SlotState::Recovering).then(|| Holder {
            slot: get_u16(b, 104),
            hb_gen: get_u64(b, 112),
        });
        Ok(HeartbeatSlot {
            addr,
            state,
            hb_gen: get_u64(b, 24),
            counter: get_u64(b, 32),
            host_uuid,
            mount_nonce: get_u64(b, 56),
            interval_ms: get_u32(b, 64),
            io_timeout_ms: get_u32(b, 68),
            dead_after_ms: get_u32(b, 72),
            self_fence_ms: get_u32(b, 76),
            journal_addr: get_u64(b, 80),
            journal_len: get_u64(b, 88),
            write_nonce: get_u64(b, 96),
            recoverer,
            host_name,
            wanted_lock: get_u64(b, 184),
        })
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

    fn slot() -> impl Strategy<Value = HeartbeatSlot> {
        (
            (0u64..1 << 40).prop_map(|a| a * 512),
            0u8..4,
            any::<[u64; 6]>(),
            any::<[u32; 4]>(),
            any::<[u8; 16]>(),
            (any::<u16>(), any::<u64>()),
            "[a-z0-9.-]{0,64}",
        )
            .prop_map(|(addr, st, w, t, uuid, (rs, rg), name)| {
                let state = match st {
                    0 => SlotState::Free,
                    1 => SlotState::Live,
                    2 => SlotState::Recovering,
                    _ => SlotState::CleanExit,
                };
                HeartbeatSlot {
                    addr,
                    state,
                    hb_gen: w[0],
                    counter: w[1],
                    host_uuid: uuid,
                    mount_nonce: w[2],
                    interval_ms: t[0],
                    io_timeout_ms: t[1],
                    dead_after_ms: t[2],
                    self_fence_ms: t[3],
                    journal_addr: w[3],
                    journal_len: w[4],
                    write_nonce: w[5],
                    recoverer: (state == SlotState::Recovering).then_some(Holder {
                        slot: rs,
                        hb_gen: rg,
                    }),
                    host_name: name,
                    wanted_lock: w[0] ^ w[5],
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(s in slot()) {
            let b = s.encode();
            prop_assert_eq!(HeartbeatSlot::decode(&b, s.addr).unwrap(), s);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), addr in any::<u64>()) {
            let _ = HeartbeatSlot::decode(&bytes, addr);
        }
    }

    #[test]
    fn long_unicode_name_is_cut_on_a_char_boundary() {
        let mut s = HeartbeatSlot::free(512, 0, 0);
        s.host_name = "é".repeat(40);
        let d = HeartbeatSlot::decode(&s.encode(), 512).unwrap();
        assert_eq!(d.host_name, "é".repeat(32));
    }
}
