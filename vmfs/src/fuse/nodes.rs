//! The kernel's references to inodes: lookup counts (dropped by `forget`)
//! and the generation each node id was handed out with.
//!
//! Inode numbers are reused after a file is deleted — possibly by another
//! host, while this kernel still caches the old node. A request for a node
//! id whose inode now has another generation is answered ESTALE, so the
//! kernel drops its stale node instead of showing another file's data.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::fs::Attr;

#[derive(Debug, Clone, Copy)]
struct Node {
    nlookup: u64,
    generation: u64,
}

/// Node ids the kernel holds.
#[derive(Debug, Default)]
pub struct Nodes {
    map: Mutex<HashMap<u64, Node>>,
}

impl Nodes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel was handed `a` (lookup, create, mkdir, link, ...): one
    /// more reference, at `a`'s generation.
    pub fn remember(&self, a: &Attr) {
        let mut m = self.map();
        let n = m.entry(a.ino).or_insert(Node {
            nlookup: 0,
            generation: a.generation,
        });
        n.nlookup += 1;
        // Generations only grow (a reused number gets the next one). Two
        // session threads may answer lookups of one number concurrently,
        // the older file's reply last: the node stays at the newest.
        n.generation = n.generation.max(a.generation);
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut m = self.map();
        if let Some(node) = m.get_mut(&ino) {
            node.nlookup = node.nlookup.saturating_sub(n);
            if node.nlookup == 0 {
                m.remove(&ino);
            }
        }
    }

    /// Does `a` still belong to the node the kernel knows by its number?
    pub fn is_current(&self, a: &Attr) -> bool {
        match self.map().get(&a.ino) {
            Some(n) => n.generation == a.generation,
            None => true,
        }
    }

    /// Node ids the kernel holds references to.
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ino: u64, generation: u64) -> Attr {
        Attr {
            ino,
            generation,
            mode: libc::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            allocated: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            btime_ns: 0,
        }
    }

    #[test]
    fn forget_drops_a_node_after_its_last_reference() {
        let n = Nodes::default();
        n.remember(&attr(5, 1));
        n.remember(&attr(5, 1));
        n.forget(5, 1);
        assert_eq!(n.len(), 1);
        n.forget(5, 1);
        assert_eq!(n.len(), 0);
        n.forget(5, 3);
        assert_eq!(n.len(), 0);
    }

    #[test]
    fn a_reused_inode_number_is_stale() {
        let n = Nodes::default();
        n.remember(&attr(9, 1));
        assert!(n.is_current(&attr(9, 1)));
        assert!(!n.is_current(&attr(9, 2)));
        // Unknown to the kernel: nothing to compare with.
        assert!(n.is_current(&attr(10, 7)));
        // A fresh lookup hands out the new generation.
        n.remember(&attr(9, 2));
        assert!(n.is_current(&attr(9, 2)));
    }
}
