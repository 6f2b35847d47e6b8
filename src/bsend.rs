//! The attached buffer of buffered sends (`attach_buffer`, `bsend`, `detach_buffer`).
//!
//! As in MPI, a buffered send must complete locally, so its message is stored by the
//! runtime; the attached buffer bounds how much may be stored at once. Each message
//! is charged its length plus [`BSEND_OVERHEAD`] bytes, and the
//! charge is returned when the message is delivered. One attached buffer per rank,
//! shared by all of the rank's communicators.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};

use crate::sync::{poll_until, Liveness};
use crate::{Error, Result, BSEND_OVERHEAD};

/// Smallest stored copy whose allocation is kept for the next one. An
/// allocation this large comes fresh from the kernel (glibc maps blocks above
/// 128 KiB by default), and copying into untouched pages faults on every 4 KiB:
/// a 4 MiB buffered send took 2–10x a standard one's time, where its second
/// copy accounts for 2x. Smaller copies come
/// from the allocator's caches, where a pool would only add a lock.
const RECYCLED: usize = 64 * 1024;

#[derive(Debug)]
struct Attached {
    size: usize,
    pool: Arc<Pool>,
}

/// The attached buffer's accounting, shared with the messages stored in it.
#[derive(Debug, Default)]
struct Pool {
    /// Bytes charged to stored messages.
    used: AtomicUsize,
    /// Allocations of delivered copies, kept for reuse (see [`RECYCLED`]), and
    /// their total capacity: never more than the attached size.
    spare: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl Pool {
    /// A kept allocation of at least `len` bytes, the smallest there is.
    fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let (bufs, bytes) = &mut *spare;
        let i = (0..bufs.len())
            .filter(|&i| bufs[i].capacity() >= len)
            .min_by_key(|&i| bufs[i].capacity())?;
        let buf = bufs.swap_remove(i);
        *bytes -= buf.capacity();
        Some(buf)
    }

    /// Keeps `buf` for reuse if the kept total stays within `limit` bytes.
    fn keep(&self, buf: Vec<u8>, limit: usize) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let (bufs, bytes) = &mut *spare;
        if *bytes + buf.capacity() <= limit {
            *bytes += buf.capacity();
            bufs.push(buf);
        }
    }
}

/// A rank's attached buffer (or none).
#[derive(Debug, Default)]
pub(crate) struct AttachedBuffer {
    attached: Mutex<Option<Attached>>,
}

/// Space reserved in an attached buffer; given back when dropped (the message
/// was delivered or discarded).
#[derive(Debug)]
pub(crate) struct BsendSpace {
    pool: Arc<Pool>,
    bytes: usize,
    /// The attached buffer's size.
    limit: usize,
}

impl Drop for BsendSpace {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Release);
    }
}

impl BsendSpace {
    /// Stores a copy of `data` in this space: the message a buffered send
    /// leaves behind. Large copies reuse the allocations of delivered ones.
    pub fn store(self, data: &[u8]) -> StoredCopy {
        let kept = (data.len() >= RECYCLED).then(|| self.pool.take(data.len()));
        let data = match kept.flatten() {
            Some(mut buf) => {
                buf.clear();
                buf.extend_from_slice(data);
                buf
            }
            None => data.to_vec(),
        };
        StoredCopy { data, space: self }
    }
}

/// A buffered send's message, stored until it is delivered; dropping it gives
/// the space back (and keeps a large allocation for the next copy).
#[derive(Debug)]
pub(crate) struct StoredCopy {
    data: Vec<u8>,
    space: BsendSpace,
}

impl StoredCopy {
    /// The message.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for StoredCopy {
    fn drop(&mut self) {
        if self.data.capacity() >= RECYCLED {
            // What the attached buffer's other messages hold is not free to
            // keep: stored and kept together stay within the attached size.
            let pool = &self.space.pool;
            let others = pool.used.load(Acquire).saturating_sub(self.space.bytes);
            let buf = std::mem::take(&mut self.data);
            pool.keep(buf, self.space.limit.saturating_sub(others));
        }
    }
}

impl AttachedBuffer {
    pub fn attach(&self, size: usize) -> Result<()> {
        let mut a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = a.as_ref() {
            return Err(Error::BufferAlreadyAttached { size: old.size });
        }
        *a = Some(Attached {
            size,
            pool: Arc::default(),
        });
        Ok(())
    }

