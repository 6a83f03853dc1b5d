//! For every code `vmfs-wreck --list` prints: wreck a fresh copy of a volume
//! with files; `vmfs-fsck` reports the code and exits 4; `--repair` exits 1;
//! a second check exits 0; every file the wreck did not touch reads back
//! intact. Codes fsck only reports (`Code::repairable` false: a missing
//! VMDK extent, say): `--repair` exits 4 and names the code as remaining
//! with a note of what to do, and so does the check after it.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn every_code_is_found_and_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = case_path(dir.path(), "base");
    let contents = build(&base);
    let clean = run(fsck_bin(), &[base.to_str().unwrap()], LIMIT);
    assert_eq!(
        clean.code, 0,
        "fresh volume not clean:\n{}{}",
        clean.stdout, clean.stderr
    );
    let list = run(wreck_bin(), &["--list"], LIMIT);
    assert_eq!(list.code, 0);
    let codes: Vec<String> = list.stdout.lines().map(str::to_string).collect();
    assert!(codes.len() >= 25, "codes: {codes:?}");
    let mut failures = Vec::new();
    for code in &codes {
        let img = case_path(dir.path(), code);
        copy_sparse(&base, &img);
        let p = img.to_str().unwrap();
        let w = run(wreck_bin(), &[p, "--code", code], LIMIT);
        if w.code != 0 {
            failures.push(format!("{code}: wreck failed: {}", w.stderr));
            continue;
        }
        let touched: Vec<&str> = w
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("touched "))
            .collect();
        let check = run(fsck_bin(), &[p, "--json"], LIMIT);
        let j: serde_json::Value = serde_json::from_str(&check.stdout).unwrap_or_default();
        let found: Vec<&str> = j["codes"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        if check.code != 4 || !found.contains(&code.as_str()) {
            failures.push(format!(
                "{code}: check exit {} codes {found:?}\n{}{}",
                check.code, check.stdout, check.stderr
            ));
            continue;
        }
        let fixable = vmfs_fsck::Code::parse(code).is_some_and(|c| c.repairable());
        let (want_repair, want_after) = if fixable { (1, 0) } else { (4, 4) };
        let repair = run(fsck_bin(), &[p, "--repair", "--json"], LIMIT);
        let rj: serde_json::Value = serde_json::from_str(&repair.stdout).unwrap_or_default();
        let advised = rj["notes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n.as_str().is_some_and(|n| n.starts_with(code.as_str())))
        });
        if !fixable && !advised {
            failures.push(format!(
                "{code}: no note says what to do\n{}",
                repair.stdout
            ));
        }
        if repair.code != want_repair {
            failures.push(format!(
                "{code}: repair exit {}\n{}{}",
                repair.code, repair.stdout, repair.stderr
            ));
            continue;
        }
        let again = run(fsck_bin(), &[p, "--json"], LIMIT);
        let aj: serde_json::Value = serde_json::from_str(&again.stdout).unwrap_or_default();
        let left: Vec<&str> = aj["codes"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        if again.code != want_after || (!fixable && left != [code.as_str()]) {
            failures.push(format!(
                "{code}: after repair exit {}\n{}{}",
                again.code, again.stdout, again.stderr
            ));
            continue;
        }
        let fs = mount(&img);
        let mut intact = 0;
        for (path, data) in &contents {
            if touched
                .iter()
                .any(|t| path == t || path.starts_with(&format!("{t}/")))
            {
                continue;
            }
            match read_file(&fs, path) {
                Ok(d) if d == *data => intact += 1,
                Ok(_) => failures.push(format!("{code}: {path} changed")),
                Err(e) => failures.push(format!("{code}: {path}: {e}")),
            }
        }
        unmount(fs);
        println!(
            "{code}: found {found:?}, {} in {} ms, {intact} untouched files intact, touched {touched:?}",
            if fixable { "repaired" } else { "reported only" },
            repair.elapsed.as_millis()
        );
        let _ = std::fs::remove_file(&img);
    }
    println!("codes covered: {}", codes.join(" "));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
