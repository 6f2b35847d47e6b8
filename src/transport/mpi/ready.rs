//! Ready sends between processes: the query handshake (`MPI_Rsend` only once the
//! receiver has said its receive is posted at the MPI level) and, between
//! processes of one node, the offers that make it unnecessary (see
//! [`super::offers`]): raising, reviewing, withdrawing and completing offered
//! receives, and the `MPI_Irecv`s posted ahead for them.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::Relaxed;

use mpi::ffi;

use super::offers::{self, Offer};
use super::registry::{Pending, Registry, Reserve, Reserves, Senders, RESERVE_BYTES};
use super::{
    arrived, byte, cancel_recv, check, claim_marker, count, improbe, iprobe, irecv, mrecv_raw,
    send_small, tally, Arrived, Comm, Handle, Lanes, Mpi, Remote,
};
use crate::matching::{Envelope, Pattern};
use crate::transport::shm::{RecvBuf, SendOutcome, Shm};
use crate::{Result, Status};

/// A ready-send query: [ctx, sending thread, tag, reply id, message bytes].
pub(super) type Query = [i64; 5];

/// Tag of a ready send's marker on a data lane: above every user tag.
pub(super) const MARKER_TAG: c_int = crate::TAG_UB + 1;

/// Ready-send bookkeeping of one thread: queries waiting for their marker, and
/// markers that arrived before their query (by process and id).
#[derive(Default)]
pub(super) struct ReadyState {
    queries: Vec<(usize, Query)>,
    pub(super) markers: std::collections::HashSet<(usize, c_int)>,
}

/// What [`Mpi::settle_ready`] found.
pub(super) enum Settled {
    /// The receive is complete, with this outcome.
    Done(Result<Status>),
    /// Its message has not come yet.
    Waiting,
    /// Its offer has been taken: the sender's message is on its way to it.
    Taken,
    /// Its offer was withdrawn: it is a plain registered receive again.
    Plain,
}

/// The offer of receive `p`, with its lane's `count`.
fn offer_of(p: &Pending, count: u64) -> Offer {
    offer_for(
        &p.pat,
        p.dst.as_ref().expect("waiting receives hold a buffer"),
        count,
    )
}

/// The offer of a receive matching `pat` into `dst`, with its lane's
/// received `count`.
fn offer_for(pat: &Pattern, dst: &RecvBuf, count: u64) -> Offer {
    Offer {
        ctx: pat.ctx,
        tag: pat.tag,
        count,
        cap: dst.raw().1.min(c_int::MAX as usize),
        elem: dst.elem().size,
    }
}

impl Mpi {
    /// Ready send (`MPI_Rsend`, or `MPI_Irsend` when `nonblocking`) after the
    /// handshake described in the module docs. `NotReady` when the receiver has
    /// no matching receive posted (nothing sent).
    ///
    /// # Safety
    /// With `nonblocking`, `data` must stay valid until the request completes.
    pub unsafe fn rsend(
        &self,
        shm: &Shm,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
        nonblocking: bool,
    ) -> Result<SendOutcome> {
        // SAFETY: passed on to the caller.
        if let Some(outcome) = unsafe { self.rsend_offered(from, to, env, data, nonblocking)? } {
            return Ok(outcome);
        }
        let (lane, lane_dest) = self.route(env.ctx, from, to);
        let (q, d) = self.split(to);
        let n = count(data.len())?;
        let id = self.next_id.fetch_add(1, Relaxed) & ((1 << 28) - 1);
        let query: Query = [
            i64::from(env.ctx),
            self.thread_of(from) as i64,
            i64::from(env.tag),
            i64::from(id),
            i64::from(n),
        ];
        let world_dest = q as c_int;
        let marker = [id];
        send_small(
            &marker,
            (lane_dest, MARKER_TAG, lane.0),
            "MPI_Send (ready marker)",
        )?;
        send_small(
            &query,
            (world_dest, 2 * d as c_int, self.control.0),
            "MPI_Send (ready query)",
        )?;
        // Wait for the answer, answering queries to us meanwhile.
        let mut answer = [0i64; 1];
        let mut polls = 0u32;
        loop {
            if let Some(mut st) = iprobe(world_dest, 2 * id + 1, self.control.0, "MPI_Iprobe")? {
                // SAFETY: `answer` is valid for the receive of 8 bytes.
                check(
                    unsafe {
                        ffi::MPI_Recv(
                            answer.as_mut_ptr().cast(),
                            8,
                            byte(),
                            world_dest,
                            2 * id + 1,
                            self.control.0,
                            &mut st,
                        )
                    },
                    "MPI_Recv (ready answer)",
                )?;
                break;
            }
            self.progress(shm, from)?;
            polls = polls.wrapping_add(1);
            if polls > 1 << 12 {
                std::thread::yield_now();
            }
        }
        if answer[0] == 0 {
            return Ok(SendOutcome::NotReady);
        }
        let lanes = self.lanes(env.ctx);
        tally(self.lane_entry(&lanes.sent, self.thread_of(from), d, self.node_of(q)));
        // SAFETY: the receive is posted for exactly this message (the answer
        // said so); the caller keeps `data` valid.
        unsafe { self.rsend_posted(from, data, (world_dest, id, self.ready), nonblocking) }
    }

