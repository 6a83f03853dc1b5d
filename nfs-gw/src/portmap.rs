//! Optional registration with a local rpcbind/portmapper (program 100000
//! version 2, PMAPPROC_SET over TCP port 111), so clients that do ask the
//! portmapper find NFS and MOUNT on our port. Clients that are given the
//! ports (libnfs `?nfsport=P&mountport=P`) never need it.

use crate::rpc::{self, Credential, ReplyHeader};
use crate::xdr::Decoder;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PMAP_PROG: u32 = 100000;
const PMAP_VERS: u32 = 2;
const PMAPPROC_SET: u32 = 1;
const PMAPPROC_UNSET: u32 = 2;
const IPPROTO_TCP: u32 = 6;

async fn call(
    addr: SocketAddr,
    xid: u32,
    proc_num: u32,
    prog: u32,
    vers: u32,
    port: u16,
) -> std::io::Result<bool> {
    let mut e = rpc::build_call(xid, PMAP_PROG, PMAP_VERS, proc_num, &Credential::None);
    e.u32(prog);
    e.u32(vers);
    e.u32(IPPROTO_TCP);
    e.u32(port as u32);
    let mut s = TcpStream::connect(addr).await?;
    crate::record::write_record(&mut s, e.as_slice()).await?;
    let mut buf = Vec::new();
    let got = crate::record::read_record(&mut s, &mut buf, 4096)
        .await
        .map_err(std::io::Error::other)?;
    let _ = s.shutdown().await;
    if !got {
        return Err(std::io::Error::other("portmapper closed the connection"));
    }
    let mut d = Decoder::new(&buf);
    match rpc::parse_reply(&mut d).map_err(std::io::Error::other)? {
        ReplyHeader::Accepted { stat: 0, .. } => {
            Ok(d.bool("pmap result").map_err(std::io::Error::other)?)
        }
        other => Err(std::io::Error::other(format!(
            "portmapper refused: {other:?}"
        ))),
    }
}

/// Registers NFS v3 and MOUNT v3 on `port` with the portmapper at
/// `pmap` (normally 127.0.0.1:111). Returns whether both were accepted.
pub async fn register(pmap: SocketAddr, port: u16) -> std::io::Result<bool> {
    let mut ok = true;
    for (i, (prog, vers)) in [
        (crate::nfs3::PROGRAM, crate::nfs3::VERSION),
        (crate::mount::PROGRAM, crate::mount::VERSION),
    ]
    .into_iter()
    .enumerate()
    {
        let xid = 0x706d_0000 + i as u32 * 2;
        let f = async {
            let _ = call(pmap, xid, PMAPPROC_UNSET, prog, vers, 0).await;
            call(pmap, xid + 1, PMAPPROC_SET, prog, vers, port).await
        };
        ok &= tokio::time::timeout(Duration::from_secs(2), f)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{read_record, write_record};
    use tokio::net::TcpListener;

    /// A fake portmapper records the SET calls it receives.
    #[tokio::test]
    async fn registers_nfs_and_mount_on_our_port() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..4 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                assert!(read_record(&mut s, &mut buf, 4096).await.unwrap());
                let h = rpc::parse_call(&buf).unwrap();
                assert_eq!((h.prog, h.vers), (PMAP_PROG, PMAP_VERS));
                let mut d = Decoder::new(h.args);
                let m: Vec<u32> = (0..4).map(|_| d.u32("m").unwrap()).collect();
                seen.push((h.proc_num, m));
                let mut e = rpc::accepted(h.xid, rpc::AcceptStat::Success);
                e.bool(true);
                write_record(&mut s, e.as_slice()).await.unwrap();
            }
            seen
        });
        assert!(register(addr, 20049).await.unwrap());
        let seen = server.await.unwrap();
        assert!(seen.contains(&(PMAPPROC_SET, vec![100003, 3, IPPROTO_TCP, 20049])));
        assert!(seen.contains(&(PMAPPROC_SET, vec![100005, 3, IPPROTO_TCP, 20049])));
        assert!(seen.iter().any(|(p, _)| *p == PMAPPROC_UNSET));
    }

    #[tokio::test]
    async fn no_portmapper_is_an_error_not_a_hang() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(register(addr, 1).await.is_err());
    }
}
