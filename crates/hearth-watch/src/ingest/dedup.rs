//! The window of recently stored event ids that deduplication checks.
//!
//! Ids are kept as 128-bit keyed hashes (two SipHash passes with random
//! per-process keys), which bounds memory to about 40 bytes per id whatever
//! the id's length; with 128 bits a false "duplicate" would need some 2^64
//! ids. The keys change with every process, which is harmless: the window is
//! rebuilt from the segments on every open and never persisted.
//!
//! The window covers whole segments: the ids stored in the newest
//! `max_segments` segments (the active one included). When a new segment
//! starts beyond that, the oldest segment's ids are forgotten, so an event
//! retried after its segment left the window is stored again.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// A 128-bit hash of an event id.
pub(crate) type IdHash = u128;

/// Hashes event ids; shared by every appender without locking.
#[derive(Debug)]
pub(crate) struct IdHasher {
    first: RandomState,
    second: RandomState,
}

impl IdHasher {
    pub(crate) fn new() -> Self {
        IdHasher {
            first: RandomState::new(),
            second: RandomState::new(),
        }
    }

    pub(crate) fn hash(&self, id: &str) -> IdHash {
        (u128::from(self.first.hash_one(id)) << 64) | u128::from(self.second.hash_one(id))
    }
}

/// The set's own hasher: the keys are already uniform hashes, so their low
/// bits serve as the table hash without a second pass.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

#[derive(Debug)]
pub(crate) struct DedupWindow {
    ids: HashSet<IdHash, BuildHasherDefault<PassThrough>>,
    /// Segments in the window, oldest first, with the ids stored in each.
    segments: VecDeque<(u64, Vec<IdHash>)>,
    max_segments: usize,
}

impl DedupWindow {
    pub(crate) fn new(max_segments: usize) -> Self {
        DedupWindow {
            ids: HashSet::default(),
            segments: VecDeque::new(),
            max_segments: max_segments.max(1),
        }
    }

    /// Number of ids in the window, including ones not yet committed.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Claims `id`: true if it was not in the window (the caller stores the
    /// event and then [`commit`](Self::commit)s the id to its segment), false
    /// if it is a duplicate. A claim whose write fails is never given back:
    /// the log stops, and reopening rebuilds the window from disk.
    pub(crate) fn claim(&mut self, id: IdHash) -> bool {
        self.ids.insert(id)
    }

    /// Records that claimed `ids` are stored in segment `seq`.
    pub(crate) fn commit(&mut self, seq: u64, ids: Vec<IdHash>) {
        match self.segments.back_mut() {
            Some((last, stored)) if *last == seq => stored.extend(ids),
            _ => {
                self.start_segment(seq);
                if let Some((_, stored)) = self.segments.back_mut() {
                    *stored = ids;
                }
            }
        }
    }

    /// Opens segment `seq` in the window, forgetting the ids of segments
    /// that fall out of it.
    pub(crate) fn start_segment(&mut self, seq: u64) {
        self.segments.push_back((seq, Vec::new()));
        while self.segments.len() > self.max_segments {
            if let Some((_, old)) = self.segments.pop_front() {
                for id in old {
                    self.ids.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_leave_the_window_with_their_segment() {
        let hasher = IdHasher::new();
        let (a, b, c) = (hasher.hash("a"), hasher.hash("b"), hasher.hash("c"));
        assert_ne!(a, b);
        let mut window = DedupWindow::new(2);
        window.start_segment(1);
        assert!(window.claim(a));
        assert!(!window.claim(a));
        window.commit(1, vec![a]);
        window.start_segment(2);
        assert!(window.claim(b));
        window.commit(2, vec![b]);
        assert!(!window.claim(a), "segment 1 is still in the window");
        window.start_segment(3);
        assert!(window.claim(a), "segment 1 left the window");
        assert!(!window.claim(b));
        assert!(window.claim(c));
        assert!(!window.claim(c));
    }
}
