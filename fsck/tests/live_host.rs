//! A live host on the volume: the check notices it (two samples of the
//! heartbeat region) and leaves it alone; --repair refuses (exit 8) unless
//! --force.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn repair_refuses_while_a_host_is_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = case_path(dir.path(), "live");
    build(&img);
    let p = img.to_str().unwrap();
    let fs = mount(&img);
    let check = run(fsck_bin(), &[p, "--json"], LIMIT);
    let j: serde_json::Value = serde_json::from_str(&check.stdout).expect("json");
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(j["notes"].to_string().contains("live"), "{}", check.stdout);
    let refused = run(fsck_bin(), &[p, "--repair"], LIMIT);
    assert_eq!(refused.code, 8, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("refusing to repair"),
        "{}",
        refused.stderr
    );
    let forced = run(fsck_bin(), &[p, "--repair", "--force"], LIMIT);
    assert_eq!(forced.code, 0, "{}{}", forced.stdout, forced.stderr);
    // The live host was not disturbed: it still works and leaves cleanly.
    let root = fs.root();
    fs.create(root, b"after-fsck", 0o644, 0, 0)
        .expect("create while fsck ran");
    unmount(fs);
    let after = run(fsck_bin(), &[p], LIMIT);
    assert_eq!(after.code, 0, "{}{}", after.stdout, after.stderr);
    println!(
        "live host: check {} ms, refused repair {} ms, forced repair {} ms",
        check.elapsed.as_millis(),
        refused.elapsed.as_millis(),
        forced.elapsed.as_millis()
    );
}
