//! The driver side of one split virtqueue (virtio 1.2 §2.7): descriptor
//! table, available ring and used ring in guest RAM, the kick eventfd the
//! driver writes and the call eventfd the device signals.
//!
//! ```text
//! descriptor table  16 bytes x size, align 16: { addr le64, len le32, flags le16, next le16 }
//! available ring    { flags le16, idx le16, ring[size] le16, used_event le16 }, align 2
//! used ring         { flags le16, idx le16, ring[size] { id le32, len le32 }, avail_event le16 }, align 4
//! ```

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::DriverError;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;
const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

/// Where the rings of a queue live.
#[derive(Clone, Copy, Debug)]
pub struct RingAddrs {
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
}

impl RingAddrs {
    /// Bytes of the three rings of a queue of `size` entries, each on its own page.
    pub fn footprint(size: u16) -> u64 {
        let size = u64::from(size);
        let page = |n: u64| n.div_ceil(4096) * 4096;
        page(16 * size) + page(6 + 2 * size) + page(6 + 8 * size)
    }

    /// Lay the rings out from page-aligned `base`.
    pub fn at(base: GuestAddress, size: u16) -> Self {
        let size = u64::from(size);
        let page = |n: u64| n.div_ceil(4096) * 4096;
        let desc = base;
        let avail = desc.unchecked_add(page(16 * size));
        let used = avail.unchecked_add(page(6 + 2 * size));
        RingAddrs { desc, avail, used }
    }
}

/// The driver's view of one split virtqueue.
pub struct Virtqueue {
    index: u16,
    size: u16,
    mem: Arc<GuestMemoryMmap<()>>,
    rings: RingAddrs,
    free: Vec<u16>,
    /// Descriptors of each outstanding chain, by head.
    chains: Vec<Option<Vec<u16>>>,
    next_avail: Wrapping<u16>,
    kicked_avail: Wrapping<u16>,
    last_used: Wrapping<u16>,
    event_idx: bool,
    kick: EventFd,
    call: EventFd,
    epoll: Epoll,
}

