//! The files of an unmounted volume, by path, as a read-only
//! [`ExtentStore`] for the VMDK library: each file is read straight from the
//! device through its block map (no host, no locks), so phase 7 can parse
//! descriptors and COWD deltas with the same code that serves them.
//! The paths come from the tree walk's model (phase 4–6).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use vmfs::format::inode::{DIRECT, FLAG_INLINE};
use vmfs::format::pointer::entries_per_block;
use vmfs::format::{BlockAddr, Inode, PointerBlock, ResourceKind};
use vmfs::fs::check::Model;
use vmfs::fs::data_kind;
use vmfs::vmdk::{ExtentIo, ExtentStore};
use vmfs::volume::Volume;

/// Every non-directory reachable from the root: path (no leading `/`) ->
/// inode as walked, and (parent directory, name) of each.
#[derive(Debug, Default)]
pub struct Paths {
    pub files: HashMap<String, Inode>,
    pub names: HashMap<String, (u64, Vec<u8>)>,
}

impl Paths {
    /// Paths of the tree in `model`, from the root.
    pub fn of(model: &Model, root: u64) -> Paths {
        let mut p = Paths::default();
        let mut seen = HashSet::from([root]);
        let mut queue = VecDeque::from([(root, String::new())]);
        while let Some((dir, prefix)) = queue.pop_front() {
            for e in model.entries.get(&dir).into_iter().flatten() {
                let Some(i) = model.inodes.get(&e.ino) else {
                    continue;
                };
                let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                if i.mode & libc::S_IFMT == libc::S_IFDIR {
                    if seen.insert(e.ino) {
                        queue.push_back((e.ino, format!("{path}/")));
                    }
                } else {
                    p.names.insert(path.clone(), (dir, e.name.clone()));
                    p.files.insert(path, i.clone());
                }
            }
        }
        p
    }
}

/// Store name (as the VMDK library resolves it) -> path key: absolute
/// names are taken relative to the volume's root.
fn key(name: &str) -> &str {
    name.trim_start_matches('/')
}

fn read_only(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{name}: the volume is being checked offline (read-only)"),
    )
}

/// Read-only store over the files of an unmounted volume.
#[derive(Clone)]
pub struct VolumeFiles {
    vol: Volume,
    paths: Arc<Paths>,
}

impl VolumeFiles {
    pub fn new(vol: Volume, paths: Arc<Paths>) -> VolumeFiles {
        VolumeFiles { vol, paths }
    }

    pub fn inode(&self, name: &str) -> Option<&Inode> {
        self.paths.files.get(key(name))
    }

    /// Device offset of byte `off` of file `name` if that byte is stored in
    /// an allocated block that is not waiting to be zeroed (so an in-place
    /// edit is possible).
    pub fn device_offset(&self, name: &str, off: u64) -> io::Result<Option<u64>> {
        let Some(i) = self.inode(name) else {
            return Ok(None);
        };
        let f = OfflineFile::new(self.vol.clone(), i.clone(), name);
        let bs = f.block_size();
        Ok(f.locate(off / bs)?
            .filter(|a| !a.to_be_zeroed)
            .map(|a| self.vol.resource_addr(a.kind, a.index) + off % bs))
    }
}

impl ExtentStore for VolumeFiles {
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn ExtentIo>> {
        if writable {
            return Err(read_only(name));
        }
        let i = self.inode(name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
        })?;
        Ok(Box::new(OfflineFile::new(
            self.vol.clone(),
            i.clone(),
            name,
        )))
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>> {
        Err(read_only(name))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        Err(read_only(name))
    }
    fn rename(&self, from: &str, _to: &str) -> io::Result<()> {
        Err(read_only(from))
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(self.inode(name).is_some())
    }
}

/// One file read through its block map.
pub struct OfflineFile {
    vol: Volume,
    inode: Inode,
    name: String,
    /// Pointer blocks read so far (index -> entries): a COWD scan reads
    /// grain tables in order, so each pointer block is read once.
    ptrs: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
}

fn corrupt(name: &str, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {why}"))
}

impl OfflineFile {
    fn new(vol: Volume, inode: Inode, name: &str) -> OfflineFile {
        OfflineFile {
            vol,
            inode,
            name: name.to_string(),
            ptrs: Mutex::new(HashMap::new()),
        }
    }

    /// Size of this file's data blocks (small blocks for a small-block file).
    fn block_size(&self) -> u64 {
        u64::from(self.vol.header.region(data_kind(&self.inode)).resource_size)
    }

