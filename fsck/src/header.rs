//! Phase 1: the volume header and its backup.

use vmfs::format::header::HEADER_LEN;
use vmfs::volume::{read_header, Volume, VolumeError};

use crate::{Code, Disk, FsckError, Outcome};

const MIB: u64 = 1 << 20;

/// Check both copies (repairing the bad one from the good one); open the
/// volume.
pub fn check(disk: &Disk, out: &mut Outcome) -> Result<Volume, FsckError> {
    let dev = &disk.dev;
    let primary = read_header(dev, 0)?;
    let backup_addr = match &primary {
        Ok(h) => h.backup_offset(),
        Err(_) => (dev.size() / MIB * MIB).saturating_sub(HEADER_LEN as u64),
    };
    let backup = read_header(dev, backup_addr)?;
    match (&primary, &backup) {
        (Err(p), Err(b)) => {
            return Err(VolumeError::NoVolume {
                device: dev.name().to_string(),
                primary: Box::new(p.clone()),
                backup: Box::new(b.clone()),
            }
            .into())
        }
        (Err(why), Ok(good)) => {
            let what = format!("primary header: {why}");
            let fixed = disk.repair && {
                disk.write(0, &good.encode(0))?;
                disk.flush()?;
                true
            };
            out.report(Code::Hdr001, what, fixed);
        }
        (Ok(good), Err(why)) => {
            let what = format!("backup header at {backup_addr}: {why}");
            let fixed = disk.repair && {
                disk.write(backup_addr, &good.encode(backup_addr))?;
                disk.flush()?;
                true
            };
            out.report(Code::Hdr002, what, fixed);
        }
        (Ok(p), Ok(b)) if p != b => {
            let what = format!("backup header at {backup_addr} differs from the primary");
            let fixed = disk.repair && {
                disk.write(backup_addr, &p.encode(backup_addr))?;
                disk.flush()?;
                true
            };
            out.report(Code::Hdr002, what, fixed);
        }
        (Ok(_), Ok(_)) => {}
    }
    Ok(Volume::open(dev.clone())?)
}
