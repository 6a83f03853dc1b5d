//! One connection: login, then either a discovery session (SendTargets) or
//! the full-feature phase of a normal session. A writer task owns the
//! socket's write half and stamps StatSN/ExpCmdSN/MaxCmdSN on every PDU.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::login::{self, LoginResult, SessionKind, CMDSN_WINDOW};
use crate::params::Negotiated;
use crate::pdu::{self, op, reject, Digests, Pdu, PduError, RESERVED_TAG};
use crate::scsi::Nexus;
use crate::server::{Server, Session};
use crate::task::{self, WriteState};
use crate::text;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Login(#[from] login::LoginError),
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A PDU on its way out.
pub struct Out {
    pub pdu: Pdu,
    /// Data segment shared with other PDUs of the same command (Data-In
    /// bursts of one read buffer): sent straight from the buffer, no copy.
    pub payload: Option<Payload>,
    /// Whether this PDU consumes a StatSN.
    pub status: bool,
    /// Close the connection after sending.
    pub close: bool,
}

/// `buf[start..start+len]` as a PDU's data segment.
pub struct Payload {
    pub buf: Arc<Vec<u8>>,
    pub start: usize,
    pub len: usize,
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Connection state shared between reader, tasks and writer.
pub struct Conn {
    pub tx: mpsc::UnboundedSender<Out>,
    pub exp_cmdsn: AtomicU32,
    pub params: Negotiated,
}

impl Conn {
    pub fn send(&self, pdu: Pdu, status: bool) {
        let _ = self.tx.send(Out {
            pdu,
            payload: None,
            status,
            close: false,
        });
    }
    /// Sends `pdu` with `payload` as its data segment.
    pub fn send_with(&self, pdu: Pdu, payload: Payload, status: bool) {
        let _ = self.tx.send(Out {
            pdu,
            payload: Some(payload),
            status,
            close: false,
        });
    }
    pub fn send_and_close(&self, pdu: Pdu) {
        let _ = self.tx.send(Out {
            pdu,
            payload: None,
            status: true,
            close: true,
        });
    }
    pub fn reject(&self, reason: u8, bhs: &[u8; pdu::BHS_LEN]) {
        let mut r = Pdu::new(op::REJECT);
        r.set_flags(0x80);
        r.bhs[2] = reason;
        r.set_itt(RESERVED_TAG);
        r.data = bhs.to_vec();
        self.send(r, true);
    }
}

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: Arc<Conn>,
    mut statsn: u32,
    digests: Digests,
) {
    let mut buf = BufWriter::with_capacity(256 * 1024, &mut wr);
    while let Some(out) = rx.recv().await {
        let mut p = out.pdu;
        let exp = conn.exp_cmdsn.load(Ordering::SeqCst);
        match p.opcode() {
            op::DATA_IN if p.flags() & 0x01 == 0 => {
                p.set_u32(28, exp);
                p.set_u32(32, exp.wrapping_add(CMDSN_WINDOW - 1));
            }
            _ => {
                p.set_u32(24, statsn);
                p.set_u32(28, exp);
                p.set_u32(32, exp.wrapping_add(CMDSN_WINDOW - 1));
            }
        }
        if out.status {
            statsn = statsn.wrapping_add(1);
        }
        let sent = match &out.payload {
            None => buf.write_all(&p.encode(digests)).await,
            Some(payload) => {
                let data = payload.bytes();
                let trailer = Pdu::data_trailer(data, digests);
                match buf.write_all(&p.encode_header(data.len(), digests)).await {
                    Ok(()) => match buf.write_all(data).await {
                        Ok(()) => buf.write_all(&trailer).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        };
        if sent.is_err() {
            return;
        }
        if out.close {
            let _ = buf.flush().await;
            let _ = buf.get_mut().shutdown().await;
            return;
        }
        if rx.is_empty() && buf.flush().await.is_err() {
            return;
        }
    }
    let _ = buf.flush().await;
}

/// Serves one accepted connection until it closes.
pub async fn serve(
    server: Arc<Server>,
    mut sock: TcpStream,
    local: Option<SocketAddr>,
) -> Result<(), ConnError> {
    let lr = login::login(&server, &mut sock).await?;
    let digests = Digests {
        header: lr.params.header_digest,
        data: lr.params.data_digest,
    };
    let (rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        tx,
        exp_cmdsn: AtomicU32::new(lr.cmdsn),
        params: lr.params.clone(),
    });
    let w = tokio::spawn(writer(wr, rx, conn.clone(), lr.statsn, digests));
    let result = match &lr.kind {
        SessionKind::Discovery => discovery(&server, rd, &conn, &lr, local, digests).await,
        SessionKind::Normal(t) => {
            let nexus = Nexus {
                initiator: lr.initiator.clone(),
                isid: lr.isid,
                tpgt: server.config.tpgt,
            };
            tracing::info!(initiator = %lr.initiator, target = %t.config.iqn, tsih = lr.tsih, "session logged in");
            let session = server.add_session(nexus, t.clone(), lr.tsih);
            let r = full_feature(&server, rd, &conn, &session, digests).await;
            session.abort_where(|_, _| true);
            server.remove_session(&session);
            r
        }
    };
    drop(conn);
    let _ = w.await;
    result
}

fn send_targets(
    server: &Server,
    initiator: &str,
    only: Option<&str>,
    local: Option<SocketAddr>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let addrs: Vec<SocketAddr> = match local {
        Some(a) => vec![a],
        None => server
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    for t in &server.targets {
        if !t.config.allows(initiator) || only.is_some_and(|o| o != t.config.iqn) {
            continue;
        }
        out.push(("TargetName".to_string(), t.config.iqn.clone()));
        for a in &addrs {
            let host = match a {
                SocketAddr::V4(v) => v.ip().to_string(),
                SocketAddr::V6(v) => format!("[{}]", v.ip()),
            };
            out.push((
                "TargetAddress".to_string(),
                format!("{host}:{},{}", a.port(), server.config.tpgt),
            ));
        }
    }
    out
}

/// Encodes text pairs allowing repeated keys (SendTargets output).
fn encode_multi(pairs: &[(String, String)]) -> Vec<u8> {
    text::encode(pairs)
}

fn handle_text(
    server: &Server,
    conn: &Conn,
    req: &Pdu,
    initiator: &str,
    only: Option<&str>,
    local: Option<SocketAddr>,
) {
    let mut resp = Pdu::new(op::TEXT_RESP);
    resp.set_flags(0x80);
    resp.set_itt(req.itt());
    resp.set_u32(20, RESERVED_TAG);
    let pairs = text::parse(&req.data).unwrap_or_default();
    let mut out = Vec::new();
    for (k, v) in &pairs {
        if k == "SendTargets" {
            let only = match v.as_str() {
                "All" => only,
                "" => only,
                name => Some(name),
            };
            out.extend(send_targets(server, initiator, only, local));
        } else {
            out.push((k.clone(), "NotUnderstood".into()));
        }
    }
    let mut data = encode_multi(&out);
    data.truncate(conn.params.initiator_mrdsl as usize);
    resp.data = data;
    conn.send(resp, true);
}

fn logout_response(conn: &Conn, req: &Pdu) {
    let reason = req.flags() & 0x7f;
    let mut r = Pdu::new(op::LOGOUT_RESP);
    r.set_flags(0x80);
    r.bhs[2] = if reason == 2 { 2 } else { 0 };
    r.set_itt(req.itt());
    conn.send_and_close(r);
}

fn advance_cmdsn(conn: &Conn, p: &Pdu) -> bool {
    if p.immediate() {
        return true;
    }
    let cmdsn = p.u32_at(24);
    let exp = conn.exp_cmdsn.load(Ordering::SeqCst);
    let diff = cmdsn.wrapping_sub(exp);
    if diff >= CMDSN_WINDOW {
        tracing::debug!(cmdsn, exp, "CmdSN outside window: PDU ignored");
        return false;
    }
    if diff == 0 {
        conn.exp_cmdsn.store(exp.wrapping_add(1), Ordering::SeqCst);
    } else {
        conn.exp_cmdsn
            .store(cmdsn.wrapping_add(1), Ordering::SeqCst);
    }
    true
}

fn nop_in(conn: &Conn, req: &Pdu) {
    if req.itt() == RESERVED_TAG {
        return;
    }
    let mut r = Pdu::new(op::NOP_IN);
    r.set_flags(0x80);
    r.set_lun_field(req.lun_field());
    r.set_itt(req.itt());
    r.set_u32(20, RESERVED_TAG);
    r.data = req.data.clone();
    r.data.truncate(conn.params.initiator_mrdsl as usize);
    conn.send(r, true);
}

async fn discovery(
    server: &Server,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    conn: &Arc<Conn>,
    lr: &LoginResult,
    local: Option<SocketAddr>,
    digests: Digests,
) -> Result<(), ConnError> {
    loop {
        let p = pdu::read_pdu(&mut rd, digests, conn.params.target_mrdsl as usize).await?;
        match p.opcode() {
            op::TEXT_REQ => {
                advance_cmdsn(conn, &p);
                handle_text(server, conn, &p, &lr.initiator, None, local);
            }
            op::NOP_OUT => {
                advance_cmdsn(conn, &p);
                nop_in(conn, &p);
            }
            op::LOGOUT_REQ => {
                advance_cmdsn(conn, &p);
                logout_response(conn, &p);
                return Ok(());
            }
            _ => {
                conn.reject(reject::PROTOCOL_ERROR, &p.bhs);
                return Err(ConnError::Protocol(format!(
                    "opcode {:#04x} in a discovery session",
                    p.opcode()
                )));
            }
        }
    }
}

async fn full_feature(
    server: &Arc<Server>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    conn: &Arc<Conn>,
    session: &Arc<Session>,
    digests: Digests,
) -> Result<(), ConnError> {
    let mut writes: HashMap<u32, WriteState> = HashMap::new();
    let mut shutdown = session.shutdown.subscribe();
    let mut next_ttt: u32 = 1;
    loop {
        let p = tokio::select! {
            r = pdu::read_pdu(&mut rd, digests, conn.params.target_mrdsl as usize) => match r {
                Ok(p) => p,
                Err(PduError::DataDigest { bhs, .. }) => {
                    conn.reject(reject::DATA_DIGEST, &bhs);
                    return Err(ConnError::Protocol("data digest error".into()));
                }
                Err(e) => return Err(e.into()),
            },
            _ = shutdown.changed() => {
                return Ok(());
            }
        };
        match p.opcode() {
            op::NOP_OUT => {
                if advance_cmdsn(conn, &p) {
                    nop_in(conn, &p);
                }
            }
            op::SCSI_CMD => {
                if !advance_cmdsn(conn, &p) {
                    continue;
                }
                task::command(conn, session, p, &mut writes, &mut next_ttt)?;
            }
            op::DATA_OUT => task::data_out(conn, session, p, &mut writes, &mut next_ttt)?,
            op::TMF_REQ => {
                if advance_cmdsn(conn, &p) {
                    crate::tmf::handle(server, conn, session, &p, &mut writes);
                }
            }
            op::TEXT_REQ => {
                if advance_cmdsn(conn, &p) {
                    handle_text(
                        server,
                        conn,
                        &p,
                        &session.nexus.initiator,
                        Some(&session.target.config.iqn),
                        None,
                    );
                }
            }
            op::LOGOUT_REQ => {
                advance_cmdsn(conn, &p);
                logout_response(conn, &p);
                return Ok(());
            }
            op::LOGIN_REQ => {
                conn.reject(reject::PROTOCOL_ERROR, &p.bhs);
                return Err(ConnError::Protocol(
                    "login request in full-feature phase".into(),
                ));
            }
            op::SNACK => conn.reject(reject::COMMAND_NOT_SUPPORTED, &p.bhs),
            other => {
                conn.reject(reject::COMMAND_NOT_SUPPORTED, &p.bhs);
                tracing::debug!(opcode = other, "unsupported opcode rejected");
            }
        }
    }
}
