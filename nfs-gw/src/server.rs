//! The TCP server: accepts connections, reads RPC records, routes calls to
//! NFS v3 or MOUNT v3 (both on the one port), and sends replies.
//!
//! Calls on one connection are processed concurrently (bounded by
//! [`MAX_IN_FLIGHT`]) on blocking worker threads, since backends block;
//! replies go back in completion order, matched by xid as RPC allows.

use crate::export::Export;
use crate::nfs3::{self, Ctx, Outcome};
use crate::record::{read_record, RecordError};
use crate::rpc::{self, AcceptStat, AuthStat, Credential, HeaderError};
use crate::{mount, Caller};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Largest RPC record accepted: a 1 MiB WRITE plus headers.
pub const MAX_RECORD: usize = nfs3::MAX_IO as usize + 64 * 1024;
/// Calls processed at once per connection (bounds memory to about
/// `MAX_IN_FLIGHT * MAX_RECORD` per connection).
pub const MAX_IN_FLIGHT: usize = 16;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// State shared by all connections.
pub struct ServerState {
    pub exports: Vec<Export>,
    /// WRITE/COMMIT verifier: random at every start, so clients notice a
    /// restart and resend unstable writes that were never committed.
    pub write_verifier: [u8; 8],
    /// MOUNT's record of (client, path) for DUMP.
    pub mounts: Mutex<Vec<(String, String)>>,
}

impl ServerState {
    pub fn new(exports: Vec<Export>) -> ServerState {
        ServerState {
            exports,
            write_verifier: rand::random(),
            mounts: Mutex::new(Vec::new()),
        }
    }
}

/// Answers one RPC record. `None`: send nothing (not a call).
/// `Err(())`: the record was not even an RPC message; drop the connection.
#[allow(clippy::result_unit_err)]
pub fn handle_record(
    state: &ServerState,
    peer: IpAddr,
    record: &[u8],
) -> Result<Option<Vec<u8>>, ()> {
    let call = match rpc::parse_call(record) {
        Ok(c) => c,
        Err(HeaderError::NoXid) => return Err(()),
        Err(HeaderError::NotCall { .. }) => return Ok(None),
        Err(HeaderError::RpcMismatch { xid }) => return Ok(Some(rpc::rpc_mismatch(xid))),
        Err(HeaderError::BadCred { xid, err }) => {
            tracing::debug!(%peer, xid, %err, "bad credential");
            return Ok(Some(rpc::auth_error(xid, AuthStat::BadCred)));
        }
        Err(HeaderError::Garbage { xid, err }) => {
            tracing::debug!(%peer, xid, %err, "garbage call header");
            return Ok(Some(
                rpc::accepted(xid, AcceptStat::GarbageArgs).into_inner(),
            ));
        }
    };
    let xid = call.xid;
    let (low, high, is_nfs) = match call.prog {
        nfs3::PROGRAM => (nfs3::VERSION, nfs3::VERSION, true),
        mount::PROGRAM => (mount::VERSION, mount::VERSION, false),
        _ => {
            return Ok(Some(
                rpc::accepted(xid, AcceptStat::ProgUnavail).into_inner(),
            ))
        }
    };
    if call.vers < low || call.vers > high {
        return Ok(Some(rpc::prog_mismatch(xid, low, high)));
    }
    let caller = match &call.cred {
        Credential::Sys(a) => Some(Caller {
            uid: a.uid,
            gid: a.gid,
            gids: a.gids.clone(),
        }),
        Credential::None => None,
        Credential::Other(_) => None,
    };
    if call.proc_num != 0 {
        let acceptable = match &call.cred {
            Credential::Sys(_) => true,
            Credential::None => !is_nfs,
            Credential::Other(_) => false,
        };
        if !acceptable {
            return Ok(Some(rpc::auth_error(xid, AuthStat::TooWeak)));
        }
    }
    let ctx = Ctx {
        state,
        peer,
        caller,
    };
    let mut e = rpc::accepted(xid, AcceptStat::Success);
    let outcome = if is_nfs {
        nfs3::dispatch(&ctx, call.proc_num, call.args, &mut e)
    } else {
        mount::dispatch(&ctx, call.proc_num, call.args, &mut e)
    };
    Ok(Some(match outcome {
        Outcome::Done => e.into_inner(),
        Outcome::ProcUnavail => rpc::accepted(xid, AcceptStat::ProcUnavail).into_inner(),
        Outcome::Garbage(err) => {
            tracing::debug!(%peer, xid, proc = call.proc_num, %err, "garbage arguments");
            rpc::accepted(xid, AcceptStat::GarbageArgs).into_inner()
        }
    }))
}

async fn write_replies(mut w: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(body) = rx.recv().await {
        let hdr = (body.len() as u32 | 0x8000_0000).to_be_bytes();
        if w.write_all(&hdr).await.is_err() || w.write_all(&body).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn serve_connection(state: Arc<ServerState>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_replies(wr, rx));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut buf = Vec::new();
        match read_record(&mut rd, &mut buf, MAX_RECORD).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(RecordError::Io(_)) => break,
            Err(e) => {
                tracing::info!(%peer, error = %e, "dropping connection");
                break;
            }
        }
        if buf.len() < 4 {
            // Not even an xid: not RPC. Nothing sensible to answer.
            tracing::info!(%peer, len = buf.len(), "record too short for RPC; dropping connection");
            break;
        }
        let state = state.clone();
        let tx = tx.clone();
        let ip = peer.ip();
        tokio::spawn(async move {
            let job = tokio::task::spawn_blocking(move || handle_record(&state, ip, &buf));
            if let Ok(Ok(Some(reply))) = job.await {
                let _ = tx.send(reply).await;
            }
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
}

/// A bound NFS gateway.
pub struct Server {
    state: Arc<ServerState>,
    listener: TcpListener,
}

impl Server {
    pub async fn bind(addr: SocketAddr, exports: Vec<Export>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            state: Arc::new(ServerState::new(exports)),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Serves until `shutdown` completes (then stops accepting; the caller
    /// drops the runtime to end open connections) or the listener fails.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::select! {
            r = self.run() => r,
            () = shutdown => Ok(()),
        }
    }

    /// Serves until the listener fails.
    pub async fn run(self) -> std::io::Result<()> {
        let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = conns
                .clone()
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let (stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let allowed = self.state.exports.iter().any(|e| e.allows(peer.ip()));
            if !allowed {
                tracing::info!(%peer, "connection from a client no export allows");
                continue;
            }
            let state = self.state.clone();
            tokio::spawn(async move {
                serve_connection(state, stream, peer).await;
                drop(permit);
            });
        }
    }
}
