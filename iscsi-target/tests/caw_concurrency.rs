//! 64 concurrent sessions increment one shared sector with COMPARE AND
//! WRITE; the final count must be exact.

mod common;

use iscsi_target::initiator::Session;

const SESSIONS: usize = 64;
const INCREMENTS: u64 = 10;

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn caw(lba: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = 1;
    c
}

#[test]
fn sixty_four_sessions_compare_and_write_exact_count() {
    let t = common::start(&[1 << 20]);
    let addr = t.addr;
    let mut handles = Vec::new();
    for i in 0..SESSIONS {
        handles.push(std::thread::spawn(move || {
            let isid = [0x80, 0, 0, 0, (i >> 8) as u8, i as u8];
            let name = format!("iqn.2024-01.test.vmfs:host{i}");
            let mut s = Session::login(addr, &name, common::IQN, isid).expect("login");
            let mut miscompares = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let r = s.command(0, &read16(7, 1), &[], 512).expect("read");
                    assert_eq!(r.status, 0, "read failed: {:?}", r.sense_code());
                    let cur = u64::from_le_bytes(r.data[..8].try_into().unwrap());
                    let mut buf = r.data.clone();
                    buf.extend_from_slice(&r.data);
                    buf[512..520].copy_from_slice(&(cur + 1).to_le_bytes());
                    let w = s.command(0, &caw(7), &buf, 0).expect("caw");
                    match w.status {
                        0 => break,
                        2 if w.sense_code().map(|c| c.0) == Some(0x0e) => miscompares += 1,
                        st => panic!("CAW status {st:#x} sense {:?}", w.sense_code()),
                    }
                }
            }
            s.logout().expect("logout");
            miscompares
        }));
    }
    let miscompares: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    let mut s = Session::login(
        addr,
        "iqn.2024-01.test.vmfs:check",
        common::IQN,
        [0x80, 0, 0, 0, 0xff, 0xff],
    )
    .unwrap();
    let r = s.command(0, &read16(7, 1), &[], 512).unwrap();
    let count = u64::from_le_bytes(r.data[..8].try_into().unwrap());
    println!("final count {count}, miscompares retried {miscompares}");
    assert_eq!(count, SESSIONS as u64 * INCREMENTS);
    // The value is durable in the backing file too.
    let file = std::fs::read(t.lun_path(0)).unwrap();
    assert_eq!(
        u64::from_le_bytes(file[7 * 512..7 * 512 + 8].try_into().unwrap()),
        count
    );
}
