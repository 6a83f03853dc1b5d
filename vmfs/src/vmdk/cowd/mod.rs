//! ESX `vmfsSparse` delta extent (COWD): a header, one grain directory,
//! grain tables allocated on demand, grains appended at the end.
//!
//! A grain not allocated here reads through to the parent disk; the
//! [`DiskChain`](super::DiskChain) does that. Grains are allocated whole:
//! the chain fills a partial first write with the parent's data (copy on
//! write) before calling [`CowdExtent::allocate_grain`].

pub mod header;

use super::descriptor::Geometry;
use super::error::{FileOp, Result, VmdkError};
use super::io::ExtentIo;
use crate::format::block::get_u32;
use header::{CowdHeader, GT_BYTES, GT_ENTRIES, GT_SECTORS, HEADER_BYTES, HEADER_SECTORS};

/// Largest grain directory accepted (entries): 32 Mi, as qemu.
const MAX_GD_ENTRIES: u64 = 32 << 20;

/// One open COWD extent file.
pub struct CowdExtent {
    name: String,
    io: Box<dyn ExtentIo>,
    header: CowdHeader,
    /// Grain directory: sector of each grain table, 0 if none.
    gd: Vec<u32>,
    /// First sector after header and grain directory.
    data_start: u64,
    /// Where the next grain table or grain goes.
    next_free: u64,
    writable: bool,
}

impl std::fmt::Debug for CowdExtent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowdExtent")
            .field("name", &self.name)
            .field("header", &self.header)
            .field("next_free", &self.next_free)
            .finish()
    }
}

impl CowdExtent {
    /// Write an empty COWD extent into the (new, empty) file `io`.
    ///
    /// Every grain table gets its place right after the directory (the
    /// file is sized over them but they are not written: on a sparse file
    /// they stay holes until used). qemu needs this: it allocates grains
    /// but never grain tables, and writes to offset 0 of the extent when a
    /// directory entry is empty.
    pub fn create(
        name: &str,
        io: Box<dyn ExtentIo>,
        capacity_sectors: u64,
        grain_sectors: u32,
        geometry: Option<Geometry>,
    ) -> Result<Self> {
        if capacity_sectors == 0 || capacity_sectors > u32::MAX as u64 {
            return Err(VmdkError::unsupported(
                name,
                format!(
                    "a COWD delta holds 1 to {} sectors (just under 2 TiB), not {capacity_sectors}",
                    u32::MAX
                ),
            ));
        }
        check_grain(name, grain_sectors)?;
        let gd_entries = header::gd_entries_for(capacity_sectors, grain_sectors);
        let gd_sectors = (gd_entries * 4).div_ceil(512);
        let data_start = HEADER_SECTORS + gd_sectors;
        if data_start + gd_entries * GT_SECTORS > u32::MAX as u64 {
            return Err(VmdkError::unsupported(
                name,
                "grain tables would pass the 2 TiB that COWD sector numbers address",
            ));
        }
        let g = geometry.unwrap_or(Geometry {
            cylinders: 0,
            heads: 0,
            sectors: 0,
        });
        let header = CowdHeader {
            version: header::VERSION,
            flags: header::FLAGS,
            num_sectors: capacity_sectors as u32,
            grain_size: grain_sectors,
            gd_offset: HEADER_SECTORS as u32,
            num_gd_entries: gd_entries as u32,
            free_sector: data_start as u32,
            cylinders: g.cylinders,
            heads: g.heads,
            sectors_per_track: g.sectors,
            generation: 0,
            saved_generation: 0,
            unclean_shutdown: 0,
        };
        let mut ext = CowdExtent {
            name: name.to_string(),
            io,
            header,
            gd: vec![0; gd_entries as usize],
            data_start,
            next_free: data_start,
            writable: true,
        };
        ext.lay_out_empty_tables()?;
        Ok(ext)
    }

