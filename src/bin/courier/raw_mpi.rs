//! The MPI baseline of `courier bench p2p`: the same ping-pong written directly
//! against rsmpi on `MPI_COMM_WORLD`, between the two processes of the pair,
//! in the same run — what courier's `mpi` transport is compared with.

use std::ffi::{c_int, c_void};
use std::time::Instant;

use courier::{Comm, Result, BSEND_OVERHEAD};
use mpi::ffi;
use mpi::traits::*;

use crate::bench_p2p::{batch, summarize, summarize_as, windows, Buffer, Lines, Record};

/// The raw modes measured, as named in the report.
const RAW: [&str; 5] = [
    "raw-send",
    "raw-bsend",
    "raw-ssend",
    "raw-rsend",
    "raw-sendrecv",
];

/// The raw rsmpi call a courier mode is compared with.
pub fn counterpart(mode: &str) -> &'static str {
    match mode {
        "bsend" | "ibsend" => "raw-bsend",
        "ssend" | "issend" => "raw-ssend",
        "rsend" | "irsend" => "raw-rsend",
        "sendrecv" => "raw-sendrecv",
        _ => "raw-send",
    }
}

/// Raw rsmpi ping-pongs of `size` bytes between the pair's two processes
/// (pair ranks 0 and 1 are a thread each of processes 0 and 1); records on rank 0.
pub fn baselines(pair: &Comm, size: usize, samples: usize, quick: bool) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for mode in RAW {
        if mode == "raw-bsend" {
            // Attaches the process's MPI buffer, which MPI_Bsend draws on.
            pair.attach_buffer(2 * (size + BSEND_OVERHEAD))?;
        }
        let mut raw = RawPingPong::new(pair, mode, size);
        let b = batch(size, quick);
        let mut times = Vec::with_capacity(samples);
        for s in 0..samples + 2 {
            let t = raw.sample(b)?;
            if s >= 2 {
                times.push(t);
            }
        }
        pair.barrier()?;
        if mode == "raw-bsend" {
            pair.detach_buffer()?;
        }
        if pair.rank() == 0 {
            out.push(summarize(times, size, "mpi-raw", mode));
        }
    }
    Ok(out)
}

/// The raw ping-pong of one mode and size, timed sample by sample: so a
/// courier record can time its raw counterpart between its own samples.
pub struct RawPingPong<'a> {
    pair: &'a Comm,
    mode: &'static str,
    sbuf: Buffer,
    rbuf: Buffer,
    spare: Buffer,
}

impl<'a> RawPingPong<'a> {
    /// The raw counterpart of courier's `mode` over MPI, to time between its
    /// samples. A buffered counterpart draws on the buffer that courier's own
    /// buffered mode attached.
    pub fn interleaved(pair: &'a Comm, mode: &str, size: usize) -> Option<Self> {
        Some(RawPingPong::new(pair, counterpart(mode), size))
    }

    /// Buffers for `mode` (a [`RAW`] name) and `size`. For `raw-bsend` the
    /// caller attaches a buffer of at least `2 * (size + BSEND_OVERHEAD)`.
    pub fn new(pair: &'a Comm, mode: &'static str, size: usize) -> Self {
        let me = pair.rank();
        RawPingPong {
            pair,
            mode,
            sbuf: Buffer::filled(size, me as u8),
            rbuf: Buffer::filled(size, 0),
            spare: Buffer::filled(size, 0),
        }
    }

