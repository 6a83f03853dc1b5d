//! File contents as a function of (file id, version): a 32-byte header
//! naming both, then a pseudo-random body. A reader can tell which file and
//! version it holds, and whether every byte is the one that was written.

/// Header: magic, id, version, total length (little-endian u64s).
pub const HEADER: usize = 32;
const MAGIC: &[u8; 8] = b"MHSOAK01";

/// splitmix64: the test's only source of randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Total length of (id, version): mostly under 48 KiB, one in twelve up
/// to 1.2 MiB (crossing a 1 MiB file block).
pub fn length(id: u64, version: u64) -> usize {
    let r = Rng(id.rotate_left(20) ^ version).next();
    let body = if r % 12 == 0 {
        (r >> 8) % (1200 << 10)
    } else {
        (r >> 8) % (48 << 10)
    };
    HEADER + body as usize
}

/// The bytes of version `version` of file `id`.
pub fn content(id: u64, version: u64) -> Vec<u8> {
    let len = length(id, version);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(len as u64).to_le_bytes());
    let mut rng = Rng(id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ version);
    while v.len() < len {
        let w = rng.next().to_le_bytes();
        let n = w.len().min(len - v.len());
        v.extend_from_slice(&w[..n]);
    }
    v
}

/// (id, version) named by a header, if `bytes` starts with one.
pub fn header(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    Some((word(8), word(16)))
}

/// Why `got` is not exactly version `version` of file `id` (None if it is).
pub fn mismatch(got: &[u8], id: u64, version: u64) -> Option<String> {
    let want = content(id, version);
    if got == want.as_slice() {
        return None;
    }
    let named = match header(got) {
        Some((i, v)) => format!("header names file {i} version {v}"),
        None => "no valid header".into(),
    };
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    let at = match first {
        Some(i) => {
            let zeros = got[i..].iter().take_while(|b| **b == 0).count();
            format!(
                "first difference at byte {i} (got {:#04x}, want {:#04x}; {zeros} zero bytes from there)",
                got[i], want[i]
            )
        }
        None => "the common prefix matches".into(),
    };
    Some(format!(
        "{} bytes, want {} (file {id} version {version}); {named}; {at}",
        got.len(),
        want.len()
    ))
}
