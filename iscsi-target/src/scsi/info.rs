//! INQUIRY (standard data and VPD pages), READ CAPACITY, REPORT LUNS.

use super::sense::Sense;
use super::{alloc, CmdResult, Lun};

pub const VENDOR: &[u8; 8] = b"VMFS    ";
pub const PRODUCT: &[u8; 16] = b"iscsi-target    ";
pub const REVISION: &[u8; 4] = b"0001";

/// Largest transfer per command, in blocks (VPD B0).
pub const MAX_TRANSFER_BLOCKS: u32 = 65536;
/// Largest COMPARE AND WRITE, in blocks.
pub const MAX_CAW_BLOCKS: u8 = 255;
pub const MAX_UNMAP_BLOCKS: u32 = 1024 * 1024;
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
pub const MAX_WRITE_SAME_BLOCKS: u64 = 1 << 20;
/// Unmap granularity in blocks (file-system pages).
pub const UNMAP_GRANULARITY: u32 = 8;

fn serial(lun: &Lun) -> String {
    format!("{:016x}", lun.ident)
}

/// NAA IEEE Registered Extended designator (16 bytes): NAA 6, an
/// unregistered OUI of zeroes with the locally-administered bit, then the hash.
pub(crate) fn naa(lun: &Lun) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = 0x60 | 0x02; // NAA 6, OUI 0x02_0000 (locally administered)
    d[3] = 0x00;
    d[4..12].copy_from_slice(&lun.ident.to_be_bytes());
    d[12..16].copy_from_slice(&((lun.ident >> 17) as u32).to_be_bytes());
    // Shift right by 4 bits so the designator nibble layout stays NAA-valid.
    d
}

fn standard(lun: &Lun) -> Vec<u8> {
    let _ = lun;
    let mut v = vec![0u8; 96];
    v[0] = 0x00; // connected, direct access block device
    v[2] = 0x06; // SPC-4
    v[3] = 0x12; // HISUP, response data format 2
    v[4] = (v.len() - 5) as u8;
    v[5] = 0x08; // 3PC: EXTENDED COPY
    v[7] = 0x02; // CMDQUE
    v[8..16].copy_from_slice(VENDOR);
    v[16..32].copy_from_slice(PRODUCT);
    v[32..36].copy_from_slice(REVISION);
    // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
    for (i, d) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
        v[58 + 2 * i..60 + 2 * i].copy_from_slice(&d.to_be_bytes());
    }
    v
}

fn page(code: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0x00, code];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend(body);
    v
}

fn designator(code_set: u8, assoc_type: u8, piv: bool, d: &[u8]) -> Vec<u8> {
    // Protocol identifier 5 (iSCSI) when PIV is set.
    let b0 = if piv { 0x50 | code_set } else { code_set };
    let b1 = if piv { 0x80 | assoc_type } else { assoc_type };
    let mut v = vec![b0, b1, 0, d.len() as u8];
    v.extend_from_slice(d);
    v
}

fn vpd(lun: &Lun, code: u8) -> Result<Vec<u8>, Sense> {
    Ok(match code {
        0x00 => page(0x00, vec![0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2]),
        0x8f => page(0x8f, super::xcopy::third_party_copy_vpd(lun)),
        0x80 => page(0x80, serial(lun).into_bytes()),
        0x83 => {
            let mut b = Vec::new();
            // LU: NAA (binary), T10 vendor id (ASCII).
            b.extend(designator(1, 0x03, false, &naa(lun)));
            let mut t10 = VENDOR.to_vec();
            t10.extend_from_slice(serial(lun).as_bytes());
            b.extend(designator(2, 0x01, false, &t10));
            // Target port: relative target port 1, target port group 1.
            b.extend(designator(1, 0x14, true, &[0, 0, 0, 1]));
            b.extend(designator(1, 0x15, true, &[0, 0, 0, 1]));
            // Target device: SCSI name string (UTF-8, NUL-padded to 4).
            let mut name = lun.target_iqn.as_bytes().to_vec();
            name.push(0);
            while name.len() % 4 != 0 {
                name.push(0);
            }
            b.extend(designator(3, 0x28, true, &name));
            page(0x83, b)
        }
        0xb0 => {
            let mut b = vec![0u8; 0x3c];
            b[0] = 0x01; // WSNZ: WRITE SAME with zero blocks is rejected
            b[1] = MAX_CAW_BLOCKS; // MAXIMUM COMPARE AND WRITE LENGTH
            b[2..4].copy_from_slice(&(UNMAP_GRANULARITY as u16).to_be_bytes());
            b[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            b[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            b[12..16].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            if lun.backing.thin() {
                b[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
                b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                b[24..28].copy_from_slice(&UNMAP_GRANULARITY.to_be_bytes());
                b[28..32].copy_from_slice(&0x8000_0000u32.to_be_bytes()); // UGAVALID, alignment 0
            }
            b[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
            page(0xb0, b)
        }
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[1] = 1; // non-rotating medium
            page(0xb1, b)
        }
        0xb2 => {
            let mut b = vec![0u8; 4];
            if lun.backing.thin() {
                b[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU LBPWS LBPWS10 LBPRZ
                b[2] = 0x02; // thin provisioned
            }
            page(0xb2, b)
        }
        _ => return Err(Sense::invalid_cdb(2, None)),
    })
}

pub(crate) fn inquiry(lun: &Lun, evpd: bool, code: u8, alloc_len: u32) -> CmdResult {
    let v = if evpd { vpd(lun, code)? } else { standard(lun) };
    Ok(alloc(v, alloc_len))
}

pub(crate) fn read_capacity10(lun: &Lun, lba: u32, pmi: bool) -> CmdResult {
    if !pmi && lba != 0 {
        return Err(Sense::invalid_cdb(2, None).into());
    }
    let last = (lun.blocks - 1).min(0xffff_ffff) as u32;
    let mut v = last.to_be_bytes().to_vec();
    v.extend_from_slice(&lun.block_size.to_be_bytes());
    Ok(v)
}

pub(crate) fn read_capacity16(lun: &Lun, alloc_len: u32) -> CmdResult {
    let mut v = vec![0u8; 32];
    v[0..8].copy_from_slice(&(lun.blocks - 1).to_be_bytes());
    v[8..12].copy_from_slice(&lun.block_size.to_be_bytes());
    if lun.backing.thin() {
        v[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    Ok(alloc(v, alloc_len))
}

/// REPORT LUNS parameter data for the given LUN numbers.
pub fn report_luns(luns: &[u64], select: u8, alloc_len: u32) -> Result<Vec<u8>, Sense> {
    if select > 2 && !(0x10..=0x12).contains(&select) {
        return Err(Sense::invalid_cdb(2, None));
    }
    if alloc_len < 16 {
        return Err(Sense::invalid_cdb(6, None));
    }
    let mut v = vec![0u8; 8];
    v[0..4].copy_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    for &l in luns {
        let mut e = [0u8; 8];
        if l < 256 {
            e[1] = l as u8;
        } else {
            e[0] = 0x40 | ((l >> 8) as u8 & 0x3f);
            e[1] = l as u8;
        }
        v.extend_from_slice(&e);
    }
    Ok(alloc(v, alloc_len))
}
