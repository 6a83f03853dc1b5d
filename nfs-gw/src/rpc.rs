//! ONC RPC v2 messages (RFC 5531): call header parsing, AUTH_SYS
//! credentials, and reply construction.

use crate::xdr::{Decoder, Encoder, XdrError};

pub const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;

/// Largest opaque_auth body (RFC 5531 §8.2).
pub const MAX_AUTH_BYTES: u32 = 400;
/// AUTH_SYS machine name limit (RFC 5531 appendix A).
pub const MAX_MACHINE_NAME: u32 = 255;
/// AUTH_SYS supplementary group limit.
pub const MAX_GIDS: u32 = 16;

/// accept_stat values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStat {
    Success = 0,
    ProgUnavail = 1,
    ProgMismatch = 2,
    ProcUnavail = 3,
    GarbageArgs = 4,
    SystemErr = 5,
}

/// auth_stat values used in MSG_DENIED / AUTH_ERROR replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStat {
    BadCred = 1,
    RejectedCred = 2,
    TooWeak = 5,
}

/// Who is calling, as AUTH_SYS says (unverified, as in every NFSv3 server
/// that trusts AUTH_SYS; exports restrict *which hosts* may say it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSys {
    pub stamp: u32,
    pub machine_name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// Credentials of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    Sys(AuthSys),
    /// A flavour we do not implement (e.g. RPCSEC_GSS); answered TOOWEAK.
    Other(u32),
}

/// A parsed call header; `args` is the procedure's argument bytes.
#[derive(Debug, Clone)]
pub struct CallHeader<'a> {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_num: u32,
    pub cred: Credential,
    pub args: &'a [u8],
}

/// Why a record could not be read as a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not even an xid: nothing to reply to; the connection is dropped.
    NoXid,
    /// A REPLY or unknown message type where a CALL was expected: ignored.
    NotCall { xid: u32 },
    /// RPC version other than 2: answer RPC_MISMATCH.
    RpcMismatch { xid: u32 },
    /// Malformed credential: answer AUTH_ERROR / AUTH_BADCRED.
    BadCred { xid: u32, err: XdrError },
    /// Malformed header after the xid; answer GARBAGE_ARGS.
    Garbage { xid: u32, err: XdrError },
}

fn parse_auth_sys(body: &[u8]) -> Result<AuthSys, XdrError> {
    let mut d = Decoder::new(body);
    let stamp = d.u32("auth_sys stamp")?;
    let machine_name = d.string("auth_sys machinename", MAX_MACHINE_NAME)?.to_vec();
    let uid = d.u32("auth_sys uid")?;
    let gid = d.u32("auth_sys gid")?;
    let n = d.array_len("auth_sys gids", MAX_GIDS, 4)?;
    let mut gids = Vec::with_capacity(n);
    for _ in 0..n {
        gids.push(d.u32("auth_sys gid")?);
    }
    Ok(AuthSys {
        stamp,
        machine_name,
        uid,
        gid,
        gids,
    })
}

/// Parses the call header of one record.
pub fn parse_call(record: &[u8]) -> Result<CallHeader<'_>, HeaderError> {
    let mut d = Decoder::new(record);
    let xid = d.u32("xid").map_err(|_| HeaderError::NoXid)?;
    let garbage = |err| HeaderError::Garbage { xid, err };
    let mtype = d.u32("msg_type").map_err(garbage)?;
    if mtype != MSG_CALL {
        return Err(HeaderError::NotCall { xid });
    }
    let rpcvers = d.u32("rpcvers").map_err(garbage)?;
    if rpcvers != RPC_VERSION {
        return Err(HeaderError::RpcMismatch { xid });
    }
    let prog = d.u32("prog").map_err(garbage)?;
    let vers = d.u32("vers").map_err(garbage)?;
    let proc_num = d.u32("proc").map_err(garbage)?;
    let bad_cred = |err| HeaderError::BadCred { xid, err };
    let flavor = d.u32("cred flavor").map_err(bad_cred)?;
    let body = d.opaque("cred body", MAX_AUTH_BYTES).map_err(bad_cred)?;
    let cred = match flavor {
        AUTH_NONE => Credential::None,
        AUTH_SYS => Credential::Sys(parse_auth_sys(body).map_err(bad_cred)?),
        other => Credential::Other(other),
    };
    let _verf_flavor = d.u32("verf flavor").map_err(bad_cred)?;
    let _verf = d.opaque("verf body", MAX_AUTH_BYTES).map_err(bad_cred)?;
    Ok(CallHeader {
        xid,
        prog,
        vers,
        proc_num,
        cred,
        args: d.rest(),
    })
}

/// Starts an accepted reply: header, null verifier and accept_stat.
/// The caller appends the procedure's results after SUCCESS.
pub fn accepted(xid: u32, stat: AcceptStat) -> Encoder {
    let mut e = Encoder::with_capacity(128);
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_ACCEPTED);
    e.u32(AUTH_NONE);
    e.u32(0);
    e.u32(stat as u32);
    e
}