    /// Open and check an existing COWD extent.
    pub fn open(name: &str, io: Box<dyn ExtentIo>, writable: bool) -> Result<Self> {
        let size = io
            .size()
            .map_err(|e| VmdkError::io(name, FileOp::Size, 0, 0, e))?;
        if size < HEADER_BYTES as u64 {
            return Err(VmdkError::corrupt(
                name,
                0,
                format!("file is {size} bytes, shorter than the {HEADER_BYTES}-byte COWD header"),
            ));
        }
        let mut hb = [0u8; HEADER_BYTES];
        io.read_at(&mut hb, 0)
            .map_err(|e| VmdkError::io(name, FileOp::Read, 0, hb.len() as u64, e))?;
        let header = CowdHeader::decode(&hb)
            .ok_or_else(|| VmdkError::corrupt(name, 0, "magic is not COWD"))?;
        if header.version != header::VERSION {
            return Err(VmdkError::unsupported(
                name,
                format!("COWD version {}", header.version),
            ));
        }
        check_grain(name, header.grain_size)?;
        if header.num_sectors == 0 {
            return Err(VmdkError::corrupt(name, 12, "numSectors is 0"));
        }
        let needed = header::gd_entries_for(header.num_sectors as u64, header.grain_size);
        let entries = header.num_gd_entries as u64;
        if entries < needed || entries > MAX_GD_ENTRIES {
            return Err(VmdkError::corrupt(
                name,
                24,
                format!(
                    "numGDEntries {entries} does not cover numSectors {} (needs {needed})",
                    header.num_sectors
                ),
            ));
        }
        let gd_offset = header.gd_offset as u64;
        let gd_sectors = (entries * 4).div_ceil(512);
        let file_sectors = size.div_ceil(512);
        if gd_offset < HEADER_SECTORS || gd_offset + gd_sectors > file_sectors {
            return Err(VmdkError::corrupt(
                name,
                20,
                format!("grain directory at sector {gd_offset} (+{gd_sectors}) is outside the {file_sectors}-sector file"),
            ));
        }
        let mut raw = vec![0u8; (entries * 4) as usize];
        io.read_at(&mut raw, gd_offset * 512)
            .map_err(|e| VmdkError::io(name, FileOp::Read, gd_offset * 512, raw.len() as u64, e))?;
        let gd: Vec<u32> = (0..entries as usize)
            .map(|i| get_u32(&raw, i * 4))
            .collect();
        let data_start = gd_offset + gd_sectors;
        for (i, &gt) in gd.iter().enumerate() {
            let gt = gt as u64;
            if gt != 0 && (gt < data_start || gt + GT_SECTORS > file_sectors) {
                return Err(VmdkError::corrupt(
                    name,
                    gd_offset * 512 + i as u64 * 4,
                    format!("grain table {i} at sector {gt} is outside the data area ({data_start}..{file_sectors})"),
                ));
            }
        }
        // New grains go at the end of the file. The header's freeSector is
        // not trusted past that end: it is written after the grain it
        // accounts for, so a larger value is damage, and following it would
        // leave a hole of up to 2 TiB in the delta file.
        let next_free = file_sectors.max(data_start);
        Ok(CowdExtent {
            name: name.to_string(),
            io,
            header,
            gd,
            data_start,
            next_free,
            writable,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn header(&self) -> &CowdHeader {
        &self.header
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.header.num_sectors as u64
    }

    pub fn grain_bytes(&self) -> u64 {
        self.header.grain_size as u64 * 512
    }

    /// Number of grains covering the capacity (the last may be partial).
    pub fn grain_count(&self) -> u64 {
        self.capacity_sectors()
            .div_ceil(self.header.grain_size as u64)
    }

    /// Byte offset in the file of grain `grain`'s data, `None` if unallocated.
    pub fn lookup(&self, grain: u64) -> Result<Option<u64>> {
        let Some(entry_pos) = self.gt_entry_pos(grain)? else {
            return Ok(None);
        };
        let mut b = [0u8; 4];
        self.read(&mut b, entry_pos)?;
        self.grain_sector(u32::from_le_bytes(b), entry_pos)
    }

    /// Read `buf.len()` bytes at `offset` inside grain `grain`; `false` (and
    /// `buf` untouched) if the grain is not allocated here.
    pub fn read_in_grain(&self, grain: u64, offset: u64, buf: &mut [u8]) -> Result<bool> {
        self.check_in_grain(grain, offset, buf.len())?;
        match self.lookup(grain)? {
            Some(pos) => {
                self.read(buf, pos + offset)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Overwrite part of an allocated grain; `false` if it is not allocated.
    pub fn write_in_grain(&mut self, grain: u64, offset: u64, data: &[u8]) -> Result<bool> {
        self.check_writable()?;
        self.check_in_grain(grain, offset, data.len())?;
        match self.lookup(grain)? {
            Some(pos) => {
                self.write(data, pos + offset)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Allocate grain `grain` (which must be unallocated) holding `data`
    /// (exactly one grain). Writes the grain, then its grain table (new
    /// tables whole), then the directory entry, then the header.
    pub fn allocate_grain(&mut self, grain: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if data.len() as u64 != self.grain_bytes() {
            return Err(VmdkError::invalid(
                &self.name,
                format!(
                    "grain data is {} bytes, grain is {}",
                    data.len(),
                    self.grain_bytes()
                ),
            ));
        }
        if self.lookup(grain)?.is_some() {
            return Err(VmdkError::invalid(
                &self.name,
                format!("grain {grain} is already allocated"),
            ));
        }
        let gd_index = (grain / GT_ENTRIES) as usize;
        let gt_index = grain % GT_ENTRIES;
        let new_gt = self.gd[gd_index] == 0;
        let mut next = self.next_free;
        let gt_sector = if new_gt {
            next += GT_SECTORS;
            next - GT_SECTORS
        } else {
            self.gd[gd_index] as u64
        };
        let grain_sector = next;
        next += self.header.grain_size as u64;
        if next > u32::MAX as u64 {
            return Err(VmdkError::unsupported(
                &self.name,
                "delta file would pass the 2 TiB that COWD sector numbers address",
            ));
        }
        self.write(data, grain_sector * 512)?;
        if new_gt {
            let mut gt = vec![0u8; GT_BYTES as usize];
            let at = (gt_index * 4) as usize;
            gt[at..at + 4].copy_from_slice(&(grain_sector as u32).to_le_bytes());
            self.write(&gt, gt_sector * 512)?;
            let gd_pos = self.header.gd_offset as u64 * 512 + gd_index as u64 * 4;
            self.write(&(gt_sector as u32).to_le_bytes(), gd_pos)?;
            self.gd[gd_index] = gt_sector as u32;
        } else {
            self.write(
                &(grain_sector as u32).to_le_bytes(),
                gt_sector * 512 + gt_index * 4,
            )?;
        }
        self.next_free = next;
        self.header.free_sector = next as u32;
        self.write_header()
    }

    /// All allocated grains with their byte offsets in the file, in grain order.
    pub fn allocated_grains(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut gt = vec![0u8; GT_BYTES as usize];
        for (i, &gt_sector) in self.gd.iter().enumerate() {
            if gt_sector == 0 {
                continue;
            }
            let gt_pos = gt_sector as u64 * 512;
            self.read(&mut gt, gt_pos)?;
            for j in 0..GT_ENTRIES {
                let grain = i as u64 * GT_ENTRIES + j;
                let entry = get_u32(&gt, (j * 4) as usize);
                if entry == 0 {
                    continue;
                }
                if grain >= self.grain_count() {
                    return Err(VmdkError::corrupt(
                        &self.name,
                        gt_pos + j * 4,
                        format!(
                            "grain {grain} is past the end of the disk ({} grains)",
                            self.grain_count()
                        ),
                    ));
                }
                if let Some(pos) = self.grain_sector(entry, gt_pos + j * 4)? {
                    out.push((grain, pos));
                }
            }
        }
        Ok(out)
    }

    /// Forget every grain: the delta reads entirely through to its parent
    /// again. The file shrinks back to header, directory and (hole) tables.
    pub fn reset(&mut self) -> Result<()> {
        self.check_writable()?;
        self.lay_out_empty_tables()
    }

    /// Directory entry i → table at `data_start + 32 i`; tables zero (as
    /// holes); nothing after them; header's freeSector just past them.
    fn lay_out_empty_tables(&mut self) -> Result<()> {
        let tables = self.gd.len() as u64 * GT_SECTORS;
        let first_free = self.data_start + tables;
        for (i, e) in self.gd.iter_mut().enumerate() {
            *e = (self.data_start + i as u64 * GT_SECTORS) as u32;
        }
        let gd_pos = self.header.gd_offset as u64 * 512;
        let mut raw = vec![0u8; ((self.data_start - self.header.gd_offset as u64) * 512) as usize];
        for (i, gt) in self.gd.iter().enumerate() {
            raw[i * 4..i * 4 + 4].copy_from_slice(&gt.to_le_bytes());
        }
        self.set_size(self.data_start * 512)?;
        self.set_size(first_free * 512)?;
        self.write(&raw, gd_pos)?;
        self.next_free = first_free;
        self.header.free_sector = first_free as u32;
        self.write_header()?;
        self.sync()
    }

    pub fn sync(&self) -> Result<()> {
        self.io
            .sync()
            .map_err(|e| VmdkError::io(&self.name, FileOp::Sync, 0, 0, e))
    }

    fn gt_entry_pos(&self, grain: u64) -> Result<Option<u64>> {
        if grain >= self.grain_count() {
            return Err(VmdkError::invalid(
                &self.name,
                format!(
                    "grain {grain} is past the end of the disk ({} grains)",
                    self.grain_count()
                ),
            ));
        }
        let gt = self.gd[(grain / GT_ENTRIES) as usize] as u64;
        Ok((gt != 0).then(|| gt * 512 + (grain % GT_ENTRIES) * 4))
    }

    /// Check a grain-table entry read at `entry_pos`; byte offset of its grain.
    fn grain_sector(&self, entry: u32, entry_pos: u64) -> Result<Option<u64>> {
        let s = entry as u64;
        if s == 0 {
            return Ok(None);
        }
        if s < self.data_start || s + self.header.grain_size as u64 > self.next_free {
            return Err(VmdkError::corrupt(
                &self.name,
                entry_pos,
                format!(
                    "grain at sector {s} is outside the data area ({}..{})",
                    self.data_start, self.next_free
                ),
            ));
        }
        Ok(Some(s * 512))
    }

    fn check_in_grain(&self, grain: u64, offset: u64, len: usize) -> Result<()> {
        if offset + len as u64 > self.grain_bytes() {
            return Err(VmdkError::invalid(
                &self.name,
                format!("{len} bytes at {offset} cross the end of grain {grain}"),
            ));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(VmdkError::ReadOnly {
                file: self.name.clone(),
                op: FileOp::Write,
            })
        }
    }

    fn write_header(&self) -> Result<()> {
        self.write(&self.header.encode(), 0)
    }

    fn read(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.io
            .read_at(buf, pos)
            .map_err(|e| VmdkError::io(&self.name, FileOp::Read, pos, buf.len() as u64, e))
    }

    fn write(&self, buf: &[u8], pos: u64) -> Result<()> {
        self.io
            .write_at(buf, pos)
            .map_err(|e| VmdkError::io(&self.name, FileOp::Write, pos, buf.len() as u64, e))
    }

    fn set_size(&self, size: u64) -> Result<()> {
        self.io
            .set_size(size)
            .map_err(|e| VmdkError::io(&self.name, FileOp::SetSize, size, 0, e))
    }
}

fn check_grain(name: &str, grain: u32) -> Result<()> {
    if grain == 0 || !grain.is_power_of_two() || grain > header::MAX_GRAIN_SECTORS {
        return Err(VmdkError::unsupported(
            name,
            format!(
                "grain of {grain} sectors (a power of two from 1 to {} is required)",
                header::MAX_GRAIN_SECTORS
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
