//! iSCSI PDU framing (RFC 7143 §11): the 48-byte Basic Header Segment, optional
//! Additional Header Segments, the padded data segment and the CRC32C digests.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Largest data segment the 24-bit length field can express.
pub const MAX_DSL: usize = (1 << 24) - 1;
/// "No tag" value for ITT/TTT fields.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// PDU opcodes (RFC 7143 §11.2.1.2).
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_CMD: u8 = 0x01;
    pub const TMF_REQ: u8 = 0x02;
    pub const LOGIN_REQ: u8 = 0x03;
    pub const TEXT_REQ: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQ: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESP: u8 = 0x21;
    pub const TMF_RESP: u8 = 0x22;
    pub const LOGIN_RESP: u8 = 0x23;
    pub const TEXT_RESP: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESP: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MSG: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Reject reasons (RFC 7143 §11.17.1).
pub mod reject {
    pub const DATA_DIGEST: u8 = 0x02;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
}

#[derive(Debug, Error)]
pub enum PduError {
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("header digest mismatch (received {received:#010x}, computed {computed:#010x})")]
    HeaderDigest { received: u32, computed: u32 },
    #[error("data digest mismatch on opcode {opcode:#04x} ITT {itt:#010x}")]
    DataDigest {
        opcode: u8,
        itt: u32,
        bhs: Box<[u8; BHS_LEN]>,
    },
    #[error("data segment of {len} bytes exceeds MaxRecvDataSegmentLength {max}")]
    DataTooLong { len: usize, max: usize },
    #[error("PDU truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
}

/// Which digests are in force on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// One PDU: header, AHS bytes (without the header digest) and unpadded data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: [u8; BHS_LEN],
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

