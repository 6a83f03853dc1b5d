//! Finding (and, as root, installing) the external programs a suite needs.

use std::path::PathBuf;
use std::process::Command;

/// Locate `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Make sure `program` (from Debian package `package`) is there: install it
/// with apt-get when running as root, otherwise say what is missing.
pub fn ensure(program: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(p) = which(program) {
        return Ok(p);
    }
    if !is_root() {
        return Err(format!(
            "`{program}` not found; install the Debian package `{package}` (needs root)"
        ));
    }
    eprintln!("bench: installing {package} for {program}");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get install {package}: {e}"))?;
    if !status.success() {
        // The package lists may be missing on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get install {package}: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get install {package} failed ({status})"));
        }
    }
    which(program).ok_or_else(|| format!("{package} installed but `{program}` still not on PATH"))
}

/// One of this workspace's own binaries (`iscsi-target`, `nfs-gw`, `vmfs`,
/// `vmfs-fsck`…), built with the release profile. The bench runs from
/// `target/release/bench`, so siblings live next to it; a missing one is
/// built once with `cargo build --release -p PACKAGE --bin NAME`.
#[allow(dead_code)] // used by the iscsi/nfs/fuse/fsck suites as they land
pub fn workspace_bin(package: &str, name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("bench: building {name} (cargo build --release -p {package} --bin {name})");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", package, "--bin", name])
        .status()
        .map_err(|e| format!("cargo build -p {package}: {e}"))?;
    if !status.success() || !path.is_file() {
        return Err(format!(
            "could not build `{name}` from package `{package}` ({status}); expected at {}",
            path.display()
        ));
    }
    Ok(path)
}
