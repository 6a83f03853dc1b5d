//! One logged-in connection in full-feature phase: many outstanding tagged
//! commands. Callers on any thread submit a command under the writer lock
//! (which also assigns CmdSN in order and waits for the target's MaxCmdSN
//! window); one reader thread matches responses to callers by Initiator
//! Task Tag. Write data goes as immediate data up to FirstBurstLength and
//! the rest on R2T, sent by the calling thread that owns the buffer.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use iscsi_target::pdu::{op, Digests, Pdu, RESERVED_TAG};

use super::cdb::Cdb;
use super::error::IscsiError;
use super::login::{read_pdu, Session, OUR_MRDSL};

/// What the target answered to one command.
#[derive(Debug)]
pub struct Reply {
    pub status: u8,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    /// Data-In bytes actually received (a short transfer leaves zeros).
    pub received: usize,
}

enum Event {
    R2t { ttt: u32, offset: u32, len: u32 },
    Done(Reply),
    Failed(IscsiError),
}

struct Pending {
    tx: Sender<Event>,
    data: Vec<u8>,
    received: usize,
    name: &'static str,
    lba: u64,
}

struct Writer {
    sock: TcpStream,
    cmdsn: u32,
}

const LOGGED_OUT: &str = "logged out";

/// A connection; dropped (and its socket shut down) when it fails.
pub struct Conn {
    writer: Mutex<Writer>,
    /// MaxCmdSN and ExpStatSN as last seen from the target.
    max_cmdsn: AtomicU32,
    exp_statsn: AtomicU32,
    window: (Mutex<()>, Condvar),
    pending: Mutex<HashMap<u32, Pending>>,
    next_itt: AtomicU32,
    dead: AtomicBool,
    /// Logging out: the target closing the connection is expected.
    closing: AtomicBool,
    why_dead: Mutex<String>,
    pub params: Session,
    lun: u64,
    shut: TcpStream,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serial-number "a is after b" (RFC 1982).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// iSCSI LUN field for a flat LUN number (SAM single-level addressing).
pub fn lun_field(lun: u16) -> u64 {
    if lun < 256 {
        u64::from(lun) << 48
    } else {
        (0x4000 | u64::from(lun & 0x3fff)) << 48
    }
}

impl Conn {
    /// Take over a logged-in socket and start its reader thread.
    pub fn start(sock: TcpStream, params: Session, lun: u16) -> Result<Arc<Conn>, IscsiError> {
        let io = |e: std::io::Error| IscsiError::Protocol {
            command: "connection setup",
            why: e.to_string(),
        };
        let reader = sock.try_clone().map_err(io)?;
        let shut = sock.try_clone().map_err(io)?;
        let c = Arc::new(Conn {
            writer: Mutex::new(Writer {
                sock,
                cmdsn: params.cmdsn,
            }),
            max_cmdsn: AtomicU32::new(params.max_cmdsn),
            exp_statsn: AtomicU32::new(params.exp_statsn),
            window: (Mutex::new(()), Condvar::new()),
            pending: Mutex::new(HashMap::new()),
            next_itt: AtomicU32::new(1),
            dead: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            why_dead: Mutex::new(String::new()),
            params,
            lun: lun_field(lun),
            shut,
        });
        let weak = Arc::downgrade(&c);
        std::thread::Builder::new()
            .name("iscsi-reader".into())
            .spawn(move || reader_loop(reader, weak))
            .map_err(io)?;
        Ok(c)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Close the connection and fail every outstanding command.
    pub fn kill(&self, why: &str) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        *lock(&self.why_dead) = why.to_string();
        if why == LOGGED_OUT || self.closing.load(Ordering::SeqCst) {
            tracing::debug!("iSCSI connection closed: {why}");
        } else {
            tracing::warn!("iSCSI connection dropped: {why}");
        }
        discard_unsent(&self.shut);
        let _ = self.shut.shutdown(Shutdown::Both);
        let all: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in all {
            let _ = p.tx.send(Event::Failed(IscsiError::ConnectionLost {
                command: p.name,
                lba: p.lba,
                why: why.to_string(),
            }));
        }
        self.window.1.notify_all();
    }

    fn lost(&self, cdb: &Cdb) -> IscsiError {
        IscsiError::ConnectionLost {
            command: cdb.name,
            lba: cdb.lba,
            why: lock(&self.why_dead).clone(),
        }
    }

