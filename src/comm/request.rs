//! Nonblocking point-to-point: requests live in a [`Scope`].
//!
//! A nonblocking call lends its buffer to the runtime until the operation
//! completes. Safe Rust cannot stop a caller from leaking a request
//! (`mem::forget`), so the guarantee comes from the scope, as in rsmpi's
//! `request::scope` and `std::thread::scope`: buffers are borrowed for the whole
//! scope, and when the scope ends it settles every operation still outstanding —
//! unmatched receives are cancelled, sends are waited for. A dropped or leaked
//! request therefore never lets the runtime touch a buffer after the borrow ends.
//!
//! ```
//! use courier::{wait_all, ANY_TAG};
//! courier::run(2, |comm| {
//!     let peer = 1 - comm.rank();
//!     let (out, mut inc) = ([comm.rank() as u32; 4], [0u32; 4]);
//!     comm.scope(|s| {
//!         let mut reqs = vec![s.irecv(&mut inc, peer, ANY_TAG)?, s.isend(&out, peer, 0)?];
//!         wait_all(&mut reqs)
//!     })?;
//!     assert_eq!(inc, [peer as u32; 4]);
//!     Ok(())
//! })?;
//! # Ok::<(), courier::Error>(())
//! ```

use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytemuck::Pod;
use smallvec::SmallVec;

use crate::bsend::BsendSpace;
use crate::sync::{poll_until, Completion, Peer};
use crate::transport::mpi::SendRequest;
use crate::transport::shm::{Elem, Mode, RecvBuf, SendOutcome};
use crate::{Comm, Error, Result, Source, Status, TagMatch};

use super::p2p::{mpi_mode, Posted, RecvId};

use super::check_tag;

/// An operation the scope must settle before it ends.
enum Outstanding {
    Send {
        dest: Peer,
        done: Arc<Completion>,
    },
    Recv {
        id: RecvId,
        done: Arc<Completion>,
    },
    /// A receive whose outcome the MPI transport keeps (see `Posted::Kept`).
    Kept {
        id: u64,
    },
    /// A nonblocking send to another process in flight: its request tests
    /// it here.
    MpiSend(SendRequest),
    /// Settled by its request (a kept receive it took or cancelled): nothing
    /// left to do.
    Settled,
    /// A tiny synchronous send in its pair's fastbox, numbered `n`.
    SyncSend {
        dest: Peer,
        n: u64,
    },
}

/// The region in which nonblocking operations may borrow buffers (see
/// [`Comm::scope`]). Buffers lent to requests are borrowed for `'s`, the
/// whole scope.
pub struct Scope<'s, 'env: 's> {
    comm: &'env Comm,
    /// Inline for the usual handful: a scope per message (a ping-pong) would
    /// otherwise allocate on its first request.
    outstanding: RefCell<SmallVec<[Outstanding; 4]>>,
    _scope: PhantomData<&'s mut &'s ()>,
}

/// A nonblocking operation in progress. Complete it with [`wait`](Request::wait),
/// [`test`](Request::test) or the `wait_*`/`test_*` functions. Dropping it
/// without completing leaves the operation to the end of the scope.
#[must_use = "a request does nothing visible until it is waited for or tested"]
pub struct Request<'s> {
    comm: &'s Comm,
    state: State,
    /// The scope's list of outstanding operations, for a request that
    /// settles its own entry there.
    outstanding: &'s RefCell<SmallVec<[Outstanding; 4]>>,
}

enum State {
    /// Completed when started; not yet reported.
    Complete(Result<Status>),
    Send {
        dest: Peer,
        done: Arc<Completion>,
        status: Status,
    },
    Recv {
        id: RecvId,
        done: Arc<Completion>,
        source: Option<Peer>,
    },
    /// A receive from one rank of another process, whose outcome the MPI
    /// transport keeps until taken; `slot` is its entry in the scope's list,
    /// which it marks settled once it has taken the outcome (sparing the
    /// scope's end a look into the registry).
    Kept { id: u64, slot: usize },
    /// A tiny `issend` in its pair's fastbox (embedded): complete once the
    /// pair's match counter passes `n`.
    SyncSend { dest: Peer, n: u64, status: Status },
    /// A send to another process in flight; `slot` is its entry in the
    /// scope's list, which holds the MPI request (`Outstanding::MpiSend`).
    MpiSend { slot: usize, status: Status },
    /// Completion reported (`MPI_REQUEST_NULL`).
    Inactive,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Complete(_) => "complete",
            State::Send { .. } | State::SyncSend { .. } | State::MpiSend { .. } => "send pending",
            State::Recv { .. } | State::Kept { .. } => "receive pending",
            State::Inactive => "inactive",
        };
        f.debug_struct("Request").field("state", &state).finish()
    }
}

