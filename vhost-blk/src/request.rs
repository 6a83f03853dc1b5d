//! One virtio-blk request: parse the descriptor chain, run it against the
//! backend, write the status byte.
//!
//! Request layout (virtio 1.2 §5.2.6): a 16-byte device-readable header
//! `{ type: le32, reserved: le32, sector: le64 }`, then the data (readable
//! for OUT / DISCARD / WRITE_ZEROES, writable for IN / GET_ID), then one
//! device-writable status byte — the last writable byte of the chain.

use std::io::{self, Read, Write};

use virtio_bindings::bindings::virtio_blk::*;
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{GuestMemoryLoadGuard, GuestMemoryMmap};

use crate::backend::{BackendError, BlockBackend};
use crate::config::{MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, MAX_IO_BYTES};

/// A chain popped from a queue of this device.
pub(crate) type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap<()>>>;

/// Bytes of the request header.
const HEADER_LEN: usize = 16;
/// Bytes of one discard / write-zeroes segment.
const SEGMENT_LEN: usize = 16;

/// Why a request failed; logged with the queue and head descriptor, and
/// turned into the status byte by [`RequestError::status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request header is {len} device-readable bytes, expected at least 16")]
    ShortHeader { len: usize },
    #[error("{op} at sector {sector}: {len} unexpected device-{dir} data bytes")]
    UnexpectedData {
        op: &'static str,
        sector: u64,
        len: usize,
        dir: &'static str,
    },
    #[error("{op} at sector {sector}: data length {len} is not a multiple of 512")]
    Unaligned {
        op: &'static str,
        sector: u64,
        len: usize,
    },
    #[error(
        "{op} at sector {sector} (+{len} bytes) is beyond the end of the {capacity}-byte disk"
    )]
    OutOfRange {
        op: &'static str,
        sector: u64,
        len: u64,
        capacity: u64,
    },
    #[error("{op} at sector {sector} refused: the disk is read-only")]
    ReadOnly { op: &'static str, sector: u64 },
    #[error("{op} at sector {sector}: {len} bytes exceeds the {max}-byte per-request limit")]
    TooLarge {
        op: &'static str,
        sector: u64,
        len: usize,
        max: usize,
    },
    #[error("{op}: segment list of {len} bytes is not a non-empty run of 16-byte segments")]
    BadSegments { op: &'static str, len: usize },
    #[error("{op}: {count} segments exceeds the limit of {max}")]
    TooManySegments {
        op: &'static str,
        count: usize,
        max: u32,
    },
    #[error("{op} at sector {sector}: {sectors} sectors exceeds the per-segment limit of {max}")]
    SegmentTooLarge {
        op: &'static str,
        sector: u64,
        sectors: u32,
        max: u32,
    },
    #[error("{op} at sector {sector}: flags {flags:#x} not supported")]
    UnsupportedFlags {
        op: &'static str,
        sector: u64,
        flags: u32,
    },
    #[error("request type {0} is not supported")]
    UnsupportedType(u32),
    #[error("{op}: guest memory access failed: {source}")]
    GuestMemory {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
}

impl RequestError {
    /// The virtio-blk status byte reported for this failure.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::UnsupportedType(_)
            | RequestError::UnsupportedFlags { .. }
            | RequestError::Backend(BackendError::Unsupported { .. }) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// What a request runs against.
pub(crate) struct RequestContext<'a> {
    pub backend: &'a dyn BlockBackend,
    pub capacity: u64,
    pub read_only: bool,
    pub serial: &'a [u8; VIRTIO_BLK_ID_BYTES as usize],
    pub queue: u16,
}

/// Process one chain; returns the number of bytes written into the chain's
/// device-writable buffers (data + status), the used length to report.
pub(crate) fn process(ctx: &RequestContext<'_>, chain: Chain) -> u32 {
    let head = chain.head_index();
    let mem = chain.memory();
    let reader = Reader::new(mem, chain.clone());
    let writer = Writer::new(mem, chain.clone());
    let (mut reader, mut writer) = match (reader, writer) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                queue = ctx.queue,
                head,
                "virtio-blk: bad descriptor chain: {e}; returned without status"
            );
            return 0;
        }
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        tracing::warn!(
            queue = ctx.queue,
            head,
            "virtio-blk: chain has no device-writable status byte; returned without status"
        );
        return 0;
    }
    let mut status_writer = match writer.split_at(writable - 1) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                queue = ctx.queue,
                head,
                "virtio-blk: cannot address status byte: {e}"
            );
            return 0;
        }
    };
    let (status, written) = match execute(ctx, &mut reader, &mut writer) {
        Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
        Err(e) => {
            tracing::warn!(queue = ctx.queue, head, "virtio-blk: {e}");
            (e.status(), 0)
        }
    };
    if let Err(e) = status_writer.write_all(&[status]) {
        tracing::warn!(
            queue = ctx.queue,
            head,
            "virtio-blk: cannot write status byte: {e}"
        );
        return written as u32;
    }
    written as u32 + 1
}

