//! What a thread of the MPI transport keeps of its receives: the registry of
//! those that may match a message from another process ([`Registry`], one
//! [`Pending`] entry each), the `MPI_Irecv`s posted ahead for ready-send offers
//! ([`Reserves`]), and the regions of lane-posted receives ([`LanePool`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use mpi::ffi;

use super::{cancel_recv, Handle, LaneRecv, Mpi, Pattern, Remote, Scratch};
use crate::sync::Completion;
use crate::transport::shm::RecvBuf;
use crate::{Result, Status};

/// A receive that may match a message from another process.
pub(super) struct Pending {
    pub(super) pat: Pattern,
    pub(super) senders: Senders<Arc<HashMap<usize, usize>>>,
    pub(super) dst: Option<RecvBuf>,
    pub(super) done: Done,
    /// Also posted in the shared-memory mailbox under this id (`ANY_SOURCE`).
    pub(super) shm_id: Option<u64>,
    /// Withdrawn for a ready send: the MPI receive posted for it.
    pub(super) ready: Option<Handle<ffi::MPI_Request>>,
    /// The ready sender it was withdrawn for or offered to.
    pub(super) ready_from: Remote,
    /// Where that ready send lands instead of `dst` when `dst` cannot take it.
    pub(super) ready_sink: Option<Vec<u8>>,
    /// Offered to its sender (see [`super::offers`]): the offer's generation; `ready`
    /// then holds the `MPI_Irecv` posted for it.
    pub(super) offer: Option<u64>,
    /// Posted on its lane at the MPI level ([`Mpi::lane_post`]): MPI matches
    /// it, into a region of its own, the moment its message arrives.
    pub(super) lane: Option<LaneRecv>,
    pub(super) id: u64,
}

/// Where a registered receive's outcome goes.
pub(super) enum Done {
    /// To a completion its request shares: an `ANY_SOURCE` receive, which
    /// senders over shared memory may fill as well. Completed, it leaves the
    /// registry.
    Shared(Arc<Completion>),
    /// Into the entry itself, which stays registered until its request takes
    /// the outcome ([`Mpi::take_outcome`]): a receive from one rank of another
    /// process, which only this registry fills, under its lock. Nothing to
    /// allocate, share or recycle per receive.
    Kept(Option<Result<Status>>),
}

impl Done {
    pub(super) fn is_done(&self) -> bool {
        match self {
            Done::Shared(c) => c.is_done(),
            Done::Kept(outcome) => outcome.is_some(),
        }
    }

    /// Completes with `outcome`; the first completion wins.
    pub(super) fn complete(&mut self, outcome: Result<Status>) {
        match self {
            Done::Shared(c) => c.complete(outcome),
            Done::Kept(kept) => {
                kept.get_or_insert(outcome);
            }
        }
    }
}

/// Completes registered receive `i` with `outcome`; `true` when it stays
/// registered (a kept outcome, for its request to take), `false` when it has
/// left the registry.
pub(super) fn finish(receives: &mut VecDeque<Pending>, i: usize, outcome: Result<Status>) -> bool {
    receives[i].done.complete(outcome);
    if let Done::Kept(_) = receives[i].done {
        return true;
    }
    take(receives, i);
    false
}

/// Whom a receive or probe takes messages from.
pub(super) enum Senders<M> {
    /// Its one source: its rank in the communicator, and where it lives.
    Rank { rank: usize, from: Remote },
    /// Any member of its communicator: `M` maps each member's world rank to
    /// its rank in the communicator.
    Any(M),
}

impl<M> Senders<M> {
    /// Of `pat`'s source (a rank of `group`), or of any member: `any()`.
    pub(super) fn of(pat: &Pattern, group: &[usize], mpi: &Mpi, any: impl FnOnce() -> M) -> Self {
        match pat.source {
            Some(rank) => Senders::Rank {
                rank,
                from: mpi.remote(group[rank]),
            },
            None => Senders::Any(any()),
        }
    }
}

impl Senders<Arc<HashMap<usize, usize>>> {
    pub(super) fn borrow(&self) -> Senders<&HashMap<usize, usize>> {
        match *self {
            Senders::Rank { rank, from } => Senders::Rank { rank, from },
            Senders::Any(ref m) => Senders::Any(m),
        }
    }
}

impl Senders<&HashMap<usize, usize>> {
    /// The communicator rank of world rank `world`, if it is one of these.
    pub(super) fn rank(&self, world: usize) -> Option<usize> {
        match *self {
            Senders::Rank { rank, from } => (from.world == world).then_some(rank),
            Senders::Any(m) => m.get(&world).copied(),
        }
    }
}

