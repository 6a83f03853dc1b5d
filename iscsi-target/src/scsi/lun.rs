//! One logical unit: backing store, identity, shared state (reservations,
//! mode pages, unit attentions) and the command dispatcher.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::backing::Backing;
use super::cdb::{self, Command};
use super::range_lock::RangeLock;
use super::sense::{asc, key, status, Sense};
use super::{info, mode, opcodes, pr, rw, thin, xcopy, Fail, Nexus, Request, Response};

/// How to open a LUN.
#[derive(Clone, Debug)]
pub struct LunOptions {
    pub path: PathBuf,
    pub read_only: bool,
    /// Target IQN: part of the stable device identifier.
    pub target_iqn: String,
    /// Where APTPL persistent reservations are kept (default: `<path>.pr`
    /// for regular files, none for block devices).
    pub pr_file: Option<PathBuf>,
}

/// Shared, mutable LUN state.
pub(crate) struct LunState {
    /// SPC-2 RESERVE(6)/(10) holder (initiator port name).
    pub spc2: Option<String>,
    pub pr: pr::PrState,
    pub mode: mode::ModeState,
    pub ua: HashMap<String, VecDeque<(u8, u8)>>,
    pub copy: xcopy::CopyState,
}

pub struct Lun {
    pub(crate) backing: Backing,
    pub(crate) block_size: u32,
    pub(crate) blocks: u64,
    /// 64-bit identity hash (NAA designator and serial number come from it).
    pub(crate) ident: u64,
    pub(crate) target_iqn: String,
    pub(crate) range: RangeLock,
    pub(crate) state: Mutex<LunState>,
    pub(crate) pr_file: Option<PathBuf>,
    abort_hook: OnceLock<AbortHook>,
    /// Test switch: answer COMPARE AND WRITE as an unknown opcode.
    caw_disabled: std::sync::atomic::AtomicBool,
}

/// Called with initiator port names whose tasks PREEMPT AND ABORT aborts.
pub type AbortHook = Box<dyn Fn(&[String]) + Send + Sync>;

