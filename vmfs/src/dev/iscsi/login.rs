//! Connecting and logging in (RFC 7143 §6, §13): the security stage with
//! CHAP (one-way or mutual), then operational parameter negotiation.
//! Reconnecting logs in again with the same ISID and TSIH 0, which the
//! target treats as session reinstatement (§6.3.5): the old session's tasks
//! are ended and its I_T nexus, and so its persistent-reservation
//! registration, carries over.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use iscsi_target::chap;
use iscsi_target::pdu::{op, Digests, Pdu, BHS_LEN};
use iscsi_target::text;

use super::error::{login_status_meaning, IscsiError};

/// CHAP credentials (the secret is never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapSecret {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for ChapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChapSecret {{ user: {:?}, secret: <redacted> }}",
            self.user
        )
    }
}

/// Who logs in where.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    /// `host:port`.
    pub addr: String,
    pub target: String,
    pub initiator: String,
    pub isid: [u8; 6],
    /// One-way CHAP: what we present to the target.
    pub chap: Option<ChapSecret>,
    /// Mutual CHAP: what the target must present back.
    pub mutual: Option<ChapSecret>,
    pub timeout: Duration,
}

/// Values in force after login.
#[derive(Debug, Clone)]
pub struct Session {
    pub tsih: u16,
    /// CmdSN of the first command.
    pub cmdsn: u32,
    pub max_cmdsn: u32,
    pub exp_statsn: u32,
    pub immediate_data: bool,
    pub first_burst: u32,
    /// Largest data segment the target accepts from us.
    pub target_mrdsl: u32,
}

/// Our receive limit, declared at login.
pub const OUR_MRDSL: u32 = 262_144;
const LOGIN_MAX_DATA: usize = 65_536;

/// Read one PDU (no digests: we never negotiate them).
pub fn read_pdu<R: Read>(sock: &mut R, max_data: usize) -> std::io::Result<Pdu> {
    let mut bhs = [0u8; BHS_LEN];
    sock.read_exact(&mut bhs)?;
    let ahs = bhs[4] as usize * 4;
    let dsl = ((bhs[5] as usize) << 16) | ((bhs[6] as usize) << 8) | bhs[7] as usize;
    if dsl > max_data {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("target sent a {dsl}-byte data segment, above our limit {max_data}"),
        ));
    }
    let mut rest = vec![0u8; ahs + dsl.div_ceil(4) * 4];
    sock.read_exact(&mut rest)?;
    let mut p = Pdu::new(0);
    p.bhs = bhs;
    p.ahs = rest[..ahs].to_vec();
    p.data = rest[ahs..ahs + dsl].to_vec();
    Ok(p)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Exchange<'a> {
    sock: TcpStream,
    spec: &'a LoginSpec,
    cmdsn: u32,
    exp_statsn: u32,
}

impl Exchange<'_> {
    fn io_err(&self, why: String) -> IscsiError {
        IscsiError::LoginTransport {
            target: self.spec.target.clone(),
            why,
        }
    }

    fn err(&self, why: impl Into<String>) -> IscsiError {
        IscsiError::Login {
            target: self.spec.target.clone(),
            why: why.into(),
        }
    }

    /// Send one login request (stage `csg`, asking for `nsg` when `transit`)
    /// and return the response PDU and its keys.
    fn step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(String, String)],
    ) -> Result<(Pdu, Vec<(String, String)>), IscsiError> {
        let mut req = Pdu::new(op::LOGIN_REQ);
        req.set_immediate(true);
        let mut flags = (csg & 3) << 2;
        if transit {
            flags |= 0x80 | (nsg & 3);
        }
        req.set_flags(flags);
        req.bhs[8..14].copy_from_slice(&self.spec.isid);
        req.set_u16(14, 0);
        req.set_itt(0);
        req.set_u32(24, self.cmdsn);
        req.set_u32(28, self.exp_statsn);
        req.data = text::encode(keys);
        self.sock
            .write_all(&req.encode(Digests::default()))
            .map_err(|e| self.io_err(format!("sending login request: {e}")))?;
        let resp = read_pdu(&mut self.sock, LOGIN_MAX_DATA)
            .map_err(|e| self.io_err(format!("reading login response: {e}")))?;
        if resp.opcode() != op::LOGIN_RESP {
            return Err(self.err(format!(
                "expected a login response, got opcode {:#04x}",
                resp.opcode()
            )));
        }
        let (class, detail) = (resp.bhs[36], resp.bhs[37]);
        if class == 2 && detail == 1 && self.spec.chap.is_none() {
            return Err(self.err(
                "authentication failure: the target requires CHAP; set VMFS_ISCSI_CHAP_USER and VMFS_ISCSI_CHAP_SECRET",
            ));
        }
        if class != 0 {
            return Err(IscsiError::LoginStatus {
                target: self.spec.target.clone(),
                class,
                detail,
                meaning: login_status_meaning(class, detail),
            });
        }
        if resp.flags() & 0x40 != 0 {
            return Err(self.err("target sent a continued (C bit) login response"));
        }
        self.exp_statsn = resp.u32_at(24).wrapping_add(1);
        let kv = text::parse(&resp.data).map_err(|e| self.err(format!("login keys: {e}")))?;
        for (k, v) in &kv {
            if v == "Reject" || v == "NotUnderstood" {
                tracing::debug!(key = %k, value = %v, "target did not accept a login key");
            }
        }
        Ok((resp, kv))
    }
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

