//! Eager rings: a ring of [`CELLS`] cells per (receiver, sender) pair for
//! messages up to [`RING_BYTES`] that the pair's fastbox cannot take (too long,
//! or still full).
//!
//! Without them, every such message took the receiver's mailbox lock and, when
//! no receive was posted yet, a heap copy; in a window of sends the lock moved
//! between the two cores with every message, and waiters slept in the kernel
//! on it. A ring lets [`CELLS`] messages wait for their receiver with one
//! compare-and-swap each and no lock: the receiver takes them straight into a
//! blocking receive's buffer, or whoever next holds its mailbox lock drains
//! them into the matching engine, oldest first (see `Shm::inbox`).
//!
//! Measured with `courier bench p2p`, alternating builds: a 1 KiB ping-pong
//! went from 0.27–0.28 to 0.16–0.18 µs one-way, and a window of 1 KiB sends
//! from 0.40–0.66 to 0.24–0.29 µs per message (from 0.35–0.40x to 0.78–0.86x
//! Open MPI's window in the same runs). Cells of
//! 4 KiB made a window of 4 KiB sends slower (0.93 against 0.60 µs: two copies
//! where the mailbox makes one, straight into the posted receive), so cells
//! hold 2 KiB: 17 KiB per pair that uses its ring.
//!
//! The ring counts towards its pair's flow-control credit: messages drained
//! from it are charged like any eager message, and the ring closes (its
//! sender takes the mailbox, where the credit is checked) while the pair's
//! charge leaves less than a full ring of room, so the receiver never holds
//! more than the credit. A credit smaller than two rings' worth closes it for
//! good.
//!
//! A cell's state word carries the position in the pair's stream that the cell
//! holds (or is next free for), so a sender or consumer that read a position a
//! lap ago fails its compare-and-swap instead of acting on a newer message. The
//! ring is allocated on the pair's first message that needs it: a job of 64
//! ranks would otherwise reserve 4096 rings it mostly never uses.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use crate::matching::Envelope;

/// Largest message a ring cell carries.
pub(crate) const RING_BYTES: usize = 2048;

/// Cells in each pair's ring: this many messages can wait for their receiver
/// before the next one takes the mailbox lock.
const CELLS: usize = 8;

/// The most bytes a ring holds.
const CAPACITY: usize = CELLS * RING_BYTES;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
/// A consumer has claimed the message: the receiver deciding whether to take
/// it directly, or a drain copying it out; others wait for it to decide.
const TAKING: u64 = 3;
const STATE: u64 = 3;

/// A cell's state word: position `pos`, state `st`.
fn at(pos: u64, st: u64) -> u64 {
    pos << 2 | st
}

/// One cell: a line of state and envelope, then the payload.
#[repr(C, align(64))]
struct Cell {
    /// Position × 4 + `EMPTY`, `WRITING`, `FULL` or `TAKING`.
    state: AtomicU64,
    len: AtomicU64,
    ctx_tag: AtomicU64,
    source: AtomicU64,
    data: CachePadded<UnsafeCell<[u8; RING_BYTES]>>,
}

// SAFETY: `data` is only touched by whoever holds the cell: its sender between
// winning the `EMPTY → WRITING` swap and the release store of `FULL`, and a
// consumer between winning the `FULL → TAKING` swap and its release store of
// `EMPTY` (or of `FULL`, giving it back). The acquire half of each swap orders
// those accesses after the previous holder's.
unsafe impl Sync for Cell {}

/// One pair's ring. `tail` is the next position a sender fills (the sending
/// rank's threads share it); `head` the next a consumer takes.
pub(crate) struct Ring {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    cells: [Cell; CELLS],
}

