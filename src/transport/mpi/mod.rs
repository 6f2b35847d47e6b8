//! The MPI transport: ranks in other processes (cluster mode), through rsmpi's
//! MPI bindings.
//!
//! # Routing rank-threads onto MPI
//!
//! MPI addresses processes; courier addresses rank-threads (global rank =
//! process × T + thread). A message from thread `s` of process `p` to thread `d`
//! of process `q`, on courier context `ctx`, travels on a **lane**: an MPI
//! communicator of its own for the triple (ctx, s, d), from MPI rank `p` to MPI
//! rank `q`, with the user's tag as the MPI tag. So MPI's own matching does
//! everything: a receive from one rank is an MPI receive from one process on one
//! lane with the exact tag or `MPI_ANY_TAG`, and FIFO per pair is MPI's
//! non-overtaking rule on that communicator. The alternatives were rejected:
//! encoding threads in the tag makes `ANY_TAG` inexpressible, and a progress
//! thread that receives everything on the process's behalf would match
//! `MPI_Ssend` before the user's receive is posted. The cost is T² communicators
//! per context (created collectively when a communicator is created), so very
//! large T × many communicators can reach an MPI library's communicator limit.
//!
//! # Receiving: the receiver matches, with matched probes or lane receives
//!
//! A courier receive that may match a remote sender is registered with its
//! rank ([`Mpi::post`]); whoever of the rank's threads waits or tests polls the
//! registry in posting order, claims a message with `MPI_Improbe` on the
//! receive's lanes (one lane for a named source; every lane into this thread,
//! plus shared memory, for `ANY_SOURCE`) and `MPI_Mrecv`s it straight into the
//! user's buffer. Claiming is MPI's match, so an `MPI_Ssend` completes exactly
//! when a courier receive took it. An `ANY_SOURCE` receive is also posted in
//! the shared-memory mailbox; if a local sender fills it while an MPI message
//! is being claimed, the claimed message goes to the next registered receive
//! that accepts it, as MPI's matching would have given it, or, with none, is
//! queued in the mailbox as an arrived message (nothing is lost, and receives
//! from that pair look there first, so FIFO holds).
//!
//! A small receive from one rank with an exact tag skips the probe where MPI's
//! own matching gives the same answer: it posts an `MPI_Irecv` on its lane
//! (into a region of its own that no message can overflow, then copied), so the
//! message is matched the moment it arrives. A blocking receive does so when
//! nothing else is registered ([`Mpi::recv_direct`]); a registered one when
//! every earlier receive that could take its messages is lane-posted too
//! ([`Mpi::lane_post`]), so MPI matches in posting order.
//!
//! # Ready sends
//!
//! `MPI_Rsend` is only defined when the receive is posted at the MPI level,
//! and the sender cannot see a remote process's receives. So a ready send asks
//! first. It sends a zero-byte *marker* on the data lane (tag `TAG_UB + 1`,
//! never a user tag), then a query on a control communicator, and waits for the
//! answer. The receiving rank answers from its poll loop, once the marker has
//! arrived — MPI's non-overtaking rule then guarantees that every earlier
//! message from that sender on that lane is visible. *Yes* if a courier receive
//! that the message would match is posted and no earlier message from that
//! sender matches it first; the receiver then withdraws the receive from
//! matching, posts an `MPI_Irecv` for exactly this message on a separate
//! communicator, and only then answers, so the sender's `MPI_Rsend` always
//! finds its receive posted. *No* gives `Err(NotReady)` and nothing is sent,
//! as over shared memory. The price is a round trip, and the receiver must be
//! inside a courier call (waiting or testing) to answer.
//!
//! Between processes of one node, the round trip is paid once per lane: a
//! lane that has carried a ready send gets its receives *offered* — posted
//! at the MPI level ahead of time and flagged in node-shared memory — and a
//! ready send that finds its receive offered sends at once, needing nothing
//! from the receiver ([`offers`]). A standard message that fills an offered
//! receive instead withdraws the offer and stops the offering on that lane
//! until its next ready send asks again. A ping-pong's receive, offered while
//! nothing else is registered, stays in place as the registry's solo entry
//! ([`Registry::solo`]), so registering and completing it move no entry.
//!
//! # Files
//!
//! This file has the transport's set-up, sends, receives, probes and progress;
//! [`registry`] what a thread keeps of its receives; [`ready`] the ready-send
//! handshake and offers; [`offers`] the node-shared offer slots; [`contexts`]
//! the table of each courier context's lanes.

mod buffer;
mod contexts;
mod offers;
mod ready;
mod registry;

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use mpi::ffi;

use self::buffer::ProcessBuffer;
use self::offers::Board;
use self::ready::{ReadyState, Settled, MARKER_TAG};
use self::registry::{
    finish, take, Done, LanePool, Pending, Registry, RegistryLock, Senders, LANE_RECV_MAX,
};
use crate::matching::{Envelope, Pattern};
use crate::sync::Completion;
use crate::transport::mpi_count as count;
use crate::transport::shm::{RecvBuf, SendOutcome, Shm};
use crate::{Error, Result, Status};

/// An MPI handle (communicator, request, message), which the C library lets any
/// thread use under `MPI_THREAD_MULTIPLE`.
#[derive(Clone, Copy)]
struct Handle<T>(T);
// SAFETY: MPI is initialized with MPI_THREAD_MULTIPLE (checked in `init`), under
// which MPI handles may be used from any thread.
unsafe impl<T> Send for Handle<T> {}
// SAFETY: as above; every handle kept here is only passed by value to MPI calls.
unsafe impl<T> Sync for Handle<T> {}

type Comm = Handle<ffi::MPI_Comm>;

/// `MPI_Get_library_version`'s string without its build details: Open MPI's
/// is one line; MPICH's goes on, after its version, date, ABI and device,
/// with its whole configure line and compiler flags (2 KiB), which `courier
/// info` does not need. Its lines are joined with "; ".
fn library_summary(full: &str) -> String {
    full.trim_end_matches(['\0', '\n', ' '])
        .lines()
        .take_while(|l| !l.contains("configure"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns an MPI return code into a courier error carrying MPI's error string.
#[inline]
fn check(code: c_int, call: &'static str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(mpi_error(code, call))
    }
}

#[cold]
#[inline(never)]
fn mpi_error(code: c_int, call: &'static str) -> Error {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: buf holds MPI_MAX_ERROR_STRING (256 in Open MPI and MPICH) bytes.
    unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    buf.truncate(len.max(0) as usize);
    Error::Mpi {
        call,
        code,
        message: String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_string(),
    }
}

fn byte() -> ffi::MPI_Datatype {
    // SAFETY: reading an immutable constant exported by mpi-sys.
    unsafe { ffi::RSMPI_UINT8_T }
}

/// What MPI calls `MPI_Status`, reduced to what courier uses.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    tag: c_int,
    bytes: usize,
}

fn arrived(st: &ffi::MPI_Status) -> Arrived {
    let mut n: c_int = 0;
    // SAFETY: `st` was filled by a successful probe or receive.
    unsafe { ffi::MPI_Get_count(st, byte(), &mut n) };
    Arrived {
        tag: st.MPI_TAG,
        bytes: n.max(0) as usize,
    }
}

pub(crate) use crate::MpiLibrary as Library;

/// Initializes MPI once per process with `MPI_THREAD_MULTIPLE` (every
/// rank-thread calls MPI) and finalizes it at exit.
static LIBRARY: std::sync::OnceLock<std::result::Result<Library, String>> =
    std::sync::OnceLock::new();

fn init() -> Result<&'static Library> {
    LIBRARY
        .get_or_init(|| {
            let mut provided: c_int = 0;
            // SAFETY: called once (OnceLock); null argc/argv are allowed.
            let code = unsafe {
                ffi::MPI_Init_thread(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    ffi::RSMPI_THREAD_MULTIPLE,
                    &mut provided,
                )
            };
            check(code, "MPI_Init_thread").map_err(|e| e.to_string())?;
            extern "C" {
                fn atexit(f: extern "C" fn()) -> c_int;
            }
            extern "C" fn finalize() {
                // SAFETY: runs once at process exit, after every rank thread has
                // been joined by `run`.
                unsafe { ffi::MPI_Finalize() };
            }
            // SAFETY: registering a plain function with the C runtime.
            unsafe { atexit(finalize) };
            // SAFETY: reading constants exported by mpi-sys.
            let level = unsafe {
                match provided {
                    p if p == ffi::RSMPI_THREAD_MULTIPLE => "MPI_THREAD_MULTIPLE",
                    p if p == ffi::RSMPI_THREAD_SERIALIZED => "MPI_THREAD_SERIALIZED",
                    p if p == ffi::RSMPI_THREAD_FUNNELED => "MPI_THREAD_FUNNELED",
                    _ => "MPI_THREAD_SINGLE",
                }
            };
            let version = library_summary(&mpi::environment::library_version().unwrap_or_default());
            let mut ub: *mut c_int = std::ptr::null_mut();
            let mut found: c_int = 0;
            // SAFETY: MPI_TAG_UB is a predefined attribute of MPI_COMM_WORLD whose
            // value is a pointer to an int.
            unsafe {
                ffi::MPI_Comm_get_attr(
                    ffi::RSMPI_COMM_WORLD,
                    ffi::MPI_TAG_UB as c_int,
                    (&mut ub as *mut *mut c_int).cast(),
                    &mut found,
                )
            };
            // SAFETY: when found, `ub` points to the attribute's int.
            let tag_ub = if found != 0 { unsafe { *ub } } else { 0 };
            if tag_ub < MARKER_TAG {
                return Err(format!(
                    "the MPI library ({version}) allows tags up to {tag_ub}; courier needs \
                     {MARKER_TAG} (user tags up to TAG_UB plus one reserved)"
                ));
            }
            if level != "MPI_THREAD_MULTIPLE" {
                return Err(format!(
                    "the MPI library ({version}) provides only {level}; courier's rank-threads \
                     need MPI_THREAD_MULTIPLE"
                ));
            }
            Ok(Library {
                version,
                standard: mpi::environment::version(),
                thread_level: level,
            })
        })
        .as_ref()
        .map_err(|e| Error::InvalidConfig(e.clone()))
}

