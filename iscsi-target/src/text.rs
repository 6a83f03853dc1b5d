//! iSCSI text key=value data segments (RFC 7143 §6.1): NUL-terminated
//! `key=value` pairs, used by Login and Text PDUs.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TextError {
    #[error("text pair {0:?} has no '='")]
    NoEquals(String),
    #[error("text pair is not UTF-8")]
    NotUtf8,
    #[error("key {0:?} appears twice")]
    Duplicate(String),
    #[error("key {0:?} is longer than 63 bytes")]
    KeyTooLong(String),
}

/// Parses a data segment into ordered pairs. Trailing padding NULs are ignored.
pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(item).map_err(|_| TextError::NotUtf8)?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| TextError::NoEquals(s.to_string()))?;
        if k.len() > 63 {
            return Err(TextError::KeyTooLong(k.to_string()));
        }
        if out.iter().any(|(ok, _)| ok == k) {
            return Err(TextError::Duplicate(k.to_string()));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes pairs as a data segment.
pub fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let p = parse(b"A=1\0B=x=y\0\0").unwrap();
        assert_eq!(
            p,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(encode(&p), b"A=1\0B=x=y\0".to_vec());
        assert!(parse(b"A\0").is_err());
        assert!(parse(b"A=1\0A=2\0").is_err());
    }
}