    fn send(&self, w: &mut Writer, p: &Pdu, cdb: &Cdb) -> Result<(), IscsiError> {
        if let Err(e) = w.sock.write_all(&p.encode(Digests::default())) {
            self.kill(&format!("sending {}: {e}", cdb.name));
            return Err(self.lost(cdb));
        }
        Ok(())
    }

    /// Run one command: `data_out` is written to the target, `read_len`
    /// bytes are expected back. Fails with `Timeout` if no response comes
    /// by `deadline` (the caller then drops the connection).
    pub fn command(
        &self,
        cdb: &Cdb,
        data_out: &[u8],
        read_len: usize,
        deadline: Instant,
    ) -> Result<Reply, IscsiError> {
        let timeout_err = || IscsiError::Timeout {
            command: cdb.name,
            lba: cdb.lba,
            timeout_ms: 0,
        };
        if self.is_dead() {
            return Err(self.lost(cdb));
        }
        let (tx, rx) = channel();
        let mut itt = self.next_itt.fetch_add(1, Ordering::Relaxed);
        if itt == RESERVED_TAG {
            itt = self.next_itt.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.pending).insert(
            itt,
            Pending {
                tx,
                data: vec![0; read_len],
                received: 0,
                name: cdb.name,
                lba: cdb.lba,
            },
        );
        let r = self.issue(itt, cdb, data_out, read_len, deadline, &rx);
        lock(&self.pending).remove(&itt);
        match r {
            Err(IscsiError::Timeout { .. }) => Err(timeout_err()),
            other => other,
        }
    }

    fn issue(
        &self,
        itt: u32,
        cdb: &Cdb,
        data_out: &[u8],
        read_len: usize,
        deadline: Instant,
        rx: &Receiver<Event>,
    ) -> Result<Reply, IscsiError> {
        let mut p = Pdu::new(op::SCSI_CMD);
        let mut flags = 0x80u8 | 0x01; // F, SIMPLE task attribute
        if read_len > 0 {
            flags |= 0x40;
        }
        if !data_out.is_empty() {
            flags |= 0x20;
        }
        p.set_flags(flags);
        p.set_lun_field(self.lun);
        p.set_itt(itt);
        let edtl = if data_out.is_empty() {
            read_len
        } else {
            data_out.len()
        };
        p.set_u32(20, edtl as u32);
        p.bhs[32..32 + cdb.len].copy_from_slice(cdb.as_slice());
        if self.params.immediate_data {
            let imm = data_out
                .len()
                .min(self.params.first_burst as usize)
                .min(self.params.target_mrdsl as usize);
            p.data = data_out[..imm].to_vec();
        }
        {
            let mut w = lock(&self.writer);
            // Wait for the command window (RFC 7143 §3.2.2.1).
            while after(w.cmdsn, self.max_cmdsn.load(Ordering::SeqCst)) {
                if self.is_dead() {
                    return Err(self.lost(cdb));
                }
                if Instant::now() >= deadline {
                    return Err(IscsiError::Timeout {
                        command: cdb.name,
                        lba: cdb.lba,
                        timeout_ms: 0,
                    });
                }
                let g = lock(&self.window.0);
                let _ = self.window.1.wait_timeout(g, Duration::from_millis(20));
            }
            p.set_u32(24, w.cmdsn);
            p.set_u32(28, self.exp_statsn.load(Ordering::SeqCst));
            w.cmdsn = w.cmdsn.wrapping_add(1);
            self.send(&mut w, &p, cdb)?;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Done(r)) => return Ok(r),
                Ok(Event::Failed(e)) => return Err(e),
                Ok(Event::R2t { ttt, offset, len }) => {
                    self.data_out(itt, ttt, offset, len, data_out, cdb)?
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(IscsiError::Timeout {
                        command: cdb.name,
                        lba: cdb.lba,
                        timeout_ms: 0,
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.lost(cdb)),
            }
        }
    }

