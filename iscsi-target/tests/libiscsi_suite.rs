//! Runs libiscsi's conformance suite (`iscsi-test-cu --dataloss`) against the
//! target with two initiator names (for the reservation tests). Every test
//! must pass, and none of the VAAI/thin/reservation families may be skipped
//! because the target lacks a command or is fully provisioned.

mod common;

use std::process::Command;

/// Suites whose tests must all really run (not be skipped as "not
/// implemented" or "fully provisioned").
const MUST_RUN: &[&str] = &[
    "CompareAndWrite",
    "ExtendedCopy",
    "ReceiveCopyResults",
    "Unmap",
    "WriteSame10",
    "WriteSame16",
    "GetLBAStatus",
    "Prin*",
    "Prout*",
    "Reserve6",
    "ReportSupportedOpcodes",
];

/// One CUnit test as printed in verbose mode: `Suite: S` then
/// `  Test: T ...<log lines>passed|FAILED`.
#[derive(Debug, Default)]
struct TestRun {
    suite: String,
    test: String,
    log: String,
}

impl TestRun {
    fn name(&self) -> String {
        format!("{}.{}", self.suite, self.test)
    }
    fn skips(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .log
            .lines()
            .filter_map(|l| l.find("[SKIPPED]").map(|i| l[i..].trim()))
            .collect();
        v.dedup();
        v
    }
    fn must_run(&self) -> bool {
        MUST_RUN.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => self.suite.starts_with(prefix),
            None => self.suite == *f,
        })
    }
}

fn parse_runs(text: &str) -> Vec<TestRun> {
    let mut runs: Vec<TestRun> = Vec::new();
    let mut suite = String::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix("Suite: ") {
            suite = s.trim().to_string();
        } else if let Some(rest) = line.trim_start().strip_prefix("Test: ") {
            let (test, after) = rest.split_once(" ...").unwrap_or((rest, ""));
            runs.push(TestRun {
                suite: suite.clone(),
                test: test.trim().to_string(),
                log: format!("{after}\n"),
            });
        } else if let Some(r) = runs.last_mut() {
            r.log.push_str(line);
            r.log.push('\n');
        }
    }
    runs
}

#[test]
fn iscsi_test_cu_dataloss() {
    common::require_tool("iscsi-test-cu");
    let t = common::start(&[64 << 20]);
    let started = std::time::Instant::now();
    let out = Command::new("iscsi-test-cu")
        .args([
            "--dataloss",
            "--verbose",
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
    let runs = parse_runs(&text);
    println!(
        "iscsi-test-cu: total {total}, ran {ran}, passed {passed}, failed {failed}, {} tests parsed, {secs:.1}s",
        runs.len()
    );
    // CUnit marks a failed test with a bare "FAILED" (libiscsi's own log
    // lines say "[FAILED]" also for expected failures).
    let failing: Vec<&TestRun> = runs
        .iter()
        .filter(|r| r.log.replace("[FAILED]", "").contains("FAILED"))
        .collect();
    for r in &failing {
        println!("--- failing: {}\n{}", r.name(), r.log);
    }
    assert_eq!(failed, 0, "iscsi-test-cu reported failures (see above)");
    assert!(failing.is_empty(), "tests printed FAILED");
    assert_eq!(ran, total, "not every test ran");
    assert!(ran >= 600, "suite ran only {ran} tests");
    assert_eq!(
        runs.len() as u64,
        total,
        "could not attribute output to tests"
    );

    let mut bad = Vec::new();
    for r in runs.iter().filter(|r| r.must_run()) {
        for s in r.skips() {
            println!("  skipped in {}: {s}", r.name());
            let l = s.to_ascii_lowercase();
            if l.contains("not implemented")
                || l.contains("provisioned")
                || l.contains("not supported")
            {
                bad.push(format!("{}: {s}", r.name()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "tests skipped for a missing feature: {bad:#?}"
    );
    for fam in MUST_RUN {
        let prefix = fam.trim_end_matches('*');
        assert!(
            runs.iter().any(|r| r.suite.starts_with(prefix)),
            "no test of family {fam} ran"
        );
    }
}