impl Virtqueue {
    /// A queue whose rings are at `rings` (zeroed RAM), with fresh eventfds.
    pub fn new(
        index: u16,
        size: u16,
        mem: Arc<GuestMemoryMmap<()>>,
        rings: RingAddrs,
        event_idx: bool,
    ) -> Result<Self, DriverError> {
        let kick = EventFd::new(EFD_NONBLOCK).map_err(DriverError::EventFd)?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(DriverError::EventFd)?;
        let epoll = Epoll::new().map_err(DriverError::EventFd)?;
        epoll
            .ctl(
                ControlOperation::Add,
                call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(DriverError::EventFd)?;
        Ok(Virtqueue {
            index,
            size,
            mem,
            rings,
            free: (0..size).rev().collect(),
            chains: vec![None; usize::from(size)],
            next_avail: Wrapping(0),
            kicked_avail: Wrapping(0),
            last_used: Wrapping(0),
            event_idx,
            kick,
            call,
            epoll,
        })
    }

    pub fn index(&self) -> u16 {
        self.index
    }
    pub fn size(&self) -> u16 {
        self.size
    }
    pub fn rings(&self) -> RingAddrs {
        self.rings
    }
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }
    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    fn mem_err(
        &self,
        what: &'static str,
    ) -> impl Fn(vm_memory::GuestMemoryError) -> DriverError + '_ {
        move |e| DriverError::Memory {
            queue: self.index,
            what,
            message: e.to_string(),
        }
    }

    fn write_desc(
        &self,
        table: GuestAddress,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), DriverError> {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&d, table.unchecked_add(16 * u64::from(i)))
            .map_err(self.mem_err("descriptor"))
    }

    /// Put a chain of `bufs` in the descriptor table and make it available
    /// (not yet kicked). Returns the head index.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> Result<u16, DriverError> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return Err(DriverError::QueueFull {
                queue: self.index,
                wanted: bufs.len(),
                free: self.free.len(),
            });
        }
        let ids: Vec<u16> = (0..bufs.len()).filter_map(|_| self.free.pop()).collect();
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if last { 0 } else { VIRTQ_DESC_F_NEXT };
            if b.writable {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            let next = if last { 0 } else { ids[k + 1] };
            self.write_desc(
                self.rings.desc,
                ids[k],
                b.addr.raw_value(),
                b.len,
                flags,
                next,
            )?;
        }
        let head = ids[0];
        self.chains[usize::from(head)] = Some(ids);
        self.publish(head)?;
        Ok(head)
    }

    /// Put `bufs` in an indirect table at `table` (16 bytes per entry) and
    /// make one descriptor pointing at it available.
    pub fn add_indirect(&mut self, table: GuestAddress, bufs: &[Buf]) -> Result<u16, DriverError> {
        let Some(head) = self.free.pop() else {
            return Err(DriverError::QueueFull {
                queue: self.index,
                wanted: 1,
                free: 0,
            });
        };
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if last { 0 } else { VIRTQ_DESC_F_NEXT };
            if b.writable {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            let next = if last { 0 } else { k as u16 + 1 };
            self.write_desc(table, k as u16, b.addr.raw_value(), b.len, flags, next)?;
        }
        self.write_desc(
            self.rings.desc,
            head,
            table.raw_value(),
            16 * bufs.len() as u32,
            VIRTQ_DESC_F_INDIRECT,
            0,
        )?;
        self.chains[usize::from(head)] = Some(vec![head]);
        self.publish(head)?;
        Ok(head)
    }

    /// Write `head` into the next available slot and publish the new index.
    fn publish(&mut self, head: u16) -> Result<(), DriverError> {
        let slot = u64::from(self.next_avail.0 % self.size);
        self.mem
            .write_obj(head.to_le(), self.rings.avail.unchecked_add(4 + 2 * slot))
            .map_err(self.mem_err("avail ring"))?;
        self.next_avail += Wrapping(1);
        // Release: the descriptors and ring entry are visible before the index.
        self.mem
            .store(
                self.next_avail.0.to_le(),
                self.rings.avail.unchecked_add(2),
                Ordering::Release,
            )
            .map_err(self.mem_err("avail idx"))
    }

    /// Notify the device of new chains, unless it said it does not need it
    /// (avail_event with EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY without).
    pub fn kick(&mut self) -> Result<(), DriverError> {
        let new = self.next_avail;
        let old = std::mem::replace(&mut self.kicked_avail, new);
        if new == old {
            return Ok(());
        }
        // The index store must be visible before reading the device's event.
        fence(Ordering::SeqCst);
        let needed = if self.event_idx {
            let off = 4 + 8 * u64::from(self.size);
            let event: u16 = self
                .mem
                .load(self.rings.used.unchecked_add(off), Ordering::Acquire)
                .map_err(self.mem_err("avail_event"))?;
            let event = Wrapping(u16::from_le(event));
            (new - event - Wrapping(1)) < (new - old)
        } else {
            let flags: u16 = self
                .mem
                .load(self.rings.used, Ordering::Acquire)
                .map_err(self.mem_err("used flags"))?;
            u16::from_le(flags) & VIRTQ_USED_F_NO_NOTIFY == 0
        };
        if needed {
            self.kick.write(1).map_err(DriverError::EventFd)?;
        }
        Ok(())
    }

    /// Harvest the chains the device has put in the used ring since the last
    /// call: `(head, used length)`, their descriptors freed.
    pub fn poll_used(&mut self) -> Result<Vec<(u16, u32)>, DriverError> {
        let idx: u16 = self
            .mem
            .load(self.rings.used.unchecked_add(2), Ordering::Acquire)
            .map_err(self.mem_err("used idx"))?;
        let idx = Wrapping(u16::from_le(idx));
        let mut done = Vec::new();
        while self.last_used != idx {
            let slot = u64::from(self.last_used.0 % self.size);
            let elem = self.rings.used.unchecked_add(4 + 8 * slot);
            let id: u32 = self.mem.read_obj(elem).map_err(self.mem_err("used elem"))?;
            let len: u32 = self
                .mem
                .read_obj(elem.unchecked_add(4))
                .map_err(self.mem_err("used elem"))?;
            let id = u32::from_le(id);
            let chain = usize::try_from(id)
                .ok()
                .and_then(|i| self.chains.get_mut(i))
                .and_then(Option::take)
                .ok_or(DriverError::BogusUsed {
                    queue: self.index,
                    id,
                })?;
            self.free.extend(chain);
            done.push((id as u16, u32::from_le(len)));
            self.last_used += Wrapping(1);
        }
        if self.event_idx {
            // Ask for a call when the device uses the next entry.
            let off = 4 + 2 * u64::from(self.size);
            self.mem
                .store(
                    self.last_used.0.to_le(),
                    self.rings.avail.unchecked_add(off),
                    Ordering::Release,
                )
                .map_err(self.mem_err("used_event"))?;
            fence(Ordering::SeqCst);
        }
        Ok(done)
    }

    /// Wait for at least one used chain (or `timeout`).
    pub fn wait_used(&mut self, timeout: Duration) -> Result<Vec<(u16, u32)>, DriverError> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.poll_used()?;
            if !done.is_empty() {
                return Ok(done);
            }
            // poll_used re-armed used_event and fenced, so a completion from
            // now on signals the call eventfd.
            let done = self.poll_used()?;
            if !done.is_empty() {
                return Ok(done);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout {
                    queue: self.index,
                    waited: timeout,
                });
            }
            let mut ev = [EpollEvent::default()];
            match self.epoll.wait(left.as_millis().max(1) as i32, &mut ev) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DriverError::EventFd(e)),
            }
            // Consume the call (non-blocking: it may already be drained).
            let _ = self.call.read();
        }
    }

    /// Chains made available and not yet used.
    pub fn in_flight(&self) -> usize {
        self.chains.iter().filter(|c| c.is_some()).count()
    }
}
