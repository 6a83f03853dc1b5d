//! `DIR/up.json`: what a running `vmfs up` serves, for `vmfs status`. Written
//! atomically (temporary file + rename) whenever a service changes; removed
//! on a clean exit. A file whose process is gone is reported as stale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "up.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    /// `fuse`, `iscsi` or `nfs`.
    pub name: String,
    /// `running`, `failed`, `disabled` or `stopped`.
    pub state: String,
    /// Mount point, portal(s) or listen address.
    pub endpoint: String,
    /// What to run to use it, or why it is not running.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpState {
    pub pid: u32,
    pub started_unix: u64,
    pub image: PathBuf,
    pub label: String,
    pub host_slot: u32,
    pub hb_gen: u64,
    pub services: Vec<ServiceState>,
}

impl UpState {
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The state file in `dir`, if there is one (`Err` if it is unreadable).
    pub fn read(dir: &Path) -> Result<Option<UpState>, String> {
        let path = dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
    }

    /// Is the process that wrote this still a `vmfs` process?
    pub fn process_alive(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .is_some_and(|a| a.ends_with(b"vmfs"))
            })
            .unwrap_or(false)
    }
}
