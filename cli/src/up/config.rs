//! The TOML configuration of `vmfs up`: every command-line flag has a key
//! here (docs/config.md lists them). Precedence: built-in default < the
//! file (`--config FILE`, else `DIR/vmfs.toml` when present) < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::units::parse_size;

/// A size written as `"64G"` or as a byte count.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t).map_err(|e| format!("{key}: {e}")),
        }
    }
}

/// `[datastore]`: the image (or device) and the volume made on first run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreSection {
    pub dir: Option<PathBuf>,
    pub image: Option<String>,
    pub size: Option<SizeValue>,
    pub label: Option<String>,
    pub host_name: Option<String>,
    pub block_size: Option<SizeValue>,
    pub max_hosts: Option<u32>,
}

/// `[fuse]`: the local mount.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuseSection {
    pub enabled: Option<bool>,
    pub mountpoint: Option<PathBuf>,
    pub attr_timeout_ms: Option<u64>,
    pub threads: Option<usize>,
}

/// `[iscsi]`: the LUN export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiSection {
    pub enabled: Option<bool>,
    pub listen: Option<Vec<SocketAddr>>,
    pub target: Option<String>,
    pub allow_initiators: Option<Vec<String>>,
    pub chap_user: Option<String>,
    pub chap_secret: Option<String>,
}

/// `[nfs]`: the filesystem export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfsSection {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
    pub allow: Option<Vec<String>>,
    pub root_squash: Option<bool>,
    pub read_only: Option<bool>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub datastore: DatastoreSection,
    #[serde(default)]
    pub fuse: FuseSection,
    #[serde(default)]
    pub iscsi: IscsiSection,
    #[serde(default)]
    pub nfs: NfsSection,
}

impl FileConfig {
    pub fn parse(text: &str, origin: &Path) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| format!("{}: {e}", origin.display()))
    }

    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        FileConfig::parse(&text, path)
    }
}

/// What `vmfs up` runs with, every value settled.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub dir: PathBuf,
    /// Image path (relative paths are inside `dir`) or block device.
    pub image: PathBuf,
    pub size: u64,
    pub label: String,
    pub host_name: Option<String>,
    pub block_size: u32,
    pub max_hosts: u32,
    pub fuse: Option<FuseService>,
    pub iscsi: Option<IscsiService>,
    pub nfs: Option<NfsService>,
}

