//! `vmfs-fsck` on the image after the run. The killed host's locks that no
//! survivor needed again are still on disk naming its old incarnation:
//! the protocol breaks them lazily, at the next `try_lock` that meets them
//! (docs/locking.md §6 step 4), but `vmfs-fsck` reports them as LOCK002.
//! Those, and only those, are accepted: they are repaired, the repair must
//! verify, and a second check must be clean. Anything else fails.

use std::path::Path;
use std::sync::Arc;

use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs_fsck::codes::Code;
use vmfs_fsck::report::{Outcome, Quiet};

fn run(img: &Path, repair: bool) -> Outcome {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            img,
            FileDevOptions {
                read_only: !repair,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    vmfs_fsck::fsck(
        dev,
        &vmfs_fsck::Options {
            repair,
            ..Default::default()
        },
        &Quiet,
    )
}

/// Check `img`; returns how many of the killed host's stale locks
/// (slot `victim_slot`) were found and repaired.
pub fn fsck_clean_but_stale_locks(img: &Path, victim_slot: u32, seed: u64) -> usize {
    let first = run(img, false);
    if first.exit == 0 {
        return 0;
    }
    let victim = format!("held by slot {victim_slot} generation");
    let other: Vec<_> = first
        .problems
        .iter()
        .filter(|p| !(p.code == Code::Lock002 && p.what.contains(&victim)))
        .collect();
    assert!(
        other.is_empty() && first.error.is_none() && first.exit == 4,
        "vmfs-fsck after the run (seed {seed}): exit {}: {:#?} {:?}",
        first.exit,
        first.problems,
        first.error
    );
    let fix = run(img, true);
    assert!(
        fix.exit == 1 && fix.remaining.is_empty(),
        "vmfs-fsck --repair of the killed host's stale locks (seed {seed}): exit {}: {:#?} remaining {:#?} {:?}",
        fix.exit,
        fix.problems,
        fix.remaining,
        fix.error
    );
    let again = run(img, false);
    assert_eq!(
        again.exit, 0,
        "vmfs-fsck after the repair (seed {seed}): {:#?} {:?}",
        again.problems, again.error
    );
    first.problems.len()
}
