//! Starting a job: the embedded runtime runs N ranks as threads of this process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use crate::bsend::AttachedBuffer;
use crate::placement::{self, Placement};
use crate::sync::{Liveness, SPINS_DEDICATED, SPINS_OVERSUBSCRIBED};
use crate::transport::shm::Shm;
use crate::{Comm, Error, Result};

/// Default largest message sent eagerly (copied) by a standard send.
pub const DEFAULT_EAGER_THRESHOLD: usize = 16 * 1024;
/// Default flow-control credit: eager bytes one sender may leave at one receiver.
pub const DEFAULT_CREDIT: usize = 256 * 1024;

/// Everything the ranks of one job share.
pub(crate) struct World {
    pub shm: Shm,
    pub live: Liveness,
    /// Attached buffers for buffered sends, one per rank.
    pub bsend: Box<[AttachedBuffer]>,
    /// Next free communicator context (contexts come in pairs: p2p, collective).
    pub next_ctx: AtomicU32,
    /// Core each rank was pinned to (set by the rank itself once pinned).
    pub pinned: Box<[OnceLock<Option<usize>>]>,
    pub config: Runtime,
}

/// Configures and starts a job (builder).
///
/// ```
/// let sums = courier::Runtime::new().ranks(4).run(|comm| {
///     let mut total = [0u64];
///     comm.all_reduce(&[comm.rank() as u64], &mut total, |a, b| a + b)?;
///     Ok(total[0])
/// })?;
/// assert_eq!(sums, vec![6; 4]);
/// # Ok::<(), courier::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runtime {
    ranks: Option<usize>,
    eager_threshold: usize,
    credit: usize,
    placement: Placement,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// Defaults: one rank per core this process may use (or `COURIER_RANKS`),
    /// compact placement, 16 KiB eager threshold, 256 KiB credit per pair.
    pub fn new() -> Self {
        Runtime {
            ranks: None,
            eager_threshold: DEFAULT_EAGER_THRESHOLD,
            credit: DEFAULT_CREDIT,
            placement: Placement::default(),
        }
    }

    /// Number of ranks (threads).
    pub fn ranks(mut self, n: usize) -> Self {
        self.ranks = Some(n);
        self
    }

    /// Largest message a standard send copies eagerly; larger ones use rendezvous.
    pub fn eager_threshold(mut self, bytes: usize) -> Self {
        self.eager_threshold = bytes;
        self
    }

    /// Flow-control credit: the most eager bytes one sender may leave queued at one
    /// receiver; past it standard sends wait for the receiver (rendezvous).
    pub fn credit(mut self, bytes: usize) -> Self {
        self.credit = bytes;
        self
    }

    /// How rank-threads are pinned to cores.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The number of ranks `run` will start: as set, else `COURIER_RANKS`, else
    /// the cores this process may use.
    pub fn resolved_ranks(&self) -> Result<usize> {
        let n = match self.ranks {
            Some(n) => n,
            None => match std::env::var("COURIER_RANKS") {
                Ok(v) => v.trim().parse().map_err(|_| {
                    Error::InvalidConfig(format!("COURIER_RANKS={v:?} is not a number"))
                })?,
                Err(_) => thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        if n == 0 {
            return Err(Error::InvalidConfig("a job needs at least one rank".into()));
        }
        Ok(n)
    }

    /// The eager threshold in bytes.
    pub fn eager_threshold_bytes(&self) -> usize {
        self.eager_threshold
    }

    /// The flow-control credit in bytes.
    pub fn credit_bytes(&self) -> usize {
        self.credit
    }

    /// The placement policy.
    pub fn placement_policy(&self) -> Placement {
        self.placement
    }

    /// Runs `f` on every rank, each on its own (pinned) thread with its world
    /// communicator, and returns the ranks' results in rank order.
    ///
    /// If a rank panics or returns an error, every other rank's blocked calls
    /// return [`Error::PeerFailed`] and `run` returns the *first* failure:
    /// [`Error::RankPanicked`] or [`Error::RankFailed`], naming the rank.
    ///
    /// A process started as one of several by `mpirun` or `srun` is refused with
    /// [`Error::InvalidConfig`] (see [`Launch`](crate::Launch)): cluster mode is not
    /// built yet.
    pub fn run<R, F>(&self, f: F) -> Result<Vec<R>>
    where
        R: Send,
        F: Fn(&Comm) -> Result<R> + Sync,
    {
        crate::Launch::detect()?.check_supported()?;
        let n = self.resolved_ranks()?;
        let cores = placement::available_cores();
        let plan = placement::plan(self.placement, n, &cores);
        let world = Arc::new(World {
            shm: Shm::new(n, self.eager_threshold, self.credit),
            live: Liveness::new(
                if n > cores.len().max(1) {
                    SPINS_OVERSUBSCRIBED
                } else {
                    SPINS_DEDICATED
                },
                n,
            ),
            bsend: (0..n).map(|_| AttachedBuffer::default()).collect(),
            next_ctx: AtomicU32::new(2),
            pinned: (0..n).map(|_| OnceLock::new()).collect(),
            config: self.clone(),
        });
        let errors: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
        let results: Vec<Option<R>> = thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|rank| {
                    let world = world.clone();
                    let (f, errors, core) = (&f, &errors, plan[rank]);
                    thread::Builder::new()
                        .name(format!("courier-rank-{rank}"))
                        .spawn_scoped(s, move || {
                            world.live.register(thread::current());
                            let pinned = core.filter(|&c| placement::pin_current(c));
                            let _ = world.pinned[rank].set(pinned);
                            let comm = Comm::world(world.clone(), rank);
                            let outcome = match catch_unwind(AssertUnwindSafe(|| f(&comm))) {
                                Ok(Ok(r)) => {
                                    world.live.finish(rank);
                                    return Some(r);
                                }
                                Ok(Err(e)) => Error::RankFailed {
                                    rank,
                                    source: Box::new(e),
                                },
                                Err(payload) => Error::RankPanicked {
                                    rank,
                                    message: panic_message(&*payload),
                                },
                            };
                            errors
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((rank, outcome));
                            world.live.fail(rank);
                            None
                        })
                        .expect("spawning a rank thread")
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect()
        });
        if let Some(first) = world.live.first() {
            let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
            let i = errors
                .iter()
                .position(|(r, _)| *r == first)
                .expect("the first failure was recorded");
            return Err(errors.swap_remove(i).1);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("no failure, so every rank returned"))
            .collect())
    }
}

/// Runs `f` on `ranks` ranks with the default configuration (see [`Runtime::run`]).
pub fn run<R, F>(ranks: usize, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(&Comm) -> Result<R> + Sync,
{
    Runtime::new().ranks(ranks).run(f)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
