//! The benchmark suites. Each issue adds its suite here.

pub mod disk;
pub mod locks;
pub mod nfs;
pub mod raw;

use crate::harness::Row;
use crate::Config;

/// A suite: a name and the function that runs its cases.
pub struct Suite {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Config) -> Result<Vec<Row>, String>,
}

/// Every suite the harness knows, in the order `all` runs them.
pub fn all() -> Vec<Suite> {
    vec![Suite {
        name: "raw",
        about: "fio on the raw backing file: the physical limit of this machine",
        run: raw::run,
    },
    Suite {
        name: "locks",
        about: "lock acquire+release rate vs raw CAS, heartbeat I/O per beat with 10,000 locks held, takeover time",
        run: locks::run,
    },
    Suite {
        name: "disk",
        about: "VirtualDisk 4k random IOPS vs fio on a raw file, thin first-write cost, clone time vs data written",
        run: disk::run,
    },
    Suite {
        name: "nfs",
        about: "nfs-cp 1 GiB write and read through nfs-gw (vmfs image) vs nfs-ganesha VFS (plain directory), same disk",
        run: nfs::run,
    }]
}
