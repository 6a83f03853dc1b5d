//! A fake target that logs in properly and then misbehaves: every bad
//! answer must come back as a typed error naming the command, never a panic.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use iscsi_target::pdu::{op, Digests, Pdu};

use super::*;

#[derive(Clone, Copy)]
enum Misbehave {
    /// Data-In for bytes past the end of the read buffer.
    DataInPastEnd,
    /// An opcode no target sends.
    UnknownOpcode,
    /// GOOD status but fewer bytes than asked.
    ShortRead,
    /// CHECK CONDITION with empty sense data.
    CheckWithoutSense,
    /// Login refused: authorization failure.
    RefuseLogin,
}

fn read_pdu(s: &mut TcpStream) -> Option<Pdu> {
    let mut bhs = [0u8; 48];
    s.read_exact(&mut bhs).ok()?;
    let dsl = ((bhs[5] as usize) << 16) | ((bhs[6] as usize) << 8) | bhs[7] as usize;
    let mut rest = vec![0u8; bhs[4] as usize * 4 + dsl.div_ceil(4) * 4];
    s.read_exact(&mut rest).ok()?;
    let mut p = Pdu::new(0);
    p.bhs = bhs;
    p.data = rest[..dsl].to_vec();
    Some(p)
}

fn serve(mut s: TcpStream, how: Misbehave) {
    let mut statsn = 1u32;
    while let Some(req) = read_pdu(&mut s) {
        let mut r;
        match req.opcode() {
            op::LOGIN_REQ => {
                r = Pdu::new(op::LOGIN_RESP);
                // Go where the initiator asks, at once.
                r.set_flags(req.flags() & 0x8f);
                r.bhs[8..14].copy_from_slice(&req.bhs[8..14]);
                r.set_u16(14, 7);
                if matches!(how, Misbehave::RefuseLogin) {
                    r.bhs[36] = 2;
                    r.bhs[37] = 2;
                }
                if req.flags() & 3 == 1 {
                    r.data = b"AuthMethod=None\0".to_vec();
                }
            }
            op::SCSI_CMD => {
                let edtl = req.u32_at(20);
                match how {
                    Misbehave::DataInPastEnd => {
                        r = Pdu::new(op::DATA_IN);
                        r.set_flags(0x81);
                        r.set_u32(40, edtl + 4096);
                        r.data = vec![1; 512];
                    }
                    Misbehave::UnknownOpcode => r = Pdu::new(0x3e),
                    Misbehave::ShortRead if edtl > 0 => {
                        r = Pdu::new(op::DATA_IN);
                        r.set_flags(0x81);
                        r.data = vec![1; (edtl / 2) as usize];
                    }
                    Misbehave::CheckWithoutSense => {
                        r = Pdu::new(op::SCSI_RESP);
                        r.set_flags(0x80);
                        r.bhs[3] = 0x02;
                    }
                    _ => {
                        r = Pdu::new(op::SCSI_RESP);
                        r.set_flags(0x80);
                    }
                }
            }
            _ => continue,
        }
        r.set_itt(req.itt());
        r.set_u32(24, statsn);
        statsn += 1;
        r.set_u32(28, req.u32_at(24));
        r.set_u32(32, req.u32_at(24) + 64);
        if s.write_all(&r.encode(Digests::default())).is_err() {
            return;
        }
    }
}

fn fake(how: Misbehave) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s, how));
        }
    });
    addr
}

fn open(how: Misbehave) -> Result<IscsiDev, IscsiError> {
    IscsiDev::open(
        &fake(how),
        "iqn.2024-01.org.vmfs.test:fake",
        0,
        &IscsiOptions {
            initiator: "iqn.2024-01.org.vmfs.test:init".into(),
            chap: None,
            mutual: None,
            io_timeout: Duration::from_millis(400),
            require_caw: false,
            read_only: true,
        },
    )
}

#[test]
fn bad_target_answers_are_typed_errors() {
    for (how, want) in [
        (Misbehave::DataInPastEnd, "TEST UNIT READY"),
        (Misbehave::UnknownOpcode, "TEST UNIT READY"),
        (Misbehave::ShortRead, "16 bytes of capacity data"),
        (Misbehave::CheckWithoutSense, "without decodable sense"),
        (Misbehave::RefuseLogin, "authorization failure"),
    ] {
        let e = open(how).expect_err("a misbehaving target must not open");
        let msg = e.to_string();
        assert!(msg.contains(want), "{msg}");
    }
}
