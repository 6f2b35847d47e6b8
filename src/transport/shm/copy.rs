//! Copies that both ends of a large message share.
//!
//! A rendezvous message is copied once, by whichever side matches it: the
//! sender into a posted receive, or the receiver out of a queued send. The
//! other side meanwhile spins in its wait. One core copying into memory that
//! is not in its cache reaches about half of what two do: on this project's
//! 2-core test VM, 1 MiB into each of 64 buffers ran at 6–7.5 GB/s from one
//! thread and 12–14 GB/s from two. So a copy of at least [`SHARED_MIN`] bytes
//! is cut into [`CHUNK`]-byte chunks and offered to the waiting side through
//! its completion ([`Completion::offer`]); each side claims chunks until none
//! is left. A waiter that has gone to sleep never helps, and the copier then
//! copies every chunk itself, as without sharing.
//!
//! The copier returns only once every claimed chunk is finished, so neither
//! buffer is let go (the receive completed, the sender released) while the
//! helper is still in it.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

use crate::sync::Completion;

/// Smallest copy that is shared.
const SHARED_MIN: usize = 128 * 1024;

/// Bytes per claim.
const CHUNK: usize = 32 * 1024;

/// One copy in chunks, claimed by whoever takes part.
#[derive(Debug)]
pub(crate) struct SharedCopy {
    src: *const u8,
    dst: *mut u8,
    len: usize,
    /// The next chunk to claim (past the last: none left).
    next: AtomicUsize,
    /// Chunks copied.
    finished: AtomicUsize,
}

// SAFETY: the pointers are only dereferenced for a chunk claimed by one thread
// alone (`help`), and `copy` keeps both buffers valid until every claimed
// chunk is finished; a `SharedCopy` kept longer (a helper's clone) can claim
// nothing more.
unsafe impl Send for SharedCopy {}
// SAFETY: as above; the counters are atomics.
unsafe impl Sync for SharedCopy {}

impl SharedCopy {
    fn chunks(&self) -> usize {
        self.len.div_ceil(CHUNK)
    }

    /// Claims and copies chunks until none is left.
    pub fn help(&self) {
        let chunks = self.chunks();
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= chunks {
                return;
            }
            let start = i * CHUNK;
            let len = CHUNK.min(self.len - start);
            // SAFETY: chunk `i` is this call's alone (the fetch_add above), lies
            // within both buffers, which do not overlap (`copy`'s contract), and
            // both stay valid until `finished` counts it: `copy` waits for that.
            unsafe {
                std::ptr::copy_nonoverlapping(self.src.add(start), self.dst.add(start), len);
            }
            self.finished.fetch_add(1, Release);
        }
    }
}

/// Copies `src` to `dst`, with the help of the thread waiting on `waiter` when
/// the copy is large (see the module docs).
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes, not overlap `src`, and
/// not be accessed by anyone else during the call.
pub(crate) unsafe fn copy(src: &[u8], dst: *mut u8, waiter: &Completion) {
    if src.len() < SHARED_MIN {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        return;
    }
    let shared = Arc::new(SharedCopy {
        src: src.as_ptr(),
        dst,
        len: src.len(),
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
    });
    waiter.offer(&shared);
    shared.help();
    waiter.withdraw_offer();
    // A helper finishes the chunk it holds without waiting for anything.
    let mut spins = 0u32;
    while shared.finished.load(Acquire) < shared.chunks() {
        spins += 1;
        if spins % 1024 == 0 {
            std::thread::yield_now(); // the helper may have been descheduled
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_copy_with_a_helper_copies_every_byte_once() {
        let len = 5 * CHUNK + 123; // a short last chunk
        let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; len];
        let waiter = Completion::shared();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let (waiter, stop) = (&waiter, &stop);
            // The waiting side: helps whenever a copy is offered.
            s.spawn(move || {
                while !stop.load(Acquire) {
                    waiter.help();
                    std::hint::spin_loop();
                }
            });
            // SAFETY: `dst` is ours, `len` bytes long, and apart from `src`.
            unsafe { copy(&src, dst.as_mut_ptr(), waiter) };
            stop.store(true, Release);
        });
        assert!(dst == src);
        assert!(
            !waiter.has_offer(),
            "the offer is withdrawn when the copy returns"
        );
    }

    #[test]
    fn a_copy_nobody_helps_is_done_by_the_copier() {
        let src = vec![7u8; SHARED_MIN + 1];
        let mut dst = vec![0u8; SHARED_MIN + 1];
        // SAFETY: as above.
        unsafe { copy(&src, dst.as_mut_ptr(), &Completion::shared()) };
        assert!(dst == src);
    }
}
