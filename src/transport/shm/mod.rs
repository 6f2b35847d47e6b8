//! The shared-memory transport: ranks are threads of one process.
//!
//! Every rank owns a [`Mailbox`]: a lock around its matching engine (posted
//! receives + arrived messages) and a per-sender count of eagerly buffered bytes.
//! A send locks the *receiver's* mailbox and matches there, so the sender can see
//! whether a receive is posted (needed by ready sends, and used by every mode to
//! write straight into a posted buffer). Copies never happen under the lock except
//! the eager copy of a small message and a buffered send's copy into the attached
//! buffer (taken, as with `MPI_Bsend`, only when no receive is posted; a large
//! one holds the receiver's lock for the whole copy).
//!
//! What each mode does here:
//!
//! | mode | receive already posted | no receive posted |
//! |---|---|---|
//! | standard, ≤ eager threshold and credit left | copy into the posted buffer, done | copy into an eager buffer, done |
//! | standard, large or credit used up | copy into the posted buffer, done | rendezvous: queue a pointer to the sender's buffer; the receiver copies from it once (one copy) and completes the sender |
//! | buffered | copy into the posted buffer, done | copy into an eager buffer charged to the attached buffer, done |
//! | synchronous | copy into the posted buffer, done | rendezvous (completes when the receiver has matched and copied) |
//! | ready | copy into the posted buffer, done | `NotReady`: nothing queued, the receiver is not touched |
//! | owned `Vec` | copy into the posted buffer, done | move the `Vec` (no copy); if the pair's credit is used up the sender waits for the match |
//!
//! Small standard sends skip the lock: tiny ones (≤ 40 bytes) go through the
//! pair's [`fastbox`], a single cache line, and the rest up to 2 KiB, or tiny
//! ones while the fastbox is full, through the pair's [`ring`] of eight cells.
//! Whoever next locks the receiver's mailbox drains both into the matching engine
//! first — so they are matched in order with everything else — and a blocking
//! receive from one rank takes them straight out while nothing is queued. A
//! receiver waiting for data polls its fastboxes and rings while it spins.
//! Such a message is copied twice (into the cell, out of it); the sender no
//! longer sees a posted receive, which only ready sends need.
//!
//! Flow control: eager bytes from one sender held by one receiver never exceed the
//! credit (plus one fastbox); past it, standard sends switch to rendezvous, which
//! blocks the sender (or leaves its request pending) until the receiver matches.
//! The ring counts towards the credit (it closes while a full ring would not
//! fit). Memory stays bounded.

mod copy;
mod fastbox;
mod ring;

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::bsend::{BsendSpace, StoredCopy};
use crate::matching::{Envelope, Matcher, Pattern};
use crate::sync::{ArrivalWaiters, Completion, Liveness, Peer};

pub(crate) use copy::SharedCopy;
use fastbox::{Fastboxes, SyncMatch, FASTBOX_BYTES, WORDS};
use ring::Rings;
pub(crate) use ring::RING_BYTES;

/// Jobs up to this many ranks get fastboxes (they take ranks² cache lines) and
/// eager rings.
const FASTBOX_MAX_RANKS: usize = 64;
use crate::{Error, Result, Status};

/// Element type of a receive buffer, for the type check of the message length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Elem {
    pub size: usize,
    pub align: usize,
    pub name: &'static str,
}

impl Elem {
    pub fn of<T>() -> Self {
        Elem {
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }

    /// `Ok` when `bytes` is a whole number of elements.
    pub fn check(&self, bytes: usize) -> Result<()> {
        // Element sizes are almost always powers of two: a mask, not a division
        // (which costs a tiny receive more than its copy).
        let whole = match self.size {
            0 | 1 => true,
            s if s.is_power_of_two() => bytes & (s - 1) == 0,
            s => bytes % s == 0,
        };
        if !whole {
            return Err(Error::TypeMismatch {
                bytes,
                type_name: self.name,
                size: self.size,
                align: self.align,
            });
        }
        Ok(())
    }
}

/// A receive buffer lent to the transport while a receive is posted.
#[derive(Debug)]
pub(crate) struct RecvBuf {
    ptr: *mut u8,
    cap: usize,
    elem: Elem,
}

// SAFETY: a RecvBuf is only created by `RecvBuf::new`, whose caller promises the
// memory stays valid and exclusively lent to the transport until the receive
// completes or is cancelled; whichever thread completes it is the only writer.
unsafe impl Send for RecvBuf {}

impl RecvBuf {
    /// # Safety
    /// `ptr..ptr+cap` must stay valid for writes, and not be accessed by anyone
    /// else, until the receive this buffer is posted with has completed or has
    /// been cancelled.
    pub unsafe fn new(ptr: *mut u8, cap: usize, elem: Elem) -> Self {
        RecvBuf { ptr, cap, elem }
    }

