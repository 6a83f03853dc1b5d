//! One disk of a chain: its descriptor and its open extents.

use super::cowd::CowdExtent;
use super::descriptor::{Access, Descriptor, ExtentKind, ExtentLine};
use super::error::{FileOp, Result, VmdkError};
use super::io::ExtentIo;
use super::store::{read_small_file, replace_small_file, ExtentStore};

/// Resolve `name` (as written in descriptor `desc_name`) to a store name:
/// relative names are relative to the descriptor's directory.
pub fn resolve(desc_name: &str, name: &str) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    match desc_name.rfind('/') {
        Some(i) => format!("{}/{}", &desc_name[..i], name),
        None => name.to_string(),
    }
}

/// Read and parse descriptor file `name`.
pub fn read_descriptor(store: &dyn ExtentStore, name: &str) -> Result<Descriptor> {
    let bytes = read_small_file(store, name)?;
    if bytes.len() >= 4 && (&bytes[..4] == b"COWD" || &bytes[..4] == b"KDMV") {
        return Err(VmdkError::unsupported(
            name,
            "a sparse extent opened as a disk; open its descriptor instead",
        ));
    }
    Descriptor::parse_bytes(&bytes).map_err(|source| VmdkError::Descriptor {
        file: name.to_string(),
        source,
    })
}

/// Write descriptor file `name` atomically.
pub fn write_descriptor(store: &dyn ExtentStore, name: &str, d: &Descriptor) -> Result<()> {
    let text = d.to_text().map_err(|source| VmdkError::Descriptor {
        file: name.to_string(),
        source,
    })?;
    replace_small_file(store, name, text.as_bytes())
}

/// Data behind one extent line.
pub enum ExtentData {
    /// Flat file; the extent starts `start` bytes into it.
    Flat {
        name: String,
        io: Box<dyn ExtentIo>,
        start: u64,
    },
    /// Reads as zeros.
    Zero,
    /// COWD sparse delta.
    Cowd(CowdExtent),
}

/// One extent placed in the disk's address space.
pub struct LayerExtent {
    pub line: ExtentLine,
    /// Disk byte offset where the extent starts.
    pub start: u64,
    /// Bytes the extent covers.
    pub len: u64,
    pub data: ExtentData,
}

/// An open disk: descriptor file plus extents.
pub struct Layer {
    pub name: String,
    pub descriptor: Descriptor,
    pub extents: Vec<LayerExtent>,
    pub capacity: u64,
    pub writable: bool,
}

impl Layer {
    /// Open descriptor `name` and every extent it lists.
    pub fn open(store: &dyn ExtentStore, name: &str, writable: bool) -> Result<Layer> {
        let descriptor = read_descriptor(store, name)?;
        let mut extents = Vec::with_capacity(descriptor.extents.len());
        let mut start = 0u64;
        for line in &descriptor.extents {
            let len = line
                .sectors
                .checked_mul(512)
                .and_then(|l| start.checked_add(l).map(|_| l))
                .ok_or_else(|| VmdkError::unsupported(name, "disk larger than 2^64 bytes"))?;
            let data = open_extent(store, name, line, writable)?;
            extents.push(LayerExtent {
                line: line.clone(),
                start,
                len,
                data,
            });
            start += len;
        }
        Ok(Layer {
            name: name.to_string(),
            descriptor,
            extents,
            capacity: start,
            writable,
        })
    }

    /// Index of the extent holding disk byte `offset` (< capacity).
    pub fn extent_at(&self, offset: u64) -> usize {
        self.extents
            .partition_point(|e| e.start + e.len <= offset)
            .min(self.extents.len().saturating_sub(1))
    }

    /// Whether this disk is a delta over a parent.
    pub fn has_parent(&self) -> bool {
        self.descriptor.has_parent()
    }

    /// Store names of the files of this disk (descriptor last).
    pub fn file_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .descriptor
            .extents
            .iter()
            .filter_map(|e| e.file.as_deref().map(|f| resolve(&self.name, f)))
            .collect();
        v.push(self.name.clone());
        v
    }

    pub fn sync(&self) -> Result<()> {
        for e in &self.extents {
            match &e.data {
                ExtentData::Flat { name, io, .. } => io
                    .sync()
                    .map_err(|err| VmdkError::io(name, FileOp::Sync, 0, 0, err))?,
                ExtentData::Cowd(c) => c.sync()?,
                ExtentData::Zero => {}
            }
        }
        Ok(())
    }
}

fn open_extent(
    store: &dyn ExtentStore,
    desc_name: &str,
    line: &ExtentLine,
    writable: bool,
) -> Result<ExtentData> {
    if line.access == Access::NoAccess {
        return Err(VmdkError::unsupported(desc_name, "NOACCESS extent"));
    }
    let writable = writable && line.access == Access::ReadWrite;
    let file = match (&line.file, line.kind) {
        (_, ExtentKind::Zero) => return Ok(ExtentData::Zero),
        (Some(f), _) => resolve(desc_name, f),
        (None, _) => return Err(VmdkError::corrupt(desc_name, 0, "extent without file name")),
    };
    let open = |w: bool| {
        store
            .open(&file, w)
            .map_err(|e| VmdkError::io(&file, FileOp::Open, 0, 0, e))
    };
    match line.kind {
        ExtentKind::Flat | ExtentKind::Vmfs => {
            let io = open(writable)?;
            let start = line.offset.unwrap_or(0).saturating_mul(512);
            let need = start.saturating_add(line.sectors.saturating_mul(512));
            let size = io
                .size()
                .map_err(|e| VmdkError::io(&file, FileOp::Size, 0, 0, e))?;
            if size < need {
                return Err(VmdkError::corrupt(
                    &file,
                    size,
                    format!("flat extent file is {size} bytes, the descriptor needs {need}"),
                ));
            }
            Ok(ExtentData::Flat {
                name: file,
                io,
                start,
            })
        }
        ExtentKind::Sparse | ExtentKind::VmfsSparse => {
            let io = open(writable)?;
            let mut magic = [0u8; 4];
            io.read_at(&mut magic, 0)
                .map_err(|e| VmdkError::io(&file, FileOp::Read, 0, 4, e))?;
            if &magic == b"KDMV" {
                return Err(VmdkError::unsupported(
                    &file,
                    "hosted sparse (KDMV) extents; only ESX COWD deltas are implemented",
                ));
            }
            let c = CowdExtent::open(&file, io, writable)?;
            if c.capacity_sectors() != line.sectors {
                return Err(VmdkError::corrupt(
                    &file,
                    12,
                    format!(
                        "COWD numSectors {} differs from the descriptor's {} sectors",
                        c.capacity_sectors(),
                        line.sectors
                    ),
                ));
            }
            Ok(ExtentData::Cowd(c))
        }
        other => Err(VmdkError::unsupported(
            desc_name,
            format!("{} extents", other.word()),
        )),
    }
}
