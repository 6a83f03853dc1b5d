//! SCSI status codes and sense data (SPC-4 §4.5), fixed and descriptor format.

pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const TASK_ABORTED: u8 = 0x40;
}

pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// Additional sense code / qualifier pairs used by this target.
pub mod asc {
    pub const NO_ADDITIONAL: (u8, u8) = (0x00, 0x00);
    pub const WRITE_ERROR: (u8, u8) = (0x0c, 0x00);
    pub const INVALID_FIELD_IN_INFORMATION_UNIT: (u8, u8) = (0x0e, 0x03);
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1a, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: (u8, u8) = (0x1d, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: (u8, u8) = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub const LUN_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    pub const INVALID_RELEASE_OF_PR: (u8, u8) = (0x26, 0x04);
    pub const TOO_MANY_TARGET_DESCRIPTORS: (u8, u8) = (0x26, 0x06);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE: (u8, u8) = (0x26, 0x07);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: (u8, u8) = (0x26, 0x08);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE: (u8, u8) = (0x26, 0x09);
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    pub const POWER_ON_RESET: (u8, u8) = (0x29, 0x00);
    pub const BUS_DEVICE_RESET: (u8, u8) = (0x29, 0x03);
    pub const MODE_PARAMETERS_CHANGED: (u8, u8) = (0x2a, 0x01);
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x03);
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2a, 0x04);
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x05);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: (u8, u8) = (0x2f, 0x00);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
    pub const MEDIUM_NOT_PRESENT: (u8, u8) = (0x3a, 0x00);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: (u8, u8) = (0x55, 0x04);
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: (u8, u8) = (0x0d, 0x02);
    pub const DATA_PHASE_ERROR: (u8, u8) = (0x4b, 0x00);
}

/// Points at the offending field (sense-key specific, SPC-4 §4.5.2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPointer {
    /// true: the field is in the CDB; false: in the parameter data.
    pub in_cdb: bool,
    pub byte: u16,
    pub bit: Option<u8>,
}

/// One sense condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// INFORMATION field (e.g. offset of the first miscompare).
    pub info: Option<u64>,
    pub field: Option<FieldPointer>,
}

impl Sense {
    pub fn new(key: u8, code: (u8, u8)) -> Sense {
        Sense {
            key,
            asc: code.0,
            ascq: code.1,
            info: None,
            field: None,
        }
    }
    pub fn illegal(code: (u8, u8)) -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, code)
    }
    pub fn invalid_cdb(byte: u16, bit: Option<u8>) -> Sense {
        let mut s = Sense::illegal(asc::INVALID_FIELD_IN_CDB);
        s.field = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        s
    }
    pub fn invalid_param(byte: u16, bit: Option<u8>) -> Sense {
        let mut s = Sense::illegal(asc::INVALID_FIELD_IN_PARAMETER_LIST);
        s.field = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit,
        });
        s
    }
    pub fn lba_out_of_range() -> Sense {
        Sense::illegal(asc::LBA_OUT_OF_RANGE)
    }
    pub fn invalid_opcode() -> Sense {
        let mut s = Sense::illegal(asc::INVALID_COMMAND_OPERATION_CODE);
        s.field = Some(FieldPointer {
            in_cdb: true,
            byte: 0,
            bit: None,
        });
        s
    }
    pub fn with_info(mut self, info: u64) -> Sense {
        self.info = Some(info);
        self
    }

    fn sks(&self) -> Option<[u8; 3]> {
        self.field.map(|f| {
            let mut b = [0u8; 3];
            b[0] = 0x80 | if f.in_cdb { 0x40 } else { 0 };
            if let Some(bit) = f.bit {
                b[0] |= 0x08 | (bit & 7);
            }
            b[1..3].copy_from_slice(&f.byte.to_be_bytes());
            b
        })
    }

    /// Encodes the sense data; `descriptor` selects descriptor format (D_SENSE).
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            let mut v = vec![0x72, self.key & 0xf, self.asc, self.ascq, 0, 0, 0, 0];
            if let Some(info) = self.info {
                v.extend_from_slice(&[0x00, 0x0a, 0x80, 0]);
                v.extend_from_slice(&info.to_be_bytes());
            }
            if let Some(sks) = self.sks() {
                v.extend_from_slice(&[0x02, 0x06, 0, 0]);
                v.extend_from_slice(&sks);
                v.push(0);
            }
            v[7] = (v.len() - 8) as u8;
            v
        } else {
            let mut v = vec![0u8; 18];
            v[0] = 0x70;
            v[2] = self.key & 0xf;
            if let Some(info) = self.info {
                v[0] |= 0x80;
                v[3..7].copy_from_slice(&(info as u32).to_be_bytes());
            }
            v[7] = 10;
            v[12] = self.asc;
            v[13] = self.ascq;
            if let Some(sks) = self.sks() {
                v[15..18].copy_from_slice(&sks);
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_descriptor() {
        let s = Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY).with_info(5);
        let f = s.encode(false);
        assert_eq!(f[0], 0xf0);
        assert_eq!(f[2], 0xe);
        assert_eq!(&f[3..7], &[0, 0, 0, 5]);
        assert_eq!((f[12], f[13]), (0x1d, 0));
        let d = s.encode(true);
        assert_eq!(d[0], 0x72);
        assert_eq!(d[7] as usize, d.len() - 8);
        assert_eq!(d[19], 5);
    }
}