    /// Answer one R2T with Data-Out PDUs of at most the target's MRDSL.
    fn data_out(
        &self,
        itt: u32,
        ttt: u32,
        offset: u32,
        len: u32,
        data: &[u8],
        cdb: &Cdb,
    ) -> Result<(), IscsiError> {
        let start = offset as usize;
        let end = start.saturating_add(len as usize);
        if end > data.len() || len == 0 {
            self.kill(&format!(
                "R2T for bytes {start}..{end} of a {}-byte {}",
                data.len(),
                cdb.name
            ));
            return Err(IscsiError::Protocol {
                command: cdb.name,
                why: format!("R2T asks for bytes {start}..{end} of {}", data.len()),
            });
        }
        let seg = self.params.target_mrdsl as usize;
        let mut pos = start;
        let mut datasn = 0u32;
        let mut w = lock(&self.writer);
        while pos < end {
            let n = (end - pos).min(seg);
            let mut d = Pdu::new(op::DATA_OUT);
            d.set_flags(if pos + n == end { 0x80 } else { 0 });
            d.set_lun_field(self.lun);
            d.set_itt(itt);
            d.set_u32(20, ttt);
            d.set_u32(28, self.exp_statsn.load(Ordering::SeqCst));
            d.set_u32(36, datasn);
            d.set_u32(40, pos as u32);
            d.data = data[pos..pos + n].to_vec();
            self.send(&mut w, &d, cdb)?;
            pos += n;
            datasn += 1;
        }
        Ok(())
    }

    fn note_sequence(&self, p: &Pdu, has_statsn: bool) {
        if has_statsn {
            let s = p.u32_at(24).wrapping_add(1);
            let cur = self.exp_statsn.load(Ordering::SeqCst);
            if after(s, cur) {
                self.exp_statsn.store(s, Ordering::SeqCst);
            }
        }
        let max = p.u32_at(32);
        let exp = p.u32_at(28);
        // A MaxCmdSN below ExpCmdSN - 1 is invalid and must be ignored.
        if !after(exp, max.wrapping_add(1)) {
            let cur = self.max_cmdsn.load(Ordering::SeqCst);
            if after(max, cur) {
                self.max_cmdsn.store(max, Ordering::SeqCst);
                self.window.1.notify_all();
            }
        }
    }

    fn complete(&self, itt: u32, ev: Event) {
        if let Some(p) = lock(&self.pending).remove(&itt) {
            let _ = p.tx.send(ev);
        }
    }