    /// A ready send that takes its receiver's offer (see [`offers`]); `None`
    /// when there is none it may take.
    ///
    /// # Safety
    /// As [`rsend`](Self::rsend).
    unsafe fn rsend_offered(
        &self,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
        nonblocking: bool,
    ) -> Result<Option<SendOutcome>> {
        let s = self.thread_of(from);
        let Remote { q, s: d, node, .. } = self.remote(to);
        let (Some(board), Some(node)) = (&self.board, node) else {
            return Ok(None);
        };
        let slot = board.taken_at(s, node, d);
        let sent = &self.lanes(env.ctx).sent[board.counter_at(s, d, node)];
        let before = sent.load(Relaxed);
        if !slot.take(|offer| offer.accepts(env.ctx, env.tag, before, data.len())) {
            return Ok(None);
        }
        sent.fetch_add(1, Relaxed);
        let at = (q as c_int, board.tag(s, d), board.comm);
        // SAFETY: taking the offer proved its MPI_Irecv posted, for at least
        // `data.len()` bytes; the caller keeps `data` valid.
        unsafe { self.rsend_posted(from, data, at, nonblocking) }.map(Some)
    }

    /// `MPI_Rsend` (or `MPI_Irsend` when `nonblocking`) of `data` to
    /// (process, tag, communicator) `at`.
    ///
    /// # Safety
    /// A receive for the message must be posted there; with `nonblocking`,
    /// `data` must stay valid until the request completes.
    ///
    /// Inlined into its callers: returned through memory, its outcome was
    /// read back with wider loads than the stores that wrote it, and right
    /// after `MPI_Rsend`'s stores to the peer's lines such a load waits for
    /// them (the hottest instruction of `Mpi::rsend` under `perf`). TSC
    /// timing of rank 0's ready ping-pong: the send went from 115–138 to
    /// 80–88 ns.
    #[inline(always)]
    unsafe fn rsend_posted(
        &self,
        from: usize,
        data: &[u8],
        (dest, tag, comm): (c_int, c_int, Comm),
        nonblocking: bool,
    ) -> Result<SendOutcome> {
        let n = count(data.len())?;
        let buf = data.as_ptr() as *const c_void;
        if nonblocking {
            // SAFETY: zeroed handle out-parameter; caller keeps data valid.
            let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
            check(
                unsafe { ffi::MPI_Irsend(buf, n, byte(), dest, tag, comm.0, &mut req) },
                "MPI_Irsend",
            )?;
            self.track(from, req)
        } else {
            // SAFETY: data valid for the blocking call; the receive is posted.
            check(
                unsafe { ffi::MPI_Rsend(buf, n, byte(), dest, tag, comm.0) },
                "MPI_Rsend",
            )?;
            Ok(SendOutcome::Done)
        }
    }

