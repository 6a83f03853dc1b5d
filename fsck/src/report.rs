//! What a run found and did, its exit code (as e2fsck), and its progress.

use serde::Serialize;

use crate::Code;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: Code,
    pub what: String,
    /// A repair was written for it.
    pub fixed: bool,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub problems: Vec<Problem>,
    /// After a repair: what a verifying pass still found.
    pub remaining: Vec<Problem>,
    /// Operational error that stopped the run.
    pub error: Option<String>,
    /// Notes (live hosts seen, phases not done).
    pub notes: Vec<String>,
    pub writes: u64,
    pub inodes: u64,
    pub directories: u64,
    pub data_blocks: u64,
    pub exit: i32,
}

impl Outcome {
    /// Record a problem (each distinct one once).
    pub fn report(&mut self, code: Code, what: String, fixed: bool) {
        if let Some(p) = self
            .problems
            .iter_mut()
            .find(|p| p.code == code && p.what == what)
        {
            p.fixed |= fixed;
            return;
        }
        self.problems.push(Problem { code, what, fixed });
    }

    /// Mark every problem with `code` whose text starts with `prefix` fixed.
    pub fn mark_fixed(&mut self, code: Code, what: &str) {
        for p in &mut self.problems {
            if p.code == code && p.what == what {
                p.fixed = true;
            }
        }
    }

    /// Codes found, each once, sorted.
    pub fn codes(&self) -> Vec<Code> {
        let mut c: Vec<Code> = self.problems.iter().map(|p| p.code).collect();
        c.sort();
        c.dedup();
        c
    }

    pub(crate) fn finish(mut self) -> Outcome {
        self.exit = if self.error.is_some() {
            8
        } else if self.problems.is_empty() {
            0
        } else if !self.remaining.is_empty() || self.problems.iter().any(|p| !p.fixed) {
            4
        } else {
            1
        };
        self
    }
}

/// Progress of a run (a terminal bar, or nothing).
pub trait Progress {
    fn phase(&self, n: u8, name: &str);
    /// `done` of `total` items of the current phase.
    fn step(&self, done: u64, total: u64);
    fn done(&self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: u8, _: &str) {}
    fn step(&self, _: u64, _: u64) {}
    fn done(&self) {}
}