    /// `b` round trips (a barrier first): the one-way time per message (µs).
    pub fn sample(&mut self, b: usize) -> Result<f64> {
        let (pair, mode) = (self.pair, self.mode);
        let world = mpi::topology::SimpleCommunicator::world();
        let me = pair.rank();
        let peer = world.process_at_rank(1 - me as i32);
        let (sbuf, rbuf, spare) = (&self.sbuf[..], &mut self.rbuf[..], &mut self.spare[..]);
        if mode == "raw-rsend" && me == 1 {
            // Pre-post the first ping's receive before the barrier that lets
            // rank 0 start (as courier's ready-mode bench does).
            mpi::request::scope(|sc| {
                let r = peer.immediate_receive_into(sc, &mut rbuf[..]);
                pair.barrier()?;
                r.wait();
                Ok::<_, courier::Error>(())
            })?;
        } else {
            pair.barrier()?;
        }
        let t = Instant::now();
        for i in 0..b {
            match (mode, me) {
                ("raw-rsend", 0) => mpi::request::scope(|sc| {
                    let r = peer.immediate_receive_into(sc, &mut rbuf[..]);
                    // SAFETY: rank 1 posted this ping's receive before it sent the
                    // previous pong (or before the barrier, for the first).
                    unsafe { peer.ready_send(sbuf) };
                    r.wait();
                }),
                ("raw-rsend", _) => {
                    mpi::request::scope(|sc| {
                        let next =
                            (i + 1 < b).then(|| peer.immediate_receive_into(sc, &mut spare[..]));
                        // SAFETY: rank 0 posted this pong's receive before its ping.
                        unsafe { peer.ready_send(sbuf) };
                        if let Some(r) = next {
                            r.wait();
                        }
                    });
                }
                ("raw-sendrecv", _) => {
                    mpi::point_to_point::send_receive_into(sbuf, &peer, &mut rbuf[..], &peer);
                }
                (_, 0) => {
                    raw_send(&peer, mode, sbuf);
                    peer.receive_into(&mut rbuf[..]);
                }
                _ => {
                    peer.receive_into(&mut rbuf[..]);
                    raw_send(&peer, mode, sbuf);
                }
            }
        }
        // A sendrecv round is one simultaneous exchange, as courier's bench times it.
        let per = if mode == "raw-sendrecv" { b } else { 2 * b };
        Ok(t.elapsed().as_secs_f64() * 1e6 / per as f64)
    }
}

/// Raw `MPI_Isend` window bandwidth from the pair's rank 0 to rank 1, the way
/// courier's `bw` test measures it (osu_bw: W sends, one acknowledgement).
pub fn bandwidth(pair: &Comm, size: usize, w: usize, quick: bool) -> Result<Vec<Record>> {
    let world = mpi::topology::SimpleCommunicator::world();
    let me = pair.rank();
    let peer = world.process_at_rank(1 - me as i32);
    let sbuf = Buffer::filled(size, 1);
    let mut rbufs = Buffer::many(if me == 1 { w } else { 0 }, size, 0);
    let mut token = [0u8; 1];
    let mut times = Vec::new();
    pair.barrier()?;
    for i in 0..windows(size, quick) + 2 {
        let t = Instant::now();
        if me == 0 {
            mpi::request::multiple_scope(w, |scope, requests| {
                for _ in 0..w {
                    requests.add(peer.immediate_send(scope, &sbuf[..]));
                }
                let mut done = Vec::new();
                requests.wait_all(&mut done);
            });
            peer.receive_into(&mut token[..]);
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1e6 / w as f64);
            }
        } else {
            mpi::request::multiple_scope(w, |scope, requests| {
                for b in rbufs.iter_mut() {
                    requests.add(peer.immediate_receive_into(scope, &mut b[..]));
                }
                let mut done = Vec::new();
                requests.wait_all(&mut done);
            });
            peer.send(&token[..]);
        }
    }
    pair.barrier()?;
    Ok(if me == 0 {
        vec![summarize_as(times, size, "mpi-raw", "raw-isend", "bw", 1)]
    } else {
        Vec::new()
    })
}

/// Raw bidirectional bandwidth, the way courier's `bibw` test measures it
/// (osu_bibw: both processes post W receives, send W messages, wait for all);
/// both directions' bytes counted.
pub fn bidirectional(pair: &Comm, size: usize, w: usize, quick: bool) -> Result<Vec<Record>> {
    let world = mpi::topology::SimpleCommunicator::world();
    let me = pair.rank();
    let peer = world.process_at_rank(1 - me as i32);
    let sbuf = Buffer::filled(size, 1);
    let mut rbufs = Buffer::many(w, size, 0);
    let mut times = Vec::new();
    pair.barrier()?;
    for i in 0..windows(size, quick) + 2 {
        let t = Instant::now();
        mpi::request::multiple_scope(2 * w, |scope, requests| {
            for b in rbufs.iter_mut() {
                requests.add(peer.immediate_receive_into(scope, &mut b[..]));
            }
            for _ in 0..w {
                requests.add(peer.immediate_send(scope, &sbuf[..]));
            }
            let mut done = Vec::new();
            requests.wait_all(&mut done);
        });
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / w as f64);
        }
    }
    pair.barrier()?;
    Ok(if me == 0 {
        vec![summarize_as(times, size, "mpi-raw", "raw-isend", "bibw", 2)]
    } else {
        Vec::new()
    })
}

fn raw_send(peer: &mpi::topology::Process<'_>, mode: &str, buf: &[u8]) {
    match mode {
        "raw-bsend" => peer.buffered_send(buf),
        "raw-ssend" => peer.synchronous_send(buf),
        _ => peer.send(buf),
    }
}

