//! Phase 5, after the walk: the header's feature bits against what the
//! inodes use (`docs/format.md` §3, §8a). An inode with flag SMALL_BLOCKS
//! on a volume whose header lacks SMALL_FILES (INODE007) reads correctly
//! with this build, but a build from before small files would open the
//! volume and call that file damaged. The repair sets the bit, so such a
//! build refuses the volume instead; the file's data is left as it is.

use vmfs::format::header::FEATURE_SMALL_FILES;
use vmfs::fs::check::Model;
use vmfs::fs::is_small_file;

use crate::{Code, FsckError, Run};

/// Inode numbers named in the report; the count covers the rest.
const NAMED: usize = 8;

pub fn check(run: &mut Run, model: &Model) -> Result<(), FsckError> {
    if run.vol.header.features & FEATURE_SMALL_FILES != 0 {
        return Ok(());
    }
    let small: Vec<u64> = model
        .inodes
        .values()
        .filter(|i| is_small_file(i))
        .map(|i| i.ino)
        .collect();
    if small.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = small.iter().take(NAMED).map(u64::to_string).collect();
    let what = format!(
        "{} inode{} with flag SMALL_BLOCKS (inode {}{}) on a volume whose header lacks the \
         SMALL_FILES feature bit (features {:#x})",
        small.len(),
        if small.len() == 1 { "" } else { "s" },
        named.join(", "),
        if small.len() > NAMED { ", …" } else { "" },
        run.vol.header.features,
    );
    let fixed = run.disk.repair && {
        let mut h = run.vol.header.clone();
        h.features |= FEATURE_SMALL_FILES;
        // Primary first: a crash before the backup is written leaves the
        // backup differing from the primary (HDR002), and that repair
        // copies the primary, bit included.
        run.disk.write(0, &h.encode(0))?;
        run.disk.flush()?;
        let backup = h.backup_offset();
        run.disk.write(backup, &h.encode(backup))?;
        run.disk.flush()?;
        true
    };
    run.out.report(Code::Inode007, what, fixed);
    Ok(())
}
