//! Operational parameter negotiation (RFC 7143 §13): the target's side of
//! every standard login key, producing the reply value and the agreed value.

/// What the target is willing to do (its half of each negotiation).
#[derive(Clone, Debug)]
pub struct TargetLimits {
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_outstanding_r2t: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_outstanding_r2t: 1,
            immediate_data: true,
            initial_r2t: false,
        }
    }
}

/// Values in force for a session/connection after login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Largest data segment the initiator accepts (we must not send more).
    pub initiator_mrdsl: u32,
    /// Largest data segment we accept (declared by us).
    pub target_mrdsl: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
}

impl Negotiated {
    /// RFC 7143 defaults, with our declared receive limit.
    pub fn defaults(limits: &TargetLimits) -> Negotiated {
        Negotiated {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_mrdsl: 8192,
            target_mrdsl: limits.max_recv_data_segment_length,
            max_burst_length: 262_144.min(limits.max_burst_length),
            first_burst_length: 65_536.min(limits.first_burst_length),
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Outcome of one offered key.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this value.
    Value(String),
    /// Declarative key needing no answer.
    NoReply,
    NotUnderstood,
    Irrelevant,
    Reject,
}

fn num(v: &str, lo: u64, hi: u64) -> Option<u32> {
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        v.parse::<u64>().ok()?
    };
    (lo..=hi).contains(&n).then_some(n as u32)
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yn(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

fn digest_choice(v: &str) -> Option<(bool, String)> {
    for c in v.split(',') {
        match c {
            "CRC32C" => return Some((true, c.to_string())),
            "None" => return Some((false, c.to_string())),
            _ => {}
        }
    }
    None
}

const MAX24: u64 = (1 << 24) - 1;

/// Negotiates one operational key, updating `n`. Security and identity keys
/// (InitiatorName, TargetName, SessionType, AuthMethod, CHAP_*) are handled by
/// the login code, not here.
pub fn negotiate(key: &str, value: &str, limits: &TargetLimits, n: &mut Negotiated) -> Reply {
    use Reply::*;
    match key {
        "HeaderDigest" | "DataDigest" => match digest_choice(value) {
            Some((on, chosen)) => {
                if key == "HeaderDigest" {
                    n.header_digest = on
                } else {
                    n.data_digest = on
                }
                Value(chosen)
            }
            None => Reject,
        },
        "MaxConnections" => match num(value, 1, 65535) {
            Some(_) => {
                n.max_connections = 1;
                Value("1".into())
            }
            None => Reject,
        },
        "InitialR2T" => match yes_no(value) {
            Some(v) => {
                n.initial_r2t = v || limits.initial_r2t;
                Value(yn(n.initial_r2t))
            }
            None => Reject,
        },
        "ImmediateData" => match yes_no(value) {
            Some(v) => {
                n.immediate_data = v && limits.immediate_data;
                Value(yn(n.immediate_data))
            }
            None => Reject,
        },
        "MaxRecvDataSegmentLength" => match num(value, 512, MAX24) {
            Some(v) => {
                n.initiator_mrdsl = v;
                NoReply
            }
            None => Reject,
        },
        "MaxBurstLength" => match num(value, 512, MAX24) {
            Some(v) => {
                n.max_burst_length = v.min(limits.max_burst_length);
                n.first_burst_length = n.first_burst_length.min(n.max_burst_length);
                Value(n.max_burst_length.to_string())
            }
            None => Reject,
        },
        "FirstBurstLength" => match num(value, 512, MAX24) {
            Some(v) => {
                n.first_burst_length = v.min(limits.first_burst_length).min(n.max_burst_length);
                Value(n.first_burst_length.to_string())
            }
            None => Reject,
        },
        "DefaultTime2Wait" => match num(value, 0, 3600) {
            Some(v) => {
                n.default_time2wait = v.max(2);
                Value(n.default_time2wait.to_string())
            }
            None => Reject,
        },
        "DefaultTime2Retain" => match num(value, 0, 3600) {
            Some(v) => {
                n.default_time2retain = v.min(20);
                Value(n.default_time2retain.to_string())
            }
            None => Reject,
        },
        "MaxOutstandingR2T" => match num(value, 1, 65535) {
            Some(v) => {
                n.max_outstanding_r2t = v.min(limits.max_outstanding_r2t);
                Value(n.max_outstanding_r2t.to_string())
            }
            None => Reject,
        },
        "DataPDUInOrder" | "DataSequenceInOrder" => match yes_no(value) {
            // We only support in-order data; OR-function result is Yes.
            Some(_) => {
                if key == "DataPDUInOrder" {
                    n.data_pdu_in_order = true
                } else {
                    n.data_sequence_in_order = true
                }
                Value("Yes".into())
            }
            None => Reject,
        },
        "ErrorRecoveryLevel" => match num(value, 0, 2) {
            Some(_) => {
                n.error_recovery_level = 0;
                Value("0".into())
            }
            None => Reject,
        },
        "IFMarker" | "OFMarker" => match yes_no(value) {
            Some(_) => Value("No".into()),
            None => Reject,
        },
        "OFMarkInt" | "IFMarkInt" => Irrelevant,
        "iSCSIProtocolLevel" => match num(value, 0, 31) {
            Some(v) => Value(v.min(1).to_string()),
            None => Reject,
        },
        "TaskReporting" => Value("RFC3720".into()),
        "InitiatorAlias" => NoReply,
        _ => NotUnderstood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_keys() {
        let l = TargetLimits::default();
        let mut n = Negotiated::defaults(&l);
        assert_eq!(
            negotiate("HeaderDigest", "CRC32C,None", &l, &mut n),
            Reply::Value("CRC32C".into())
        );
        assert!(n.header_digest);
        assert_eq!(
            negotiate("MaxBurstLength", "16776192", &l, &mut n),
            Reply::Value("1048576".into())
        );
        assert_eq!(
            negotiate("FirstBurstLength", "9999999", &l, &mut n),
            Reply::Value("262144".into())
        );
        assert_eq!(
            negotiate("InitialR2T", "No", &l, &mut n),
            Reply::Value("No".into())
        );
        assert_eq!(negotiate("MaxBurstLength", "1", &l, &mut n), Reply::Reject);
        assert_eq!(negotiate("X-foo", "1", &l, &mut n), Reply::NotUnderstood);
        assert_eq!(
            negotiate("MaxRecvDataSegmentLength", "65536", &l, &mut n),
            Reply::NoReply
        );
        assert_eq!(n.initiator_mrdsl, 65536);
    }
}
