//! Transports: how a message gets from one rank to another.
//!
//! The communicator layer above routes each peer to one of two transports, by
//! where the peer lives:
//!
//! * [`shm`] — ranks that are threads of this process (shared memory);
//! * [`mpi`] — ranks in other processes (cluster mode), over MPI.
//!
//! Both take the same operations — a send by mode, a receive into a lent
//! [`RecvBuf`](shm::RecvBuf), cancel, probe, matched probe — in terms of world
//! ranks and [`Envelope`](crate::matching::Envelope)s, and hand back a
//! [`Completion`](crate::sync::Completion) for anything that finishes later. An
//! `ANY_SOURCE` receive is posted with both (see [`mpi`]).

#[cfg(feature = "mpi")]
pub(crate) mod mpi;
#[cfg(not(feature = "mpi"))]
#[path = "mpi_disabled.rs"]
pub(crate) mod mpi;
pub(crate) mod shm;

/// The element count of an MPI message of `len` bytes, or why `len` bytes
/// cannot go as one (`MPI_Send` and friends take a C `int`). Checked before
/// anything of an operation is posted, so the error leaves nothing behind.
pub(crate) fn mpi_count(len: usize) -> crate::Result<std::ffi::c_int> {
    std::ffi::c_int::try_from(len).map_err(|_| {
        crate::Error::InvalidConfig(format!(
            "{len} bytes is more than one MPI message can carry"
        ))
    })
}
