//! SCSI command tasks on a connection: collecting write data (immediate,
//! unsolicited and R2T-solicited), running the command (cached reads
//! inline, the rest on the LUN's I/O workers) and returning Data-In / SCSI
//! Response PDUs with residuals.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::conn::{Conn, ConnError, Payload};
use crate::pdu::{op, reject, Pdu, RESERVED_TAG};
use crate::scsi::sense::{asc, key, status};
use crate::scsi::{self, Request, Response, Sense};
use crate::server::{Session, TaskEntry};

/// Largest data-out we buffer for one command.
pub const MAX_DATA_OUT: u32 = 32 * 1024 * 1024 + 4096;

/// A write command still receiving data.
pub struct WriteState {
    pub lun: u64,
    pub lun_field: u64,
    pub cdb: Vec<u8>,
    pub buf: Vec<u8>,
    pub received: u32,
    /// Bytes covered by immediate/unsolicited data or R2Ts issued so far.
    pub requested: u32,
    /// Unsolicited Data-Out still expected (before the first R2T).
    pub unsolicited_open: bool,
    pub r2tsn: u32,
    /// DataSN the next Data-Out of the current sequence must carry (each
    /// R2T, and the unsolicited burst, starts a sequence at 0).
    pub next_datasn: u32,
    pub ttt: u32,
    pub flags: u8,
    pub aborted: Arc<AtomicBool>,
}

/// LUN number from the 8-byte LUN field (peripheral or flat addressing).
pub fn lun_number(field: u64) -> u64 {
    let b = field.to_be_bytes();
    match b[0] >> 6 {
        0 => b[1] as u64,
        1 => (((b[0] & 0x3f) as u64) << 8) | b[1] as u64,
        _ => u64::MAX,
    }
}

fn cdb_of(p: &Pdu) -> Result<Vec<u8>, ()> {
    let mut cdb = p.bhs[32..48].to_vec();
    // Extended CDB AHS (type 1).
    let mut pos = 0;
    while pos + 4 <= p.ahs.len() {
        let len = u16::from_be_bytes([p.ahs[pos], p.ahs[pos + 1]]) as usize;
        let ty = p.ahs[pos + 2];
        let body_end = pos + 3 + len;
        if body_end > p.ahs.len() {
            return Err(());
        }
        if ty == 1 && len > 1 {
            cdb.extend_from_slice(&p.ahs[pos + 4..body_end]);
        }
        pos = (body_end + 3) & !3;
    }
    Ok(cdb)
}

fn send_r2t(conn: &Conn, w: &mut WriteState, itt: u32, next_ttt: &mut u32) {
    let edtl = w.buf.len() as u32;
    if w.requested >= edtl {
        return;
    }
    let len = (edtl - w.requested).min(conn.params.max_burst_length);
    let mut r = Pdu::new(op::R2T);
    r.set_flags(0x80);
    r.set_lun_field(w.lun_field);
    r.set_itt(itt);
    w.ttt = *next_ttt;
    *next_ttt = next_ttt.wrapping_add(1).max(1);
    if *next_ttt == RESERVED_TAG {
        *next_ttt = 1;
    }
    r.set_u32(20, w.ttt);
    r.set_u32(36, w.r2tsn);
    r.set_u32(40, w.requested);
    r.set_u32(44, len);
    w.r2tsn += 1;
    w.next_datasn = 0;
    w.requested += len;
    conn.send(r, false);
}

