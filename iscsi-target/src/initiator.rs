//! A small blocking iSCSI initiator: login without authentication or with
//! one-way CHAP, SCSI commands with immediate data and R2T handling. Used by
//! tests and tools.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::pdu::{op, Digests, Pdu, BHS_LEN, RESERVED_TAG};
use crate::text;

#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("login failed with status {0:#06x}")]
    Login(u16),
    #[error("unexpected PDU opcode {0:#04x}")]
    Unexpected(u8),
    #[error("PDU: {0}")]
    Pdu(#[from] crate::pdu::PduError),
}

/// Result of one SCSI command.
#[derive(Debug, Clone)]
pub struct CmdOutcome {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
}

impl CmdOutcome {
    /// Sense key, ASC, ASCQ (fixed or descriptor format).
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        let s = &self.sense;
        match s.first().map(|b| b & 0x7f) {
            Some(0x70) | Some(0x71) if s.len() >= 14 => Some((s[2] & 0xf, s[12], s[13])),
            Some(0x72) | Some(0x73) if s.len() >= 4 => Some((s[1] & 0xf, s[2], s[3])),
            _ => None,
        }
    }
}

pub struct Session {
    sock: TcpStream,
    itt: u32,
    cmdsn: u32,
    exp_statsn: u32,
    max_burst: u32,
}

fn read_pdu(sock: &mut TcpStream) -> Result<Pdu, InitiatorError> {
    let mut bhs = [0u8; BHS_LEN];
    sock.read_exact(&mut bhs)?;
    let ahs = bhs[4] as usize * 4;
    let dsl = ((bhs[5] as usize) << 16) | ((bhs[6] as usize) << 8) | bhs[7] as usize;
    let mut rest = vec![0u8; ahs + dsl.div_ceil(4) * 4];
    sock.read_exact(&mut rest)?;
    let mut all = bhs.to_vec();
    all.extend(rest);
    Ok(Pdu::decode(&all, Digests::default(), 1 << 24)?.0)
}

impl Session {
    /// Logs in to `target` at `addr` as `initiator` with the given ISID.
    pub fn login(
        addr: SocketAddr,
        initiator: &str,
        target: &str,
        isid: [u8; 6],
    ) -> Result<Session, InitiatorError> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let keys: Vec<(String, String)> = [
            ("InitiatorName", initiator),
            ("TargetName", target),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("ErrorRecoveryLevel", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut req = Pdu::new(op::LOGIN_REQ);
        req.set_immediate(true);
        req.set_flags(0x80 | (1 << 2) | 3); // T, CSG=operational, NSG=full feature
        req.bhs[8..14].copy_from_slice(&isid);
        req.set_itt(0);
        req.data = text::encode(&keys);
        sock.write_all(&req.encode(Digests::default()))?;
        let resp = read_pdu(&mut sock)?;
        if resp.opcode() != op::LOGIN_RESP {
            return Err(InitiatorError::Unexpected(resp.opcode()));
        }
        let status = resp.u16_at(36);
        if status != 0 {
            return Err(InitiatorError::Login(status));
        }
        let mut max_burst = 262144;
        if let Ok(pairs) = text::parse(&resp.data) {
            for (k, v) in pairs {
                if k == "MaxBurstLength" {
                    max_burst = v.parse().unwrap_or(max_burst);
                }
            }
        }
        Ok(Session {
            sock,
            itt: 1,
            cmdsn: resp.u32_at(28),
            exp_statsn: resp.u32_at(24).wrapping_add(1),
            max_burst,
        })
    }

    /// Sends raw bytes (for malformed-PDU tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), InitiatorError> {
        self.sock.write_all(bytes)?;
        Ok(())
    }

    /// Reads the next PDU.
    pub fn recv(&mut self) -> Result<Pdu, InitiatorError> {
        read_pdu(&mut self.sock)
    }

