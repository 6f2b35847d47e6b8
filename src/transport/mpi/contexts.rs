//! The lanes of each courier context, looked up on every message without a
//! lock.
//!
//! Contexts are numbered job-wide and only ever added, so the table is a
//! list of segments (64 entries, then 128, 256, …), each allocated when its
//! first context is published and never moved: a lookup is two `OnceLock`
//! loads and hands out a plain reference. A lock and a hash per lookup (the
//! `RwLock<HashMap>` this replaces) cost a ready send's ping-pong tens of ns
//! per message, three or four lookups per round.

use std::sync::OnceLock;

/// Entries of the first segment; segment `k` holds `FIRST << k`.
const FIRST: usize = 64;
/// Enough segments for every `u32` index.
const SEGMENTS: usize = 27;

/// A write-once table indexed by `u32`, whose entries stay put.
pub(super) struct Table<T> {
    segments: [OnceLock<Box<[OnceLock<T>]>>; SEGMENTS],
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// (segment, offset in it) of index `i`.
fn place(i: u32) -> (usize, usize) {
    let j = i as usize / FIRST + 1;
    let k = j.ilog2() as usize;
    (k, i as usize - FIRST * ((1 << k) - 1))
}

impl<T> Table<T> {
    /// The entry at `i`, once published.
    pub fn get(&self, i: u32) -> Option<&T> {
        let (k, at) = place(i);
        self.segments[k].get()?[at].get()
    }

    /// Publishes `value` at `i`; `false` (and `value` dropped) when `i` was
    /// already taken.
    pub fn set(&self, i: u32, value: T) -> bool {
        let (k, at) = place(i);
        let segment =
            self.segments[k].get_or_init(|| (0..FIRST << k).map(|_| OnceLock::new()).collect());
        segment[at].set(value).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_cover_u32_without_overlap() {
        assert_eq!(place(0), (0, 0));
        assert_eq!(place(63), (0, 63));
        assert_eq!(place(64), (1, 0));
        assert_eq!(place(191), (1, 127));
        assert_eq!(place(192), (2, 0));
        let (k, at) = place(u32::MAX);
        assert!(k < SEGMENTS && at < FIRST << k);
        // Consecutive indices step through each segment and on to the next.
        for i in 0..5000u32 {
            let (k, at) = place(i);
            let (k2, at2) = place(i + 1);
            assert!((k2, at2) == (k, at + 1) || (k2, at2, at + 1) == (k + 1, 0, FIRST << k));
        }
    }

    #[test]
    fn entries_are_written_once_and_read_back() {
        let t = Table::default();
        assert_eq!(t.get(5), None);
        assert!(t.set(5, "a"));
        assert!(!t.set(5, "b"));
        assert!(t.set(1000, "c"));
        assert_eq!(
            (t.get(5), t.get(6), t.get(1000)),
            (Some(&"a"), None, Some(&"c"))
        );
    }
}
