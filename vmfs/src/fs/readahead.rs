//! Prefetch for sequential readers. Each open file tracks where its reads
//! go; once several in a row land near each other, the device is asked
//! (`BlockDev::prefetch`, a hint) to start reading the extents the block
//! map gives for the next [`WINDOW`] bytes, so a cold sequential read does
//! not wait for the medium on every request. Holes and the end of the file
//! stop it. A hint changes no read's result.

/// How far ahead of a sequential reader the device is asked to read.
pub const WINDOW: u64 = 8 << 20;
/// A read this close to the last one continues the stream (the kernel's
/// async reads of one readahead window arrive out of order).
const NEAR: u64 = 4 << 20;
/// Reads in a row that make a stream (random readers rarely get there).
const RUN: u32 = 4;

/// Where an open file's reads have been going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStream {
    /// Start of the last read.
    last: u64,
    /// Furthest end read in this stream.
    next: u64,
    /// Reads in a row near each other.
    run: u32,
    /// End of what has been asked for ahead.
    ahead_to: u64,
}

impl ReadStream {
    /// Note a read of `off..off+len` of a file of `size` bytes; returns the
    /// range to prefetch, if any (at most [`WINDOW`] past the read, handed
    /// out in halves so each hint covers a few MiB).
    pub fn advance(&mut self, off: u64, len: u64, size: u64) -> Option<(u64, u64)> {
        let end = off.saturating_add(len);
        if self.run > 0 && off == self.last && end <= self.next {
            // The same read again (handed from one path to another).
            return None;
        }
        let near = self.run > 0
            && off.saturating_add(NEAR) >= self.last
            && off <= self.next.saturating_add(NEAR);
        if near {
            self.run = self.run.saturating_add(1);
            self.next = self.next.max(end);
        } else {
            self.run = 1;
            self.next = end;
            self.ahead_to = 0;
        }
        self.last = off;
        if self.run < RUN {
            return None;
        }
        let want = end.saturating_add(WINDOW).min(size);
        let from = self.ahead_to.max(end);
        if from >= want || self.ahead_to >= end.saturating_add(WINDOW / 2).min(size) {
            return None;
        }
        self.ahead_to = want;
        Some((from, want - from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn sequential_reads_prefetch_ahead_in_chunks() {
        let mut s = ReadStream::default();
        let size = 100 * M;
        let mut hints = Vec::new();
        for i in 0..40 {
            if let Some(h) = s.advance(i * M, M, size) {
                hints.push(h);
            }
        }
        assert_eq!(hints[0], (4 * M, WINDOW), "starts after {RUN} reads");
        // Contiguous, never overlapping, each at least half a window.
        for w in hints.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
            assert!(w[1].1 >= WINDOW / 2);
        }
        let last = hints.last().unwrap();
        assert!(last.0 + last.1 >= 40 * M + WINDOW / 2);
    }

    #[test]
    fn stops_at_end_of_file_and_repeats_are_ignored() {
        let mut s = ReadStream::default();
        let size = 6 * M;
        let mut got = Vec::new();
        for i in 0..6 {
            got.extend(s.advance(i * M, M, size));
            // The same read handed over to another thread.
            assert_eq!(s.advance(i * M, M, size), None);
        }
        assert_eq!(got, vec![(4 * M, 2 * M)]);
    }

    #[test]
    fn random_reads_do_not_prefetch() {
        let mut s = ReadStream::default();
        let size = 1 << 40;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (size / 4096)) * 4096;
            assert_eq!(s.advance(off, 4096, size), None);
        }
    }

    #[test]
    fn out_of_order_window_still_counts() {
        let mut s = ReadStream::default();
        let order = [0, 2, 1, 3, 5, 4, 6];
        let hints: Vec<_> = order
            .iter()
            .filter_map(|&i| s.advance(i * M, M, 100 * M))
            .collect();
        assert!(!hints.is_empty());
    }
}
