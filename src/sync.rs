//! Waiting: spin briefly, then park; every wait also watches for a failed rank,
//! so no rank hangs when another dies.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::transport::shm::SharedCopy;
use crate::{Error, Result, Status};

/// Longest a parked waiter sleeps before it looks at the failure flag again.
/// Completions unpark waiters directly; this only bounds how long a waiter that
/// nobody will ever wake (its peer died) takes to notice.
const PARK_SLICE: Duration = Duration::from_millis(2);

/// Spins before a waiter starts yielding when every rank has a core of its own:
/// long enough to cover a message round trip many times over (tens of µs).
pub(crate) const SPINS_DEDICATED: u32 = 1 << 14;
/// Spins before yielding when ranks outnumber cores: the peer we wait for may
/// need this very core, so give it up almost at once.
pub(crate) const SPINS_OVERSUBSCRIBED: u32 = 1 << 6;
/// Yields after spinning, before parking.
const YIELDS: u32 = 16;

/// Spin, then yield, then tell the caller to park.
struct Spinner {
    step: u32,
    spins: u32,
}

impl Spinner {
    fn new(spins: u32) -> Self {
        Spinner { step: 0, spins }
    }

    /// Waits a little; `false` once it is time to park instead.
    #[inline]
    fn pause(&mut self) -> bool {
        self.step += 1;
        if self.step <= self.spins {
            std::hint::spin_loop();
            true
        } else if self.step <= self.spins + YIELDS {
            thread::yield_now();
            true
        } else {
            false
        }
    }
}

/// The one rank a wait depends on: if it finishes first, the wait is hopeless.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// Rank in the communicator (for the error).
    pub rank: usize,
    /// World rank.
    pub world: usize,
    /// Index among this process's ranks; `None` for a rank in another process.
    pub local: Option<usize>,
}

/// What every wait needs to stay live: how long to spin before parking, the
/// first failure of the run (a rank that panicked or returned an error), and
/// which ranks have finished.
#[derive(Debug)]
pub(crate) struct Liveness {
    spins: u32,
    failed: AtomicBool,
    first: OnceLock<usize>,
    finished: Box<[AtomicBool]>,
    rank_threads: Mutex<Vec<Thread>>,
}

impl Liveness {
    /// For `ranks` ranks whose waiters spin `spins` times before they yield and
    /// then park.
    pub fn new(spins: u32, ranks: usize) -> Self {
        Liveness {
            spins,
            failed: AtomicBool::new(false),
            first: OnceLock::new(),
            finished: (0..ranks).map(|_| AtomicBool::new(false)).collect(),
            rank_threads: Mutex::new(Vec::new()),
        }
    }

    /// Records that world rank `rank` returned from its closure: everything it
    /// will ever send is queued by now. Wakes waiters so they can notice.
    pub fn finish(&self, rank: usize) {
        self.finished[rank].store(true, SeqCst);
        unpark_all(&self.rank_threads);
    }

    /// Whether `peer` has finished (then all it sent is visible to the caller).
    pub fn has_finished(&self, peer: Peer) -> bool {
        peer.local.is_some_and(|l| self.finished[l].load(SeqCst))
    }

    /// How many times a waiter spins before it starts yielding.
    pub fn spin_budget(&self) -> u32 {
        self.spins
    }

    fn spinner(&self) -> Spinner {
        Spinner::new(self.spins)
    }

    /// Polls through the spin-and-yield phase; `None` once it is time to park.
    fn spin_for<T>(&self, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
        let mut spinner = self.spinner();
        loop {
            if let Some(v) = poll() {
                return Some(v);
            }
            if !spinner.pause() {
                return None;
            }
        }
    }

    /// Registers a rank thread, to be woken when any rank fails.
    pub fn register(&self, t: Thread) {
        self.rank_threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
    }

    /// Records that `rank` failed (only the first failure is kept) and wakes every
    /// rank thread so blocked operations return [`Error::PeerFailed`].
    pub fn fail(&self, rank: usize) {
        let _ = self.first.set(rank);
        self.failed.store(true, SeqCst);
        unpark_all(&self.rank_threads);
    }

