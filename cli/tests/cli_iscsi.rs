//! Every `vmfs` command takes a device URL: mkfs, info, hosts and locks on
//! an `iscsi://` LUN served by the workspace's target (in this process),
//! with CHAP credentials from the environment, and the errors for bad URLs.

use std::process::{Command, Output};

use iscsi_target::config::{ChapCredentials, Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;

const IQN: &str = "iqn.2024-01.org.vmfs.test:cli";

fn vmfs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmfs"));
    c.args(args);
    for v in [
        "VMFS_ISCSI_CHAP_USER",
        "VMFS_ISCSI_CHAP_SECRET",
        "VMFS_ISCSI_MUTUAL_USER",
        "VMFS_ISCSI_MUTUAL_SECRET",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run vmfs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn commands_work_on_an_iscsi_url_with_chap() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let server = Server::new(Config {
        portals: vec!["127.0.0.1:0".parse().unwrap()],
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: IQN.into(),
            luns: vec![LunConfig {
                path: img,
                read_only: false,
            }],
            initiators: vec![],
            chap: Some(ChapCredentials {
                user: "vmfs".into(),
                secret: "cli-secret-123".into(),
            }),
            mutual_chap: None,
        }],
        discovery_chap: None,
    })
    .unwrap();
    let addr = server.spawn_background().unwrap();
    let url = format!("iscsi://{addr}/{IQN}/0");
    let chap = [
        ("VMFS_ISCSI_CHAP_USER", "vmfs"),
        ("VMFS_ISCSI_CHAP_SECRET", "cli-secret-123"),
    ];

    let o = vmfs(&["info", &url], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("VMFS_ISCSI_CHAP_USER"), "{}", text(&o));
    let o = vmfs(
        &["info", &url],
        &[
            ("VMFS_ISCSI_CHAP_USER", "vmfs"),
            ("VMFS_ISCSI_CHAP_SECRET", "wrong"),
        ],
    );
    assert!(text(&o).contains("authentication failure"), "{}", text(&o));
    let o = vmfs(&["info", &url], &[("VMFS_ISCSI_CHAP_USER", "vmfs")]);
    assert!(text(&o).contains("must be set together"), "{}", text(&o));

    let o = vmfs(
        &[
            "mkfs",
            &url,
            "--label",
            "net",
            "--max-hosts",
            "8",
            "--size",
            "1G",
        ],
        &chap,
    );
    assert!(text(&o).contains("--size only applies"), "{}", text(&o));
    let o = vmfs(&["mkfs", &url, "--label", "net", "--max-hosts", "8"], &chap);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("formatted iscsi://"), "{}", text(&o));
    let o = vmfs(&["info", &url], &chap);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("net"), "{}", text(&o));
    for cmd in ["hosts", "locks"] {
        let o = vmfs(&[cmd, &url], &chap);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    }
    for (bad, why) in [
        ("iscsi://127.0.0.1/notaniqn/0", "not an iSCSI name"),
        (
            "iscsi://u:p@127.0.0.1/iqn.a:b/0",
            "credentials do not belong",
        ),
        ("nbd://x/y", "unknown scheme"),
    ] {
        let o = vmfs(&["info", bad], &chap);
        assert!(!o.status.success());
        assert!(text(&o).contains(why), "{bad}: {}", text(&o));
    }
}