/// The MPI library, if MPI has been initialized (cluster mode).
pub(crate) fn library() -> Option<&'static Library> {
    LIBRARY.get().and_then(|r| r.as_ref().ok())
}

/// Ends the whole job: prints why, then `MPI_Abort`.
pub(crate) fn abort(why: &str) -> ! {
    eprintln!("courier: {why}; aborting the job");
    // The launcher forwards this line from a pipe, and MPI_Abort races it:
    // under MPICH's Hydra the line was lost in 1 of 12 runs of the panic
    // test case. A job that is ending can spare the launcher a moment.
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: MPI is initialized (cluster mode); MPI_Abort does not return.
    unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 1) };
    std::process::exit(1)
}

/// This host's name, as MPI reports it.
pub(crate) fn processor_name() -> String {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: buf is larger than MPI_MAX_PROCESSOR_NAME (256 in Open MPI, 128 in MPICH).
    unsafe { ffi::MPI_Get_processor_name(buf.as_mut_ptr().cast(), &mut len) };
    buf.truncate(len.max(0) as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The lanes of one courier context: T×T communicators over the processes that
/// host the context's ranks.
struct Lanes {
    comms: Vec<Comm>,
    /// MPI rank in the lanes of each process (None: not a member).
    mpi_rank: Vec<Option<c_int>>,
    /// Process of each MPI rank in the lanes.
    process_of: Vec<usize>,
    /// Messages this process put on each lane to a process of its node, and
    /// took off each lane from one ([`Board::counter_at`]): what ready-send
    /// offers compare (see [`offers`]).
    sent: Box<[AtomicU64]>,
    received: Box<[AtomicU64]>,
    /// Lanes from a process of this node that have carried a ready send: only
    /// their receives are offered.
    ready_used: Box<[AtomicBool]>,
}

/// A rank of another process: its world rank, that process, its thread index
/// there, and the process's node rank when it shares this node (worked out
/// once per receive or ready send, by [`Mpi::remote`]: a division and a
/// lookup).
#[derive(Debug, Clone, Copy, Default)]
struct Remote {
    world: usize,
    q: usize,
    s: usize,
    node: Option<usize>,
}

/// The MPI transport of one process.
pub(crate) struct Mpi {
    process: usize,
    processes: usize,
    threads: usize,
    /// The lanes of each context, by context number.
    contexts: contexts::Table<Lanes>,
    /// Ready-send queries (tag 2·thread) and answers (tag 2·id + 1).
    control: Comm,
    /// Ready sends, each into an `MPI_Irecv` posted for it (tag = id).
    ready: Comm,
    pending: Box<[RegistryLock]>,
    /// Ready-send queries and markers, per thread.
    ready_state: Box<[Mutex<ReadyState>]>,
    /// Ready sends in flight (`MPI_Irsend`), per thread; the other nonblocking
    /// sends are kept by their requests ([`SendRequest`]).
    sends: Box<[Mutex<Vec<SendInFlight>>]>,
    next_id: AtomicI32,
    /// Ids of registered receives, per thread (unique within its registry):
    /// one counter for the process was a cache line every thread's receive
    /// pulled to its core.
    next_pending: Box<[CachePadded<AtomicU64>]>,
    /// The process's MPI buffer for `MPI_Bsend`: the sum of the ranks' buffers.
    bsend: ProcessBuffer,
    /// Where each thread's posted receives land (reserved on first use).
    scratch: Box<[Mutex<Option<Scratch>>]>,
    /// Ready-send offers between the processes of this node.
    board: Option<Board>,
    /// Per thread: some lane into it has carried a ready send (offers are due).
    offers_wanted: Box<[AtomicBool]>,
}

fn dup(comm: ffi::MPI_Comm) -> Result<Comm> {
    // SAFETY: a zeroed handle is a valid out-parameter.
    let mut new: ffi::MPI_Comm = unsafe { std::mem::zeroed() };
    // SAFETY: `comm` is a valid communicator; MPI_Comm_dup is collective over it
    // and every process calls it in the same order.
    check(unsafe { ffi::MPI_Comm_dup(comm, &mut new) }, "MPI_Comm_dup")?;
    // SAFETY: `new` is a valid communicator; ERRORS_RETURN makes errors values.
    unsafe { ffi::MPI_Comm_set_errhandler(new, ffi::RSMPI_ERRORS_RETURN) };
    Ok(Handle(new))
}

impl Mpi {
    /// The transport of process `process` of `processes`, with `threads` rank-threads.
    /// Collective over all processes.
    pub fn new(process: usize, processes: usize, threads: usize) -> Result<Mpi> {
        init()?;
        // SAFETY: reading a constant exported by mpi-sys.
        let world = unsafe { ffi::RSMPI_COMM_WORLD };
        let mut size: c_int = 0;
        // SAFETY: MPI is initialized; world is valid.
        unsafe { ffi::MPI_Comm_size(world, &mut size) };
        if size as usize != processes {
            return Err(Error::InvalidConfig(format!(
                "the launcher reported {processes} processes but MPI_COMM_WORLD has {size}: \
                 was the program started with another MPI's launcher?"
            )));
        }
        let mpi = Mpi {
            process,
            processes,
            threads,
            contexts: contexts::Table::default(),
            control: dup(world)?,
            ready: dup(world)?,
            pending: (0..threads).map(|_| RegistryLock::default()).collect(),
            sends: (0..threads).map(|_| Mutex::default()).collect(),
            ready_state: (0..threads).map(|_| Mutex::default()).collect(),
            next_id: AtomicI32::new(0),
            next_pending: (0..threads)
                .map(|_| CachePadded::new(AtomicU64::new(1)))
                .collect(),
            bsend: ProcessBuffer::new(threads),
            scratch: (0..threads).map(|_| Mutex::default()).collect(),
            // Without shared memory between processes, ready sends keep the
            // handshake: an MPI library that cannot share is no reason to fail.
            board: Board::new(threads, processes).ok().flatten(),
            offers_wanted: (0..threads).map(|_| AtomicBool::new(false)).collect(),
        };
        let all: Vec<usize> = (0..processes).collect();
        mpi.create_context(0, &all)?;
        mpi.create_context(1, &all)?;
        Ok(mpi)
    }

    /// Creates the lanes of context `ctx` over `processes` (sorted). Called by one
    /// thread in each of those processes.
    pub fn create_context(&self, ctx: u32, processes: &[usize]) -> Result<()> {
        let t = self.threads;
        // The world's two contexts are made by every process at start-up, in
        // the same order: a plain dup. Later ones by the processes of one
        // communicator, possibly concurrently with others: create_group, told
        // apart by tag (contexts are unique job-wide).
        let all = ctx < 2;
        // SAFETY: reading a constant exported by mpi-sys.
        let world = unsafe { ffi::RSMPI_COMM_WORLD };
        let mut comms = Vec::with_capacity(t * t);
        if all {
            for _ in 0..t * t {
                comms.push(dup(world)?);
            }
        } else {
            // SAFETY: zeroed handles are valid out-parameters; `world` is valid and
            // the ranks listed are valid process indices.
            unsafe {
                let mut wg: ffi::MPI_Group = std::mem::zeroed();
                check(ffi::MPI_Comm_group(world, &mut wg), "MPI_Comm_group")?;
                let ranks: Vec<c_int> = processes.iter().map(|&p| p as c_int).collect();
                let mut g: ffi::MPI_Group = std::mem::zeroed();
                check(
                    ffi::MPI_Group_incl(wg, ranks.len() as c_int, ranks.as_ptr(), &mut g),
                    "MPI_Group_incl",
                )?;
                for lane in 0..t * t {
                    let mut new: ffi::MPI_Comm = std::mem::zeroed();
                    // Tags tell concurrent creations apart; contexts are unique.
                    let tag = ((ctx as usize * t * t + lane) % (1 << 30)) as c_int;
                    check(
                        ffi::MPI_Comm_create_group(world, g, tag, &mut new),
                        "MPI_Comm_create_group",
                    )?;
                    ffi::MPI_Comm_set_errhandler(new, ffi::RSMPI_ERRORS_RETURN);
                    comms.push(Handle(new));
                }
                ffi::MPI_Group_free(&mut g);
                ffi::MPI_Group_free(&mut wg);
            }
        }
        let mut mpi_rank = vec![None; self.processes];
        for (i, &p) in processes.iter().enumerate() {
            mpi_rank[p] = Some(i as c_int);
        }
        let counters = self.board.as_ref().map_or(0, Board::counters);
        let lanes = Lanes {
            comms,
            mpi_rank,
            process_of: processes.to_vec(),
            sent: (0..counters).map(|_| AtomicU64::new(0)).collect(),
            received: (0..counters).map(|_| AtomicU64::new(0)).collect(),
            ready_used: (0..counters).map(|_| AtomicBool::new(false)).collect(),
        };
        assert!(
            self.contexts.set(ctx, lanes),
            "context {ctx} is created once"
        );
        Ok(())
    }

    /// The lanes of `ctx`, waiting briefly if this process's creating thread has
    /// not published them yet.
    fn lanes(&self, ctx: u32) -> &Lanes {
        loop {
            if let Some(lanes) = self.contexts.get(ctx) {
                return lanes;
            }
            std::thread::yield_now();
        }
    }

    /// Index among this process's rank-threads of `rank`, one of them: a
    /// subtraction where `rank % threads` was a 64-bit division (about 5 ns
    /// on this project's Zen 4 host), several per message.
    fn thread_of(&self, rank: usize) -> usize {
        debug_assert_eq!(rank / self.threads, self.process, "a rank of this process");
        rank - self.process * self.threads
    }

    /// Where world rank `world` (of another process) lives.
    fn remote(&self, world: usize) -> Remote {
        let (q, s) = self.split(world);
        Remote {
            world,
            q,
            s,
            node: self.node_of(q),
        }
    }

    /// (process, thread index there) of world rank `world_rank`. A shift and
    /// a mask when T is a power of two (as T = 1 and 2 are), where a division
    /// costs about 5 ns here, on the path of every remote receive and ready
    /// send.
    fn split(&self, world_rank: usize) -> (usize, usize) {
        if self.threads.is_power_of_two() {
            let shift = self.threads.trailing_zeros();
            (world_rank >> shift, world_rank & (self.threads - 1))
        } else {
            (world_rank / self.threads, world_rank % self.threads)
        }
    }

    /// (lane communicator, MPI destination rank) for a message about to be
    /// put on the lane, which it counts.
    fn route(&self, ctx: u32, from: usize, to: usize) -> (Comm, c_int) {
        let (s, (q, d)) = (self.thread_of(from), self.split(to));
        let lanes = self.lanes(ctx);
        let dest = lanes.mpi_rank[q].expect("destination process hosts the context");
        tally(self.lane_entry(&lanes.sent, s, d, self.node_of(q)));
        (lanes.comms[s * self.threads + d], dest)
    }

    /// The entry in `entries` (a lane's counters or flags) of the lane from
    /// thread `s` to thread `d` with the process of node rank `node` at its
    /// other end; `None` when that process is on another node.
    fn lane_entry<'a, T>(
        &self,
        entries: &'a [T],
        s: usize,
        d: usize,
        node: Option<usize>,
    ) -> Option<&'a T> {
        Some(&entries[self.counter(s, d, node)?])
    }

    /// Index in the lane tables of the lane from thread `s` to thread `d`
    /// whose other end is the process of node rank `node` (none: another node).
    fn counter(&self, s: usize, d: usize, node: Option<usize>) -> Option<usize> {
        Some(self.board.as_ref()?.counter_at(s, d, node?))
    }

    /// Node rank of process `q`, when it shares this node.
    fn node_of(&self, q: usize) -> Option<usize> {
        self.board.as_ref()?.local(q)
    }

    /// Blocking send from world rank `from` to world rank `to` in another
    /// process. `MPI_Bsend` never waits for the receiver and is called as it
    /// is. Standard and synchronous sends may wait for the receiver (a
    /// standard one above its MPI's eager limit), so they are started
    /// nonblocking (`MPI_Isend`/`MPI_Issend`) and waited for here, as
    /// `MPI_Send` and `MPI_Ssend` are defined to be: while this rank waits it
    /// must keep matching its own posted receives (the receiver matches, see
    /// the module docs) and answering ready-send queries. Two ranks that both
    /// post a receive and then send to each other would otherwise deadlock,
    /// which MPI allows them to do. A blocking `MPI_Send` was used up to
    /// 3 840 bytes, under Open MPI's 4 KiB shared-memory eager limit, until a
    /// test with that limit cut to 1 KiB deadlocked; `MPI_Isend` and a first
    /// `MPI_Test` cost the same here as `MPI_Send` (+0.034 µs over raw
    /// `MPI_Send` at 8 B either way, medians of 8 alternating runs).
    /// `poll_failure` is checked between polls (a failed rank of this
    /// process).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        shm: &Shm,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
        mode: SendMode,
        mut poll_failure: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        if let SendMode::Buffered = mode {
            let _attached = self.bsend.attached(|| {
                poll_failure()?;
                self.progress(shm, from)
            })?;
            let (comm, dest) = self.route(env.ctx, from, to);
            let n = count(data.len())?;
            let buf = data.as_ptr() as *const c_void;
            // SAFETY: `data` is valid for reads for the whole blocking call;
            // comm and dest are a valid communicator and rank.
            let code = unsafe { ffi::MPI_Bsend(buf, n, byte(), dest, env.tag, comm.0) };
            return check(code, "MPI_Bsend");
        }
        // SAFETY: `data` stays borrowed until the loop below has seen the
        // request complete (an error return means the job is aborting).
        let mut req = MpiRequest(Handle(unsafe { self.start(from, to, env, data, mode)? }));
        let mut pace = Pace::default();
        while !req.test()? {
            if pace.due() {
                poll_failure()?;
                self.progress(shm, from)?;
            }
        }
        Ok(())
    }

    /// Nonblocking send: `MPI_Isend`, `MPI_Ibsend` or `MPI_Issend`. `None`
    /// when it completed at once (an eager send usually has: it is tested
    /// once); otherwise its request, which only its owner tests (see
    /// [`SendRequest`]). A synchronous send is not tested: it cannot be done
    /// before its receiver has matched it and answered. `progress` is called
    /// while a buffered send waits for another rank's resize of the process's
    /// buffer ([`ProcessBuffer::attached`]).
    ///
    /// # Safety
    /// `data` must stay valid until the request has completed.
    pub unsafe fn isend(
        &self,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
        mode: SendMode,
        progress: impl FnMut() -> Result<()>,
    ) -> Result<Option<SendRequest>> {
        let attached = match mode {
            SendMode::Buffered => Some(self.bsend.attached(progress)?),
            _ => None,
        };
        // SAFETY: passed on to the caller.
        let mut req = SendRequest(MpiRequest(Handle(unsafe {
            self.start(from, to, env, data, mode)?
        })));
        drop(attached); // MPI_Ibsend has copied the message into the buffer
        if !matches!(mode, SendMode::Synchronous) && req.test()? {
            return Ok(None);
        }
        Ok(Some(req))
    }

    /// Starts `MPI_Isend`, `MPI_Ibsend` or `MPI_Issend`: the request.
    ///
    /// # Safety
    /// `data` must stay valid until the request completes.
    unsafe fn start(
        &self,
        from: usize,
        to: usize,
        env: &Envelope,
        data: &[u8],
        mode: SendMode,
    ) -> Result<ffi::MPI_Request> {
        let (comm, dest) = self.route(env.ctx, from, to);
        let n = count(data.len())?;
        let buf = data.as_ptr() as *const c_void;
        // SAFETY: zeroed handle as out-parameter.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        // SAFETY: the caller keeps `data` valid until the request completes.
        let code = unsafe {
            match mode {
                SendMode::Standard => {
                    ffi::MPI_Isend(buf, n, byte(), dest, env.tag, comm.0, &mut req)
                }
                SendMode::Buffered => {
                    ffi::MPI_Ibsend(buf, n, byte(), dest, env.tag, comm.0, &mut req)
                }
                SendMode::Synchronous => {
                    ffi::MPI_Issend(buf, n, byte(), dest, env.tag, comm.0, &mut req)
                }
            }
        };
        let call = match mode {
            SendMode::Standard => "MPI_Isend",
            SendMode::Buffered => "MPI_Ibsend",
            SendMode::Synchronous => "MPI_Issend",
        };
        check(code, call)?;
        Ok(req)
    }

    /// Waits for a ready send of world rank `me` that [`rsend`](Self::rsend)
    /// left pending: tests its own request on every
    /// poll and makes full progress (other requests, ready-send queries) every
    /// 64, so noticing completion takes one MPI call.
    pub fn wait_send(
        &self,
        shm: &Shm,
        me: usize,
        done: &Arc<Completion>,
        mut poll_failure: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let t = self.thread_of(me);
        let mut pace = Pace::default();
        loop {
            if let Some(outcome) = done.outcome() {
                return outcome.map(drop);
            }
            let mut sends = self.sends[t].lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = sends.iter().position(|(_, d)| Arc::ptr_eq(d, done)) {
                let (req, d) = &mut sends[i];
                if req.settle(d) {
                    sends.swap_remove(i);
                }
            }
            drop(sends);
            if pace.due() {
                poll_failure()?;
                self.progress(shm, me)?;
            }
        }
    }

    /// Tests a fresh request once; if still in flight, hands it to `progress`.
    fn track(&self, from: usize, req: ffi::MPI_Request) -> Result<SendOutcome> {
        let mut req = MpiRequest(Handle(req));
        if req.test()? {
            return Ok(SendOutcome::Done);
        }
        let done = Completion::shared();
        self.sends[self.thread_of(from)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((req, done.clone()));
        Ok(SendOutcome::Pending(done))
    }

    /// Registers a receive of world rank `me` that may match a remote message.
    /// `shm_id` is set when the receive is also posted in shared memory, and
    /// `done` is then the completion it shares with the mailbox; without one
    /// the registry keeps the outcome until [`test_posted`](Self::test_posted)
    /// or [`take_outcome`](Self::take_outcome) hands it over.
    #[allow(clippy::too_many_arguments)]
    pub fn post(
        &self,
        me: usize,
        pat: Pattern,
        group: &[usize],
        rank_of: &Arc<HashMap<usize, usize>>,
        dst: RecvBuf,
        done: Option<Arc<Completion>>,
        shm_id: Option<u64>,
    ) -> u64 {
        let t = self.thread_of(me);
        let senders = Senders::of(&pat, group, self, || rank_of.clone());
        let mut registry = self.pending[t].lock();
        registry.enlist_solo();
        // Written only under the registry lock: no read-modify-write needed.
        let id = self.next_pending[t].load(Relaxed);
        self.next_pending[t].store(id + 1, Relaxed);
        let first = registry.receives.is_empty();
        let dst = match senders {
            Senders::Rank { rank, from } if first && done.is_none() && shm_id.is_none() => {
                match self.post_solo(t, &mut registry, pat, (rank, from), dst, id) {
                    Ok(()) => return id,
                    Err(dst) => dst,
                }
            }
            _ => dst,
        };
        registry.receives.push_back(Pending {
            pat,
            senders,
            dst: Some(dst),
            done: done.map_or(Done::Kept(None), Done::Shared),
            shm_id,
            ready: None,
            ready_from: Remote::default(),
            ready_sink: None,
            offer: None,
            lane: None,
            id,
        });
        let posted = if first {
            self.post_first(t, &mut registry)
        } else {
            self.lane_post(t, &mut registry)
                .and_then(|()| self.refresh_offers(t, &mut registry))
        };
        if let Err(e) = posted {
            // The receive is registered with its buffer: it cannot be handed
            // back as an error, and MPI is failing anyway.
            abort(&format!("rank {me}: posting a receive failed: {e}"));
        }
        id
    }

    /// A blocking receive from one rank in another process, when this thread has
    /// no other receive registered (so none posted earlier can be overtaken): the
    /// common case of a blocking receive, without the registry. `poll_failure`
    /// is checked between polls (a failed rank of this process). `None`: take
    /// the registered path instead.
    ///
    /// With an exact tag and a buffer of at most [`SMALL_RECV`] bytes it posts
    /// an `MPI_Irecv` on the lane ([`recv_posted`](Self::recv_posted)), as
    /// MPI's own pre-posted receive; otherwise it claims with `MPI_Improbe` and
    /// `MPI_Mrecv`s straight into `dst`. `first`, if any, is taken and run
    /// once the `MPI_Irecv` is posted, or before the claiming starts (see
    /// `Comm::recv_with`); left in place when this returns `None` at once.
    #[allow(clippy::too_many_arguments)]
    pub fn recv_direct(
        &self,
        shm: &Shm,
        me: usize,
        pat: &Pattern,
        group: &[usize],
        dst: RecvBuf,
        mut poll_failure: impl FnMut() -> Result<()>,
        first: &mut Option<impl FnOnce() -> Result<()>>,
    ) -> Result<Option<Result<Status>>> {
        let t = self.thread_of(me);
        let Some(r) = pat.source else { return Ok(None) };
        {
            let registry = self.pending[t].lock();
            if registry.solo_live || !registry.receives.is_empty() {
                return Ok(None);
            }
        }
        let lanes = self.lanes(pat.ctx);
        let (q, s) = self.split(group[r]);
        let src = lanes.mpi_rank[q].expect("the source's process hosts the context");
        let lane = lanes.comms[s * self.threads + t].0;
        let env = |tag| Envelope {
            ctx: pat.ctx,
            source: r,
            tag,
        };
        let received = self.lane_entry(&lanes.received, s, t, self.node_of(q));
        if let Some(tag) = pat.tag.filter(|_| dst.raw().1 <= SMALL_RECV) {
            if let Ok(mut scratch) = self.scratch[t].try_lock() {
                let region = scratch.take().unwrap_or_else(Scratch::reserve);
                if region.usable() {
                    let mut posted = LaneRecv::post(src, tag, lane, region)?;
                    if let Some(first) = first.take() {
                        first()?; // on error, dropping `posted` withdraws it
                    }
                    let outcome =
                        self.recv_posted(shm, me, &mut posted, dst, env(tag), poll_failure);
                    let bytes = match outcome {
                        Ok(Some((_, bytes))) => {
                            tally(received);
                            bytes
                        }
                        _ => 0,
                    };
                    *scratch = Some(posted.finish(bytes));
                    return outcome.map(|o| o.map(|(r, _)| r));
                }
                *scratch = Some(region);
            }
        }
        // SAFETY: reading a constant exported by mpi-sys.
        let tag = pat.tag.unwrap_or(unsafe { ffi::RSMPI_ANY_TAG });
        if let Some(first) = first.take() {
            first()?;
        }
        let mut pace = Pace::default();
        loop {
            if let Some((msg, st)) = improbe(src, tag, lane, "MPI_Improbe")? {
                tally(received);
                if st.MPI_TAG == MARKER_TAG {
                    let m = mrecv_marker(msg)?;
                    let mut ready = self.ready_state[t]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    ready.markers.insert((q, m));
                    continue;
                }
                let a = arrived(&st);
                return Ok(Some(mrecv_into(msg, a, dst, &env(a.tag))));
            }
            if pace.due() {
                poll_failure()?;
                if self.has_ready_queries(t)? {
                    return Ok(None); // nothing posted: register, where queries find it
                }
                self.progress_requests(shm, me)?;
            }
        }
    }

    /// [`recv_direct`](Self::recv_direct) with an `MPI_Irecv` posted on the
    /// lane: the message is matched the moment it arrives, where a matched probe
    /// would first queue it as unexpected (~0.1 µs more at 8 B here). It lands
    /// in the thread's [`Scratch`] region, which no message can overflow, and
    /// is copied from there, so a receive too small for its message is told the
    /// message's size and leaves `dst` untouched, as everywhere else. A
    /// ready-send query for this thread cannot be answered *yes* while the
    /// receive is posted outside the registry, so one makes it withdraw
    /// (`MPI_Cancel`) and return `None`: the caller then registers the receive,
    /// and the query finds it.
    fn recv_posted(
        &self,
        shm: &Shm,
        me: usize,
        req: &mut LaneRecv,
        dst: RecvBuf,
        env: Envelope,
        mut poll_failure: impl FnMut() -> Result<()>,
    ) -> Result<Option<(Result<Status>, usize)>> {
        let t = self.thread_of(me);
        let mut pace = Pace::default();
        let bytes = loop {
            if let Some(bytes) = req.test()? {
                break bytes;
            }
            if pace.due() {
                if let Err(e) = poll_failure() {
                    req.withdraw()?;
                    return Err(e);
                }
                if self.has_ready_queries(t)? {
                    match req.withdraw()? {
                        Some(bytes) => break bytes,
                        None => return Ok(None),
                    }
                }
                self.progress_requests(shm, me)?;
            }
        };
        Ok(Some((dst.fill(req.received(bytes), &env), bytes)))
    }

    /// Withdraws a registered receive that nothing has matched; `false` if it has
    /// been (or is being) filled.
    pub fn cancel(&self, me: usize, id: u64) -> Result<bool> {
        let mut pending = self.pending[self.thread_of(me)].lock();
        pending.enlist_solo();
        let Some(i) = pending.receives.iter().position(|p| p.id == id) else {
            return Ok(false);
        };
        let t = self.thread_of(me);
        let Registry { receives, pool, .. } = &mut *pending;
        let p = &mut receives[i];
        if p.done.is_done() {
            // Filled already (a lane receive that a ready-send query found
            // holding its message): not cancelled. A kept outcome waits for
            // its request.
            if let Done::Shared(_) = p.done {
                take(receives, i);
            }
            return Ok(false);
        }
        if let Some(lane) = p.lane.as_mut() {
            if let Some(bytes) = lane.withdraw()? {
                // Matched before the cancel: it completes with its message.
                let outcome = self.lane_arrived(t, p, pool, bytes);
                finish(receives, i, outcome);
                return Ok(false);
            }
            pool.finish(p.lane.take().expect("just withdrawn"), 0);
        }
        if p.ready.is_some() && !(p.offer.is_some() && self.withdraw_offer(t, p)?) {
            return Ok(false); // withdrawn for, or offered to, a ready send on its way
        }
        take(receives, i);
        Ok(true)
    }

    /// Progress for world rank `me`: answers ready-send queries, then tries to
    /// fill its registered receives in posting order.
    /// Every call looks for queries: a ready sender waits a round trip for the
    /// answer, and the look (one `MPI_Improbe`) costs the other modes' waits
    /// nothing measurable.
    pub fn progress(&self, shm: &Shm, me: usize) -> Result<()> {
        self.answer_queries(shm, me)?;
        self.progress_requests(shm, me)
    }

    /// [`progress`](Self::progress) without answering ready-send queries: for a
    /// direct receive, which no query could find in the registry (it checks for
    /// queries itself and registers when one has come).
    fn progress_requests(&self, shm: &Shm, me: usize) -> Result<()> {
        let t = self.thread_of(me);
        let mut sends = self.sends[t].lock().unwrap_or_else(|e| e.into_inner());
        sends.retain_mut(|(req, done)| !req.settle(done));
        drop(sends);
        let mut registry = self.pending[t].lock();
        if registry.solo_live && !registry.solo.done.is_done() {
            // Settled where it is: completed into its kept outcome, or left
            // offered; a withdrawn offer makes it a plain receive, for the
            // pass below to fill.
            let Registry { solo, reserves, .. } = &mut *registry;
            match self.settle_ready(t, solo, reserves)? {
                Settled::Done(outcome) => registry.complete_solo(Some(outcome)),
                Settled::Plain => registry.enlist_solo(),
                Settled::Waiting | Settled::Taken => {}
            }
        }
        let Registry {
            receives: pending,
            unfilled,
            pool,
            reserves,
            ..
        } = &mut *registry;
        // Patterns of receives that took nothing in this pass. A later receive
        // that overlaps one looks before it claims, and leaves a message the
        // earlier one accepts: it may have arrived between the two probes, and
        // belongs to the earlier receive (posting order). One that an earlier
        // pattern covers does not probe at all, which spares a window of like
        // receives one probe each per pass.
        unfilled.clear();
        let mut completed = false;
        let mut i = 0;
        while i < pending.len() {
            if let Some(lane) = pending[i].lane.as_mut() {
                // MPI matches it: no probe, and nothing for later receives to
                // respect (what it matches, they cannot see).
                let Some(bytes) = lane.test()? else {
                    i += 1;
                    continue;
                };
                let outcome = self.lane_arrived(t, &mut pending[i], pool, bytes);
                i += usize::from(finish(pending, i, outcome));
                completed = true;
                continue;
            }
            if pending[i].ready.is_some() {
                match self.settle_ready(t, &mut pending[i], reserves)? {
                    Settled::Done(outcome) => {
                        i += usize::from(finish(pending, i, outcome));
                        completed = true;
                        continue;
                    }
                    Settled::Waiting => {
                        if pending[i].offer.is_some() {
                            // A message a later receive could take may be the
                            // offered one's (when the offer is withdrawn).
                            unfilled.push(pending[i].pat);
                        }
                        i += 1;
                        continue;
                    }
                    // Its message is on the way: it takes nothing else, so
                    // later receives need not leave it anything.
                    Settled::Taken => {
                        i += 1;
                        continue;
                    }
                    Settled::Plain => {} // offer withdrawn: a receive like any other
                }
            }
            if pending[i].done.is_done() {
                // Filled meanwhile: over shared memory (it leaves), or a kept
                // outcome its request has not taken yet (it stays).
                match pending[i].done {
                    Done::Shared(_) => drop(take(pending, i)),
                    Done::Kept(_) => i += 1,
                }
                continue;
            }
            let pat = pending[i].pat;
            let found = if unfilled.iter().any(|u| u.covers(&pat)) {
                None // all it could take is an earlier receive's
            } else if unfilled.iter().any(|u| u.overlaps(&pat)) {
                self.claim(t, &pending[i], unfilled)?
            } else {
                self.claim(t, &pending[i], &[])?
            };
            let Some((msg, env, a)) = found else {
                unfilled.push(pat);
                i += 1;
                continue;
            };
            let dst = pending[i]
                .dst
                .take()
                .expect("a waiting receive holds its buffer");
            if let Some(shm_id) = pending[i].shm_id {
                if !shm.cancel_recv(t, shm_id) {
                    take(pending, i);
                    // Filled over shared memory meanwhile. The claimed message
                    // goes where MPI's matching would have put it: to the first
                    // later receive that accepts it, else into the mailbox,
                    // where the next receive posted finds it (or one posted
                    // there but not registered here yet, by another thread of
                    // the rank).
                    let data = mrecv_vec(msg, a.bytes)?;
                    if let Some((j, outcome)) = hand_over(shm, t, pending, i, &env, &data) {
                        finish(pending, j, outcome);
                        completed = true;
                    } else {
                        shm.park(t, env, data);
                    }
                    continue;
                }
            }
            let outcome = mrecv_into(msg, a, dst, &env);
            i += usize::from(finish(pending, i, outcome));
            completed = true;
        }
        if completed {
            self.refresh_offers(t, &mut registry)?;
        }
        Ok(())
    }

    /// Tests registered receive `id` of world rank `me` when it has an
    /// `MPI_Irecv` posted (on its lane, withdrawn for a ready send, or offered
    /// to one) up to `tries` times, and completes it if that has arrived: the
    /// poll of a wait between full progress passes, one `MPI_Test` where a
    /// pass costs several MPI calls. The registry stays locked and the receive
    /// found across the tries: locking and searching per test made an 8-byte
    /// ready-send ping-pong between two processes about 0.02 µs slower per
    /// message (12 alternating runs: median 0.465 against 0.443 µs).
    /// A kept receive (no shared completion, see [`Done`]) that is complete,
    /// here or earlier, leaves the registry and its outcome is returned: the
    /// caller is its request's wait. Does nothing when the receive has no
    /// request of its own (or the registry is busy): then only full progress
    /// can fill it.
    pub fn test_posted(&self, me: usize, id: u64, tries: u32) -> Result<Option<Result<Status>>> {
        let t = self.thread_of(me);
        let Some(mut registry) = self.pending[t].try_lock() else {
            return Ok(None);
        };
        if registry.solo_live {
            if registry.solo.id == id {
                return self.test_solo(t, &mut registry, tries);
            }
            registry.enlist_solo();
        }
        let Some(i) = registry.receives.iter().position(|p| p.id == id) else {
            return Ok(None);
        };
        let Registry {
            receives,
            pool,
            reserves,
            ..
        } = &mut *registry;
        let p = &mut receives[i];
        let kept = if !p.done.is_done() {
            let outcome = 'tested: {
                for n in 0..tries {
                    if let Some(lane) = p.lane.as_mut() {
                        if let Some(bytes) = lane.test()? {
                            break 'tested self.lane_arrived(t, p, pool, bytes);
                        }
                    } else if p.ready.is_some() {
                        if let Some(outcome) = self.poll_ready(t, p, reserves) {
                            break 'tested outcome;
                        }
                        if n == 0 && p.offer.is_some() {
                            // Now that it waits: the MPI receive of the next
                            // offer to this sender.
                            self.post_reserve(t, reserves, p.ready_from)?;
                        }
                    } else {
                        return Ok(None);
                    }
                }
                return Ok(None);
            };
            // Completed here: it leaves the registry, and a kept outcome goes
            // straight to the caller, a shared one to its completion.
            match take(receives, i) {
                Done::Kept(_) => Some(outcome),
                Done::Shared(done) => {
                    done.complete(outcome);
                    None
                }
            }
        } else if let Done::Shared(_) = p.done {
            return Ok(None); // filled over shared memory: progress clears it
        } else {
            match take(receives, i) {
                Done::Kept(outcome) => outcome,
                Done::Shared(_) => unreachable!("checked above"),
            }
        };
        if !registry.receives.is_empty() {
            self.refresh_offers(t, &mut registry)?;
        }
        Ok(kept)
    }

    /// [`test_posted`](Self::test_posted) for thread `t`'s solo receive (see
    /// [`Registry::solo`]): its outcome once complete (it then leaves the
    /// registry).
    fn test_solo(
        &self,
        t: usize,
        registry: &mut Registry,
        tries: u32,
    ) -> Result<Option<Result<Status>>> {
        if let Some(outcome) = registry.take_solo_outcome() {
            return Ok(Some(outcome)); // completed by a progress pass
        }
        let Registry { solo, reserves, .. } = registry;
        for n in 0..tries {
            if let Some(outcome) = self.poll_ready(t, solo, reserves) {
                registry.end_solo();
                return Ok(Some(outcome));
            }
            if n == 0 {
                // Now that it waits: the MPI receive of the next offer to
                // this sender.
                self.post_reserve(t, reserves, solo.ready_from)?;
            }
        }
        Ok(None)
    }

    /// The outcome of kept receive `id` of world rank `me` (see [`Done`]):
    /// `None` when it is no longer registered (taken, or cancelled),
    /// `Some(None)` while it waits, `Some(Some(outcome))` once complete (it
    /// then leaves the registry).
    pub fn take_outcome(&self, me: usize, id: u64) -> Option<Option<Result<Status>>> {
        let mut registry = self.pending[self.thread_of(me)].lock();
        if registry.solo_live && registry.solo.id == id {
            return Some(registry.take_solo_outcome());
        }
        registry.enlist_solo();
        let i = registry.receives.iter().position(|p| p.id == id)?;
        if !matches!(registry.receives[i].done, Done::Kept(Some(_))) {
            return Some(None);
        }
        match take(&mut registry.receives, i) {
            Done::Kept(outcome) => Some(outcome),
            Done::Shared(_) => unreachable!("checked above"),
        }
    }

    /// Posts thread `t`'s newest registered receive on its lane at the MPI
    /// level (an `MPI_Irecv` into a region of its own), when MPI's matching
    /// then does exactly what courier's would:
    ///
    /// * it names one rank of another process and an exact tag, so no ready
    ///   send's marker can match it;
    /// * its buffer is at most [`LANE_RECV_MAX`] bytes (a larger message gains
    ///   little, and goes straight into the user's buffer by matched probe);
    /// * its lane carries no ready sends: those receives are offered instead;
    /// * every earlier receive that a message from that rank could match is
    ///   lane-posted too, so MPI matches in posting order.
    ///
    /// The message is then matched the moment it arrives, and a wait tests one
    /// request, where a probed receive waits for a progress pass to claim it:
    /// an 8-byte `irecv` + `send` ping-pong between two processes went from
    /// 0.80–0.85 µs to 0.54–0.55 µs one-way here.
    fn lane_post(&self, t: usize, registry: &mut Registry) -> Result<()> {
        let Registry { receives, pool, .. } = registry;
        let Some(p) = receives.back() else {
            return Ok(());
        };
        let (Some(tag), Senders::Rank { from, .. }) = (p.pat.tag, &p.senders) else {
            return Ok(());
        };
        let (Remote { world, q, s, node }, ctx) = (*from, p.pat.ctx);
        if p.dst.as_ref().is_none_or(|d| d.raw().1 > LANE_RECV_MAX) {
            return Ok(());
        }
        let earlier = receives.len() - 1;
        let overtakes = receives.iter().take(earlier).any(|e| {
            e.lane.is_none()
                && !e.done.is_done()
                && e.pat.ctx == ctx
                && e.senders.borrow().rank(world).is_some()
        });
        let lanes = self.lanes(ctx);
        let ready = self
            .lane_entry(&lanes.ready_used, s, t, node)
            .is_some_and(|used| used.load(Relaxed));
        if overtakes || ready {
            return Ok(());
        }
        let Some(region) = pool.region() else {
            return Ok(());
        };
        let src = lanes.mpi_rank[q].expect("the source's process hosts the context");
        let lane = lanes.comms[s * self.threads + t].0;
        match LaneRecv::post(src, tag, lane, region) {
            Ok(posted) => {
                receives.back_mut().expect("checked above").lane = Some(posted);
                Ok(())
            }
            Err(e) => {
                pool.posted -= 1;
                Err(e)
            }
        }
    }

    /// Completes the bookkeeping of `p`'s lane receive, which took a message
    /// of `bytes`: counts it as received on its lane, copies it into `p`'s
    /// buffer and gives the region back to `pool`. The receive's outcome.
    fn lane_arrived(
        &self,
        t: usize,
        p: &mut Pending,
        pool: &mut LanePool,
        bytes: usize,
    ) -> Result<Status> {
        let lane = p.lane.take().expect("a lane-posted receive");
        let Senders::Rank {
            rank,
            from: Remote { s, node, .. },
        } = p.senders
        else {
            unreachable!("a lane-posted receive names its source");
        };
        tally(self.lane_entry(&self.lanes(p.pat.ctx).received, s, t, node));
        let env = Envelope {
            ctx: p.pat.ctx,
            source: rank,
            tag: p.pat.tag.expect("a lane-posted receive has an exact tag"),
        };
        let dst = p.dst.take().expect("a waiting receive holds its buffer");
        let outcome = dst.fill(lane.received(bytes), &env);
        pool.finish(lane, bytes);
        outcome
    }

    /// Claims (`MPI_Improbe`) the first message from another process that `p`
    /// accepts and no pattern in `earlier` does, with its envelope; counts it
    /// as received on its lane.
    fn claim(
        &self,
        t: usize,
        p: &Pending,
        earlier: &[Pattern],
    ) -> Result<Option<(Message, Envelope, Arrived)>> {
        let how = Probe {
            claim: true,
            earlier,
        };
        self.probe_lanes(t, &p.pat, p.senders.borrow(), how)
            .map(|found| found.map(|(m, env, a)| (m.expect("claimed"), env, a)))
    }

    /// Probes the lanes into thread `t` that `pat` covers, as `how` says.
    fn probe_lanes(
        &self,
        t: usize,
        pat: &Pattern,
        senders: Senders<&HashMap<usize, usize>>,
        how: Probe<'_>,
    ) -> Result<Option<(Option<Message>, Envelope, Arrived)>> {
        let lanes = self.lanes(pat.ctx);
        // SAFETY: reading constants exported by mpi-sys.
        let (any_source, any_tag) = unsafe { (ffi::RSMPI_ANY_SOURCE, ffi::RSMPI_ANY_TAG) };
        let tag = pat.tag.unwrap_or(any_tag);
        // The lanes to probe: (first sending thread, how many, MPI source).
        // No list is built: this runs once per receive per progress pass.
        let (first, n, src) = match senders {
            Senders::Rank {
                from: Remote { q, s, .. },
                ..
            } => match lanes.mpi_rank[q] {
                Some(src) if q != self.process => (s, 1, src),
                _ => return Ok(None),
            },
            Senders::Any(_) => {
                let rot = self.next_pending[t].load(Relaxed) as usize % self.threads;
                (rot, self.threads, any_source)
            }
        };
        for k in 0..n {
            let s = (first + k) % self.threads;
            let comm = lanes.comms[s * self.threads + t].0;
            let found = if how.claim && how.earlier.is_empty() {
                improbe(src, tag, comm, "MPI_Improbe")?.map(|(m, st)| (Some(m), st))
            } else {
                iprobe(src, tag, comm, "MPI_Iprobe")?.map(|st| (None, st))
            };
            let Some((mut msg, mut st)) = found else {
                continue;
            };
            let q = lanes.process_of[st.MPI_SOURCE as usize];
            let received = self.lane_entry(&lanes.received, s, t, self.node_of(q));
            if st.MPI_TAG == MARKER_TAG {
                // A ready send's marker (only ANY_TAG probes see one): set it
                // aside for the query it announces, and look at this lane again.
                tally(received);
                let m = match msg {
                    Some(msg) => mrecv_marker(msg)?,
                    None => claim_marker(comm, st.MPI_SOURCE)?.expect("just probed"),
                };
                self.ready_state[t]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .markers
                    .insert((q, m));
                return self.probe_lanes(t, pat, senders, how);
            }
            let source = senders
                .rank(q * self.threads + s)
                .expect("a message on a context comes from a member of its communicator");
            let env = Envelope {
                ctx: pat.ctx,
                source,
                tag: st.MPI_TAG,
            };
            // Looked first: the lane's first message for `pat` belongs to an
            // earlier receive that accepts it.
            if how.earlier.iter().any(|e| e.matches(&env)) {
                continue;
            }
            if how.claim {
                if msg.is_none() {
                    // Any message on this lane with its source and tag is
                    // accepted alike, should another thread of the rank have
                    // claimed it meanwhile.
                    let Some((m, claimed)) =
                        improbe(st.MPI_SOURCE, st.MPI_TAG, comm, "MPI_Improbe")?
                    else {
                        continue;
                    };
                    (msg, st) = (Some(m), claimed);
                }
                tally(received);
            }
            return Ok(Some((msg, env, arrived(&st))));
        }
        Ok(None)
    }

    /// `MPI_Iprobe` for world rank `me`: the status of a remote message `pat` accepts.
    pub fn iprobe(
        &self,
        me: usize,
        pat: &Pattern,
        group: &[usize],
        rank_of: &HashMap<usize, usize>,
    ) -> Result<Option<Status>> {
        let senders = Senders::of(pat, group, self, || rank_of);
        let found = self.probe_user(me, pat, senders, false)?;
        Ok(found.map(|(_, env, a)| Status::new(env.source, env.tag, a.bytes)))
    }

    /// `MPI_Improbe` + `MPI_Mrecv` into a new buffer: claims and receives a remote
    /// message `pat` accepts.
    pub fn improbe(
        &self,
        me: usize,
        pat: &Pattern,
        group: &[usize],
        rank_of: &HashMap<usize, usize>,
    ) -> Result<Option<(Envelope, Vec<u8>)>> {
        let senders = Senders::of(pat, group, self, || rank_of);
        match self.probe_user(me, pat, senders, true)? {
            Some((Some(msg), env, a)) => Ok(Some((env, mrecv_vec(msg, a.bytes)?))),
            _ => Ok(None),
        }
    }

    /// A user's probe (claiming with `claim`) of the lanes into world rank
    /// `me`, which passes over every message a receive `me` has registered
    /// would take: MPI matches a message with a posted receive as it
    /// arrives, so no probe sees it, while a registered receive claims only
    /// in progress passes. Lane-posted receives are matched by MPI itself,
    /// and one withdrawn for a ready send, or whose offer a ready send has
    /// taken, takes only that send.
    fn probe_user(
        &self,
        me: usize,
        pat: &Pattern,
        senders: Senders<&HashMap<usize, usize>>,
        claim: bool,
    ) -> Result<Option<(Option<Message>, Envelope, Arrived)>> {
        let t = self.thread_of(me);
        let mut registry = self.pending[t].lock();
        registry.enlist_solo();
        let Registry {
            receives, unfilled, ..
        } = &mut *registry;
        unfilled.clear();
        unfilled.extend(
            receives
                .iter()
                .filter(|p| !p.done.is_done() && p.lane.is_none())
                .filter(|p| p.ready.is_none() || (p.offer.is_some() && !self.offer_taken(t, p)))
                .map(|p| p.pat),
        );
        let how = Probe {
            claim,
            earlier: unfilled,
        };
        self.probe_lanes(t, pat, senders, how)
    }

    /// Attaches `bytes` more (or fewer) for world rank `me` to the process's
    /// MPI buffer for `MPI_Bsend` (see [`buffer`]), calling `progress` while
    /// it waits.
    pub fn resize_bsend(
        &self,
        me: usize,
        bytes: usize,
        progress: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        self.bsend.resize(self.thread_of(me), bytes, progress)
    }
}

