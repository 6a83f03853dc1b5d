//! The vhost-user handshake a VMM performs to set up a virtio-blk device:
//! features, protocol features, config space, guest RAM and one split
//! virtqueue per queue.

use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::queue::{BlkQueue, META_LEN};
use super::ram::GuestRam;
use super::virtqueue::{RingAddrs, Virtqueue};
use super::DriverError;
use crate::config::{CONFIG_LEN, VHOST_USER_F_PROTOCOL_FEATURES};

/// How the driver sets up the device.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub num_queues: u16,
    pub queue_size: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX (notification suppression).
    pub event_idx: bool,
    /// Requests that can be in flight per queue.
    pub slots_per_queue: u16,
    /// Largest data transfer of one request.
    pub max_data: u32,
    /// How long to wait for a completion before giving up.
    pub timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            num_queues: 1,
            queue_size: 256,
            event_idx: true,
            slots_per_queue: 32,
            max_data: 256 << 10,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The device's config space, decoded (see crate::config for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    pub capacity_sectors: u64,
    pub size_max: u32,
    pub seg_max: u32,
    pub blk_size: u32,
    pub num_queues: u16,
    pub max_discard_sectors: u32,
    pub max_discard_seg: u32,
    pub discard_sector_alignment: u32,
    pub max_write_zeroes_sectors: u32,
    pub max_write_zeroes_seg: u32,
    pub write_zeroes_may_unmap: bool,
}

impl BlkConfig {
    fn parse(c: &[u8]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
        BlkConfig {
            capacity_sectors: u64::from(u32_at(0)) | (u64::from(u32_at(4)) << 32),
            size_max: u32_at(8),
            seg_max: u32_at(12),
            blk_size: u32_at(20),
            num_queues: u16::from_le_bytes([c[34], c[35]]),
            max_discard_sectors: u32_at(36),
            max_discard_seg: u32_at(40),
            discard_sector_alignment: u32_at(44),
            max_write_zeroes_sectors: u32_at(48),
            max_write_zeroes_seg: u32_at(52),
            write_zeroes_may_unmap: c[56] != 0,
        }
    }
}

/// The vhost-user connection to the daemon. Dropping it disconnects.
pub struct BlkFrontend {
    vu: Frontend,
    ram: GuestRam,
    acked_features: u64,
    config: BlkConfig,
}

fn vhost_err(op: &'static str) -> impl Fn(vhost::Error) -> DriverError {
    move |e| DriverError::Vhost {
        op,
        message: e.to_string(),
    }
}

