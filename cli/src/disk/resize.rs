//! `vmfs disk extend` and `vmfs disk inflate` (flat disks without
//! snapshots: a chain's disks must keep equal sizes).

use vmfs::vmdk::descriptor::{AdapterType, Geometry};
use vmfs::vmdk::layer::{read_descriptor, resolve, write_descriptor};
use vmfs::vmdk::{Descriptor, DiskChain, Provisioning};

use super::{explain, make_eager, store, DiskPath};
use crate::session::Session;
use crate::units::{human, parse_size};

#[derive(clap::Args, Debug)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub disk: DiskPath,
    /// New size (larger than the current one).
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
}

#[derive(clap::Args, Debug)]
pub struct InflateArgs {
    #[command(flatten)]
    pub disk: DiskPath,
}

/// The single flat extent file of a disk without snapshots.
fn single_flat(s: &Session, path: &str, d: &Descriptor) -> Result<String, String> {
    if d.has_parent() {
        return Err(s.err(format!(
            "{path} is a snapshot delta: consolidate first (vmfs disk snapshot consolidate)"
        )));
    }
    match d.extents.as_slice() {
        [e] if e.offset.unwrap_or(0) == 0 && e.file.is_some() => {
            Ok(resolve(path, e.file.as_deref().expect("checked")))
        }
        _ => Err(s.err(format!(
            "{path}: only disks with one flat extent can be resized or inflated"
        ))),
    }
}

pub fn extend(a: &ExtendArgs) -> Result<(), String> {
    let s = Session::join(&a.disk.device, &a.disk.host)?;
    s.run(|s| {
        let path = &a.disk.path;
        let st = store(&s.fs);
        // Hold the disk (EXCLUSIVE) while changing it.
        let chain = DiskChain::open(st.clone(), path, true).map_err(|e| explain(s, path, e))?;
        if chain.layers().len() != 1 {
            return Err(s.err(format!(
                "{path} has snapshots: consolidate them before extending"
            )));
        }
        let old = chain.capacity();
        let mut d = chain.top().descriptor.clone();
        let flat = single_flat(s, path, &d)?;
        drop(chain);
        if a.size <= old || a.size % 512 != 0 {
            return Err(s.err(format!(
                "{path}: new size {} must be larger than the current {} and a multiple of 512",
                a.size, old
            )));
        }
        let f = st.open(&flat, true).map_err(|e| explain(s, &flat, e))?;
        f.set_size(a.size)
            .map_err(|e| s.err(format!("{flat}: {e}")))?;
        let prov = d.provisioning();
        if prov != Provisioning::Thin {
            f.allocate(old, a.size - old)
                .map_err(|e| s.err(format!("{flat}: reserving: {e}")))?;
        }
        f.sync().map_err(|e| s.err(format!("{flat}: {e}")))?;
        drop(f);
        if prov == Provisioning::EagerZeroedThick {
            make_eager(s, &flat, a.size, "zeroing")?;
        }
        let sectors = a.size / 512;
        d.extents[0].sectors = sectors;
        let adapter = d.adapter_type().unwrap_or(AdapterType::LsiLogic);
        d.set_geometry(Geometry::for_capacity(sectors, &adapter));
        d.change_content_id();
        write_descriptor(&*st, path, &d).map_err(|e| s.err(e))?;
        println!("extended {path} from {} to {}", human(old), human(a.size));
        Ok(())
    })
}

pub fn inflate(a: &InflateArgs) -> Result<(), String> {
    let s = Session::join(&a.disk.device, &a.disk.host)?;
    s.run(|s| {
        let path = &a.disk.path;
        let st = store(&s.fs);
        let d = read_descriptor(&*st, path).map_err(|e| s.err(e))?;
        let flat = single_flat(s, path, &d)?;
        let cap = d.capacity_sectors() * 512;
        make_eager(s, &flat, cap, "inflating")?;
        let mut d = read_descriptor(&*st, path).map_err(|e| s.err(e))?;
        d.set_provisioning(Provisioning::EagerZeroedThick);
        write_descriptor(&*st, path, &d).map_err(|e| s.err(e))?;
        println!("inflated {path} to eagerzeroedthick ({})", human(cap));
        Ok(())
    })
}