    /// Reserves room for a message of `len` bytes, or says how much is missing.
    pub fn reserve(&self, len: usize) -> Result<BsendSpace> {
        let a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let a = a.as_ref().ok_or(Error::NoBufferAttached)?;
        let needed = len.saturating_add(BSEND_OVERHEAD);
        a.pool
            .used
            .fetch_update(AcqRel, Acquire, |used| {
                (needed <= a.size - used).then_some(used + needed)
            })
            .map_err(|used| Error::BufferExhausted {
                needed,
                free: a.size - used,
            })?;
        Ok(BsendSpace {
            pool: a.pool.clone(),
            bytes: needed,
            limit: a.size,
        })
    }

    /// Bytes free in the attached buffer, `None` when none is attached.
    pub fn free(&self) -> Option<usize> {
        let a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        a.as_ref().map(|a| a.size - a.pool.used.load(Acquire))
    }

    /// Detaches the buffer once every message stored in it is delivered; returns its size.
    /// `tick` runs between polls: the rank's own duties while it waits (its
    /// mailbox drained, see `Shm::wait_sync`).
    pub fn detach(&self, live: &Liveness, mut tick: impl FnMut()) -> Result<usize> {
        let a = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(Error::NoBufferAttached)?;
        let drained = poll_until(live, || {
            tick();
            (a.pool.used.load(Acquire) == 0).then_some(())
        });
        if let Err(e) = drained {
            // Leave it attached: its messages are still in flight.
            *self.attached.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
            return Err(e);
        }
        Ok(a.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(b: &AttachedBuffer) -> usize {
        let a = b.attached.lock().unwrap();
        let pool = &a.as_ref().expect("attached").pool;
        let kept = pool.spare.lock().unwrap().1;
        kept
    }

    #[test]
    fn a_delivered_large_copy_lends_its_allocation_to_the_next() {
        let b = AttachedBuffer::default();
        b.attach(2 * (RECYCLED + BSEND_OVERHEAD)).unwrap();
        let first = b.reserve(RECYCLED).unwrap().store(&[7; RECYCLED]);
        let at = first.bytes().as_ptr();
        drop(first);
        assert_eq!(kept(&b), RECYCLED);
        assert_eq!(b.free(), Some(2 * (RECYCLED + BSEND_OVERHEAD)));
        let second = b.reserve(RECYCLED).unwrap().store(&[9; RECYCLED]);
        assert_eq!(second.bytes().as_ptr(), at, "the kept allocation is reused");
        assert_eq!(second.bytes(), &[9; RECYCLED][..]);
        assert_eq!(kept(&b), 0);
    }

    #[test]
    fn small_copies_are_not_kept() {
        let b = AttachedBuffer::default();
        b.attach(1 << 20).unwrap();
        drop(b.reserve(100).unwrap().store(&[1; 100]));
        assert_eq!(kept(&b), 0);
        assert_eq!(b.free(), Some(1 << 20));
    }

    #[test]
    fn stored_and_kept_bytes_stay_within_the_attached_size() {
        // Room for three messages of R, not for four.
        let size = 3 * (RECYCLED + BSEND_OVERHEAD) + RECYCLED / 2;
        let b = AttachedBuffer::default();
        b.attach(size).unwrap();
        // A 2R allocation kept, then lent to a message of R: 2R held for R charged.
        drop(b.reserve(2 * RECYCLED).unwrap().store(&[1; 2 * RECYCLED]));
        let big = b.reserve(RECYCLED).unwrap().store(&[2; RECYCLED]);
        let other = b.reserve(RECYCLED).unwrap().store(&[3; RECYCLED]);
        let third = b.reserve(RECYCLED).unwrap().store(&[4; RECYCLED]);
        // `other` and `third` hold 2(R + overhead) of the attached size: the 2R
        // allocation would take the kept total past what is left.
        drop(big);
        assert_eq!(kept(&b), 0, "2R does not fit beside the other two");
        drop(other);
        assert_eq!(kept(&b), RECYCLED);
        drop(third);
        assert_eq!(kept(&b), 2 * RECYCLED);
        assert!(kept(&b) <= size);
    }
}
