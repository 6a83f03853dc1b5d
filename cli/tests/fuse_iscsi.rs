//! `vmfs mount` of an `iscsi://` LUN (the workspace's target, in this
//! process): two mounts through `IscsiDev`, each registering its own
//! persistent-reservation key; bytes fsynced through one read back through
//! the other and the kernel; the volume checks clean afterwards.

mod fuse_util;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use fuse_util::{check_image, fuse_ready, mount};
use iscsi_target::config::{Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;
use vmfs::cluster::Timeouts;
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::volume::{mkfs, MkfsOptions};

const IQN: &str = "iqn.2024-01.org.vmfs.test:fuse";

#[test]
fn two_mounts_over_iscsi_share_a_file() {
    if !fuse_ready("fuse_iscsi") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let dev: SharedDev = Arc::new(
        FileDev::open(
            &img,
            FileDevOptions {
                create_size: Some(1 << 30),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    // Timeouts scaled by 0.1 (T = 800 ms): generous for loopback iSCSI on a
    // loaded machine.
    mkfs(
        &dev,
        &MkfsOptions {
            label: "fuseiscsi".into(),
            max_hosts: 4,
            journal_size: 1 << 20,
            timeouts: Timeouts::scaled(0.1).to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    dev.flush().unwrap();
    drop(dev);
    let server = Server::new(Config {
        portals: vec!["127.0.0.1:0".parse().unwrap()],
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: IQN.into(),
            luns: vec![LunConfig {
                path: img.clone(),
                read_only: false,
            }],
            initiators: vec![],
            chap: None,
            mutual_chap: None,
        }],
        discovery_chap: None,
    })
    .unwrap();
    let addr = server.spawn_background().unwrap();
    let url = format!("iscsi://{addr}/{IQN}/0");
    let a = mount(Path::new(&url), &dir.path().join("a"), "iscsi-a");
    let b = mount(Path::new(&url), &dir.path().join("b"), "iscsi-b");
    let data: Vec<u8> = (0..(2 << 20) + 777)
        .map(|i: usize| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    {
        let mut f = std::fs::File::create(a.mountpoint.join("over-iscsi.bin")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let mut seen = Vec::new();
    std::fs::File::open(b.mountpoint.join("over-iscsi.bin"))
        .unwrap()
        .read_to_end(&mut seen)
        .unwrap();
    assert!(
        seen == data,
        "B read {} bytes, different from A's",
        seen.len()
    );
    let (sa, oa) = a.stop();
    let (sb, ob) = b.stop();
    assert!(sa.success(), "{oa}");
    assert!(sb.success(), "{ob}");
    let r = check_image(&img);
    println!("two iSCSI mounts: {} inodes, clean", r.inodes);
}
