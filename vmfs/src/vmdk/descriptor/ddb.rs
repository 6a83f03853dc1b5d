//! Typed access to the disk database (`ddb.*`) and the identifiers a
//! descriptor carries: CID, `ddb.uuid`, `ddb.longContentID`.

use super::{Descriptor, NO_PARENT_CID};
use rand::Rng;

pub const KEY_ADAPTER: &str = "ddb.adapterType";
pub const KEY_CYLINDERS: &str = "ddb.geometry.cylinders";
pub const KEY_HEADS: &str = "ddb.geometry.heads";
pub const KEY_SECTORS: &str = "ddb.geometry.sectors";
pub const KEY_HW_VERSION: &str = "ddb.virtualHWVersion";
pub const KEY_THIN: &str = "ddb.thinProvisioned";
pub const KEY_UUID: &str = "ddb.uuid";
pub const KEY_LONG_CID: &str = "ddb.longContentID";
/// vmfs's own key: which of the three flat provisioning types the disk was
/// created with (VMware keeps lazy/eager in the filesystem, not here).
pub const KEY_PROVISIONING: &str = "ddb.vmfs.provisioning";

/// Virtual disk controller named by `ddb.adapterType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterType {
    Ide,
    BusLogic,
    LsiLogic,
    LegacyEsx,
    Other(String),
}

impl AdapterType {
    pub fn from_name(s: &str) -> Self {
        match s {
            "ide" => AdapterType::Ide,
            "buslogic" => AdapterType::BusLogic,
            "lsilogic" => AdapterType::LsiLogic,
            "legacyESX" => AdapterType::LegacyEsx,
            other => AdapterType::Other(other.to_string()),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            AdapterType::Ide => "ide",
            AdapterType::BusLogic => "buslogic",
            AdapterType::LsiLogic => "lsilogic",
            AdapterType::LegacyEsx => "legacyESX",
            AdapterType::Other(s) => s,
        }
    }
}

/// Legacy CHS geometry reported to the guest BIOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
}

impl Geometry {
    /// The geometry VMware derives from a capacity: IDE uses 16 heads and
    /// 63 sectors (at most 16383 cylinders); SCSI uses 64/32 below 1 GiB,
    /// 128/32 below 2 GiB and 255/63 above (at most 65535 cylinders).
    pub fn for_capacity(capacity_sectors: u64, adapter: &AdapterType) -> Self {
        const GIB: u64 = 1 << 21; // in sectors
        let (heads, sectors, max_cyl) = match adapter {
            AdapterType::Ide => (16u32, 63u32, 16383u64),
            _ if capacity_sectors < GIB => (64, 32, 65535),
            _ if capacity_sectors < 2 * GIB => (128, 32, 65535),
            _ => (255, 63, 65535),
        };
        let cylinders = (capacity_sectors / (heads as u64 * sectors as u64)).clamp(1, max_cyl);
        Geometry {
            cylinders: cylinders as u32,
            heads,
            sectors,
        }
    }
}

/// How a flat extent's blocks are provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// Sparse file: blocks allocated on first write.
    Thin,
    /// All blocks allocated up front, zeroed lazily on first write (on vmfs:
    /// the to-be-zeroed bit of each file block).
    ZeroedThick,
    /// All blocks allocated and zeros written at creation.
    EagerZeroedThick,
}

impl Provisioning {
    pub fn name(self) -> &'static str {
        match self {
            Provisioning::Thin => "thin",
            Provisioning::ZeroedThick => "zeroedthick",
            Provisioning::EagerZeroedThick => "eagerzeroedthick",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Provisioning::Thin,
            Provisioning::ZeroedThick,
            Provisioning::EagerZeroedThick,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// A random CID: never the no-parent value.
pub fn new_cid() -> u32 {
    let mut rng = rand::thread_rng();
    loop {
        let c: u32 = rng.gen();
        if c != NO_PARENT_CID {
            return c;
        }
    }
}

/// A random `ddb.uuid` in VMware's spelling: `60 00 c2 9b 83 5d 3e 4e-a0 2b 6c 51 cd 0c 5f 41`.
pub fn new_uuid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let half = |s: &[u8]| {
        s.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("{}-{}", half(&b[..8]), half(&b[8..]))
}

/// A `ddb.longContentID`: 24 random hex digits followed by the CID.
pub fn new_long_content_id(cid: u32) -> String {
    let r: [u8; 12] = rand::thread_rng().gen();
    let mut s: String = r.iter().map(|x| format!("{x:02x}")).collect();
    s.push_str(&format!("{cid:08x}"));
    s
}

impl Descriptor {
    pub fn ddb_get(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set a ddb entry, keeping its place if it exists.
    pub fn ddb_set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.ddb.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.ddb.push((key.to_string(), value)),
        }
    }

    pub fn ddb_remove(&mut self, key: &str) {
        self.ddb.retain(|(k, _)| k != key);
    }

    pub fn adapter_type(&self) -> Option<AdapterType> {
        self.ddb_get(KEY_ADAPTER).map(AdapterType::from_name)
    }

    /// The geometry, if all three keys are present and numeric.
    pub fn geometry(&self) -> Option<Geometry> {
        let n = |k| self.ddb_get(k)?.parse::<u32>().ok();
        Some(Geometry {
            cylinders: n(KEY_CYLINDERS)?,
            heads: n(KEY_HEADS)?,
            sectors: n(KEY_SECTORS)?,
        })
    }

    pub fn set_geometry(&mut self, g: Geometry) {
        self.ddb_set(KEY_CYLINDERS, g.cylinders.to_string());
        self.ddb_set(KEY_HEADS, g.heads.to_string());
        self.ddb_set(KEY_SECTORS, g.sectors.to_string());
    }

    pub fn virtual_hw_version(&self) -> Option<u32> {
        self.ddb_get(KEY_HW_VERSION)?.parse().ok()
    }

    pub fn thin_provisioned(&self) -> bool {
        self.ddb_get(KEY_THIN) == Some("1")
    }

    /// Provisioning of the flat extents: vmfs's own key if present, else
    /// thin if `ddb.thinProvisioned = "1"`, else zeroedthick (ESX's default).
    pub fn provisioning(&self) -> Provisioning {
        if let Some(p) = self
            .ddb_get(KEY_PROVISIONING)
            .and_then(Provisioning::from_name)
        {
            return p;
        }
        if self.thin_provisioned() {
            Provisioning::Thin
        } else {
            Provisioning::ZeroedThick
        }
    }

    pub fn set_provisioning(&mut self, p: Provisioning) {
        if p == Provisioning::Thin {
            self.ddb_set(KEY_THIN, "1");
        } else {
            self.ddb_remove(KEY_THIN);
        }
        self.ddb_set(KEY_PROVISIONING, p.name());
    }

    pub fn uuid(&self) -> Option<&str> {
        self.ddb_get(KEY_UUID)
    }

    pub fn long_content_id(&self) -> Option<&str> {
        self.ddb_get(KEY_LONG_CID)
    }

    /// Give the disk a new content ID (its content changed): a new CID and
    /// a matching `ddb.longContentID`.
    pub fn change_content_id(&mut self) {
        let mut cid = new_cid();
        while cid == self.cid {
            cid = new_cid();
        }
        self.cid = cid;
        self.ddb_set(KEY_LONG_CID, new_long_content_id(cid));
    }
}
