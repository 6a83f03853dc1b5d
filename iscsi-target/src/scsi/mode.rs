//! MODE SENSE / MODE SELECT (SPC-4 §7.5) with the caching, control,
//! read-write error recovery and informational exceptions pages.

use super::sense::{asc, Sense};
use super::{alloc, CmdResult, Lun};

/// Changeable mode parameters (shared by all nexuses of the LUN).
#[derive(Debug, Clone)]
pub struct ModeState {
    pub wce: bool,
    pub d_sense: bool,
    pub swp: bool,
}

impl Default for ModeState {
    fn default() -> Self {
        ModeState {
            wce: true,
            d_sense: false,
            swp: false,
        }
    }
}

const PAGES: [u8; 4] = [0x01, 0x08, 0x0a, 0x1c];

/// Page contents for page control `pc` (0 current, 1 changeable, 2 default).
fn page(code: u8, pc: u8, st: &ModeState) -> Vec<u8> {
    let cur = |current: bool, changeable: bool, default: bool| match pc {
        0 | 3 => current,
        1 => changeable,
        _ => default,
    };
    match code {
        0x01 => {
            let mut p = vec![0u8; 12];
            p[0] = 0x01;
            p[1] = 10;
            if pc != 1 {
                p[2] = 0xc0; // AWRE ARRE
            }
            p
        }
        0x08 => {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 18;
            if cur(st.wce, true, true) {
                p[2] |= 0x04;
            }
            p
        }
        0x0a => {
            let mut p = vec![0u8; 12];
            p[0] = 0x0a;
            p[1] = 10;
            if cur(st.d_sense, true, false) {
                p[2] |= 0x04;
            }
            if cur(st.swp, true, false) {
                p[4] |= 0x08;
            }
            if pc != 1 {
                p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted
                p[8..10].copy_from_slice(&0xffffu16.to_be_bytes()); // busy timeout: unlimited
            }
            p
        }
        _ => {
            let mut p = vec![0u8; 12];
            p[0] = 0x1c;
            p[1] = 10;
            p
        }
    }
}

pub(crate) fn sense(
    lun: &Lun,
    ten: bool,
    dbd: bool,
    pc: u8,
    code: u8,
    subpage: u8,
    alloc_len: u32,
) -> CmdResult {
    if pc == 3 {
        return Err(Sense::illegal(asc::SAVING_PARAMETERS_NOT_SUPPORTED).into());
    }
    let st = lun.lock_state().mode.clone();
    let mut body = Vec::new();
    match (code, subpage) {
        (0x3f, 0x00) | (0x3f, 0xff) => {
            for c in PAGES {
                body.extend(page(c, pc, &st));
            }
        }
        (c, 0x00) | (c, 0xff) if PAGES.contains(&c) => body.extend(page(c, pc, &st)),
        _ => return Err(Sense::invalid_cdb(2, None).into()),
    }
    let wp = lun.backing.read_only() || st.swp;
    let dev_specific = if wp { 0x80 } else { 0 } | 0x10; // WP, DPOFUA
    let mut bd = Vec::new();
    if !dbd {
        let n = lun.blocks.min(0xffff_ffff) as u32;
        bd.extend_from_slice(&n.to_be_bytes());
        bd.push(0);
        bd.extend_from_slice(&lun.block_size.to_be_bytes()[1..]);
    }
    let mut v = if ten {
        let mut h = vec![0u8; 8];
        h[3] = dev_specific;
        h[6..8].copy_from_slice(&(bd.len() as u16).to_be_bytes());
        h
    } else {
        vec![0, 0, dev_specific, bd.len() as u8]
    };
    v.extend(bd);
    v.extend(body);
    if ten {
        let n = (v.len() - 2) as u16;
        v[0..2].copy_from_slice(&n.to_be_bytes());
    } else {
        v[0] = (v.len() - 1).min(255) as u8;
    }
    Ok(alloc(v, alloc_len))
}

pub(crate) fn select(lun: &Lun, ten: bool, pf: bool, sp: bool, len: u32, data: &[u8]) -> CmdResult {
    if sp {
        return Err(Sense::invalid_cdb(1, Some(0)).into());
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    if !pf {
        return Err(Sense::invalid_cdb(1, Some(4)).into());
    }
    let len = len as usize;
    if data.len() < len {
        return Err(Sense::illegal(asc::INVALID_FIELD_IN_INFORMATION_UNIT).into());
    }
    let data = &data[..len];
    let hdr = if ten { 8 } else { 4 };
    if data.len() < hdr {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    let bdl = if ten {
        u16::from_be_bytes([data[6], data[7]]) as usize
    } else {
        data[3] as usize
    };
    let mut pos = hdr + bdl;
    if pos > data.len() {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    let mut st = lun.lock_state().mode.clone();
    while pos < data.len() {
        if pos + 2 > data.len() {
            return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        let code = data[pos] & 0x3f;
        if data[pos] & 0x40 != 0 {
            return Err(Sense::invalid_param(pos as u16, Some(6)).into());
        }
        let plen = data[pos + 1] as usize + 2;
        if pos + plen > data.len() {
            return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        if !PAGES.contains(&code) {
            return Err(Sense::invalid_param(pos as u16, None).into());
        }
        let p = &data[pos..pos + plen];
        let cur = page(code, 0, &st);
        let chg = page(code, 1, &st);
        if p.len() != cur.len() {
            return Err(Sense::invalid_param(pos as u16 + 1, None).into());
        }
        for i in 2..p.len() {
            if (p[i] ^ cur[i]) & !chg[i] != 0 {
                return Err(Sense::invalid_param((pos + i) as u16, None).into());
            }
        }
        match code {
            0x08 => st.wce = p[2] & 0x04 != 0,
            0x0a => {
                st.d_sense = p[2] & 0x04 != 0;
                st.swp = p[4] & 0x08 != 0;
            }
            _ => {}
        }
        pos += plen;
    }
    lun.lock_state().mode = st;
    Ok(Vec::new())
}
