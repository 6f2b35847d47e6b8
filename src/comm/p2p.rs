//! Blocking point-to-point: one method per send mode, receives, probes.
//!
//! Which mode when (see the README for measured costs):
//!
//! * [`send`](Comm::send) — standard: returns when the buffer may be reused;
//!   small messages are copied (eager), large ones wait for the receiver (rendezvous).
//! * [`bsend`](Comm::bsend) — buffered: copies into the attached buffer and returns;
//!   never waits for the receiver.
//! * [`ssend`](Comm::ssend) — synchronous: returns once the receiver has matched it.
//! * [`rsend`](Comm::rsend) — ready: the receive must already be posted, which saves
//!   the handshake; `Err(NotReady)` (nothing sent) if it is not.
//! * [`send_owned`](Comm::send_owned) — moves a `Vec` to the receiver: no copy at all.

use std::sync::Arc;

use bytemuck::Pod;

use crate::matching::{Envelope, Pattern};
use crate::sync::{Completion, Peer};
use crate::transport::mpi::{Mpi, SendMode};
use crate::transport::mpi_count;
use crate::transport::shm::{Body, Elem, Mode, RecvBuf, RecvOutcome, SendOutcome};
use crate::{Comm, Error, Result, Source, Status, TagMatch};

/// Where a posted receive is registered: the shared-memory mailbox, the MPI
/// transport's registry, or both (an `ANY_SOURCE` receive in cluster mode).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvId {
    shm: Option<u64>,
    mpi: Option<u64>,
}

/// How posting a receive went.
pub(crate) enum Posted {
    Done(Result<Status>),
    Pending {
        id: RecvId,
        done: Arc<Completion>,
    },
    /// Registered with the MPI transport, which keeps the outcome until
    /// [`settle_kept`](Comm::settle_kept) takes it: a receive from one rank of
    /// another process (no completion to share).
    Kept {
        id: u64,
    },
}

use super::check_tag;

/// How many spins a blocking receive from one rank of this process watches
/// that rank's fastbox and ring before it posts itself (then it waits as
/// posted): the small-message fast path. A ready send aimed at a receive still in this phase
/// finds nothing posted (see the README's point-to-point contract).
const UNPOSTED_SPINS: u32 = 2048;

/// Polls of a cluster-mode receive's own MPI request between two full
/// progress passes of its wait (see [`Mpi::test_posted`]).
const QUICK_TESTS: u32 = 32;

/// A message claimed by a matched probe ([`Comm::mprobe`]): no other receive can
/// take it; receive it with [`mrecv`](Message::mrecv) (on any thread of the rank).
///
/// Dropping a `Message` discards it (its sender is released).
pub struct Message {
    env: Envelope,
    body: Body,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("status", &self.status())
            .finish()
    }
}

impl Message {
    /// Source, tag and length of the message.
    pub fn status(&self) -> Status {
        Status::new(self.env.source, self.env.tag, self.body.bytes().len())
    }

    /// Receives the message into `buf` (`MPI_Mrecv`).
    pub fn mrecv<T: Pod>(self, buf: &mut [T]) -> Result<Status> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        // SAFETY: `bytes` is exclusively borrowed and is filled before `fill` returns.
        let dst = unsafe { RecvBuf::new(bytes.as_mut_ptr(), bytes.len(), Elem::of::<T>()) };
        dst.fill(self.body.bytes(), &self.env)
    }

    /// Receives the message as a `Vec<T>`: the sender's own `Vec` if it was sent
    /// with [`Comm::send_owned`] as `Vec<T>` (no copy), else a new one.
    pub fn mrecv_owned<T: Pod>(mut self) -> Result<(Vec<T>, Status)> {
        let status = self.status();
        Elem::of::<T>().check(status.bytes)?;
        if let Some(v) = self.body.take_vec::<T>() {
            return Ok((v, status));
        }
        let mut v = vec![T::zeroed(); status.count::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(self.body.bytes());
        Ok((v, status))
    }
}

