//! A COWD delta extent as fsck sees it: the header and grain directory must
//! pass the library's own checks at open (`CowdExtent::open`) and match the
//! descriptor; then every grain-table entry must name a whole grain inside
//! the file's data area that is neither a grain table nor another grain.

use std::collections::HashMap;

use vmfs::format::block::get_u32;
use vmfs::vmdk::cowd::header::{GT_BYTES, GT_ENTRIES, GT_SECTORS};
use vmfs::vmdk::{CowdExtent, ExtentStore};

/// What is wrong with one COWD extent.
#[derive(Debug, Default)]
pub struct CowdFindings {
    /// Header or grain directory unusable (VMDK004): why.
    pub header: Option<String>,
    /// Grain-table entries that are wrong (VMDK005): byte offset of the
    /// entry in the file, and why.
    pub entries: Vec<(u64, String)>,
}

fn io_err(name: &str, what: &str, e: std::io::Error) -> String {
    format!("{name}: reading {what}: {e}")
}

/// Check COWD extent `name` that descriptor line says holds `sectors`.
pub fn check(store: &dyn ExtentStore, name: &str, sectors: u64) -> CowdFindings {
    let mut out = CowdFindings::default();
    let opened = store
        .open(name, false)
        .map_err(|e| io_err(name, "the file", e))
        .and_then(|io| CowdExtent::open(name, io, false).map_err(|e| e.to_string()));
    let c = match opened {
        Ok(c) => c,
        Err(why) => {
            out.header = Some(why);
            return out;
        }
    };
    let h = c.header().clone();
    if u64::from(h.num_sectors) != sectors {
        out.header = Some(format!(
            "{name}: COWD numSectors {} differs from the descriptor's {sectors} sectors",
            h.num_sectors
        ));
        return out;
    }
    let io = match store.open(name, false) {
        Ok(io) => io,
        Err(e) => {
            out.header = Some(io_err(name, "the file", e));
            return out;
        }
    };
    let size = match io.size() {
        Ok(s) => s,
        Err(e) => {
            out.header = Some(io_err(name, "the size", e));
            return out;
        }
    };
    // The open above checked: directory inside the file, every table
    // inside the data area.
    let entries = u64::from(h.num_gd_entries);
    let gd_pos = u64::from(h.gd_offset) * 512;
    let mut raw = vec![0u8; (entries * 4) as usize];
    if let Err(e) = io.read_at(&mut raw, gd_pos) {
        out.header = Some(io_err(name, "the grain directory", e));
        return out;
    }
    let data_start = u64::from(h.gd_offset) + (entries * 4).div_ceil(512);
    let grain = u64::from(h.grain_size);
    let grains = u64::from(h.num_sectors).div_ceil(grain);
    let mut tables: Vec<u64> = (0..entries as usize)
        .map(|i| u64::from(get_u32(&raw, i * 4)))
        .filter(|&t| t != 0)
        .collect();
    tables.sort_unstable();
    let in_table = |s: u64| {
        let k = tables.partition_point(|&t| t < s + grain);
        k > 0 && tables[k - 1] + GT_SECTORS > s
    };
    let mut owner: HashMap<u64, u64> = HashMap::new();
    let mut gt = vec![0u8; GT_BYTES as usize];
    for i in 0..entries {
        let t = u64::from(get_u32(&raw, i as usize * 4));
        if t == 0 {
            continue;
        }
        if let Err(e) = io.read_at(&mut gt, t * 512) {
            out.header = Some(io_err(name, &format!("grain table {i}"), e));
            return out;
        }
        for j in 0..GT_ENTRIES {
            let s = u64::from(get_u32(&gt, (j * 4) as usize));
            if s == 0 {
                continue;
            }
            let g = i * GT_ENTRIES + j;
            let why = if g >= grains {
                format!("grain {g} is past the end of the disk ({grains} grains)")
            } else if s < data_start || (s + grain) * 512 > size {
                format!(
                    "grain {g} at sector {s} is outside the data area (sectors {data_start}..{})",
                    size / 512
                )
            } else if in_table(s) {
                format!("grain {g} at sector {s} overlaps a grain table")
            } else if let Some(first) = owner.insert(s, g) {
                owner.insert(s, first);
                format!("grain {g} at sector {s} is also grain {first}")
            } else {
                continue;
            };
            out.entries
                .push((t * 512 + j * 4, format!("{name}: {why}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmfs::vmdk::MemStore;

    const NAME: &str = "d-delta.vmdk";

    /// A delta of 64 Ki sectors (grain 8: two grain tables) with grains 0,
    /// 1 and 4096 (table 1) allocated. Returns the store and the byte
    /// offset of table 0 and of table 1.
    fn delta() -> (MemStore, u64, u64) {
        let store = MemStore::new();
        let io = store.create(NAME).unwrap();
        let mut c = CowdExtent::create(NAME, io, 65536, 8, None).unwrap();
        for g in [0u64, 1, 4096] {
            c.allocate_grain(g, &vec![g as u8 + 1; 4096]).unwrap();
        }
        let io = store.open(NAME, false).unwrap();
        let mut gd = [0u8; 8];
        io.read_at(&mut gd, 4 * 512).unwrap();
        let t0 = u64::from(get_u32(&gd, 0)) * 512;
        let t1 = u64::from(get_u32(&gd, 4)) * 512;
        (store, t0, t1)
    }

    fn put(store: &MemStore, at: u64, v: u32) {
        store
            .open(NAME, true)
            .unwrap()
            .write_at(&v.to_le_bytes(), at)
            .unwrap();
    }

    #[test]
    fn a_sound_delta_has_no_findings() {
        let (store, _, _) = delta();
        let f = check(&store, NAME, 65536);
        assert!(f.header.is_none() && f.entries.is_empty(), "{f:?}");
    }

    #[test]
    fn each_bad_entry_is_found_at_its_offset() {
        let (store, t0, t1) = delta();
        let mut g0 = [0u8; 4];
        store
            .open(NAME, false)
            .unwrap()
            .read_at(&mut g0, t0)
            .unwrap();
        let grain0 = u32::from_le_bytes(g0);
        put(&store, t0 + 5 * 4, 0x7fff_0000); // past the end of the file
        put(&store, t0 + 6 * 4, grain0); // shares grain 0's sector
        put(&store, t0 + 7 * 4, (t1 / 512) as u32); // on grain table 1
        put(&store, t0 + 8 * 4, 2); // inside the header
        let f = check(&store, NAME, 65536);
        assert!(f.header.is_none(), "{f:?}");
        let at: Vec<u64> = f.entries.iter().map(|e| e.0).collect();
        assert_eq!(at, [t0 + 20, t0 + 24, t0 + 28, t0 + 32], "{f:?}");
        assert!(f.entries[1].1.contains("also grain 0"), "{f:?}");
        assert!(f.entries[2].1.contains("overlaps a grain table"), "{f:?}");
    }

    #[test]
    fn header_damage_and_size_mismatch_are_header_findings() {
        let (store, _, _) = delta();
        let f = check(&store, NAME, 65536 * 2);
        assert!(f.header.unwrap().contains("numSectors"));
        put(&store, 4, 7);
        let f = check(&store, NAME, 65536);
        assert!(f.header.unwrap().contains("version"));
    }
}