    /// Whether a ready-send query for thread `t` is waiting to be answered.
    pub(super) fn has_ready_queries(&self, t: usize) -> Result<bool> {
        let waiting = !self.ready_state[t]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queries
            .is_empty();
        // SAFETY: reading a constant exported by mpi-sys.
        let any_source = unsafe { ffi::RSMPI_ANY_SOURCE };
        Ok(waiting
            || iprobe(
                any_source,
                2 * t as c_int,
                self.control.0,
                "MPI_Iprobe (ready queries)",
            )?
            .is_some())
    }

    /// Tests the `MPI_Irecv` of a receive withdrawn for a ready send or offered
    /// to one, in place, and completes the receive once it has arrived
    /// ([`poll_ready`](Self::poll_ready)): a progress pass's look at it. An
    /// offered receive still waiting is reviewed
    /// ([`review_offer`](Self::review_offer)); a wait's quick tests between
    /// passes ([`test_posted`](Self::test_posted)) only poll.
    pub(super) fn settle_ready(
        &self,
        t: usize,
        p: &mut Pending,
        reserves: &mut Reserves,
    ) -> Result<Settled> {
        match self.poll_ready(t, p, reserves) {
            Some(outcome) => Ok(Settled::Done(outcome)),
            None if p.offer.is_none() => Ok(Settled::Waiting),
            None => self.review_offer(t, p),
        }
    }

    /// One test of the `MPI_Irecv` of receive `p` of thread `t`, withdrawn
    /// for a ready send or offered to one: its outcome once it has arrived
    /// ([`complete_ready`](Self::complete_ready)), or MPI failed. Inlined into
    /// a wait's polling loop, whose every turn it is.
    #[inline(always)]
    pub(super) fn poll_ready(
        &self,
        t: usize,
        p: &mut Pending,
        reserves: &mut Reserves,
    ) -> Option<Result<Status>> {
        let ready = p.ready.as_mut().expect("a withdrawn or offered receive");
        let (from, offered) = (p.ready_from, p.offer.is_some());
        let arrival = || {
            if offered {
                self.prefetch_offers(from, t);
            }
        };
        let arrived = match test_request(&mut ready.0, arrival) {
            Ok(None) => return None,
            Ok(Some(a)) => Ok(a),
            Err(e) => Err(e),
        };
        p.ready = None; // completed (MPI freed it), or failed
        Some(arrived.and_then(|a| self.complete_ready(t, p, reserves, a)))
    }

    /// Offered receive `p` of thread `t`, still waiting: offers it again when
    /// its lane's count has moved on, and withdraws it when a message on its
    /// data lane could fill it (see [`offers`]).
    #[cold]
    fn review_offer(&self, t: usize, p: &mut Pending) -> Result<Settled> {
        let Remote { q, s, .. } = p.ready_from;
        let lanes = self.lanes(p.pat.ctx);
        let received = self.lane_entry(&lanes.received, s, t, p.ready_from.node);
        let gen = p.offer.expect("an offered receive");
        let slot = self.offering(p.ready_from, t);
        let Some(offered) = slot.offered_count(gen) else {
            return Ok(Settled::Taken);
        };
        let count = received.expect("offers come from this node").load(Relaxed);
        if offered != count && slot.withdraw(gen) {
            p.offer = Some(slot.raise(&offer_of(p, count)));
        }
        // SAFETY: reading a constant exported by mpi-sys.
        let any_tag = unsafe { ffi::RSMPI_ANY_TAG };
        let src = lanes.mpi_rank[q].expect("the sender's process hosts the context");
        let lane = lanes.comms[s * self.threads + t].0;
        let waiting = iprobe(src, p.pat.tag.unwrap_or(any_tag), lane, "MPI_Iprobe")?;
        if waiting.is_some() && self.withdraw_offer(t, p)? {
            // The sender has moved on to other modes: stop offering on this
            // lane until its next ready send asks again.
            if let Some(used) = self.lane_entry(&lanes.ready_used, s, t, p.ready_from.node) {
                used.store(false, Relaxed);
            }
            return Ok(Settled::Plain);
        }
        Ok(Settled::Waiting)
    }