/// A thread's [`Registry`] behind a lock released with a plain store.
///
/// Only its own rank-thread takes it (to post, test, complete and cancel its
/// receives), so what counts is what a release costs, not waiting.
/// `std::sync::Mutex` releases with an atomic swap, which on x86 first waits for
/// every earlier store to reach the cache; a spin lock's release store does
/// not. Measured with `courier bench p2p` under `mpirun -n 2` (8 B, two sets of
/// about 120 runs alternating with the `Mutex` build, rows timed with the cores
/// as siblings): `rsend` +0.095 → +0.088 and +0.097 → +0.090 µs over raw,
/// `irsend` +0.098 → +0.093 and +0.104 → +0.096. When the lock is contended
/// after all, a waiter yields its core.
pub(super) type RegistryLock = spin::mutex::SpinMutex<Registry, spin::relax::Yield>;

/// The receives one thread has registered, in posting order.
#[derive(Default)]
pub(super) struct Registry {
    /// Receives mostly complete in posting order, so most removals are at the
    /// front: O(1) in a deque, where a `Vec` shifted every later entry (a
    /// window of 64 receives spent more time shifting than in MPI).
    pub(super) receives: VecDeque<Pending>,
    /// The thread's only registered receive, while it is offered with a
    /// reserve ([`Mpi::post_solo`]) and nothing else is registered: a
    /// ready-send ping-pong's every receive. It stays here, in place, so
    /// that registering and completing it write a few of its fields instead
    /// of moving all 328 bytes in and out of `receives`, and is tested and
    /// completed without a search. Registered only while `solo_live`; every
    /// other use of the registry first moves it to `receives`
    /// ([`enlist_solo`](Self::enlist_solo)), where it is the first receive.
    pub(super) solo: Pending,
    pub(super) solo_live: bool,
    /// Scratch list of [`Mpi::progress_requests`], kept for its allocation.
    pub(super) unfilled: Vec<Pattern>,
    /// Scratch list of [`Mpi::refresh_offers`]: (context, source) of earlier
    /// receives.
    pub(super) earlier: Vec<(u32, Option<usize>)>,
    /// The regions of lane-posted receives.
    pub(super) pool: LanePool,
    /// Receives posted ahead for offers.
    pub(super) reserves: Reserves,
}

impl Registry {
    /// Moves the solo receive, if there is one, to `receives` (which is then
    /// empty): any use of the registry but the solo's own fast paths sees
    /// every receive there, in posting order.
    #[inline]
    pub(super) fn enlist_solo(&mut self) {
        if self.solo_live {
            self.move_solo();
        }
    }

    #[cold]
    pub(super) fn move_solo(&mut self) {
        self.solo_live = false;
        debug_assert!(self.receives.is_empty(), "a solo receive is the only one");
        let solo = std::mem::take(&mut self.solo);
        self.receives.push_front(solo);
    }

    /// The solo receive's kept outcome, once a progress pass has completed
    /// it (it then leaves the registry).
    pub(super) fn take_solo_outcome(&mut self) -> Option<Result<Status>> {
        if !matches!(self.solo.done, Done::Kept(Some(_))) {
            return None;
        }
        let Done::Kept(outcome) = std::mem::replace(&mut self.solo.done, Done::Kept(None)) else {
            unreachable!("checked above")
        };
        self.end_solo();
        outcome
    }

    /// Ends the solo receive once its outcome is handed over.
    pub(super) fn end_solo(&mut self) {
        self.complete_solo(None);
        self.solo_live = false;
    }

    /// Empties the solo receive's place of its buffer and requests, once it
    /// is complete, keeping `outcome` for its request.
    pub(super) fn complete_solo(&mut self, outcome: Option<Result<Status>>) {
        let solo = &mut self.solo;
        solo.dst = None;
        solo.ready = None;
        solo.ready_sink = None;
        solo.offer = None;
        solo.done = Done::Kept(outcome);
    }
}

impl Default for Pending {
    /// An empty place: no receive (see [`Registry::solo`]).
    fn default() -> Self {
        Pending {
            pat: Pattern {
                ctx: 0,
                source: None,
                tag: None,
            },
            senders: Senders::Rank {
                rank: 0,
                from: Remote::default(),
            },
            dst: None,
            done: Done::Kept(None),
            shm_id: None,
            ready: None,
            ready_from: Remote::default(),
            ready_sink: None,
            offer: None,
            lane: None,
            id: u64::MAX,
        }
    }
}

/// `MPI_Irecv`s a thread posts ahead for the offers it will raise (see
/// [`Mpi::offer`]), one per sender at most.
#[derive(Default)]
pub(super) struct Reserves {
    /// By sender (node rank × threads + thread).
    pub(super) posted: Vec<Option<Reserve>>,
    /// Sinks of completed offers, kept for their allocation.
    pub(super) sinks: Vec<Vec<u8>>,
}

impl Reserves {
    /// The place of the reserve for `from` (of a process on this node), of a
    /// process with `threads` rank-threads.
    #[inline]
    pub(super) fn of(&mut self, from: Remote, threads: usize) -> &mut Option<Reserve> {
        let i = from.node.expect("reserves are for processes of this node") * threads + from.s;
        if self.posted.len() <= i {
            self.posted.resize_with(i + 1, || None);
        }
        &mut self.posted[i]
    }

