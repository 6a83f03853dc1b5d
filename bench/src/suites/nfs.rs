//! `nfs`: `nfs-cp` of a random file into and out of `nfs-gw` exporting a
//! fresh vmfs image, against nfs-ganesha (VFS FSAL) exporting a plain
//! directory on the same filesystem. Both are driven by the same libnfs
//! client over loopback, alternately. 1 GiB (32 MiB with `--quick`);
//! reads land in a local file on the same disk for both (then deleted).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::volume::{mkfs, MkfsOptions};

use crate::ganesha::Ganesha;
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::{tools, Config};

const LABEL: &str = "benchds";

/// `nfs-gw IMAGE` on a free loopback port.
struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    fn start(bin: &Path, img: &Path, dir: &Path) -> Result<Gateway, String> {
        let mut child = Command::new(bin)
            .arg(img)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-rpcbind",
                "--no-root-squash",
            ])
            .arg("--host-id-file")
            .arg(dir.join("nfs-gw.host-id"))
            .env("NFS_GW_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting nfs-gw: {e}"))?;
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().ok_or("nfs-gw stdout")?);
        out.read_line(&mut line)
            .map_err(|e| format!("reading nfs-gw's banner: {e}"))?;
        // Keep its stdout open (and drained) for the rest of its life.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("nfs-gw printed {line:?} instead of its address"))?;
        Ok(Gateway { child, port })
    }

    fn url(&self, name: &str) -> String {
        format!(
            "nfs://127.0.0.1/{LABEL}/{name}?nfsport={}&mountport={}",
            self.port, self.port
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM: the gateway leaves the volume cleanly.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn make_image(img: &Path, size: u64) -> Result<(), String> {
    let _ = std::fs::remove_file(img);
    let dev: SharedDev = Arc::new(
        FileDev::open(
            img,
            FileDevOptions {
                create_size: Some(size),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let opts = MkfsOptions {
        label: LABEL.into(),
        ..Default::default()
    };
    mkfs(&dev, &opts, false).map_err(|e| e.to_string())?;
    Ok(())
}

fn random_file(path: &Path, len: u64) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for w in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    f.flush().map_err(|e| e.to_string())
}

/// Runs `nfs-cp from to`; returns MiB/s for `len` bytes.
fn timed_cp(nfs_cp: &Path, from: &str, to: &str, len: u64) -> Result<f64, String> {
    let t = Instant::now();
    let out = Command::new(nfs_cp)
        .args([from, to])
        .output()
        .map_err(|e| format!("nfs-cp: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "nfs-cp {from} {to}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(len as f64 / (1 << 20) as f64 / secs)
}

/// Copies `url` out to the local file `to` (removed after); MiB/s.
fn read_out(nfs_cp: &Path, url: &str, to: &str, len: u64) -> Result<f64, String> {
    let _ = std::fs::remove_file(to);
    let r = timed_cp(nfs_cp, url, to, len);
    let _ = std::fs::remove_file(to);
    r
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let nfs_cp = tools::ensure("nfs-cp", "libnfs-utils")?;
    let gw_bin = tools::workspace_bin("nfs-gw", "nfs-gw")?;
    let len: u64 = if cfg.quick { 32 << 20 } else { 1 << 30 };
    let dir = std::fs::canonicalize(&cfg.work_dir)
        .map_err(|e| format!("{}: {e}", cfg.work_dir.display()))?
        .join("nfs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("src.bin");
    random_file(&src, len)?;
    let src_s = src
        .to_str()
        .ok_or("work directory is not UTF-8")?
        .to_string();
    // Written files are kept until the end (libnfs-utils has no nfs-rm):
    // room for every write sample and the read file, thin.
    let img = dir.join("vmfs.img");
    let copies = cfg.repeats as u64 + 2;
    make_image(&img, (len * copies + (1 << 30)).max(4 << 30))?;
    let gw = Gateway::start(&gw_bin, &img, &dir)?;
    let ganesha = Ganesha::start(&dir, &dir.join("ganesha-export"));
    if let Err(e) = &ganesha {
        eprintln!("bench: nfs: the nfs-ganesha anchor cannot run here: {e}");
    }
    let anchor_err = ganesha.as_ref().err().cloned();
    let mb = len >> 20;
    let mut rows = Vec::new();

    // Write: a new file per sample (nfs-cp creates GUARDED).
    let mut n_ours = 0;
    let mut n_anchor = 0;
    let case = Case {
        suite: "nfs",
        name: format!("nfs-cp {mb} MiB write"),
        unit: "MiB/s",
        better: Better::Higher,
        baseline: "nfs-ganesha VFS".into(),
        subjects: vec![
            Subject {
                name: "nfs-gw (vmfs)".into(),
                run: Box::new(|| {
                    n_ours += 1;
                    timed_cp(&nfs_cp, &src_s, &gw.url(&format!("w{n_ours}.bin")), len)
                }),
            },
            Subject {
                name: "nfs-ganesha VFS".into(),
                run: Box::new(|| {
                    let g = ganesha.as_ref().map_err(|e| e.clone())?;
                    n_anchor += 1;
                    let name = format!("w{n_anchor}.bin");
                    let r = timed_cp(&nfs_cp, &src_s, &g.url(&name), len);
                    let _ = std::fs::remove_file(g.export.join(&name));
                    r
                }),
            },
        ],
    };
    rows.extend(run_case(case, cfg.repeats));

    // Read: one uploaded file each, copied out to a local file.
    let out_s = dir
        .join("out.bin")
        .to_str()
        .ok_or("work directory is not UTF-8")?
        .to_string();
    let setup = timed_cp(&nfs_cp, &src_s, &gw.url("r.bin"), len).err();
    let anchor_setup = match &ganesha {
        Ok(g) => timed_cp(&nfs_cp, &src_s, &g.url("r.bin"), len).err(),
        Err(_) => None,
    };
    let case = Case {
        suite: "nfs",
        name: format!("nfs-cp {mb} MiB read"),
        unit: "MiB/s",
        better: Better::Higher,
        baseline: "nfs-ganesha VFS".into(),
        subjects: vec![
            Subject {
                name: "nfs-gw (vmfs)".into(),
                run: Box::new(|| match &setup {
                    Some(e) => Err(format!("uploading the read file: {e}")),
                    None => read_out(&nfs_cp, &gw.url("r.bin"), &out_s, len),
                }),
            },
            Subject {
                name: "nfs-ganesha VFS".into(),
                run: Box::new(|| {
                    let g = ganesha.as_ref().map_err(|e| e.clone())?;
                    if let Some(e) = &anchor_setup {
                        return Err(format!("uploading the read file: {e}"));
                    }
                    read_out(&nfs_cp, &g.url("r.bin"), &out_s, len)
                }),
            },
        ],
    };
    rows.extend(run_case(case, cfg.repeats));
    drop(gw);
    drop(ganesha);
    if let Some(e) = anchor_err {
        println!("- nfs: anchor nfs-ganesha did not run: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}
