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
