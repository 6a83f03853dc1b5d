//! `vmfs disk clone SRC DST`: a new flat disk with the content of SRC (read
//! through its snapshot chain); only ranges holding data are read and zero
//! pieces are not written (`vmfs::disk::jobs::clone_disk`).

use vmfs::disk::jobs::clone_disk;
use vmfs::vmdk::Provisioning;

use super::{explain, make_parents, parse_type, DiskPath};
use crate::session::Session;
use crate::units::human;

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    #[command(flatten)]
    pub src: DiskPath,
    /// The new disk's descriptor path inside the volume.
    pub dst: String,
    /// Type of the copy.
    #[arg(long = "type", default_value = "thin", value_parser = parse_type)]
    pub kind: Provisioning,
}

pub fn run(a: &CloneArgs) -> Result<(), String> {
    let s = Session::join(&a.src.device, &a.src.host)?;
    s.run(|s| {
        make_parents(&s.fs, &a.dst).map_err(|e| s.err(format!("{}: {e}", a.dst)))?;
        let pb = crate::progress::bytes("cloning", 0);
        let r = clone_disk(&s.fs, &a.src.path, &a.dst, a.kind, |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        });
        pb.finish_and_clear();
        let r = r.map_err(|e| explain(s, &a.src.path, e))?;
        println!(
            "cloned {} ({}) to {} ({}): {} of data copied",
            a.src.path,
            human(r.capacity),
            a.dst,
            a.kind.name(),
            human(r.data_bytes)
        );
        Ok(())
    })
}