    /// The buffer's address and capacity in bytes.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn raw(&self) -> (*mut u8, usize) {
        (self.ptr, self.cap)
    }

    /// The element type the buffer holds.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn elem(&self) -> Elem {
        self.elem
    }

    /// A second handle to the same buffer, for a receive posted with two
    /// transports at once (an `ANY_SOURCE` receive in cluster mode).
    ///
    /// # Safety
    /// At most one of the two handles may ever be filled: whoever fills one must
    /// first have withdrawn the other receive (a successful cancel).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub unsafe fn alias(&self) -> Self {
        RecvBuf { ..*self }
    }

    /// [`fill`](Self::fill) for a message claimed in its fastbox: the first
    /// `len` bytes of `words`, copied once, with the usual 8- and 16-byte
    /// messages as one or two word stores, not a call.
    #[inline]
    pub fn fill_small(
        self,
        words: &[AtomicU64; WORDS],
        len: usize,
        env: &Envelope,
    ) -> Result<Status> {
        self.check_fits(len)?;
        // SAFETY: as in `fill`: `len` <= cap was checked; the words are read
        // into registers (or `copy`) before they are written to the buffer.
        unsafe {
            match len {
                8 => std::ptr::write_unaligned(self.ptr.cast::<u64>(), words[0].load(Relaxed)),
                16 => std::ptr::write_unaligned(
                    self.ptr.cast::<[u64; 2]>(),
                    [words[0].load(Relaxed), words[1].load(Relaxed)],
                ),
                n => {
                    let mut copy = [0u64; WORDS];
                    for (w, c) in words.iter().zip(&mut copy).take(n.div_ceil(8)) {
                        *c = w.load(Relaxed);
                    }
                    std::ptr::copy_nonoverlapping(copy.as_ptr().cast::<u8>(), self.ptr, n)
                }
            }
        }
        Ok(Status::new(env.source, env.tag, len))
    }

    /// Checks and copies a message into the buffer; the status says what arrived.
    pub fn fill(self, src: &[u8], env: &Envelope) -> Result<Status> {
        self.check_fits(src.len())?;
        // SAFETY: the buffer is valid and exclusively ours (RecvBuf::new's contract),
        // src.len() <= cap, and src is another allocation (safe Rust cannot lend one
        // buffer as both a send and a receive buffer at once).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr, src.len()) };
        Ok(Status::new(env.source, env.tag, src.len()))
    }

    /// [`fill`](Self::fill), sharing a large copy with the thread waiting on
    /// `waiter` (see [`copy`]).
    pub fn fill_shared(self, src: &[u8], env: &Envelope, waiter: &Completion) -> Result<Status> {
        self.check_fits(src.len())?;
        // SAFETY: as in `fill`.
        unsafe { copy::copy(src, self.ptr, waiter) };
        Ok(Status::new(env.source, env.tag, src.len()))
    }

    fn check_fits(&self, len: usize) -> Result<()> {
        if len > self.cap {
            return Err(Error::Truncated {
                message: len,
                buffer: self.cap,
            });
        }
        self.elem.check(len)
    }
}

/// A pointer to bytes a sender keeps alive until the message is dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPtr(*const u8, usize);

// SAFETY: the bytes behind a SendPtr are only read, and stay valid until the body
// holding it is dropped (see `Body`).
unsafe impl Send for SendPtr {}

/// The payload of an arrived, not yet received message.
pub(crate) enum Body {
    /// A copy of a small standard send.
    Eager { data: Vec<u8> },
    /// A buffered send's copy, which gives its space back to the sender's
    /// attached buffer when dropped.
    Buffered(StoredCopy),
    /// A copy of a tiny synchronous send's message, drained from its fastbox;
    /// dropping it (once a receive took it) tells the waiting sender.
    SyncCopy { data: Vec<u8>, _matched: SyncMatch },
    /// Rendezvous: the sender's own buffer, which it keeps valid until `done`.
    Borrowed { src: SendPtr, done: Arc<Completion> },
    /// A moved `Vec<T>` (as `Box<dyn Any>`), plus its bytes.
    Owned {
        data: Option<Box<dyn Any + Send>>,
        src: SendPtr,
        done: Option<Arc<Completion>>,
    },
}

