//! A second Backend (wrapping the local one) that behaves like a vmfs host
//! facing other hosts' locks: the wire answers carry the documented NFS
//! errors, and writes that the backend refuses never succeed silently.

use nfs_gw::backend::*;
use nfs_gw::export::{Export, ExportOptions};
use nfs_gw::rpc::{self, AuthSys, Credential};
use nfs_gw::server::{handle_record, ServerState};
use nfs_gw::xdr::{Decoder, Encoder};
use nfs_gw::LocalDirBackend;
use std::sync::Arc;

/// Delegates to a local directory, except that file `locked` is held
/// EXCLUSIVE by "another host" and file `busy` is transiently locked.
struct Locking {
    inner: LocalDirBackend,
    locked: std::sync::Mutex<Vec<FileId>>,
    busy: std::sync::Mutex<Vec<FileId>>,
}

impl Locking {
    fn check(&self, id: FileId) -> BResult<()> {
        if self.locked.lock().unwrap().contains(&id) {
            return Err(BackendError::LockedByOtherHost {
                holder: "host 7 (slot 7, hb_gen 3)".into(),
            });
        }
        if self.busy.lock().unwrap().contains(&id) {
            return Err(BackendError::Busy("lock being broken".into()));
        }
        Ok(())
    }
}

impl Backend for Locking {
    fn root(&self) -> FileId {
        self.inner.root()
    }
    fn getattr(&self, id: FileId) -> BResult<Attr> {
        self.inner.getattr(id)
    }
    fn setattr(&self, id: FileId, s: &SetAttr, g: Option<Timestamp>) -> BResult<Attr> {
        self.check(id)?;
        self.inner.setattr(id, s, g)
    }
    fn lookup(&self, d: FileId, n: &Name) -> BResult<(FileId, Attr)> {
        self.inner.lookup(d, n)
    }
    fn parent(&self, d: FileId) -> BResult<FileId> {
        self.inner.parent(d)
    }
    fn access(&self, id: FileId, c: &Caller, want: u32) -> BResult<(u32, Attr)> {
        let (mut got, a) = self.inner.access(id, c, want)?;
        if self.check(id).is_err() {
            got &= !(access::MODIFY | access::EXTEND);
        }
        Ok((got, a))
    }
    fn readlink(&self, id: FileId) -> BResult<Vec<u8>> {
        self.inner.readlink(id)
    }
    fn read(&self, id: FileId, o: u64, c: u32) -> BResult<ReadOk> {
        self.inner.read(id, o, c)
    }
    fn write(&self, id: FileId, o: u64, d: &[u8], s: StableHow) -> BResult<WriteOk> {
        self.check(id)?;
        self.inner.write(id, o, d, s)
    }
    fn commit(&self, id: FileId, o: u64, c: u32) -> BResult<Attr> {
        self.inner.commit(id, o, c)
    }
    fn create(&self, d: FileId, n: &Name, h: CreateHow, c: &Caller) -> BResult<(FileId, Attr)> {
        self.inner.create(d, n, h, c)
    }
    fn mkdir(&self, d: FileId, n: &Name, s: &SetAttr, c: &Caller) -> BResult<(FileId, Attr)> {
        self.inner.mkdir(d, n, s, c)
    }
    fn symlink(
        &self,
        d: FileId,
        n: &Name,
        t: &[u8],
        s: &SetAttr,
        c: &Caller,
    ) -> BResult<(FileId, Attr)> {
        self.inner.symlink(d, n, t, s, c)
    }
    fn mknod(
        &self,
        _: FileId,
        _: &Name,
        _: SpecialNode,
        _: &SetAttr,
        _: &Caller,
    ) -> BResult<(FileId, Attr)> {
        Err(BackendError::NotSupported("special files on vmfs"))
    }
    fn remove(&self, d: FileId, n: &Name) -> BResult<()> {
        let (id, _) = self.inner.lookup(d, n)?;
        self.check(id)?;
        self.inner.remove(d, n)
    }
    fn rmdir(&self, d: FileId, n: &Name) -> BResult<()> {
        self.inner.rmdir(d, n)
    }
    fn rename(&self, a: FileId, b: &Name, c: FileId, d: &Name) -> BResult<()> {
        self.inner.rename(a, b, c, d)
    }
    fn link(&self, f: FileId, d: FileId, n: &Name) -> BResult<()> {
        self.inner.link(f, d, n)
    }
    fn readdir(&self, d: FileId, c: u64, v: u64, m: usize, p: bool) -> BResult<ReadDir> {
        self.inner.readdir(d, c, v, m, p)
    }
    fn fsstat(&self, id: FileId) -> BResult<FsStat> {
        self.inner.fsstat(id)
    }
    fn properties(&self) -> FsProperties {
        self.inner.properties()
    }
}

fn call(st: &ServerState, proc_num: u32, args: &Encoder) -> Vec<u8> {
    let cred = Credential::Sys(AuthSys {
        stamp: 0,
        machine_name: b"t".to_vec(),
        uid: 0,
        gid: 0,
        gids: vec![],
    });
    let prog = if proc_num >= 100 { 100005 } else { 100003 };
    let mut e = rpc::build_call(5, prog, 3, proc_num % 100, &cred);
    e.opaque_fixed(args.as_slice());
    let r = handle_record(st, "127.0.0.1".parse().unwrap(), e.as_slice())
        .unwrap()
        .unwrap();
    let mut d = Decoder::new(&r);
    rpc::parse_reply(&mut d).unwrap();
    d.rest().to_vec()
}

