//! `vmfs disk info`: what a disk is and who holds it (works while a VM
//! runs: reads follow the writer without taking its lock).

use std::sync::Arc;

use vmfs::cluster::read_lock;
use vmfs::disk::{FsStore, ReadLock, WriteLock};
use vmfs::vmdk::{DiskChain, ExtentStore};

use super::DiskPath;
use crate::session::Session;
use crate::units::human;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub disk: DiskPath,
}

pub fn run(a: &InfoArgs) -> Result<(), String> {
    let s = Session::join(&a.disk.device, &a.disk.host)?;
    s.run(|s| {
        let path = &a.disk.path;
        let st = Arc::new(FsStore::new(
            s.fs.clone(),
            WriteLock::Exclusive,
            ReadLock::Follow,
        ));
        let store: Arc<dyn ExtentStore> = st.clone();
        let chain = DiskChain::open(store, path, false).map_err(|e| s.err(e))?;
        let top = chain.top();
        println!("disk:         {path}");
        println!(
            "capacity:     {} ({} bytes)",
            human(chain.capacity()),
            chain.capacity()
        );
        println!("createType:   {}", top.descriptor.create_type.name());
        let base = &chain.layers()[0];
        println!("provisioning: {}", base.descriptor.provisioning().name());
        println!("chain:        {} disk(s), base first", chain.layers().len());
        let vol = s.host.volume();
        for l in chain.layers() {
            println!(
                "  {}  CID={:08x} parentCID={:08x}",
                l.name, l.descriptor.cid, l.descriptor.parent_cid
            );
            for f in l.file_names() {
                if f == l.name {
                    continue;
                }
                let ino = st.lookup(&f).map_err(|e| s.err(format!("{f}: {e}")))?;
                let attr = s.fs.getattr(ino).map_err(|e| s.err(format!("{f}: {e}")))?;
                // This command's own SHARED_READ (taken to read the disk)
                // is not shown: it is gone when the command exits.
                let me = s.host.holder();
                let lock = read_lock(vol.dev.as_ref(), vol.inode_addr(ino))
                    .map(|r| {
                        let others: Vec<_> = r.holders.iter().filter(|h| **h != me).collect();
                        if others.is_empty() {
                            "free (not in use)".to_string()
                        } else {
                            let hs: Vec<String> = others
                                .iter()
                                .map(|h| format!("slot {} gen {}", h.slot, h.hb_gen))
                                .collect();
                            format!("{:?} by {}", r.mode, hs.join(", "))
                        }
                    })
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                println!(
                    "    {f}: {} allocated of {}; lock {lock}",
                    human(attr.allocated),
                    human(attr.size)
                );
            }
        }
        Ok(())
    })
}