    /// Completes receive `p` of thread `t`, withdrawn for a ready send or
    /// offered to one, whose `MPI_Irecv` has received `a`.
    fn complete_ready(
        &self,
        t: usize,
        p: &mut Pending,
        reserves: &mut Reserves,
        a: Arrived,
    ) -> Result<Status> {
        let from = p.ready_from;
        tally(self.lane_entry(&self.lanes(p.pat.ctx).received, from.s, t, from.node));
        if let Some(gen) = p.offer.take() {
            self.offering(from, t).clear(gen);
        }
        let env = Envelope {
            ctx: p.pat.ctx,
            source: p
                .senders
                .borrow()
                .rank(from.world)
                .expect("the ready sender is one of the receive's"),
            tag: a.tag_of(&p.pat),
        };
        match (p.ready_sink.take(), p.dst.take()) {
            // A reserve's sink (see `offer`), or, checked up front, a sink
            // for what `dst` cannot take.
            (Some(sink), Some(dst)) => {
                let filled = dst.fill(&sink[..a.bytes], &env);
                if sink.len() == RESERVE_BYTES {
                    reserves.sinks.push(sink);
                }
                filled
            }
            // Received into `dst`, which the message was known to fit.
            _ => Ok(Status::new(env.source, env.tag, a.bytes)),
        }
    }