#[derive(Debug, Clone)]
pub struct FuseService {
    pub mountpoint: PathBuf,
    pub attr_timeout_ms: u64,
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct IscsiService {
    pub listen: Vec<SocketAddr>,
    pub target: String,
    pub allow_initiators: Vec<String>,
    /// (user, secret); the secret never reaches a log line.
    pub chap: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct NfsService {
    pub listen: SocketAddr,
    pub allow: Vec<String>,
    pub root_squash: bool,
    pub read_only: bool,
}

pub const DEFAULT_DIR: &str = "vmfs-data";
pub const DEFAULT_SIZE: u64 = 64 << 30;
pub const DEFAULT_LABEL: &str = "datastore1";

/// The IQN the LUN is exported under when none is configured: stable for a
/// volume label, so initiators' saved targets keep working across restarts.
pub fn default_iqn(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("iqn.2026-11.org.vmfs:{clean}")
}

/// Command-line values that override the file (all optional: `None` means
/// "not given").
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub dir: Option<PathBuf>,
    pub image: Option<String>,
    pub size: Option<u64>,
    pub label: Option<String>,
    pub host_name: Option<String>,
    pub no_fuse: bool,
    pub mountpoint: Option<PathBuf>,
    pub no_iscsi: bool,
    pub iscsi_listen: Vec<SocketAddr>,
    pub iscsi_target: Option<String>,
    pub no_nfs: bool,
    pub nfs_listen: Option<SocketAddr>,
}

impl UpConfig {
    /// Settle the configuration: defaults, then `file`, then `o`.
    pub fn resolve(file: &FileConfig, o: &Overrides) -> Result<UpConfig, String> {
        let d = &file.datastore;
        let dir = o
            .dir
            .clone()
            .or_else(|| d.dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        let image = o
            .image
            .clone()
            .or_else(|| d.image.clone())
            .unwrap_or_else(|| "datastore.img".into());
        let image = if Path::new(&image).is_absolute() {
            PathBuf::from(image)
        } else {
            dir.join(image)
        };
        let size = match (o.size, &d.size) {
            (Some(s), _) => s,
            (None, Some(v)) => v.bytes("datastore.size")?,
            (None, None) => DEFAULT_SIZE,
        };
        let block_size = match &d.block_size {
            Some(v) => {
                let b = v.bytes("datastore.block_size")?;
                u32::try_from(b).map_err(|_| format!("datastore.block_size: {b} is too large"))?
            }
            None => 1 << 20,
        };
        let label = o
            .label
            .clone()
            .or_else(|| d.label.clone())
            .unwrap_or_else(|| DEFAULT_LABEL.into());
        let fuse = if o.no_fuse || file.fuse.enabled == Some(false) {
            None
        } else {
            let mp = o
                .mountpoint
                .clone()
                .or_else(|| file.fuse.mountpoint.clone())
                .unwrap_or_else(|| "mnt".into());
            Some(FuseService {
                mountpoint: if mp.is_absolute() { mp } else { dir.join(mp) },
                attr_timeout_ms: file.fuse.attr_timeout_ms.unwrap_or(1000),
                threads: file.fuse.threads.unwrap_or(8).max(1),
            })
        };
        let iscsi = if o.no_iscsi || file.iscsi.enabled == Some(false) {
            None
        } else {
            let i = &file.iscsi;
            let chap = match (&i.chap_user, &i.chap_secret) {
                (Some(u), Some(s)) => Some((u.clone(), s.clone())),
                (None, None) => None,
                _ => return Err("iscsi: chap_user and chap_secret go together".into()),
            };
            Some(IscsiService {
                listen: if o.iscsi_listen.is_empty() {
                    i.listen
                        .clone()
                        .unwrap_or_else(|| vec![SocketAddr::from(([127, 0, 0, 1], 3260))])
                } else {
                    o.iscsi_listen.clone()
                },
                target: o
                    .iscsi_target
                    .clone()
                    .or_else(|| i.target.clone())
                    .unwrap_or_else(|| default_iqn(&label)),
                allow_initiators: i.allow_initiators.clone().unwrap_or_default(),
                chap,
            })
        };
        let nfs = if o.no_nfs || file.nfs.enabled == Some(false) {
            None
        } else {
            let n = &file.nfs;
            Some(NfsService {
                listen: o
                    .nfs_listen
                    .or(n.listen)
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2049))),
                allow: n.allow.clone().unwrap_or_default(),
                root_squash: n.root_squash.unwrap_or(true),
                read_only: n.read_only.unwrap_or(false),
            })
        };
        Ok(UpConfig {
            dir,
            image,
            size,
            label,
            host_name: o.host_name.clone().or_else(|| d.host_name.clone()),
            block_size,
            max_hosts: d.max_hosts.unwrap_or(128),
            fuse,
            iscsi,
            nfs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let c = UpConfig::resolve(&FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(c.image, PathBuf::from("vmfs-data/datastore.img"));
        assert_eq!(c.size, 64 << 30);
        assert_eq!(c.label, "datastore1");
        assert_eq!(c.fuse.unwrap().mountpoint, PathBuf::from("vmfs-data/mnt"));
        let i = c.iscsi.unwrap();
        assert_eq!(i.listen, vec!["127.0.0.1:3260".parse().unwrap()]);
        assert_eq!(i.target, "iqn.2026-11.org.vmfs:datastore1");
        assert_eq!(c.nfs.unwrap().listen, "127.0.0.1:2049".parse().unwrap());
    }

    #[test]
    fn file_then_flags() {
        let f = FileConfig::parse(
            r#"
            [datastore]
            dir = "/srv/ds"
            size = "1T"
            label = "gold"
            [fuse]
            enabled = false
            [iscsi]
            listen = ["0.0.0.0:3261"]
            [nfs]
            listen = "127.0.0.1:20490"
            read_only = true
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        let o = Overrides {
            label: Some("silver".into()),
            nfs_listen: Some("127.0.0.1:2050".parse().unwrap()),
            ..Overrides::default()
        };
        let c = UpConfig::resolve(&f, &o).unwrap();
        assert_eq!(c.image, PathBuf::from("/srv/ds/datastore.img"));
        assert_eq!(c.size, 1 << 40);
        assert_eq!(c.label, "silver");
        assert!(c.fuse.is_none());
        let i = c.iscsi.unwrap();
        assert_eq!(i.listen, vec!["0.0.0.0:3261".parse().unwrap()]);
        assert_eq!(i.target, "iqn.2026-11.org.vmfs:silver");
        let n = c.nfs.unwrap();
        assert_eq!(n.listen, "127.0.0.1:2050".parse().unwrap());
        assert!(n.read_only);
    }

    #[test]
    fn bad_files_are_named() {
        let e = FileConfig::parse("[datastore]\nsize = \"12Q\"\n", Path::new("x.toml"))
            .and_then(|f| UpConfig::resolve(&f, &Overrides::default()))
            .unwrap_err();
        assert!(e.contains("datastore.size"), "{e}");
        let e = FileConfig::parse("[fuse]\nmountpont = \"m\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.contains("x.toml") && e.contains("mountpont"), "{e}");
        let e = FileConfig::parse("[iscsi]\nchap_user = \"u\"\n", Path::new("x.toml"))
            .and_then(|f| UpConfig::resolve(&f, &Overrides::default()))
            .unwrap_err();
        assert!(e.contains("chap_secret"), "{e}");
    }
}
