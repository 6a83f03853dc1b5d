//! The VMDK text descriptor: header keys, extent lines, disk database.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! encoding="UTF-8"
//! CID=3a5c8e21
//! parentCID=ffffffff
//! createType="vmfs"
//!
//! # Extent description
//! RW 20971520 VMFS "disk-flat.vmdk"
//!
//! # The Disk Data Base
//! #DDB
//!
//! ddb.adapterType = "lsilogic"
//! ddb.thinProvisioned = "1"
//! ```
//!
//! [`Descriptor::parse`] keeps unknown header keys and every `ddb.*` entry
//! in order, so a descriptor written by another tool survives a round trip
//! through [`Descriptor::to_text`] (comments are not kept; the standard ones
//! are written again).

pub mod ddb;
mod emit;
mod parse;

pub use ddb::{AdapterType, Geometry, Provisioning};

/// `parentCID` of a disk without parent.
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// Error in a descriptor's text: the 1-based line and what was wrong there.
/// `line` 0 means the descriptor as a whole (a required key is missing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{what}", if *.line == 0 { "descriptor: ".to_string() } else { format!("descriptor line {}: ", .line) })]
pub struct DescriptorError {
    pub line: usize,
    pub what: DescriptorFault,
}

/// What was wrong in a descriptor line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorFault {
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("control character {0:#04x} in the text")]
    ControlChar(u32),
    #[error("expected `key = value`, an extent line or a comment, found {0:?}")]
    Unrecognised(String),
    #[error("bad key {0:?} (letters, digits, '.', '_' and '-' only)")]
    BadKey(String),
    #[error("value of {key} has an unterminated quote")]
    UnterminatedQuote { key: String },
    #[error("value of {key} has a stray '\"'")]
    StrayQuote { key: String },
    #[error("{key} = {value:?} is not a {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{key} given twice (first on line {first_line})")]
    Duplicate { key: String, first_line: usize },
    #[error("descriptor version {0} is not supported (1, 2 or 3)")]
    UnsupportedVersion(u32),
    #[error("extent line: {0}")]
    BadExtent(String),
    #[error("required key {0} is missing")]
    Missing(&'static str),
    #[error("no extent lines")]
    NoExtents,
    #[error("{what} {value:?} cannot be written (quotes, line breaks and control characters are not representable)")]
    Unrepresentable { what: String, value: String },
}

/// Disk type named by `createType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateType {
    /// ESX flat disk: one `VMFS` extent (`-flat.vmdk`).
    Vmfs,
    /// ESX snapshot delta: one `VMFSSPARSE` extent in COWD format.
    VmfsSparse,
    /// ESX space-efficient sparse delta (not implemented here).
    SeSparse,
    MonolithicFlat,
    MonolithicSparse,
    TwoGbMaxExtentFlat,
    TwoGbMaxExtentSparse,
    StreamOptimized,
    VmfsRdm,
    VmfsPassthroughRawDeviceMap,
    /// Any other name, kept as written.
    Other(String),
}

impl CreateType {
    const NAMES: [(&'static str, CreateType); 10] = [
        ("vmfs", CreateType::Vmfs),
        ("vmfsSparse", CreateType::VmfsSparse),
        ("seSparse", CreateType::SeSparse),
        ("monolithicFlat", CreateType::MonolithicFlat),
        ("monolithicSparse", CreateType::MonolithicSparse),
        ("twoGbMaxExtentFlat", CreateType::TwoGbMaxExtentFlat),
        ("twoGbMaxExtentSparse", CreateType::TwoGbMaxExtentSparse),
        ("streamOptimized", CreateType::StreamOptimized),
        ("vmfsRDM", CreateType::VmfsRdm),
        (
            "vmfsPassthroughRawDeviceMap",
            CreateType::VmfsPassthroughRawDeviceMap,
        ),
    ];

    pub fn from_name(s: &str) -> Self {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| CreateType::Other(s.to_string()))
    }

    pub fn name(&self) -> &str {
        match self {
            CreateType::Other(s) => s,
            known => Self::NAMES
                .iter()
                .find(|(_, t)| t == known)
                .map(|(n, _)| *n)
                .unwrap_or(""),
        }
    }
}

/// Access mode of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

