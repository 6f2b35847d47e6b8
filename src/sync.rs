//! Waiting: spin briefly, then park; every wait also watches for a failed rank,
//! so no rank hangs when another dies.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

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
/// The completer stores the outcome, then sets the flag; the waiter spins on
/// the flag (one cache line) and parks after a short backoff.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    done: AtomicBool,
    sleeping: AtomicBool,
    sleeper: Mutex<Option<Thread>>,
    outcome: OnceLock<Result<Status>>,
}

impl Completion {
    /// A fresh pending completion.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the operation has completed.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.done.load(Acquire)
    }

    /// Completes with `outcome` (the first completion wins) and wakes the waiter.
    pub fn complete(&self, outcome: Result<Status>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        self.done.store(true, SeqCst);
        // Pairs with the waiter's `sleeping` store then `done` load (both SeqCst):
        // either it sees `done`, or we see `sleeping` and unpark it.
        if self.sleeping.load(SeqCst) {
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

    /// The outcome, once done.
    pub fn outcome(&self) -> Option<Result<Status>> {
        if self.is_done() {
            self.outcome.get().cloned()
        } else {
            None
        }
    }

    /// Waits for completion, or until a rank fails (then `Err(PeerFailed)`; the
    /// operation itself may still complete later) or `peer` finishes without
    /// completing it (`Err(PeerFinished)`).
    pub fn wait(&self, live: &Liveness, peer: Peer) -> Result<Status> {
        self.wait_inner(live, Some(peer))?;
        self.outcome().expect("done implies an outcome")
    }

    /// Waits for completion whatever happens elsewhere. Only for completions
    /// that are guaranteed to come (a receiver already copying our buffer).
    pub fn wait_regardless(&self, live: &Liveness) {
        let _ = self.wait_inner(live, None);
    }

    /// With `watch = Some(peer)`, gives up when a rank fails or `peer` finishes.
    fn wait_inner(&self, live: &Liveness, watch: Option<Peer>) -> Result<()> {
        if live.spin_for(|| self.is_done().then_some(())).is_some() {
            return Ok(());
        }
        *self.sleeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        self.sleeping.store(true, SeqCst);
        let res = loop {
            if self.done.load(SeqCst) {
                break Ok(());
            }
            if let Some(peer) = watch {
                if let Err(e) = live.check() {
                    break Err(e);
                }
                // Finished first, then not done: it never matched and never will.
                if live.has_finished(peer) && !self.done.load(SeqCst) {
                    break Err(Error::PeerFinished { rank: peer.rank });
                }
            }
            thread::park_timeout(PARK_SLICE);
        };
        self.sleeping.store(false, Relaxed);
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
