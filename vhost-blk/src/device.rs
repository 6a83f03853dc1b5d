//! The vhost-user side of the device: feature negotiation, config space and
//! the per-queue worker loop, on top of `vhost-user-backend`.
//!
//! Queue `i` is served by worker thread `i` (one vring per thread), so queues
//! run in parallel and a queue's requests run in order.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::backend::BlockBackend;
use crate::config::{config_space, config_window, device_features, protocol_features, CONFIG_LEN};
use crate::request::{process, RequestContext};

/// Guest memory as the daemon sees it.
pub(crate) type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// One served virtio-blk device (one per frontend connection).
pub(crate) struct BlkDevice {
    backend: Arc<dyn BlockBackend>,
    capacity: u64,
    read_only: bool,
    num_queues: u16,
    queue_size: u16,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; CONFIG_LEN],
    features: u64,
    event_idx: AtomicBool,
    mem: RwLock<Option<GuestMem>>,
    /// Requests completed, for the log line at disconnect.
    pub(crate) completed: AtomicU64,
}

impl BlkDevice {
    pub(crate) fn new(
        backend: Arc<dyn BlockBackend>,
        read_only: bool,
        num_queues: u16,
        queue_size: u16,
        serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    ) -> Self {
        let capacity = backend.size() - backend.size() % 512;
        let read_only = read_only || backend.read_only();
        BlkDevice {
            config: config_space(capacity, backend.block_size(), num_queues, queue_size),
            features: device_features(read_only),
            backend,
            capacity,
            read_only,
            num_queues,
            queue_size,
            serial,
            event_idx: AtomicBool::new(false),
            mem: RwLock::new(None),
            completed: AtomicU64::new(0),
        }
    }

    /// Pop and run every available request of one vring, then notify the
    /// driver if it asked to be.
    fn process_vring(&self, vring: &VringRwLock, queue: u16) -> io::Result<()> {
        let Some(mem) = self.mem.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            tracing::warn!(
                queue,
                "virtio-blk: kick before the memory table was set; ignored"
            );
            return Ok(());
        };
        let ctx = RequestContext {
            backend: &*self.backend,
            capacity: self.capacity,
            read_only: self.read_only,
            serial: &self.serial,
            queue,
        };
        let event_idx = self.event_idx.load(Ordering::Acquire);
        // The vring stays locked for the whole batch: a GET_VRING_BASE (stop
        // the ring) from the frontend then waits until every popped request
        // has been completed and put in the used ring.
        let mut state = vring.get_mut();
        loop {
            if event_idx {
                state.disable_notification().map_err(io::Error::other)?;
            }
            let mut used_any = false;
            while let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.memory()) {
                let head = chain.head_index();
                let used_len = process(&ctx, chain);
                state
                    .get_queue_mut()
                    .add_used(&*mem.memory(), head, used_len)
                    .map_err(io::Error::other)?;
                self.completed.fetch_add(1, Ordering::Relaxed);
                used_any = true;
            }
            if used_any && state.needs_notification().map_err(io::Error::other)? {
                state.signal_used_queue()?;
            }
            // With EVENT_IDX, re-enable notifications and go round again if
            // the driver queued more meanwhile (else a request would sit
            // until the next kick).
            if !event_idx || !state.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackend for BlkDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        usize::from(self.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.queue_size)
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn acked_features(&self, features: u64) {
        tracing::debug!("virtio-blk: driver acked features {features:#x}");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_window(&self.config, offset, size).unwrap_or_else(|| {
            tracing::warn!(
                "virtio-blk: GET_CONFIG {size} bytes at {offset} is outside the config space"
            );
            Vec::new()
        })
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // Nothing in this config space is writable; accept only a rewrite of
        // the current contents (a migration destination may do that).
        let same =
            config_window(&self.config, offset, buf.len() as u32).is_some_and(|cur| cur == buf);
        if same {
            Ok(())
        } else {
            tracing::warn!(
                "virtio-blk: SET_CONFIG of {} bytes at {offset} refused: config space is read-only",
                buf.len()
            );
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "virtio-blk config space is read-only",
            ))
        }
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.num_queues).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // A fresh pair per worker: the handler keeps the notifier and wakes
        // the worker's epoll with it when the connection ends.
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::error!("virtio-blk: cannot create worker exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            tracing::warn!(
                thread_id,
                "virtio-blk: unexpected event set {evset:?}; ignored"
            );
            return Ok(());
        }
        // One vring per worker thread: event 0 of thread i is queue i.
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            tracing::warn!(
                thread_id,
                device_event,
                "virtio-blk: event for an unknown vring; ignored"
            );
            return Ok(());
        };
        // An error here means the rings themselves are unusable (e.g. a used
        // ring outside guest memory). Returning it would end this worker
        // thread for the rest of the connection; log it and keep serving, so
        // the driver can still reset the queue.
        if let Err(e) = self.process_vring(vring, thread_id as u16) {
            tracing::error!(
                queue = thread_id,
                "virtio-blk: queue processing failed: {e}"
            );
        }
        Ok(())
    }
}
