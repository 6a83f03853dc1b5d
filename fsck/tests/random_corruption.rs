//! Random bytes written over metadata regions of a volume with files, for
//! many seeds: `vmfs-fsck --repair` and a check after it always end with a
//! verdict (exit 0, 1, 4 or 8), never panic and never hang.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use vmfs::format::ResourceKind;
use vmfs::volume::Volume;

const SEEDS: u64 = 200;
const LIMIT: Duration = Duration::from_secs(30);

/// (name, offset, length) of the metadata regions of the volume at `path`.
fn regions(path: &std::path::Path) -> Vec<(&'static str, u64, u64)> {
    let v = Volume::open(open(path)).expect("volume");
    let h = &v.header;
    let mut r = vec![
        ("primary header", 0, 4096),
        ("backup header", h.backup_offset(), 4096),
        (
            "heartbeat region",
            h.heartbeat_offset,
            u64::from(h.max_hosts) * 512,
        ),
    ];
    for s in 0..h.max_hosts {
        r.push(("journal head", v.journal_addr(s), 8192));
    }
    for kind in ResourceKind::ALL {
        let reg = h.region(kind);
        r.push((
            "cluster metadata",
            reg.cluster_meta_offset,
            u64::from(reg.clusters) * 4096,
        ));
    }
    r.push(("inode table", v.inode_addr(0), 32 * 4096));
    let small = h.region(ResourceKind::SmallBlock);
    r.push((
        "directory blocks",
        small.resource_offset,
        8 * u64::from(small.resource_size),
    ));
    let ptr = h.region(ResourceKind::PointerBlock);
    r.push((
        "pointer blocks",
        ptr.resource_offset,
        2 * u64::from(ptr.resource_size),
    ));
    r
}

fn corrupt(path: &std::path::Path, regions: &[(&str, u64, u64)], seed: u64) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open copy");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hits = Vec::new();
    for _ in 0..rng.gen_range(1..=6) {
        let (name, off, len) = regions[rng.gen_range(0..regions.len())];
        let n = rng.gen_range(1..=64u64).min(len);
        let at = off + rng.gen_range(0..=len - n);
        let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        f.write_all_at(&bytes, at).expect("corrupt");
        hits.push(format!("{name}+{}:{n}", at - off));
    }
    hits
}

#[test]
fn random_metadata_corruption_always_gets_a_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = case_path(dir.path(), "base");
    build(&base);
    let regs = regions(&base);
    let img = case_path(dir.path(), "case");
    let p = img.to_str().unwrap().to_string();
    let mut repair_exits: BTreeMap<i32, u32> = BTreeMap::new();
    let mut after_exits: BTreeMap<i32, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut verdicts = Vec::new();
    // FSCK_SEED=n replays one seed and prints what fsck said.
    let only: Option<u64> = std::env::var("FSCK_SEED").ok().and_then(|s| s.parse().ok());
    for seed in (0..SEEDS).filter(|s| only.is_none_or(|o| o == *s)) {
        copy_sparse(&base, &img);
        let hits = corrupt(&img, &regs, seed);
        let mut codes = Vec::new();
        let mut left: Vec<String> = Vec::new();
        for (args, tally) in [
            (vec![p.as_str(), "--repair"], &mut repair_exits),
            (vec![p.as_str(), "--json"], &mut after_exits),
        ] {
            let r = run(fsck_bin(), &args, LIMIT);
            if only.is_some() {
                println!(
                    "{hits:?} {args:?} exit {}\n{}{}",
                    r.code, r.stdout, r.stderr
                );
            }
            slowest = slowest.max(r.elapsed);
            *tally.entry(r.code).or_default() += 1;
            if r.code == 8 || r.code == 4 {
                let why = r
                    .stderr
                    .lines()
                    .chain(r.stdout.lines())
                    .next()
                    .unwrap_or("")
                    .to_string();
                verdicts.push(format!(
                    "seed {seed} {:?} exit {}: {why}",
                    args.get(1),
                    r.code
                ));
            }
            codes.push(r.code);
            let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
            left = j["codes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            // The only operational error random bytes may cause: no header left.
            // (`--json` carries the error in its output, not on stderr.)
            let lost = r.code == 8
                && (r.stderr.contains("no vmfs volume found")
                    || r.stdout.contains("no vmfs volume found"));
            if ![0, 1, 4, 8].contains(&r.code)
                || r.stderr.contains("panicked")
                || (r.code == 8 && !lost)
            {
                failures.push(format!(
                    "seed {seed} {hits:?} {args:?}: exit {}\n{}{}",
                    r.code, r.stdout, r.stderr
                ));
            }
        }
        // What a repair leaves may only be what fsck reports but does not
        // repair (a VMDK descriptor whose damaged extent file was freed).
        let report_only = codes[1] == 4
            && !left.is_empty()
            && left
                .iter()
                .all(|c| vmfs_fsck::Code::parse(c).is_some_and(|c| !c.repairable()));
        if codes[0] != 8 && codes[1] != 0 && !report_only {
            failures.push(format!(
                "seed {seed} {hits:?}: repair exit {} but the check after it exits {}",
                codes[0], codes[1]
            ));
        }
    }
    println!(
        "{} seeds: --repair exits {repair_exits:?}; check after repair exits {after_exits:?}; slowest run {} ms",
        if only.is_some() { 1 } else { SEEDS },
        slowest.as_millis()
    );
    for v in &verdicts {
        println!("{v}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
