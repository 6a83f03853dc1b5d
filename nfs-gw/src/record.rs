//! RPC record marking over TCP (RFC 5531 §11): a record is one or more
//! fragments, each preceded by a 4-byte header whose top bit marks the last
//! fragment and whose low 31 bits give the fragment length.
//!
//! The reader enforces a maximum record size *before* reading or reserving
//! any fragment body, so a hostile length costs nothing but a closed
//! connection.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Limit on fragments per record: stops a stream of empty fragments from
/// keeping a record open forever.
pub const MAX_FRAGMENTS: usize = 4096;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("record marking: record of at least {len} bytes exceeds the maximum {max}")]
    TooLarge { len: u64, max: usize },
    #[error("record marking: more than {MAX_FRAGMENTS} fragments in one record")]
    TooManyFragments,
    #[error("record marking: connection closed inside a record ({got} bytes in)")]
    Truncated { got: usize },
    #[error("record marking: i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one whole record into `buf` (cleared first). Returns `Ok(false)`
/// on a clean end of stream between records.
pub async fn read_record<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, RecordError> {
    buf.clear();
    let mut fragments = 0usize;
    loop {
        let mut hdr = [0u8; 4];
        // A clean EOF is only acceptable before the first fragment header.
        let mut got = 0;
        while got < 4 {
            let n = r.read(&mut hdr[got..]).await?;
            if n == 0 {
                if got == 0 && fragments == 0 {
                    return Ok(false);
                }
                return Err(RecordError::Truncated { got: buf.len() });
            }
            got += n;
        }
        let word = u32::from_be_bytes(hdr);
        let len = (word & !LAST_FRAGMENT) as usize;
        let total = buf.len() as u64 + len as u64;
        if total > max as u64 {
            return Err(RecordError::TooLarge { len: total, max });
        }
        fragments += 1;
        if fragments > MAX_FRAGMENTS {
            return Err(RecordError::TooManyFragments);
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        if let Err(e) = r.read_exact(&mut buf[start..]).await {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Err(RecordError::Truncated { got: start });
            }
            return Err(e.into());
        }
        if word & LAST_FRAGMENT != 0 {
            return Ok(true);
        }
    }
}

/// Writes `body` as a single-fragment record.
pub async fn write_record<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
) -> Result<(), std::io::Error> {
    let hdr = (body.len() as u32 & !LAST_FRAGMENT) | LAST_FRAGMENT;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&hdr.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(last: bool, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() as u32) | if last { LAST_FRAGMENT } else { 0 })
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn reassembles_fragments() {
        let mut wire = frag(false, b"abc");
        wire.extend(frag(false, b""));
        wire.extend(frag(true, b"defg"));
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(read_record(&mut r, &mut buf, 100).await.unwrap());
        assert_eq!(buf, b"abcdefg");
        assert!(!read_record(&mut r, &mut buf, 100).await.unwrap());
    }

    #[tokio::test]
    async fn rejects_oversized_and_truncated() {
        let wire = (0x7fff_ffffu32 | LAST_FRAGMENT).to_be_bytes();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_record(&mut r, &mut buf, 1 << 20).await,
            Err(RecordError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
        let mut wire = frag(false, &[0u8; 600]);
        wire.extend(frag(true, &[0u8; 600]));
        let mut r = &wire[..];
        assert!(matches!(
            read_record(&mut r, &mut buf, 1000).await,
            Err(RecordError::TooLarge { .. })
        ));
        let wire = frag(true, b"abcdef");
        let mut r = &wire[..5];
        assert!(matches!(
            read_record(&mut r, &mut buf, 100).await,
            Err(RecordError::Truncated { .. })
        ));
        let mut r = &wire[..2];
        assert!(matches!(
            read_record(&mut r, &mut buf, 100).await,
            Err(RecordError::Truncated { .. })
        ));
    }
}
