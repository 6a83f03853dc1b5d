//! Driving fio and reading its JSON output.

use std::path::Path;
use std::process::Command;

/// One fio job.
#[derive(Debug, Clone)]
pub struct FioJob {
    pub rw: &'static str,
    pub block_size: &'static str,
    pub iodepth: u32,
    pub ioengine: &'static str,
    pub direct: bool,
    pub size: u64,
    pub runtime_secs: u32,
    /// Leave the file's page cache alone (fio drops it before each run by
    /// default, `invalidate=1`), for comparisons with servers reading the
    /// same cached file.
    pub keep_cache: bool,
}

/// What fio measured for the job's direction.
#[derive(Debug, Clone, Copy)]
pub struct FioResult {
    pub iops: f64,
    pub mib_per_s: f64,
}

/// Run `job` against `file` (created by fio if absent) and parse the result.
pub fn run(fio: &Path, file: &Path, job: &FioJob) -> Result<FioResult, String> {
    run_pinned(fio, file, job, None)
}

/// [`run`] with fio's threads kept to `cpus` (`--cpus_allowed`), if given.
pub fn run_pinned(
    fio: &Path,
    file: &Path,
    job: &FioJob,
    cpus: Option<&str>,
) -> Result<FioResult, String> {
    let mut cmd = Command::new(fio);
    if let Some(c) = cpus {
        cmd.arg(format!("--cpus_allowed={c}"));
    }
    let out = cmd
        .arg("--name=bench")
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.block_size))
        .arg(format!("--iodepth={}", job.iodepth))
        .arg(format!("--ioengine={}", job.ioengine))
        .arg(format!("--direct={}", u8::from(job.direct)))
        .arg(format!("--size={}", job.size))
        .arg(format!("--runtime={}", job.runtime_secs))
        .arg("--time_based=1")
        .arg("--randrepeat=0")
        .arg(format!("--invalidate={}", u8::from(!job.keep_cache)))
        .arg("--group_reporting=1")
        .arg("--output-format=json")
        .output()
        .map_err(|e| format!("running fio: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fio {} bs={} qd={} failed: {}",
            job.rw,
            job.block_size,
            job.iodepth,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse(&out.stdout, job.rw)
}

/// Parse fio's `--output-format=json` for the direction `rw` implies.
pub fn parse(json: &[u8], rw: &str) -> Result<FioResult, String> {
    // fio may print warnings before the JSON document.
    let start = json
        .iter()
        .position(|&b| b == b'{')
        .ok_or("fio printed no JSON")?;
    let v: serde_json::Value =
        serde_json::from_slice(&json[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let dir = if rw.contains("write") {
        "write"
    } else {
        "read"
    };
    let job = &v["jobs"][0][dir];
    let iops = job["iops"].as_f64().ok_or("fio JSON lacks iops")?;
    let bw_kib = job["bw"].as_f64().ok_or("fio JSON lacks bw")?;
    Ok(FioResult {
        iops,
        mib_per_s: bw_kib / 1024.0,
    })
}

/// Write `size` bytes of data into `file` so that reads measure real data,
/// not holes.
pub fn prefill(fio: &Path, file: &Path, size: u64) -> Result<(), String> {
    let status = Command::new(fio)
        .arg("--name=prefill")
        .arg(format!("--filename={}", file.display()))
        .args(["--rw=write", "--bs=1M", "--ioengine=psync", "--end_fsync=1"])
        .arg(format!("--size={size}"))
        .arg("--output=/dev/null")
        .status()
        .map_err(|e| format!("running fio prefill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("fio prefill of {} failed", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_json_with_leading_noise() {
        let doc = br#"note: something
{"jobs":[{"read":{"iops":1234.5,"bw":4938},"write":{"iops":0,"bw":0}}]}"#;
        let r = parse(doc, "randread").unwrap();
        assert_eq!(r.iops, 1234.5);
        assert!((r.mib_per_s - 4938.0 / 1024.0).abs() < 1e-9);
        assert!(parse(b"garbage", "read").is_err());
    }
}