/// FNV-1a, for stable identifiers.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Lun {
    pub fn open(opts: &LunOptions) -> io::Result<Lun> {
        let backing = Backing::open(&opts.path, opts.read_only)?;
        let block_size = 512u32;
        let blocks = backing.size() / block_size as u64;
        if blocks == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: smaller than one 512-byte block", opts.path.display()),
            ));
        }
        let canon = std::fs::canonicalize(&opts.path).unwrap_or_else(|_| opts.path.clone());
        let ident = fnv1a(&[
            opts.target_iqn.as_bytes(),
            canon.as_os_str().as_encoded_bytes(),
        ]);
        let pr_file = opts.pr_file.clone().or_else(|| {
            backing
                .thin()
                .then(|| PathBuf::from(format!("{}.pr", canon.display())))
        });
        let pr_state = match &pr_file {
            Some(p) => pr::PrState::load(p)?,
            None => pr::PrState::default(),
        };
        Ok(Lun {
            backing,
            block_size,
            blocks,
            ident,
            target_iqn: opts.target_iqn.clone(),
            range: RangeLock::new(),
            state: Mutex::new(LunState {
                spc2: None,
                pr: pr_state,
                mode: mode::ModeState::default(),
                ua: HashMap::new(),
                copy: xcopy::CopyState::default(),
            }),
            pr_file,
            abort_hook: OnceLock::new(),
            caw_disabled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Test switch: behave like a target without COMPARE AND WRITE (the
    /// opcode is refused as unknown), to test initiators' refusal paths.
    pub fn set_compare_and_write_disabled(&self, disabled: bool) {
        self.caw_disabled
            .store(disabled, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn path(&self) -> &Path {
        self.backing.path()
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Installs the transport's task-abort callback (used by PREEMPT AND ABORT).
    pub fn set_abort_hook(&self, hook: AbortHook) {
        let _ = self.abort_hook.set(hook);
    }

    pub(crate) fn abort_tasks_of(&self, ports: &[String]) {
        if let Some(h) = self.abort_hook.get() {
            h(ports);
        }
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, LunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a unit attention for every nexus in `ports`.
    pub(crate) fn post_ua(
        state: &mut LunState,
        ports: impl IntoIterator<Item = String>,
        code: (u8, u8),
    ) {
        for p in ports {
            let q = state.ua.entry(p).or_default();
            if !q.contains(&code) {
                q.push_back(code);
            }
        }
    }

    /// LOGICAL UNIT RESET: clears SPC-2 reservations and tells other nexuses.
    pub fn reset(&self) {
        let mut st = self.lock_state();
        st.spc2 = None;
    }

    /// I_T nexus loss (session gone): releases its SPC-2 reservation.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        let mut st = self.lock_state();
        if st.spc2.as_deref() == Some(nexus.port_name().as_str()) {
            st.spc2 = None;
        }
    }

    pub(crate) fn check_lba(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if lba <= self.blocks && end <= self.blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<(), Sense> {
        if self.backing.read_only() || self.lock_state().mode.swp {
            return Err(Sense::new(key::DATA_PROTECT, asc::WRITE_PROTECTED));
        }
        Ok(())
    }

    /// Executes one command.
    pub fn execute(&self, req: &Request<'_>) -> Response {
        let descriptor = self.lock_state().mode.d_sense;
        if req.cdb.first() == Some(&cdb::opcode::COMPARE_AND_WRITE)
            && self.caw_disabled.load(std::sync::atomic::Ordering::SeqCst)
        {
            return check(
                Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_COMMAND_OPERATION_CODE),
                descriptor,
            );
        }
        let cmd = match cdb::decode(req.cdb) {
            Ok(c) => c,
            Err(s) => return check(s, descriptor),
        };
        let port = req.nexus.port_name();
        // Pending unit attention (not for INQUIRY / REPORT LUNS / REQUEST SENSE).
        if !matches!(
            cmd,
            Command::Inquiry { .. } | Command::ReportLuns { .. } | Command::RequestSense { .. }
        ) {
            let mut st = self.lock_state();
            if let Some(code) = st.ua.get_mut(&port).and_then(|q| q.pop_front()) {
                return check(Sense::new(key::UNIT_ATTENTION, code), descriptor);
            }
        }
        if self.conflicts(&cmd, &port) {
            return Response {
                status: status::RESERVATION_CONFLICT,
                ..Default::default()
            };
        }
        let mut out_len = None;
        let result = self.dispatch(&cmd, req, &mut out_len);
        let descriptor = self.lock_state().mode.d_sense;
        match result {
            Ok(data_in) => Response {
                status: status::GOOD,
                data_in,
                sense: Vec::new(),
                out_len,
            },
            Err(Fail::Check(s)) => Response {
                out_len,
                ..check(s, descriptor)
            },
            Err(Fail::Conflict) => Response {
                status: status::RESERVATION_CONFLICT,
                out_len,
                ..Default::default()
            },
            Err(Fail::Status(st)) => Response {
                status: st,
                out_len,
                ..Default::default()
            },
        }
    }

    fn conflicts(&self, cmd: &Command, port: &str) -> bool {
        let st = self.lock_state();
        if let Some(holder) = &st.spc2 {
            if holder != port && !spc2_allowed(cmd) {
                return true;
            }
        }
        pr::conflicts(&st.pr, cmd, port)
    }

    fn dispatch(
        &self,
        cmd: &Command,
        req: &Request<'_>,
        out_len: &mut Option<u32>,
    ) -> super::CmdResult {
        let data = req.data_out.unwrap_or(&[]);
        match cmd {
            Command::TestUnitReady => Ok(Vec::new()),
            Command::RequestSense { desc, alloc } => {
                let s = Sense::new(key::NO_SENSE, asc::NO_ADDITIONAL).encode(*desc);
                Ok(super::alloc(s, *alloc))
            }
            Command::Inquiry { evpd, page, alloc } => info::inquiry(self, *evpd, *page, *alloc),
            Command::ReportLuns { .. } => Err(Sense::invalid_opcode().into()),
            Command::ReadCapacity10 { lba, pmi } => info::read_capacity10(self, *lba, *pmi),
            Command::ReadCapacity16 { alloc } => info::read_capacity16(self, *alloc),
            Command::Read(r) => rw::read(self, r),
            Command::Write(r) => rw::write(self, r, data, out_len),
            Command::Verify { rw: r, bytchk } => rw::verify(self, r, *bytchk, data, out_len),
            Command::WriteVerify { rw: r, .. } => rw::write(self, r, data, out_len),
            Command::Prefetch { lba, blocks } => {
                self.check_lba(*lba, *blocks as u64)?;
                Ok(Vec::new())
            }
            Command::SyncCache { lba, blocks } => {
                self.check_lba(*lba, *blocks as u64)?;
                self.backing
                    .sync()
                    .map_err(|_| Sense::new(key::MEDIUM_ERROR, asc::WRITE_ERROR))?;
                Ok(Vec::new())
            }
            Command::ModeSense {
                ten,
                dbd,
                pc,
                page,
                subpage,
                alloc,
            } => mode::sense(self, *ten, *dbd, *pc, *page, *subpage, *alloc),
            Command::ModeSelect { ten, pf, sp, len } => {
                *out_len = Some(*len);
                mode::select(self, *ten, *pf, *sp, *len, data)
            }
            Command::CompareAndWrite { rw: r } => rw::compare_and_write(self, r, data, out_len),
            Command::WriteSame {
                rw: r,
                unmap,
                anchor,
                ndob,
            } => thin::write_same(self, r, *unmap, *anchor, *ndob, data, out_len),
            Command::Unmap { anchor, len } => {
                *out_len = Some(*len);
                thin::unmap(self, *anchor, *len, data)
            }
            Command::GetLbaStatus { lba, alloc } => thin::get_lba_status(self, *lba, *alloc),
            Command::Reserve => {
                let mut st = self.lock_state();
                if !st.pr.registrations.is_empty() {
                    return Err(Fail::Conflict);
                }
                let port = req.nexus.port_name();
                match &st.spc2 {
                    Some(h) if *h != port => Err(Fail::Conflict),
                    _ => {
                        st.spc2 = Some(port);
                        Ok(Vec::new())
                    }
                }
            }
            Command::Release => {
                let mut st = self.lock_state();
                if st.spc2.as_deref() == Some(req.nexus.port_name().as_str()) {
                    st.spc2 = None;
                }
                Ok(Vec::new())
            }
            Command::PrIn { action, alloc } => pr::pr_in(self, *action, *alloc),
            Command::PrOut {
                action,
                scope,
                ty,
                len,
            } => {
                *out_len = Some(*len);
                pr::pr_out(self, req.nexus, *action, *scope, *ty, *len, data)
            }
            Command::ReportSupportedOpcodes {
                rctd,
                options,
                op,
                sa,
                alloc,
            } => opcodes::report(*rctd, *options, *op, *sa, *alloc),
            Command::ReportSupportedTmfs { alloc } => {
                // ATS ATSS CACAS CTSS LURS QTS TRS WAKES; QAES QTSS ITNRS
                let v = vec![0b1101_1000, 0, 0, 0];
                Ok(super::alloc(v, *alloc))
            }
            Command::ExtendedCopy { len } => {
                *out_len = Some(*len);
                xcopy::extended_copy(self, *len, data)
            }
            Command::ReceiveCopyResults {
                action,
                list_id,
                alloc,
            } => xcopy::receive_copy_results(self, *action, *list_id, *alloc),
            Command::StartStopUnit { .. } => Ok(Vec::new()),
            Command::PreventAllow { prevent } => {
                if *prevent != 0 {
                    // Not a removable medium: prevention is not supported.
                    return Err(Sense::invalid_cdb(4, Some(0)).into());
                }
                Ok(Vec::new())
            }
        }
    }
}

/// Commands an SPC-2 reservation held by someone else does not block.
fn spc2_allowed(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Inquiry { .. }
            | Command::ReportLuns { .. }
            | Command::RequestSense { .. }
            | Command::Release
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReportSupportedTmfs { .. }
            | Command::PrIn { .. }
    )
}

pub(crate) fn check(s: Sense, descriptor: bool) -> Response {
    Response {
        status: status::CHECK_CONDITION,
        data_in: Vec::new(),
        sense: s.encode(descriptor),
        out_len: None,
    }
}
