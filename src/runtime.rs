//! Starting a job: the embedded runtime runs N ranks as threads of this process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use crate::bsend::AttachedBuffer;
use crate::launch::step_tasks_on_this_node;
use crate::placement::Placement;
use crate::sync::{Liveness, SPINS_DEDICATED, SPINS_OVERSUBSCRIBED};
use crate::topology::{self, Binding, Machine};
use crate::transport::mpi::{self, Mpi};
use crate::transport::shm::Shm;
use crate::{Comm, Error, Launch, Launcher, Result, SlurmJob};

/// Default largest message sent eagerly (copied) by a standard send: the
/// largest that a pair's ring cell takes. Above it, a copy into a heap buffer
/// and a second copy out cost more than the receiver copying once from the
/// sender's buffer: in `courier bench p2p` on this project's 2-core host (3
/// rounds alternating with a 16 KiB threshold), a standard send of 4, 8 and
/// 16 KiB took 0.33, 0.37–0.38 and 0.50–0.55 µs one way against 0.67–0.82,
/// 1.20–1.34 and 2.49–2.60, and a window of 4 KiB sends streamed at 13 500–
/// 14 000 MB/s against 2 400–5 400 (8 KiB and up: the same). Like Open MPI's
/// shared-memory eager limit (4 KiB), it means that two ranks that both `send`
/// a larger message before receiving wait for each other: exchange with
/// `sendrecv` or `isend`.
pub const DEFAULT_EAGER_THRESHOLD: usize = crate::transport::shm::RING_BYTES;
/// Default flow-control credit: eager bytes one sender may leave at one receiver.
pub const DEFAULT_CREDIT: usize = 256 * 1024;

/// Where the ranks of a job live: `processes` processes of `threads` rank-threads
/// each; global rank = process × threads + thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub process: usize,
    pub processes: usize,
    pub threads: usize,
}

impl Layout {
    /// Ranks in the job.
    pub fn size(&self) -> usize {
        self.processes * self.threads
    }

    /// Process hosting world rank `w`.
    pub fn process_of(&self, w: usize) -> usize {
        w / self.threads
    }

    /// World rank of this process's first rank-thread.
    pub fn first(&self) -> usize {
        self.process * self.threads
    }

    /// Index of world rank `w` among this process's ranks, if it lives here.
    /// A subtraction and a compare, no division: every send and receive asks.
    pub fn local(&self, w: usize) -> Option<usize> {
        w.checked_sub(self.first()).filter(|&t| t < self.threads)
    }
}

/// Everything the ranks of one process share. Per-rank tables (mailboxes,
/// buffers, pins, liveness) are indexed by the rank's index in this process.
pub(crate) struct World {
    pub shm: Shm,
    pub live: Liveness,
    /// Attached buffers for buffered sends, one per local rank.
    pub bsend: Box<[AttachedBuffer]>,
    /// Next free communicator context (contexts come in pairs: p2p, collective).
    /// Process p hands out 2 + 2p + 2P·k, so contexts are unique job-wide.
    pub next_ctx: AtomicU32,
    /// Where each local rank was pinned, read back (set by the rank itself).
    pub pinned: Box<[OnceLock<Binding>]>,
    pub config: Runtime,
    pub layout: Layout,
    /// The MPI transport, in cluster mode.
    pub mpi: Option<Mpi>,
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
    threads: Option<usize>,
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
    /// compact placement, 2 KiB eager threshold, 256 KiB credit per pair.
    pub fn new() -> Self {
        Runtime {
            ranks: None,
            threads: None,
            eager_threshold: DEFAULT_EAGER_THRESHOLD,
            credit: DEFAULT_CREDIT,
            placement: Placement::default(),
        }
    }

    /// Number of ranks in the job. Embedded, that many threads; in cluster mode
    /// it must be a multiple of the number of processes (n / P threads each).
    pub fn ranks(mut self, n: usize) -> Self {
        self.ranks = Some(n);
        self
    }

    /// Rank-threads per process in cluster mode (overrides `COURIER_THREADS`;
    /// default: `SLURM_CPUS_PER_TASK` in a Slurm job, else the cores this
    /// process may use). Ignored when embedded.
    pub fn threads(mut self, t: usize) -> Self {
        self.threads = Some(t);
        self
    }

