//! Fastboxes: a ring of [`CELLS`] cache lines per (receiver, sender) pair for
//! tiny messages.
//!
//! A standard send of at most [`FASTBOX_BYTES`] claims the next cell of its
//! pair's ring if it is empty, writes envelope and payload, and publishes it with
//! one release store: the only cache line that moves between the two cores is
//! that cell. Whoever next holds the receiver's mailbox lock drains the ring,
//! oldest first, into the matching engine (see `Shm::inbox`), so fastbox messages
//! are matched in the same order as all others. All fields are atomics: no unsafe
//! code.
//!
//! One cell per pair served a ping-pong as well, but a stream of tiny messages
//! then took the receiver's mailbox lock from the second message on, and the lock
//! moved between the two cores with every message: a window of 64 8-byte sends
//! (`courier bench p2p --tests bw`) took 0.25 µs per message, 0.45–0.6x Open
//! MPI's. With 16 cells it took 0.14–0.18 µs (0.8–1.06x Open MPI's); 64 cells
//! measured the same as 16, 8 a little slower.
//!
//! A tiny *synchronous* send goes the same way, flagged, and then waits for its
//! pair's match counter to move: whoever matches the message (the receiver taking
//! it directly, a drain that meets a posted receive, or the drop of the queued
//! copy once a receive has taken it) counts it and hands the pair's token back.
//! One such send per pair is in flight at a time (the token), so the counter's
//! next step is that send's match. The sender only reads the counter, so a
//! nonblocking one (`issend`) needs no cleanup however its request ends.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::matching::Envelope;

/// Largest payload a fastbox carries.
pub(crate) const FASTBOX_BYTES: usize = 40;
const WORDS: usize = FASTBOX_BYTES / 8;

/// Cells in each pair's ring: this many tiny messages can wait for their
/// receiver before the next one takes the mailbox lock.
pub(crate) const CELLS: usize = 16;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
/// A consumer has claimed the message: the receiver deciding whether to take
/// it directly (see [`Fastboxes::claim`]), or a drain copying it out; others
/// wait for it to decide.
const TAKING: u64 = 3;
const STATE: u64 = 3;

/// Flag in a cell's `len`: the message is a synchronous send's.
const SYNC: u32 = 1 << 31;

/// One cell: state, length, envelope, payload — 64 bytes.
///
/// `state` is the position in the pair's stream of messages that the cell
/// holds (or is next free for) × 4 + `EMPTY`, `WRITING`, `FULL` or `TAKING`:
/// a sender or consumer that read a position a lap ago fails its
/// compare-and-swap instead of acting on a newer message.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Cell {
    state: AtomicU64,
    len: AtomicU32,
    source: AtomicU32,
    ctx_tag: AtomicU64,
    data: [AtomicU64; WORDS],
}

/// One (receiver, sender) pair's ring of cells. `tail` is the next position a
/// sender fills (the sending rank's threads share it); `head` the next a
/// consumer takes (the receiver, or whoever holds its mailbox lock).
#[derive(Debug)]
struct Ring {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    cells: [Cell; CELLS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            tail: CachePadded::default(),
            head: CachePadded::default(),
            cells: std::array::from_fn(|i| Cell {
                state: AtomicU64::new(at(i as u64, EMPTY)),
                ..Cell::default()
            }),
        }
    }
}

/// A cell's state word: position `pos`, state `st`.
fn at(pos: u64, st: u64) -> u64 {
    pos << 2 | st
}

impl Ring {
    fn cell(&self, pos: u64) -> &Cell {
        &self.cells[pos as usize % CELLS]
    }

    /// Claims the oldest message (`FULL` → `TAKING`); `Err` with the state
    /// found when there is none to claim now.
    fn claim_head(&self) -> Result<(u64, &Cell), u64> {
        let head = self.head.load(Acquire);
        let cell = self.cell(head);
        let full = at(head, FULL);
        let found = cell.state.load(Acquire);
        if found != full {
            return Err(found);
        }
        cell.state
            .compare_exchange(full, at(head, TAKING), Acquire, Acquire)
            .map(|_| (head, cell))
    }

