//! Task management functions (RFC 7143 §11.5): ABORT TASK, ABORT TASK SET,
//! CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::conn::Conn;
use crate::login::CMDSN_WINDOW;
use crate::pdu::{op, Pdu};
use crate::server::{Server, Session};
use crate::task::{lun_number, WriteState};

pub mod function {
    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_ACA: u8 = 3;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LUN_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TARGET_COLD_RESET: u8 = 7;
    pub const TASK_REASSIGN: u8 = 8;
}

pub mod response {
    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const NO_LUN: u8 = 2;
    pub const REASSIGN_UNSUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
    pub const REJECTED: u8 = 255;
}

pub fn handle(
    server: &Arc<Server>,
    conn: &Conn,
    session: &Arc<Session>,
    req: &Pdu,
    writes: &mut HashMap<u32, WriteState>,
) {
    let func = req.flags() & 0x7f;
    let lun = lun_number(req.lun_field());
    let lun_exists = (lun as usize) < session.target.luns.len();
    let ref_itt = req.u32_at(20);
    let ref_cmdsn = req.u32_at(32);
    let cmdsn = req.u32_at(24);
    let iqn = session.target.config.iqn.clone();
    let mut cold = false;
    let result = match func {
        function::ABORT_TASK => {
            let found = session.abort_where(|itt, t| itt == ref_itt && t.lun == lun);
            if writes.get(&ref_itt).is_some_and(|w| w.lun == lun) {
                writes.remove(&ref_itt);
            }
            if found > 0 {
                session.tasks().remove(&ref_itt);
                response::COMPLETE
            } else {
                // RFC 7143 §11.5.1: a task never received (RefCmdSN not yet
                // reached, inside the window, before this request) counts as
                // received and aborted. A task already received but gone has
                // completed and had its response sent: it does not exist.
                let exp = conn.exp_cmdsn.load(Ordering::SeqCst);
                let not_yet_received = ref_cmdsn.wrapping_sub(exp) < CMDSN_WINDOW;
                if not_yet_received && (cmdsn.wrapping_sub(ref_cmdsn) as i32) > 0 {
                    response::COMPLETE
                } else {
                    response::NO_TASK
                }
            }
        }
        function::ABORT_TASK_SET | function::CLEAR_TASK_SET => {
            if !lun_exists {
                response::NO_LUN
            } else {
                session.abort_where(|_, t| t.lun == lun);
                writes.retain(|_, w| w.lun != lun);
                if func == function::CLEAR_TASK_SET {
                    for s in server.sessions_of(&iqn) {
                        s.abort_where(|_, t| t.lun == lun);
                    }
                }
                response::COMPLETE
            }
        }
        function::CLEAR_ACA => response::NOT_SUPPORTED,
        function::LUN_RESET => {
            if !lun_exists {
                response::NO_LUN
            } else {
                for s in server.sessions_of(&iqn) {
                    s.abort_where(|_, t| t.lun == lun);
                }
                writes.retain(|_, w| w.lun != lun);
                session.target.luns[lun as usize].reset();
                response::COMPLETE
            }
        }
        function::TARGET_WARM_RESET | function::TARGET_COLD_RESET => {
            for s in server.sessions_of(&iqn) {
                s.abort_where(|_, _| true);
            }
            writes.clear();
            for l in &session.target.luns {
                l.reset();
            }
            cold = func == function::TARGET_COLD_RESET;
            response::COMPLETE
        }
        function::TASK_REASSIGN => response::REASSIGN_UNSUPPORTED,
        _ => response::REJECTED,
    };
    tracing::info!(function = func, lun, response = result, "task management");
    let mut r = Pdu::new(op::TMF_RESP);
    r.set_flags(0x80);
    r.bhs[2] = result;
    r.set_itt(req.itt());
    if cold {
        conn.send_and_close(r);
        for s in server.sessions_of(&iqn) {
            if s.id != session.id {
                let _ = s.shutdown.send(true);
            }
        }
    } else {
        conn.send(r, true);
    }
}
