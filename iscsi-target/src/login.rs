//! Login phase (RFC 7143 §6.3, §11.12-13): security negotiation (None or
//! CHAP, one-way or mutual) and operational parameter negotiation.

use std::sync::Arc;

use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::chap;
use crate::config::ChapCredentials;
use crate::params::{self, Negotiated, Reply};
use crate::pdu::{self, op, Digests, Pdu};
use crate::server::{Server, Target};
use crate::text;

/// Login status class/detail (RFC 7143 §11.13.5).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const INITIATOR_ERROR: u16 = 0x0200;
    pub const AUTH_FAILURE: u16 = 0x0201;
    pub const AUTHORIZATION_FAILURE: u16 = 0x0202;
    pub const NOT_FOUND: u16 = 0x0203;
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    pub const TOO_MANY_CONNECTIONS: u16 = 0x0206;
    pub const MISSING_PARAMETER: u16 = 0x0207;
    pub const SESSION_TYPE_NOT_SUPPORTED: u16 = 0x0209;
    pub const SESSION_DOES_NOT_EXIST: u16 = 0x020a;
    pub const INVALID_DURING_LOGIN: u16 = 0x020b;
}

/// Largest text data segment accepted during login.
const LOGIN_MAX_DATA: usize = 65536;
pub const CMDSN_WINDOW: u32 = 128;

pub enum SessionKind {
    Discovery,
    Normal(Arc<Target>),
}