impl Pdu {
    /// A zeroed PDU with the given opcode.
    pub fn new(opcode: u8) -> Pdu {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode & 0x3f;
        Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }
    pub fn set_immediate(&mut self, on: bool) {
        if on {
            self.bhs[0] |= 0x40
        } else {
            self.bhs[0] &= !0x40
        }
    }
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }
    pub fn set_flags(&mut self, f: u8) {
        self.bhs[1] = f;
    }
    pub fn final_bit(&self) -> bool {
        self.bhs[1] & 0x80 != 0
    }
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.bhs[off], self.bhs[off + 1]])
    }
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes(self.bhs[off..off + 4].try_into().expect("4 bytes"))
    }
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bhs[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bhs[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn lun_field(&self) -> u64 {
        u64::from_be_bytes(self.bhs[8..16].try_into().expect("8 bytes"))
    }
    pub fn set_lun_field(&mut self, v: u64) {
        self.bhs[8..16].copy_from_slice(&v.to_be_bytes());
    }
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn set_itt(&mut self, v: u32) {
        self.set_u32(16, v)
    }
    /// Data segment length as stated in the header.
    pub fn stated_dsl(&self) -> usize {
        ((self.bhs[5] as usize) << 16) | ((self.bhs[6] as usize) << 8) | self.bhs[7] as usize
    }
    fn stated_ahs_len(&self) -> usize {
        self.bhs[4] as usize * 4
    }

    /// Serialises the PDU, filling in the length fields and digests.
    /// BHS, AHS and header digest for a PDU whose data segment (sent
    /// separately, see [`Pdu::data_trailer`]) is `dsl` bytes long; `self.data`
    /// is ignored.
    pub fn encode_header(&self, dsl: usize, digests: Digests) -> Vec<u8> {
        let mut bhs = self.bhs;
        let ahs_len = self.ahs.len() + pad4(self.ahs.len());
        bhs[4] = (ahs_len / 4) as u8;
        let dsl = dsl.min(MAX_DSL);
        bhs[5] = (dsl >> 16) as u8;
        bhs[6] = (dsl >> 8) as u8;
        bhs[7] = dsl as u8;
        let mut out = Vec::with_capacity(BHS_LEN + ahs_len + 8 + dsl + 4);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(&self.ahs);
        out.resize(BHS_LEN + ahs_len, 0);
        if digests.header {
            let c = crc32c::crc32c(&out);
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    pub fn encode(&self, digests: Digests) -> Vec<u8> {
        let dsl = self.data.len().min(MAX_DSL);
        let mut out = self.encode_header(dsl, digests);
        if dsl > 0 {
            let start = out.len();
            out.extend_from_slice(&self.data[..dsl]);
            out.resize(out.len() + pad4(dsl), 0);
            if digests.data {
                let c = crc32c::crc32c(&out[start..]);
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out
    }

    /// Padding and data digest that follow a data segment `data` sent
    /// after [`Pdu::encode_header`].
    pub fn data_trailer(data: &[u8], digests: Digests) -> Vec<u8> {
        let pad = [0u8; 3];
        let pad = &pad[..pad4(data.len())];
        let mut out = pad.to_vec();
        if digests.data && !data.is_empty() {
            let mut c = crc32c::crc32c(data);
            c = crc32c::crc32c_append(c, pad);
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Parses one PDU from the front of `buf`; returns it and the bytes consumed.
    pub fn decode(buf: &[u8], digests: Digests, max_data: usize) -> Result<(Pdu, usize), PduError> {
        let need = |n: usize| -> Result<(), PduError> {
            if buf.len() < n {
                Err(PduError::Truncated {
                    need: n,
                    have: buf.len(),
                })
            } else {
                Ok(())
            }
        };
        need(BHS_LEN)?;
        let mut pdu = Pdu::new(0);
        pdu.bhs.copy_from_slice(&buf[..BHS_LEN]);
        let ahs_len = pdu.stated_ahs_len();
        let dsl = pdu.stated_dsl();
        if dsl > max_data {
            return Err(PduError::DataTooLong {
                len: dsl,
                max: max_data,
            });
        }
        let mut pos = BHS_LEN;
        need(pos + ahs_len)?;
        pdu.ahs = buf[pos..pos + ahs_len].to_vec();
        pos += ahs_len;
        if digests.header {
            need(pos + 4)?;
            let received = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4"));
            let computed = crc32c::crc32c(&buf[..pos]);
            if received != computed {
                return Err(PduError::HeaderDigest { received, computed });
            }
            pos += 4;
        }
        if dsl > 0 {
            let padded = dsl + pad4(dsl);
            need(pos + padded)?;
            let seg = &buf[pos..pos + padded];
            pos += padded;
            if digests.data {
                need(pos + 4)?;
                let received = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4"));
                pos += 4;
                if received != crc32c::crc32c(seg) {
                    return Err(PduError::DataDigest {
                        opcode: pdu.opcode(),
                        itt: pdu.itt(),
                        bhs: Box::new(pdu.bhs),
                    });
                }
            }
            pdu.data = seg[..dsl].to_vec();
        }
        Ok((pdu, pos))
    }
}

/// Reads one PDU from a stream. `max_data` bounds the data segment (our
/// MaxRecvDataSegmentLength, or the login-phase limit).
pub async fn read_pdu<R: AsyncRead + Unpin>(
    r: &mut R,
    digests: Digests,
    max_data: usize,
) -> Result<Pdu, PduError> {
    let mut pdu = Pdu::new(0);
    r.read_exact(&mut pdu.bhs).await?;
    let ahs_len = pdu.stated_ahs_len();
    let dsl = pdu.stated_dsl();
    if dsl > max_data {
        return Err(PduError::DataTooLong {
            len: dsl,
            max: max_data,
        });
    }
    if ahs_len > 0 {
        pdu.ahs = vec![0u8; ahs_len];
        r.read_exact(&mut pdu.ahs).await?;
    }
    if digests.header {
        let mut d = [0u8; 4];
        r.read_exact(&mut d).await?;
        let received = u32::from_le_bytes(d);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&pdu.bhs), &pdu.ahs);
        if received != computed {
            return Err(PduError::HeaderDigest { received, computed });
        }
    }
    if dsl > 0 {
        let padded = dsl + pad4(dsl);
        let mut seg = vec![0u8; padded];
        r.read_exact(&mut seg).await?;
        if digests.data {
            let mut d = [0u8; 4];
            r.read_exact(&mut d).await?;
            if u32::from_le_bytes(d) != crc32c::crc32c(&seg) {
                return Err(PduError::DataDigest {
                    opcode: pdu.opcode(),
                    itt: pdu.itt(),
                    bhs: Box::new(pdu.bhs),
                });
            }
        }
        seg.truncate(dsl);
        pdu.data = seg;
    }
    Ok(pdu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_encoding_matches_whole_encoding() {
        for len in [0usize, 1, 3, 4, 5, 4096, 4099] {
            for (header, data) in [(false, false), (true, true), (false, true)] {
                let d = Digests { header, data };
                let mut p = Pdu::new(op::DATA_IN);
                p.set_itt(7);
                p.data = (0..len).map(|i| i as u8).collect();
                let mut split = p.encode_header(len, d);
                split.extend_from_slice(&p.data);
                split.extend(Pdu::data_trailer(&p.data, d));
                assert_eq!(split, p.encode(d), "len {len} digests {d:?}");
            }
        }
    }

    #[test]
    fn round_trip_with_digests() {
        let mut p = Pdu::new(op::SCSI_CMD);
        p.set_itt(7);
        p.data = vec![1, 2, 3, 4, 5];
        let d = Digests {
            header: true,
            data: true,
        };
        let bytes = p.encode(d);
        assert_eq!(bytes.len(), 48 + 4 + 8 + 4);
        let (q, used) = Pdu::decode(&bytes, d, 1 << 20).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(q.data, p.data);
        assert_eq!(q.itt(), 7);
        let mut bad = bytes.clone();
        bad[60] ^= 1;
        assert!(matches!(
            Pdu::decode(&bad, d, 1 << 20),
            Err(PduError::DataDigest { .. })
        ));
        bad = bytes;
        bad[3] ^= 1;
        assert!(matches!(
            Pdu::decode(&bad, d, 1 << 20),
            Err(PduError::HeaderDigest { .. })
        ));
    }
}
