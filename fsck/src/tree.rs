//! Phases 4–6: resource clusters, inodes and directories, from one walk of
//! the tree (`vmfs::fs::check::walk`). Repairs go in passes: walk, fix what
//! the walk found (references first, then directories, then orphans, then
//! bitmaps), flush, walk again — until a walk is clean or the pass limit.

use vmfs::format::ResourceKind;
use vmfs::fs::check::{walk, Finding, Model};

use crate::tree_fix::Fixer;
use crate::{alloc, Code, FsckError, Run};

/// Most repair passes (each one fixes what the previous one exposed).
const MAX_PASSES: usize = 8;

/// The code of a finding (`None`: reported by another phase).
fn classify(run: &Run, f: &Finding) -> Result<Option<Code>, FsckError> {
    use Finding::*;
    Ok(Some(match f {
        InodeLock { .. } | NoCluster { .. } => return Ok(None),
        InodeDamaged { ino, named_by, .. } => {
            let bit = alloc::is_allocated(run.disk, &run.vol, ResourceKind::Inode, *ino)?;
            if named_by.is_some() && bit == Some(false) {
                Code::Dir001
            } else {
                Code::Inode001
            }
        }
        EntryOutOfRange { .. } => Code::Dir001,
        BadMapEntry { .. } => Code::Bmap005,
        PointerDamaged { .. } => Code::Inode006,
        BlocksField { .. } => Code::Inode002,
        InlineSize { .. } | SymlinkNoTarget { .. } => Code::Inode004,
        ZeroGeneration { .. } => Code::Inode005,
        Parent { .. } => Code::Dir004,
        DirDamaged { .. } => Code::Dir002,
        DirCount { .. } => Code::Dir003,
        DirMultiName { .. } => Code::Dir005,
        EntryType { .. } => Code::Dir007,
        Nlink { .. } => Code::Inode003,
        Orphan { .. } => Code::Dir006,
        ClusterDamaged { .. } => Code::Bmap001,
        Leaked { .. } => Code::Bmap002,
        RefFree {
            kind: ResourceKind::Inode,
            r,
            ..
        } if *r != run.vol.header.root_ino => Code::Dir001,
        RefFree { .. } => Code::Bmap003,
        MultiRef { .. } => Code::Bmap004,
    }))
}

/// Returns the model of the last walk (after a repair: of the repaired tree).
pub fn check(run: &mut Run) -> Result<Model, FsckError> {
    // Problems reported but not repaired in a pass (orphans wait for the
    // directories to settle): gone from the next walk means resolved by
    // the repairs of that pass.
    let mut waiting: Vec<(Code, String)> = Vec::new();
    let mut last = Model::default();
    for pass in 0..MAX_PASSES {
        let (report, model) = walk(&run.vol)?;
        if pass == 0 {
            run.out.inodes = report.inodes;
            run.out.directories = report.directories;
            run.out.data_blocks = report.data_blocks;
        }
        let mut found = Vec::new();
        for f in report.findings {
            if let Some(code) = classify(run, &f)? {
                found.push((code, f));
            }
        }
        let now: Vec<(Code, String)> = found.iter().map(|(c, f)| (*c, f.to_string())).collect();
        for (c, w) in waiting.drain(..) {
            if !now.contains(&(c, w.clone())) {
                run.out.mark_fixed(c, &w);
            }
        }
        if found.is_empty() {
            return Ok(model);
        }
        if !run.disk.repair {
            for (code, f) in found {
                run.out.report(code, f.to_string(), false);
            }
            return Ok(model);
        }
        run.progress.step(pass as u64 + 1, MAX_PASSES as u64);
        let mut fixer = Fixer::new(run.disk, &run.vol, &model);
        let fixed = fixer.apply(&found)?;
        for ((code, f), ok) in found.into_iter().zip(fixed) {
            if !ok {
                waiting.push((code, f.to_string()));
            }
            run.out.report(code, f.to_string(), ok);
        }
        run.disk.flush()?;
        last = model;
    }
    Ok(last)
}