/// The handoff baselines' [`Lines`] in memory shared by the pair's two
/// processes (an MPI shared-memory window), so that the MPI pair's latency
/// rows carry the atomic-flag ping-pong between the same two cores, timed
/// between their samples: on a virtual machine whose host moves its vCPUs,
/// that handoff tells which placement a row was measured in (on this
/// project's 2-core VM, 0.03 µs on SMT siblings and 0.15 µs far apart).
pub struct SharedLines {
    win: ffi::MPI_Win,
    comm: ffi::MPI_Comm,
    lines: *const Lines,
}

impl SharedLines {
    /// The lines of the pair's processes (world processes 0 and 1), when they
    /// share a node and the MPI library can map memory between them; `None`
    /// otherwise. Collective over the pair's two ranks only (a thread each of
    /// those processes).
    pub fn new() -> Option<SharedLines> {
        // SAFETY: reading constants exported by mpi-sys.
        let (world, shared, info) = unsafe {
            (
                ffi::RSMPI_COMM_WORLD,
                ffi::RSMPI_COMM_TYPE_SHARED,
                ffi::RSMPI_INFO_NULL,
            )
        };
        let ok = |code: c_int| code == ffi::MPI_SUCCESS as c_int;
        // SAFETY: zeroed handles are valid out-parameters; both ranks of the
        // pair make these calls, collective over the two processes only
        // (`MPI_Comm_create_group`), in the same order.
        unsafe {
            let mut wg: ffi::MPI_Group = std::mem::zeroed();
            let mut g: ffi::MPI_Group = std::mem::zeroed();
            let mut two: ffi::MPI_Comm = std::mem::zeroed();
            let ranks: [c_int; 2] = [0, 1];
            let made = ok(ffi::MPI_Comm_group(world, &mut wg))
                && ok(ffi::MPI_Group_incl(wg, 2, ranks.as_ptr(), &mut g))
                && ok(ffi::MPI_Comm_create_group(world, g, 0x5a17, &mut two));
            ffi::MPI_Group_free(&mut g);
            ffi::MPI_Group_free(&mut wg);
            if !made {
                return None;
            }
            let mut node: ffi::MPI_Comm = std::mem::zeroed();
            let mut size: c_int = 0;
            let split = ok(ffi::MPI_Comm_split_type(two, shared, 0, info, &mut node));
            ffi::MPI_Comm_free(&mut two);
            if !split {
                return None;
            }
            if !ok(ffi::MPI_Comm_size(node, &mut size)) || size != 2 {
                ffi::MPI_Comm_free(&mut node);
                return None; // on two nodes: no memory to share
            }
            let mut me: c_int = 0;
            ffi::MPI_Comm_rank(node, &mut me);
            // One alignment more than `Lines`: the segment need not start on a
            // cache line; both processes round up from the same address.
            let align = std::mem::align_of::<Lines>();
            let bytes = if me == 0 {
                std::mem::size_of::<Lines>() + align
            } else {
                0
            };
            let mut base: *mut u8 = std::ptr::null_mut();
            let mut win: ffi::MPI_Win = std::mem::zeroed();
            if !ok(ffi::MPI_Win_allocate_shared(
                bytes as ffi::MPI_Aint,
                1,
                info,
                node,
                (&mut base as *mut *mut u8).cast::<c_void>(),
                &mut win,
            )) {
                ffi::MPI_Comm_free(&mut node);
                return None;
            }
            let (mut len, mut unit) = (0 as ffi::MPI_Aint, 0 as c_int);
            let mut at: *mut u8 = std::ptr::null_mut();
            ffi::MPI_Win_shared_query(
                win,
                0,
                &mut len,
                &mut unit,
                (&mut at as *mut *mut u8).cast::<c_void>(),
            );
            let lines = at.add(at.align_offset(align)).cast::<Lines>();
            if me == 0 {
                // Rank 0's own segment, untouched by rank 1 before the barrier.
                lines.write(Lines::default());
            }
            ffi::MPI_Barrier(node);
            Some(SharedLines {
                win,
                comm: node,
                lines,
            })
        }
    }

    /// The shared lines.
    pub fn lines(&self) -> &Lines {
        // SAFETY: initialised before `new` returned, and mapped until the
        // window is freed in `drop`; `Lines` holds only atomics.
        unsafe { &*self.lines }
    }
}

impl Drop for SharedLines {
    /// Frees the window and its communicator: collective, so both ranks drop
    /// their `SharedLines` at the same point of the run.
    fn drop(&mut self) {
        // SAFETY: valid handles made in `new`, freed once.
        unsafe {
            ffi::MPI_Win_free(&mut self.win);
            ffi::MPI_Comm_free(&mut self.comm);
        }
    }
}