    /// Empties the claimed cell at `pos`: its message was taken.
    fn release(&self, pos: u64) {
        // Head first: a consumer that sees the cell empty reads the new head.
        self.head.store(pos + 1, Release);
        self.cell(pos)
            .state
            .store(at(pos + CELLS as u64, EMPTY), Release);
    }
}

/// A message taken out of a cell.
pub(crate) struct Taken {
    pub env: Envelope,
    pub from: usize,
    /// Its ring, and its position in the pair's stream.
    ring: usize,
    pos: u64,
    /// A synchronous send's: whoever matches it calls [`Fastboxes::matched`]
    /// (or drops the [`SyncMatch`] queued with it).
    pub sync: bool,
    len: usize,
    data: [u8; FASTBOX_BYTES],
}

impl Taken {
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The synchronous-send state of one (receiver, sender) pair, in one word:
/// twice the number of synchronous fastbox messages matched so far, plus one
/// while such a message is in flight (the pair's token). One word, so that a
/// match counts the message and frees the token in the same step: a sender
/// that sees its match can put its next message at once.
#[derive(Debug, Default)]
struct SyncPair(AtomicU64);

impl SyncPair {
    /// Counts the in-flight message as matched and frees the token:
    /// `2m + 1` becomes `2(m + 1)`.
    fn count_match(&self) {
        self.0.fetch_add(1, Release);
    }

    fn matched(&self) -> u64 {
        self.0.load(Acquire) >> 1
    }
}

/// Counts a queued synchronous message as matched when dropped: a queued body is
/// dropped once a receive (or matched probe's receive) has taken it.
pub(crate) struct SyncMatch {
    pairs: Arc<[CachePadded<SyncPair>]>,
    index: usize,
}

impl Drop for SyncMatch {
    fn drop(&mut self) {
        self.pairs[self.index].count_match();
    }
}

/// The rings of a job: `rings[to * ranks + from]`.
#[derive(Debug)]
pub(crate) struct Fastboxes {
    ranks: usize,
    rings: Box<[Ring]>,
    sync: Arc<[CachePadded<SyncPair>]>,
}

impl Fastboxes {
    pub fn new(ranks: usize) -> Self {
        Fastboxes {
            ranks,
            rings: (0..ranks * ranks).map(|_| Ring::default()).collect(),
            sync: (0..ranks * ranks).map(|_| CachePadded::default()).collect(),
        }
    }

    /// Puts a synchronous send's message in the `from → to` slot. `Some(n)`:
    /// put, and matched once [`matched_count`](Self::matched_count) exceeds `n`
    /// (the match also frees the pair's token). `None`: nothing done
    /// (too long, slot full, or another synchronous send of the pair in flight).
    pub fn try_put_sync(
        &self,
        from: usize,
        to: usize,
        env: &Envelope,
        bytes: &[u8],
    ) -> Option<u64> {
        if bytes.len() > FASTBOX_BYTES {
            return None;
        }
        let pair = &self.sync[to * self.ranks + from].0;
        let free = pair.load(Acquire);
        if free & 1 != 0
            || pair
                .compare_exchange(free, free | 1, Acquire, Relaxed)
                .is_err()
        {
            return None;
        }
        if self.put(from, to, env, bytes, SYNC) {
            Some(free >> 1)
        } else {
            pair.store(free, Release); // nothing in flight: nobody counts meanwhile
            None
        }
    }

    /// Synchronous fastbox messages `from → to` matched so far.
    pub fn matched_count(&self, from: usize, to: usize) -> u64 {
        self.sync[to * self.ranks + from].matched()
    }

    /// Counts a taken synchronous message as matched.
    pub fn matched(&self, from: usize, to: usize) {
        self.sync[to * self.ranks + from].count_match();
    }

    /// What a queued copy of a synchronous message carries: counts the match
    /// when the copy is dropped.
    pub fn match_on_drop(&self, from: usize, to: usize) -> SyncMatch {
        SyncMatch {
            pairs: self.sync.clone(),
            index: to * self.ranks + from,
        }
    }

    /// Puts a message in the `from → to` slot; `false` (nothing done) if the
    /// message is too long or the slot is still full.
    pub fn try_put(&self, from: usize, to: usize, env: &Envelope, bytes: &[u8]) -> bool {
        self.put(from, to, env, bytes, 0)
    }