    /// The reserve posted for `from`, taken apart for an offered receive of
    /// `cap` bytes: its request, which now serves that receive, and its
    /// sink. `None` (and the reserve left posted) when there is none or the
    /// receive is larger than a reserve.
    #[inline]
    pub(super) fn take_for(
        &mut self,
        from: Remote,
        threads: usize,
        cap: usize,
    ) -> Option<(Handle<ffi::MPI_Request>, Vec<u8>)> {
        let reserve = self.of(from, threads);
        let r = reserve.as_mut().filter(|_| cap <= RESERVE_BYTES)?;
        // Taken apart in place: a `Reserve` that is dropped cancels its
        // request.
        let parts = (r.disarm(), std::mem::take(&mut r.sink));
        *reserve = None;
        Some(parts)
    }
}

/// An `MPI_Irecv` for one sender's next offered send, into a sink of
/// [`RESERVE_BYTES`]. Nothing matches it until an offer made with it is
/// taken: only offered sends travel on its tag, and each needs a taken offer.
pub(super) struct Reserve {
    pub(super) req: Handle<ffi::MPI_Request>,
    pub(super) sink: Vec<u8>,
}

impl Reserve {
    /// The request and its sink, handed to an offered receive.
    pub(super) fn into_parts(mut self) -> (Handle<ffi::MPI_Request>, Vec<u8>) {
        (self.disarm(), std::mem::take(&mut self.sink))
    }

    /// Takes the request out, leaving the null request, which dropping does
    /// not cancel.
    pub(super) fn disarm(&mut self) -> Handle<ffi::MPI_Request> {
        // SAFETY: reading a constant exported by mpi-sys.
        std::mem::replace(&mut self.req, Handle(unsafe { ffi::RSMPI_REQUEST_NULL }))
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        // SAFETY: reading a constant exported by mpi-sys.
        if self.req.0 != unsafe { ffi::RSMPI_REQUEST_NULL } {
            // Unmatched (no offer was made with it): withdrawn before the sink goes.
            let _ = cancel_recv(&mut self.req.0);
        }
    }
}

/// Largest offered receive that uses a [`Reserve`] and is copied from its
/// sink; larger ones post their `MPI_Irecv` into the user's buffer.
pub(super) const RESERVE_BYTES: usize = LANE_RECV_MAX;

/// The regions of a thread's lane-posted receives (see [`Mpi::lane_post`]).
#[derive(Default)]
pub(super) struct LanePool {
    /// Regions of ended receives, kept for reuse.
    pub(super) spare: Vec<Scratch>,
    /// Receives posted on their lanes now.
    pub(super) posted: usize,
}

impl LanePool {
    /// A region for one more lane receive; `None` when [`LANE_POSTED_MAX`]
    /// are posted already, or no address space can be reserved.
    pub(super) fn region(&mut self) -> Option<Scratch> {
        if self.posted >= LANE_POSTED_MAX {
            return None;
        }
        let region = self.spare.pop().unwrap_or_else(Scratch::reserve);
        region.usable().then(|| {
            self.posted += 1;
            region
        })
    }

    /// Takes the region back from a lane receive that has ended (completed,
    /// after a message of `bytes`, or withdrawn).
    pub(super) fn finish(&mut self, lane: LaneRecv, bytes: usize) {
        self.posted -= 1;
        self.spare.push(lane.finish(bytes));
    }
}

/// Largest buffer of a lane-posted receive. Its message is copied from the
/// receive's region, which costs little this small; 4 KiB messages (above
/// Open MPI's shared-memory eager limit) took 5.0 µs each instead of 3.5 in a
/// bidirectional window when lane-posted, so larger receives are probed.
pub(super) const LANE_RECV_MAX: usize = 2048;

/// Most receives a thread keeps posted on their lanes at once; later ones are
/// matched by probes. Enough for a ping-pong or a halo exchange. Measured
/// with a window of 64 receives whose messages had all arrived, per message
/// against raw `MPI_Irecv` + `MPI_Waitall`: 4.2x with this limit, 3.8–4.1x all
/// probed, 4.1–4.6x all lane-posted (one costs a little more than its share
/// of a batch of probes); posted before the messages came, all the same.
/// Each holds a [`Scratch`] region: 2 GiB of address space, though only the
/// pages its messages touch.
pub(super) const LANE_POSTED_MAX: usize = 16;

/// Removes the `i`th registered receive; where its outcome goes.
#[inline]
pub(super) fn take(receives: &mut VecDeque<Pending>, i: usize) -> Done {
    let done = std::mem::replace(&mut receives[i].done, Done::Kept(None));
    // The last (a ping-pong's only receive) is dropped where it lies: moving
    // an entry out copies all of its 328 bytes. Otherwise mostly the front
    // (receives mostly complete in posting order), where `remove` first
    // works out which side of the ring to shift.
    if i + 1 == receives.len() {
        receives.truncate(i);
    } else if i == 0 {
        receives.pop_front();
    } else {
        receives.remove(i);
    }
    done
}
