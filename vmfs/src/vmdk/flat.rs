//! Creating flat disks (`createType="vmfs"`, one `VMFS` extent in
//! `NAME-flat.vmdk`) with the three ESX provisioning types.

use super::descriptor::ddb::{new_long_content_id, new_uuid};
use super::descriptor::{
    Access, AdapterType, CreateType, Descriptor, ExtentKind, ExtentLine, Geometry, Provisioning,
};
use super::error::{FileOp, Result, VmdkError};
use super::io::write_zeros;
use super::layer::write_descriptor;
use super::store::ExtentStore;

/// Options of [`create_flat_disk`].
#[derive(Debug, Clone)]
pub struct FlatDiskOptions {
    pub provisioning: Provisioning,
    pub adapter: AdapterType,
    /// `ddb.virtualHWVersion` (13 is ESXi 6.5).
    pub hw_version: u32,
}

impl Default for FlatDiskOptions {
    fn default() -> Self {
        Self {
            provisioning: Provisioning::Thin,
            adapter: AdapterType::LsiLogic,
            hw_version: 13,
        }
    }
}

/// `dir/disk.vmdk` → (`dir/disk`, `disk`).
pub(super) fn split_name(name: &str) -> Result<(&str, &str)> {
    let stem = name
        .strip_suffix(".vmdk")
        .filter(|s| !s.is_empty() && !s.ends_with('/'))
        .ok_or_else(|| VmdkError::invalid(name, "a descriptor name must end in .vmdk"))?;
    let base = stem.rsplit('/').next().unwrap_or(stem);
    Ok((stem, base))
}

pub(super) fn refuse_existing(store: &dyn ExtentStore, name: &str) -> Result<()> {
    let exists = store
        .exists(name)
        .map_err(|e| VmdkError::io(name, FileOp::Open, 0, 0, e))?;
    if exists {
        return Err(VmdkError::invalid(name, "file exists"));
    }
    Ok(())
}

/// Create descriptor `name` (`disk.vmdk`) and its flat extent
/// (`disk-flat.vmdk`) of `capacity` bytes (a multiple of 512).
///
/// thin: the extent is a sparse file; zeroedthick: its space is reserved
/// (`allocate`), zeroing is left to the filesystem; eagerzeroedthick: zeros
/// are written over the whole extent.
pub fn create_flat_disk(
    store: &dyn ExtentStore,
    name: &str,
    capacity: u64,
    opts: &FlatDiskOptions,
) -> Result<Descriptor> {
    let (stem, base) = split_name(name)?;
    if capacity == 0 || capacity % 512 != 0 {
        return Err(VmdkError::invalid(
            name,
            format!("capacity {capacity} is not a positive multiple of 512 bytes"),
        ));
    }
    let flat_name = format!("{stem}-flat.vmdk");
    refuse_existing(store, name)?;
    refuse_existing(store, &flat_name)?;
    let io = store
        .create(&flat_name)
        .map_err(|e| VmdkError::io(&flat_name, FileOp::Create, 0, 0, e))?;
    io.set_size(capacity)
        .map_err(|e| VmdkError::io(&flat_name, FileOp::SetSize, capacity, 0, e))?;
    match opts.provisioning {
        Provisioning::Thin => {}
        Provisioning::ZeroedThick => io
            .allocate(0, capacity)
            .map_err(|e| VmdkError::io(&flat_name, FileOp::Allocate, 0, capacity, e))?,
        Provisioning::EagerZeroedThick => {
            io.allocate(0, capacity)
                .map_err(|e| VmdkError::io(&flat_name, FileOp::Allocate, 0, capacity, e))?;
            write_zeros(&*io, 0, capacity)
                .map_err(|e| VmdkError::io(&flat_name, FileOp::Write, 0, capacity, e))?;
        }
    }
    io.sync()
        .map_err(|e| VmdkError::io(&flat_name, FileOp::Sync, 0, 0, e))?;

    let sectors = capacity / 512;
    let cid = super::descriptor::ddb::new_cid();
    let mut d = Descriptor::new(
        CreateType::Vmfs,
        cid,
        vec![ExtentLine {
            access: Access::ReadWrite,
            sectors,
            kind: ExtentKind::Vmfs,
            file: Some(format!("{base}-flat.vmdk")),
            offset: None,
        }],
    );
    d.ddb_set("ddb.adapterType", opts.adapter.name());
    d.set_geometry(Geometry::for_capacity(sectors, &opts.adapter));
    d.ddb_set("ddb.longContentID", new_long_content_id(cid));
    d.set_provisioning(opts.provisioning);
    d.ddb_set("ddb.uuid", new_uuid());
    d.ddb_set("ddb.virtualHWVersion", opts.hw_version.to_string());
    write_descriptor(store, name, &d)?;
    Ok(d)
}