    /// Where thread `t` offers receives to thread `s` of process `q`.
    #[inline]
    fn offering(&self, from: Remote, t: usize) -> offers::Offering<'_> {
        let board = self.board.as_ref().expect("offers need the board");
        board.offering_at(
            from.node.expect("offers go to processes of this node"),
            from.s,
            t,
        )
    }

    /// Whether receive `p` of thread `t` is offered and its sender has taken
    /// the offer: the sender's message is on its way to it.
    pub(super) fn offer_taken(&self, t: usize, p: &Pending) -> bool {
        p.offer
            .is_some_and(|gen| self.offering(p.ready_from, t).offered_count(gen).is_none())
    }

    /// Starts fetching the two slots between thread `t` and thread `s` of
    /// process `q` (see [`Slot::prefetch`](offers::Slot::prefetch)): where `t`
    /// offers to `s`, and where `s` offers to `t`. Called the moment `MPI_Test`
    /// finds an offered send from `s` arrived, before anything else is done
    /// with it (`MPI_Get_count`, counting, copying out): far apart, the send
    /// that follows still waits for these lines, and in `courier bench p2p`
    /// (8 B, two sets of about 120 alternating runs) starting them there rather
    /// than after the counting took the rows timed with the cores far apart from
    /// +0.136 to +0.110 and +0.140 to +0.119 µs over raw for `rsend`, and from
    /// +0.143 to +0.117 and +0.142 to +0.119 for `irsend`; as siblings the
    /// figures stayed within 0.01 µs. A thread that takes ready sends from a peer
    /// usually offers it its next receive and ready-sends back. Each slot is
    /// written last by the other process, so raising or taking an offer waits
    /// for its line to cross between cores; fetched early, that crossing
    /// overlaps the end of the receive and the user's code. On a host whose
    /// cores hand a line over in 0.08 µs (flag ping-pong), an 8-byte `rsend`
    /// ping-pong went from +0.56 to +0.41 µs over raw `MPI_Rsend`, and
    /// `irsend` from +0.47 to +0.38 (medians of 5 alternating runs).
    ///
    /// Not called again when the next offer is raised: by then the lines are
    /// on their way, and a `PREFETCHW` there stalled (its first one held half
    /// of this function's samples under `perf`). Without that call,
    /// `courier bench p2p` under `mpirun -n 2` put `rsend` at +0.098 to
    /// +0.107 µs over raw at 8 B, against +0.114 to +0.115 with it (the
    /// alternating rounds of two A/B runs in which raw took 0.18–0.19 µs).
    fn prefetch_offers(&self, from: Remote, t: usize) {
        let (Some(board), Some(node)) = (&self.board, from.node) else {
            return;
        };
        board.offering_at(node, from.s, t).prefetch();
        board.taken_at(t, node, from.s).prefetch();
    }

    /// Withdraws `p`'s offer and cancels its `MPI_Irecv`, leaving a plain
    /// registered receive; `false` (and nothing changed) when its sender has
    /// taken the offer: the message is on its way to this receive.
    pub(super) fn withdraw_offer(&self, t: usize, p: &mut Pending) -> Result<bool> {
        let gen = p.offer.expect("an offered receive");
        if !self.offering(p.ready_from, t).withdraw(gen) {
            return Ok(false);
        }
        let mut req = p
            .ready
            .take()
            .expect("an offered receive has its MPI_Irecv")
            .0;
        p.offer = None;
        // No sender can take a withdrawn offer, so nothing can have matched.
        cancel_recv(&mut req)?;
        p.ready_sink = None; // a reserve's, if the offer was made with one
        Ok(true)
    }

    /// Offers thread `t`'s receives that can have one (see [`offers`]): a
    /// receive from one rank of another process on this node, over a lane
    /// that has carried a ready send, with no earlier receive that a message
    /// from that rank could match, while that pair has no offer raised.
    pub(super) fn refresh_offers(&self, t: usize, registry: &mut Registry) -> Result<()> {
        if self.board.is_none() || !self.offers_wanted[t].load(Relaxed) {
            return Ok(());
        }
        let Registry {
            receives,
            earlier,
            reserves,
            ..
        } = registry;
        earlier.clear();
        for p in receives.iter_mut() {
            if p.done.is_done() {
                continue;
            }
            let from = match p.senders {
                Senders::Rank { from, .. } => Some(from),
                Senders::Any(_) => None,
            };
            let world = from.map(|f| f.world);
            let first = !earlier
                .iter()
                .any(|&(ctx, w)| ctx == p.pat.ctx && (w.is_none() || w == world));
            earlier.push((p.pat.ctx, world));
            let Some(from) = from.filter(|_| first && p.ready.is_none() && p.lane.is_none()) else {
                continue;
            };
            let Some(i) = self.counter(from.s, t, from.node) else {
                continue;
            };
            let lanes = self.lanes(p.pat.ctx);
            if lanes.ready_used[i].load(Relaxed) {
                self.offer(t, p, reserves, from, lanes.received[i].load(Relaxed))?;
            }
        }
        Ok(())
    }

    /// The counter index of the lane from `from` (on this node) into thread
    /// `t`, when that lane has carried a ready send: its receives are offered.
    fn ready_lane(&self, lanes: &Lanes, from: Remote, t: usize) -> Option<usize> {
        self.counter(from.s, t, from.node)
            .filter(|&i| lanes.ready_used[i].load(Relaxed))
    }

    /// Registers receive `pat` of thread `t` into `dst`, from `rank` of the
    /// communicator (`from`), as the registry's solo receive (see
    /// [`Registry::solo`]), when nothing is registered and it can be offered
    /// with the reserve posted for `from`: what [`post`](Self::post),
    /// [`post_first`](Self::post_first) and [`offer`](Self::offer) would
    /// register, written in place. Hands `dst` back when it cannot be.
    pub(super) fn post_solo(
        &self,
        t: usize,
        registry: &mut Registry,
        pat: Pattern,
        (rank, from): (usize, Remote),
        dst: RecvBuf,
        id: u64,
    ) -> std::result::Result<(), RecvBuf> {
        let lanes = self.lanes(pat.ctx);
        let Some(i) = self
            .ready_lane(lanes, from, t)
            .filter(|_| self.offers_wanted[t].load(Relaxed))
        else {
            return Err(dst);
        };
        let slot = self.offering(from, t);
        if !slot.is_free() {
            return Err(dst);
        }
        let offer = offer_for(&pat, &dst, lanes.received[i].load(Relaxed));
        let Some((req, sink)) = registry.reserves.take_for(from, self.threads, offer.cap) else {
            return Err(dst);
        };
        let solo = &mut registry.solo;
        solo.ready_sink = Some(sink);
        solo.ready = Some(req);
        solo.pat = pat;
        solo.senders = Senders::Rank { rank, from };
        solo.dst = Some(dst);
        solo.ready_from = from;
        solo.id = id;
        solo.offer = Some(slot.raise(&offer));
        registry.solo_live = true;
        Ok(())
    }

    /// [`lane_post`](Self::lane_post) and [`refresh_offers`](Self::refresh_offers)
    /// for thread `t`'s only registered receive, just posted: with nothing
    /// registered before it, it is the first receive its sender's messages
    /// meet, so it is offered (a lane that carries ready sends) or posted on
    /// its lane (an exact tag and a small buffer) without looking at others.
    pub(super) fn post_first(&self, t: usize, registry: &mut Registry) -> Result<()> {
        let Registry {
            receives, reserves, ..
        } = registry;
        let p = receives.back_mut().expect("just registered");
        let Senders::Rank { from, .. } = p.senders else {
            return Ok(());
        };
        let lanes = self.lanes(p.pat.ctx);
        if let Some(i) = self.ready_lane(lanes, from, t) {
            if self.offers_wanted[t].load(Relaxed) {
                self.offer(t, p, reserves, from, lanes.received[i].load(Relaxed))?;
            }
            return Ok(());
        }
        // Its lane carries no ready sends, and nothing is registered before
        // it (lane_post's look at earlier receives finds none).
        self.lane_post(t, registry)
    }

    /// Offers receive `p` of thread `t` to `from` (see [`offers`]) with its
    /// lane's received `count`, if their slot is free: posts its `MPI_Irecv`
    /// on the offers communicator and raises the flag.
    ///
    /// A receive of at most [`RESERVE_BYTES`] takes the [`Reserve`] posted
    /// for `from` while this thread last waited for it, when there is one,
    /// and its message is copied from the reserve's sink: the `MPI_Irecv`
    /// then costs nothing between the receive's posting and the user's next
    /// send, which in a ping-pong is the path from one message to the next.
    /// An 8-byte `rsend` ping-pong between two processes went from +0.24 to
    /// +0.19 µs over raw `MPI_Rsend`, `irsend` from +0.21 to +0.18 (medians
    /// of 6 alternating runs).
    fn offer(
        &self,
        t: usize,
        p: &mut Pending,
        reserves: &mut Reserves,
        from: Remote,
        count: u64,
    ) -> Result<()> {
        let board = self.board.as_ref().expect("offers need the board");
        let Remote { q, s, .. } = from;
        let slot = self.offering(from, t);
        if !slot.is_free() {
            return Ok(());
        }
        let offer = offer_of(p, count);
        let req = match reserves.take_for(from, self.threads, offer.cap) {
            Some((req, sink)) => {
                p.ready_sink = Some(sink);
                req
            }
            None => {
                if let Some(r) = reserves.of(from, self.threads).take() {
                    // Too small for this receive. Withdrawn first: MPI
                    // matches in posting order, and the sender's next offered
                    // send belongs to the receive posted below.
                    let (mut req, sink) = r.into_parts();
                    cancel_recv(&mut req.0)?;
                    reserves.sinks.push(sink);
                }
                let (ptr, _) = p
                    .dst
                    .as_ref()
                    .expect("waiting receives hold a buffer")
                    .raw();
                // SAFETY: the buffer holds `offer.cap` bytes and stays lent to
                // this receive until its completion, which waits for this
                // request (or its cancel).
                Handle(unsafe {
                    irecv(
                        ptr,
                        offer.cap as c_int,
                        (q as c_int, board.tag(s, t), board.comm.0),
                        "MPI_Irecv (offer)",
                    )?
                })
            }
        };
        p.ready = Some(req);
        p.ready_from = from;
        p.offer = Some(slot.raise(&offer));
        Ok(())
    }

    /// Posts thread `t`'s [`Reserve`] for `from`'s next offered send, unless
    /// one is posted: called while a receive offered to `from` waits, which
    /// in a ping-pong is time spent waiting for the other side anyway.
    pub(super) fn post_reserve(
        &self,
        t: usize,
        reserves: &mut Reserves,
        from: Remote,
    ) -> Result<()> {
        let Some(board) = self.board.as_ref().filter(|_| from.node.is_some()) else {
            return Ok(());
        };
        if reserves.of(from, self.threads).is_some() {
            return Ok(());
        }
        let mut sink = reserves
            .sinks
            .pop()
            .unwrap_or_else(|| vec![0; RESERVE_BYTES]);
        // SAFETY: the sink holds RESERVE_BYTES bytes, and no offered send is
        // longer than its offer's receive (at most RESERVE_BYTES when made
        // with a reserve). Its heap buffer stays put as the `Vec` moves, and
        // it is dropped or reused only after the request completed or was
        // cancelled (the offered receive's completion, `withdraw_offer`,
        // `offer`, or `Reserve`'s drop).
        let req = unsafe {
            irecv(
                sink.as_mut_ptr(),
                RESERVE_BYTES as c_int,
                (from.q as c_int, board.tag(from.s, t), board.comm.0),
                "MPI_Irecv (offer reserve)",
            )?
        };
        *reserves.of(from, self.threads) = Some(Reserve {
            req: Handle(req),
            sink,
        });
        Ok(())
    }

    /// Takes the ready-send queries for thread `t` off the control communicator
    /// and answers those whose marker has arrived (the others wait for theirs).
    ///
    /// Before answering, a progress pass claims every message that has
    /// arrived into the receives it matches: once a query's marker is here, so
    /// is every earlier message of its sender, and one of those may fill the
    /// first receive the ready send would otherwise be told is free.
    pub(super) fn answer_queries(&self, shm: &Shm, me: usize) -> Result<()> {
        let t = self.thread_of(me);
        // SAFETY: reading a constant exported by mpi-sys.
        let any_source = unsafe { ffi::RSMPI_ANY_SOURCE };
        let mut ready = self.ready_state[t]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let queries = 2 * t as c_int;
        while let Some((msg, st)) = improbe(
            any_source,
            queries,
            self.control.0,
            "MPI_Improbe (ready queries)",
        )? {
            let mut query: Query = [0; 5];
            let size = std::mem::size_of::<Query>();
            mrecv_raw(msg, query.as_mut_ptr().cast(), size)?;
            ready.queries.push((st.MPI_SOURCE as usize, query));
        }
        let mut answerable = Vec::new();
        let mut k = 0;
        while k < ready.queries.len() {
            let (q, [ctx, s, _, id, _]) = ready.queries[k];
            let (ctx, s, id) = (ctx as u32, s as usize, id as c_int);
            if !ready.markers.remove(&(q, id)) {
                // Claim markers from that lane until ours shows up.
                let lanes = self.lanes(ctx);
                let src = lanes.mpi_rank[q].expect("the sender's process hosts the context");
                let comm = lanes.comms[s * self.threads + t].0;
                while let Some(m) = claim_marker(comm, src)? {
                    tally(self.lane_entry(&lanes.received, s, t, self.node_of(q)));
                    ready.markers.insert((q, m));
                }
                if !ready.markers.remove(&(q, id)) {
                    k += 1;
                    continue;
                }
            }
            answerable.push(ready.queries.swap_remove(k));
        }
        // Probing lanes may set markers aside: not under this lock.
        drop(ready);
        if answerable.is_empty() {
            return Ok(());
        }
        self.progress_requests(shm, me)?;
        for (q, [ctx, s, tag, id, len]) in answerable {
            let (ctx, s, id) = (ctx as u32, s as usize, id as c_int);
            let yes = self.prepare_ready(shm, t, q, ctx, s, (tag as i32, id, len as usize))?;
            send_small(
                &[i64::from(yes)],
                (q as c_int, 2 * id + 1, self.control.0),
                "MPI_Send (ready answer)",
            )?;
        }
        Ok(())
    }

    /// If thread `t` has a receive posted that a ready send from thread `s` of
    /// process `q` would match, and no earlier message from that sender matches
    /// it first, withdraws the receive and posts an `MPI_Irecv` for the ready
    /// send. Called once the send's marker has arrived, so every earlier message
    /// from that sender on that lane is visible to `MPI_Iprobe`. A message the
    /// receive cannot take (too long, or not whole elements) is received into a
    /// buffer of its own size, so MPI never truncates: Open MPI overruns the
    /// buffer of a truncated rendezvous receive (see [`super::Scratch`]).
    fn prepare_ready(
        &self,
        shm: &Shm,
        t: usize,
        q: usize,
        ctx: u32,
        s: usize,
        (tag, id, len): (i32, c_int, usize),
    ) -> Result<bool> {
        let lanes = self.lanes(ctx);
        let src = lanes.mpi_rank[q].expect("the sender's process hosts the context");
        let lane = lanes.comms[s * self.threads + t].0;
        let world = q * self.threads + s;
        if let Some(i) = self.counter(s, t, self.node_of(q)) {
            // This lane carries ready sends: offer its receives from now on.
            lanes.ready_used[i].store(true, Relaxed);
            self.offers_wanted[t].store(true, Relaxed);
        }
        let mut pending = self.pending[t].lock();
        pending.enlist_solo();
        let Registry { receives, pool, .. } = &mut *pending;
        let mut candidates = receives.iter_mut().filter(|p| {
            !p.done.is_done()
                && p.pat.ctx == ctx
                && p.senders.borrow().rank(world).is_some()
                && p.pat.tag.is_none_or(|g| g == tag)
        });
        // The first receive not spoken for: withdrawn for an earlier ready send,
        // or offered to this sender, which took the offer before this query.
        let p = loop {
            let Some(p) = candidates.next() else {
                return Ok(false);
            };
            if let Some(lane) = p.lane.as_mut() {
                // Off its lane, so the ready send's MPI_Irecv takes its place.
                // Every earlier message of the sender has arrived (the marker
                // has) and MPI matched it to a posted receive: no probe below
                // can find one, and later lane-posted receives keep their order.
                if let Some(bytes) = lane.withdraw()? {
                    let outcome = self.lane_arrived(t, p, pool, bytes);
                    p.done.complete(outcome); // filled: try the next one
                    continue;
                }
                pool.finish(p.lane.take().expect("just withdrawn"), 0);
            }
            if !(p.ready.is_none() || (p.offer.is_some() && self.withdraw_offer(t, p)?)) {
                continue;
            }
            // SAFETY: reading a constant exported by mpi-sys.
            let any_tag = unsafe { ffi::RSMPI_ANY_TAG };
            let earlier = iprobe(src, p.pat.tag.unwrap_or(any_tag), lane, "MPI_Iprobe")?;
            if earlier.is_some_and(|st| st.MPI_TAG != MARKER_TAG) {
                return Ok(false); // an earlier message from this sender takes it
            }
            if p.shm_id.is_some_and(|id| !shm.cancel_recv(t, id)) {
                continue; // filled over shared memory meanwhile: try the next
            }
            break p;
        };
        let dst = p.dst.as_ref().expect("waiting receives hold a buffer");
        let (mut ptr, cap) = dst.raw();
        if len > cap || dst.elem().check(len).is_err() {
            let sink = p.ready_sink.insert(vec![0; len]);
            ptr = sink.as_mut_ptr();
        }
        // SAFETY: the buffer (or sink, which has room for the whole message)
        // stays lent to this receive until its completion (which `progress`
        // sets after MPI_Test).
        let req = unsafe {
            irecv(
                ptr,
                count(len)?,
                (q as c_int, id, self.ready.0),
                "MPI_Irecv (ready)",
            )?
        };
        p.ready = Some(Handle(req));
        p.ready_from = self.remote(world);
        p.pat.tag = Some(tag);
        Ok(true)
    }
}

/// `MPI_Test` of receive `req`: what arrived, once it has completed (MPI then
/// sets `req` to the null request). `arrival` runs first, the moment the test
/// finds it complete.
fn test_request(req: &mut ffi::MPI_Request, arrival: impl FnOnce()) -> Result<Option<Arrived>> {
    let mut flag: c_int = 0;
    // SAFETY: zeroed status out-parameter; the request is valid or null.
    let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    check(
        unsafe { ffi::MPI_Test(req, &mut flag, &mut st) },
        "MPI_Test",
    )?;
    Ok((flag != 0).then(|| {
        arrival();
        arrived(&st)
    }))
}
