//! The virtio-blk feature bits and configuration space this device offers.
//!
//! Config space layout (struct virtio_blk_config, all little-endian), the
//! first 60 bytes of which this device fills; bytes past 60 read as zero:
//!
//! ```text
//! off size field                     value
//!   0   8  capacity                  disk size / 512
//!   8   4  size_max                  SIZE_MAX (largest single segment)
//!  12   4  seg_max                   queue size - 2 (segments per request)
//!  16   4  geometry                  0 (VIRTIO_BLK_F_GEOMETRY not offered)
//!  20   4  blk_size                  backend block_size()
//!  24   8  topology                  0 (VIRTIO_BLK_F_TOPOLOGY not offered)
//!  32   1  writeback                 0 (CONFIG_WCE not offered)
//!  33   1  unused0
//!  34   2  num_queues                served queues
//!  36   4  max_discard_sectors       MAX_DISCARD_SECTORS
//!  40   4  max_discard_seg           MAX_DISCARD_SEGMENTS
//!  44   4  discard_sector_alignment  blk_size / 512
//!  48   4  max_write_zeroes_sectors  MAX_DISCARD_SECTORS
//!  52   4  max_write_zeroes_seg      MAX_DISCARD_SEGMENTS
//!  56   1  write_zeroes_may_unmap    1
//!  57   3  unused1
//! ```
//! The space is read-only: the device offers nothing a driver may change.

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use virtio_bindings::bindings::virtio_blk::*;
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

/// Largest byte count of one data segment the driver may use.
pub const SIZE_MAX: u32 = 1 << 20;
/// Largest sector count of one discard / write-zeroes segment (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Largest number of segments in one discard / write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 32;
/// Largest data length of one IN / OUT request the device accepts; the
/// driver is bounded by seg_max * size_max anyway, this caps the bounce buffer.
pub const MAX_IO_BYTES: usize = 32 << 20;
/// Length of the config space this device fills.
pub const CONFIG_LEN: usize = 60;
/// `VHOST_USER_F_PROTOCOL_FEATURES`: a vhost-user bit in the virtio feature word.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// The virtio feature bits offered for a disk.
pub fn device_features(read_only: bool) -> u64 {
    let mut bits = [
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_BLK_F_MQ,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_F_VERSION_1,
        VHOST_USER_F_PROTOCOL_FEATURES,
    ]
    .iter()
    .fold(0u64, |acc, b| acc | 1 << b);
    if read_only {
        bits |= 1 << VIRTIO_BLK_F_RO;
    }
    bits
}

/// The vhost-user protocol features offered.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// The config space for a disk of `capacity_bytes` (see the module doc).
pub fn config_space(
    capacity_bytes: u64,
    block_size: u32,
    num_queues: u16,
    queue_size: u16,
) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    c[0..8].copy_from_slice(&(capacity_bytes / 512).to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&u32::from(queue_size.saturating_sub(2).max(1)).to_le_bytes());
    c[20..24].copy_from_slice(&block_size.to_le_bytes());
    c[34..36].copy_from_slice(&num_queues.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&(block_size / 512).to_le_bytes());
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[56] = 1;
    c
}

/// The bytes a GET_CONFIG of `size` bytes at `offset` returns: exactly
/// `size` bytes (the frontend insists), zero past the filled part; `None`
/// when the window lies outside the 256-byte vhost-user config limit.
pub fn config_window(space: &[u8; CONFIG_LEN], offset: u32, size: u32) -> Option<Vec<u8>> {
    let end = offset.checked_add(size)?;
    if end > 256 {
        return None;
    }
    let mut out = vec![0u8; size as usize];
    for (i, b) in out.iter_mut().enumerate() {
        if let Some(v) = space.get(offset as usize + i) {
            *b = *v;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_land_at_spec_offsets() {
        let c = config_space(1 << 30, 4096, 4, 256);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 1 << 21);
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), 254);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(c[44..48].try_into().unwrap()), 8);
        assert_eq!(c[56], 1);
        let w = config_window(&c, 56, 8).unwrap();
        assert_eq!(w, vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(config_window(&c, 250, 8).is_none());
    }

    #[test]
    fn read_only_bit_follows_option() {
        let rw = device_features(false);
        assert_eq!(rw & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(rw & (1 << VIRTIO_BLK_F_MQ), 0);
        let ro = device_features(true);
        assert_ne!(ro & (1 << VIRTIO_BLK_F_RO), 0);
    }
}