/// The three send modes with their own blocking MPI call (ready sends have
/// [`Mpi::rsend`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum SendMode {
    Standard,
    Buffered,
    Synchronous,
}

/// An MPI message claimed by a matched probe.
struct Message(Handle<ffi::MPI_Message>);

/// `MPI_Improbe`: claims the first message from `src` with `tag` on `comm`.
fn improbe(
    src: c_int,
    tag: c_int,
    comm: ffi::MPI_Comm,
    call: &'static str,
) -> Result<Option<(Message, ffi::MPI_Status)>> {
    let mut flag: c_int = 0;
    // SAFETY: zeroed out-parameters; `comm` is a valid communicator.
    let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    let mut msg: ffi::MPI_Message = unsafe { std::mem::zeroed() };
    check(
        unsafe { ffi::MPI_Improbe(src, tag, comm, &mut flag, &mut msg, &mut st) },
        call,
    )?;
    Ok((flag != 0).then_some((Message(Handle(msg)), st)))
}

/// `MPI_Iprobe`: the status of the first message from `src` with `tag` on `comm`.
fn iprobe(
    src: c_int,
    tag: c_int,
    comm: ffi::MPI_Comm,
    call: &'static str,
) -> Result<Option<ffi::MPI_Status>> {
    let mut flag: c_int = 0;
    // SAFETY: zeroed status out-parameter; `comm` is a valid communicator.
    let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    check(
        unsafe { ffi::MPI_Iprobe(src, tag, comm, &mut flag, &mut st) },
        call,
    )?;
    Ok((flag != 0).then_some(st))
}