impl Access {
    pub fn from_word(s: &str) -> Option<Self> {
        match s {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            Access::ReadWrite => "RW",
            Access::ReadOnly => "RDONLY",
            Access::NoAccess => "NOACCESS",
        }
    }
}

/// Extent type of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Flat data at an offset (hosted products).
    Flat,
    /// Hosted sparse (KDMV) or COWD file.
    Sparse,
    /// Reads as zeros, no file.
    Zero,
    /// ESX flat extent (`-flat.vmdk`).
    Vmfs,
    /// ESX COWD sparse delta (`-delta.vmdk`).
    VmfsSparse,
    VmfsRdm,
    VmfsRaw,
    /// ESX seSparse delta (`-sesparse.vmdk`).
    SeSparse,
}

impl ExtentKind {
    const WORDS: [(&'static str, ExtentKind); 8] = [
        ("FLAT", ExtentKind::Flat),
        ("SPARSE", ExtentKind::Sparse),
        ("ZERO", ExtentKind::Zero),
        ("VMFS", ExtentKind::Vmfs),
        ("VMFSSPARSE", ExtentKind::VmfsSparse),
        ("VMFSRDM", ExtentKind::VmfsRdm),
        ("VMFSRAW", ExtentKind::VmfsRaw),
        ("SESPARSE", ExtentKind::SeSparse),
    ];

    pub fn from_word(s: &str) -> Option<Self> {
        Self::WORDS.iter().find(|(w, _)| *w == s).map(|(_, k)| *k)
    }
    pub fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(w, _)| *w)
            .unwrap_or("")
    }
}

/// One extent line: `RW 2048 VMFS "disk-flat.vmdk"` or `RW 8 FLAT "f" 128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    pub kind: ExtentKind,
    /// File name; `None` only for `ZERO`.
    pub file: Option<String>,
    /// Start in the file, in sectors (FLAT extents).
    pub offset: Option<u64>,
}

/// A `key=value` header entry not interpreted by this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    pub key: String,
    pub value: String,
    /// Whether the value was written in double quotes.
    pub quoted: bool,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub version: u32,
    /// `encoding` (e.g. `UTF-8`), if present.
    pub encoding: Option<String>,
    /// Content ID: changes whenever the disk's content changes.
    pub cid: u32,
    /// CID the parent had when this delta was created; [`NO_PARENT_CID`] if none.
    pub parent_cid: u32,
    pub create_type: CreateType,
    pub parent_file_name_hint: Option<String>,
    /// Other header keys, in order.
    pub extra: Vec<HeaderEntry>,
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries (full key, unquoted value), in order.
    pub ddb: Vec<(String, String)>,
}

impl Descriptor {
    /// A descriptor with the given type and extents, version 1, UTF-8, no
    /// parent, and `cid`.
    pub fn new(create_type: CreateType, cid: u32, extents: Vec<ExtentLine>) -> Self {
        Self {
            version: 1,
            encoding: Some("UTF-8".to_string()),
            cid,
            parent_cid: NO_PARENT_CID,
            create_type,
            parent_file_name_hint: None,
            extra: Vec::new(),
            extents,
            ddb: Vec::new(),
        }
    }

    /// Parse descriptor text.
    pub fn parse(text: &str) -> Result<Self, DescriptorError> {
        parse::parse(text)
    }

    /// Parse descriptor bytes (a file's content), rejecting non-UTF-8 text
    /// with the line where it starts.
    /// Trailing NUL bytes are padding (qemu pads descriptors it rewrites
    /// to 20 sectors) and are ignored.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = &bytes[..end];
        match std::str::from_utf8(bytes) {
            Ok(text) => parse::parse(text),
            Err(e) => Err(DescriptorError {
                line: 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count(),
                what: DescriptorFault::NotUtf8,
            }),
        }
    }

    /// The descriptor as text, in the layout ESX writes.
    pub fn to_text(&self) -> Result<String, DescriptorError> {
        emit::emit(self)
    }

    /// Disk size in sectors: the sum of the extents.
    pub fn capacity_sectors(&self) -> u64 {
        self.extents
            .iter()
            .fold(0u64, |a, e| a.saturating_add(e.sectors))
    }

    /// Whether this descriptor names a parent.
    pub fn has_parent(&self) -> bool {
        self.parent_file_name_hint.is_some()
    }
}

#[cfg(test)]
mod tests;