pub struct LoginResult {
    pub kind: SessionKind,
    pub initiator: String,
    pub isid: [u8; 6],
    pub params: Negotiated,
    /// CmdSN the first full-feature command carries.
    pub cmdsn: u32,
    /// Next StatSN to use.
    pub statsn: u32,
    pub tsih: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Pdu(#[from] pdu::PduError),
    #[error("login refused: {reason} (status {status:#06x})")]
    Refused { status: u16, reason: String },
    #[error("protocol error during login: {0}")]
    Protocol(String),
}

enum Chap {
    None,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    Challenged {
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
}

struct State {
    initiator: Option<String>,
    kind: Option<SessionKind>,
    auth_required: Option<(ChapCredentials, Option<ChapCredentials>)>,
    chap: Chap,
    auth_method_chosen: bool,
    params: Negotiated,
    first: bool,
    tpgt_sent: bool,
    /// Keys pending across a C-bit continuation.
    partial: Vec<u8>,
}

fn refuse(status: u16, reason: impl Into<String>) -> LoginError {
    LoginError::Refused {
        status,
        reason: reason.into(),
    }
}

/// Runs the login phase on a fresh connection. On refusal, a Login
/// Response with the status has been sent before the error is returned.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Server,
    sock: &mut S,
) -> Result<LoginResult, LoginError> {
    let mut st = State {
        initiator: None,
        kind: None,
        auth_required: None,
        chap: Chap::None,
        auth_method_chosen: false,
        params: Negotiated::defaults(&server.limits),
        first: true,
        tpgt_sent: false,
        partial: Vec::new(),
    };
    let mut statsn: u32 = rand::random::<u16>() as u32;
    let mut isid = [0u8; 6];
    let mut tsih_req;
    let mut itt;
    let mut cmdsn;
    loop {
        let req = pdu::read_pdu(sock, Digests::default(), LOGIN_MAX_DATA).await?;
        if req.opcode() != op::LOGIN_REQ {
            return Err(LoginError::Protocol(format!(
                "opcode {:#04x} before login completed",
                req.opcode()
            )));
        }
        itt = req.itt();
        cmdsn = req.u32_at(24);
        let flags = req.flags();
        let transit = flags & 0x80 != 0;
        let cont = flags & 0x40 != 0;
        let csg = (flags >> 2) & 3;
        let nsg = flags & 3;
        let this_isid: [u8; 6] = req.bhs[8..14].try_into().expect("6");
        tsih_req = req.u16_at(14);
        let mut resp = Pdu::new(op::LOGIN_RESP);
        resp.bhs[8..14].copy_from_slice(&this_isid);
        resp.set_itt(itt);
        let send = |mut resp: Pdu, statsn: u32, status: u16| {
            resp.set_u32(24, statsn);
            resp.set_u32(28, cmdsn);
            resp.set_u32(32, cmdsn.wrapping_add(CMDSN_WINDOW - 1));
            resp.bhs[36] = (status >> 8) as u8;
            resp.bhs[37] = status as u8;
            resp.encode(Digests::default())
        };
        macro_rules! fail {
            ($status:expr, $reason:expr) => {{
                let mut r = resp;
                r.set_flags(0);
                let bytes = send(r, statsn, $status);
                let _ = sock.write_all(&bytes).await;
                return Err(refuse($status, $reason));
            }};
        }
        if st.first {
            isid = this_isid;
            if req.bhs[3] > 0 {
                fail!(status::UNSUPPORTED_VERSION, "version-min above 0");
            }
        } else if this_isid != isid {
            fail!(status::INITIATOR_ERROR, "ISID changed during login");
        }
        if csg == 2 || csg == 3 || (transit && (nsg == 2 || nsg < csg)) {
            fail!(
                status::INITIATOR_ERROR,
                format!("bad stage transition {csg}->{nsg}")
            );
        }
        if cont && transit {
            fail!(status::INITIATOR_ERROR, "C and T both set");
        }
        st.partial.extend_from_slice(&req.data);
        if cont {
            // Acknowledge and wait for the rest of the text.
            resp.set_flags((csg << 2) & 0x0c);
            let bytes = send(resp, statsn, status::SUCCESS);
            sock.write_all(&bytes).await.map_err(pdu::PduError::Io)?;
            continue;
        }
        let data = std::mem::take(&mut st.partial);
        let pairs = match text::parse(&data) {
            Ok(p) => p,
            Err(e) => fail!(status::INITIATOR_ERROR, e.to_string()),
        };
        let mut out: Vec<(String, String)> = Vec::new();
        if st.first {
            st.first = false;
            let get = |k: &str| pairs.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
            let Some(name) = get("InitiatorName") else {
                fail!(status::MISSING_PARAMETER, "no InitiatorName")
            };
            st.initiator = Some(name.clone());
            let stype = get("SessionType").unwrap_or_else(|| "Normal".into());
            match stype.as_str() {
                "Discovery" => {
                    st.kind = Some(SessionKind::Discovery);
                    if let Some(c) = server.discovery_chap() {
                        st.auth_required = Some((c.clone(), None));
                    }
                }
                "Normal" => {
                    let Some(tn) = get("TargetName") else {
                        fail!(status::MISSING_PARAMETER, "no TargetName")
                    };
                    let Some(t) = server.target(&tn) else {
                        fail!(status::NOT_FOUND, format!("no target {tn}"))
                    };
                    if !t.config.allows(&name) {
                        fail!(
                            status::AUTHORIZATION_FAILURE,
                            format!("{name} may not use {tn}")
                        );
                    }
                    if tsih_req != 0 {
                        if server.tsih_exists(tsih_req) {
                            fail!(status::TOO_MANY_CONNECTIONS, "MaxConnections is 1");
                        }
                        fail!(status::SESSION_DOES_NOT_EXIST, "unknown TSIH");
                    }
                    if let Some(c) = &t.config.chap {
                        st.auth_required = Some((c.clone(), t.config.mutual_chap.clone()));
                    }
                    st.kind = Some(SessionKind::Normal(t));
                }
                _ => fail!(status::SESSION_TYPE_NOT_SUPPORTED, stype),
            }
        }
        let discovery = matches!(st.kind, Some(SessionKind::Discovery));
        if csg == 1 && st.auth_required.is_some() && !matches!(st.chap, Chap::Done) {
            fail!(status::AUTH_FAILURE, "authentication required");
        }
        for (k, v) in &pairs {
            match k.as_str() {
                "InitiatorName" | "SessionType" | "TargetName" | "InitiatorAlias" => {}
                "AuthMethod" if csg == 0 => {
                    let offered: Vec<&str> = v.split(',').collect();
                    let choice = if st.auth_required.is_some() {
                        offered.contains(&"CHAP").then_some("CHAP")
                    } else {
                        offered.contains(&"None").then_some("None")
                    };
                    match choice {
                        Some(c) => {
                            st.auth_method_chosen = true;
                            if c == "None" {
                                st.chap = Chap::Done;
                            }
                            out.push((k.clone(), c.into()));
                        }
                        None => fail!(status::AUTH_FAILURE, "no acceptable AuthMethod"),
                    }
                }
                "CHAP_A" if csg == 0 => {
                    if st.auth_required.is_none() || !st.auth_method_chosen {
                        fail!(status::INITIATOR_ERROR, "CHAP_A without CHAP");
                    }
                    if !v.split(',').any(|a| a == "5") {
                        fail!(status::AUTH_FAILURE, "only CHAP_A=5 (MD5) is supported");
                    }
                    let id: u8 = rand::random();
                    let mut challenge = vec![0u8; 16];
                    rand::thread_rng().fill_bytes(&mut challenge);
                    out.push(("CHAP_A".into(), "5".into()));
                    out.push(("CHAP_I".into(), id.to_string()));
                    out.push(("CHAP_C".into(), chap::to_hex(&challenge)));
                    st.chap = Chap::Challenged { id, challenge };
                }
                "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C" if csg == 0 => {}
                _ if csg == 0 && !k.starts_with("CHAP_") && k != "AuthMethod" => {
                    // Operational keys may appear in the security stage too.
                    answer(server, &mut st, k, v, discovery, &mut out);
                }
                _ if csg == 1 => answer(server, &mut st, k, v, discovery, &mut out),
                _ => fail!(status::INITIATOR_ERROR, format!("key {k} in stage {csg}")),
            }
        }
        // CHAP response from the initiator.
        if let Some(r) = pairs.iter().find(|(k, _)| k == "CHAP_R") {
            let Chap::Challenged { id, challenge } = &st.chap else {
                fail!(status::INITIATOR_ERROR, "CHAP_R without challenge")
            };
            let Some((creds, mutual)) = st.auth_required.clone() else {
                fail!(status::INITIATOR_ERROR, "CHAP_R without CHAP")
            };
            let user = pairs
                .iter()
                .find(|(k, _)| k == "CHAP_N")
                .map(|(_, v)| v.as_str());
            let got = chap::from_binary(&r.1).unwrap_or_default();
            let want = chap::response(*id, creds.secret.as_bytes(), challenge);
            if user != Some(creds.user.as_str()) || !chap::same(&got, &want) {
                tracing::warn!(user = user.unwrap_or(""), "CHAP authentication failed");
                fail!(status::AUTH_FAILURE, "CHAP response mismatch");
            }
            let ci = pairs.iter().find(|(k, _)| k == "CHAP_I");
            let cc = pairs.iter().find(|(k, _)| k == "CHAP_C");
            match (ci, cc, mutual) {
                (Some(ci), Some(cc), Some(m)) => {
                    let Ok(mid) = ci.1.parse::<u8>() else {
                        fail!(status::AUTH_FAILURE, "bad CHAP_I")
                    };
                    let Some(mch) = chap::from_binary(&cc.1) else {
                        fail!(status::AUTH_FAILURE, "bad CHAP_C")
                    };
                    if mch == *challenge || mch.len() < 8 {
                        fail!(status::AUTH_FAILURE, "reflected or short CHAP challenge");
                    }
                    out.push(("CHAP_N".into(), m.user.clone()));
                    let resp = chap::response(mid, m.secret.as_bytes(), &mch);
                    out.push(("CHAP_R".into(), chap::to_hex(&resp)));
                }
                (Some(_), Some(_), None) => {
                    fail!(status::AUTH_FAILURE, "mutual CHAP not configured")
                }
                (None, None, Some(_)) => fail!(status::AUTH_FAILURE, "mutual CHAP required"),
                _ => {}
            }
            st.chap = Chap::Done;
        }
        if !st.tpgt_sent && !discovery {
            out.push((
                "TargetPortalGroupTag".into(),
                server.config.tpgt.to_string(),
            ));
            st.tpgt_sent = true;
        }
        let mut do_transit = transit;
        if transit && csg == 0 && !matches!(st.chap, Chap::Done) {
            // Cannot leave the security stage before authentication completes.
            if st.auth_required.is_some()
                && !matches!(st.chap, Chap::Challenged { .. })
                && !st.auth_method_chosen
            {
                fail!(status::AUTH_FAILURE, "authentication not negotiated");
            }
            do_transit = false;
        }
        if do_transit && nsg == 3 && st.auth_required.is_some() && !matches!(st.chap, Chap::Done) {
            fail!(status::AUTH_FAILURE, "authentication incomplete");
        }
        let mut fl = (csg << 2) & 0x0c;
        if do_transit {
            fl |= 0x80 | nsg;
        }
        resp.set_flags(fl);
        let final_login = do_transit && nsg == 3;
        let tsih = if final_login { server.alloc_tsih() } else { 0 };
        if final_login {
            resp.set_u16(14, tsih);
            // Declare our receive limit if the initiator never asked.
            if !out.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength") {
                out.push((
                    "MaxRecvDataSegmentLength".into(),
                    st.params.target_mrdsl.to_string(),
                ));
            }
        }
        resp.data = text::encode(&out);
        let bytes = send(resp, statsn, status::SUCCESS);
        sock.write_all(&bytes).await.map_err(pdu::PduError::Io)?;
        statsn = statsn.wrapping_add(1);
        if final_login {
            let kind = st
                .kind
                .take()
                .ok_or_else(|| LoginError::Protocol("no session type".into()))?;
            return Ok(LoginResult {
                kind,
                initiator: st.initiator.take().unwrap_or_default(),
                isid,
                params: st.params,
                cmdsn,
                statsn,
                tsih,
            });
        }
    }
}

fn answer(
    server: &Server,
    st: &mut State,
    k: &str,
    v: &str,
    discovery: bool,
    out: &mut Vec<(String, String)>,
) {
    if out.iter().any(|(ok, _)| ok == k) {
        return;
    }
    let reply = params::negotiate(k, v, &server.limits, &mut st.params);
    let value = match reply {
        Reply::Value(x) => {
            if discovery
                && matches!(
                    k,
                    "MaxBurstLength"
                        | "FirstBurstLength"
                        | "InitialR2T"
                        | "ImmediateData"
                        | "MaxOutstandingR2T"
                        | "DataPDUInOrder"
                        | "DataSequenceInOrder"
                )
            {
                "Irrelevant".to_string()
            } else {
                x
            }
        }
        Reply::NoReply => {
            if k == "MaxRecvDataSegmentLength" {
                st.params.target_mrdsl.to_string()
            } else {
                return;
            }
        }
        Reply::NotUnderstood => "NotUnderstood".into(),
        Reply::Irrelevant => "Irrelevant".into(),
        Reply::Reject => "Reject".into(),
    };
    out.push((k.to_string(), value));
}