    /// The first rank that failed, if any.
    pub fn first(&self) -> Option<usize> {
        self.first.get().copied()
    }

    /// `Err(PeerFailed)` once any rank has failed.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.failed.load(Relaxed) {
            Err(Error::PeerFailed {
                rank: self.first().unwrap_or(usize::MAX),
            })
        } else {
            Ok(())
        }
    }
}

/// A one-shot completion with a result: a request, a blocking receive, a
/// rendezvous sender waiting for its receiver.
///
/// The completer claims it, stores the outcome, then sets the done bit; the
/// waiter spins on that word and parks after a short backoff. An `Ok` status
/// is stored in plain atomics (an error, which is rare, under a lock): on a
/// tiny receive's path, completing costs two atomic read-modify-writes, where
/// a `OnceLock` for the outcome plus separate done and sleeping flags cost
/// three and a call into `Once`.
///
/// Shared completions come from a per-thread list of finished ones
/// ([`Completion::shared`]; a scope hands its finished requests' back with
/// [`Completion::recycle`]): an allocation and a free per request were a tenth
/// of a window of 64 `irecv`s and 64 `isend`s both ways (8 B, 0.33–0.36 µs per
/// message before, 0.29–0.32 after), and 0.02 µs of an 8-byte ready-send
/// ping-pong between two processes (median 0.458 against 0.435 µs, 8
/// alternating runs).
#[derive(Debug, Default)]
pub(crate) struct Completion {
    /// [`CLAIMED`], [`DONE`], [`FAILED`] and [`SLEEPING`] bits.
    state: AtomicU8,
    source: AtomicUsize,
    bytes: AtomicUsize,
    /// The tag (low 32 bits) and the cancelled flag (bit 32).
    tag: AtomicU64,
    /// The error of an `Err` outcome (bit [`FAILED`]).
    error: Mutex<Option<Error>>,
    sleeper: Mutex<Option<Thread>>,
    /// A copy the completer offers the waiter to share (bit [`OFFERED`]).
    offered: Mutex<Option<Arc<SharedCopy>>>,
}

thread_local! {
    /// Completions whose operations are over, for the next ones of this thread.
    static RECYCLED: RefCell<Vec<Arc<Completion>>> = const { RefCell::new(Vec::new()) };
}
/// Most completions a thread keeps for reuse.
const RECYCLED_MAX: usize = 256;

/// A completer has claimed the completion: later completions are ignored.
const CLAIMED: u8 = 1;
/// The outcome is stored.
const DONE: u8 = 2;
/// The outcome is an error (in `Completion::error`).
const FAILED: u8 = 4;
/// The waiter is parked (or about to be) and must be unparked.
const SLEEPING: u8 = 8;
/// The completer offers a copy to share (in `Completion::offered`).
const OFFERED: u8 = 16;

impl Completion {
    /// A fresh pending completion to share, from this thread's recycled ones
    /// when it has any (see [`recycle`](Self::recycle)).
    pub fn shared() -> Arc<Completion> {
        RECYCLED.with(|r| r.borrow_mut().pop()).unwrap_or_default()
    }

    /// Keeps `done` for [`shared`](Self::shared) when this was its last
    /// reference (its operation is over and nobody else can see it).
    pub fn recycle(mut done: Arc<Completion>) {
        if let Some(c) = Arc::get_mut(&mut done) {
            *c = Completion::default();
            RECYCLED.with(|r| {
                let mut r = r.borrow_mut();
                if r.len() < RECYCLED_MAX {
                    r.push(done);
                }
            });
        }
    }

