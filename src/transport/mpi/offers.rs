//! Ready-send offers: posted-receive flags in node-shared memory.
//!
//! A ready send is only correct when its receive is posted, and `MPI_Rsend` is
//! only defined when the receive is posted *at the MPI level*. The query
//! handshake of the module above proves both with a round trip per send. Between
//! processes of one node, a receiver can instead say so ahead of time: when a
//! receive from a rank of another process on its node is posted, the receiver
//! posts an `MPI_Irecv` for it on the offers communicator (or takes one it
//! posted ahead while it waited, see `Mpi::offer`) and raises a flag in
//! shared memory, one [`Slot`] per (sending rank, receiving rank) pair. A ready
//! send that finds the flag raised for a receive its message fits takes the
//! offer (compare-and-swap) and `MPI_Rsend`s at once: the receive is posted at
//! both levels, and no message went back. Measured here with a C ping-pong,
//! raising and reading the flag added about 0.02 µs to `MPI_Rsend`'s 0.28 µs,
//! where an offer sent as an MPI message added 0.17 µs. The flag's line
//! crosses between cores twice per message (raised by the receiver, taken by
//! the sender); on a host where that crossing costs 0.1 µs, it is fetched
//! ahead of time ([`Slot::prefetch`]) so that it overlaps other work. Putting
//! both slots of a pair on one line (32-byte slots), so that a ping-pong moves
//! one line per message instead of two, changed nothing measurable: in 60
//! alternating `courier bench p2p` runs at 8 B, one line against two put
//! `rsend` at +0.154 against +0.158 µs over raw with the cores 0.04 µs apart
//! (atomic-flag handoff), and at +0.195 against +0.193 µs 0.23 µs apart
//! (`irsend`: +0.161 against +0.163, +0.179 against +0.192). What remains is
//! the offer's one crossing, made just before the message it must overtake.
//!
//! # Why a taken offer is the right receive
//!
//! * **Posting order.** A receive is offered only when no receive posted before
//!   it on that thread could match a message from that sender (any tag), so
//!   the offered receive is the one MPI's matching would choose.
//! * **FIFO per pair.** Both ends count the messages of each lane (data lane and
//!   ready sends alike): the sender those it sent, the receiver those it has
//!   taken. An offer carries the receiver's count, and a sender takes it only
//!   when its own count is equal: no earlier message of its own is still in
//!   flight that the receive should have matched first. When the receiver's
//!   count moves on while a receive is offered, the offer is raised again with
//!   the new count.
//! * **Withdrawal.** The receiver withdraws an offer (compare-and-swap back to
//!   empty) before the receive takes anything else: a message on the data lane,
//!   a cancel, or a query-handshake ready send. When the swap fails, the sender
//!   has taken the offer: its message is on the way and belongs to this receive.
//!   The `MPI_Irecv` is only cancelled after a successful withdrawal, so no
//!   taken offer ever meets a receive that is not posted.
//!
//! Each state word carries a generation, bumped by every withdrawal, so a
//! sender that read an offer just before it was withdrawn and raised again
//! fails its swap instead of taking the new offer on the old one's terms.
//! Processes on other nodes have no shared memory: their ready sends keep the
//! query handshake.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use mpi::ffi;

use super::{check, dup, Comm, Handle};
use crate::Result;

const EMPTY: u64 = 0;
const OFFERED: u64 = 1;
const TAKEN: u64 = 2;
const STATE: u64 = 3;

/// One receive offered to one sender; lives in the sender's segment of the
/// node-shared window, written by the receiver. All fields are atomics because
/// two processes reach them: the receiver writes them while no offer of its is
/// raised there, and a sender trusts what it read only if its swap of `state`
/// succeeds.
#[repr(C, align(64))]
pub(super) struct Slot {
    /// Generation × 4 + `EMPTY`, `OFFERED` or `TAKEN`.
    state: AtomicU64,
    ctx: AtomicU64,
    /// The receive's tag, or -1 for any tag.
    tag: AtomicI64,
    /// Messages the receiver had taken from the sender's lane.
    count: AtomicU64,
    /// Bytes the receive buffer holds.
    cap: AtomicU64,
    /// Size of the receive buffer's element type.
    elem: AtomicU64,
}

/// What an offered receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offer {
    pub ctx: u32,
    pub tag: Option<i32>,
    pub count: u64,
    pub cap: usize,
    pub elem: usize,
}

