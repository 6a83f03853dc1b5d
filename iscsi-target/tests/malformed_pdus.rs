//! Malformed input on one connection must not disturb the target or other
//! sessions: bad lengths, digests, unknown opcodes and garbage.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use iscsi_target::initiator::Session;
use iscsi_target::pdu::{op, Digests, Pdu};

fn inquiry() -> [u8; 6] {
    [0x12, 0, 0, 0, 96, 0]
}

/// Sends bytes on a fresh connection and waits for the target to close it
/// (or answer); returns what it sent back.
fn poke(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn malformed_pdus_do_not_hurt_other_sessions() {
    let t = common::start(&[1 << 20]);
    let mut good = Session::login(
        t.addr,
        "iqn.2024-01.test.vmfs:good",
        common::IQN,
        [0x80, 0, 0, 0, 0, 1],
    )
    .unwrap();
    assert_eq!(good.command(0, &inquiry(), &[], 96).unwrap().status, 0);

    // Garbage, a truncated header, a huge data segment length during login.
    poke(t.addr, b"GET / HTTP/1.0\r\n\r\n");
    poke(t.addr, &[0x43, 0x87, 0, 0]);
    let mut huge = Pdu::new(op::LOGIN_REQ);
    huge.bhs[5] = 0xff;
    huge.bhs[6] = 0xff;
    huge.bhs[7] = 0xff;
    poke(t.addr, &huge.bhs);
    // A non-login opcode first.
    poke(t.addr, &Pdu::new(op::SCSI_CMD).encode(Digests::default()));
    // Login with broken text.
    let mut bad = Pdu::new(op::LOGIN_REQ);
    bad.set_flags(0x87);
    bad.data = b"no-equals-sign\0".to_vec();
    let reply = poke(t.addr, &bad.encode(Digests::default()));
    assert!(
        reply.len() >= 48 && reply[0] & 0x3f == op::LOGIN_RESP && reply[36] != 0,
        "login with bad text must be refused"
    );

    // In full-feature phase: unknown opcode gets a Reject, session survives.
    let mut s = Session::login(
        t.addr,
        "iqn.2024-01.test.vmfs:bad",
        common::IQN,
        [0x80, 0, 0, 0, 0, 2],
    )
    .unwrap();
    let mut weird = Pdu::new(0x1d);
    weird.set_itt(77);
    s.send_raw(&weird.encode(Digests::default())).unwrap();
    let r = s.recv().unwrap();
    assert_eq!(r.opcode(), op::REJECT);
    assert_eq!(r.bhs[2], 0x05);
    assert_eq!(s.command(0, &inquiry(), &[], 96).unwrap().status, 0);
    // Unknown CDB opcode: CHECK CONDITION, INVALID COMMAND OPERATION CODE.
    let r = s.command(0, &[0xc7, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(r.status, 2);
    assert_eq!(r.sense_code(), Some((5, 0x20, 0)));
    // Data-Out beyond anything solicited: the connection is dropped.
    let mut d = Pdu::new(op::DATA_OUT);
    d.set_itt(4242);
    d.data = vec![0; 512];
    s.send_raw(&d.encode(Digests::default())).unwrap();
    // A command with a lying data segment length then garbage: dropped.
    let mut c = Pdu::new(op::SCSI_CMD);
    c.set_flags(0xa1);
    c.set_itt(9);
    c.set_u32(20, 1 << 30);
    c.bhs[32] = 0x2a;
    let mut bytes = c.encode(Digests::default());
    bytes.extend_from_slice(&[0xee; 300]);
    let _ = s.send_raw(&bytes);

    // The good session and new sessions still work.
    assert_eq!(good.command(0, &inquiry(), &[], 96).unwrap().status, 0);
    let mut again = Session::login(
        t.addr,
        "iqn.2024-01.test.vmfs:again",
        common::IQN,
        [0x80, 0, 0, 0, 0, 3],
    )
    .unwrap();
    assert_eq!(again.command(0, &inquiry(), &[], 96).unwrap().status, 0);
    again.logout().unwrap();
    good.logout().unwrap();
}
