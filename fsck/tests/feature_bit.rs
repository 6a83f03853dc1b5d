//! INODE007's repair writes the primary header, then the backup. A crash
//! between the two leaves a primary with SMALL_FILES and a backup without:
//! the next check must see only HDR002, and its repair must carry the bit
//! over to the backup (docs/fsck.md, "INODE007").

mod common;

use std::time::Duration;

use common::*;
use vmfs::format::header::FEATURE_SMALL_FILES;
use vmfs::volume::read_header;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_repair_cut_between_the_two_headers_is_finished_by_hdr002() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = case_path(dir.path(), "inode007");
    build(&img);
    let p = img.to_str().unwrap();
    let w = run(wreck_bin(), &[p, "--code", "INODE007"], LIMIT);
    assert_eq!(w.code, 0, "wreck: {}", w.stderr);

    // The first write of the repair landed, the second did not.
    let dev = open(&img);
    let mut h = read_header(&dev, 0).expect("read").expect("primary");
    assert_eq!(
        h.features & FEATURE_SMALL_FILES,
        0,
        "the wreck cleared the bit"
    );
    h.features |= FEATURE_SMALL_FILES;
    dev.write_at(&h.encode(0), 0).expect("write primary");
    dev.flush().expect("flush");

    let check = run(fsck_bin(), &[p, "--json"], LIMIT);
    assert_eq!(check.code, 4, "{}{}", check.stdout, check.stderr);
    assert_eq!(codes(&check), ["HDR002"], "{}", check.stdout);
    let repair = run(fsck_bin(), &[p, "--repair", "--json"], LIMIT);
    assert_eq!(repair.code, 1, "{}{}", repair.stdout, repair.stderr);
    let again = run(fsck_bin(), &[p, "--json"], LIMIT);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);

    let backup = read_header(&dev, h.backup_offset())
        .expect("read")
        .expect("backup");
    assert_ne!(
        backup.features & FEATURE_SMALL_FILES,
        0,
        "backup lacks the bit"
    );
}
