//! Waiting: spin briefly, then park; every wait also watches for a failed rank,
//! so no rank hangs when another dies.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use crossbeam_utils::Backoff;

use crate::{Error, Result, Status};

/// Longest a parked waiter sleeps before it looks at the failure flag again.
/// Completions unpark waiters directly; this only bounds how long a waiter that
/// nobody will ever wake (its peer died) takes to notice.
const PARK_SLICE: Duration = Duration::from_millis(2);

/// The first failure of the run (a rank that panicked or returned an error).
#[derive(Debug, Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    first: OnceLock<usize>,
    rank_threads: Mutex<Vec<Thread>>,
}

impl Failure {
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
        for t in self
            .rank_threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            t.unpark();
        }
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
    /// operation itself may still complete later).
    pub fn wait(&self, failure: &Failure) -> Result<Status> {
        self.wait_inner(Some(failure))?;
        self.outcome
            .get()
            .cloned()
            .expect("done implies an outcome")
    }

    /// Waits for completion whatever happens elsewhere. Only for completions
    /// that are guaranteed to come (a receiver already copying our buffer).
    pub fn wait_regardless(&self) {
        let _ = self.wait_inner(None);
    }

    fn wait_inner(&self, failure: Option<&Failure>) -> Result<()> {
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if self.is_done() {
                return Ok(());
            }
            backoff.snooze();
        }
        *self.sleeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        self.sleeping.store(true, SeqCst);
        let res = loop {
            if self.done.load(SeqCst) {
                break Ok(());
            }
            if let Some(f) = failure {
                if let Err(e) = f.check() {
                    break Err(e);
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
            for t in self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                t.unpark();
            }
        }
    }

    /// Waits until `poll` returns `Some`, re-polling after each arrival.
    pub fn wait_for<T>(&self, failure: &Failure, mut poll: impl FnMut() -> Option<T>) -> Result<T> {
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if let Some(v) = poll() {
                return Ok(v);
            }
            backoff.snooze();
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
            if let Err(e) = failure.check() {
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
pub(crate) fn poll_until<T>(failure: &Failure, mut ready: impl FnMut() -> Option<T>) -> Result<T> {
    let backoff = Backoff::new();
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        failure.check()?;
        if backoff.is_completed() {
            thread::park_timeout(Duration::from_micros(50));
        } else {
            backoff.snooze();
        }
    }
}
