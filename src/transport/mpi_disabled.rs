//! Stand-in for the MPI transport in builds without the `mpi` feature: a type
//! with no values, so every cluster-mode branch above is statically dead and the
//! runtime needs no MPI library.

use std::collections::HashMap;
use std::sync::Arc;

use crate::matching::{Envelope, Pattern};
use crate::sync::Completion;
use crate::transport::shm::{RecvBuf, SendOutcome, Shm};
use crate::{Error, Result, Status};

/// No MPI transport can exist in this build.
pub(crate) enum Mpi {}

/// The send modes with their own blocking MPI call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SendMode {
    Standard,
    Buffered,
    Synchronous,
}

pub(crate) fn library() -> Option<&'static crate::MpiLibrary> {
    None
}

pub(crate) fn abort(why: &str) -> ! {
    eprintln!("courier: {why}");
    std::process::exit(1)
}

pub(crate) fn processor_name() -> String {
    String::new()
}

#[allow(clippy::too_many_arguments, missing_docs)]
impl Mpi {
    pub fn new(_: usize, _: usize, _: usize) -> Result<Mpi> {
        Err(Error::InvalidConfig(
            "cluster mode needs the `mpi` feature".into(),
        ))
    }
    pub fn create_context(&self, _: u32, _: &[usize]) -> Result<()> {
        match *self {}
    }
    pub fn send(
        &self,
        _: &Shm,
        _: usize,
        _: usize,
        _: &Envelope,
        _: &[u8],
        _: SendMode,
        _: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        match *self {}
    }
    pub fn wait_send(
        &self,
        _: &Shm,
        _: usize,
        _: &std::sync::Arc<crate::sync::Completion>,
        _: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        match *self {}
    }
    pub unsafe fn isend(
        &self,
        _: usize,
        _: usize,
        _: &Envelope,
        _: &[u8],
        _: SendMode,
        _: impl FnMut() -> Result<()>,
    ) -> Result<Option<SendRequest>> {
        match *self {}
    }
    pub unsafe fn rsend(
        &self,
        _: &Shm,
        _: usize,
        _: usize,
        _: &Envelope,
        _: &[u8],
        _: bool,
    ) -> Result<SendOutcome> {
        match *self {}
    }
    pub fn post(
        &self,
        _: usize,
        _: Pattern,
        _: &[usize],
        _: &Arc<HashMap<usize, usize>>,
        _: RecvBuf,
        _: Option<Arc<Completion>>,
        _: Option<u64>,
    ) -> u64 {
        match *self {}
    }
    #[allow(clippy::too_many_arguments)]
    pub fn recv_direct(
        &self,
        _: &Shm,
        _: usize,
        _: &Pattern,
        _: &[usize],
        _: RecvBuf,
        _: impl FnMut() -> Result<()>,
        _: &mut Option<impl FnOnce() -> Result<()>>,
    ) -> Result<Option<Result<Status>>> {
        match *self {}
    }
    pub fn cancel(&self, _: usize, _: u64) -> Result<bool> {
        match *self {}
    }
    pub fn test_posted(&self, _: usize, _: u64, _: u32) -> Result<Option<Result<Status>>> {
        match *self {}
    }
    pub fn take_outcome(&self, _: usize, _: u64) -> Option<Option<Result<Status>>> {
        match *self {}
    }
    pub fn progress(&self, _: &Shm, _: usize) -> Result<()> {
        match *self {}
    }
    pub fn iprobe(
        &self,
        _: usize,
        _: &Pattern,
        _: &[usize],
        _: &HashMap<usize, usize>,
    ) -> Result<Option<Status>> {
        match *self {}
    }
    pub fn improbe(
        &self,
        _: usize,
        _: &Pattern,
        _: &[usize],
        _: &HashMap<usize, usize>,
    ) -> Result<Option<(Envelope, Vec<u8>)>> {
        match *self {}
    }
    pub fn resize_bsend(&self, _: usize, _: usize, _: impl FnMut() -> Result<()>) -> Result<()> {
        match *self {}
    }
}

/// Stands in for a nonblocking MPI send in flight; never exists without MPI.
pub(crate) enum SendRequest {}

impl SendRequest {
    pub fn test(&mut self) -> Result<bool> {
        match *self {}
    }
}
