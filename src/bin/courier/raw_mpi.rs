//! The MPI baseline of `courier bench p2p`: the same ping-pong written directly
//! against rsmpi on `MPI_COMM_WORLD`, between the two processes of the pair,
//! in the same run — what courier's `mpi` transport is compared with.

use std::time::Instant;

use courier::{Comm, Result, BSEND_OVERHEAD};
use mpi::traits::*;

use crate::bench_p2p::{batch, summarize, summarize_as, windows, Buffer, Record};

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
