//! A minimal blocking NFSv3/MOUNT client over the crate's XDR codec.

use nfs_gw::rpc::{self, AuthSys, Credential, ReplyHeader};
use nfs_gw::xdr::{Decoder, Encoder, XdrError};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const NFS: u32 = 100003;
pub const MOUNT: u32 = 100005;

pub struct Client {
    s: TcpStream,
    xid: u32,
    pub cred: Credential,
}

/// A reply: accept_stat (or `Denied`) and the result bytes.
#[derive(Debug)]
pub enum Reply {
    Accepted { stat: u32, body: Vec<u8> },
    Denied { stat: u32 },
}

impl Reply {
    /// The results of a SUCCESS reply.
    pub fn ok(self) -> Vec<u8> {
        match self {
            Reply::Accepted { stat: 0, body } => body,
            other => panic!("RPC not accepted: {other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fattr {
    pub ftype: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Bytes of storage the file holds.
    pub used: u64,
    pub fileid: u64,
}

pub fn root_cred() -> Credential {
    cred(0, 0)
}

pub fn cred(uid: u32, gid: u32) -> Credential {
    Credential::Sys(AuthSys {
        stamp: 1,
        machine_name: b"test".to_vec(),
        uid,
        gid,
        gids: vec![gid],
    })
}

fn get_fattr(d: &mut Decoder<'_>) -> Result<Fattr, XdrError> {
    let ftype = d.u32("type")?;
    let mode = d.u32("mode")?;
    let nlink = d.u32("nlink")?;
    let uid = d.u32("uid")?;
    let gid = d.u32("gid")?;
    let size = d.u64("size")?;
    let used = d.u64("used")?;
    d.u64("rdev")?;
    d.u64("fsid")?;
    let fileid = d.u64("fileid")?;
    for _ in 0..6 {
        d.u32("time")?;
    }
    Ok(Fattr {
        ftype,
        mode,
        nlink,
        uid,
        gid,
        size,
        used,
        fileid,
    })
}

pub fn post_op_attr(d: &mut Decoder<'_>) -> Option<Fattr> {
    if d.bool("attributes_follow").unwrap() {
        Some(get_fattr(d).unwrap())
    } else {
        None
    }
}

fn skip_wcc(d: &mut Decoder<'_>) {
    if d.bool("pre").unwrap() {
        d.u64("size").unwrap();
        for _ in 0..4 {
            d.u32("t").unwrap();
        }
    }
    post_op_attr(d);
}

pub type Fh = Vec<u8>;

/// A directory listing page: (fileid, name, cookie) entries, verifier, eof.
pub struct Page {
    pub entries: Vec<(u64, Vec<u8>, u64)>,
    pub verf: [u8; 8],
    pub eof: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            xid: 1,
            cred: root_cred(),
        }
    }

    /// Closes our sending side (the server then sees end of stream).
    pub fn shutdown_write(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Write);
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.s.set_read_timeout(Some(d)).unwrap();
    }

    /// Sends raw bytes (for hostile-input tests).
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Sends a body as one last fragment.
    pub fn send_record(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut v = ((body.len() as u32) | 0x8000_0000).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        self.s.write_all(&v)
    }

