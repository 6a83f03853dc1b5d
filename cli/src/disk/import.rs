//! `vmfs disk import DEVICE SRC PATH.vmdk`: a disk from the host — a raw
//! image (holes skipped) or a VMDK with its snapshot chain — copied into a
//! new disk on the volume (`vmfs::disk::jobs::import_disk`), like
//! `vmkfstools -i`. Convert other formats first: `qemu-img convert -O raw`.

use std::path::PathBuf;

use vmfs::disk::jobs::import_disk;
use vmfs::vmdk::Provisioning;

use super::{explain, make_parents, parse_type, DiskPath};
use crate::session::Session;
use crate::units::human;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The host file to import: a raw image, or a .vmdk descriptor.
    pub source: PathBuf,
    #[command(flatten)]
    pub dst: DiskPath,
    /// Type of the new disk.
    #[arg(long = "type", default_value = "thin", value_parser = parse_type)]
    pub kind: Provisioning,
}

pub fn run(a: &ImportArgs) -> Result<(), String> {
    if !a.source.is_file() {
        return Err(format!(
            "{}: not a file (give a raw image or a .vmdk descriptor)",
            a.source.display()
        ));
    }
    let s = Session::join(&a.dst.device, &a.dst.host)?;
    s.run(|s| {
        make_parents(&s.fs, &a.dst.path).map_err(|e| s.err(format!("{}: {e}", a.dst.path)))?;
        let pb = crate::progress::bytes("importing", 0);
        let r = import_disk(&s.fs, &a.source, &a.dst.path, a.kind, |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        });
        pb.finish_and_clear();
        let r = r.map_err(|e| explain(s, &a.dst.path, e))?;
        println!(
            "imported {} into {} ({}, {}): {} of data read",
            a.source.display(),
            a.dst.path,
            human(r.capacity),
            a.kind.name(),
            human(r.data_bytes)
        );
        Ok(())
    })
}
