//! Property tests: the PDU parser and the CDB decoder never panic on
//! arbitrary input, and PDUs round-trip.

use iscsi_target::pdu::{Digests, Pdu};
use iscsi_target::scsi::cdb;
use proptest::prelude::*;

proptest! {
    #[test]
    fn pdu_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), hd in any::<bool>(), dd in any::<bool>()) {
        let _ = Pdu::decode(&bytes, Digests { header: hd, data: dd }, 1024);
    }

    #[test]
    fn pdu_round_trips(bhs in proptest::collection::vec(any::<u8>(), 48), data in proptest::collection::vec(any::<u8>(), 0..300), hd in any::<bool>(), dd in any::<bool>()) {
        let mut p = Pdu::new(0);
        p.bhs.copy_from_slice(&bhs);
        p.bhs[4] = 0;
        p.data = data;
        let d = Digests { header: hd, data: dd };
        let bytes = p.encode(d);
        let (q, used) = Pdu::decode(&bytes, d, 1 << 20).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(q.data, p.data.clone());
        prop_assert_eq!(&q.bhs[8..], &p.bhs[8..]);
    }

    #[test]
    fn cdb_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
        let _ = cdb::decode(&bytes);
    }
}
