//! Transports: how a message gets from one rank to another.
//!
//! The communicator layer above talks to a transport through one small set of
//! operations — `send(mode)`, `send_owned`, `recv`, `cancel_recv`, `cancel_send`,
//! `iprobe`, `improbe`, `wait_arrival` — in terms of world ranks and
//! [`Envelope`](crate::matching::Envelope)s, and gets back a
//! [`Completion`](crate::sync::Completion) for anything that finishes later.
//!
//! * [`shm`] — ranks that are threads of this process (shared memory).
//!
//! The MPI transport (ranks in other processes) will sit beside `shm` behind the
//! same operations, with the communicator routing each peer to one or the other.

pub(crate) mod shm;