    /// Completer: offers the waiter `copy` to share until
    /// [`withdraw_offer`](Self::withdraw_offer) (see `shm::copy`).
    pub fn offer(&self, copy: &Arc<SharedCopy>) {
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy.clone());
        self.state.fetch_or(OFFERED, Release);
    }

    /// Completer: ends the offer.
    pub fn withdraw_offer(&self) {
        self.state.fetch_and(!OFFERED, Relaxed);
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Whether a copy is offered.
    #[cfg(test)]
    pub fn has_offer(&self) -> bool {
        self.state.load(Relaxed) & OFFERED != 0
    }

    /// Waiter: copies chunks of the copy its completer offers, if any.
    #[inline]
    pub fn help(&self) {
        if self.state.load(Acquire) & OFFERED == 0 {
            return;
        }
        let copy = self
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(copy) = copy {
            copy.help();
        }
    }

    /// Whether the operation has completed.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.state.load(Acquire) & DONE != 0
    }

    /// Completes with `outcome` (the first completion wins) and wakes the waiter.
    pub fn complete(&self, outcome: Result<Status>) {
        if self.state.fetch_or(CLAIMED, Acquire) & CLAIMED != 0 {
            return;
        }
        let done = match outcome {
            Ok(st) => {
                self.source.store(st.source, Relaxed);
                self.bytes.store(st.bytes, Relaxed);
                let tag = u64::from(st.tag as u32) | (u64::from(st.cancelled) << 32);
                self.tag.store(tag, Relaxed);
                DONE
            }
            Err(e) => {
                *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                DONE | FAILED
            }
        };
        // One read-modify-write of the word the waiter sets SLEEPING in: either
        // it sees DONE and does not park, or we see SLEEPING and unpark it.
        if self.state.fetch_or(done, AcqRel) & SLEEPING != 0 {
            if let Some(t) = self
                .sleeper
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t.unpark();
            }
        }
    }

    /// A waiter's poll: helps with the copy its completer offers, if any
    /// ([`help`](Self::help)), then the outcome, once done.
    pub fn poll(&self) -> Option<Result<Status>> {
        self.help();
        self.outcome()
    }

    /// The outcome, once done.
    pub fn outcome(&self) -> Option<Result<Status>> {
        let state = self.state.load(Acquire);
        if state & DONE == 0 {
            return None;
        }
        if state & FAILED != 0 {
            let error = self.error.lock().unwrap_or_else(|e| e.into_inner());
            return Some(Err(error
                .clone()
                .expect("a failed completion holds its error")));
        }
        let tag = self.tag.load(Relaxed);
        Some(Ok(Status {
            source: self.source.load(Relaxed),
            tag: tag as u32 as i32,
            bytes: self.bytes.load(Relaxed),
            cancelled: tag >> 32 != 0,
        }))
    }

    /// Waits for completion, or until a rank fails (then `Err(PeerFailed)`; the
    /// operation itself may still complete later) or `peer` finishes without
    /// completing it (`Err(PeerFinished)`).
    /// `tick` runs between polls and after each nap: the waiter's own duties
    /// (draining its mailbox, see `Shm::wait_sync`).
    pub fn wait(&self, live: &Liveness, peer: Peer, mut tick: impl FnMut()) -> Result<Status> {
        self.wait_inner(live, Some(peer), &mut tick)?;
        self.outcome().expect("done implies an outcome")
    }

    /// Waits for completion whatever happens elsewhere. Only for completions
    /// that are guaranteed to come (a receiver already copying our buffer).
    pub fn wait_regardless(&self, live: &Liveness) {
        let _ = self.wait_inner(live, None, &mut || {});
    }

    /// With `watch = Some(peer)`, gives up when a rank fails or `peer` finishes.
    fn wait_inner(
        &self,
        live: &Liveness,
        watch: Option<Peer>,
        tick: &mut dyn FnMut(),
    ) -> Result<()> {
        let spun = live.spin_for(|| {
            if self.is_done() {
                return Some(());
            }
            self.help();
            tick();
            None
        });
        if spun.is_some() {
            return Ok(());
        }
        *self.sleeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        let res = if self.state.fetch_or(SLEEPING, AcqRel) & DONE != 0 {
            Ok(())
        } else {
            loop {
                if self.is_done() {
                    break Ok(());
                }
                if let Some(peer) = watch {
                    if let Err(e) = live.check() {
                        break Err(e);
                    }
                    // Finished first, then not done: it never matched and never will.
                    if live.has_finished(peer) && !self.is_done() {
                        break Err(Error::PeerFinished { rank: peer.rank });
                    }
                }
                tick();
                thread::park_timeout(PARK_SLICE);
            }
        };
        self.state.fetch_and(!SLEEPING, Relaxed);
        res
    }
}