impl Ring {
    fn new() -> Box<Ring> {
        Box::new(Ring {
            tail: CachePadded::default(),
            head: CachePadded::default(),
            cells: std::array::from_fn(|i| Cell {
                state: AtomicU64::new(at(i as u64, EMPTY)),
                len: AtomicU64::new(0),
                ctx_tag: AtomicU64::new(0),
                source: AtomicU64::new(0),
                data: CachePadded::new(UnsafeCell::new([0; RING_BYTES])),
            }),
        })
    }

    fn cell(&self, pos: u64) -> &Cell {
        &self.cells[pos as usize % CELLS]
    }

    /// The receiver claims the oldest message, if one is there and nobody
    /// else holds it.
    pub fn claim(&self) -> Option<Claimed<'_>> {
        self.claim_head().ok()
    }

    /// Claims the oldest message (`FULL` → `TAKING`); `Err` with the state
    /// found when there is none to claim now.
    fn claim_head(&self) -> Result<Claimed<'_>, u64> {
        let pos = self.head.load(Acquire);
        let cell = self.cell(pos);
        let full = at(pos, FULL);
        let found = cell.state.load(Acquire);
        if found != full {
            return Err(found);
        }
        cell.state
            .compare_exchange(full, at(pos, TAKING), Acquire, Acquire)?;
        let ctx_tag = cell.ctx_tag.load(Relaxed);
        let env = Envelope {
            ctx: (ctx_tag >> 32) as u32,
            tag: ctx_tag as u32 as i32,
            source: cell.source.load(Relaxed) as usize,
        };
        Ok(Claimed {
            ring: self,
            pos,
            env,
            len: cell.len.load(Relaxed) as usize,
        })
    }
}

/// A message claimed from a ring: nobody else touches its cell until it is
/// [released](Claimed::release) (taken) or [given back](Claimed::unclaim).
pub(crate) struct Claimed<'a> {
    ring: &'a Ring,
    pos: u64,
    pub env: Envelope,
    len: usize,
}

impl Claimed<'_> {
    pub fn bytes(&self) -> &[u8] {
        let data = self.ring.cell(self.pos).data.get();
        // SAFETY: the cell is claimed (see `Cell`), and its sender wrote `len`
        // bytes before publishing it.
        unsafe { &(&*data)[..self.len] }
    }

    /// Empties the cell: its message was taken (delivered, or queued).
    pub fn release(self) {
        // Head first: a sender that finds the ring empty (head = tail) then
        // knows every message it put there was taken.
        self.ring.head.store(self.pos + 1, Release);
        self.ring
            .cell(self.pos)
            .state
            .store(at(self.pos + CELLS as u64, EMPTY), Release);
    }

    /// Puts the message back, untouched.
    pub fn unclaim(self) {
        self.ring
            .cell(self.pos)
            .state
            .store(at(self.pos, FULL), Release);
    }
}

/// The rings of a job: `rings[to * ranks + from]`, each made on first use.
pub(crate) struct Rings {
    ranks: usize,
    rings: Box<[OnceLock<Box<Ring>>]>,
    /// Per pair, as `rings`: whether its sender may use the ring.
    open: Box<[AtomicBool]>,
    /// The most credit a pair may have used while its ring is open; `None`:
    /// the credit is too small for a ring.
    open_below: Option<usize>,
}

impl Rings {
    /// The rings of `ranks` ranks whose pairs have `credit` bytes of credit each.
    pub fn new(ranks: usize, credit: usize) -> Self {
        // Closing when the charge passes this leaves room for a whole ring
        // plus the message that crossed it.
        let open_below = credit.checked_sub(CAPACITY + RING_BYTES);
        Rings {
            ranks,
            rings: (0..ranks * ranks).map(|_| OnceLock::new()).collect(),
            open: (0..ranks * ranks)
                .map(|_| AtomicBool::new(open_below.is_some()))
                .collect(),
            open_below,
        }
    }