/// Handles a SCSI Command PDU.
pub fn command(
    conn: &Arc<Conn>,
    session: &Arc<Session>,
    p: Pdu,
    writes: &mut HashMap<u32, WriteState>,
    next_ttt: &mut u32,
) -> Result<(), ConnError> {
    let itt = p.itt();
    let flags = p.flags();
    let write = flags & 0x20 != 0;
    let edtl = p.u32_at(20);
    let Ok(cdb) = cdb_of(&p) else {
        conn.reject(reject::INVALID_PDU_FIELD, &p.bhs);
        return Ok(());
    };
    let lun = lun_number(p.lun_field());
    if writes.contains_key(&itt) || session.tasks().contains_key(&itt) {
        conn.reject(reject::INVALID_PDU_FIELD, &p.bhs);
        return Ok(());
    }
    let aborted = Arc::new(AtomicBool::new(false));
    session.tasks().insert(
        itt,
        TaskEntry {
            lun,
            cmdsn: p.u32_at(24),
            aborted: aborted.clone(),
        },
    );
    if !write || edtl == 0 {
        if !p.data.is_empty() {
            return Err(ConnError::Protocol(
                "immediate data on a non-write command".into(),
            ));
        }
        spawn_exec(
            conn,
            session,
            itt,
            p.lun_field(),
            flags,
            edtl,
            cdb,
            None,
            aborted,
        );
        return Ok(());
    }
    if edtl > MAX_DATA_OUT {
        // Too large to buffer: fail the command; stray Data-Out is ignored.
        let resp = scsi::lun::check(Sense::invalid_cdb(0, None), false);
        finish(conn, session, itt, p.lun_field(), flags, edtl, resp);
        return Ok(());
    }
    if p.data.len() > edtl as usize
        || (!p.data.is_empty() && !conn.params.immediate_data)
        || p.data.len() > conn.params.first_burst_length as usize
    {
        session.tasks().remove(&itt);
        return Err(ConnError::Protocol("immediate data exceeds limits".into()));
    }
    let mut buf = vec![0u8; edtl as usize];
    buf[..p.data.len()].copy_from_slice(&p.data);
    let imm = p.data.len() as u32;
    let unsolicited_end = if conn.params.initial_r2t {
        imm
    } else {
        conn.params.first_burst_length.min(edtl).max(imm)
    };
    let mut w = WriteState {
        lun,
        lun_field: p.lun_field(),
        cdb,
        buf,
        received: imm,
        requested: unsolicited_end,
        unsolicited_open: unsolicited_end > imm && flags & 0x80 == 0,
        r2tsn: 0,
        next_datasn: 0,
        ttt: RESERVED_TAG,
        flags,
        aborted,
    };
    if !conn.params.initial_r2t && unsolicited_end > imm && flags & 0x80 != 0 {
        // F bit set: no unsolicited data follows after all.
        w.requested = imm;
    }
    if w.received >= edtl {
        run_write(conn, session, itt, w);
        return Ok(());
    }
    if !w.unsolicited_open {
        send_r2t(conn, &mut w, itt, next_ttt);
    }
    writes.insert(itt, w);
    Ok(())
}

fn run_write(conn: &Arc<Conn>, session: &Arc<Session>, itt: u32, w: WriteState) {
    let edtl = w.buf.len() as u32;
    spawn_exec(
        conn,
        session,
        itt,
        w.lun_field,
        w.flags,
        edtl,
        w.cdb,
        Some(w.buf),
        w.aborted,
    );
}

/// Handles a SCSI Data-Out PDU.
pub fn data_out(
    conn: &Arc<Conn>,
    session: &Arc<Session>,
    p: Pdu,
    writes: &mut HashMap<u32, WriteState>,
    next_ttt: &mut u32,
) -> Result<(), ConnError> {
    let itt = p.itt();
    let Some(w) = writes.get_mut(&itt) else {
        // Data for a command already failed or aborted: ignore.
        return Ok(());
    };
    let ttt = p.u32_at(20);
    let off = p.u32_at(40) as usize;
    let end = off + p.data.len();
    if end > w.buf.len() || end > w.requested as usize {
        return Err(ConnError::Protocol(format!(
            "Data-Out [{off}, {end}) outside the solicited range of ITT {itt:#x}"
        )));
    }
    if ttt != RESERVED_TAG && ttt != w.ttt {
        conn.reject(reject::INVALID_PDU_FIELD, &p.bhs);
        return Ok(());
    }
    let datasn = p.u32_at(36);
    if datasn != w.next_datasn {
        // A missing or reordered Data-Out. At ErrorRecoveryLevel 0 there is
        // no recovery R2T; the PDU framing is intact, so only this task is
        // ended (ABORTED COMMAND, DATA PHASE ERROR) and its remaining
        // Data-Out PDUs are ignored. Nothing was written.
        tracing::debug!(
            itt,
            datasn,
            expected = w.next_datasn,
            "Data-Out DataSN out of sequence: task terminated"
        );
        let w = writes.remove(&itt).expect("present");
        let mut resp = scsi::lun::check(
            Sense::new(key::ABORTED_COMMAND, asc::DATA_PHASE_ERROR),
            false,
        );
        resp.out_len = Some(0);
        finish(
            conn,
            session,
            itt,
            w.lun_field,
            w.flags,
            w.buf.len() as u32,
            resp,
        );
        return Ok(());
    }
    w.next_datasn = w.next_datasn.wrapping_add(1);
    w.buf[off..end].copy_from_slice(&p.data);
    w.received += p.data.len() as u32;
    let fin = p.final_bit();
    if w.received as usize >= w.buf.len() {
        let w = writes.remove(&itt).expect("present");
        run_write(conn, session, itt, w);
        return Ok(());
    }
    if fin {
        if ttt == RESERVED_TAG {
            w.unsolicited_open = false;
            w.requested = w.requested.min(w.received.max(end as u32));
        }
        if w.received >= w.requested {
            send_r2t(conn, w, itt, next_ttt);
        }
    }
    Ok(())
}