    /// Handle one PDU from the target; Err kills the connection.
    fn dispatch(&self, p: Pdu) -> Result<(), String> {
        let itt = p.itt();
        match p.opcode() {
            op::DATA_IN => {
                let status = p.flags() & 0x01 != 0;
                self.note_sequence(&p, status);
                let off = p.u32_at(40) as usize;
                let mut pend = lock(&self.pending);
                let Some(entry) = pend.get_mut(&itt) else {
                    return Ok(()); // a command we gave up on
                };
                let end = off.saturating_add(p.data.len());
                if end > entry.data.len() {
                    return Err(format!(
                        "Data-In for bytes {off}..{end} of a {}-byte {} response",
                        entry.data.len(),
                        entry.name
                    ));
                }
                entry.data[off..end].copy_from_slice(&p.data);
                entry.received += p.data.len();
                if status {
                    let e = pend.remove(&itt).expect("present");
                    drop(pend);
                    let _ = e.tx.send(Event::Done(Reply {
                        status: p.bhs[3],
                        sense: Vec::new(),
                        data: e.data,
                        received: e.received,
                    }));
                }
            }
            op::SCSI_RESP => {
                self.note_sequence(&p, true);
                let response = p.bhs[2];
                let Some(e) = lock(&self.pending).remove(&itt) else {
                    return Ok(());
                };
                if response != 0 {
                    let _ = e.tx.send(Event::Failed(IscsiError::TargetFailure {
                        command: e.name,
                        lba: e.lba,
                        response,
                    }));
                    return Ok(());
                }
                let sense = if p.data.len() >= 2 {
                    let n = u16::from_be_bytes([p.data[0], p.data[1]]) as usize;
                    p.data[2..(2 + n).min(p.data.len())].to_vec()
                } else {
                    Vec::new()
                };
                let _ = e.tx.send(Event::Done(Reply {
                    status: p.bhs[3],
                    sense,
                    data: e.data,
                    received: e.received,
                }));
            }
            op::R2T => {
                self.note_sequence(&p, false);
                let pend = lock(&self.pending);
                if let Some(e) = pend.get(&itt) {
                    let _ = e.tx.send(Event::R2t {
                        ttt: p.u32_at(20),
                        offset: p.u32_at(40),
                        len: p.u32_at(44),
                    });
                }
            }
            op::NOP_IN => {
                self.note_sequence(&p, itt != RESERVED_TAG);
                let ttt = p.u32_at(20);
                if ttt != RESERVED_TAG {
                    // A ping from the target: answer with its TTT.
                    let mut r = Pdu::new(op::NOP_OUT);
                    r.set_immediate(true);
                    r.set_flags(0x80);
                    r.set_lun_field(p.lun_field());
                    r.set_itt(RESERVED_TAG);
                    r.set_u32(20, ttt);
                    let mut w = lock(&self.writer);
                    r.set_u32(24, w.cmdsn);
                    r.set_u32(28, self.exp_statsn.load(Ordering::SeqCst));
                    r.data = p.data;
                    w.sock
                        .write_all(&r.encode(Digests::default()))
                        .map_err(|e| format!("answering a NOP-In: {e}"))?;
                }
            }
            op::REJECT => {
                self.note_sequence(&p, true);
                if p.data.len() >= 20 {
                    let rejected = u32::from_be_bytes(p.data[16..20].try_into().expect("4"));
                    let reason = p.bhs[2];
                    if let Some(e) = lock(&self.pending).remove(&rejected) {
                        let _ = e.tx.send(Event::Failed(IscsiError::Rejected {
                            command: e.name,
                            lba: e.lba,
                            reason,
                        }));
                    }
                }
            }
            op::ASYNC_MSG => {
                self.note_sequence(&p, true);
                match p.bhs[36] {
                    0 => {} // SCSI async event: sense comes as a UA on the next command
                    1 => return Err("target requested logout".into()),
                    2..=4 => return Err(format!("target async event {}", p.bhs[36])),
                    _ => {}
                }
            }
            op::LOGOUT_RESP | op::TMF_RESP | op::TEXT_RESP => {
                self.note_sequence(&p, true);
                self.complete(
                    itt,
                    Event::Done(Reply {
                        status: p.bhs[2],
                        sense: Vec::new(),
                        received: p.data.len(),
                        data: p.data,
                    }),
                );
            }
            other => return Err(format!("unexpected PDU opcode {other:#04x}")),
        }
        Ok(())
    }

    /// Send a Logout request (best effort, short wait).
    pub fn logout(&self) {
        if self.is_dead() {
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        let itt = self.next_itt.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        lock(&self.pending).insert(
            itt,
            Pending {
                tx,
                data: Vec::new(),
                received: 0,
                name: "LOGOUT",
                lba: 0,
            },
        );
        let mut p = Pdu::new(op::LOGOUT_REQ);
        p.set_immediate(true);
        p.set_flags(0x80);
        p.set_itt(itt);
        {
            let mut w = lock(&self.writer);
            p.set_u32(24, w.cmdsn);
            p.set_u32(28, self.exp_statsn.load(Ordering::SeqCst));
            if w.sock.write_all(&p.encode(Digests::default())).is_err() {
                return;
            }
        }
        let _ = rx.recv_timeout(Duration::from_secs(2));
        self.kill(LOGGED_OUT);
    }
}

/// Make closing the socket abort it (RST) and throw away whatever is still
/// queued to send. Otherwise the kernel would keep retransmitting commands we
/// have given up on, and a path that comes back minutes later could deliver a
/// write from a host that has since been declared dead.
fn discard_unsent(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid open socket descriptor owned by `sock`; `l` is a
    // properly initialised linger struct whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("SO_LINGER: {}", std::io::Error::last_os_error());
    }
}

fn reader_loop(sock: TcpStream, conn: std::sync::Weak<Conn>) {
    // Buffered: a PDU header and its data usually arrive in one read.
    let mut sock = std::io::BufReader::with_capacity(256 * 1024, sock);
    loop {
        let r = read_pdu(&mut sock, OUR_MRDSL as usize);
        let Some(c) = conn.upgrade() else { return };
        match r {
            Ok(p) => {
                if let Err(why) = c.dispatch(p) {
                    c.kill(&why);
                    return;
                }
            }
            Err(e) => {
                c.kill(&format!("reading from the target: {e}"));
                return;
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.shut.shutdown(Shutdown::Both);
    }
}