/// Run the request; Ok(bytes of data written to the guest).
fn execute(
    ctx: &RequestContext<'_>,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
) -> Result<usize, RequestError> {
    if reader.available_bytes() < HEADER_LEN {
        return Err(RequestError::ShortHeader {
            len: reader.available_bytes(),
        });
    }
    let mut header = [0u8; HEADER_LEN];
    reader
        .read_exact(&mut header)
        .map_err(|source| RequestError::GuestMemory {
            op: "header",
            source,
        })?;
    let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    match kind {
        VIRTIO_BLK_T_IN => read(ctx, sector, reader, writer),
        VIRTIO_BLK_T_OUT => write(ctx, sector, reader, writer),
        VIRTIO_BLK_T_FLUSH => {
            no_data("flush", sector, reader, writer)?;
            ctx.backend.flush()?;
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            no_readable("get-id", sector, reader)?;
            // Up to 20 bytes, zero padded; not NUL terminated when all 20 are used.
            let n = writer.available_bytes().min(ctx.serial.len());
            writer
                .write_all(&ctx.serial[..n])
                .map_err(|source| RequestError::GuestMemory {
                    op: "get-id",
                    source,
                })?;
            Ok(n)
        }
        VIRTIO_BLK_T_DISCARD => ranges(ctx, "discard", sector, reader, writer),
        VIRTIO_BLK_T_WRITE_ZEROES => ranges(ctx, "write-zeroes", sector, reader, writer),
        other => Err(RequestError::UnsupportedType(other)),
    }
}

fn no_readable(op: &'static str, sector: u64, reader: &Reader<'_>) -> Result<(), RequestError> {
    match reader.available_bytes() {
        0 => Ok(()),
        len => Err(RequestError::UnexpectedData {
            op,
            sector,
            len,
            dir: "readable",
        }),
    }
}

fn no_writable(op: &'static str, sector: u64, writer: &Writer<'_>) -> Result<(), RequestError> {
    match writer.available_bytes() {
        0 => Ok(()),
        len => Err(RequestError::UnexpectedData {
            op,
            sector,
            len,
            dir: "writable",
        }),
    }
}

fn no_data(
    op: &'static str,
    sector: u64,
    r: &Reader<'_>,
    w: &Writer<'_>,
) -> Result<(), RequestError> {
    no_readable(op, sector, r)?;
    no_writable(op, sector, w)
}

/// Byte offset of a data transfer of `len` bytes at `sector`, checked
/// against alignment, the per-request limit and the capacity.
fn data_range(
    ctx: &RequestContext<'_>,
    op: &'static str,
    sector: u64,
    len: usize,
) -> Result<u64, RequestError> {
    if len % 512 != 0 {
        return Err(RequestError::Unaligned { op, sector, len });
    }
    if len > MAX_IO_BYTES {
        return Err(RequestError::TooLarge {
            op,
            sector,
            len,
            max: MAX_IO_BYTES,
        });
    }
    in_capacity(ctx, op, sector, len as u64)
}

