//! courier-kernels: collective distributed algorithms on courier's public API,
//! every rank pinned to a core, each kernel on its own duplicate communicator.
//!
//! * [`gossip`]: anti-entropy, rumor mongering, flooding, push-sum aggregation
//!   and a key-value store with death certificates, checked against theory.
//!
//! The `courier` binary compiles this crate's source as a module of its own
//! (the binary's package is the one this crate depends on), so paths inside
//! the crate are relative (`super::`), never `crate::`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod gossip;
pub mod multicast;
mod rng;
