//! The gateway's TOML configuration (several exports).
//!
//! ```toml
//! listen = "127.0.0.1:2049"   # loopback unless configured
//! rpcbind = true               # register with a local rpcbind if one runs
//!
//! [[export]]
//! name = "vol1"                # mounted as /vol1
//! dir = "/srv/vol1"            # LocalDirBackend
//! clients = ["127.0.0.0/8", "10.0.0.0/8"]
//! root_squash = true
//! read_only = false
//! ```

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
    pub name: String,
    /// Directory served by the local backend.
    pub dir: PathBuf,
    /// Allowed client networks; default loopback only.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    #[serde(default = "default_true")]
    pub root_squash: bool,
    #[serde(default)]
    pub read_only: bool,
}

impl ExportConfig {
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
            e.options()?;
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
    }
}