impl BlkFrontend {
    /// Connect to the daemon at `socket` and set up `opts.num_queues` queues.
    pub fn connect(
        socket: &Path,
        opts: &DriverOptions,
    ) -> Result<(BlkFrontend, Vec<BlkQueue>), DriverError> {
        let mut vu =
            Frontend::connect(socket, u64::from(opts.num_queues)).map_err(vhost_err("connect"))?;
        vu.set_owner().map_err(vhost_err("SET_OWNER"))?;
        let offered = vu.get_features().map_err(vhost_err("GET_FEATURES"))?;
        for (bit, what) in [
            (
                VHOST_USER_F_PROTOCOL_FEATURES,
                "VHOST_USER_F_PROTOCOL_FEATURES",
            ),
            (VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1"),
        ] {
            if offered & (1 << bit) == 0 {
                return Err(DriverError::MissingFeature { what });
            }
        }
        let proto_offered = vu
            .get_protocol_features()
            .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
        let wanted = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK;
        if !proto_offered
            .contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ)
        {
            return Err(DriverError::MissingFeature {
                what: "protocol features CONFIG and MQ",
            });
        }
        let proto = proto_offered & wanted;
        vu.set_protocol_features(proto)
            .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
        if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every message then waits for the daemon's ack, so a refused
            // message fails here rather than silently.
            vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let queues = vu.get_queue_num().map_err(vhost_err("GET_QUEUE_NUM"))?;
        if queues < u64::from(opts.num_queues) {
            return Err(DriverError::MissingFeature {
                what: "enough queues",
            });
        }
        let (_, raw) = vu
            .get_config(
                0,
                CONFIG_LEN as u32,
                VhostUserConfigFlags::empty(),
                &[0u8; CONFIG_LEN],
            )
            .map_err(vhost_err("GET_CONFIG"))?;
        let config = BlkConfig::parse(&raw);

        let mut acked = offered;
        if !opts.event_idx {
            acked &= !(1 << VIRTIO_RING_F_EVENT_IDX);
        }
        vu.set_features(acked).map_err(vhost_err("SET_FEATURES"))?;
        let event_idx = acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;

        let per_queue = RingAddrs::footprint(opts.queue_size)
            + u64::from(opts.slots_per_queue)
                * (META_LEN + u64::from(opts.max_data).div_ceil(4096) * 4096);
        let mut ram = GuestRam::new(u64::from(opts.num_queues) * per_queue + 4096)?;
        vu.set_mem_table(&[ram.region_info()?])
            .map_err(vhost_err("SET_MEM_TABLE"))?;

        let mut out = Vec::new();
        for q in 0..opts.num_queues {
            let rings = RingAddrs::at(
                ram.alloc(RingAddrs::footprint(opts.queue_size), 4096)?,
                opts.queue_size,
            );
            let mut slots = Vec::new();
            for _ in 0..opts.slots_per_queue {
                let meta = ram.alloc(META_LEN, 4096)?;
                let data = ram.alloc(u64::from(opts.max_data), 4096)?;
                slots.push((meta, data));
            }
            let vq = Virtqueue::new(q, opts.queue_size, ram.memory().clone(), rings, event_idx)?;
            let qi = usize::from(q);
            vu.set_vring_num(qi, opts.queue_size)
                .map_err(vhost_err("SET_VRING_NUM"))?;
            let addrs = VringConfigData {
                queue_max_size: opts.queue_size,
                queue_size: opts.queue_size,
                flags: 0,
                desc_table_addr: ram.host_address(rings.desc)?,
                used_ring_addr: ram.host_address(rings.used)?,
                avail_ring_addr: ram.host_address(rings.avail)?,
                log_addr: None,
            };
            vu.set_vring_addr(qi, &addrs)
                .map_err(vhost_err("SET_VRING_ADDR"))?;
            vu.set_vring_base(qi, 0)
                .map_err(vhost_err("SET_VRING_BASE"))?;
            vu.set_vring_call(qi, vq.call_fd())
                .map_err(vhost_err("SET_VRING_CALL"))?;
            vu.set_vring_kick(qi, vq.kick_fd())
                .map_err(vhost_err("SET_VRING_KICK"))?;
            vu.set_vring_enable(qi, true)
                .map_err(vhost_err("SET_VRING_ENABLE"))?;
            out.push(BlkQueue::new(
                ram.memory().clone(),
                vq,
                slots,
                opts.max_data,
                opts.timeout,
            ));
        }
        Ok((
            BlkFrontend {
                vu,
                ram,
                acked_features: acked,
                config,
            },
            out,
        ))
    }

    /// The config space read at connect time.
    pub fn config(&self) -> &BlkConfig {
        &self.config
    }

    /// Read the config space again.
    pub fn read_config(&mut self) -> Result<BlkConfig, DriverError> {
        let (_, raw) = self
            .vu
            .get_config(
                0,
                CONFIG_LEN as u32,
                VhostUserConfigFlags::empty(),
                &[0u8; CONFIG_LEN],
            )
            .map_err(vhost_err("GET_CONFIG"))?;
        Ok(BlkConfig::parse(&raw))
    }

    /// The feature bits the driver acked.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Guest RAM (shared with the daemon).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Stop queue `q` the way a VMM does before migration or reset
    /// (GET_VRING_BASE); returns the device's next available index.
    pub fn stop_queue(&mut self, q: u16) -> Result<u32, DriverError> {
        self.vu
            .get_vring_base(usize::from(q))
            .map_err(vhost_err("GET_VRING_BASE"))
    }
}
