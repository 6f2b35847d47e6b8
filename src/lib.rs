//! # courier — MPI's send semantics with Rust's safety
//!
//! courier is an MPI-style messaging runtime. A program is one closure that every
//! rank runs with its [`Comm`]; ranks exchange typed slices (`T: bytemuck::Pod`,
//! no serialization) with every MPI point-to-point mode and the usual collectives.
//! Embedded (the default), ranks are threads of one process, pinned to cores,
//! talking over shared memory.
//!
//! ```
//! // Four ranks pass a token around a ring.
//! let tokens = courier::run(4, |comm| {
//!     let (rank, size) = (comm.rank(), comm.size());
//!     let mut token = [0u64];
//!     if rank == 0 {
//!         comm.send(&[1u64], 1, 0)?;
//!         comm.recv(&mut token, size - 1, 0)?;
//!     } else {
//!         comm.recv(&mut token, rank - 1, 0)?;
//!         token[0] += 1;
//!         comm.send(&token, (rank + 1) % size, 0)?;
//!     }
//!     Ok(token[0])
//! })?;
//! assert_eq!(tokens[0], 4);
//! # Ok::<(), courier::Error>(())
//! ```
//!
//! ## A tour
//!
//! * Starting: [`run`] / [`Runtime`] (ranks, eager threshold, flow-control
//!   credit, [`Placement`]). A rank that panics or fails ends the run with
//!   [`Error::RankPanicked`] / [`Error::RankFailed`]; the others are released
//!   with [`Error::PeerFailed`], never left hanging.
//! * Blocking sends, one method per mode: [`Comm::send`] (standard),
//!   [`Comm::bsend`] (buffered, with [`Comm::attach_buffer`]), [`Comm::ssend`]
//!   (synchronous), [`Comm::rsend`] (ready), [`Comm::send_owned`] (moves a `Vec`).
//! * Receiving: [`Comm::recv`], [`Comm::recv_owned`], [`Comm::sendrecv`],
//!   [`Comm::sendrecv_replace`], with [`ANY_SOURCE`] / [`ANY_TAG`]; probes
//!   [`Comm::probe`], [`Comm::iprobe`], matched probes [`Comm::mprobe`] →
//!   [`Message::mrecv`].
//! * Nonblocking: [`Comm::scope`] → [`Scope::isend`], [`Scope::ibsend`],
//!   [`Scope::issend`], [`Scope::irsend`], [`Scope::irecv`] → [`Request`], completed
//!   by [`Request::wait`], [`Request::test`], [`wait_all`], [`wait_any`],
//!   [`test_any`], [`test_all`]; [`Request::cancel`].
//! * Communicators: [`Comm::dup`], [`Comm::split`]; collectives
//!   [`Comm::barrier`], [`Comm::broadcast`], [`Comm::reduce`],
//!   [`Comm::all_reduce`], [`Comm::gather`], [`Comm::all_gather`],
//!   [`Comm::scatter`], [`Comm::all_to_all`].
//!
//! Messages between one pair of ranks on one communicator are never overtaken.

#![deny(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn)]

mod bsend;
mod comm;
mod error;
mod launch;
mod matching;
mod placement;
mod runtime;
mod status;
mod sync;
pub mod topology;
mod transport;

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use comm::request::{test_all, test_any, wait_all, wait_any, Request, Scope};
pub use comm::{Comm, Message};
pub use error::{Error, Result};
pub use launch::{Launch, Launcher, SlurmJob};
pub use placement::{Placement, Plan};
pub use runtime::{run, Runtime, DEFAULT_CREDIT, DEFAULT_EAGER_THRESHOLD};
/// The MPI library cluster mode runs on (see [`mpi_library`]).
#[derive(Debug, Clone)]
pub struct MpiLibrary {
    /// `MPI_Get_library_version`.
    pub version: String,
    /// MPI standard version, `MPI_Get_version`.
    pub standard: (i32, i32),
    /// Thread level MPI provided (courier asks for `MPI_THREAD_MULTIPLE`).
    pub thread_level: &'static str,
}

/// The MPI library, once a cluster-mode job has initialized MPI in this
/// process; `None` in embedded jobs and in builds without the `mpi` feature.
pub fn mpi_library() -> Option<MpiLibrary> {
    transport::mpi::library().cloned()
}

/// The name of the host this process runs on (`MPI_Get_processor_name` in
/// cluster mode, else the kernel's host name).
pub fn host_name() -> String {
    let name = transport::mpi::library()
        .map(|_| transport::mpi::processor_name())
        .unwrap_or_default();
    if !name.is_empty() {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

pub use status::{Source, Status, TagMatch, ANY_SOURCE, ANY_TAG, BSEND_OVERHEAD, TAG_UB};
