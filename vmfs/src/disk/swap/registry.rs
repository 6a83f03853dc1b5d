//! The swap registry: `/.vmfs-swap/<slot>.<hb_gen>.<id>` symlinks to the
//! swap files held by host incarnation `(slot, hb_gen)`.

use crate::format::Holder;
use crate::fs::{Fs, FsError};

use super::super::error::{DiskError, DiskResult};
use super::ensure_dir;

/// Directory of the registry, under the volume's root.
pub const REGISTRY_DIR: &str = ".vmfs-swap";
/// Where reclaims are recorded (a text file in the registry directory,
/// one line per reclaimed file; shown by `vmfs hosts`).
pub const RECLAIM_LOG: &str = "reclaimed.log";

/// One registry link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// Link name inside the registry directory.
    pub name: String,
    /// The incarnation that holds (or held) the swap file.
    pub holder: Holder,
    /// The swap file's path (absolute inside the volume).
    pub target: String,
}

/// Parse `<slot>.<hb_gen>.<id>`.
pub fn parse_name(name: &str) -> Option<Holder> {
    let mut it = name.splitn(3, '.');
    let slot = it.next()?.parse().ok()?;
    let hb_gen = it.next()?.parse().ok()?;
    let id = it.next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(Holder { slot, hb_gen })
}

/// Add a link for this host's incarnation; its name.
pub(super) fn register(fs: &Fs, id: &str, target: &str) -> DiskResult<String> {
    let dir = ensure_dir(fs, REGISTRY_DIR)?;
    let me = fs.host().holder();
    let name = format!("{}.{}.{id}", me.slot, me.hb_gen);
    fs.symlink(dir, name.as_bytes(), target.as_bytes(), 0, 0)
        .map_err(|e| DiskError::fs(target, "registering the swap file", e))?;
    Ok(name)
}

/// Remove link `name` (gone already is fine).
pub(super) fn unregister(fs: &Fs, name: &str) -> DiskResult<()> {
    let path = format!("/{REGISTRY_DIR}/{name}");
    let dir = match fs.lookup(fs.root(), REGISTRY_DIR.as_bytes()) {
        Ok(a) => a.ino,
        Err(FsError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(DiskError::fs(&path, "looking up the registry", e)),
    };
    match fs.unlink(dir, name.as_bytes()) {
        Ok(()) | Err(FsError::NotFound(_)) => Ok(()),
        Err(e) => Err(DiskError::fs(&path, "unregistering the swap file", e)),
    }
}

/// Every well-formed link of the registry (none if it does not exist).
pub fn entries(fs: &Fs) -> DiskResult<Vec<RegistryEntry>> {
    let reg = format!("/{REGISTRY_DIR}");
    let dir = match fs.lookup(fs.root(), REGISTRY_DIR.as_bytes()) {
        Ok(a) => a.ino,
        Err(FsError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(DiskError::fs(&reg, "looking up the registry", e)),
    };
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let items = fs
            .readdir(dir, cookie, 256)
            .map_err(|e| DiskError::fs(&reg, "listing the registry", e))?;
        let Some(last) = items.last() else { break };
        cookie = last.next;
        for it in items {
            let Ok(name) = String::from_utf8(it.name) else {
                continue;
            };
            let Some(holder) = parse_name(&name) else {
                continue;
            };
            let target = match fs.readlink(it.ino) {
                Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                // Removed by another host meanwhile.
                Err(_) => continue,
            };
            out.push(RegistryEntry {
                name,
                holder,
                target,
            });
        }
    }
    Ok(out)
}