/// Receives a claimed marker: the id of the ready send it announces.
fn mrecv_marker(msg: Message) -> Result<c_int> {
    let mut id: c_int = 0;
    mrecv_raw(msg, (&mut id as *mut c_int).cast(), 4)?;
    Ok(id)
}

/// Claims the next marker from `src` on `lane`, if one has arrived.
fn claim_marker(lane: ffi::MPI_Comm, src: c_int) -> Result<Option<c_int>> {
    match improbe(src, MARKER_TAG, lane, "MPI_Improbe (ready marker)")? {
        Some((msg, _)) => mrecv_marker(msg).map(Some),
        None => Ok(None),
    }
}

/// Blocking `MPI_Send` of a few bytes of control data (a ready send's marker,
/// query or answer) to (rank, tag, communicator): far below any eager
/// limit, so it does not wait for the receiver.
fn send_small<T: bytemuck::Pod>(
    data: &[T],
    (dest, tag, comm): (c_int, c_int, ffi::MPI_Comm),
    call: &'static str,
) -> Result<()> {
    let bytes = std::mem::size_of_val(data) as c_int;
    // SAFETY: `data` is valid for reads of `bytes` bytes for the blocking call.
    check(
        unsafe { ffi::MPI_Send(data.as_ptr().cast(), bytes, byte(), dest, tag, comm) },
        call,
    )
}