    /// Largest message a standard send copies eagerly (default
    /// [`DEFAULT_EAGER_THRESHOLD`], 2 KiB); larger ones use rendezvous and
    /// wait for the receive. Between ranks of one process; over MPI the MPI
    /// library's own eager limit applies. `0` makes every standard send wait
    /// for its receive, as `MPI_Ssend` would: a way to check that a program
    /// does not rely on sends being buffered.
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

    /// The number of ranks `run` will start in an embedded job: as set, else
    /// `COURIER_RANKS`, else the CPUs of this process's Slurm task
    /// (`SLURM_CPUS_PER_TASK`), else the cores this process may use.
    pub fn resolved_ranks(&self) -> Result<usize> {
        let n = match self.ranks {
            Some(n) => n,
            None => env_number("COURIER_RANKS")?.unwrap_or_else(default_threads),
        };
        if n == 0 {
            return Err(Error::InvalidConfig("a job needs at least one rank".into()));
        }
        Ok(n)
    }

    /// Rank-threads per process when this process is one of `processes`: from
    /// `ranks` (total, a multiple of `processes`), else `threads`, else
    /// `COURIER_THREADS`, else `COURIER_RANKS` / processes, else the CPUs of
    /// this process's Slurm task (`SLURM_CPUS_PER_TASK`), else the cores this
    /// process may use (its cpuset, as mpirun or Slurm bound it).
    pub fn resolved_threads(&self, processes: usize) -> Result<usize> {
        let total = match self.ranks {
            Some(n) => Some(n),
            None if self.threads.is_some() => None,
            None => match env_number("COURIER_THREADS")? {
                Some(t) => return nonzero_threads(t),
                None => env_number("COURIER_RANKS")?,
            },
        };
        match (total, self.threads) {
            (Some(n), _) if n % processes != 0 || n == 0 => Err(Error::InvalidConfig(format!(
                "{n} ranks cannot be spread evenly over {processes} processes \
                 (ask for a multiple of {processes}, or set threads per process)"
            ))),
            (Some(n), _) => Ok(n / processes),
            (None, Some(t)) => nonzero_threads(t),
            (None, None) => Ok(default_threads()),
        }
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
    /// # Cluster mode
    ///
    /// A process started as one of P by `mpirun`/`mpiexec` or `srun` (see
    /// [`Launch`]) runs T rank-threads (see
    /// [`resolved_threads`](Runtime::resolved_threads)) of a job of P × T ranks,
    /// rank = process × T + thread, and returns the results of its own ranks in
    /// rank order. Every process must call `run` the same number of times. A rank
    /// that fails ends the whole job with `MPI_Abort`, after printing its rank and
    /// error: ranks in other processes cannot be released with an error.
    pub fn run<R, F>(&self, f: F) -> Result<Vec<R>>
    where
        R: Send,
        F: Fn(&Comm) -> Result<R> + Sync,
    {
        let launch = Launch::detect()?;
        launch.check_supported()?;
        let (layout, mpi) = match launch {
            Launch::Parallel {
                index, processes, ..
            } if processes > 1 => {
                let threads = self.resolved_threads(processes)?;
                let layout = Layout {
                    process: index,
                    processes,
                    threads,
                };
                (layout, Some(Mpi::new(index, processes, threads)?))
            }
            _ => {
                let threads = self.resolved_ranks()?;
                let layout = Layout {
                    process: 0,
                    processes: 1,
                    threads,
                };
                (layout, None)
            }
        };
        let n = layout.threads;
        let (plan, usable) = plan_ranks(self.placement, n);
        let world = Arc::new(World {
            shm: Shm::new(n, self.eager_threshold, self.credit),
            live: Liveness::new(
                if n > usable {
                    SPINS_OVERSUBSCRIBED
                } else {
                    SPINS_DEDICATED
                },
                n,
            ),
            bsend: (0..n).map(|_| AttachedBuffer::default()).collect(),
            next_ctx: AtomicU32::new(2 + 2 * layout.process as u32),
            pinned: (0..n).map(|_| OnceLock::new()).collect(),
            config: self.clone(),
            layout,
            mpi,
        });
        let first_rank = layout.process * n;
        let errors: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
        let results: Vec<Option<R>> = thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|local| {
                    let world = world.clone();
                    let (f, errors, core) = (&f, &errors, plan[local]);
                    let rank = first_rank + local;
                    thread::Builder::new()
                        .name(format!("courier-rank-{rank}"))
                        .spawn_scoped(s, move || {
                            world.live.register(thread::current());
                            let binding = topology::pin_current(core);
                            if let Some(e) = &binding.error {
                                warn_once(format!("rank {rank}: {e}; it runs unpinned"));
                            }
                            let _ = world.pinned[local].set(binding);
                            let comm = Comm::world(world.clone(), rank);
                            let outcome = match catch_unwind(AssertUnwindSafe(|| f(&comm))) {
                                Ok(Ok(r)) => {
                                    world.live.finish(local);
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
                            if world.mpi.is_some() {
                                mpi::abort(&outcome.to_string());
                            }
                            errors
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((rank, outcome));
                            world.live.fail(local);
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
                .position(|(r, _)| *r == first_rank + first)
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

/// The PU for each of this process's `n` ranks under `policy`, and how many
/// PUs the ranks of this process may share. Whatever goes wrong (hwloc fails,
/// an empty cpuset, more ranks than PUs) is a warning, printed once per
/// process; the ranks concerned run unpinned or share PUs evenly.
fn plan_ranks(policy: Placement, n: usize) -> (Vec<Option<usize>>, usize) {
    let machine = match Machine::detect() {
        Ok(m) => m,
        Err(e) => {
            if policy != Placement::None {
                warn_once(format!("{e}; ranks run unpinned"));
            }
            let cpus = thread::available_parallelism().map_or(1, |c| c.get());
            return (vec![None; n], cpus);
        }
    };
    // Processes on one node that the launcher did not bind to disjoint
    // cpusets (`--bind-to none`) all see the whole machine: give the k-th
    // process on the node the k-th block of ranks of one node-wide plan.
    let offset = match node_local_index() {
        Some(k) if machine.is_whole() => k * n,
        _ => 0,
    };
    let mut plan = policy.plan(&machine, offset + n);
    for note in plan.notes.drain(..) {
        warn_once(note);
    }
    let usable = machine.pus.len().saturating_sub(offset).max(1);
    (plan.pus.split_off(offset), usable)
}

/// Default rank-threads for a process: the CPUs Slurm gave its task
/// (`SLURM_CPUS_PER_TASK`), else the cores of its cpuset, shared out among the
/// processes of the node when the launcher did not bind them.
fn default_threads() -> usize {
    if let Some(cpus) = SlurmJob::detect().and_then(|job| job.cpus_per_task) {
        return cpus;
    }
    match Machine::detect() {
        Ok(m) if m.is_whole() => (m.cores() / node_local_size().unwrap_or(1)).max(1),
        Ok(m) => m.cores(),
        Err(_) => thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Prints `message` as a warning, once per process.
fn warn_once(message: String) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&message) {
        eprintln!("courier: warning: {message}");
        seen.push(message);
    }
}

/// This process's index among the processes of the job on its node, as the
/// launcher reports it (`None` when embedded or unknown).
fn node_local_index() -> Option<usize> {
    node_env(&[
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ])
}

/// How many of the job's processes share this node, as the launcher reports it.
fn node_local_size() -> Option<usize> {
    node_env(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]).or_else(|| {
        match Launch::detect().ok()? {
            Launch::Parallel {
                launcher: Launcher::Srun,
                ..
            } => step_tasks_on_this_node(|k| std::env::var(k).ok()),
            _ => None,
        }
    })
}

fn node_env(vars: &[&str]) -> Option<usize> {
    if Launch::detect().ok()? == Launch::Embedded {
        return None;
    }
    vars.iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

fn env_number(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::InvalidConfig(format!("{name}={v:?} is not a number"))),
        Err(_) => Ok(None),
    }
}

fn nonzero_threads(t: usize) -> Result<usize> {
    if t == 0 {
        return Err(Error::InvalidConfig(
            "a process needs at least one rank-thread".into(),
        ));
    }
    Ok(t)
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

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn local_index_is_only_given_for_ranks_of_this_process() {
        let layout = Layout {
            process: 1,
            processes: 3,
            threads: 4,
        };
        let local: Vec<_> = (0..12).map(|w| layout.local(w)).collect();
        let mut expected = vec![None; 12];
        for t in 0..4 {
            expected[4 + t] = Some(t);
        }
        assert_eq!(local, expected);
        assert_eq!(layout.first(), 4);
    }
}