/// Largest READ served inline from the page cache by the connection's
/// reader; larger ones go to the LUN's workers, so that copying them
/// overlaps with receiving the next commands.
const INLINE_READ_MAX: u64 = 256 * 1024;

/// Runs a command: a READ whose data is in the page cache right here on the
/// connection (no thread hop), everything else on the LUN's I/O workers.
#[allow(clippy::too_many_arguments)]
fn spawn_exec(
    conn: &Arc<Conn>,
    session: &Arc<Session>,
    itt: u32,
    lun_field: u64,
    flags: u8,
    edtl: u32,
    cdb: Vec<u8>,
    data: Option<Vec<u8>>,
    aborted: Arc<AtomicBool>,
) {
    let lun_no = lun_number(lun_field) as usize;
    let target = &session.target;
    let is_report_luns = cdb.first() == Some(&scsi::cdb::opcode::REPORT_LUNS);
    let (lun, pool) = match (target.luns.get(lun_no), target.pools.get(lun_no)) {
        (Some(l), Some(p)) if !is_report_luns => (l.clone(), p),
        _ => {
            let luns: Vec<u64> = (0..target.luns.len() as u64).collect();
            let resp = no_such_lun(&cdb, &luns);
            complete(conn, session, itt, lun_field, flags, edtl, &aborted, resp);
            return;
        }
    };
    if data.is_none() {
        let req = Request {
            cdb: &cdb,
            data_out: None,
            nexus: &session.nexus,
        };
        if let Some(resp) = lun.try_read_cached(&req, INLINE_READ_MAX) {
            complete(conn, session, itt, lun_field, flags, edtl, &aborted, resp);
            return;
        }
    }
    let conn = conn.clone();
    let session = session.clone();
    pool.submit(Box::new(move || {
        let run = std::panic::AssertUnwindSafe(|| {
            lun.execute(&Request {
                cdb: &cdb,
                data_out: data.as_deref(),
                nexus: &session.nexus,
            })
        });
        let resp = std::panic::catch_unwind(run).unwrap_or_else(|_| {
            tracing::error!(itt, "command panicked: reported as HARDWARE ERROR");
            scsi::lun::check(Sense::new(key::HARDWARE_ERROR, asc::NO_ADDITIONAL), false)
        });
        complete(&conn, &session, itt, lun_field, flags, edtl, &aborted, resp);
    }));
}

/// Sends a finished command's response unless task management aborted it.
#[allow(clippy::too_many_arguments)]
fn complete(
    conn: &Conn,
    session: &Session,
    itt: u32,
    lun_field: u64,
    flags: u8,
    edtl: u32,
    aborted: &AtomicBool,
    resp: Response,
) {
    {
        // Decided under the task table's lock, which task management also
        // holds while marking tasks aborted: either the abort saw the task
        // (no response is sent) or it did not (it reports "task does not
        // exist"), never both.
        let mut tasks = session.tasks();
        tasks.remove(&itt);
        if aborted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
    }
    finish(conn, session, itt, lun_field, flags, edtl, resp);
}