fn in_capacity(
    ctx: &RequestContext<'_>,
    op: &'static str,
    sector: u64,
    len: u64,
) -> Result<u64, RequestError> {
    let out_of_range = || RequestError::OutOfRange {
        op,
        sector,
        len,
        capacity: ctx.capacity,
    };
    let offset = sector.checked_mul(512).ok_or_else(out_of_range)?;
    match offset.checked_add(len) {
        Some(end) if end <= ctx.capacity => Ok(offset),
        _ => Err(out_of_range()),
    }
}

fn read(
    ctx: &RequestContext<'_>,
    sector: u64,
    reader: &Reader<'_>,
    writer: &mut Writer<'_>,
) -> Result<usize, RequestError> {
    no_readable("read", sector, reader)?;
    let len = writer.available_bytes();
    let offset = data_range(ctx, "read", sector, len)?;
    let mut buf = vec![0u8; len];
    ctx.backend.read_at(offset, &mut buf)?;
    writer
        .write_all(&buf)
        .map_err(|source| RequestError::GuestMemory { op: "read", source })?;
    Ok(len)
}

fn write(
    ctx: &RequestContext<'_>,
    sector: u64,
    reader: &mut Reader<'_>,
    writer: &Writer<'_>,
) -> Result<usize, RequestError> {
    no_writable("write", sector, writer)?;
    if ctx.read_only {
        return Err(RequestError::ReadOnly {
            op: "write",
            sector,
        });
    }
    let len = reader.available_bytes();
    let offset = data_range(ctx, "write", sector, len)?;
    let mut buf = vec![0u8; len];
    reader
        .read_exact(&mut buf)
        .map_err(|source| RequestError::GuestMemory {
            op: "write",
            source,
        })?;
    ctx.backend.write_at(offset, &buf)?;
    Ok(0)
}

/// DISCARD / WRITE_ZEROES: a list of `{ sector: le64, num_sectors: le32,
/// flags: le32 }` segments. All segments are validated before any is run,
/// so a bad list changes nothing.
fn ranges(
    ctx: &RequestContext<'_>,
    op: &'static str,
    sector: u64,
    reader: &mut Reader<'_>,
    writer: &Writer<'_>,
) -> Result<usize, RequestError> {
    no_writable(op, sector, writer)?;
    let len = reader.available_bytes();
    if len == 0 || len % SEGMENT_LEN != 0 {
        return Err(RequestError::BadSegments { op, len });
    }
    let count = len / SEGMENT_LEN;
    if count > MAX_DISCARD_SEGMENTS as usize {
        return Err(RequestError::TooManySegments {
            op,
            count,
            max: MAX_DISCARD_SEGMENTS,
        });
    }
    let mut raw = vec![0u8; len];
    reader
        .read_exact(&mut raw)
        .map_err(|source| RequestError::GuestMemory { op, source })?;
    let unmap_allowed = op == "write-zeroes";
    let mut segments = Vec::with_capacity(count);
    for seg in raw.chunks_exact(SEGMENT_LEN) {
        let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
        let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
        let known = if unmap_allowed {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if flags & !known != 0 {
            return Err(RequestError::UnsupportedFlags { op, sector, flags });
        }
        if sectors > MAX_DISCARD_SECTORS {
            return Err(RequestError::SegmentTooLarge {
                op,
                sector,
                sectors,
                max: MAX_DISCARD_SECTORS,
            });
        }
        let len = u64::from(sectors) * 512;
        let offset = in_capacity(ctx, op, sector, len)?;
        segments.push((offset, len, flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0));
    }
    if ctx.read_only {
        return Err(RequestError::ReadOnly { op, sector });
    }
    for (offset, len, unmap) in segments {
        if len == 0 {
            continue;
        }
        if unmap_allowed {
            ctx.backend.write_zeroes(offset, len, unmap)?;
        } else {
            ctx.backend.discard(offset, len)?;
        }
    }
    Ok(0)
}
