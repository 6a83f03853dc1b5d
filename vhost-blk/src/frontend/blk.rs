//! virtio-blk requests over [`Virtqueue`]s, and the vhost-user handshake
//! that sets the queues up in the daemon.
//!
//! Each queue owns `slots_per_queue` request slots in guest RAM: a 4 KiB
//! metadata page and a data area of `max_data` bytes.
//!
//! ```text
//! meta +0     request header (16)      +16  status byte (1)
//! meta +32    GET_ID buffer (20)       +128 discard/write-zeroes segments (16 each, up to 56)
//! meta +1024  indirect descriptor table (16 each, up to 192)
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::bindings::virtio_blk::*;
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ram::GuestRam;
use super::virtqueue::{Buf, RingAddrs, Virtqueue};
use super::DriverError;
use crate::config::{CONFIG_LEN, VHOST_USER_F_PROTOCOL_FEATURES};

const META_LEN: u64 = 4096;
const STATUS_OFF: u64 = 16;
const ID_OFF: u64 = 32;
const SEGMENTS_OFF: u64 = 128;
const MAX_SEGMENTS: usize = 56;
const INDIRECT_OFF: u64 = 1024;
/// Status value the driver writes before submitting: a device that never
/// writes the status byte leaves it visible.
pub const STATUS_UNWRITTEN: u8 = 0xff;

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

/// One discard / write-zeroes range.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub sector: u64,
    pub sectors: u32,
    pub flags: u32,
}

/// A virtio-blk request.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    Read {
        sector: u64,
        len: u32,
    },
    Write {
        sector: u64,
        data: &'a [u8],
    },
    Flush,
    GetId,
    Discard(&'a [Segment]),
    WriteZeroes(&'a [Segment]),
    /// Any request type, with no data: for unsupported-type tests.
    Other {
        kind: u32,
        sector: u64,
    },
}

impl Request<'_> {
    fn name(&self) -> &'static str {
        match self {
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Flush => "flush",
            Request::GetId => "get-id",
            Request::Discard(_) => "discard",
            Request::WriteZeroes(_) => "write-zeroes",
            Request::Other { .. } => "other",
        }
    }
}

/// How a request's buffers are laid out in descriptors.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Header, data, status: one descriptor each.
    Direct,
    /// The same buffers in an indirect table (VIRTIO_RING_F_INDIRECT_DESC).
    Indirect,
    /// Data split into descriptors of at most this many bytes.
    SplitData(u32),
}

/// A finished request.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The tag `push` returned.
    pub tag: u16,
    /// The status byte ([`STATUS_UNWRITTEN`] if the device did not write it).
    pub status: u8,
    /// The used length the device reported.
    pub used_len: u32,
    /// Data the device wrote, for reads and GET_ID (empty unless copying).
    pub data: Vec<u8>,
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
            out.push(BlkQueue {
                mem: ram.memory().clone(),
                vq,
                free_slots: (0..opts.slots_per_queue).rev().collect(),
                slots,
                by_head: HashMap::new(),
                pending: vec![None; usize::from(opts.slots_per_queue)],
                ready: VecDeque::new(),
                max_data: opts.max_data,
                timeout: opts.timeout,
                copy_data: true,
            });
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

/// What to copy back when a slot's request completes.
#[derive(Clone, Copy, Debug)]
struct Pending {
    copy_from: Option<(GuestAddress, u32)>,
}

/// One virtqueue with its request slots; owned by one thread at a time.
pub struct BlkQueue {
    mem: Arc<GuestMemoryMmap<()>>,
    vq: Virtqueue,
    slots: Vec<(GuestAddress, GuestAddress)>,
    free_slots: Vec<u16>,
    by_head: HashMap<u16, u16>,
    pending: Vec<Option<Pending>>,
    ready: VecDeque<Completion>,
    max_data: u32,
    timeout: Duration,
    copy_data: bool,
}

impl BlkQueue {
    /// The queue's index.
    pub fn index(&self) -> u16 {
        self.vq.index()
    }

    /// Whether completions carry a copy of the data read (default true; the
    /// bench turns it off).
    pub fn set_copy_data(&mut self, on: bool) {
        self.copy_data = on;
    }

    /// Requests submitted and not yet harvested by `wait`.
    pub fn in_flight(&self) -> usize {
        self.vq.in_flight()
    }

