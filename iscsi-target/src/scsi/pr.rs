//! PERSISTENT RESERVE IN / OUT (SPC-4 §5.13, §6.15, §6.16), with APTPL
//! state kept in a small text file beside the LUN.

use std::io;
use std::path::Path;

use super::cdb::Command;
use super::sense::{asc, Sense};
use super::{alloc, CmdResult, Fail, Lun, Nexus};

pub mod ty {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_RO: u8 = 5;
    pub const EXCLUSIVE_ACCESS_RO: u8 = 6;
    pub const WRITE_EXCLUSIVE_AR: u8 = 7;
    pub const EXCLUSIVE_ACCESS_AR: u8 = 8;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub port: String,
    pub key: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub holder: String,
    pub ty: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrState {
    pub generation: u32,
    pub registrations: Vec<Registration>,
    pub reservation: Option<Reservation>,
    pub aptpl: bool,
}

fn all_registrants(ty: u8) -> bool {
    ty == ty::WRITE_EXCLUSIVE_AR || ty == ty::EXCLUSIVE_ACCESS_AR
}

impl PrState {
    fn key_of(&self, port: &str) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| r.port == port)
            .map(|r| r.key)
    }
    fn is_holder(&self, port: &str) -> bool {
        match &self.reservation {
            Some(r) if all_registrants(r.ty) => self.key_of(port).is_some(),
            Some(r) => r.holder == port,
            None => false,
        }
    }

    /// Loads APTPL state; a missing file means no state.
    pub fn load(path: &Path) -> io::Result<PrState> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PrState::default()),
            Err(e) => return Err(e),
        };
        let bad = |line: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad reservation line {line:?}", path.display()),
            )
        };
        let mut st = PrState {
            aptpl: true,
            ..Default::default()
        };
        for line in text.lines() {
            let mut it = line.splitn(3, ' ');
            match (it.next(), it.next(), it.next()) {
                (Some("generation"), Some(g), None) => {
                    st.generation = g.parse().map_err(|_| bad(line))?
                }
                (Some("reg"), Some(k), Some(p)) => st.registrations.push(Registration {
                    key: u64::from_str_radix(k, 16).map_err(|_| bad(line))?,
                    port: p.to_string(),
                }),
                (Some("res"), Some(t), Some(p)) => {
                    st.reservation = Some(Reservation {
                        ty: t.parse().map_err(|_| bad(line))?,
                        holder: p.to_string(),
                    })
                }
                (None, ..) | (Some(""), ..) => {}
                _ => return Err(bad(line)),
            }
        }
        Ok(st)
    }

    fn save(&self, path: &Path) -> io::Result<()> {
        if !self.aptpl {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut s = format!("generation {}\n", self.generation);
        for r in &self.registrations {
            s.push_str(&format!("reg {:016x} {}\n", r.key, r.port));
        }
        if let Some(r) = &self.reservation {
            s.push_str(&format!("res {} {}\n", r.ty, r.holder));
        }
        let tmp = path.with_extension("pr.tmp");
        std::fs::write(&tmp, s)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// Whether `cmd` from `port` conflicts with the persistent reservation.
pub(crate) fn conflicts(st: &PrState, cmd: &Command, port: &str) -> bool {
    let Some(res) = &st.reservation else {
        return false;
    };
    if st.is_holder(port) {
        return false;
    }
    let registered = st.key_of(port).is_some();
    use Command::*;
    let read_class = match cmd {
        Inquiry { .. }
        | ReportLuns { .. }
        | RequestSense { .. }
        | ReportSupportedOpcodes { .. }
        | ReportSupportedTmfs { .. }
        | PrIn { .. }
        | PrOut { .. }
        | ReadCapacity10 { .. }
        | ReadCapacity16 { .. }
        | TestUnitReady => return false,
        Reserve | Release => return true,
        Read(_) | Verify { .. } | Prefetch { .. } | GetLbaStatus { .. } | ModeSense { .. } => true,
        _ => false,
    };
    match res.ty {
        ty::WRITE_EXCLUSIVE => !read_class,
        ty::EXCLUSIVE_ACCESS => true,
        ty::WRITE_EXCLUSIVE_RO | ty::WRITE_EXCLUSIVE_AR => !read_class && !registered,
        _ => !registered,
    }
}

pub(crate) fn pr_in(lun: &Lun, action: u8, alloc_len: u32) -> CmdResult {
    let st = lun.lock_state().pr.clone();
    let mut v = st.generation.to_be_bytes().to_vec();
    match action {
        0 => {
            v.extend_from_slice(&((st.registrations.len() * 8) as u32).to_be_bytes());
            for r in &st.registrations {
                v.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => match &st.reservation {
            None => v.extend_from_slice(&0u32.to_be_bytes()),
            Some(r) => {
                v.extend_from_slice(&16u32.to_be_bytes());
                let key = if all_registrants(r.ty) {
                    0
                } else {
                    st.key_of(&r.holder).unwrap_or(0)
                };
                v.extend_from_slice(&key.to_be_bytes());
                v.extend_from_slice(&[0, 0, 0, 0, 0, r.ty & 0x0f, 0, 0]);
            }
        },
        2 => {
            v = vec![0, 8, 0x01, 0x80 | 0x01, 0xea, 0x01, 0, 0];
            if !st.aptpl {
                v[3] &= !0x01;
            }
        }
        3 => {
            let mut body = Vec::new();
            for r in &st.registrations {
                let mut d = r.key.to_be_bytes().to_vec();
                d.extend_from_slice(&[0; 4]);
                let holder = st.is_holder(&r.port) && st.reservation.is_some();
                d.push(if holder { 0x01 } else { 0 });
                d.push(if holder {
                    st.reservation.as_ref().map_or(0, |x| x.ty)
                } else {
                    0
                });
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&1u16.to_be_bytes());
                let tid = transport_id(&r.port);
                d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                d.extend(tid);
                body.extend(d);
            }
            v.extend_from_slice(&(body.len() as u32).to_be_bytes());
            v.extend(body);
        }
        _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
    }
    Ok(alloc(v, alloc_len))
}

/// iSCSI TransportID, initiator port format (SPC-4 §7.6.4.6).
fn transport_id(port: &str) -> Vec<u8> {
    let mut name = port.as_bytes().to_vec();
    name.push(0);
    while name.len() % 4 != 0 {
        name.push(0);
    }
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&(name.len() as u16).to_be_bytes());
    v.extend(name);
    v
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn pr_out(
    lun: &Lun,
    nexus: &Nexus,
    action: u8,
    scope: u8,
    rtype: u8,
    len: u32,
    data: &[u8],
) -> CmdResult {
    if action > 6 {
        return Err(Sense::invalid_cdb(1, None).into());
    }
    if len != 24 {
        return Err(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR).into());
    }
    super::rw::need_data(data, 24)?;
    let key = u64::from_be_bytes(data[0..8].try_into().expect("8"));
    let sa_key = u64::from_be_bytes(data[8..16].try_into().expect("8"));
    let flags = data[20];
    if flags & 0x0c != 0 {
        // SPEC_I_PT / ALL_TG_PT are not supported.
        return Err(Sense::invalid_param(20, None).into());
    }
    let aptpl = flags & 0x01 != 0;
    let port = nexus.port_name();
    let mut guard = lun.lock_state();
    let state = &mut *guard;
    let st = &mut state.pr;
    let before = st.clone();
    let mut ua: Vec<(Vec<String>, (u8, u8))> = Vec::new();
    let mut preempted: Vec<String> = Vec::new();
    let my_key = st.key_of(&port);
    let valid_type = |t: u8| matches!(t, 1 | 3 | 5 | 6 | 7 | 8);
    match action {
        0 | 6 => {
            match my_key {
                None => {
                    if action == 0 && key != 0 {
                        return Err(Fail::Conflict);
                    }
                    if sa_key != 0 {
                        st.registrations.push(Registration {
                            port: port.clone(),
                            key: sa_key,
                        });
                    }
                }
                Some(k) => {
                    if action == 0 && key != k {
                        return Err(Fail::Conflict);
                    }
                    if sa_key == 0 {
                        st.registrations.retain(|r| r.port != port);
                        let release = match &st.reservation {
                            Some(r) if all_registrants(r.ty) => st.registrations.is_empty(),
                            Some(r) => r.holder == port,
                            None => false,
                        };
                        if release {
                            let rt = st.reservation.take().map_or(0, |r| r.ty);
                            if matches!(rt, 5 | 6) {
                                ua.push((others(st, &port), asc::RESERVATIONS_RELEASED));
                            }
                        }
                    } else if let Some(r) = st.registrations.iter_mut().find(|r| r.port == port) {
                        r.key = sa_key;
                    }
                }
            }
            st.aptpl = aptpl;
            st.generation = st.generation.wrapping_add(1);
        }
        1 => {
            if my_key != Some(key) {
                return Err(Fail::Conflict);
            }
            if scope != 0 {
                return Err(Sense::invalid_cdb(2, Some(4)).into());
            }
            if !valid_type(rtype) {
                return Err(Sense::invalid_cdb(2, None).into());
            }
            match &st.reservation {
                None => {
                    st.reservation = Some(Reservation {
                        holder: port.clone(),
                        ty: rtype,
                    })
                }
                Some(r) if st.is_holder(&port) && r.ty == rtype => {}
                Some(_) => return Err(Fail::Conflict),
            }
        }
        2 => {
            if my_key != Some(key) {
                return Err(Fail::Conflict);
            }
            if let Some(r) = st.reservation.clone() {
                if st.is_holder(&port) {
                    if scope != 0 || r.ty != rtype {
                        return Err(Sense::illegal(asc::INVALID_RELEASE_OF_PR).into());
                    }
                    st.reservation = None;
                    if r.ty != ty::WRITE_EXCLUSIVE && r.ty != ty::EXCLUSIVE_ACCESS {
                        ua.push((others(st, &port), asc::RESERVATIONS_RELEASED));
                    }
                }
            }
        }
        3 => {
            if my_key != Some(key) {
                return Err(Fail::Conflict);
            }
            ua.push((others(st, &port), asc::RESERVATIONS_PREEMPTED));
            st.registrations.clear();
            st.reservation = None;
            st.generation = st.generation.wrapping_add(1);
        }
        _ => {
            // PREEMPT (4) and PREEMPT AND ABORT (5).
            if my_key != Some(key) {
                return Err(Fail::Conflict);
            }
            if !valid_type(rtype) {
                return Err(Sense::invalid_cdb(2, None).into());
            }
            let res = st.reservation.clone();
            let holder_key = res.as_ref().and_then(|r| {
                if all_registrants(r.ty) {
                    None
                } else {
                    st.key_of(&r.holder)
                }
            });
            let remove = |st: &mut PrState, pred: &dyn Fn(&Registration) -> bool| -> Vec<String> {
                let gone: Vec<String> = st
                    .registrations
                    .iter()
                    .filter(|r| pred(r))
                    .map(|r| r.port.clone())
                    .collect();
                st.registrations.retain(|r| !pred(r));
                gone
            };
            match res {
                Some(r) if all_registrants(r.ty) && sa_key == 0 => {
                    preempted = remove(st, &|x: &Registration| x.port != port);
                    st.reservation = Some(Reservation {
                        holder: port.clone(),
                        ty: rtype,
                    });
                }
                Some(_) if holder_key == Some(sa_key) => {
                    preempted = remove(st, &|x: &Registration| x.key == sa_key && x.port != port);
                    st.reservation = Some(Reservation {
                        holder: port.clone(),
                        ty: rtype,
                    });
                }
                _ => {
                    if sa_key == 0 {
                        return Err(Sense::invalid_param(8, None).into());
                    }
                    preempted = remove(st, &|x: &Registration| x.key == sa_key);
                    if preempted.is_empty() {
                        return Err(Fail::Conflict);
                    }
                    if let Some(r) = &st.reservation {
                        if !all_registrants(r.ty) && st.key_of(&r.holder).is_none() {
                            st.reservation = None;
                        }
                    }
                }
            }
            ua.push((preempted.clone(), asc::REGISTRATIONS_PREEMPTED));
            st.generation = st.generation.wrapping_add(1);
        }
    }
    if let Some(path) = &lun.pr_file {
        if *st != before || action == 0 || action == 6 {
            if let Err(e) = st.save(path) {
                tracing::error!(file = %path.display(), error = %e, "saving persistent reservations");
                *st = before;
                return Err(
                    Sense::new(super::sense::key::HARDWARE_ERROR, asc::NO_ADDITIONAL).into(),
                );
            }
        }
    }
    for (ports, code) in ua {
        Lun::post_ua(state, ports, code);
    }
    drop(guard);
    if action == 5 && !preempted.is_empty() {
        lun.abort_tasks_of(&preempted);
    }
    Ok(Vec::new())
}

fn others(st: &PrState, port: &str) -> Vec<String> {
    st.registrations
        .iter()
        .filter(|r| r.port != port)
        .map(|r| r.port.clone())
        .collect()
}