/// REPORT LUNS / INQUIRY / REQUEST SENSE answers for LUNs that do not exist.
fn no_such_lun(cdb: &[u8], luns: &[u64]) -> Response {
    use scsi::cdb::opcode;
    match cdb.first().copied() {
        Some(opcode::REPORT_LUNS) => match scsi::cdb::decode(cdb) {
            Ok(scsi::cdb::Command::ReportLuns { select, alloc }) => {
                match scsi::report_luns(luns, select, alloc) {
                    Ok(d) => Response {
                        status: status::GOOD,
                        data_in: d,
                        ..Default::default()
                    },
                    Err(s) => scsi::lun::check(s, false),
                }
            }
            Ok(_) => scsi::lun::check(Sense::invalid_opcode(), false),
            Err(s) => scsi::lun::check(s, false),
        },
        Some(opcode::INQUIRY) => {
            let mut d = vec![0u8; 36];
            d[0] = 0x7f;
            d[2] = 0x06;
            d[3] = 0x12;
            d[4] = 31;
            let alloc = u16::from_be_bytes([cdb[3], cdb[4]]) as usize;
            d.truncate(alloc);
            Response {
                status: status::GOOD,
                data_in: d,
                ..Default::default()
            }
        }
        _ => scsi::lun::check(Sense::illegal(asc::LUN_NOT_SUPPORTED), false),
    }
}

/// Sends Data-In and/or the SCSI Response for a finished command.
pub fn finish(
    conn: &Conn,
    session: &Session,
    itt: u32,
    lun_field: u64,
    flags: u8,
    edtl: u32,
    mut resp: Response,
) {
    session.tasks().remove(&itt);
    let read = flags & 0x40 != 0;
    let write = flags & 0x20 != 0;
    if write && !read && !resp.data_in.is_empty() {
        // A data-in command sent with only the W bit: the command ran, but
        // its data has no way back; the status stands and no data-out was
        // consumed (underflow of the whole EDTL).
        resp.data_in.clear();
        resp.out_len = Some(0);
    }
    let read_edtl = if read || !write { edtl } else { 0 };
    let mut residual: (u8, u32) = (0, 0); // (flag, count)
    if !resp.data_in.is_empty() || (read && resp.status == status::GOOD) {
        let have = resp.data_in.len() as u32;
        if have > read_edtl {
            residual = (0x04, have - read_edtl);
            resp.data_in.truncate(read_edtl as usize);
        } else if have < read_edtl {
            residual = (0x02, read_edtl - have);
        }
    } else if write {
        let want = resp.out_len.unwrap_or(0);
        if want > edtl {
            residual = (0x04, want - edtl);
        } else if want < edtl {
            residual = (0x02, edtl - want);
        }
    } else if read && edtl > 0 {
        residual = (0x02, edtl);
    }
    let mrdsl = conn.params.initiator_mrdsl.max(512) as usize;
    let burst = conn.params.max_burst_length.max(512) as usize;
    let data = Arc::new(std::mem::take(&mut resp.data_in));
    let collapse = resp.status == status::GOOD && resp.sense.is_empty() && !data.is_empty();
    let mut datasn = 0u32;
    let mut off = 0usize;
    let mut in_burst = 0usize;
    while off < data.len() {
        let n = (data.len() - off).min(mrdsl).min(burst - in_burst);
        let last = off + n == data.len();
        in_burst += n;
        let mut d = Pdu::new(op::DATA_IN);
        let mut f = 0u8;
        if last || in_burst == burst {
            f |= 0x80;
            in_burst = 0;
        }
        if last && collapse {
            f |= 0x01 | residual.0;
            d.bhs[3] = resp.status;
            d.set_u32(44, residual.1);
        }
        d.set_flags(f);
        d.set_lun_field(lun_field);
        d.set_itt(itt);
        d.set_u32(20, RESERVED_TAG);
        d.set_u32(36, datasn);
        d.set_u32(40, off as u32);
        let payload = Payload {
            buf: data.clone(),
            start: off,
            len: n,
        };
        conn.send_with(d, payload, last && collapse);
        datasn += 1;
        off += n;
    }
    if collapse {
        return;
    }
    let mut r = Pdu::new(op::SCSI_RESP);
    r.set_flags(0x80 | residual.0);
    r.bhs[2] = 0;
    r.bhs[3] = resp.status;
    r.set_itt(itt);
    r.set_u32(36, datasn);
    r.set_u32(44, residual.1);
    if !resp.sense.is_empty() {
        let mut s = (resp.sense.len() as u16).to_be_bytes().to_vec();
        s.extend_from_slice(&resp.sense);
        r.data = s;
    }
    conn.send(r, true);
}