/// Connect and log in; returns the socket in full-feature phase.
pub fn login(spec: &LoginSpec) -> Result<(TcpStream, Session), IscsiError> {
    let connect_err = |source| IscsiError::Connect {
        addr: spec.addr.clone(),
        source,
    };
    let addrs: Vec<_> = spec.addr.to_socket_addrs().map_err(connect_err)?.collect();
    let mut last = None;
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, spec.timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let sock = sock
        .ok_or_else(|| connect_err(last.unwrap_or_else(|| std::io::Error::other("no address"))))?;
    sock.set_nodelay(true).map_err(connect_err)?;
    sock.set_read_timeout(Some(spec.timeout))
        .map_err(connect_err)?;
    sock.set_write_timeout(Some(spec.timeout))
        .map_err(connect_err)?;
    let mut x = Exchange {
        sock,
        spec,
        cmdsn: 1,
        exp_statsn: 0,
    };
    // Security stage.
    let auth = if spec.chap.is_some() { "CHAP" } else { "None" };
    let first = pairs(&[
        ("InitiatorName", &spec.initiator),
        ("TargetName", &spec.target),
        ("SessionType", "Normal"),
        ("AuthMethod", auth),
    ]);
    let (mut resp, kv) = x.step(0, 1, true, &first)?;
    let chosen = get(&kv, "AuthMethod").unwrap_or("None").to_string();
    match (chosen.as_str(), &spec.chap) {
        ("CHAP", Some(creds)) => {
            let (_, kv) = x.step(0, 1, false, &pairs(&[("CHAP_A", "5")]))?;
            if get(&kv, "CHAP_A") != Some("5") {
                return Err(x.err("target did not agree to CHAP with MD5 (CHAP_A=5)"));
            }
            let id: u8 = get(&kv, "CHAP_I")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| x.err("target sent no valid CHAP_I"))?;
            let challenge = get(&kv, "CHAP_C")
                .and_then(chap::from_binary)
                .ok_or_else(|| x.err("target sent no valid CHAP_C"))?;
            let r = chap::response(id, creds.secret.as_bytes(), &challenge);
            let mut keys = pairs(&[("CHAP_N", &creds.user), ("CHAP_R", &chap::to_hex(&r))]);
            let mutual = spec.mutual.as_ref().map(|m| {
                let mid: u8 = rand::random();
                let mch: [u8; 16] = rand::random();
                (m, mid, mch)
            });
            if let Some((_, mid, mch)) = &mutual {
                keys.extend(pairs(&[
                    ("CHAP_I", &mid.to_string()),
                    ("CHAP_C", &chap::to_hex(mch)),
                ]));
            }
            let (r2, kv) = x.step(0, 1, true, &keys)?;
            if let Some((m, mid, mch)) = mutual {
                let name = get(&kv, "CHAP_N");
                let got = get(&kv, "CHAP_R").and_then(chap::from_binary);
                let want = chap::response(mid, m.secret.as_bytes(), &mch);
                if name != Some(m.user.as_str()) || !got.is_some_and(|g| chap::same(&g, &want)) {
                    return Err(x.err(
                        "mutual CHAP failed: the target did not prove it knows the mutual secret",
                    ));
                }
            }
            resp = r2;
        }
        ("None", _) => {}
        ("CHAP", None) => {
            return Err(x.err(
                "the target requires CHAP; set VMFS_ISCSI_CHAP_USER and VMFS_ISCSI_CHAP_SECRET",
            ))
        }
        (other, _) => {
            return Err(x.err(format!("target chose unsupported AuthMethod {other:?}")));
        }
    }
    // Leave the security stage (the target may need one more round).
    let mut tries = 0;
    while !(resp.final_bit() && resp.flags() & 3 == 1) {
        tries += 1;
        if tries > 4 {
            return Err(x.err("target never left the security stage"));
        }
        resp = x.step(0, 1, true, &[])?.0;
    }
    // Operational stage.
    let ops = pairs(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxRecvDataSegmentLength", &OUR_MRDSL.to_string()),
        ("MaxBurstLength", "1048576"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "0"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
    ]);
    let mut agreed: Vec<(String, String)> = Vec::new();
    let (mut resp, kv) = x.step(1, 3, true, &ops)?;
    agreed.extend(kv);
    let mut tries = 0;
    while !(resp.final_bit() && resp.flags() & 3 == 3) {
        tries += 1;
        if tries > 4 {
            return Err(x.err("target never entered full-feature phase"));
        }
        let (r, kv) = x.step(1, 3, true, &[])?;
        agreed.extend(kv);
        resp = r;
    }
    let num = |k: &str, default: u32| -> u32 {
        get(&agreed, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let yes = |k: &str, default: bool| -> bool { get(&agreed, k).map_or(default, |v| v == "Yes") };
    if get(&agreed, "HeaderDigest").is_some_and(|v| v != "None")
        || get(&agreed, "DataDigest").is_some_and(|v| v != "None")
    {
        return Err(x.err("target insists on digests, which this initiator does not do"));
    }
    let max_burst = num("MaxBurstLength", 262_144).clamp(512, 1 << 24);
    let s = Session {
        tsih: resp.u16_at(14),
        cmdsn: resp.u32_at(28),
        max_cmdsn: resp.u32_at(32),
        exp_statsn: x.exp_statsn,
        immediate_data: yes("ImmediateData", true),
        first_burst: num("FirstBurstLength", 65_536).clamp(512, max_burst),
        target_mrdsl: num("MaxRecvDataSegmentLength", 8192).clamp(512, (1 << 24) - 1),
    };
    let sock = x.sock;
    sock.set_read_timeout(None)
        .map_err(|e| IscsiError::Connect {
            addr: spec.addr.clone(),
            source: e,
        })?;
    Ok((sock, s))
}