    fn pointer(&self, raw: u64) -> io::Result<Arc<Vec<u64>>> {
        let a = match BlockAddr::decode(raw) {
            Ok(Some(a)) if a.kind == ResourceKind::PointerBlock => a,
            _ => {
                return Err(corrupt(
                    &self.name,
                    format!("{raw:#x} is not a pointer block"),
                ))
            }
        };
        let mut cache = self.ptrs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&a.index) {
            return Ok(p.clone());
        }
        let reg = self.vol.header.region(ResourceKind::PointerBlock);
        if a.index >= reg.count {
            return Err(corrupt(
                &self.name,
                format!("pointer block {} out of range", a.index),
            ));
        }
        let addr = self.vol.resource_addr(ResourceKind::PointerBlock, a.index);
        let mut b = vec![0u8; reg.resource_size as usize];
        self.vol
            .dev
            .read_at(&mut b, addr)
            .map_err(io::Error::other)?;
        let p = PointerBlock::decode(&b, addr).map_err(|e| corrupt(&self.name, e.to_string()))?;
        let entries = Arc::new(p.entries);
        cache.insert(a.index, entries.clone());
        Ok(entries)
    }

    /// Read from the device in whole sectors (devices may require it).
    fn read_dev(&self, out: &mut [u8], at: u64) -> io::Result<()> {
        let start = at / 512 * 512;
        let end = (at + out.len() as u64).div_ceil(512) * 512;
        if start == at && end == at + out.len() as u64 {
            return self.vol.dev.read_at(out, at).map_err(io::Error::other);
        }
        let mut tmp = vec![0u8; (end - start) as usize];
        self.vol
            .dev
            .read_at(&mut tmp, start)
            .map_err(io::Error::other)?;
        let o = (at - start) as usize;
        out.copy_from_slice(&tmp[o..o + out.len()]);
        Ok(())
    }

    /// The data block holding logical block `n`, `None` for a hole.
    fn locate(&self, n: u64) -> io::Result<Option<BlockAddr>> {
        let i = &self.inode;
        let e = entries_per_block(
            self.vol
                .header
                .region(ResourceKind::PointerBlock)
                .resource_size,
        );
        let raw = if n < DIRECT as u64 {
            i.direct[n as usize]
        } else if n < DIRECT as u64 + e {
            if i.indirect == 0 {
                return Ok(None);
            }
            self.pointer(i.indirect)?[(n - DIRECT as u64) as usize]
        } else {
            let k = n - DIRECT as u64 - e;
            if k / e >= e || i.double == 0 {
                return Ok(None);
            }
            let l1 = self.pointer(i.double)?[(k / e) as usize];
            if l1 == 0 {
                return Ok(None);
            }
            self.pointer(l1)?[(k % e) as usize]
        };
        let kind = data_kind(&self.inode);
        let count = self.vol.header.region(kind).count;
        match BlockAddr::decode(raw) {
            Ok(None) => Ok(None),
            Ok(Some(a)) if a.kind == kind && a.index < count => Ok(Some(a)),
            _ => Err(corrupt(
                &self.name,
                format!("block {n} has a bad address {raw:#x}"),
            )),
        }
    }
}

impl ExtentIo for OfflineFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let size = self.inode.size;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {} bytes at {offset} run past the end ({size} bytes)",
                    self.name,
                    buf.len()
                ),
            ));
        }
        if self.inode.flags & FLAG_INLINE != 0 {
            let src = &self.inode.inline;
            for (k, b) in buf.iter_mut().enumerate() {
                *b = src.get(offset as usize + k).copied().unwrap_or(0);
            }
            return Ok(());
        }
        let bs = self.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (n, s) = (pos / bs, pos % bs);
            let l = ((bs - s) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + l];
            match self.locate(n)? {
                Some(a) if !a.to_be_zeroed => {
                    self.read_dev(out, self.vol.resource_addr(a.kind, a.index) + s)?
                }
                _ => out.fill(0),
            }
            done += l;
        }
        Ok(())
    }
    fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(read_only(&self.name))
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.inode.size)
    }
    fn set_size(&self, _: u64) -> io::Result<()> {
        Err(read_only(&self.name))
    }
    fn allocate(&self, _: u64, _: u64) -> io::Result<()> {
        Err(read_only(&self.name))
    }
    fn punch_hole(&self, _: u64, _: u64) -> io::Result<()> {
        Err(read_only(&self.name))
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}
