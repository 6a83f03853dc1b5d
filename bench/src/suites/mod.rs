//! The benchmark suites. Each issue adds its suite here.

pub mod disk;
pub mod fsck;
pub mod fuse;
pub mod initiator;
pub mod iscsi;
pub mod locks;
pub mod meta;
pub mod nfs;
pub mod raw;
pub mod scale;
pub mod vhost;

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
    },
    Suite {
        name: "vhost",
        about: "4k random IOPS through the vhost-user-blk daemon (QD1, QD32 over 2 queues) vs fio on the raw backing file",
        run: vhost::run,
    },
    Suite {
        name: "fsck",
        about: "vmfs-fsck on 100,000 files on a 1 TiB thin image, e2fsck -fn on ext4 as a reference",
        run: fsck::run,
    },
    Suite {
        name: "scale",
        about: "heartbeat cost with 128 hosts joined and 10,000 locks held; dead-host scan with 127 peers",
        run: scale::run,
    },
    Suite {
        name: "initiator",
        about: "IscsiDev: lock latency over iSCSI vs a local file, 4 KiB random-read IOPS vs libiscsi's iscsi-perf",
        run: initiator::run,
    },
    Suite {
        name: "iscsi",
        about: "iscsi-target vs tgt on one file over loopback (iscsi-perf reads, rust-initiator writes) and fio io_uring on the raw file",
        run: iscsi::run,
    },
    Suite {
        name: "fuse",
        about: "fio 4k random QD1 and 1 MiB sequential on a vmfs mount vs bindfs vs the native directory",
        run: fuse::run,
    },
    Suite {
        name: "meta",
        about: "create / stat / unlink rates on a vmfs mount vs the native directory and bindfs",
        run: meta::run,
    }]
}