/// A PROG_MISMATCH reply naming the versions we support.
pub fn prog_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut e = accepted(xid, AcceptStat::ProgMismatch);
    e.u32(low);
    e.u32(high);
    e.into_inner()
}

/// A MSG_DENIED / RPC_MISMATCH reply.
pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_DENIED);
    e.u32(0); // RPC_MISMATCH
    e.u32(RPC_VERSION);
    e.u32(RPC_VERSION);
    e.into_inner()
}

/// A MSG_DENIED / AUTH_ERROR reply.
pub fn auth_error(xid: u32, stat: AuthStat) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_DENIED);
    e.u32(1); // AUTH_ERROR
    e.u32(stat as u32);
    e.into_inner()
}

/// Builds a call (used by the rpcbind registration client and by tests).
pub fn build_call(xid: u32, prog: u32, vers: u32, proc_num: u32, cred: &Credential) -> Encoder {
    let mut e = Encoder::with_capacity(128);
    e.u32(xid);
    e.u32(MSG_CALL);
    e.u32(RPC_VERSION);
    e.u32(prog);
    e.u32(vers);
    e.u32(proc_num);
    match cred {
        Credential::Sys(a) => {
            let mut b = Encoder::new();
            b.u32(a.stamp);
            b.string(&a.machine_name);
            b.u32(a.uid);
            b.u32(a.gid);
            b.u32(a.gids.len() as u32);
            for g in &a.gids {
                b.u32(*g);
            }
            e.u32(AUTH_SYS);
            e.opaque(b.as_slice());
        }
        Credential::None | Credential::Other(_) => {
            e.u32(AUTH_NONE);
            e.u32(0);
        }
    }
    e.u32(AUTH_NONE);
    e.u32(0);
    e
}

/// A decoded reply header (client side: rpcbind registration and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyHeader {
    Accepted { xid: u32, stat: u32 },
    Denied { xid: u32, stat: u32 },
}

/// Parses a reply header; the decoder is left at the results.
pub fn parse_reply(d: &mut Decoder<'_>) -> Result<ReplyHeader, XdrError> {
    let xid = d.u32("xid")?;
    let off = d.position();
    let mtype = d.u32("msg_type")?;
    if mtype != MSG_REPLY {
        return Err(XdrError::BadValue {
            what: "msg_type",
            value: mtype,
            offset: off,
        });
    }
    let off = d.position();
    match d.u32("reply_stat")? {
        MSG_ACCEPTED => {
            d.u32("verf flavor")?;
            d.opaque("verf body", MAX_AUTH_BYTES)?;
            let stat = d.u32("accept_stat")?;
            Ok(ReplyHeader::Accepted { xid, stat })
        }
        MSG_DENIED => {
            let stat = d.u32("reject_stat")?;
            Ok(ReplyHeader::Denied { xid, stat })
        }
        value => Err(XdrError::BadValue {
            what: "reply_stat",
            value,
            offset: off,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_round_trip_with_auth_sys() {
        let cred = Credential::Sys(AuthSys {
            stamp: 9,
            machine_name: b"host".to_vec(),
            uid: 1000,
            gid: 100,
            gids: vec![1, 2, 3],
        });
        let mut e = build_call(42, 100003, 3, 1, &cred);
        e.u32(0xdead);
        let b = e.into_inner();
        let h = parse_call(&b).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_num), (42, 100003, 3, 1));
        assert_eq!(h.cred, cred);
        assert_eq!(h.args, &0xdeadu32.to_be_bytes());
    }

    #[test]
    fn too_many_gids_is_bad_cred() {
        let mut body = Encoder::new();
        body.u32(0);
        body.string(b"h");
        body.u32(0);
        body.u32(0);
        body.u32(17);
        for _ in 0..17 {
            body.u32(0);
        }
        let mut e = Encoder::new();
        for v in [1u32, 0, 2, 100003, 3, 0, AUTH_SYS] {
            e.u32(v);
        }
        e.opaque(body.as_slice());
        e.u32(0);
        e.u32(0);
        let b = e.into_inner();
        assert!(matches!(
            parse_call(&b),
            Err(HeaderError::BadCred { xid: 1, .. })
        ));
    }

    #[test]
    fn wrong_rpc_version_and_reply_type() {
        let mut e = Encoder::new();
        for v in [5u32, 0, 3] {
            e.u32(v);
        }
        assert_eq!(
            parse_call(e.as_slice()).unwrap_err(),
            HeaderError::RpcMismatch { xid: 5 }
        );
        let mut e = Encoder::new();
        e.u32(6);
        e.u32(1);
        assert_eq!(
            parse_call(e.as_slice()).unwrap_err(),
            HeaderError::NotCall { xid: 6 }
        );
        assert_eq!(parse_call(&[1, 2]).unwrap_err(), HeaderError::NoXid);
    }
}
