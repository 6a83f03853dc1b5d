//! Exports: a name clients mount, a backend, and access options.

use crate::backend::{Backend, Caller};
use crate::fhandle::export_id;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use thiserror::Error;

/// uid/gid that squashed root (and AUTH_NONE) callers become.
pub const NOBODY: u32 = 65534;

/// An IPv4 or IPv6 network in CIDR form, e.g. `10.0.0.0/8`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("bad network address in {0:?}")]
    BadAddr(String),
    #[error("bad prefix length in {0:?}")]
    BadPrefix(String),
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError::BadAddr(s.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| CidrError::BadPrefix(s.into()))?,
        };
        if prefix > max {
            return Err(CidrError::BadPrefix(s.into()));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Per-export access options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Networks allowed to mount and use the export. Empty = nobody.
    pub clients: Vec<Cidr>,
    /// Map uid 0 to [`NOBODY`] (default on, as with knfsd).
    pub root_squash: bool,
    /// Refuse every modifying procedure with NFS3ERR_ROFS.
    pub read_only: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            clients: vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            root_squash: true,
            read_only: false,
        }
    }
}

/// One exported filesystem.
pub struct Export {
    /// The path clients mount: `/` followed by the export (volume) name.
    pub path: String,
    /// Handle prefix identifying this export.
    pub id: u64,
    pub backend: Arc<dyn Backend>,
    pub options: ExportOptions,
}

impl fmt::Debug for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("path", &self.path)
            .field("id", &format_args!("{:#x}", self.id))
            .field("options", &self.options)
            .finish()
    }
}

/// Turns an export name (`vol1` or `/vol1`) into its mount path `/vol1`.
pub fn export_path(name: &str) -> String {
    format!("/{}", name.trim_matches('/'))
}

impl Export {
    pub fn new(name: &str, backend: Arc<dyn Backend>, options: ExportOptions) -> Export {
        let path = export_path(name);
        Export {
            id: export_id(&path),
            path,
            backend,
            options,
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.options.clients.iter().any(|c| c.contains(ip))
    }

    /// The caller as this export sees it (root squashed if configured).
    pub fn effective_caller(&self, c: &Caller) -> Caller {
        if self.options.root_squash && c.uid == 0 {
            Caller {
                uid: NOBODY,
                gid: NOBODY,
                gids: vec![],
            }
        } else if self.options.root_squash && c.gid == 0 {
            Caller {
                uid: c.uid,
                gid: NOBODY,
                gids: c.gids.iter().copied().filter(|&g| g != 0).collect(),
            }
        } else {
            c.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.prefix, 32);
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
        assert_eq!(export_path("vol"), "/vol");
        assert_eq!(export_path("/vol/"), "/vol");
    }
}