fn mrecv_raw(mut msg: Message, ptr: *mut u8, bytes: usize) -> Result<()> {
    // SAFETY: zeroed status out-parameter; `ptr` has room for `bytes` (callers).
    let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    check(
        unsafe { ffi::MPI_Mrecv(ptr.cast(), count(bytes)?, byte(), &mut msg.0 .0, &mut st) },
        "MPI_Mrecv",
    )
}

/// Receives a claimed message into a new `Vec`.
fn mrecv_vec(msg: Message, bytes: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; bytes];
    mrecv_raw(msg, v.as_mut_ptr(), bytes)?;
    Ok(v)
}

/// Receives a claimed message into a receive buffer, with the same checks as
/// over shared memory (truncation and element type consume the message).
fn mrecv_into(msg: Message, a: Arrived, dst: RecvBuf, env: &Envelope) -> Result<Status> {
    let (ptr, cap) = dst.raw();
    if a.bytes > cap {
        mrecv_vec(msg, a.bytes)?;
        return Err(Error::Truncated {
            message: a.bytes,
            buffer: cap,
        });
    }
    if let Err(e) = dst.elem().check(a.bytes) {
        mrecv_vec(msg, a.bytes)?;
        return Err(e);
    }
    mrecv_raw(msg, ptr, a.bytes)?;
    Ok(Status::new(env.source, env.tag, a.bytes))
}

