//! COMPARE AND WRITE and WRITE SAME whose data-out length disagrees with the
//! CDB fail with ILLEGAL REQUEST and change nothing; a READ sent with only
//! the W bit completes GOOD without data. (Data-Out DataSN checks are
//! covered by iscsi-test-cu's iSCSIDataSnInvalid in libiscsi_suite.rs.)

mod common;

use iscsi_target::initiator::Session;

fn caw16(lba: u64, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

fn write_same16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x93;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn mismatched_data_out_is_refused_and_writes_nothing() {
    let t = common::start(&[1 << 20]);
    let mut s = Session::login(
        t.addr,
        "iqn.2024-01.test.vmfs:len",
        common::IQN,
        [0x80, 0, 0, 0, 0, 9],
    )
    .expect("login");
    let zeros = vec![0u8; 512];
    let illegal = |r: &iscsi_target::initiator::CmdOutcome, what: &str| {
        assert_eq!(r.status, 2, "{what}: status");
        assert_eq!(r.sense_code().map(|c| c.0), Some(5), "{what}: sense key");
    };
    // CAW of 1 block with 4 blocks of data (compare + write of 2 blocks):
    // the first two would match (all zeroes), so a lenient target writes.
    let mut four = vec![0u8; 4 * 512];
    four[512..].fill(0xab);
    let r = s.command(0, &caw16(10, 1), &four, 0).expect("caw");
    illegal(&r, "CAW with too much data");
    // And too little: 3 blocks declared, 4 sent.
    let r = s.command(0, &caw16(10, 3), &four, 0).expect("caw");
    illegal(&r, "CAW with too little data");
    // WRITE SAME of 8 blocks with 2 blocks of data.
    let r = s
        .command(0, &write_same16(20, 8), &[0xcd; 1024], 0)
        .expect("write same");
    illegal(&r, "WRITE SAME with two blocks");
    let r = s.command(0, &read10(0, 64), &[], 64 * 512).expect("read");
    assert_eq!(r.status, 0);
    assert!(
        r.data.iter().all(|&b| b == 0),
        "a refused command changed the LUN"
    );
    // The right lengths work.
    let mut two = zeros.clone();
    two.extend_from_slice(&[0x11; 512]);
    assert_eq!(s.command(0, &caw16(10, 1), &two, 0).unwrap().status, 0);
    assert_eq!(
        s.command(0, &write_same16(20, 8), &[0x22; 512], 0)
            .unwrap()
            .status,
        0
    );
    let r = s.command(0, &read10(10, 18), &[], 18 * 512).unwrap();
    assert!(r.data[..512].iter().all(|&b| b == 0x11));
    assert!(r.data[10 * 512..].iter().all(|&b| b == 0x22));
    // READ with only the W bit (and one block of data-out): GOOD, no data.
    let r = s
        .command(0, &read10(10, 1), &zeros, 0)
        .expect("read as write");
    assert_eq!(r.status, 0, "READ flagged as a write: {:?}", r.sense_code());
    assert!(r.data.is_empty());
    s.logout().expect("logout");
}