impl Body {
    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Body::Eager { data } | Body::SyncCopy { data, .. } => data,
            Body::Buffered(copy) => copy.bytes(),
            Body::Borrowed { src, .. } | Body::Owned { src, .. } => {
                // SAFETY: a Borrowed sender keeps its buffer valid and unmodified
                // until `done` completes, which only this body's Drop does; an Owned
                // pointer targets the heap buffer of the Vec in `data`, which this
                // body owns (moving the Box does not move the Vec's buffer).
                unsafe { std::slice::from_raw_parts(src.0, src.1) }
            }
        }
    }

    /// Takes the moved `Vec<T>` out, if this is an owned message of exactly `Vec<T>`.
    pub fn take_vec<T: 'static>(&mut self) -> Option<Vec<T>> {
        let Body::Owned { data, .. } = self else {
            return None;
        };
        let boxed = data.take()?;
        match boxed.downcast::<Vec<T>>() {
            Ok(v) => Some(*v),
            Err(other) => {
                *data = Some(other);
                None
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // Completing here means a sender can never be left waiting for a message
        // that was received, truncated, or discarded.
        let done = match self {
            Body::Borrowed { done, .. } => Some(&*done),
            Body::Owned { done, .. } => done.as_ref(),
            Body::Eager { .. } | Body::Buffered(_) | Body::SyncCopy { .. } => None,
        };
        if let Some(done) = done {
            done.complete(Ok(Status::default()));
        }
    }
}

/// A posted receive.
struct Posted {
    id: u64,
    dst: RecvBuf,
    done: Arc<Completion>,
}

/// An arrived message: body, world rank of the sender, eager credit it holds,
/// and whether it came by another transport ([`Shm::park`]).
struct Incoming {
    body: Body,
    from: usize,
    credit: usize,
    parked: bool,
}

impl Incoming {
    /// A message sent over shared memory.
    fn sent(body: Body, from: usize, credit: usize) -> Self {
        Incoming {
            body,
            from,
            credit,
            parked: false,
        }
    }
}

struct Inbox {
    matcher: Matcher<Posted, Incoming>,
    /// Eager bytes held per sending world rank (flow control).
    credit_used: Vec<usize>,
    /// Id of the next receive posted here. Per mailbox, under its lock: a
    /// process-wide atomic counter was one cache line that every rank's
    /// receive pulled to its core.
    next_recv_id: u64,
}

impl Inbox {
    /// Queues a message no posted receive accepted, charging its sender's credit.
    fn queue(&mut self, env: Envelope, msg: Incoming) {
        self.credit_used[msg.from] += msg.credit;
        self.matcher.push_unexpected(env, msg);
    }
}

/// One rank's mailbox.
///
/// The lock and queues (written on every post and match) and the arrival waiters
/// (read by every fastbox send) sit on separate cache lines, so a sender's check for
/// parked receivers does not pull the receiver's queue line away from it.
struct Mailbox {
    inbox: CachePadded<Mutex<Inbox>>,
    arrivals: CachePadded<ArrivalWaiters>,
    /// Posted receives + unexpected messages, as of the last unlock: zero lets
    /// a blocking receive take a fastbox message without the lock.
    queued: CachePadded<AtomicUsize>,
    /// Messages [parked](Shm::park) here and not taken yet.
    parked: AtomicUsize,
}

/// A locked inbox; unlocking publishes how much it holds (`Mailbox::queued`).
struct InboxGuard<'a> {
    inbox: MutexGuard<'a, Inbox>,
    queued: &'a AtomicUsize,
}

impl std::ops::Deref for InboxGuard<'_> {
    type Target = Inbox;
    fn deref(&self) -> &Inbox {
        &self.inbox
    }
}

impl std::ops::DerefMut for InboxGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inbox {
        &mut self.inbox
    }
}

impl Drop for InboxGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock (the mutex guard drops after this).
        self.queued.store(self.inbox.matcher.len(), Release);
    }
}

/// How a send went.
pub(crate) enum SendOutcome {
    /// Copied into a posted receive, or queued eagerly: the send is complete.
    Done,
    /// Rendezvous: the receiver will complete this once it has the data. Until
    /// then the sender's buffer must stay valid.
    Pending(Arc<Completion>),
    /// Ready send without a posted receive: nothing happened.
    NotReady,
}

/// How posting a receive went.
pub(crate) enum RecvOutcome {
    /// Matched an arrived message at once.
    Done(Result<Status>),
    /// Queued; `done` completes when a sender fills the buffer.
    Pending { id: u64, done: Arc<Completion> },
}