impl Arrived {
    fn tag_of(&self, pat: &Pattern) -> i32 {
        pat.tag.unwrap_or(self.tag)
    }
}

/// Largest receive buffer for which a blocking receive posts its own
/// `MPI_Irecv` ([`Mpi::recv_posted`]); larger ones take the matched-probe path,
/// whose extra cost is small next to the message, and which receives straight
/// into the user's buffer.
const SMALL_RECV: usize = 4096;

/// The region a thread's posted receives land in: `MPI_Irecv` is posted for
/// the largest count MPI can express, so MPI never truncates.
///
/// That is a safety requirement, not a convenience: Open MPI 4.1.4's
/// shared-memory transport writes a rendezvous message (above its 4 KiB eager
/// limit) past the end of a smaller posted receive buffer — measured here with
/// a C `MPI_Irecv` of 4096 bytes and 5000-, 16384- and 100000-byte sends, all
/// written whole. The region is reserved, not touched: the kernel commits only
/// the pages a message writes, and a region that a large message dirtied is
/// given back.
#[derive(Default)]
struct Scratch(Vec<u8>);

impl Scratch {
    /// Bytes MPI may write: `c_int::MAX`, the largest count (2 GiB of address
    /// space, committed page by page as messages land).
    const BYTES: usize = c_int::MAX as usize;
    /// A region that received more than this is freed and reserved afresh.
    const KEEP: usize = 1 << 20;

