//! The attached buffer of buffered sends (`attach_buffer`, `bsend`, `detach_buffer`).
//!
//! As in MPI, a buffered send must complete locally, so its message is stored by the
//! runtime; the attached buffer bounds how much may be stored at once. Each message
//! is charged its length plus [`BSEND_OVERHEAD`](crate::BSEND_OVERHEAD) bytes, and the
//! charge is returned when the message is delivered. One attached buffer per rank,
//! shared by all of the rank's communicators.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};

use crate::sync::{poll_until, Liveness};
use crate::{Error, Result, BSEND_OVERHEAD};

#[derive(Debug)]
struct Attached {
    size: usize,
    used: Arc<AtomicUsize>,
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
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for BsendSpace {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Release);
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
            used: Arc::new(AtomicUsize::new(0)),
        });
        Ok(())
    }

    /// Reserves room for a message of `len` bytes, or says how much is missing.
    pub fn reserve(&self, len: usize) -> Result<BsendSpace> {
        let a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let a = a.as_ref().ok_or(Error::NoBufferAttached)?;
        let needed = len.saturating_add(BSEND_OVERHEAD);
        a.used
            .fetch_update(AcqRel, Acquire, |used| {
                (needed <= a.size - used).then_some(used + needed)
            })
            .map_err(|used| Error::BufferExhausted {
                needed,
                free: a.size - used,
            })?;
        Ok(BsendSpace {
            used: a.used.clone(),
            bytes: needed,
        })
    }

    /// Bytes free in the attached buffer, `None` when none is attached.
    pub fn free(&self) -> Option<usize> {
        let a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        a.as_ref().map(|a| a.size - a.used.load(Acquire))
    }

    /// Detaches the buffer once every message stored in it is delivered; returns its size.
    pub fn detach(&self, live: &Liveness) -> Result<usize> {
        let a = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(Error::NoBufferAttached)?;
        let drained = poll_until(live, || (a.used.load(Acquire) == 0).then_some(()));
        if let Err(e) = drained {
            // Leave it attached: its messages are still in flight.
            *self.attached.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
            return Err(e);
        }
        Ok(a.size)
    }
}