    fn put(&self, from: usize, to: usize, env: &Envelope, bytes: &[u8], flags: u32) -> bool {
        if bytes.len() > FASTBOX_BYTES {
            return false;
        }
        let ring = &self.rings[to * self.ranks + from];
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
        ring.tail.store(pos + 1, Relaxed);
        // Only the words the message covers (the reader reads no more).
        let mut chunks = bytes.chunks_exact(8);
        for (w, chunk) in cell.data.iter().zip(&mut chunks) {
            w.store(
                u64::from_ne_bytes(chunk.try_into().expect("8 bytes")),
                Relaxed,
            );
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            cell.data[bytes.len() / 8].store(u64::from_ne_bytes(word), Relaxed);
        }
        cell.len.store(bytes.len() as u32 | flags, Relaxed);
        cell.ctx_tag.store(
            (u64::from(env.ctx) << 32) | u64::from(env.tag as u32),
            Relaxed,
        );
        cell.source.store(env.source as u32, Relaxed);
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

    /// Takes every message addressed to `to`, each ring in order. The caller
    /// must hold `to`'s mailbox lock: that makes it the only consumer besides
    /// `to` itself, whose claim (a few instructions, never blocking) it waits
    /// out, as it waits out a sender still writing the oldest cell, so a
    /// message that stays in a ring is never older than one queued.
    pub fn drain(&self, to: usize, mut take: impl FnMut(Taken)) {
        for (from, (index, ring)) in self.row(to).enumerate() {
            let mut waits = 0u32;
            loop {
                match ring.claim_head() {
                    Ok((pos, cell)) => {
                        // Taken (queued) before the cell empties: a receiver
                        // that later claims this sender's next message then
                        // sees it queued.
                        take(Self::read(cell, from, index, pos));
                        ring.release(pos);
                    }
                    Err(found) if found & STATE == WRITING || found & STATE == TAKING => {
                        waits += 1;
                        if waits % 64 == 0 {
                            // The writer or claimer may be descheduled.
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    // Empty at the head position, or the head moved meanwhile
                    // (the receiver took that message): look again only in
                    // the second case.
                    Err(found) if found >> 2 != ring.head.load(Acquire) => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The receiver `to` claims the oldest message from `from`, if there is
    /// one: until it calls [`release`](Self::release) (taken) or
    /// [`unclaim`](Self::unclaim) (left for the mailbox), nobody else touches
    /// that ring's messages.
    pub fn claim(&self, from: usize, to: usize) -> Option<Taken> {
        let index = to * self.ranks + from;
        let (pos, cell) = self.rings[index].claim_head().ok()?;
        Some(Self::read(cell, from, index, pos))
    }

    /// Empties a claimed cell: its message was taken.
    pub fn release(&self, taken: &Taken) {
        self.rings[taken.ring].release(taken.pos);
    }

    /// Puts a claimed message back, untouched.
    pub fn unclaim(&self, taken: &Taken) {
        self.rings[taken.ring]
            .cell(taken.pos)
            .state
            .store(at(taken.pos, FULL), Release);
    }

    fn read(cell: &Cell, from: usize, ring: usize, pos: u64) -> Taken {
        let len = cell.len.load(Relaxed);
        let bytes = (len & !SYNC) as usize;
        let mut data = [0u8; FASTBOX_BYTES];
        let words = bytes.div_ceil(8);
        for (w, chunk) in cell.data[..words].iter().zip(data.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(Relaxed).to_ne_bytes());
        }
        let ctx_tag = cell.ctx_tag.load(Relaxed);
        let env = Envelope {
            ctx: (ctx_tag >> 32) as u32,
            tag: ctx_tag as u32 as i32,
            source: cell.source.load(Relaxed) as usize,
        };
        Taken {
            env,
            from,
            ring,
            pos,
            sync: len & SYNC != 0,
            len: bytes,
            data,
        }
    }

    /// The rings addressed to `to`, by sender, with their indices.
    fn row(&self, to: usize) -> impl Iterator<Item = (usize, &Ring)> {
        let first = to * self.ranks;
        self.rings[first..first + self.ranks]
            .iter()
            .enumerate()
            .map(move |(from, r)| (first + from, r))
    }
}