fn status(body: &[u8]) -> u32 {
    Decoder::new(body).u32("status").unwrap()
}

#[test]
fn locks_of_other_hosts_map_to_nfs_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("locked"), b"vm disk").unwrap();
    std::fs::write(dir.path().join("busy"), b"x").unwrap();
    let inner = LocalDirBackend::new(dir.path()).unwrap();
    let root = inner.root();
    let locked = inner
        .lookup(root, &Name::new(b"locked").unwrap())
        .unwrap()
        .0;
    let busy = inner.lookup(root, &Name::new(b"busy").unwrap()).unwrap().0;
    let b = Locking {
        inner,
        locked: std::sync::Mutex::new(vec![locked]),
        busy: std::sync::Mutex::new(vec![busy]),
    };
    let opts = ExportOptions {
        root_squash: false,
        ..ExportOptions::default()
    };
    let st = ServerState::new(vec![Export::new("vmfs", Arc::new(b), opts)]);
    let mut e = Encoder::new();
    e.string(b"/vmfs");
    let m = call(&st, 101, &e);
    let mut d = Decoder::new(&m);
    assert_eq!(d.u32("mountstat").unwrap(), 0);
    let rootfh = d.opaque("fh", 64).unwrap().to_vec();

    let handle_of = |name: &[u8]| {
        let mut e = Encoder::new();
        e.opaque(&rootfh);
        e.string(name);
        let r = call(&st, 3, &e);
        let mut d = Decoder::new(&r);
        assert_eq!(d.u32("status").unwrap(), 0);
        d.opaque("fh", 64).unwrap().to_vec()
    };
    let write = |fh: &[u8], stable: u32| {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(0);
        e.u32(3);
        e.u32(stable);
        e.opaque(b"new");
        status(&call(&st, 7, &e))
    };
    let lfh = handle_of(b"locked");
    let bfh = handle_of(b"busy");
    // Held EXCLUSIVE by a live host: ACCES at once, for every stability.
    for stable in 0..3 {
        assert_eq!(write(&lfh, stable), 13);
    }
    assert_eq!(
        std::fs::read(dir.path().join("locked")).unwrap(),
        b"vm disk"
    );
    // Transient: JUKEBOX (the client retries later).
    assert_eq!(write(&bfh, 2), 10008);
    // Truncate and remove of the locked file fail the same way.
    let mut e = Encoder::new();
    e.opaque(&lfh);
    for v in [0u32, 0, 0, 1] {
        e.u32(v);
    }
    e.u64(0);
    for _ in 0..3 {
        e.u32(0);
    }
    assert_eq!(status(&call(&st, 2, &e)), 13);
    let mut e = Encoder::new();
    e.opaque(&rootfh);
    e.string(b"locked");
    assert_eq!(status(&call(&st, 12, &e)), 13);
    assert!(dir.path().join("locked").exists());
    // ACCESS does not promise a write the backend will refuse.
    let mut e = Encoder::new();
    e.opaque(&lfh);
    e.u32(access::ALL);
    let r = call(&st, 4, &e);
    let mut d = Decoder::new(&r);
    assert_eq!(d.u32("status").unwrap(), 0);
    assert!(d.bool("attrs").unwrap());
    for _ in 0..21 {
        d.u32("fattr").unwrap();
    }
    let got = d.u32("access").unwrap();
    assert_eq!(
        got & access::MODIFY,
        0,
        "ACCESS granted MODIFY on a locked file"
    );
    // MKNOD refused by the backend: NOTSUPP.
    let mut e = Encoder::new();
    e.opaque(&rootfh);
    e.string(b"fifo");
    e.u32(7);
    for _ in 0..6 {
        e.u32(0);
    }
    assert_eq!(status(&call(&st, 11, &e)), 10004);
    // Unlocked files still work.
    assert_eq!(write(&handle_of(b"busy"), 2), 10008);
    let mut e = Encoder::new();
    e.opaque(&rootfh);
    e.string(b"free");
    e.u32(0);
    for _ in 0..6 {
        e.u32(0);
    }
    assert_eq!(status(&call(&st, 8, &e)), 0);
    assert_eq!(write(&handle_of(b"free"), 2), 0);
}

#[test]
fn every_backend_error_has_its_nfs_status() {
    use nfs_gw::nfs3::{status_of, Nfsstat3 as N};
    let cases = [
        (BackendError::NoEnt, N::NoEnt),
        (BackendError::Exist, N::Exist),
        (BackendError::NotDir, N::NotDir),
        (BackendError::IsDir, N::IsDir),
        (BackendError::NotEmpty, N::NotEmpty),
        (BackendError::NoSpace, N::NoSpc),
        (BackendError::ReadOnly, N::Rofs),
        (BackendError::NameTooLong, N::NameTooLong),
        (BackendError::Stale { ino: 1, gen: 2 }, N::Stale),
        (BackendError::BadHandle, N::BadHandle),
        (BackendError::Access, N::Acces),
        (BackendError::Perm, N::Perm),
        (BackendError::FileTooBig, N::FBig),
        (BackendError::Inval("x".into()), N::Inval),
        (BackendError::Io("x".into()), N::Io),
        (BackendError::Busy("x".into()), N::Jukebox),
        (
            BackendError::LockedByOtherHost { holder: "h".into() },
            N::Acces,
        ),
        (BackendError::NotSupported("x"), N::NotSupp),
        (BackendError::BadCookie, N::BadCookie),
        (BackendError::NotSync, N::NotSync),
    ];
    for (e, s) in cases {
        assert_eq!(status_of(&e), s, "{e:?}");
    }
}
