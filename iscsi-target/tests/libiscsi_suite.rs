//! Runs libiscsi's conformance suite (`iscsi-test-cu --dataloss`) against the
//! target with two initiator names (for the reservation tests).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

/// Tests that still fail; the set may only shrink (see README of the crate).
const KNOWN_FAILURES: &[&str] = &[
    "ReceiveCopyResults.CopyStatus",
    "iSCSIResiduals.Read10Invalid",
    "iSCSIdatasn.iSCSIDataSnInvalid",
];

#[test]
fn iscsi_test_cu_dataloss() {
    common::require_tool("iscsi-test-cu");
    let t = common::start(&[64 << 20]);
    let started = std::time::Instant::now();
    let out = Command::new("iscsi-test-cu")
        .args([
            "--dataloss",
            "-n",
            "-i",
            "iqn.2024-01.test.vmfs:init-a",
            "-I",
            "iqn.2024-01.test.vmfs:init-b",
        ])
        .arg(t.url(0))
        .output()
        .expect("run iscsi-test-cu");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let secs = started.elapsed().as_secs_f64();
    let tests_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("tests "))
        .unwrap_or_else(|| panic!("no CUnit summary in output:\n{text}"));
    let nums: Vec<u64> = tests_line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(nums.len() >= 4, "bad summary line {tests_line:?}");
    let (total, ran, passed, failed) = (nums[0], nums[1], nums[2], nums[3]);
    let skipped = text.matches("[SKIPPED]").count();
    let failing: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("Suite ")?;
            let (suite, test) = rest.strip_suffix(" had failures:")?.split_once(", Test ")?;
            Some(format!("{suite}.{test}"))
        })
        .collect();
    println!(
        "iscsi-test-cu: total {total}, ran {ran}, passed {passed}, failed {failed}, skip messages {skipped}, {secs:.1}s"
    );
    for f in &failing {
        println!("  failing: {f}");
    }
    let known: BTreeSet<String> = KNOWN_FAILURES.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = failing.difference(&known).collect();
    assert!(new.is_empty(), "new iscsi-test-cu failures: {new:?}");
    assert!(ran > 500, "suite ran only {ran} tests");
}
