//! `vmfs disk snapshot create|revert|delete|consolidate`.
//!
//! VMware's words: *delete* a snapshot = merge the top delta into its
//! parent (keeping the data); *revert* = throw the top delta's changes
//! away; *consolidate* = merge every delta down into the base.

use vmfs::vmdk::{create_snapshot, DiskChain, DEFAULT_GRAIN_SECTORS};

use super::{explain, store, DiskPath};
use crate::session::Session;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// New delta over the disk's current top; prints the new top's path.
    Create(CreateArgs),
    /// Discard everything written to the top delta since it was taken.
    Revert(DiskPath),
    /// Merge the top delta into its parent; prints the new top.
    Delete(DiskPath),
    /// Merge every delta into the base; prints the base.
    Consolidate(DiskPath),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub disk: DiskPath,
    /// Name of the new top (default: NAME-00000N.vmdk, next free N).
    #[arg(long)]
    pub name: Option<String>,
    /// Grain size of the delta in 512-byte sectors (power of two).
    #[arg(long, default_value_t = DEFAULT_GRAIN_SECTORS)]
    pub grain: u32,
}

/// `dir/vm-000002.vmdk` or `dir/vm.vmdk` → `dir/vm`.
fn stem(path: &str) -> &str {
    let s = path.trim_end_matches(".vmdk");
    match s.rsplit_once('-') {
        Some((a, n)) if n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()) => a,
        _ => s,
    }
}

pub fn run(c: &SnapshotCommand) -> Result<(), String> {
    match c {
        SnapshotCommand::Create(a) => {
            let s = Session::join(&a.disk.device, &a.disk.host)?;
            s.run(|s| {
                let st = store(&s.fs);
                let top = &a.disk.path;
                // The disk must not be in use while its top changes role.
                let chain =
                    DiskChain::open(st.clone(), top, true).map_err(|e| explain(s, top, e))?;
                drop(chain);
                let name = match &a.name {
                    Some(n) => n.clone(),
                    None => {
                        let mut n = 1;
                        loop {
                            let cand = format!("{}-{n:06}.vmdk", stem(top));
                            if !st.exists(&cand).map_err(|e| s.err(e))? {
                                break cand;
                            }
                            n += 1;
                        }
                    }
                };
                create_snapshot(&*st, top, &name, a.grain).map_err(|e| s.err(e))?;
                println!("{name}");
                Ok(())
            })
        }
        SnapshotCommand::Revert(d) => {
            let s = Session::join(&d.device, &d.host)?;
            s.run(|s| {
                let mut chain = DiskChain::open(store(&s.fs), &d.path, true)
                    .map_err(|e| explain(s, &d.path, e))?;
                if chain.layers().len() < 2 {
                    return Err(s.err(format!("{}: has no snapshot to revert to", d.path)));
                }
                chain.revert().map_err(|e| s.err(e))?;
                println!("reverted {} to its parent's content", d.path);
                Ok(())
            })
        }
        SnapshotCommand::Delete(d) | SnapshotCommand::Consolidate(d) => {
            let all = matches!(c, SnapshotCommand::Consolidate(_));
            let s = Session::join(&d.device, &d.host)?;
            s.run(|s| {
                let mut chain = DiskChain::open(store(&s.fs), &d.path, true)
                    .map_err(|e| explain(s, &d.path, e))?;
                if chain.layers().len() < 2 {
                    return Err(s.err(format!("{}: has no snapshot", d.path)));
                }
                loop {
                    let n = chain.layers().len();
                    chain = chain.consolidate(n - 1).map_err(|e| s.err(e))?;
                    if !all || chain.layers().len() < 2 {
                        break;
                    }
                }
                println!("{}", chain.top().name);
                Ok(())
            })
        }
    }
}