/// Threads parked until something arrives in a mailbox (blocking probes).
#[derive(Debug, Default)]
pub(crate) struct ArrivalWaiters {
    count: AtomicUsize,
    threads: Mutex<Vec<Thread>>,
}

impl ArrivalWaiters {
    /// Wakes every waiter; cheap when there is none.
    #[inline]
    pub fn notify(&self) {
        if self.count.load(SeqCst) > 0 {
            unpark_all(&self.threads);
        }
    }

    /// Waits until `poll` returns `Some`, re-polling after each arrival.
    pub fn wait_for<T>(&self, live: &Liveness, mut poll: impl FnMut() -> Option<T>) -> Result<T> {
        if let Some(v) = live.spin_for(&mut poll) {
            return Ok(v);
        }
        let me = thread::current();
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(me.clone());
        self.count.fetch_add(1, SeqCst);
        let res = loop {
            // Registered before polling: an arrival after this poll will unpark us.
            if let Some(v) = poll() {
                break Ok(v);
            }
            if let Err(e) = live.check() {
                break Err(e);
            }
            thread::park_timeout(PARK_SLICE);
        };
        self.count.fetch_sub(1, SeqCst);
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = threads.iter().position(|t| t.id() == me.id()) {
            threads.swap_remove(i);
        }
        res
    }
}

/// Polls `ready` until it returns `Some` (spin, then short sleeps), or a rank fails.
/// For waits on several things at once (`wait_any`, `detach_buffer`).
pub(crate) fn poll_until<T>(live: &Liveness, mut ready: impl FnMut() -> Option<T>) -> Result<T> {
    let mut spinner = live.spinner();
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        live.check()?;
        if !spinner.pause() {
            thread::park_timeout(Duration::from_micros(50));
        }
    }
}

fn unpark_all(threads: &Mutex<Vec<Thread>>) {
    for t in threads.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        t.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_completion_is_reused_only_once_nobody_else_holds_it() {
        let a = Completion::shared();
        a.complete(Ok(Status::new(3, 4, 5)));
        let held = a.clone();
        Completion::recycle(a); // another reference remains: not kept
        let b = Completion::shared();
        assert!(!Arc::ptr_eq(&b, &held));
        let at = Arc::as_ptr(&held);
        Completion::recycle(held); // the last reference: kept, and reset
        let c = Completion::shared();
        assert_eq!(Arc::as_ptr(&c), at);
        assert!(!c.is_done());
        assert_eq!(c.outcome(), None);
        c.complete(Ok(Status::new(6, 7, 8)));
        assert_eq!(c.outcome(), Some(Ok(Status::new(6, 7, 8))));
    }

    #[test]
    fn the_first_completion_wins_and_its_status_comes_back_whole() {
        let done = Completion::default();
        assert!(!done.is_done());
        assert_eq!(done.outcome(), None);
        let st = Status {
            source: 7,
            tag: -3,
            bytes: usize::MAX,
            cancelled: true,
        };
        done.complete(Ok(st));
        done.complete(Err(Error::InactiveRequest));
        assert!(done.is_done());
        assert_eq!(done.outcome(), Some(Ok(st)));
    }

    #[test]
    fn an_error_outcome_comes_back_as_the_same_error() {
        let done = Completion::default();
        done.complete(Err(Error::PeerFinished { rank: 3 }));
        done.complete(Ok(Status::default()));
        assert_eq!(done.outcome(), Some(Err(Error::PeerFinished { rank: 3 })));
    }

    #[test]
    fn a_parked_waiter_returns_the_outcome_once_completed() {
        let live = Arc::new(Liveness::new(1, 2));
        let done = Arc::new(Completion::default());
        let (tx, rx) = mpsc::channel();
        let (l, d) = (live.clone(), done.clone());
        std::thread::spawn(move || {
            let peer = Peer {
                rank: 1,
                world: 1,
                local: Some(1),
            };
            tx.send(d.wait(&l, peer, || {})).unwrap();
        });
        // Long enough for the waiter to spin, yield and park.
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "returned before completion");
        done.complete(Ok(Status::new(1, 5, 8)));
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter never returned");
        assert_eq!(got, Ok(Status::new(1, 5, 8)));
    }
}
