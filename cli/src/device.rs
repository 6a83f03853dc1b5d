//! Opening the DEVICE argument every subcommand takes: a path to an image
//! file or block device, or `iscsi://HOST[:PORT]/IQN/LUN` (CHAP credentials
//! from VMFS_ISCSI_CHAP_USER / VMFS_ISCSI_CHAP_SECRET, mutual CHAP from
//! VMFS_ISCSI_MUTUAL_USER / VMFS_ISCSI_MUTUAL_SECRET).

use vmfs::dev::{OpenOptions, OpenedDevice, SharedDev};

/// Open a device named on the command line. `create_size` creates a
/// sparse image when a path does not exist.
pub fn open_device(
    spec: &str,
    create_size: Option<u64>,
    read_only: bool,
) -> Result<SharedDev, String> {
    Ok(open_device_full(spec, create_size, read_only, false)?.dev)
}

/// Like [`open_device`], keeping the iSCSI handle (fencing, timeouts);
/// `pread_engine`: see [`OpenOptions::pread_engine`].
pub fn open_device_full(
    spec: &str,
    create_size: Option<u64>,
    read_only: bool,
    pread_engine: bool,
) -> Result<OpenedDevice, String> {
    vmfs::dev::open_device(
        spec,
        OpenOptions {
            read_only,
            create_size,
            pread_engine,
        },
    )
    .map_err(|e| e.to_string())
}
