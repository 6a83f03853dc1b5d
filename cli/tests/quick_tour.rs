//! The README's quick tour, executed verbatim: the block between
//! `<!-- quick-tour:begin -->` and `<!-- quick-tour:end -->` is run line by
//! line (bash, `vmfs` on PATH) next to a running `vmfs up` on the default
//! ports, so the README can never drift from what the product does.

mod fuse_util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn tour_lines() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let start = text
        .find("<!-- quick-tour:begin -->")
        .expect("README has a quick-tour:begin marker");
    let end = text
        .find("<!-- quick-tour:end -->")
        .expect("README has a quick-tour:end marker");
    let block = &text[start..end];
    let code = block
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the quick tour is one ```sh block");
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn readme_quick_tour_runs_verbatim() {
    if !fuse_util::fuse_ready("readme_quick_tour") {
        return;
    }
    for (port, what) in [(3260, "iSCSI"), (2049, "NFS")] {
        assert!(
            port_free(port),
            "the quick tour uses the default {what} port {port}, which is taken on this machine"
        );
    }
    let lines = tour_lines();
    assert!(lines.len() >= 5, "quick tour too short: {lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vmfs"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The README's run command, `cargo run --release -p vmfs -- up`, is this
    // binary with `up` and no other argument.
    let mut up = Command::new(&bin)
        .arg("up")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(up.stdout.take().unwrap());
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(!banner.contains("NOT RUNNING"), "{banner}");
    let mut transcript = String::new();
    let mut outputs = Vec::new();
    for line in &lines {
        let o = Command::new("bash")
            .args(["-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        transcript.push_str(&format!("$ {line}\n{text}"));
        assert!(
            o.status.success(),
            "quick-tour line failed ({}):\n{transcript}",
            o.status
        );
        outputs.push((line.clone(), text));
    }
    println!("{transcript}");
    let find = |prefix: &str| -> &str {
        outputs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("the quick tour has no `{prefix}` line"))
    };
    let q = find("qemu-img info");
    assert!(q.contains("file format: vmdk"), "{q}");
    assert!(q.contains("virtual size: 10 GiB"), "{q}");
    let i = find("iscsi-ls");
    assert!(
        i.contains("iqn.2026-11.org.vmfs:datastore1") && i.contains("Lun:0"),
        "{i}"
    );
    let n = find("nfs-ls");
    assert!(n.contains("vm1"), "{n}");
    let s = find("vmfs status");
    assert!(
        s.matches(" alive").count() >= 2,
        "two live hosts expected:\n{s}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(up.id() as libc::pid_t, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = up.wait().unwrap();
    assert!(st.success(), "vmfs up exited {st}:\n{banner}{rest}");
}
