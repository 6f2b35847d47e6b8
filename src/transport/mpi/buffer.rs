//! The process's MPI buffer for `MPI_Bsend` and `MPI_Ibsend`.
//!
//! MPI has one buffer per process. Courier gives each rank its own
//! `attach_buffer` (accounted in [`crate::bsend`]), so the process's MPI buffer
//! is the sum of its ranks' buffers. Any rank's `attach_buffer` or
//! `detach_buffer` resizes it: `MPI_Buffer_detach`, then `MPI_Buffer_attach`
//! of the new size. An `MPI_Bsend` in between fails with `MPI_ERR_BUFFER`
//! (seen under `mpirun` with one thread resizing while another sent 16 KiB
//! messages), so buffered sends hold a read lock across their MPI call and a
//! resize holds the write lock. Neither side blocks while it waits: it keeps
//! calling `progress`, because a courier receive is matched by its own
//! rank-thread (see the module above), and a detach waits for the delivery of
//! what the buffer holds.

use std::ffi::{c_int, c_void};
use std::sync::{RwLock, RwLockReadGuard, TryLockError};

use mpi::ffi;

use super::check;
use crate::transport::mpi_count as count;
use crate::Result;

/// The attached bytes, and each thread's share of them.
type Attached = (Vec<u8>, Vec<usize>);

/// The process's MPI buffer, shared by its rank-threads.
pub(super) struct ProcessBuffer {
    lock: RwLock<Attached>,
}

impl ProcessBuffer {
    /// No buffer attached, for a process of `threads` rank-threads.
    pub fn new(threads: usize) -> Self {
        ProcessBuffer {
            lock: RwLock::new((Vec::new(), vec![0; threads])),
        }
    }

    /// Keeps the buffer attached while a buffered send hands it a message.
    /// Waiting for a resize keeps calling `progress`.
    pub fn attached(
        &self,
        progress: impl FnMut() -> Result<()>,
    ) -> Result<RwLockReadGuard<'_, Attached>> {
        lock_progressing(|| self.lock.try_read(), progress)
    }

    /// Sets thread `t`'s share to `bytes` and attaches the new sum in place of
    /// the old buffer.
    ///
    /// Detaching waits until MPI has delivered what the buffer holds, and
    /// delivering a large message takes its receiver's match, which a courier
    /// receive makes from its own thread. So `MPI_Buffer_detach` runs on a
    /// helper thread while this one keeps calling `progress` (matching its own
    /// receives, answering ready-send queries): two ranks that had posted
    /// their receives, `bsend` to each other and then detach would otherwise
    /// deadlock, which MPI does not let them do. `progress` failing (a failed
    /// rank of this process, whose abort is ending the job) ends the wait with
    /// its error once the detach returns.
    pub fn resize(
        &self,
        t: usize,
        bytes: usize,
        mut progress: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut guard = lock_progressing(|| self.lock.try_write(), &mut progress)?;
        let (buf, sizes) = &mut *guard;
        sizes[t] = bytes;
        let total: usize = sizes.iter().sum();
        if !buf.is_empty() {
            let detached = std::thread::scope(|s| {
                let helper = s.spawn(|| {
                    let mut addr: *mut c_void = std::ptr::null_mut();
                    let mut size: c_int = 0;
                    // SAFETY: detaches the buffer attached below (MPI passes
                    // its address back through `addr`); waits until its
                    // messages are delivered. `buf` is not touched meanwhile.
                    check(
                        unsafe {
                            ffi::MPI_Buffer_detach(
                                (&mut addr as *mut *mut c_void).cast(),
                                &mut size,
                            )
                        },
                        "MPI_Buffer_detach",
                    )
                });
                let mut failed = Ok(());
                while failed.is_ok() && !helper.is_finished() {
                    failed = progress();
                }
                let detached = helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                detached.and(failed)
            });
            detached?;
        }
        *buf = vec![0u8; total];
        if total > 0 {
            // SAFETY: `buf` lives in this struct (the process's transport) and is
            // only replaced after MPI_Buffer_detach above.
            check(
                unsafe { ffi::MPI_Buffer_attach(buf.as_mut_ptr().cast(), count(total)?) },
                "MPI_Buffer_attach",
            )?;
        }
        Ok(())
    }
}

/// Takes a lock through `try_lock`, calling `progress` while another thread
/// holds it (a poisoned lock is taken as it is).
fn lock_progressing<G>(
    mut try_lock: impl FnMut() -> std::sync::TryLockResult<G>,
    mut progress: impl FnMut() -> Result<()>,
) -> Result<G> {
    loop {
        match try_lock() {
            Ok(guard) => return Ok(guard),
            Err(TryLockError::Poisoned(e)) => return Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => progress()?,
        }
    }
}
