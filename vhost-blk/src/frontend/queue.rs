//! virtio-blk requests over a [`Virtqueue`].
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
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::bindings::virtio_blk::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::virtqueue::{Buf, Virtqueue};
use super::DriverError;

pub(super) const META_LEN: u64 = 4096;
const STATUS_OFF: u64 = 16;
const ID_OFF: u64 = 32;
const SEGMENTS_OFF: u64 = 128;
const MAX_SEGMENTS: usize = 56;
const INDIRECT_OFF: u64 = 1024;
/// Status value the driver writes before submitting: a device that never
/// writes the status byte leaves it visible.
pub const STATUS_UNWRITTEN: u8 = 0xff;

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
    pub(super) fn new(
        mem: Arc<GuestMemoryMmap<()>>,
        vq: Virtqueue,
        slots: Vec<(GuestAddress, GuestAddress)>,
        max_data: u32,
        timeout: Duration,
    ) -> Self {
        let n = slots.len();
        BlkQueue {
            mem,
            vq,
            free_slots: (0..n as u16).rev().collect(),
            slots,
            by_head: HashMap::new(),
            pending: vec![None; n],
            ready: VecDeque::new(),
            max_data,
            timeout,
            copy_data: true,
        }
    }

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