impl Comm {
    /// Opens a scope for nonblocking operations; returns what `f` returns once
    /// every operation started in it has completed or been cancelled.
    ///
    /// A buffer must outlive the scope, so this does not compile:
    ///
    /// ```compile_fail
    /// courier::run(1, |comm| {
    ///     comm.scope(|s| {
    ///         let mut buf = [0u8; 4];
    ///         let _r = s.irecv(&mut buf, 0, 0); // `buf` does not live long enough
    ///     });
    ///     Ok(())
    /// });
    /// ```
    pub fn scope<'env, F, R>(&'env self, f: F) -> R
    where
        F: for<'s> FnOnce(&'s Scope<'s, 'env>) -> R,
    {
        let scope = Scope {
            comm: self,
            outstanding: RefCell::default(),
            _scope: PhantomData,
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
        scope.settle_all();
        match result {
            Ok(r) => r,
            Err(panic) => resume_unwind(panic),
        }
    }
}

impl<'s, 'env> Scope<'s, 'env> {
    /// Nonblocking standard send (`MPI_Isend`).
    pub fn isend<T: Pod>(&'s self, buf: &'s [T], dest: usize, tag: i32) -> Result<Request<'s>> {
        self.isend_on(
            self.comm.ctx,
            bytemuck::cast_slice(buf),
            dest,
            check_tag(tag)?,
            Mode::Standard,
        )
    }

    /// Nonblocking buffered send (`MPI_Ibsend`): complete as soon as it returns Ok.
    pub fn ibsend<T: Pod>(&'s self, buf: &'s [T], dest: usize, tag: i32) -> Result<Request<'s>> {
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        self.comm.world_of(dest)?;
        let tag = check_tag(tag)?;
        let space: BsendSpace = self.comm.world.bsend[self.comm.me()].reserve(bytes.len())?;
        self.isend_on(self.comm.ctx, bytes, dest, tag, Mode::Buffered(space))
    }

    /// Nonblocking synchronous send (`MPI_Issend`): completes once matched.
    pub fn issend<T: Pod>(&'s self, buf: &'s [T], dest: usize, tag: i32) -> Result<Request<'s>> {
        self.isend_on(
            self.comm.ctx,
            bytemuck::cast_slice(buf),
            dest,
            check_tag(tag)?,
            Mode::Synchronous,
        )
    }

    /// Nonblocking ready send (`MPI_Irsend`): `Err(NotReady)` at once (nothing
    /// sent) when no matching receive is posted.
    pub fn irsend<T: Pod>(&'s self, buf: &'s [T], dest: usize, tag: i32) -> Result<Request<'s>> {
        let (comm, bytes) = (self.comm, bytemuck::cast_slice(buf));
        let tag = check_tag(tag)?;
        let peer = comm.peer(dest)?;
        if peer.local.is_none() {
            // Straight to MPI, as `Comm::rsend`: without `isend_on`'s mode
            // dispatch, an 8-byte `irsend` ping-pong between two processes
            // came 0.004 to 0.008 µs closer to raw `MPI_Rsend`, level with
            // `rsend` (`courier bench p2p`, three sets of 50 to 70 runs
            // alternated with the build before, cores as siblings).
            return self.irsend_remote(comm.ctx, peer, tag, bytes);
        }
        self.isend_to(comm.ctx, bytes, peer, tag, Mode::Ready)
    }

    /// [`irsend`](Self::irsend) to a rank in another process: `MPI_Irsend`
    /// into an offered receive, or after the handshake (see the MPI transport).
    #[inline]
    fn irsend_remote(
        &'s self,
        ctx: u32,
        peer: Peer,
        tag: i32,
        bytes: &'s [u8],
    ) -> Result<Request<'s>> {
        let comm = self.comm;
        let env = comm.envelope(ctx, tag);
        let (mpi, from) = (comm.mpi(), comm.world_rank());
        // SAFETY: `bytes` is borrowed for the whole scope, and the scope does
        // not end before this send has completed (`settle_all`), even if the
        // request is leaked.
        let outcome = unsafe { mpi.rsend(&comm.world.shm, from, peer.world, &env, bytes, true)? };
        self.send_request(outcome, peer, Status::new(peer.rank, tag, bytes.len()))
    }

    /// Nonblocking receive (`MPI_Irecv`).
    pub fn irecv<T: Pod>(
        &'s self,
        buf: &'s mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<'s>> {
        let pat = self
            .comm
            .pattern(self.comm.ctx, source.into(), tag.into())?;
        self.irecv_on(pat, buf)
    }

    pub(crate) fn isend_on(
        &'s self,
        ctx: u32,
        bytes: &'s [u8],
        dest: usize,
        tag: i32,
        mode: Mode,
    ) -> Result<Request<'s>> {
        let peer = self.comm.peer(dest)?;
        self.isend_to(ctx, bytes, peer, tag, mode)
    }

    /// [`isend_on`](Self::isend_on) to a peer already looked up.
    fn isend_to(
        &'s self,
        ctx: u32,
        bytes: &'s [u8],
        peer: Peer,
        tag: i32,
        mode: Mode,
    ) -> Result<Request<'s>> {
        let comm = self.comm;
        let env = comm.envelope(ctx, tag);
        let status = Status::new(peer.rank, tag, bytes.len());
        // A tiny synchronous send needs no lock, no allocation and no
        // completion, only the pair's match counter.
        if let Mode::Synchronous = mode {
            if let Some(n) = comm.ssend_fastbox(peer, &env, bytes) {
                let dest = peer;
                self.outstanding
                    .borrow_mut()
                    .push(Outstanding::SyncSend { dest, n });
                let state = State::SyncSend { dest, n, status };
                return Ok(Request {
                    comm,
                    state,
                    outstanding: &self.outstanding,
                });
            }
        }
        // The rank's own charge of a buffered send ends with this call, once
        // MPI_Ibsend has copied the message.
        if let (None, Some(send_mode)) = (peer.local, mpi_mode(&mode)) {
            let (mpi, from) = (comm.mpi(), comm.world_rank());
            // SAFETY: as below; the scope's end waits for the request it
            // keeps in its list.
            let state = match unsafe {
                mpi.isend(from, peer.world, &env, bytes, send_mode, || {
                    comm.keep_progressing()
                })?
            } {
                None => State::Complete(Ok(status)),
                Some(req) => {
                    let mut outstanding = self.outstanding.borrow_mut();
                    outstanding.push(Outstanding::MpiSend(req));
                    State::MpiSend {
                        slot: outstanding.len() - 1,
                        status,
                    }
                }
            };
            return Ok(Request {
                comm,
                state,
                outstanding: &self.outstanding,
            });
        }
        let Some(to) = peer.local else {
            // The other modes kept their requests above.
            return self.irsend_remote(ctx, peer, tag, bytes);
        };
        // SAFETY: `bytes` is borrowed for the whole scope, and the scope does not
        // end before this send has completed or been withdrawn (`settle_all`),
        // even if the request is leaked.
        let outcome = unsafe { comm.world.shm.send(comm.me(), to, env, bytes, mode) };
        self.send_request(outcome, peer, status)
    }

    /// The request of a send that `outcome` says is done, refused (ready mode,
    /// no receive posted) or pending.
    #[inline]
    fn send_request(
        &'s self,
        outcome: SendOutcome,
        peer: Peer,
        status: Status,
    ) -> Result<Request<'s>> {
        let comm = self.comm;
        let state = match outcome {
            SendOutcome::Done => State::Complete(Ok(status)),
            SendOutcome::NotReady => {
                return Err(Error::NotReady {
                    dest: peer.rank,
                    tag: status.tag,
                })
            }
            SendOutcome::Pending(done) => {
                self.outstanding.borrow_mut().push(Outstanding::Send {
                    dest: peer,
                    done: done.clone(),
                });
                State::Send {
                    dest: peer,
                    done,
                    status,
                }
            }
        };
        Ok(Request {
            comm,
            state,
            outstanding: &self.outstanding,
        })
    }

    pub(crate) fn irecv_on<T: Pod>(
        &'s self,
        pat: crate::matching::Pattern,
        buf: &'s mut [T],
    ) -> Result<Request<'s>> {
        let comm = self.comm;
        let source = comm.source_peer(&pat)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        // SAFETY: `buf` is exclusively borrowed for the whole scope, and the scope
        // does not end before this receive has completed or been cancelled.
        let dst = unsafe { RecvBuf::new(bytes.as_mut_ptr(), bytes.len(), Elem::of::<T>()) };
        let state = match comm.post_recv(pat, dst, source)? {
            Posted::Done(r) => State::Complete(r),
            Posted::Pending { id, done } => {
                self.outstanding.borrow_mut().push(Outstanding::Recv {
                    id,
                    done: done.clone(),
                });
                State::Recv { id, done, source }
            }
            Posted::Kept { id } => {
                let mut outstanding = self.outstanding.borrow_mut();
                outstanding.push(Outstanding::Kept { id });
                State::Kept {
                    id,
                    slot: outstanding.len() - 1,
                }
            }
        };
        Ok(Request {
            comm,
            state,
            outstanding: &self.outstanding,
        })
    }

    /// Settles everything still outstanding: cancels unmatched receives, waits
    /// for sends (withdrawing them if a rank has failed).
    fn settle_all(&self) {
        let mut outstanding = self.outstanding.borrow_mut();
        if outstanding.is_empty() {
            return;
        }
        for op in outstanding.drain(..) {
            match op {
                Outstanding::Send { done, .. } | Outstanding::Recv { done, .. }
                    if done.is_done() =>
                {
                    Completion::recycle(done)
                }
                Outstanding::SyncSend { dest, n } => {
                    let _ = self.comm.settle_sync(dest, n);
                }
                Outstanding::Kept { id } => self.comm.discard_kept(id),
                Outstanding::MpiSend(mut req) => {
                    let _ = self.comm.wait_mpi_send(|| req.test());
                }
                Outstanding::Settled => {}
                Outstanding::Send { dest, done } => {
                    let _ = self.comm.settle_send(dest, &done);
                }
                Outstanding::Recv { id, done } => {
                    if !self.comm.cancel_recv(id) {
                        if self.comm.world.mpi.is_some() {
                            let _ = self.comm.cluster_wait(None, || done.poll().map(Ok));
                        } else {
                            done.wait_regardless(&self.comm.world.live);
                        }
                    }
                }
            }
        }
    }
}