    /// Reads one record; `None` when the server closed the connection.
    pub fn recv_record(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 4];
            if self.s.read_exact(&mut h).is_err() {
                return None;
            }
            let w = u32::from_be_bytes(h);
            let len = (w & 0x7fff_ffff) as usize;
            let start = out.len();
            out.resize(start + len, 0);
            self.s.read_exact(&mut out[start..]).ok()?;
            if w & 0x8000_0000 != 0 {
                return Some(out);
            }
        }
    }

    pub fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    /// Builds the call bytes without sending.
    pub fn call_bytes(
        &mut self,
        prog: u32,
        vers: u32,
        proc_num: u32,
        args: &[u8],
    ) -> (u32, Vec<u8>) {
        let xid = self.next_xid();
        let mut e = rpc::build_call(xid, prog, vers, proc_num, &self.cred);
        e.opaque_fixed(args);
        (xid, e.into_inner())
    }

    /// Makes a call; returns the decoded reply.
    pub fn call(&mut self, prog: u32, vers: u32, proc_num: u32, args: &[u8]) -> Reply {
        let (xid, b) = self.call_bytes(prog, vers, proc_num, args);
        self.send_record(&b).expect("send");
        let r = self.recv_record().expect("server closed the connection");
        let mut d = Decoder::new(&r);
        match rpc::parse_reply(&mut d).expect("reply header") {
            ReplyHeader::Accepted { xid: x, stat } => {
                assert_eq!(x, xid);
                Reply::Accepted {
                    stat,
                    body: d.rest().to_vec(),
                }
            }
            ReplyHeader::Denied { xid: x, stat } => {
                assert_eq!(x, xid);
                let mut d2 = d.clone();
                let _ = d2.u32("x");
                Reply::Denied { stat }
            }
        }
    }

    pub fn null(&mut self) -> bool {
        matches!(self.call(NFS, 3, 0, &[]), Reply::Accepted { stat: 0, .. })
    }

    pub fn mnt(&mut self, path: &str) -> Result<Fh, u32> {
        let mut e = Encoder::new();
        e.string(path.as_bytes());
        let body = self.call(MOUNT, 3, 1, e.as_slice()).ok();
        let mut d = Decoder::new(&body);
        match d.u32("mountstat").unwrap() {
            0 => Ok(d.opaque("fh", 64).unwrap().to_vec()),
            s => Err(s),
        }
    }

    fn nfs(&mut self, proc_num: u32, e: Encoder) -> Vec<u8> {
        self.call(NFS, 3, proc_num, e.as_slice()).ok()
    }

    pub fn getattr(&mut self, fh: &[u8]) -> Result<Fattr, u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        let b = self.nfs(1, e);
        let mut d = Decoder::new(&b);
        match d.u32("status").unwrap() {
            0 => Ok(get_fattr(&mut d).unwrap()),
            s => Err(s),
        }
    }

    pub fn set_size(&mut self, fh: &[u8], size: u64) -> u32 {
        let mut e = Encoder::new();
        e.opaque(fh);
        for v in [0u32, 0, 0, 1] {
            e.u32(v);
        }
        e.u64(size);
        e.u32(0);
        e.u32(0);
        e.u32(0); // no guard
        let b = self.nfs(2, e);
        Decoder::new(&b).u32("status").unwrap()
    }

    pub fn lookup(&mut self, dir: &[u8], name: &[u8]) -> Result<Fh, u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        let b = self.nfs(3, e);
        let mut d = Decoder::new(&b);
        match d.u32("status").unwrap() {
            0 => Ok(d.opaque("fh", 64).unwrap().to_vec()),
            s => Err(s),
        }
    }

    fn diropres(b: &[u8]) -> Result<Fh, u32> {
        let mut d = Decoder::new(b);
        match d.u32("status").unwrap() {
            0 => {
                assert!(d.bool("handle_follows").unwrap());
                Ok(d.opaque("fh", 64).unwrap().to_vec())
            }
            s => Err(s),
        }
    }

    /// CREATE; `mode` 0 UNCHECKED, 1 GUARDED (with mode 0644).
    pub fn create(&mut self, dir: &[u8], name: &[u8], how: u32) -> Result<Fh, u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        e.u32(how);
        if how == 2 {
            e.opaque_fixed(&[1, 2, 3, 4, 5, 6, 7, 8]);
        } else {
            e.u32(1);
            e.u32(0o644);
            for _ in 0..5 {
                e.u32(0);
            }
        }
        let b = self.nfs(8, e);
        Self::diropres(&b)
    }

    pub fn mkdir(&mut self, dir: &[u8], name: &[u8]) -> Result<Fh, u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        e.u32(1);
        e.u32(0o755);
        for _ in 0..5 {
            e.u32(0);
        }
        let b = self.nfs(9, e);
        Self::diropres(&b)
    }

    pub fn symlink(&mut self, dir: &[u8], name: &[u8], target: &[u8]) -> Result<Fh, u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        for _ in 0..6 {
            e.u32(0);
        }
        e.string(target);
        let b = self.nfs(10, e);
        Self::diropres(&b)
    }

    pub fn readlink(&mut self, fh: &[u8]) -> Result<Vec<u8>, u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        let b = self.nfs(5, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        post_op_attr(&mut d);
        match s {
            0 => Ok(d.string("path", 4096).unwrap().to_vec()),
            s => Err(s),
        }
    }

    pub fn remove(&mut self, dir: &[u8], name: &[u8]) -> u32 {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        let b = self.nfs(12, e);
        Decoder::new(&b).u32("status").unwrap()
    }

    pub fn rmdir(&mut self, dir: &[u8], name: &[u8]) -> u32 {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        let b = self.nfs(13, e);
        Decoder::new(&b).u32("status").unwrap()
    }

    pub fn rename(&mut self, fd: &[u8], fname: &[u8], td: &[u8], tname: &[u8]) -> u32 {
        let mut e = Encoder::new();
        e.opaque(fd);
        e.string(fname);
        e.opaque(td);
        e.string(tname);
        let b = self.nfs(14, e);
        Decoder::new(&b).u32("status").unwrap()
    }

    pub fn link(&mut self, file: &[u8], dir: &[u8], name: &[u8]) -> u32 {
        let mut e = Encoder::new();
        e.opaque(file);
        e.opaque(dir);
        e.string(name);
        let b = self.nfs(15, e);
        Decoder::new(&b).u32("status").unwrap()
    }

    pub fn readdir(
        &mut self,
        dir: &[u8],
        cookie: u64,
        verf: [u8; 8],
        count: u32,
        plus: bool,
    ) -> Result<Page, u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.u64(cookie);
        e.opaque_fixed(&verf);
        e.u32(count);
        if plus {
            e.u32(count * 4);
        }
        let b = self.nfs(if plus { 17 } else { 16 }, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        post_op_attr(&mut d);
        if s != 0 {
            return Err(s);
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(d.opaque_fixed("verf", 8).unwrap());
        let mut entries = Vec::new();
        while d.bool("entry follows").unwrap() {
            let id = d.u64("fileid").unwrap();
            let name = d.string("name", 255).unwrap().to_vec();
            let c = d.u64("cookie").unwrap();
            if plus {
                post_op_attr(&mut d);
                if d.bool("fh follows").unwrap() {
                    d.opaque("fh", 64).unwrap();
                }
            }
            entries.push((id, name, c));
        }
        let eof = d.bool("eof").unwrap();
        Ok(Page {
            entries,
            verf: v,
            eof,
        })
    }

    /// Lists a whole directory (names without `.` and `..`), page by page.
    pub fn list_all(&mut self, dir: &[u8], count: u32, plus: bool) -> Vec<Vec<u8>> {
        let mut names = Vec::new();
        let (mut cookie, mut verf) = (0u64, [0u8; 8]);
        loop {
            let p = self
                .readdir(dir, cookie, verf, count, plus)
                .expect("readdir");
            for (_, n, c) in &p.entries {
                if n != b"." && n != b".." {
                    names.push(n.clone());
                }
                cookie = *c;
            }
            verf = p.verf;
            if p.eof {
                return names;
            }
            assert!(
                !p.entries.is_empty(),
                "readdir returned no entries and no eof"
            );
        }
    }

    pub fn write(
        &mut self,
        fh: &[u8],
        off: u64,
        data: &[u8],
        stable: u32,
    ) -> Result<(u32, u32, [u8; 8]), u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(off);
        e.u32(data.len() as u32);
        e.u32(stable);
        e.opaque(data);
        let b = self.nfs(7, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        skip_wcc(&mut d);
        if s != 0 {
            return Err(s);
        }
        let count = d.u32("count").unwrap();
        let committed = d.u32("committed").unwrap();
        let mut v = [0u8; 8];
        v.copy_from_slice(d.opaque_fixed("verf", 8).unwrap());
        Ok((count, committed, v))
    }

    pub fn commit(&mut self, fh: &[u8]) -> Result<[u8; 8], u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(0);
        e.u32(0);
        let b = self.nfs(21, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        skip_wcc(&mut d);
        if s != 0 {
            return Err(s);
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(d.opaque_fixed("verf", 8).unwrap());
        Ok(v)
    }

    pub fn read(&mut self, fh: &[u8], off: u64, count: u32) -> Result<(Vec<u8>, bool), u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(off);
        e.u32(count);
        let b = self.nfs(6, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        post_op_attr(&mut d);
        if s != 0 {
            return Err(s);
        }
        let _count = d.u32("count").unwrap();
        let eof = d.bool("eof").unwrap();
        Ok((d.opaque("data", 1 << 21).unwrap().to_vec(), eof))
    }

    /// FSINFO: (rtmax, wtmax, maxfilesize).
    pub fn fsinfo(&mut self, fh: &[u8]) -> (u32, u32, u64) {
        let mut e = Encoder::new();
        e.opaque(fh);
        let b = self.nfs(19, e);
        let mut d = Decoder::new(&b);
        assert_eq!(d.u32("status").unwrap(), 0);
        post_op_attr(&mut d);
        let rtmax = d.u32("rtmax").unwrap();
        d.u32("rtpref").unwrap();
        d.u32("rtmult").unwrap();
        let wtmax = d.u32("wtmax").unwrap();
        d.u32("wtpref").unwrap();
        d.u32("wtmult").unwrap();
        d.u32("dtpref").unwrap();
        (rtmax, wtmax, d.u64("maxfilesize").unwrap())
    }

    /// ACCESS: granted bits.
    pub fn access(&mut self, fh: &[u8], want: u32) -> Result<u32, u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u32(want);
        let b = self.nfs(4, e);
        let mut d = Decoder::new(&b);
        let s = d.u32("status").unwrap();
        post_op_attr(&mut d);
        if s != 0 {
            return Err(s);
        }
        Ok(d.u32("access").unwrap())
    }
}