/// The send modes as the transport sees them.
pub(crate) enum Mode {
    Standard,
    Buffered(BsendSpace),
    Synchronous,
    Ready,
}

/// The shared-memory transport of one process: a mailbox per rank.
pub(crate) struct Shm {
    mailboxes: Box<[Mailbox]>,
    /// The lock-free ways of small messages: each pair's fastbox and ring.
    small: Option<(Fastboxes, Rings)>,
    eager_threshold: usize,
    /// Largest standard send the fastbox takes: [`FASTBOX_BYTES`], or the
    /// eager threshold when that is lower.
    tiny: usize,
    credit: usize,
}

impl Shm {
    /// Mailboxes for `ranks` ranks.
    pub fn new(ranks: usize, eager_threshold: usize, credit: usize) -> Self {
        let mailboxes = (0..ranks)
            .map(|_| Mailbox {
                inbox: CachePadded::new(Mutex::new(Inbox {
                    matcher: Matcher::default(),
                    credit_used: vec![0; ranks],
                    next_recv_id: 1,
                })),
                arrivals: CachePadded::default(),
                queued: CachePadded::default(),
                parked: AtomicUsize::new(0),
            })
            .collect();
        Shm {
            mailboxes,
            small: (ranks <= FASTBOX_MAX_RANKS)
                .then(|| (Fastboxes::new(ranks), Rings::new(ranks, credit))),
            eager_threshold,
            tiny: FASTBOX_BYTES.min(eager_threshold),
            credit,
        }
    }

