//! Device URLs: a path, or `iscsi://HOST[:PORT]/IQN/LUN`. Shared by the
//! `vmfs` command, the gateways and the tests.

use std::path::PathBuf;

/// Default iSCSI port (RFC 7143 §13.16).
pub const ISCSI_PORT: u16 = 3260;

/// Where a device lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceUrl {
    /// An image file or block special file.
    Path(PathBuf),
    Iscsi(IscsiUrl),
}

/// `iscsi://HOST[:PORT]/IQN/LUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Host name, IPv4 address, or IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    pub target: String,
    pub lun: u16,
}

impl IscsiUrl {
    /// `host:port` for connecting (IPv6 in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iscsi://{}/{}/{}", self.addr(), self.target, self.lun)
    }
}

/// A device URL that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device URL {url:?}: {why} (expected a path or iscsi://HOST[:PORT]/IQN/LUN)")]
pub struct UrlError {
    pub url: String,
    pub why: String,
}

fn valid_iscsi_name(n: &str) -> bool {
    (n.starts_with("iqn.") || n.starts_with("eui.") || n.starts_with("naa."))
        && n.len() <= 223
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
}

impl DeviceUrl {
    pub fn parse(spec: &str) -> Result<DeviceUrl, UrlError> {
        let err = |why: &str| UrlError {
            url: spec.to_string(),
            why: why.to_string(),
        };
        let Some((scheme, rest)) = spec.split_once("://") else {
            if spec.is_empty() {
                return Err(err("empty"));
            }
            return Ok(DeviceUrl::Path(PathBuf::from(spec)));
        };
        if !scheme.eq_ignore_ascii_case("iscsi") {
            return Err(err(&format!("unknown scheme {scheme:?}")));
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| err("missing /IQN/LUN after the host"))?;
        if authority.contains('@') {
            return Err(err(
                "credentials do not belong in the URL; set VMFS_ISCSI_CHAP_USER and VMFS_ISCSI_CHAP_SECRET",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unterminated [IPv6] host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ]"))?),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("bad IPv6 address in brackets"));
            }
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(err("bad host name"));
        }
        let port = match port {
            None => ISCSI_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(err(&format!("bad port {p:?}"))),
            },
        };
        let (target, lun) = path
            .rsplit_once('/')
            .ok_or_else(|| err("missing /LUN after the target name"))?;
        if !valid_iscsi_name(target) {
            return Err(err(&format!(
                "target name {target:?} is not an iSCSI name (iqn./eui./naa.)"
            )));
        }
        let lun = match lun.parse::<u16>() {
            Ok(l) if l < 16384 && !lun.starts_with('+') => l,
            _ => return Err(err(&format!("bad LUN {lun:?} (0..16383)"))),
        };
        Ok(DeviceUrl::Iscsi(IscsiUrl {
            host,
            port,
            target: target.to_string(),
            lun,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iscsi(s: &str) -> IscsiUrl {
        match DeviceUrl::parse(s).unwrap() {
            DeviceUrl::Iscsi(u) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_paths_and_iscsi_urls() {
        assert_eq!(
            DeviceUrl::parse("/tmp/a.img").unwrap(),
            DeviceUrl::Path("/tmp/a.img".into())
        );
        let u = iscsi("iscsi://10.0.0.1/iqn.2024-01.org.vmfs:t/0");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str(), u.lun),
            ("10.0.0.1", 3260, "iqn.2024-01.org.vmfs:t", 0)
        );
        let u = iscsi("iscsi://san.example:3261/iqn.2024-01.a:b:c/12");
        assert_eq!(
            (u.port, u.target.as_str(), u.lun),
            (3261, "iqn.2024-01.a:b:c", 12)
        );
        assert_eq!(u.addr(), "san.example:3261");
        let u = iscsi("ISCSI://[fe80::1]:9/naa.600a/1");
        assert_eq!(
            (u.host.as_str(), u.addr()),
            ("fe80::1", "[fe80::1]:9".into())
        );
        assert_eq!(u.to_string(), "iscsi://[fe80::1]:9/naa.600a/1");
        let u = iscsi("iscsi://[::1]/iqn.x/3");
        assert_eq!(u.port, 3260);
    }

    #[test]
    fn refuses_bad_urls_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("nfs://h/x", "unknown scheme"),
            ("iscsi://h", "missing /IQN/LUN"),
            ("iscsi://h/iqn.a:b", "missing /LUN"),
            ("iscsi://h/notaname/0", "not an iSCSI name"),
            ("iscsi://h/iqn.a/x", "bad LUN"),
            ("iscsi://h/iqn.a/16384", "bad LUN"),
            ("iscsi://h/iqn.a/+1", "bad LUN"),
            ("iscsi://h:0/iqn.a/1", "bad port"),
            ("iscsi://h:99999/iqn.a/1", "bad port"),
            ("iscsi://:3260/iqn.a/1", "empty host"),
            ("iscsi://u:p@h/iqn.a/1", "credentials"),
            ("iscsi://[::1/iqn.a/1", "unterminated"),
            ("iscsi://[zz]/iqn.a/1", "bad IPv6"),
            ("iscsi://h_h/iqn.a/1", "bad host"),
        ] {
            let e = DeviceUrl::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
