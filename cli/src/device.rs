//! Opening the DEVICE argument every subcommand takes.

use std::sync::Arc;

use vmfs::dev::{FileDev, FileDevOptions, SharedDev};

/// Open a device named on the command line (a path to an image file or a
/// block device). `create_size` creates a sparse image when the path does
/// not exist.
pub fn open_device(
    spec: &str,
    create_size: Option<u64>,
    read_only: bool,
) -> Result<SharedDev, String> {
    if spec.contains("://") {
        return Err(format!(
            "{spec}: device URLs are not supported by this build yet; give a path to an image file or block device"
        ));
    }
    let dev = FileDev::open(
        spec,
        FileDevOptions {
            read_only,
            create_size,
            no_uring: false,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(dev))
}
