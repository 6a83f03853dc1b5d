//! Guest RAM for the driver side: a memfd mapped shared, so that the daemon
//! can map the same pages from the fd it receives in SET_MEM_TABLE.

use std::fs::File;
use std::io;
use std::sync::Arc;

use rustix::fs::{memfd_create, MemfdFlags};
use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::DriverError;

/// Guest physical address where RAM starts (not 0, so a zero address in a
/// descriptor is a bug that shows).
pub const RAM_BASE: u64 = 0x10_0000;

/// A bump allocator over one memfd-backed guest RAM region.
pub struct GuestRam {
    mem: Arc<GuestMemoryMmap<()>>,
    size: u64,
    next: u64,
}

impl GuestRam {
    /// `size` bytes of guest RAM (rounded up to a page).
    pub fn new(size: u64) -> Result<Self, DriverError> {
        let size = size.div_ceil(4096) * 4096;
        let fd = memfd_create("vhost-blk-guest-ram", MemfdFlags::CLOEXEC)
            .map_err(|e| DriverError::Ram(io::Error::from(e)))?;
        let file = File::from(fd);
        file.set_len(size).map_err(DriverError::Ram)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(RAM_BASE),
            size as usize,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| DriverError::Ram(io::Error::other(e.to_string())))?;
        Ok(GuestRam {
            mem: Arc::new(mem),
            size,
            next: RAM_BASE,
        })
    }

    /// Carve `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<GuestAddress, DriverError> {
        let start = self.next.div_ceil(align) * align;
        let end = start + len;
        if end > RAM_BASE + self.size {
            return Err(DriverError::RamExhausted {
                wanted: len,
                size: self.size,
            });
        }
        self.next = end;
        Ok(GuestAddress(start))
    }

    /// The guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap<()>> {
        &self.mem
    }

    /// The mem-table entry describing this RAM to the daemon.
    pub fn region_info(&self) -> Result<VhostUserMemoryRegionInfo, DriverError> {
        let region = self
            .mem
            .find_region(GuestAddress(RAM_BASE))
            .ok_or_else(|| DriverError::Ram(io::Error::other("guest RAM region missing")))?;
        VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|e| DriverError::Vhost {
            op: "describe guest RAM",
            message: e.to_string(),
        })
    }

    /// The address in this process where guest address `gpa` is mapped: the
    /// vring addresses of SET_VRING_ADDR are in the frontend's address space.
    pub fn host_address(&self, gpa: GuestAddress) -> Result<u64, DriverError> {
        self.mem
            .get_host_address(gpa)
            .map(|p| p as u64)
            .map_err(|e| {
                DriverError::Ram(io::Error::other(format!(
                    "address {:#x}: {e}",
                    gpa.raw_value()
                )))
            })
    }
}