    /// Opens or closes the `from → to` ring now that the pair has `used`
    /// bytes of credit charged. Called under `to`'s mailbox lock after every
    /// change of that charge.
    pub fn regate(&self, from: usize, to: usize, used: usize) {
        let open = self.open_below.is_some_and(|limit| used <= limit);
        let flag = &self.open[to * self.ranks + from];
        if flag.load(Relaxed) != open {
            flag.store(open, Relaxed);
        }
    }

    /// The `from → to` ring, once a message has needed it.
    pub fn ring(&self, from: usize, to: usize) -> Option<&Ring> {
        self.rings[to * self.ranks + from].get().map(|r| &**r)
    }

    /// Whether every message put in the `from → to` ring has been taken.
    pub fn is_empty(&self, from: usize, to: usize) -> bool {
        self.ring(from, to)
            .is_none_or(|r| r.head.load(Acquire) == r.tail.load(Acquire))
    }

    /// Puts a message in the `from → to` ring; `false` (nothing done) when it
    /// is too long, or the ring is full, or another thread of the sending rank
    /// took the same position first.
    pub fn try_put(&self, from: usize, to: usize, env: &Envelope, bytes: &[u8]) -> bool {
        let pair = to * self.ranks + from;
        if bytes.len() > RING_BYTES || !self.open[pair].load(Relaxed) {
            return false;
        }
        let ring = self.rings[to * self.ranks + from].get_or_init(Ring::new);
        let pos = ring.tail.load(Relaxed);
        let cell = ring.cell(pos);
        // Fails when the cell still holds the message of a lap ago (the ring is
        // full), or another thread of the same rank took this position first.
        if cell
            .state
            .compare_exchange(at(pos, EMPTY), at(pos, WRITING), Acquire, Relaxed)
            .is_err()
        {
            return false;
        }
        ring.tail.store(pos + 1, Release);
        // SAFETY: the cell is this sender's until it publishes `FULL` (see `Cell`).
        unsafe { (&mut *cell.data.get())[..bytes.len()].copy_from_slice(bytes) };
        cell.len.store(bytes.len() as u64, Relaxed);
        cell.ctx_tag.store(
            (u64::from(env.ctx) << 32) | u64::from(env.tag as u32),
            Relaxed,
        );
        cell.source.store(env.source as u64, Relaxed);
        cell.state.store(at(pos, FULL), Release);
        true
    }

    /// Whether any ring addressed to `to` holds a message (cheap: plain loads).
    pub fn any_full(&self, to: usize) -> bool {
        self.row(to).any(|(_, r)| {
            let head = r.head.load(Relaxed);
            r.cell(head).state.load(Relaxed) == at(head, FULL)
        })
    }

    /// Claims the oldest message from `from` to `to`, for a drain; `None` when
    /// the ring is empty. The caller must hold `to`'s mailbox lock: that makes
    /// it the only consumer besides `to` itself, whose claim (a few
    /// instructions, never blocking) it waits out, as it waits out a sender
    /// still writing the oldest cell: several threads may send as one rank,
    /// and a thread's later message, queued by the caller, must not overtake
    /// its earlier one waiting behind that cell.
    pub fn claim_oldest(&self, from: usize, to: usize) -> Option<Claimed<'_>> {
        let ring = self.ring(from, to)?;
        let mut waits = 0u32;
        loop {
            match ring.claim_head() {
                Ok(claimed) => return Some(claimed),
                Err(found) if found & STATE == WRITING || found & STATE == TAKING => {
                    waits += 1;
                    if waits % 64 == 0 {
                        // The writer or claimer may be descheduled.
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                // The head moved meanwhile (the receiver took that message).
                Err(found) if found >> 2 != ring.head.load(Acquire) => {}
                Err(_) => return None,
            }
        }
    }

    /// The rings addressed to `to` that exist, with their senders.
    fn row(&self, to: usize) -> impl Iterator<Item = (usize, &Ring)> {
        self.rings[to * self.ranks..(to + 1) * self.ranks]
            .iter()
            .enumerate()
            .filter_map(|(from, r)| Some((from, &**r.get()?)))
    }
}