    /// Runs one SCSI command on `lun`. `data_out` is sent as immediate
    /// data and on R2T; `read_len` is the expected data-in length.
    pub fn command(
        &mut self,
        lun: u8,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<CmdOutcome, InitiatorError> {
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1);
        let mut p = Pdu::new(op::SCSI_CMD);
        let mut flags = 0x80u8 | 0x01; // F, SIMPLE
        if read_len > 0 {
            flags |= 0x40;
        }
        if !data_out.is_empty() {
            flags |= 0x20;
        }
        p.set_flags(flags);
        p.bhs[9] = lun;
        p.set_itt(itt);
        p.set_u32(
            20,
            if data_out.is_empty() {
                read_len
            } else {
                data_out.len() as u32
            },
        );
        p.set_u32(24, self.cmdsn);
        p.set_u32(28, self.exp_statsn);
        self.cmdsn = self.cmdsn.wrapping_add(1);
        p.bhs[32..32 + cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let imm = data_out.len().min(65536);
        p.data = data_out[..imm].to_vec();
        self.sock.write_all(&p.encode(Digests::default()))?;
        let mut data = vec![0u8; read_len as usize];
        loop {
            let r = read_pdu(&mut self.sock)?;
            match r.opcode() {
                op::DATA_IN => {
                    let off = r.u32_at(40) as usize;
                    let end = (off + r.data.len()).min(data.len());
                    if off < end {
                        data[off..end].copy_from_slice(&r.data[..end - off]);
                    }
                    if r.flags() & 0x01 != 0 {
                        self.exp_statsn = r.u32_at(24).wrapping_add(1);
                        return Ok(CmdOutcome {
                            status: r.bhs[3],
                            data,
                            sense: Vec::new(),
                        });
                    }
                }
                op::R2T => {
                    let ttt = r.u32_at(20);
                    let off = r.u32_at(40) as usize;
                    let len = (r.u32_at(44).min(self.max_burst)) as usize;
                    let end = (off + len).min(data_out.len());
                    let mut pos = off;
                    let mut datasn = 0;
                    while pos < end {
                        let n = (end - pos).min(65536);
                        let mut d = Pdu::new(op::DATA_OUT);
                        d.set_flags(if pos + n == end { 0x80 } else { 0 });
                        d.bhs[9] = lun;
                        d.set_itt(itt);
                        d.set_u32(20, ttt);
                        d.set_u32(28, self.exp_statsn);
                        d.set_u32(36, datasn);
                        d.set_u32(40, pos as u32);
                        d.data = data_out[pos..pos + n].to_vec();
                        self.sock.write_all(&d.encode(Digests::default()))?;
                        pos += n;
                        datasn += 1;
                    }
                }
                op::SCSI_RESP => {
                    self.exp_statsn = r.u32_at(24).wrapping_add(1);
                    let sense = if r.data.len() >= 2 {
                        let n = u16::from_be_bytes([r.data[0], r.data[1]]) as usize;
                        r.data[2..(2 + n).min(r.data.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Ok(CmdOutcome {
                        status: r.bhs[3],
                        data,
                        sense,
                    });
                }
                op::NOP_IN if r.u32_at(20) != RESERVED_TAG => {}
                other => return Err(InitiatorError::Unexpected(other)),
            }
        }
    }

    /// Logs out (best effort).
    pub fn logout(mut self) -> Result<(), InitiatorError> {
        let mut p = Pdu::new(op::LOGOUT_REQ);
        p.set_immediate(true);
        p.set_flags(0x80);
        p.set_itt(self.itt);
        p.set_u32(24, self.cmdsn);
        p.set_u32(28, self.exp_statsn);
        self.sock.write_all(&p.encode(Digests::default()))?;
        let r = read_pdu(&mut self.sock)?;
        if r.opcode() != op::LOGOUT_RESP {
            return Err(InitiatorError::Unexpected(r.opcode()));
        }
        Ok(())
    }
}