    /// A region; not [`usable`](Self::usable) where the address space cannot be
    /// reserved (e.g. a `ulimit -v`): receives then take the matched-probe path.
    fn reserve() -> Scratch {
        let mut v = Vec::new();
        let _ = v.try_reserve_exact(Self::BYTES);
        Scratch(v)
    }

    /// Whether the whole region is reserved.
    fn usable(&self) -> bool {
        self.0.capacity() >= Self::BYTES
    }

    /// The `bytes` a completed receive wrote at the start of the region.
    fn received(&self, bytes: usize) -> &[u8] {
        assert!(bytes <= Self::BYTES);
        // SAFETY: MPI wrote the message's `bytes` bytes at the start of the
        // region (within its capacity) before the receive completed.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), bytes) }
    }

    /// Gives the pages a large message dirtied back to the system.
    fn release_if_large(&mut self, bytes: usize) {
        if bytes > Self::KEEP {
            *self = Scratch::reserve();
        }
    }
}

/// An `MPI_Irecv` posted on a lane into a [`Scratch`] region it owns.
/// Dropping it withdraws the receive if it is still posted, so MPI never
/// writes to the region once it has gone.
struct LaneRecv {
    req: Handle<ffi::MPI_Request>,
    /// Read only once the receive has completed.
    region: Scratch,
}