impl Comm {
    /// Standard send (`MPI_Send`): returns when `buf` may be reused.
    ///
    /// ```
    /// courier::run(2, |comm| {
    ///     if comm.rank() == 0 {
    ///         comm.send(&[1.5f64, 2.5], 1, 7)?;
    ///     } else {
    ///         let mut buf = [0.0f64; 2];
    ///         let status = comm.recv(&mut buf, 0, 7)?;
    ///         assert_eq!((buf, status.count::<f64>()), ([1.5, 2.5], 2));
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn send<T: Pod>(&self, buf: &[T], dest: usize, tag: i32) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        let tag = check_tag(tag)?;
        // A tiny message to a rank of this process: its pair's fastbox, if free.
        if let Some(to) = self
            .group
            .get(dest)
            .and_then(|&w| self.world.layout.local(w))
        {
            let env = self.envelope(self.ctx, tag);
            if self.world.shm.send_tiny(self.me(), to, &env, bytes) {
                return Ok(());
            }
        }
        self.send_on(self.ctx, bytes, dest, tag, Mode::Standard)
    }

    /// Buffered send (`MPI_Bsend`): copies the message into the attached buffer
    /// and returns without waiting for the receiver. Needs
    /// [`attach_buffer`](Comm::attach_buffer); the message is charged
    /// `len + BSEND_OVERHEAD` bytes until delivered. Not enough free space →
    /// `Err(BufferExhausted)` and nothing is sent.
    pub fn bsend<T: Pod>(&self, buf: &[T], dest: usize, tag: i32) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        self.world_of(dest)?;
        let tag = check_tag(tag)?;
        let space = self.world.bsend[self.me()].reserve(bytes.len())?;
        self.send_on(self.ctx, bytes, dest, tag, Mode::Buffered(space))
    }

    /// Synchronous send (`MPI_Ssend`): returns once the receiver has matched the
    /// message (and, here, copied it).
    pub fn ssend<T: Pod>(&self, buf: &[T], dest: usize, tag: i32) -> Result<()> {
        self.send_on(
            self.ctx,
            bytemuck::cast_slice(buf),
            dest,
            check_tag(tag)?,
            Mode::Synchronous,
        )
    }

    /// Ready send (`MPI_Rsend`): the matching receive must already be posted; the
    /// data goes straight into its buffer. Unlike MPI, a missing receive is
    /// detected: `Err(NotReady)`, nothing delivered, the receiver untouched.
    pub fn rsend<T: Pod>(&self, buf: &[T], dest: usize, tag: i32) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        let tag = check_tag(tag)?;
        let peer = self.peer(dest)?;
        if peer.local.is_none() {
            // Straight to MPI, without the mode dispatch.
            return self.rsend_remote(&self.envelope(self.ctx, tag), bytes, peer);
        }
        self.send_on(self.ctx, bytes, dest, tag, Mode::Ready)
    }

    /// Sends a `Vec` by moving it to the receiver (no copy when the receiver takes
    /// it with [`recv_owned`](Comm::recv_owned) as the same `Vec<T>`). Counts against
    /// the pair's flow-control credit; past it, waits until the receiver matches.
    ///
    /// To a rank in another process the contents are sent as by
    /// [`send`](Comm::send) (a copy, as any message between processes) and the
    /// `Vec` is dropped.
    pub fn send_owned<T: Pod + Send>(&self, data: Vec<T>, dest: usize, tag: i32) -> Result<()> {
        let peer = self.peer(dest)?;
        let env = self.envelope(self.ctx, check_tag(tag)?);
        let bytes: &[u8] = bytemuck::cast_slice(&data);
        let Some(to) = peer.local else {
            return self.send_remote(&env, bytes, peer, Mode::Standard);
        };
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        // SAFETY: (ptr, len) are the contents of `data`, whose heap buffer does not
        // move when the Vec is moved into the box.
        let outcome = unsafe {
            self.world
                .shm
                .send_owned(self.me(), to, env, Box::new(data), ptr, len)
        };
        match outcome {
            SendOutcome::Done => Ok(()),
            SendOutcome::Pending(done) => self.settle_send(peer, &done),
            SendOutcome::NotReady => unreachable!("owned sends are never ready sends"),
        }
    }

    /// Blocking receive (`MPI_Recv`) into `buf` from `source` (a rank or
    /// [`ANY_SOURCE`](crate::ANY_SOURCE)) with `tag` (or [`ANY_TAG`](crate::ANY_TAG)).
    ///
    /// A message longer than `buf` gives `Err(Truncated)`; one that is not a whole
    /// number of `T` gives `Err(TypeMismatch)`; in both cases the message is consumed.
    pub fn recv<T: Pod>(
        &self,
        buf: &mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let pat = self.pattern(self.ctx, source.into(), tag.into())?;
        self.recv_on(pat, buf)
    }

    /// Receives a message as a `Vec<T>` (the sender's own buffer when it was sent
    /// with [`send_owned`](Comm::send_owned)).
    pub fn recv_owned<T: Pod>(
        &self,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<(Vec<T>, Status)> {
        self.mprobe(source, tag)?.mrecv_owned()
    }

    /// Sends `send` to `dest` and receives into `recv` from `source` at once
    /// (`MPI_Sendrecv`); cannot deadlock against a matching `sendrecv`.
    #[allow(clippy::too_many_arguments)]
    pub fn sendrecv<S: Pod, R: Pod>(
        &self,
        send: &[S],
        dest: usize,
        send_tag: i32,
        recv: &mut [R],
        source: impl Into<Source>,
        recv_tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let pat = self.pattern(self.ctx, source.into(), recv_tag.into())?;
        let out: &[u8] = bytemuck::cast_slice(send);
        let peer = self.peer(dest)?;
        if peer.local.is_none() {
            // To another process: the receive is posted first, then the send
            // starts (`MPI_Isend`, tested once: an eager message is done at
            // once), then the receive and the send are waited for: what
            // `MPI_Sendrecv` does. No scope or request object, and never a
            // blocking `MPI_Send`, which would deadlock two ranks exchanging
            // messages above their MPI's eager limit (their receives are
            // matched by their own threads, see the MPI transport).
            let env = self.envelope(self.ctx, check_tag(send_tag)?);
            mpi_count(out.len())?; // the send cannot fail on its length once the receive is posted
            let (mpi, from) = (self.mpi(), self.world_rank());
            let mut pending = None;
            let mut start = Some(|| {
                // SAFETY: `out` is borrowed until this function returns, which
                // is not before the request has completed (below), but when a
                // rank of this process failed: the job is then ending.
                let standard = SendMode::Standard; // never waits for the buffer
                pending = unsafe { mpi.isend(from, peer.world, &env, out, standard, || Ok(()))? };
                Ok(())
            });
            let status = self.recv_with(pat, recv, &mut start);
            if let Some(mut req) = pending {
                self.wait_mpi_send(|| req.test())?;
            }
            return status;
        }
        // The send goes out first, nonblocking, so the receive can take the
        // blocking receive's fast paths; either half may complete first, as in
        // MPI, and neither can deadlock the other.
        self.scope(|s| {
            let w = s.isend(send, dest, send_tag)?;
            let status = self.recv_on(pat, recv);
            w.wait()?;
            status
        })
    }

    /// Like [`sendrecv`](Comm::sendrecv) with one buffer: sends its contents, then
    /// replaces them with the message received (`MPI_Sendrecv_replace`).
    pub fn sendrecv_replace<T: Pod>(
        &self,
        buf: &mut [T],
        dest: usize,
        send_tag: i32,
        source: impl Into<Source>,
        recv_tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let out = buf.to_vec();
        self.sendrecv(&out, dest, send_tag, buf, source, recv_tag)
    }

    /// Waits for a matching message and returns its status without receiving it
    /// (`MPI_Probe`). Another receive may still take the message; use
    /// [`mprobe`](Comm::mprobe) to claim it.
    pub fn probe(&self, source: impl Into<Source>, tag: impl Into<TagMatch>) -> Result<Status> {
        let pat = self.pattern(self.ctx, source.into(), tag.into())?;
        let peer = self.source_peer(&pat)?;
        if self.world.mpi.is_some() {
            return self.cluster_wait(peer, || self.iprobe_on(&pat).transpose());
        }
        let me = self.me();
        self.world.shm.wait_arrival(me, &self.world.live, peer, || {
            self.world.shm.iprobe(me, &pat)
        })
    }

    /// `iprobe` of `pat` on both transports.
    fn iprobe_on(&self, pat: &Pattern) -> Result<Option<Status>> {
        if let Some(found) = self.world.shm.iprobe(self.me(), pat) {
            return Ok(Some(found));
        }
        match self.remote_pattern(pat)? {
            Some(mpi) => mpi.iprobe(self.world_rank(), pat, &self.group, &self.rank_of),
            None => Ok(None),
        }
    }

    /// `improbe` of `pat` on both transports.
    fn improbe_on(&self, pat: &Pattern) -> Result<Option<Message>> {
        if let Some((env, body)) = self.world.shm.improbe(self.me(), pat) {
            return Ok(Some(Message { env, body }));
        }
        let Some(mpi) = self.remote_pattern(pat)? else {
            return Ok(None);
        };
        Ok(mpi
            .improbe(self.world_rank(), pat, &self.group, &self.rank_of)?
            .map(|(env, data)| Message {
                env,
                body: Body::Eager { data },
            }))
    }

    /// The MPI transport, if `pat` may match a message from another process.
    fn remote_pattern(&self, pat: &Pattern) -> Result<Option<&Mpi>> {
        Ok(self.remote_for(self.source_peer(pat)?))
    }

    /// The MPI transport, if a receive from `source` (`None`: any source)
    /// may take a message from another process.
    fn remote_for(&self, source: Option<Peer>) -> Option<&Mpi> {
        let mpi = self.world.mpi.as_ref()?;
        source.is_none_or(|p| p.local.is_none()).then_some(mpi)
    }

    /// Nonblocking probe (`MPI_Iprobe`): the status of a matching message, if any.
    pub fn iprobe(
        &self,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Option<Status>> {
        let pat = self.pattern(self.ctx, source.into(), tag.into())?;
        self.progress();
        self.iprobe_on(&pat)
    }

    /// Matched probe (`MPI_Mprobe`): waits for a matching message and claims it, so
    /// no other receive or thread can take it.
    pub fn mprobe(&self, source: impl Into<Source>, tag: impl Into<TagMatch>) -> Result<Message> {
        let pat = self.pattern(self.ctx, source.into(), tag.into())?;
        let peer = self.source_peer(&pat)?;
        if self.world.mpi.is_some() {
            return self.cluster_wait(peer, || self.improbe_on(&pat).transpose());
        }
        let me = self.me();
        let (env, body) = self
            .world
            .shm
            .wait_arrival(me, &self.world.live, peer, || {
                self.world.shm.improbe(me, &pat)
            })?;
        Ok(Message { env, body })
    }

    /// Nonblocking matched probe (`MPI_Improbe`).
    pub fn improbe(
        &self,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Option<Message>> {
        let pat = self.pattern(self.ctx, source.into(), tag.into())?;
        self.progress();
        self.improbe_on(&pat)
    }

    /// Attaches a buffer of `bytes` for buffered sends (`MPI_Buffer_attach`). One per
    /// rank, shared by all its communicators.
    ///
    /// In cluster mode the process's MPI buffer (MPI has one per process) is
    /// resized to the sum of its ranks' buffers. Each `bsend` is checked against
    /// this rank's buffer (`len + BSEND_OVERHEAD`) first; to another process the
    /// charge ends when `MPI_Bsend` returns (MPI keeps its own account of the
    /// process buffer and reports exhaustion as [`Error::Mpi`]).
    pub fn attach_buffer(&self, bytes: usize) -> Result<()> {
        self.world.bsend[self.me()].attach(bytes)?;
        match &self.world.mpi {
            Some(mpi) => mpi.resize_bsend(self.world_rank(), bytes, || self.keep_progressing()),
            None => Ok(()),
        }
    }

    /// Detaches the buffer (`MPI_Buffer_detach`), waiting until every message
    /// stored in it has been delivered; returns its size.
    pub fn detach_buffer(&self) -> Result<usize> {
        // Progress meanwhile: a receiver of the stored messages may first wait
        // for this rank to match its own synchronous send.
        let size = self.world.bsend[self.me()].detach(&self.world.live, || self.progress())?;
        if let Some(mpi) = &self.world.mpi {
            mpi.resize_bsend(self.world_rank(), 0, || self.keep_progressing())?;
        }
        Ok(size)
    }

    /// Free bytes in the attached buffer, `None` when none is attached.
    pub fn buffer_free(&self) -> Option<usize> {
        self.world.bsend[self.me()].free()
    }

    /// Bytes of standard and owned sends from ranks of this process queued at
    /// this rank and not yet received (bounded by the flow-control credit per
    /// sender).
    pub fn queued_bytes(&self) -> usize {
        self.world.shm.buffered_bytes(self.me())
    }

    pub(crate) fn envelope(&self, ctx: u32, tag: i32) -> Envelope {
        Envelope {
            ctx,
            source: self.rank,
            tag,
        }
    }

    /// Blocking send on context `ctx` (tag already checked).
    pub(crate) fn send_on(
        &self,
        ctx: u32,
        bytes: &[u8],
        dest: usize,
        tag: i32,
        mode: Mode,
    ) -> Result<()> {
        let peer = self.peer(dest)?;
        let env = self.envelope(ctx, tag);
        let Some(to) = peer.local else {
            return self.send_remote(&env, bytes, peer, mode);
        };
        if let Mode::Synchronous = mode {
            if let Some(n) = self.ssend_fastbox(peer, &env, bytes) {
                return self.settle_sync(peer, n);
            }
        }
        // SAFETY: if the send is pending, `settle_send` does not return before the
        // receiver has finished with `bytes` or the send has been withdrawn.
        match unsafe { self.world.shm.send(self.me(), to, env, bytes, mode) } {
            SendOutcome::Done => Ok(()),
            SendOutcome::Pending(done) => self.settle_send(peer, &done),
            SendOutcome::NotReady => Err(Error::NotReady { dest, tag }),
        }
    }

    /// A blocking send to a rank in another process: each mode its own MPI call.
    fn send_remote(&self, env: &Envelope, bytes: &[u8], peer: Peer, mode: Mode) -> Result<()> {
        let mpi = self.mpi();
        let (from, to) = (self.world_rank(), peer.world);
        let (shm, live) = (&self.world.shm, &self.world.live);
        match mpi_mode(&mode) {
            // A buffered send's own charge ends here; MPI holds the copy in
            // its buffer.
            Some(mode) => mpi.send(shm, from, to, env, bytes, mode, || live.check()),
            None => self.rsend_remote(env, bytes, peer),
        }
    }

    /// A blocking ready send to a rank in another process (`MPI_Rsend` into
    /// an offered receive, or after the handshake; see the MPI transport).
    #[inline]
    fn rsend_remote(&self, env: &Envelope, bytes: &[u8], peer: Peer) -> Result<()> {
        let (mpi, shm) = (self.mpi(), &self.world.shm);
        // SAFETY: a blocking ready send does not return before MPI_Rsend has.
        match unsafe { mpi.rsend(shm, self.world_rank(), peer.world, env, bytes, false)? } {
            SendOutcome::NotReady => Err(Error::NotReady {
                dest: peer.rank,
                tag: env.tag,
            }),
            SendOutcome::Done => Ok(()),
            // SAFETY (of the send above): `bytes` stays borrowed until this returns.
            SendOutcome::Pending(done) => self.settle_send(peer, &done),
        }
    }

    /// The MPI transport; only called for peers in other processes, which exist
    /// only in cluster mode.
    pub(crate) fn mpi(&self) -> &Mpi {
        self.world
            .mpi
            .as_ref()
            .expect("ranks in other processes exist only in cluster mode")
    }

    /// Blocking receive matching `pat`.
    pub(crate) fn recv_on<T: Pod>(&self, pat: Pattern, buf: &mut [T]) -> Result<Status> {
        self.recv_with(pat, buf, &mut None::<fn() -> Result<()>>)
    }

    /// Blocking receive matching `pat` that runs `first` (if any) once, as
    /// soon as the receive is posted where it can be — on its lane at the MPI
    /// level, or registered — and in any case before it waits: `sendrecv`
    /// starts its send there, so the peer's message finds its receive posted
    /// (MPI then matches it on arrival, instead of queueing it unexpected
    /// and copying it once more). If `first` fails, the receive is withdrawn
    /// (or, already matched, completed) before the error returns.
    pub(crate) fn recv_with<T: Pod>(
        &self,
        pat: Pattern,
        buf: &mut [T],
        first: &mut Option<impl FnOnce() -> Result<()>>,
    ) -> Result<Status> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        // SAFETY: `buf` is exclusively borrowed for this call, and `settle_recv` does
        // not return before the receive has completed or been withdrawn.
        let dst = unsafe { RecvBuf::new(bytes.as_mut_ptr(), bytes.len(), Elem::of::<T>()) };
        let me = self.world_rank();
        let source = self.source_peer(&pat)?;
        if let Some(from) = source.and_then(|p| p.local) {
            if let Some(first) = first.take() {
                first()?;
            }
            // SAFETY: an alias of `dst`, which `recv_fastbox` only fills when it
            // returns `Some` (then `dst` is not used again).
            let direct = unsafe { dst.alias() };
            let spins = self.world.live.spin_budget().min(UNPOSTED_SPINS);
            if let Some(r) = self
                .world
                .shm
                .recv_fastbox(self.me(), from, &pat, direct, spins)
            {
                return r;
            }
        }
        if let (Some(mpi), Some(_)) = (self.remote_for(source), source) {
            if !self.world.shm.parked(self.me()) {
                // SAFETY: an alias of `dst`, which is only used if this returns None
                // (then `recv_direct` did not touch it).
                let direct = unsafe { dst.alias() };
                let live = &self.world.live;
                let shm = &self.world.shm;
                if let Some(r) =
                    mpi.recv_direct(shm, me, &pat, &self.group, direct, || live.check(), first)?
                {
                    return r;
                }
            }
        }
        let posted = self.post_recv(pat, dst, source)?;
        if let Some(Err(e)) = first.take().map(|first| first()) {
            match posted {
                Posted::Done(_) => {}
                Posted::Pending { id, done } => {
                    if !self.cancel_recv(id) {
                        let _ = self.settle_recv(id, &done, source);
                    }
                }
                Posted::Kept { id } => self.discard_kept(id),
            }
            return Err(e);
        }
        match posted {
            Posted::Done(r) => r,
            Posted::Pending { id, done } => self.settle_recv(id, &done, source),
            Posted::Kept { id } => self.settle_kept(id),
        }
    }

    /// Posts a receive where its messages can come from: the mailbox (ranks of
    /// this process), the MPI transport (ranks of other processes), or both.
    /// `source` is `pat`'s source as a peer (`source_peer`), looked up once
    /// by the caller.
    #[inline(always)]
    pub(crate) fn post_recv(
        &self,
        pat: Pattern,
        dst: RecvBuf,
        source: Option<Peer>,
    ) -> Result<Posted> {
        let (me, local) = (self.world_rank(), self.me());
        let shm = &self.world.shm;
        let Some(mpi) = self.remote_for(source) else {
            return Ok(match shm.recv(local, pat, dst) {
                RecvOutcome::Done(r) => Posted::Done(r),
                RecvOutcome::Pending { id, done } => Posted::Pending {
                    id: RecvId {
                        shm: Some(id),
                        mpi: None,
                    },
                    done,
                },
            });
        };
        let (group, rank_of) = (&self.group, &self.rank_of);
        if pat.source.is_some() {
            // A message claimed from MPI but parked in the mailbox comes first.
            if shm.parked(local) {
                if let Some((env, body)) = shm.improbe(local, &pat) {
                    return Ok(Posted::Done(dst.fill(body.bytes(), &env)));
                }
            }
            let id = mpi.post(me, pat, group, rank_of, dst, None, None);
            return Ok(Posted::Kept { id });
        }
        // SAFETY: the MPI side fills its alias only after withdrawing the
        // mailbox receive (`Shm::cancel_recv` succeeded), and vice versa.
        let alias = unsafe { dst.alias() };
        Ok(match shm.recv(local, pat, dst) {
            RecvOutcome::Done(r) => Posted::Done(r),
            RecvOutcome::Pending { id, done } => {
                let mid = mpi.post(me, pat, group, rank_of, alias, Some(done.clone()), Some(id));
                Posted::Pending {
                    id: RecvId {
                        shm: Some(id),
                        mpi: Some(mid),
                    },
                    done,
                }
            }
        })
    }

    /// Withdraws a posted receive nothing has matched; `false` if something has.
    pub(crate) fn cancel_recv(&self, id: RecvId) -> bool {
        if let Some(m) = id.mpi {
            match self.mpi().cancel(self.world_rank(), m) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => crate::transport::mpi::abort(&format!(
                    "rank {}: cancelling a receive failed: {e}",
                    self.world_rank()
                )),
            }
        }
        match id.shm {
            Some(s) => self.world.shm.cancel_recv(self.me(), s),
            None => true,
        }
    }

    /// Moves arrived messages into matching, so pending operations see them:
    /// this rank's fastboxes and rings and, in cluster mode, MPI (ready-send queries,
    /// registered receives, nonblocking sends). Tests and `wait_any` call this
    /// before looking.
    pub(crate) fn progress(&self) {
        self.world.shm.progress(self.me());
        if let Some(mpi) = &self.world.mpi {
            if let Err(e) = mpi.progress(&self.world.shm, self.world_rank()) {
                crate::transport::mpi::abort(&format!(
                    "rank {}: MPI progress failed: {e}",
                    self.world_rank()
                ));
            }
        }
    }

    /// One turn of a wait on another thread (MPI's buffer detaching, or
    /// another rank of this process resizing it): progress on both transports, then the core
    /// is yielded to that thread; `Err` once a rank of this process has failed.
    pub(crate) fn keep_progressing(&self) -> Result<()> {
        self.world.live.check()?;
        self.progress();
        std::thread::yield_now();
        Ok(())
    }

    /// Cluster mode's wait: polls `poll` and drives progress on both transports
    /// (never parks: MPI messages wake no one). Gives up when a rank of this
    /// process fails, or when `peer` (a rank of this process) has finished.
    pub(crate) fn cluster_wait<T>(
        &self,
        peer: Option<Peer>,
        mut poll: impl FnMut() -> Option<Result<T>>,
    ) -> Result<T> {
        let live = &self.world.live;
        let mut spins = 0u32;
        loop {
            if let Some(v) = poll() {
                return v;
            }
            self.progress();
            if let Some(v) = poll() {
                return v;
            }
            live.check()?;
            if let Some(p) = peer.filter(|&p| live.has_finished(p)) {
                return poll().unwrap_or(Err(Error::PeerFinished { rank: p.rank }));
            }
            spins = spins.saturating_add(1);
            if spins < live.spin_budget() {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// `rank` as the peer a wait depends on.
    pub(crate) fn peer(&self, rank: usize) -> Result<Peer> {
        let world = self.world_of(rank)?;
        Ok(Peer {
            rank,
            world,
            local: self.world.layout.local(world),
        })
    }

    /// The peer a receive depends on: its source, unless it takes any source.
    pub(crate) fn source_peer(&self, pat: &Pattern) -> Result<Option<Peer>> {
        pat.source.map(|s| self.peer(s)).transpose()
    }

    /// Puts a tiny synchronous send to `dest` in the pair's fastbox (see
    /// `Shm::ssend_fastbox`): `Some(n)` to settle with
    /// [`settle_sync`](Self::settle_sync). Embedded only: a cluster rank must
    /// keep making MPI progress while it waits (`settle_send`).
    pub(crate) fn ssend_fastbox(&self, dest: Peer, env: &Envelope, bytes: &[u8]) -> Option<u64> {
        let to = dest.local.filter(|_| self.world.mpi.is_none())?;
        self.world.shm.ssend_fastbox(self.me(), to, env, bytes)
    }

    /// Waits until the tiny synchronous send to local `dest` that the fastbox
    /// numbered `n` has been matched (see `Shm::wait_sync`).
    pub(crate) fn settle_sync(&self, dest: Peer, n: u64) -> Result<()> {
        let to = dest.local.expect("fastbox sends go to local ranks");
        let (shm, live) = (&self.world.shm, &self.world.live);
        shm.wait_sync(self.me(), to, n, live, dest)
    }

    /// Whether the tiny synchronous send to local `dest` numbered `n` has been
    /// matched.
    pub(crate) fn sync_matched(&self, dest: Peer, n: u64) -> bool {
        let to = dest.local.expect("fastbox sends go to local ranks");
        self.world.shm.sync_matched(self.me(), to, n)
    }

    /// Waits for a pending send. If a rank fails, or the receiver finishes without
    /// receiving it, withdraws the send; if the receiver is already copying, waits
    /// for it: either way the sender's buffer is released only once the transport
    /// no longer refers to it.
    pub(crate) fn settle_send(&self, dest: Peer, done: &Arc<Completion>) -> Result<()> {
        if let Some(mpi) = &self.world.mpi {
            // A failure here aborts the job, so there is nothing to withdraw.
            if dest.local.is_none() {
                let live = &self.world.live;
                return mpi.wait_send(&self.world.shm, self.world_rank(), done, || live.check());
            }
            return self.cluster_wait(None, || done.poll().map(|r| r.map(drop)));
        }
        let to = dest.local.expect("embedded peers are local");
        // Draining this rank's own fastboxes and rings meanwhile: its receives
        // posted earlier may match a waiting synchronous send there, whose
        // sender may be the one this send waits for (see `Shm::wait_sync`).
        let (shm, me) = (&self.world.shm, self.me());
        match done.wait(&self.world.live, dest, || shm.progress(me)) {
            Ok(_) => Ok(()),
            Err(e) if self.world.shm.cancel_send(to, done) => Err(e),
            Err(_) => {
                done.wait_regardless(&self.world.live);
                Ok(())
            }
        }
    }

    /// Waits for a nonblocking send to another process whose request its
    /// scope keeps: `test` says whether it has completed. Tests on every
    /// poll; every 64th also checks for a failed rank of this process and
    /// makes full progress (ready-send queries, this rank's receives), as
    /// this rank's other waits do.
    pub(crate) fn wait_mpi_send(&self, mut test: impl FnMut() -> Result<bool>) -> Result<()> {
        let live = &self.world.live;
        let mut polls = 0u32;
        loop {
            if test()? {
                return Ok(());
            }
            polls = polls.wrapping_add(1);
            if polls % 64 == 0 {
                live.check()?;
                self.progress();
                if polls > 1 << 16 {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Waits for a kept receive (see [`Posted::Kept`]) and takes its outcome:
    /// tests its own MPI request between full progress passes, as
    /// [`settle_recv`](Self::settle_recv) does, without a completion in
    /// between. If a rank of this process fails meanwhile, withdraws the
    /// receive; if it cannot (a ready send is on its way into it), waits for
    /// it regardless: the buffer is never given back while MPI may write it.
    /// Returns only once the receive is no longer registered.
    pub(crate) fn settle_kept(&self, id: u64) -> Result<Status> {
        let (mpi, me, live) = (self.mpi(), self.world_rank(), &self.world.live);
        let mut spins = 0u32;
        let mut watch = true;
        loop {
            match mpi.test_posted(me, id, QUICK_TESTS) {
                Ok(Some(outcome)) => return outcome,
                Ok(None) => {}
                Err(e) => match mpi.cancel(me, id) {
                    Ok(true) => return Err(e),
                    _ => crate::transport::mpi::abort(&format!(
                        "rank {me}: waiting for a receive failed: {e}"
                    )),
                },
            }
            self.progress();
            // An outcome a progress pass (of this or another thread of the
            // rank) left in the registry.
            match mpi.take_outcome(me, id) {
                Some(Some(outcome)) => return outcome,
                Some(None) => {}
                None => return Err(Error::InactiveRequest), // nothing can come
            }
            if watch {
                if let Err(e) = live.check() {
                    match mpi.cancel(me, id) {
                        Ok(true) => return Err(e),
                        Ok(false) => watch = false, // matched: its message is coming
                        Err(e) => crate::transport::mpi::abort(&format!(
                            "rank {me}: cancelling a receive failed: {e}"
                        )),
                    }
                }
            }
            spins = spins.saturating_add(1);
            if spins < live.spin_budget() {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Ends kept receive `id` whose request did not take its outcome (a
    /// scope's end): withdraws it, or, when a message is already on its way
    /// into it, waits for that and drops the outcome.
    pub(crate) fn discard_kept(&self, id: u64) {
        let (mpi, me, live) = (self.mpi(), self.world_rank(), &self.world.live);
        let mut spins = 0u32;
        loop {
            match mpi.take_outcome(me, id) {
                None | Some(Some(_)) => return, // taken earlier, or now
                Some(None) => {}
            }
            match mpi.cancel(me, id) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => crate::transport::mpi::abort(&format!(
                    "rank {me}: cancelling a receive failed: {e}"
                )),
            }
            self.progress();
            spins = spins.saturating_add(1);
            if spins >= live.spin_budget() {
                std::thread::yield_now();
            }
        }
    }

    /// Waits for a pending receive; like [`settle_send`](Self::settle_send), never
    /// returns while a sender may still write into the buffer.
    pub(crate) fn settle_recv(
        &self,
        id: RecvId,
        done: &Arc<Completion>,
        source: Option<Peer>,
    ) -> Result<Status> {
        let me = self.me();
        let waited = match &self.world.mpi {
            Some(mpi) => self.cluster_wait(source, || {
                // Between full progress passes, a receive with an MPI request
                // of its own (posted for a ready send) tests only that.
                if let Some(m) = id.mpi {
                    if let Err(e) = mpi.test_posted(self.world_rank(), m, QUICK_TESTS) {
                        return Some(Err(e));
                    }
                }
                done.poll().map(Ok)
            }),
            None => self.world.shm.wait_recv(me, done, &self.world.live, source),
        };
        match waited {
            Ok(outcome) => outcome,
            Err(e) if self.cancel_recv(id) => {
                // Withdrawn: complete it, so nothing else (the scope's end) waits on it.
                done.complete(Err(e.clone()));
                Err(e)
            }
            Err(_) => {
                done.wait_regardless(&self.world.live);
                done.outcome().expect("completed")
            }
        }
    }
}

/// The MPI call of a send in `mode` to another process: its own for every
/// mode but a ready send, which may be refused and goes through its offer or
/// handshake first (`Mpi::rsend`).
pub(crate) fn mpi_mode(mode: &Mode) -> Option<SendMode> {
    match mode {
        Mode::Standard => Some(SendMode::Standard),
        Mode::Buffered(_) => Some(SendMode::Buffered),
        Mode::Synchronous => Some(SendMode::Synchronous),
        Mode::Ready => None,
    }
}
