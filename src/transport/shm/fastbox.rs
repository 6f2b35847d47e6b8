//! Fastboxes: one cache line per (receiver, sender) pair for tiny messages.
//!
//! A standard send of at most [`FASTBOX_BYTES`] claims its pair's slot if it is
//! empty, writes envelope and payload, and publishes it with one release store: the
//! only cache line that moves between the two cores is the slot itself. Whoever
//! next holds the receiver's mailbox lock drains the slot into the matching engine
//! (see `Shm::inbox`), so fastbox messages are matched in the same order as all
//! others. All fields are atomics: no unsafe code.
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
pub(crate) const WORDS: usize = FASTBOX_BYTES / 8;

const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const FULL: u32 = 2;
/// The receiver has claimed the message and is deciding whether to take it
/// directly (see [`Fastboxes::claim`]); a drain waits for it to decide.
const TAKING: u32 = 3;

/// Flag in a slot's `len`: the message is a synchronous send's.
const SYNC: u32 = 1 << 31;

/// One slot: state, length, envelope, payload — 64 bytes.
#[derive(Debug, Default)]
struct Slot {
    state: AtomicU32,
    len: AtomicU32,
    ctx_tag: AtomicU64,
    source: AtomicU64,
    data: [AtomicU64; WORDS],
}

/// A message taken out of a slot.
pub(crate) struct Taken {
    pub env: Envelope,
    /// A synchronous send's: whoever matches it calls [`Fastboxes::matched`]
    /// (or drops the [`SyncMatch`] queued with it).
    pub sync: bool,
    len: usize,
    /// The payload words the message covers, as the slot held them.
    words: [u64; WORDS],
}

impl Taken {
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::bytes_of(&self.words)[..self.len]
    }
}

/// A message its receiver has claimed in its slot ([`Fastboxes::claim`]).
pub(crate) struct Claim<'a> {
    slot: &'a Slot,
    len: u32,
}