impl Request<'_> {
    /// Waits for completion (`MPI_Wait`). A receive reports what arrived; a send
    /// reports its own destination, tag and length.
    pub fn wait(mut self) -> Result<Status> {
        self.wait_mut()
    }

    fn wait_mut(&mut self) -> Result<Status> {
        match std::mem::replace(&mut self.state, State::Inactive) {
            State::Complete(r) => r,
            State::Send { dest, done, status } => {
                self.comm.settle_send(dest, &done).map(|()| status)
            }
            State::Recv { id, done, source } => self.comm.settle_recv(id, &done, source),
            State::Kept { id, slot } => {
                let outcome = self.comm.settle_kept(id);
                self.settled(slot); // no longer registered, whatever the outcome
                outcome
            }
            State::SyncSend { dest, n, status } => self.comm.settle_sync(dest, n).map(|()| status),
            State::MpiSend { slot, status } => {
                let waited = self.comm.wait_mpi_send(|| self.test_kept_send(slot));
                match waited {
                    // A rank of this process failed: the job is ending, and
                    // the scope's end makes its own attempt.
                    Err(e @ Error::PeerFailed { .. }) => Err(e),
                    _ => {
                        self.settled(slot);
                        waited.map(|()| status)
                    }
                }
            }
            State::Inactive => Err(Error::InactiveRequest),
        }
    }

    /// Checks for completion without blocking (`MPI_Test`): `Ok(Some(status))` once
    /// (the request is then inactive), `Ok(None)` while pending; `Err(PeerFinished)`
    /// once the one rank it depends on has returned without matching it.
    pub fn test(&mut self) -> Result<Option<Status>> {
        if !self.is_active() {
            return Err(Error::InactiveRequest);
        }
        self.comm.progress();
        let peer = match &self.state {
            State::Send { dest, .. } | State::SyncSend { dest, .. } => Some(*dest),
            State::Recv { source, .. } => *source,
            State::Kept { .. } | State::MpiSend { .. } | State::Complete(_) | State::Inactive => {
                None
            }
        };
        // Done, or its peer has finished: waiting returns at once (with the
        // outcome, or PeerFinished).
        if self.is_ready() || peer.is_some_and(|p| self.comm.world.live.has_finished(p)) {
            return self.wait_mut().map(Some);
        }
        self.comm.world.live.check()?;
        Ok(None)
    }

    /// Marks this request's entry in its scope's list settled: it has taken
    /// (or is about to take, without fail) its kept outcome, or cancelled it.
    /// The last entry (the usual case: a request waited for before the next
    /// is started) leaves the list, so the scope's end has nothing to look at.
    #[inline]
    fn settled(&self, slot: usize) {
        let mut outstanding = self.outstanding.borrow_mut();
        if slot + 1 == outstanding.len() {
            outstanding.pop();
        } else {
            outstanding[slot] = Outstanding::Settled;
        }
    }

    /// Whether the send whose request entry `slot` of the scope's list keeps
    /// has completed (an entry settled already has).
    fn test_kept_send(&self, slot: usize) -> Result<bool> {
        match &mut self.outstanding.borrow_mut()[slot] {
            Outstanding::MpiSend(req) => req.test(),
            _ => Ok(true),
        }
    }

    /// Whether waiting would not block (done, or inactive). A kept receive's
    /// outcome moves into the request here.
    fn is_ready(&mut self) -> bool {
        match &self.state {
            State::Send { done, .. } | State::Recv { done, .. } => done.is_done(),
            &State::Kept { id, slot } => {
                let (mpi, me) = (self.comm.mpi(), self.comm.world_rank());
                match mpi.take_outcome(me, id) {
                    Some(None) => false,
                    Some(Some(outcome)) => {
                        self.settled(slot);
                        self.state = State::Complete(outcome);
                        true
                    }
                    None => true, // not registered: waiting says so at once
                }
            }
            State::SyncSend { dest, n, .. } => self.comm.sync_matched(*dest, *n),
            &State::MpiSend { slot, status } => match self.test_kept_send(slot) {
                Ok(false) => false,
                done => {
                    self.settled(slot);
                    self.state = State::Complete(done.map(|_| status));
                    true
                }
            },
            State::Complete(_) | State::Inactive => true,
        }
    }

    /// Whether the request still has a completion to report.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Inactive)
    }

    /// Cancels a receive that no message has matched yet (`MPI_Cancel`). Returns
    /// whether it was cancelled; if so, its status has `cancelled` set and the
    /// buffer was not written. Sends and matched receives are not cancelled.
    pub fn cancel(&mut self) -> Result<bool> {
        match &self.state {
            State::Recv { id, done, .. } if self.comm.cancel_recv(*id) => {
                done.complete(Ok(Status::cancelled()));
                Ok(true)
            }
            &State::Kept { id, slot } if self.comm.mpi().cancel(self.comm.world_rank(), id)? => {
                self.settled(slot);
                self.state = State::Complete(Ok(Status::cancelled()));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Waits for all requests (`MPI_Waitall`); returns their statuses in order, or
/// the first error (after every request has completed). Inactive requests
/// report a default status.
pub fn wait_all(reqs: &mut [Request<'_>]) -> Result<Vec<Status>> {
    let mut first_err = None;
    let mut statuses = Vec::with_capacity(reqs.len());
    for r in reqs.iter_mut() {
        if !r.is_active() {
            statuses.push(Status::default());
            continue;
        }
        match r.wait_mut() {
            Ok(s) => statuses.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
                statuses.push(Status::default());
            }
        }
    }
    first_err.map_or(Ok(statuses), Err)
}

/// Waits until one active request completes (`MPI_Waitany`) and returns its index
/// and outcome; `Ok(None)` when no request is active.
pub fn wait_any(reqs: &mut [Request<'_>]) -> Result<Option<(usize, Result<Status>)>> {
    if !reqs.iter().any(Request::is_active) {
        return Ok(None);
    }
    let comm = reqs[0].comm;
    poll_until(&comm.world.live, || {
        comm.progress();
        let i = reqs
            .iter_mut()
            .position(|r| r.is_active() && r.is_ready())?;
        Some((i, reqs[i].wait_mut()))
    })
    .map(Some)
}

/// Completes one active request if any is done (`MPI_Testany`): its index and
/// outcome, or `Ok(None)`.
pub fn test_any(reqs: &mut [Request<'_>]) -> Result<Option<(usize, Result<Status>)>> {
    for (i, r) in reqs.iter_mut().enumerate() {
        if !r.is_active() {
            continue;
        }
        match r.test() {
            Ok(Some(s)) => return Ok(Some((i, Ok(s)))),
            Ok(None) => {}
            Err(e @ Error::PeerFailed { .. }) => return Err(e),
            Err(e) => return Ok(Some((i, Err(e)))),
        }
    }
    Ok(None)
}

/// If every active request is done, completes them all and returns their statuses
/// (`MPI_Testall`); otherwise completes none and returns `Ok(None)`.
pub fn test_all(reqs: &mut [Request<'_>]) -> Result<Option<Vec<Status>>> {
    if let Some(r) = reqs.first() {
        r.comm.progress();
    }
    let all_done = reqs.iter_mut().all(Request::is_ready);
    if all_done {
        return wait_all(reqs).map(Some);
    }
    if let Some(r) = reqs.first() {
        r.comm.world.live.check()?;
    }
    Ok(None)
}