impl Offer {
    /// Whether a ready send on `ctx` with `tag` and `len` bytes, from a sender
    /// that has put `sent` messages on the lane, may take this offer.
    pub fn accepts(&self, ctx: u32, tag: i32, sent: u64, len: usize) -> bool {
        self.ctx == ctx
            && self.tag.is_none_or(|t| t == tag)
            && self.count == sent
            && len <= self.cap
            && (self.elem <= 1 || len % self.elem == 0)
    }
}

impl Slot {
    /// Asks for this slot's line in exclusive state ahead of a write or swap
    /// (x86 `PREFETCHW`), so that the transfer from the other process overlaps
    /// whatever comes before.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: PREFETCHW is a hint: it changes no register or memory,
        // cannot fault, and decodes as a no-op on x86 processors without it.
        unsafe {
            std::arch::asm!(
                "prefetchw [{}]",
                in(reg) self as *const Slot,
                options(nostack, preserves_flags, readonly)
            );
        }
    }

    /// Receiver: raises `offer` as generation `gen` in the empty slot. Stores
    /// only: the line is the sender's since it took the last offer, and the
    /// receiver's own bookkeeping ([`Offering`]) says the slot is free, so no
    /// load waits for it to come back.
    fn publish(&self, gen: u64, offer: &Offer) {
        self.ctx.store(u64::from(offer.ctx), Ordering::Relaxed);
        self.tag
            .store(offer.tag.map_or(-1, i64::from), Ordering::Relaxed);
        self.count.store(offer.count, Ordering::Relaxed);
        self.cap.store(offer.cap as u64, Ordering::Relaxed);
        self.elem.store(offer.elem as u64, Ordering::Relaxed);
        self.state.store(gen << 2 | OFFERED, Ordering::Release);
    }

    /// Receiver: the count an offer of generation `gen` carries, while it is raised.
    fn offered_count(&self, gen: u64) -> Option<u64> {
        let count = self.count.load(Ordering::Relaxed);
        (self.state.load(Ordering::Acquire) == gen << 2 | OFFERED).then_some(count)
    }

    /// Sender: takes the raised offer if `accept` says its message may.
    pub fn take(&self, accept: impl FnOnce(&Offer) -> bool) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & STATE != OFFERED {
            return false;
        }
        let tag = self.tag.load(Ordering::Relaxed);
        let offer = Offer {
            ctx: self.ctx.load(Ordering::Relaxed) as u32,
            tag: (tag >= 0).then_some(tag as i32),
            count: self.count.load(Ordering::Relaxed),
            cap: self.cap.load(Ordering::Relaxed) as usize,
            elem: self.elem.load(Ordering::Relaxed) as usize,
        };
        // Fields rewritten since `state` was read come with a new generation,
        // so the swap below fails and what was read is never acted on.
        accept(&offer)
            && self
                .state
                .compare_exchange(
                    state,
                    state - OFFERED + TAKEN,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Receiver: withdraws the offer of generation `gen`; `false` when a sender
    /// has taken it (its message is on the way).
    fn withdraw(&self, gen: u64) -> bool {
        self.state
            .compare_exchange(
                gen << 2 | OFFERED,
                (gen + 1) << 2 | EMPTY,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// The receiver's end of one slot: the slot, and the receiver's own record of
/// it (next generation × 2 + 1 while an offer of its is raised or taken),
/// kept in its own memory under the receiving thread's registry lock.
pub(super) struct Offering<'a> {
    slot: &'a Slot,
    mine: &'a AtomicU64,
}

impl Offering<'_> {
    /// Starts fetching the slot's line (see [`Slot::prefetch`]).
    pub fn prefetch(&self) {
        self.slot.prefetch();
    }

    /// Whether no offer of this receiver holds the slot.
    pub fn is_free(&self) -> bool {
        self.mine.load(Ordering::Relaxed) & 1 == 0
    }

    /// Raises `offer` in the free slot; its generation.
    pub fn raise(&self, offer: &Offer) -> u64 {
        let mine = self.mine.load(Ordering::Relaxed);
        debug_assert!(mine & 1 == 0, "one offer per pair at a time");
        self.slot.publish(mine >> 1, offer);
        self.mine.store(mine | 1, Ordering::Relaxed);
        mine >> 1
    }

    /// Withdraws the offer of generation `gen`; `false` when its sender has
    /// taken it (its message is on the way).
    pub fn withdraw(&self, gen: u64) -> bool {
        let withdrawn = self.slot.withdraw(gen);
        if withdrawn {
            self.mine.store((gen + 1) << 1, Ordering::Relaxed);
        }
        withdrawn
    }

    /// Frees the slot once the message of the taken offer `gen` has arrived.
    /// The slot itself is left as it is: `TAKEN` turns every sender away as
    /// `EMPTY` would, and the next [`raise`](Self::raise) overwrites it. A
    /// store here would wait for the line the sender took it in, on the path
    /// from one message to the next.
    pub fn clear(&self, gen: u64) {
        self.mine.store((gen + 1) << 1, Ordering::Relaxed);
    }

    /// The count the offer of generation `gen` carries, while it is raised;
    /// `None` once a sender has taken it (only this receiver withdraws, and
    /// it asks only about its own live offer).
    pub fn offered_count(&self, gen: u64) -> Option<u64> {
        self.slot.offered_count(gen)
    }
}

/// The slots of the processes on this node, in a window from
/// `MPI_Win_allocate_shared`, and the communicator offered sends travel on.
pub(super) struct Board {
    /// Kept for the process's lifetime (freed by `MPI_Finalize`).
    _win: Handle<ffi::MPI_Win>,
    /// Start of each node process's slots, by node rank.
    bases: Vec<Handle<*const Slot>>,
    /// Node rank of each process of the job (`None`: another node).
    node_rank: Vec<Option<usize>>,
    /// This process's node rank.
    me: usize,
    /// This process's record of each slot it offers in, by (sending node
    /// rank, sending thread, receiving thread): see [`Offering`].
    mine: Box<[AtomicU64]>,
    threads: usize,
    /// Offered sends: from the sending process, tag [`tag`](Self::tag).
    pub comm: Comm,
}

impl Board {
    /// The board of this node's processes; `None` when this process is alone
    /// on its node. An error when the MPI library cannot share memory between
    /// them (the caller then goes without offers). Collective over all
    /// processes.
    pub fn new(threads: usize, processes: usize) -> Result<Option<Board>> {
        // SAFETY: reading constants exported by mpi-sys.
        let (world, shared, info) = unsafe {
            (
                ffi::RSMPI_COMM_WORLD,
                ffi::RSMPI_COMM_TYPE_SHARED,
                ffi::RSMPI_INFO_NULL,
            )
        };
        let comm = dup(world)?;
        // SAFETY: zeroed handles are valid out-parameters; `world` is valid and
        // every process makes these collective calls in the same order.
        let mut node: ffi::MPI_Comm = unsafe { std::mem::zeroed() };
        check(
            unsafe { ffi::MPI_Comm_split_type(world, shared, 0, info, &mut node) },
            "MPI_Comm_split_type",
        )?;
        let node_rank = node_ranks(world, node, processes)?;
        let mut me: c_int = 0;
        // SAFETY: `node` is a valid communicator; `me` is an out-parameter.
        check(
            unsafe { ffi::MPI_Comm_rank(node, &mut me) },
            "MPI_Comm_rank",
        )?;
        let node_size = node_rank.iter().flatten().count();
        let per_process = threads * node_size * threads;
        // One slot more, to align the slots: MPI libraries need not align a
        // segment to a cache line (Open MPI 4.1 offsets them by 8 bytes). The
        // segment is mapped at page granularity, so every process sees the
        // same offset within a line and rounds up to the same place.
        let align = std::mem::align_of::<Slot>();
        let bytes = (per_process + 1) * std::mem::size_of::<Slot>();
        let mut base: *mut Slot = std::ptr::null_mut();
        // SAFETY: zeroed handle out-parameter; MPI writes the segment's address
        // through `base`; collective over the node's processes.
        let mut win: ffi::MPI_Win = unsafe { std::mem::zeroed() };
        check(
            unsafe {
                ffi::MPI_Win_allocate_shared(
                    bytes as ffi::MPI_Aint,
                    1,
                    info,
                    node,
                    (&mut base as *mut *mut Slot).cast::<c_void>(),
                    &mut win,
                )
            },
            "MPI_Win_allocate_shared",
        )?;
        // SAFETY: the segment is this process's own `bytes` bytes, and no other
        // process touches it before the barrier below; zero is an empty slot.
        unsafe {
            let first = base.cast::<u8>().add(base.cast::<u8>().align_offset(align));
            std::ptr::write_bytes(first.cast::<Slot>(), 0, per_process);
        }
        // SAFETY: `node` is a valid communicator.
        check(unsafe { ffi::MPI_Barrier(node) }, "MPI_Barrier (offers)")?;
        let mut bases = Vec::with_capacity(node_size);
        for r in 0..node_size {
            let mut size: ffi::MPI_Aint = 0;
            let mut unit: c_int = 0;
            let mut at: *mut Slot = std::ptr::null_mut();
            // SAFETY: out-parameters for a valid window and node rank.
            check(
                unsafe {
                    ffi::MPI_Win_shared_query(
                        win,
                        r as c_int,
                        &mut size,
                        &mut unit,
                        (&mut at as *mut *mut Slot).cast::<c_void>(),
                    )
                },
                "MPI_Win_shared_query",
            )?;
            // SAFETY: rounding up by less than one slot stays in the segment.
            let first = unsafe { at.cast::<u8>().add(at.cast::<u8>().align_offset(align)) };
            bases.push(Handle(first.cast::<Slot>().cast_const()));
        }
        // SAFETY: `node` is valid; the window keeps what it needs of it.
        unsafe { ffi::MPI_Comm_free(&mut node) };
        if node_size < 2 {
            return Ok(None);
        }
        Ok(Some(Board {
            _win: Handle(win),
            bases,
            node_rank,
            me: me as usize,
            mine: (0..per_process).map(|_| AtomicU64::new(0)).collect(),
            threads,
            comm,
        }))
    }

    /// Node rank of process `q`, when it shares this node.
    pub fn local(&self, q: usize) -> Option<usize> {
        self.node_rank[q]
    }

    /// Lane counters each context keeps per direction: one per (sending
    /// thread, receiving thread, process on this node).
    pub fn counters(&self) -> usize {
        self.threads * self.threads * self.bases.len()
    }

    /// The counter of the lane from thread `s` to thread `d` whose other end
    /// is the process of node rank `node`.
    pub fn counter_at(&self, s: usize, d: usize, node: usize) -> usize {
        (s * self.threads + d) * self.bases.len() + node
    }

    /// Where thread `d` of the process of node rank `nr` offers to thread `s`
    /// of the process of node rank `ns` (in `ns`'s segment).
    fn slot_at(&self, ns: usize, s: usize, nr: usize, d: usize) -> &Slot {
        let i = (s * self.bases.len() + nr) * self.threads + d;
        // SAFETY: `i` < threads × node size × threads, the slots in each segment;
        // the window lives as long as the process, and every field is an atomic.
        unsafe { &*self.bases[ns].0.add(i) }
    }

    /// Where thread `d` of this process takes offers from thread `s` of the
    /// process of node rank `nr` (its ready sends to `s`).
    pub fn taken_at(&self, d: usize, nr: usize, s: usize) -> &Slot {
        self.slot_at(self.me, d, nr, s)
    }

    /// Where thread `d` of this process offers to thread `s` of the process of
    /// node rank `ns`.
    pub fn offering_at(&self, ns: usize, s: usize, d: usize) -> Offering<'_> {
        let t = self.threads;
        Offering {
            slot: self.slot_at(ns, s, self.me, d),
            mine: &self.mine[(ns * t + s) * t + d],
        }
    }

    /// The tag of an offered send from thread `s` to thread `d`: each pair has
    /// at most one offer, so at most one such receive is posted.
    pub fn tag(&self, s: usize, d: usize) -> c_int {
        (s * self.threads + d) as c_int
    }
}

/// Node rank of each process of `world` in `node` (`None`: not on this node).
fn node_ranks(
    world: ffi::MPI_Comm,
    node: ffi::MPI_Comm,
    processes: usize,
) -> Result<Vec<Option<usize>>> {
    let all: Vec<c_int> = (0..processes as c_int).collect();
    let mut out = vec![0 as c_int; processes];
    // SAFETY: zeroed group handles are out-parameters; `all` and `out` hold
    // `processes` ranks, the size of world.
    unsafe {
        let mut wg: ffi::MPI_Group = std::mem::zeroed();
        let mut ng: ffi::MPI_Group = std::mem::zeroed();
        check(ffi::MPI_Comm_group(world, &mut wg), "MPI_Comm_group")?;
        check(ffi::MPI_Comm_group(node, &mut ng), "MPI_Comm_group")?;
        check(
            ffi::MPI_Group_translate_ranks(
                wg,
                processes as c_int,
                all.as_ptr(),
                ng,
                out.as_mut_ptr(),
            ),
            "MPI_Group_translate_ranks",
        )?;
        ffi::MPI_Group_free(&mut wg);
        ffi::MPI_Group_free(&mut ng);
    }
    Ok(out.into_iter().map(|r| usize::try_from(r).ok()).collect())
}