impl Claim<'_> {
    /// The message's envelope.
    #[inline]
    pub fn env(&self) -> Envelope {
        let ctx_tag = self.slot.ctx_tag.load(Relaxed);
        Envelope {
            ctx: (ctx_tag >> 32) as u32,
            tag: ctx_tag as u32 as i32,
            source: self.slot.source.load(Relaxed) as usize,
        }
    }

    /// Whether it is a synchronous send's: whoever takes it calls
    /// [`Fastboxes::matched`].
    pub fn sync(&self) -> bool {
        self.len & SYNC != 0
    }

    /// The payload's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        (self.len & !SYNC) as usize
    }

    /// The payload words, as the slot holds them: the first
    /// [`len`](Self::len) bytes are the message.
    #[inline]
    pub fn data(&self) -> &[AtomicU64; WORDS] {
        &self.slot.data
    }

    /// Empties the slot: the message was taken.
    #[inline]
    pub fn release(self) {
        self.slot.state.store(EMPTY, Release);
    }

    /// Puts the message back, untouched.
    pub fn unclaim(self) {
        self.slot.state.store(FULL, Release);
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

/// The slots of a job: `slots[to * ranks + from]`.
#[derive(Debug)]
pub(crate) struct Fastboxes {
    ranks: usize,
    slots: Box<[CachePadded<Slot>]>,
    sync: Arc<[CachePadded<SyncPair>]>,
}

impl Fastboxes {
    pub fn new(ranks: usize) -> Self {
        Fastboxes {
            ranks,
            slots: (0..ranks * ranks)
                .map(|_| CachePadded::new(Slot::default()))
                .collect(),
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
        let slot = &self.slots[to * self.ranks + from];
        // A plain load first, as in `claim_waiting`: a compare-and-swap that
        // fails on a full slot costs as much as one that succeeds, and a send
        // that finds the slot full tries twice (`Comm::send`, then
        // `Shm::send`). The CAS also excludes other threads of the same rank
        // sending at once.
        if slot.state.load(Relaxed) != EMPTY
            || slot
                .state
                .compare_exchange(EMPTY, WRITING, Acquire, Relaxed)
                .is_err()
        {
            return false;
        }
        // Only the words the message covers (the reader reads no more).
        let mut chunks = bytes.chunks_exact(8);
        for (w, chunk) in slot.data.iter().zip(&mut chunks) {
            w.store(
                u64::from_ne_bytes(chunk.try_into().expect("8 bytes")),
                Relaxed,
            );
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            slot.data[bytes.len() / 8].store(u64::from_ne_bytes(word), Relaxed);
        }
        slot.len.store(bytes.len() as u32 | flags, Relaxed);
        slot.ctx_tag.store(
            (u64::from(env.ctx) << 32) | u64::from(env.tag as u32),
            Relaxed,
        );
        slot.source.store(env.source as u64, Relaxed);
        slot.state.store(FULL, Release);
        true
    }

    /// Whether any slot addressed to `to` holds a message (cheap: plain loads).
    pub fn any_full(&self, to: usize) -> bool {
        self.row(to).iter().any(|s| s.state.load(Relaxed) == FULL)
    }

    /// Claims the message from `from` to `to`, for a drain, if there is one.
    /// The caller must hold `to`'s mailbox lock: that makes it the only
    /// consumer besides `to` itself, whose claim (a few instructions, never
    /// blocking) it waits out, so a claimed message that goes back is still
    /// queued before anything its sender sends later. The caller then
    /// [`release`](Self::release)s the slot, once the message is queued or
    /// delivered.
    pub fn claim_waiting(&self, from: usize, to: usize) -> Option<Taken> {
        let slot = &self.slots[to * self.ranks + from];
        // A plain load first: a failed compare-and-swap on an empty slot
        // costs as much as a successful one, on every slot of the row.
        if slot.state.load(Relaxed) == EMPTY {
            return None;
        }
        let mut waits = 0u32;
        loop {
            match slot.state.compare_exchange(FULL, TAKING, Acquire, Acquire) {
                Ok(_) => return Some(Self::read(slot)),
                Err(TAKING) => {
                    waits += 1;
                    if waits % 64 == 0 {
                        std::thread::yield_now(); // the claimer may be descheduled
                    } else {
                        std::hint::spin_loop();
                    }
                }
                Err(_) => return None, // empty, or its sender is still writing
            }
        }
    }

    /// Whether the `from → to` slot holds a message (full, or claimed).
    pub fn holds(&self, from: usize, to: usize) -> bool {
        matches!(
            self.slots[to * self.ranks + from].state.load(Acquire),
            FULL | TAKING
        )
    }

    /// The receiver `to` claims the message from `from`, if there is one: until
    /// it calls [`Claim::release`] (taken) or [`Claim::unclaim`] (left for the
    /// mailbox), nobody else touches the slot. The message stays in the slot:
    /// a receive that takes it copies its payload once, straight into its
    /// buffer.
    #[inline]
    pub fn claim(&self, from: usize, to: usize) -> Option<Claim<'_>> {
        let slot = &self.slots[to * self.ranks + from];
        if slot.state.load(Relaxed) != FULL
            || slot
                .state
                .compare_exchange(FULL, TAKING, Acquire, Relaxed)
                .is_err()
        {
            return None;
        }
        let len = slot.len.load(Relaxed);
        Some(Claim { slot, len })
    }

    /// Whether the `from → to` slot is empty (not being written, not full, not
    /// claimed).
    pub fn is_empty(&self, from: usize, to: usize) -> bool {
        self.slots[to * self.ranks + from].state.load(Acquire) == EMPTY
    }

    /// Empties a claimed slot: its message was taken.
    pub fn release(&self, from: usize, to: usize) {
        self.slots[to * self.ranks + from]
            .state
            .store(EMPTY, Release);
    }

    /// A copy of the message in `slot`, which the caller has claimed.
    fn read(slot: &Slot) -> Taken {
        let claim = Claim {
            slot,
            len: slot.len.load(Relaxed),
        };
        let bytes = claim.len();
        let mut words = [0u64; WORDS];
        for (w, word) in slot.data[..bytes.div_ceil(8)].iter().zip(&mut words) {
            *word = w.load(Relaxed);
        }
        Taken {
            env: claim.env(),
            sync: claim.sync(),
            len: bytes,
            words,
        }
    }

    fn row(&self, to: usize) -> &[CachePadded<Slot>] {
        &self.slots[to * self.ranks..(to + 1) * self.ranks]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(source: usize, tag: i32) -> Envelope {
        Envelope {
            ctx: 7,
            source,
            tag,
        }
    }

    #[test]
    fn a_slot_holds_one_message_until_taken() {
        let fb = Fastboxes::new(3);
        assert!(fb.try_put(0, 2, &env(0, 1), &[1, 2, 3]));
        assert!(!fb.try_put(0, 2, &env(0, 2), &[4]), "one message per slot");
        assert!(
            fb.try_put(2, 0, &env(5, 9), &[9; FASTBOX_BYTES]),
            "the other way is free"
        );
        assert!(
            !fb.try_put(1, 0, &env(1, 9), &[0; FASTBOX_BYTES + 1]),
            "too long"
        );
        assert!(fb.any_full(2) && fb.any_full(0) && !fb.any_full(1));

        let c = fb.claim(0, 2).expect("waiting");
        assert_eq!(
            (c.env(), c.sync(), payload(&c)),
            (env(0, 1), false, vec![1, 2, 3])
        );
        let first = u64::from_ne_bytes([1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(c.data()[0].load(Relaxed), first, "the payload's words");
        assert!(
            fb.holds(0, 2) && !fb.is_empty(0, 2),
            "claimed, not yet taken"
        );
        assert!(fb.claim(0, 2).is_none(), "claimed once");
        c.release();
        assert!(!fb.holds(0, 2) && fb.is_empty(0, 2));
        assert!(fb.try_put(0, 2, &env(0, 3), &[]), "free again");

        let c = fb.claim(2, 0).expect("waiting");
        assert_eq!((c.env(), payload(&c)), (env(5, 9), vec![9; FASTBOX_BYTES]));
        c.unclaim();
        let t = fb.claim_waiting(2, 0).expect("left for the next taker");
        assert_eq!((t.env, t.bytes()), (env(5, 9), &[9; FASTBOX_BYTES][..]));
        fb.release(2, 0);
        assert!(!fb.any_full(0));
    }

    fn payload(c: &Claim<'_>) -> Vec<u8> {
        let words: Vec<u64> = c.data().iter().map(|w| w.load(Relaxed)).collect();
        bytemuck::cast_slice::<u64, u8>(&words)[..c.len()].to_vec()
    }

    #[test]
    fn a_synchronous_message_is_flagged_and_counted() {
        let fb = Fastboxes::new(2);
        let n = fb.try_put_sync(1, 0, &env(1, 4), &[8]).expect("put");
        assert!(
            fb.try_put_sync(1, 0, &env(1, 4), &[8]).is_none(),
            "one token"
        );
        let c = fb.claim(1, 0).expect("waiting");
        assert!(c.sync());
        c.release();
        assert_eq!(fb.matched_count(1, 0), n);
        fb.matched(1, 0);
        assert_eq!(fb.matched_count(1, 0), n + 1);
    }

    /// Two threads of one rank send and two threads of the other take, at
    /// once, through one pair's slot (and the same the other way): every
    /// message arrives once, intact, and each sending thread's in its order.
    /// A taker records a message before it releases the slot, and the next
    /// can only be put after that, so the records are in taking order.
    #[test]
    fn concurrent_senders_and_takers_lose_nothing() {
        const N: u64 = 20_000;
        let fb = Fastboxes::new(2);
        let records: Vec<std::sync::Mutex<Vec<u64>>> =
            (0..2).map(|_| std::sync::Mutex::default()).collect();
        std::thread::scope(|s| {
            for (from, to) in [(0, 1), (1, 0)] {
                for thread in 0..2u64 {
                    let fb = &fb;
                    s.spawn(move || {
                        for i in 0..N {
                            let v = thread << 32 | i;
                            let e = env(from, thread as i32);
                            while !fb.try_put(from, to, &e, &v.to_ne_bytes()) {
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                // One taker claims as the receiver does, the other as a drain.
                for drain in [false, true] {
                    let (fb, record) = (&fb, &records[to]);
                    s.spawn(move || loop {
                        // (envelope, payload), recorded before the slot empties.
                        let take = |env: Envelope, bytes: &[u8]| {
                            let v = u64::from_ne_bytes(bytes.try_into().unwrap());
                            assert_eq!(env.tag as u64, v >> 32, "envelope and payload agree");
                            record.lock().unwrap().push(v);
                        };
                        let took = if drain {
                            fb.claim_waiting(from, to)
                                .map(|t| {
                                    take(t.env, t.bytes());
                                    fb.release(from, to);
                                })
                                .is_some()
                        } else {
                            fb.claim(from, to)
                                .map(|c| {
                                    take(c.env(), &payload(&c));
                                    c.release();
                                })
                                .is_some()
                        };
                        if !took {
                            if record.lock().unwrap().len() == 2 * N as usize {
                                return;
                            }
                            std::hint::spin_loop();
                        }
                    });
                }
            }
        });
        for record in &records {
            let record = record.lock().unwrap();
            for thread in 0..2u64 {
                let mine: Vec<u64> = record
                    .iter()
                    .filter(|v| *v >> 32 == thread)
                    .copied()
                    .collect();
                assert_eq!(mine, (0..N).map(|k| thread << 32 | k).collect::<Vec<_>>());
            }
        }
    }
}
