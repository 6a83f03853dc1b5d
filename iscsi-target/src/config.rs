//! Target configuration: from the command line (one target, `--lun` paths)
//! or from a TOML file describing several targets, portals, CHAP and ACLs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// CHAP credentials (the secret is never printed by Debug).
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub iqn: String,
    #[serde(default, rename = "lun")]
    pub luns: Vec<LunConfig>,
    /// Initiator names allowed to log in and discover this target (empty: any).
    #[serde(default)]
    pub initiators: Vec<String>,
    /// Credentials the initiator must present (one-way CHAP).
    pub chap: Option<ChapCredentials>,
    /// Credentials the target presents back (mutual CHAP).
    pub mutual_chap: Option<ChapCredentials>,
}

impl TargetConfig {
    pub fn allows(&self, initiator: &str) -> bool {
        self.initiators.is_empty() || self.initiators.iter().any(|i| i == initiator)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on.
    #[serde(default = "default_portals")]
    pub portals: Vec<SocketAddr>,
    #[serde(default = "default_tpgt")]
    pub tpgt: u16,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// CHAP credentials required for discovery sessions (optional).
    pub discovery_chap: Option<ChapCredentials>,
    /// I/O worker threads per LUN (commands that may block run there).
    #[serde(default = "default_io_workers")]
    pub io_workers: usize,
}

fn default_portals() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 3260))]
}
fn default_tpgt() -> u16 {
    1
}
pub fn default_io_workers() -> usize {
    crate::io_pool::DEFAULT_WORKERS
}

fn valid_name(n: &str) -> bool {
    (n.starts_with("iqn.") || n.starts_with("eui.") || n.starts_with("naa."))
        && n.len() <= 223
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
}

impl Config {
    pub fn from_toml(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        // Relative LUN paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for t in &mut c.targets {
            for l in &mut t.luns {
                if l.path.is_relative() {
                    l.path = base.join(&l.path);
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.portals.is_empty() {
            return Err(ConfigError::Invalid("no portals".into()));
        }
        if self.targets.is_empty() {
            return Err(ConfigError::Invalid("no targets".into()));
        }
        if !(1..=1024).contains(&self.io_workers) {
            return Err(ConfigError::Invalid(format!(
                "io_workers = {}: must be 1 to 1024",
                self.io_workers
            )));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !valid_name(&t.iqn) {
                return Err(ConfigError::Invalid(format!(
                    "target name {:?} is not a valid iSCSI name",
                    t.iqn
                )));
            }
            if self.targets[..i].iter().any(|o| o.iqn == t.iqn) {
                return Err(ConfigError::Invalid(format!(
                    "target {} listed twice",
                    t.iqn
                )));
            }
            if t.luns.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "target {} has no LUNs",
                    t.iqn
                )));
            }
            if t.mutual_chap.is_some() && t.chap.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "target {}: mutual_chap needs chap",
                    t.iqn
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(
            &p,
            r#"
portals = ["127.0.0.1:3261"]
[[target]]
iqn = "iqn.2024-01.test:a"
initiators = ["iqn.2024-01.test:host1"]
chap = { user = "u", secret = "s3cr3t-s3cr3t" }
[[target.lun]]
path = "a.img"
"#,
        )
        .unwrap();
        let c = Config::from_toml(&p).unwrap();
        assert_eq!(c.targets[0].luns[0].path, dir.path().join("a.img"));
        assert!(c.targets[0].allows("iqn.2024-01.test:host1"));
        assert!(!c.targets[0].allows("iqn.2024-01.test:other"));
        assert!(!format!("{:?}", c).contains("s3cr3t"));
        assert_eq!(c.io_workers, crate::io_pool::DEFAULT_WORKERS);
        std::fs::write(
            &p,
            "io_workers = 0\n[[target]]\niqn = \"iqn.2024-01.test:a\"\n[[target.lun]]\npath=\"x\"\n",
        )
        .unwrap();
        let e = Config::from_toml(&p).unwrap_err().to_string();
        assert!(e.contains("io_workers"), "{e}");
        std::fs::write(
            &p,
            "[[target]]\niqn = \"bad name\"\n[[target.lun]]\npath=\"x\"\n",
        )
        .unwrap();
        assert!(Config::from_toml(&p).is_err());
    }
}
