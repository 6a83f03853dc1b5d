//! `vmfs disk create` and `vmfs disk delete`.

use vmfs::disk::jobs::create_disk;
use vmfs::vmdk::{DiskChain, Provisioning};

use super::{explain, make_parents, parse_type, store, DiskPath};
use crate::session::Session;
use crate::units::{human, parse_size};

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub disk: DiskPath,
    /// Size (e.g. 40G); a multiple of 512 bytes.
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
    /// thin (allocated on first write), zeroedthick (reserved, zeroed on
    /// first write) or eagerzeroedthick (reserved and zeroed now).
    #[arg(long = "type", default_value = "thin", value_parser = parse_type)]
    pub kind: Provisioning,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub disk: DiskPath,
}

/// Create a flat disk of `kind`; eager-zeroed disks are zeroed with a
/// progress bar (created lazily zeroed first, then materialized).
pub fn create(s: &Session, path: &str, size: u64, kind: Provisioning) -> Result<(), String> {
    if size == 0 || size % 512 != 0 {
        return Err(s.err(format!(
            "{path}: size {size} is not a positive multiple of 512 bytes"
        )));
    }
    make_parents(&s.fs, path).map_err(|e| s.err(format!("{path}: {e}")))?;
    let pb = crate::progress::bytes("zeroing", size);
    let r = create_disk(&s.fs, path, size, kind, |done, _| pb.set_position(done));
    pb.finish_and_clear();
    r.map_err(|e| s.err(e))
}

pub fn run(a: &CreateArgs) -> Result<(), String> {
    if a.size == 0 || a.size % 512 != 0 {
        return Err(format!(
            "{}: {}: size {} is not a positive multiple of 512 bytes",
            a.disk.device, a.disk.path, a.size
        ));
    }
    let s = Session::join(&a.disk.device, &a.disk.host)?;
    s.run(|s| {
        create(s, &a.disk.path, a.size, a.kind)?;
        println!(
            "created {} ({}, {})",
            a.disk.path,
            human(a.size),
            a.kind.name()
        );
        Ok(())
    })
}

pub fn delete(a: &DeleteArgs) -> Result<(), String> {
    let s = Session::join(&a.disk.device, &a.disk.host)?;
    s.run(|s| {
        let path = &a.disk.path;
        let st = store(&s.fs);
        // Opening writable takes the top's lock: a disk in use is refused.
        let chain = DiskChain::open(st.clone(), path, true).map_err(|e| explain(s, path, e))?;
        let mut files = Vec::new();
        for layer in chain.layers().iter().rev() {
            files.extend(layer.file_names());
        }
        drop(chain);
        for f in &files {
            st.remove(f).map_err(|e| {
                s.err(format!(
                    "{f}: deleting: {e} (the rest of {path} is kept; run the command again)"
                ))
            })?;
        }
        println!("deleted {path} ({} files)", files.len());
        Ok(())
    })
}