impl LaneRecv {
    /// Posts the receive from `src` with exact `tag` on `lane`.
    fn post(src: c_int, tag: c_int, lane: ffi::MPI_Comm, region: Scratch) -> Result<Self> {
        assert!(
            region.usable(),
            "posting into a region that is not reserved"
        );
        // SAFETY: reading a constant exported by mpi-sys.
        let mut recv = LaneRecv {
            req: Handle(unsafe { ffi::RSMPI_REQUEST_NULL }),
            region,
        };
        let buf = recv.region.0.as_mut_ptr();
        // SAFETY: the region has room for BYTES bytes; its heap buffer does not
        // move when the guard does, and the guard does not give it up before
        // the request has completed or been withdrawn (`finish`, `Drop`).
        recv.req.0 = unsafe { irecv(buf, Scratch::BYTES as c_int, (src, tag, lane), "MPI_Irecv")? };
        Ok(recv)
    }

    /// The message's size once the receive has completed.
    fn test(&mut self) -> Result<Option<usize>> {
        let mut flag: c_int = 0;
        // SAFETY: zeroed status out-parameter; the request is valid.
        let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        check(
            unsafe { ffi::MPI_Test(&mut self.req.0, &mut flag, &mut st) },
            "MPI_Test",
        )?;
        Ok((flag != 0).then(|| arrived(&st).bytes))
    }

    /// Cancels the receive: `None` if it was withdrawn unmatched, else the size
    /// of the message it took meanwhile.
    fn withdraw(&mut self) -> Result<Option<usize>> {
        cancel_recv(&mut self.req.0)
    }

    /// The `bytes` the completed receive wrote.
    fn received(&self, bytes: usize) -> &[u8] {
        self.region.received(bytes)
    }

    /// Gives back the region of a receive that has completed or been
    /// withdrawn, with the pages a large message dirtied released.
    fn finish(mut self, bytes: usize) -> Scratch {
        // SAFETY: reading a constant exported by mpi-sys.
        if self.req.0 != unsafe { ffi::RSMPI_REQUEST_NULL } {
            let _ = self.withdraw(); // never handed back while MPI may write
        }
        let mut region = std::mem::take(&mut self.region);
        region.release_if_large(bytes);
        region
    }
}

/// `MPI_Irecv` of up to `count` bytes into `buf`, from `(source, tag, comm)`.
///
/// # Safety
/// `buf..buf + count` must stay valid for writes, and untouched by anyone
/// else, until the request has completed or been cancelled.
unsafe fn irecv(
    buf: *mut u8,
    count: c_int,
    (source, tag, comm): (c_int, c_int, ffi::MPI_Comm),
    call: &'static str,
) -> Result<ffi::MPI_Request> {
    // SAFETY: zeroed handle out-parameter; the caller keeps the buffer valid.
    let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
    check(
        unsafe { ffi::MPI_Irecv(buf.cast(), count, byte(), source, tag, comm, &mut req) },
        call,
    )?;
    Ok(req)
}

/// Cancels a posted receive (`MPI_Cancel`, then `MPI_Wait`): `None` if it was
/// withdrawn unmatched, else the size of the message it took meanwhile.
fn cancel_recv(req: &mut ffi::MPI_Request) -> Result<Option<usize>> {
    // SAFETY: the request is valid (cancelling a completed one is a no-op);
    // zeroed status out-parameter.
    let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    check(unsafe { ffi::MPI_Cancel(req) }, "MPI_Cancel")?;
    check(unsafe { ffi::MPI_Wait(req, &mut st) }, "MPI_Wait")?;
    let mut cancelled: c_int = 0;
    // SAFETY: `st` was filled by MPI_Wait.
    unsafe { ffi::MPI_Test_cancelled(&st, &mut cancelled) };
    Ok((cancelled == 0).then(|| arrived(&st).bytes))
}

impl Drop for LaneRecv {
    fn drop(&mut self) {
        // SAFETY: reading a constant exported by mpi-sys.
        if self.req.0 != unsafe { ffi::RSMPI_REQUEST_NULL } {
            // Only on an error path: withdrawn (or waited for) before the
            // region is lent to anyone else.
            let _ = self.withdraw();
        }
    }
}

/// Paces a poll loop: [`due`](Pace::due) on every 64th poll, time for the slow
/// checks (failures, full progress); after 2^16 polls each of those also yields
/// the core.
#[derive(Default)]
struct Pace(u32);

impl Pace {
    fn due(&mut self) -> bool {
        self.0 = self.0.wrapping_add(1);
        if self.0 % 64 != 0 {
            return false;
        }
        if self.0 > 1 << 16 {
            std::thread::yield_now();
        }
        true
    }
}

/// A nonblocking send to another process in flight, owned by one party: the
/// entry of its request in its scope's list. Its request's wait tests it
/// directly (and the scope's end, if the request was dropped), with no
/// completion to share, no list to lock and search on every poll: an 8-byte
/// `issend` ping-pong between two processes went from +0.10 to +0.08 µs over
/// `MPI_Ssend` (medians of 5 runs alternating with the shared completion).
pub(crate) struct SendRequest(MpiRequest);

impl SendRequest {
    /// Whether the send has completed (MPI then frees the request).
    pub fn test(&mut self) -> Result<bool> {
        self.0.test()
    }
}

/// A nonblocking send and the completion its request owner waits on.
type SendInFlight = (MpiRequest, Arc<Completion>);

/// A nonblocking MPI send in flight.
struct MpiRequest(Handle<ffi::MPI_Request>);

impl MpiRequest {
    /// Tests a tracked send; once it is done, completes its waiter and says so.
    fn settle(&mut self, done: &Completion) -> bool {
        match self.test() {
            Ok(false) => false,
            Ok(true) => {
                done.complete(Ok(Status::default()));
                true
            }
            Err(e) => {
                done.complete(Err(e));
                true
            }
        }
    }

    /// Whether the send has completed. Without a status: a send's says
    /// nothing, and asking `MPI_Get_count` for it cost about 80 instructions
    /// per send under MPICH.
    fn test(&mut self) -> Result<bool> {
        let mut flag: c_int = 0;
        // SAFETY: the request is valid or null; MPI writes no status.
        check(
            unsafe { ffi::MPI_Test(&mut self.0 .0, &mut flag, ffi::RSMPI_STATUS_IGNORE) },
            "MPI_Test",
        )?;
        Ok(flag != 0)
    }
}

/// Fills the first receive of thread `t` from index `from` on that accepts a
/// message claimed for an earlier one (which shared memory filled meanwhile):
/// its index, and its outcome. Those receives were all posted after that
/// `ANY_SOURCE` receive, so none of them is lane-posted or offered (which
/// [`Mpi::lane_post`] and [`Mpi::refresh_offers`] allow only when no earlier
/// receive could take the sender's messages); one withdrawn for a ready send
/// is spoken for, and one that shared memory fills meanwhile is passed over.
fn hand_over(
    shm: &Shm,
    t: usize,
    receives: &mut VecDeque<Pending>,
    from: usize,
    env: &Envelope,
    data: &[u8],
) -> Option<(usize, Result<Status>)> {
    for (j, p) in receives.iter_mut().enumerate().skip(from) {
        if p.done.is_done() || p.ready.is_some() || p.lane.is_some() || !p.pat.matches(env) {
            continue;
        }
        if p.shm_id.is_some_and(|id| !shm.cancel_recv(t, id)) {
            continue;
        }
        let dst = p.dst.take().expect("a waiting receive holds its buffer");
        return Some((j, dst.fill(data, env)));
    }
    None
}

/// How [`Mpi::probe_lanes`] probes.
#[derive(Clone, Copy)]
struct Probe<'a> {
    /// Claims the message with `MPI_Improbe`; else only looks (`MPI_Iprobe`).
    claim: bool,
    /// Patterns of earlier receives still waiting: a message one of them
    /// accepts is theirs, and passed over. With some, it looks with
    /// `MPI_Iprobe` before it claims.
    earlier: &'a [Pattern],
}

/// Counts one message on a lane's counter, if it has one.
fn tally(counter: Option<&AtomicU64>) {
    if let Some(c) = counter {
        c.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::library_summary;

    #[test]
    fn library_summary_keeps_the_version_and_drops_the_build_details() {
        let mpich = "MPICH Version:\t4.0.2\nMPICH Release date:\tThu Apr  7 2022\n\
                     MPICH ABI:\t14:2:2\nMPICH Device:\tch4:ucx\n\
                     MPICH configure:\t--build=x86_64-linux-gnu --prefix=/usr\n\
                     MPICH CC:\tgcc -O2\n\0";
        assert_eq!(
            library_summary(mpich),
            "MPICH Version: 4.0.2; MPICH Release date: Thu Apr 7 2022; \
             MPICH ABI: 14:2:2; MPICH Device: ch4:ucx"
        );
        let open_mpi = "Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, \
                        repo rev: v4.1.4, May 26, 2022\0";
        assert_eq!(
            library_summary(open_mpi),
            "Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022"
        );
    }
}
