//! The gateway's TOML configuration (several exports).
//!
//! ```toml
//! listen = "127.0.0.1:2049"   # loopback unless configured
//! rpcbind = true               # register with a local rpcbind if one runs
//!
//! [[export]]                   # a vmfs datastore: the gateway joins it as a host
//! device = "/dev/sdb"          # image file or block device
//! host_id_file = "/var/lib/nfs-gw/sdb.host-id"  # default: DEVICE.nfs-gw-host-id
//! idle_close_ms = 3000         # close files unused this long (default 3000)
//! clients = ["127.0.0.0/8", "10.0.0.0/8"]
//! root_squash = true
//! read_only = false
//!
//! [[export]]
//! name = "vol1"                # mounted as /vol1
//! dir = "/srv/vol1"            # LocalDirBackend
//! ```
//!
//! A vmfs export is named by its volume label (`name`, if given, must match
//! it); a directory export needs `name`. Exactly one of `device` and `dir`.

use crate::export::{Cidr, ExportOptions};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("config {path}: {err}")]
    Parse { path: String, err: toml::de::Error },
    #[error("config: export {name:?}: {what}")]
    Export { name: String, what: String },
    #[error("config: no exports")]
    NoExports,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2049))
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_true")]
    pub rpcbind: bool,
    #[serde(rename = "export", default)]
    pub exports: Vec<ExportConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Export name (mounted as `/NAME`); for a device, its volume label.
    #[serde(default)]
    pub name: String,
    /// Directory served by the local backend.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// vmfs device (image file or block device) the gateway joins as a host.
    #[serde(default)]
    pub device: Option<String>,
    /// Where the gateway's host identity for `device` is kept.
    #[serde(default)]
    pub host_id_file: Option<PathBuf>,
    /// Idle time after which a file opened for NFS is closed, in ms.
    #[serde(default)]
    pub idle_close_ms: Option<u64>,
    /// Allowed client networks; default loopback only.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    #[serde(default = "default_true")]
    pub root_squash: bool,
    #[serde(default)]
    pub read_only: bool,
}

impl ExportConfig {
    /// The host-id file of a device export: as configured, or beside the
    /// device (`DEVICE.nfs-gw-host-id`).
    pub fn host_id_path(&self) -> Option<PathBuf> {
        let dev = self.device.as_ref()?;
        Some(
            self.host_id_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{dev}.nfs-gw-host-id"))),
        )
    }

    pub fn options(&self) -> Result<ExportOptions, ConfigError> {
        let mut o = ExportOptions {
            root_squash: self.root_squash,
            read_only: self.read_only,
            ..ExportOptions::default()
        };
        if let Some(cs) = &self.clients {
            o.clients = cs
                .iter()
                .map(|c| c.parse::<Cidr>())
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Export {
                    name: self.name.clone(),
                    what: e.to_string(),
                })?;
        }
        Ok(o)
    }
}

impl Config {
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.into(),
            err,
        })?;
        if c.exports.is_empty() {
            return Err(ConfigError::NoExports);
        }
        let mut seen = std::collections::HashSet::new();
        for e in &c.exports {
            let bad = |what: &str| ConfigError::Export {
                name: e.name.clone(),
                what: what.into(),
            };
            e.options()?;
            match (&e.dir, &e.device) {
                (Some(_), Some(_)) => return Err(bad("give either dir or device, not both")),
                (None, None) => return Err(bad("give dir or device")),
                (Some(_), None) if e.host_id_file.is_some() || e.idle_close_ms.is_some() => {
                    return Err(bad("host_id_file and idle_close_ms are for device exports"))
                }
                // The name of a device export is its label, checked at join.
                (None, Some(_)) if e.name.is_empty() => continue,
                _ => {}
            }
            let p = crate::export::export_path(&e.name);
            if p == "/" || p.contains("//") {
                return Err(ConfigError::Export {
                    name: e.name.clone(),
                    what: "empty export name".into(),
                });
            }
            if !seen.insert(p) {
                return Err(ConfigError::Export {
                    name: e.name.clone(),
                    what: "duplicate export name".into(),
                });
            }
        }
        Ok(c)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: p.clone(),
            err,
        })?;
        Config::parse(&text, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_exports() {
        let c = Config::parse(
            r#"
listen = "0.0.0.0:2050"
[[export]]
name = "a"
dir = "/tmp/a"
[[export]]
name = "b"
dir = "/tmp/b"
clients = ["10.0.0.0/8"]
root_squash = false
read_only = true
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 2050);
        assert_eq!(c.exports.len(), 2);
        let o = c.exports[1].options().unwrap();
        assert!(o.read_only && !o.root_squash);
        assert_eq!(o.clients[0].prefix, 8);
        assert!(c.exports[0].options().unwrap().root_squash);
        assert!(Config::parse("[[export]]\nname='a'\ndir='/x'\nclients=['bad']", "t").is_err());
        assert!(Config::parse("", "t").is_err());
        assert!(Config::parse(
            "[[export]]\nname='a'\ndir='/x'\n[[export]]\nname='/a'\ndir='/y'",
            "t"
        )
        .is_err());
        // Device exports: named by their label, exactly one source.
        let c = Config::parse(
            "[[export]]\ndevice='/img'\nidle_close_ms=500\n[[export]]\nname='d'\ndir='/d'",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.exports[0].host_id_path().unwrap(),
            PathBuf::from("/img.nfs-gw-host-id")
        );
        assert!(c.exports[1].host_id_path().is_none());
        assert!(Config::parse("[[export]]\nname='a'\ndir='/x'\ndevice='/y'", "t").is_err());
        assert!(Config::parse("[[export]]\nname='a'", "t").is_err());
        assert!(Config::parse("[[export]]\nname='a'\ndir='/x'\nidle_close_ms=1", "t").is_err());
    }
}