    /// Locks `rank`'s mailbox, first moving any fastbox and ring messages for
    /// it into the matching engine (as if they arrived now, before whatever the
    /// caller does). Each pair's fastbox first: while it holds a message, a
    /// message of the same sending thread in the ring is a later one (a
    /// fastbox is only filled while the pair's ring is empty).
    fn inbox(&self, rank: usize) -> InboxGuard<'_> {
        // A panic never happens while an inbox is locked (no user code runs there),
        // so a poisoned lock still holds consistent state.
        let mut inbox = InboxGuard {
            inbox: self.mailboxes[rank]
                .inbox
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            queued: &self.mailboxes[rank].queued,
        };
        if let Some((fb, rings)) = &self.small {
            let mut delivered = false;
            for from in 0..self.mailboxes.len() {
                loop {
                    if let Some(t) = fb.claim_waiting(from, rank) {
                        let sync = t.sync.then_some(fb);
                        delivered |= self.arrive(&mut inbox, rank, t.env, from, t.bytes(), sync);
                        // Queued (or delivered) before the slot empties: a
                        // receiver that later claims this sender's next
                        // message then sees it queued.
                        fb.release(from, rank);
                    }
                    let Some(c) = rings.claim_oldest(from, rank) else {
                        break;
                    };
                    if fb.holds(from, rank) {
                        // Filled after the look above: possibly by the same
                        // thread before its ring message. The fastbox first.
                        c.unclaim();
                        continue;
                    }
                    delivered |= self.arrive(&mut inbox, rank, c.env, from, c.bytes(), None);
                    c.release();
                }
            }
            if delivered {
                self.mailboxes[rank].arrivals.notify();
            }
        }
        inbox
    }

    /// A message drained from a fastbox or ring into `rank`'s locked `inbox`:
    /// it fills a posted receive (`true`), or is queued as a copy, charged to
    /// its sender's credit. `sync`: a synchronous send's, whose match is counted
    /// in these fastboxes.
    fn arrive(
        &self,
        inbox: &mut InboxGuard<'_>,
        rank: usize,
        env: Envelope,
        from: usize,
        bytes: &[u8],
        sync: Option<&Fastboxes>,
    ) -> bool {
        if let Some(posted) = inbox.matcher.take_posted(&env) {
            posted.done.complete(posted.dst.fill(bytes, &env));
            if let Some(fb) = sync {
                fb.matched(from, rank);
            }
            return true;
        }
        let data = bytes.to_vec();
        let body = match sync {
            Some(fb) => Body::SyncCopy {
                data,
                _matched: fb.match_on_drop(from, rank),
            },
            None => Body::Eager { data },
        };
        let credit = bytes.len();
        inbox.queue(env, Incoming::sent(body, from, credit));
        self.regate(rank, from, inbox);
        // Published before the fastbox or cell empties (see `recv_fastbox`).
        let n = inbox.matcher.len();
        inbox.queued.store(n, Release);
        false
    }

    /// A blocking receive at `me` from local rank `from` only, without the
    /// lock: while nothing is posted or queued at `me`, spins on `from`'s
    /// fastbox and ring (up to `spins` times) and copies a matching message
    /// straight into `dst`. `None` (nothing done) when the receive must take the
    /// ordinary path: something is posted or queued (it may come first), the
    /// message does not match, or nothing came. A message taken here is the
    /// one the ordinary path would have matched: nothing from `from` can be
    /// queued behind a full fastbox or ring cell (its sender's next send drains
    /// them first, and that drain waits for this claim to be decided), and a
    /// ring message is only taken while the fastbox is empty (a fastbox
    /// message may be the same thread's earlier one).
    pub fn recv_fastbox(
        &self,
        me: usize,
        from: usize,
        pat: &Pattern,
        dst: RecvBuf,
        spins: u32,
    ) -> Option<Result<Status>> {
        let (fb, rings) = self.small.as_ref()?;
        let queued = &self.mailboxes[me].queued;
        // Looked up once: a ring made while this spins is only looked at by
        // the ordinary path (which drains it).
        let ring = rings.ring(from, me);
        for _ in 0..spins.max(1) {
            if queued.load(Acquire) != 0 {
                return None;
            }
            if let Some(claim) = fb.claim(from, me) {
                let env = claim.env();
                if queued.load(Acquire) != 0 || !pat.matches(&env) {
                    claim.unclaim();
                    return None;
                }
                // Copied straight from the slot, which stays ours until released.
                let status = dst.fill_small(claim.data(), claim.len(), &env);
                let sync = claim.sync();
                claim.release();
                if sync {
                    fb.matched(from, me);
                }
                return Some(status);
            }
            if let Some(claimed) = ring.and_then(|r| r.claim()) {
                // The fastbox checked after the claim: a drain that took its
                // message published the queue before emptying it.
                if !fb.is_empty(from, me) || queued.load(Acquire) != 0 || !pat.matches(&claimed.env)
                {
                    claimed.unclaim();
                    return None;
                }
                let status = dst.fill(claimed.bytes(), &claimed.env);
                claimed.release();
                return Some(status);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Drains `me`'s fastboxes and rings if any holds a message (cheap when
    /// none does).
    pub fn progress(&self, me: usize) {
        if self
            .small
            .as_ref()
            .is_some_and(|(fb, rings)| fb.any_full(me) || rings.any_full(me))
        {
            drop(self.inbox(me));
        }
    }

    /// Waits until the receive posted at `me` with completion `done` completes
    /// (`Ok(outcome)`), draining `me`'s fastboxes meanwhile (their senders do not
    /// match receives). Gives up with `Err` when a rank fails, or when `peer` (the
    /// receive's only possible source) finishes without having sent a match.
    pub fn wait_recv(
        &self,
        me: usize,
        done: &Completion,
        live: &Liveness,
        peer: Option<Peer>,
    ) -> Result<Result<Status>> {
        self.wait_arrival(me, live, peer, || {
            self.progress(me);
            done.poll()
        })
    }

    /// A blocking synchronous send of a tiny message through the pair's fastbox:
    /// `Some(n)` when put there, to be waited for with
    /// [`wait_sync`](Self::wait_sync); `None` when it must take the ordinary way
    /// (too long, fastbox full, another synchronous fastbox send of the pair in
    /// flight, the pair's ring not empty), or should: to itself, or when the
    /// receiver has receives posted (one may match at once, which the ordinary
    /// way does on the spot).
    /// No lock, no allocation, and the receiver's match is one counter step.
    pub fn ssend_fastbox(
        &self,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
    ) -> Option<u64> {
        let (fb, rings) = self.small.as_ref()?;
        if from == to
            || data.len() > FASTBOX_BYTES
            || self.mailboxes[to].queued.load(Acquire) != 0
            || !rings.is_empty(from, to)
        {
            return None;
        }
        let n = fb.try_put_sync(from, to, env, data)?;
        self.mailboxes[to].arrivals.notify();
        Some(n)
    }

    /// Whether the synchronous fastbox send `from → to` numbered `n` has been
    /// matched.
    pub fn sync_matched(&self, from: usize, to: usize, n: u64) -> bool {
        let (fb, _) = self.small.as_ref().expect("ssend_fastbox put it there");
        fb.matched_count(from, to) > n
    }

    /// Waits until the synchronous fastbox send `from → to` that
    /// [`ssend_fastbox`](Self::ssend_fastbox) numbered `n` has been matched.
    /// Gives up with `Err` when a rank fails or `peer` finishes without having
    /// matched it (the message then stays behind, unreceived, as with MPI, and
    /// keeps the pair's token: later synchronous sends take the mailbox).
    pub fn wait_sync(
        &self,
        from: usize,
        to: usize,
        n: u64,
        live: &Liveness,
        peer: Peer,
    ) -> Result<()> {
        // Not `sync::poll_until`: checking liveness on every poll made a tiny
        // `ssend`/`issend` 5-20 ns slower (measured); here it is every 64th.
        let matched = || self.sync_matched(from, to, n);
        let mut polls = 0u32;
        loop {
            if matched() {
                return Ok(());
            }
            polls = polls.wrapping_add(1);
            if polls % 64 == 0 {
                // Our own posted receives may match a synchronous message
                // waiting in our fastboxes, whose sender may be the receiver
                // we wait for: it checked for posted receives just before we
                // posted one, and put its message just after our post's drain.
                self.progress(from);
                live.check()?;
                // Finished first, then not matched: it never will be.
                if live.has_finished(peer) && !matched() {
                    return Err(Error::PeerFinished { rank: peer.rank });
                }
                if polls > 1 << 12 {
                    std::thread::yield_now(); // more ranks than cores: let the receiver run
                }
            }
            std::hint::spin_loop();
        }
    }

    /// A standard send of at most [`FASTBOX_BYTES`] through the pair's
    /// fastbox, if it is free (and the pair's ring empty: consumers take the
    /// fastbox's message first); `false`: nothing done, take
    /// [`send`](Self::send). The common tiny send, without the mode dispatch,
    /// lock or matching of the general path.
    #[inline]
    pub fn send_tiny(&self, from: usize, to: usize, env: &Envelope, data: &[u8]) -> bool {
        let Some((fb, rings)) = &self.small else {
            return false;
        };
        // The length first: the ring's counters are lines its consumer writes.
        // (`tiny`: a threshold below the fastbox makes tiny sends rendezvous.)
        if data.len() <= self.tiny && rings.is_empty(from, to) && fb.try_put(from, to, env, data) {
            self.mailboxes[to].arrivals.notify();
            return true;
        }
        false
    }

    /// Sends `data` from world rank `from` to world rank `to`.
    ///
    /// # Safety
    /// If `Pending` is returned, `data` must stay valid and unmodified until the
    /// completion is done (or [`cancel_send`](Self::cancel_send) succeeds).
    pub unsafe fn send(
        &self,
        from: usize,
        to: usize,
        env: Envelope,
        data: &[u8],
        mode: Mode,
    ) -> SendOutcome {
        // Tiny standard and buffered sends go through the pair's fastbox (a
        // buffered one then gives its attached-buffer space back at once, as
        // when it meets a posted receive), but only while the pair's ring is
        // empty: consumers take the fastbox's message first. Small standard
        // sends go through the ring. Buffered ones above the fastbox keep
        // their space until delivered, as `bsend` documents.
        if let (Mode::Standard | Mode::Buffered(_), Some((_, rings))) = (&mode, &self.small) {
            if self.send_tiny(from, to, &env, data) {
                return SendOutcome::Done;
            }
            if matches!(mode, Mode::Standard)
                && data.len() <= self.eager_threshold
                && rings.try_put(from, to, &env, data)
            {
                self.mailboxes[to].arrivals.notify();
                return SendOutcome::Done;
            }
        }
        let mut inbox = self.inbox(to);
        if let Some(posted) = inbox.matcher.take_posted(&env) {
            drop(inbox);
            let outcome = posted.dst.fill_shared(data, &env, &posted.done);
            posted.done.complete(outcome);
            self.mailboxes[to].arrivals.notify();
            return SendOutcome::Done;
        }
        let (body, credit, outcome) = match mode {
            Mode::Ready => return SendOutcome::NotReady,
            Mode::Buffered(space) => (Body::Buffered(space.store(data)), 0, SendOutcome::Done),
            Mode::Standard
                if data.len() <= self.eager_threshold
                    && inbox.credit_used[from] + data.len() <= self.credit =>
            {
                let body = Body::Eager {
                    data: data.to_vec(),
                };
                (body, data.len(), SendOutcome::Done)
            }
            Mode::Standard | Mode::Synchronous => {
                let done = Completion::shared();
                let body = Body::Borrowed {
                    src: SendPtr(data.as_ptr(), data.len()),
                    done: done.clone(),
                };
                (body, 0, SendOutcome::Pending(done))
            }
        };
        self.enqueue(inbox, to, env, Incoming::sent(body, from, credit));
        outcome
    }

    /// Sends an owned `Vec` (boxed as `data`) without copying it.
    /// `Pending` when the pair's credit is used up: the send completes at the match.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be the contents of the `Vec` inside `data`.
    pub unsafe fn send_owned(
        &self,
        from: usize,
        to: usize,
        env: Envelope,
        data: Box<dyn Any + Send>,
        ptr: *const u8,
        len: usize,
    ) -> SendOutcome {
        let src = SendPtr(ptr, len);
        let mut inbox = self.inbox(to);
        if let Some(posted) = inbox.matcher.take_posted(&env) {
            drop(inbox);
            let body = Body::Owned {
                data: Some(data),
                src,
                done: None,
            };
            posted.done.complete(posted.dst.fill(body.bytes(), &env));
            self.mailboxes[to].arrivals.notify();
            return SendOutcome::Done;
        }
        let (credit, done) = if inbox.credit_used[from] + len <= self.credit {
            (len, None)
        } else {
            (0, Some(Completion::shared()))
        };
        let outcome = match &done {
            Some(d) => SendOutcome::Pending(d.clone()),
            None => SendOutcome::Done,
        };
        let body = Body::Owned {
            data: Some(data),
            src,
            done,
        };
        self.enqueue(inbox, to, env, Incoming::sent(body, from, credit));
        outcome
    }

    fn enqueue(&self, mut inbox: InboxGuard<'_>, to: usize, env: Envelope, msg: Incoming) {
        let from = msg.from;
        inbox.queue(env, msg);
        self.regate(to, from, &inbox);
        drop(inbox);
        self.mailboxes[to].arrivals.notify();
    }

    /// Removes a rendezvous send that no receive has matched yet (used when a
    /// pending send must be abandoned). `false` if it was already matched.
    pub fn cancel_send(&self, to: usize, done: &Arc<Completion>) -> bool {
        let mut inbox = self.inbox(to);
        let pat_all = |inc: &Incoming| match &inc.body {
            Body::Borrowed { done: d, .. } => Arc::ptr_eq(d, done),
            Body::Owned { done: Some(d), .. } => Arc::ptr_eq(d, done),
            _ => false,
        };
        let found = inbox.matcher.remove_unexpected(pat_all);
        drop(inbox);
        // Dropping the body completes `done`.
        found.is_some()
    }

    /// Posts a receive at world rank `me`.
    pub fn recv(&self, me: usize, pat: Pattern, dst: RecvBuf) -> RecvOutcome {
        let mut inbox = self.inbox(me);
        if let Some((env, msg)) = self.take(me, &mut inbox, &pat) {
            drop(inbox);
            // Copy, then drop the body: that completes a rendezvous sender,
            // which meanwhile may share the copy.
            let filled = match &msg.body {
                Body::Borrowed { done, .. } => dst.fill_shared(msg.body.bytes(), &env, done),
                body => dst.fill(body.bytes(), &env),
            };
            return RecvOutcome::Done(filled);
        }
        let id = inbox.next_recv_id;
        inbox.next_recv_id += 1;
        let done = Completion::shared();
        inbox.matcher.push_posted(
            pat,
            Posted {
                id,
                dst,
                done: done.clone(),
            },
        );
        RecvOutcome::Pending { id, done }
    }

    /// Takes the first message queued at `me` that `pat` accepts, giving its
    /// credit back.
    fn take(&self, me: usize, inbox: &mut Inbox, pat: &Pattern) -> Option<(Envelope, Incoming)> {
        let (env, msg) = inbox.matcher.take_unexpected(pat)?;
        if msg.parked {
            self.mailboxes[me].parked.fetch_sub(1, Relaxed);
        }
        inbox.credit_used[msg.from] -= msg.credit;
        self.regate(me, msg.from, inbox);
        Some((env, msg))
    }

    /// Opens or closes the `from → to` ring after the pair's credit use
    /// changed (see [`Rings::regate`]).
    fn regate(&self, to: usize, from: usize, inbox: &Inbox) {
        if let Some((_, rings)) = &self.small {
            rings.regate(from, to, inbox.credit_used[from]);
        }
    }

    /// Withdraws a posted receive that no send has matched. `false` if a send
    /// already matched it (its completion is then done or about to be).
    pub fn cancel_recv(&self, me: usize, id: u64) -> bool {
        self.inbox(me)
            .matcher
            .remove_posted(|p| p.id == id)
            .is_some()
    }

    /// Nonblocking probe: the status of the first message `pat` accepts.
    pub fn iprobe(&self, me: usize, pat: &Pattern) -> Option<Status> {
        let inbox = self.inbox(me);
        let (env, msg) = inbox.matcher.peek_unexpected(pat)?;
        Some(Status::new(env.source, env.tag, msg.body.bytes().len()))
    }

    /// Nonblocking matched probe: claims the first message `pat` accepts.
    pub fn improbe(&self, me: usize, pat: &Pattern) -> Option<(Envelope, Body)> {
        let mut inbox = self.inbox(me);
        self.take(me, &mut inbox, pat)
            .map(|(env, msg)| (env, msg.body))
    }

    /// Blocks until `poll` (a probe of `me`'s mailbox) finds something. Gives up
    /// when a rank fails, or when `peer` (the only possible source) has finished
    /// and a last poll finds nothing.
    pub fn wait_arrival<T>(
        &self,
        me: usize,
        live: &Liveness,
        peer: Option<Peer>,
        mut poll: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        self.mailboxes[me]
            .arrivals
            .wait_for(live, || {
                if let Some(found) = poll() {
                    return Some(Ok(found));
                }
                let peer = peer.filter(|&p| live.has_finished(p))?;
                Some(poll().ok_or(Error::PeerFinished { rank: peer.rank }))
            })
            .and_then(|r| r)
    }

    /// Delivers a message that arrived by another transport at `me` as if it
    /// had just arrived here: into the first posted receive that accepts it,
    /// else queued like any eager message, and counted as parked until a
    /// receive or matched probe takes it (see [`parked`](Self::parked)).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn park(&self, me: usize, env: Envelope, data: Vec<u8>) {
        let mut inbox = self.inbox(me);
        if let Some(posted) = inbox.matcher.take_posted(&env) {
            drop(inbox);
            posted.done.complete(posted.dst.fill(&data, &env));
            return;
        }
        let body = Body::Eager { data };
        let msg = Incoming {
            body,
            from: me,
            credit: 0,
            parked: true,
        };
        self.mailboxes[me].parked.fetch_add(1, Relaxed);
        self.enqueue(inbox, me, env, msg);
    }

    /// Whether `me`'s mailbox holds a message that came by another transport:
    /// then a receive from a rank of another process must look there first.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn parked(&self, me: usize) -> bool {
        self.mailboxes[me].parked.load(Relaxed) > 0
    }

    /// Bytes of eagerly buffered (copied or moved) messages waiting at `me`.
    pub fn buffered_bytes(&self, me: usize) -> usize {
        self.inbox(me).credit_used.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_buf(v: &mut [u8]) -> RecvBuf {
        // SAFETY: each test keeps `v` alive and untouched until the receive
        // using it has completed.
        unsafe { RecvBuf::new(v.as_mut_ptr(), v.len(), Elem::of::<u8>()) }
    }

    const ANY: Pattern = Pattern {
        ctx: 0,
        source: None,
        tag: None,
    };

    const FROM_AFAR: Envelope = Envelope {
        ctx: 0,
        source: 1,
        tag: 3,
    };

    /// A parked message counts until a receive takes it, whichever receive:
    /// here one for any source, which never looks at the count.
    #[test]
    fn a_parked_message_counts_until_any_receive_takes_it() {
        let shm = Shm::new(2, 16384, 1 << 18);
        shm.park(0, FROM_AFAR, vec![7; 4]);
        assert!(shm.parked(0) && !shm.parked(1));
        let mut v = [0u8; 4];
        let RecvOutcome::Done(Ok(st)) = shm.recv(0, ANY, recv_buf(&mut v)) else {
            panic!("the parked message was not received");
        };
        assert_eq!((st.source, st.tag, v), (1, 3, [7; 4]));
        assert!(!shm.parked(0), "a taken message still counts as parked");
    }

    /// A message parked while a receive that accepts it is posted fills that
    /// receive, as an arrival would, and is not counted.
    #[test]
    fn a_parked_message_fills_a_posted_receive() {
        let shm = Shm::new(2, 16384, 1 << 18);
        let mut v = [0u8; 4];
        let RecvOutcome::Pending { done, .. } = shm.recv(0, ANY, recv_buf(&mut v)) else {
            panic!("nothing had arrived");
        };
        shm.park(0, FROM_AFAR, vec![7; 4]);
        let st = done
            .outcome()
            .expect("filled by the parked message")
            .unwrap();
        assert_eq!((st.source, st.tag, v), (1, 3, [7; 4]));
        assert!(!shm.parked(0));
    }
}