    fn mem_err(
        &self,
        what: &'static str,
    ) -> impl Fn(vm_memory::GuestMemoryError) -> DriverError + '_ {
        move |e| DriverError::Memory {
            queue: self.index(),
            what,
            message: e.to_string(),
        }
    }

    /// Take a free slot: `(tag, metadata page, data area)`, for hand-built chains.
    pub fn alloc_slot(&mut self) -> Result<(u16, GuestAddress, GuestAddress), DriverError> {
        let tag = self.free_slots.pop().ok_or(DriverError::NoSlot {
            queue: self.index(),
            slots: self.slots.len(),
        })?;
        let (meta, data) = self.slots[usize::from(tag)];
        Ok((tag, meta, data))
    }

    /// Write bytes into guest RAM.
    pub fn write_guest(&self, addr: GuestAddress, bytes: &[u8]) -> Result<(), DriverError> {
        self.mem
            .write_slice(bytes, addr)
            .map_err(self.mem_err("request buffer"))
    }

    /// Read bytes from guest RAM.
    pub fn read_guest(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, DriverError> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, addr)
            .map_err(self.mem_err("request buffer"))?;
        Ok(v)
    }

    /// Submit a hand-built chain for slot `tag` (from `alloc_slot`); its
    /// status is read from the slot's status byte (meta + 16), which is
    /// reset to [`STATUS_UNWRITTEN`] first.
    pub fn push_chain(&mut self, tag: u16, bufs: &[Buf]) -> Result<u16, DriverError> {
        let (meta, _) = self.slots[usize::from(tag)];
        self.write_guest(meta.unchecked_add_(STATUS_OFF), &[STATUS_UNWRITTEN])?;
        let head = self.vq.add_chain(bufs)?;
        self.by_head.insert(head, tag);
        self.pending[usize::from(tag)] = Some(Pending { copy_from: None });
        Ok(head)
    }

    /// Lay out and make `req` available (not kicked). Returns its tag.
    pub fn push(&mut self, req: &Request<'_>, layout: Layout) -> Result<u16, DriverError> {
        let (tag, meta, data) = self.alloc_slot()?;
        match self.layout(req, layout, tag, meta, data) {
            Ok(()) => Ok(tag),
            Err(e) => {
                self.free_slots.push(tag);
                Err(e)
            }
        }
    }

    fn layout(
        &mut self,
        req: &Request<'_>,
        layout: Layout,
        tag: u16,
        meta: GuestAddress,
        data: GuestAddress,
    ) -> Result<(), DriverError> {
        let (kind, sector) = match *req {
            Request::Read { sector, .. } => (VIRTIO_BLK_T_IN, sector),
            Request::Write { sector, .. } => (VIRTIO_BLK_T_OUT, sector),
            Request::Flush => (VIRTIO_BLK_T_FLUSH, 0),
            Request::GetId => (VIRTIO_BLK_T_GET_ID, 0),
            Request::Discard(_) => (VIRTIO_BLK_T_DISCARD, 0),
            Request::WriteZeroes(_) => (VIRTIO_BLK_T_WRITE_ZEROES, 0),
            Request::Other { kind, sector } => (kind, sector),
        };
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.write_guest(meta, &header)?;
        self.write_guest(meta.unchecked_add_(STATUS_OFF), &[STATUS_UNWRITTEN])?;
        let too_large = |len: usize| DriverError::TooLarge {
            queue: self.index(),
            len,
            max: self.max_data,
        };
        // (address, length, device-writable) of the data part, and what to copy back.
        let (data_buf, copy_from) = match *req {
            Request::Read { len, .. } => {
                if len > self.max_data {
                    return Err(too_large(len as usize));
                }
                (Some((data, len, true)), Some((data, len)))
            }
            Request::Write { data: bytes, .. } => {
                if bytes.len() > self.max_data as usize {
                    return Err(too_large(bytes.len()));
                }
                self.write_guest(data, bytes)?;
                (Some((data, bytes.len() as u32, false)), None)
            }
            Request::GetId => {
                let id = meta.unchecked_add_(ID_OFF);
                self.write_guest(id, &[0u8; 20])?;
                (Some((id, 20, true)), Some((id, 20)))
            }
            Request::Discard(segs) | Request::WriteZeroes(segs) => {
                if segs.len() > MAX_SEGMENTS {
                    return Err(too_large(segs.len() * 16));
                }
                let mut raw = Vec::with_capacity(segs.len() * 16);
                for s in segs {
                    raw.extend_from_slice(&s.sector.to_le_bytes());
                    raw.extend_from_slice(&s.sectors.to_le_bytes());
                    raw.extend_from_slice(&s.flags.to_le_bytes());
                }
                let at = meta.unchecked_add_(SEGMENTS_OFF);
                self.write_guest(at, &raw)?;
                (Some((at, raw.len() as u32, false)), None)
            }
            Request::Flush | Request::Other { .. } => (None, None),
        };
        let mut bufs = vec![Buf {
            addr: meta,
            len: 16,
            writable: false,
        }];
        if let Some((addr, len, writable)) = data_buf {
            let piece = match layout {
                Layout::SplitData(n) if n > 0 => n,
                _ => len.max(1),
            };
            let mut off = 0;
            while off < len {
                let n = piece.min(len - off);
                bufs.push(Buf {
                    addr: addr.unchecked_add_(u64::from(off)),
                    len: n,
                    writable,
                });
                off += n;
            }
        }
        bufs.push(Buf {
            addr: meta.unchecked_add_(STATUS_OFF),
            len: 1,
            writable: true,
        });
        let head = match layout {
            Layout::Indirect => self
                .vq
                .add_indirect(meta.unchecked_add_(INDIRECT_OFF), &bufs)?,
            _ => self.vq.add_chain(&bufs)?,
        };
        self.by_head.insert(head, tag);
        self.pending[usize::from(tag)] = Some(Pending { copy_from });
        Ok(())
    }

    /// Notify the device of everything pushed.
    pub fn kick(&mut self) -> Result<(), DriverError> {
        self.vq.kick()
    }

    /// Wait for completions (at least one).
    pub fn wait(&mut self) -> Result<Vec<Completion>, DriverError> {
        if !self.ready.is_empty() {
            return Ok(self.ready.drain(..).collect());
        }
        self.harvest()
    }

    /// Wait on the used ring for fresh completions.
    fn harvest(&mut self) -> Result<Vec<Completion>, DriverError> {
        let used = self.vq.wait_used(self.timeout)?;
        let mut out = Vec::with_capacity(used.len());
        for (head, used_len) in used {
            let tag = self.by_head.remove(&head).ok_or(DriverError::BogusUsed {
                queue: self.index(),
                id: u32::from(head),
            })?;
            let (meta, _) = self.slots[usize::from(tag)];
            let pending = self.pending[usize::from(tag)].take();
            let status = self.read_guest(meta.unchecked_add_(STATUS_OFF), 1)?[0];
            let data = match pending.and_then(|p| p.copy_from) {
                Some((addr, len)) if self.copy_data => {
                    let n = used_len.saturating_sub(1).min(len);
                    self.read_guest(addr, n as usize)?
                }
                _ => Vec::new(),
            };
            self.free_slots.push(tag);
            out.push(Completion {
                tag,
                status,
                used_len,
                data,
            });
        }
        Ok(out)
    }

    /// Submit one request and wait for it; other completions that arrive
    /// meanwhile are kept for the next `wait`.
    pub fn run(&mut self, req: &Request<'_>, layout: Layout) -> Result<Completion, DriverError> {
        let tag = self.push(req, layout)?;
        self.kick()?;
        self.wait_tag(tag)
    }

    /// Wait until the request with `tag` completes.
    pub fn wait_tag(&mut self, tag: u16) -> Result<Completion, DriverError> {
        loop {
            if let Some(i) = self.ready.iter().position(|c| c.tag == tag) {
                if let Some(c) = self.ready.remove(i) {
                    return Ok(c);
                }
            }
            let done = self.harvest()?;
            self.ready.extend(done);
        }
    }

    /// `run`, and turn a non-OK status into an error.
    fn run_ok(&mut self, req: &Request<'_>) -> Result<Completion, DriverError> {
        let c = self.run(req, Layout::Direct)?;
        if c.status != VIRTIO_BLK_S_OK as u8 {
            return Err(DriverError::Status {
                queue: self.index(),
                op: req.name(),
                status: c.status,
            });
        }
        Ok(c)
    }

    /// Read `len` bytes at `sector`.
    pub fn read(&mut self, sector: u64, len: u32) -> Result<Vec<u8>, DriverError> {
        Ok(self.run_ok(&Request::Read { sector, len })?.data)
    }

    /// Write `data` at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DriverError> {
        self.run_ok(&Request::Write { sector, data }).map(drop)
    }

    /// Flush.
    pub fn flush(&mut self) -> Result<(), DriverError> {
        self.run_ok(&Request::Flush).map(drop)
    }

    /// GET_ID: the 20-byte serial.
    pub fn get_id(&mut self) -> Result<Vec<u8>, DriverError> {
        Ok(self.run_ok(&Request::GetId)?.data)
    }
}

/// `GuestAddress + offset` without the overflow check (addresses here are
/// always inside the driver's own RAM).
trait AddOffset {
    fn unchecked_add_(self, off: u64) -> GuestAddress;
}

impl AddOffset for GuestAddress {
    fn unchecked_add_(self, off: u64) -> GuestAddress {
        GuestAddress(self.0 + off)
    }
}
