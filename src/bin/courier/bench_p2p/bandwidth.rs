//! Bandwidth (osu_bw), bidirectional bandwidth (osu_bibw) and message rate
//! (osu_mbw_mr): each iteration sends a window of W messages back to back and
//! the receiver acknowledges the whole window; warm-up windows are not timed.
//!
//! The receiver pre-posts one receive per message of the window (W buffers), so
//! every mode, ready sends included, meets a posted receive; for the ready modes
//! the receiver says "posted" with a one-byte token before the window starts.
//! Blocking modes send the window with W blocking calls, nonblocking modes start
//! W requests and wait for all of them.

use std::time::Instant;

use courier::{wait_all, Comm, Request, Result, BSEND_OVERHEAD};

use super::{is_buffered, is_ready, summarize_as, Buffer, Record, TAG};

/// Modes measured by `bw`: every mode but `sendrecv`, which is bidirectional.
pub(crate) fn bw_measures(mode: &str) -> bool {
    mode != "sendrecv"
}
/// Modes measured by `bibw`: both ranks send a window at once, so only the
/// nonblocking modes (a blocking synchronous window both ways would deadlock)
/// and `sendrecv`.
pub(crate) const BIBW_MODES: [&str; 5] = ["isend", "ibsend", "issend", "irsend", "sendrecv"];
/// Modes measured by `mr` (osu_mbw_mr uses nonblocking standard sends).
pub(crate) const MR_MODES: [&str; 2] = ["isend", "send"];

const TAG_ACK: i32 = 2;
const WARMUP: usize = 2;

/// Timed windows per measurement (fewer above 8 KiB, as OSU does).
pub(crate) fn windows(size: usize, quick: bool) -> usize {
    match (quick, size <= 8192) {
        (true, _) => 3,
        (false, true) => 20,
        (false, false) => 8,
    }
}

/// Starts one nonblocking send of `mode`.
fn start<'s>(
    s: &'s courier::Scope<'s, '_>,
    mode: &str,
    buf: &'s [u8],
    dest: usize,
) -> Result<Request<'s>> {
    match mode {
        "ibsend" => s.ibsend(buf, dest, TAG),
        "issend" => s.issend(buf, dest, TAG),
        "irsend" => s.irsend(buf, dest, TAG),
        _ => s.isend(buf, dest, TAG),
    }
}

/// Posts one receive per buffer of the window (all from `peer`).
fn post_window<'s>(
    s: &'s courier::Scope<'s, '_>,
    rbufs: &'s mut [Buffer],
    peer: usize,
) -> Result<Vec<Request<'s>>> {
    rbufs
        .iter_mut()
        .map(|b| s.irecv(&mut b[..], peer, TAG))
        .collect()
}

/// Sends one window of `w` messages of `mode` from `sbuf` (or the owned buffers).
fn send_window(
    comm: &Comm,
    mode: &str,
    w: usize,
    sbuf: &[u8],
    owned: &mut Vec<Vec<u8>>,
    dest: usize,
) -> Result<()> {
    match mode {
        "send" | "bsend" | "ssend" | "rsend" => {
            for _ in 0..w {
                match mode {
                    "send" => comm.send(sbuf, dest, TAG)?,
                    "bsend" => comm.bsend(sbuf, dest, TAG)?,
                    "ssend" => comm.ssend(sbuf, dest, TAG)?,
                    _ => comm.rsend(sbuf, dest, TAG)?,
                }
            }
            Ok(())
        }
        "send-owned" => {
            for v in owned.drain(..) {
                comm.send_owned(v, dest, TAG)?;
            }
            Ok(())
        }
        _ => comm.scope(|s| {
            let mut reqs = (0..w)
                .map(|_| start(s, mode, sbuf, dest))
                .collect::<Result<Vec<_>>>()?;
            wait_all(&mut reqs).map(drop)
        }),
    }
}

/// One-way bandwidth of `mode` from pair rank 0 to pair rank 1; `Some` on rank 0.
pub(crate) fn bw(
    comm: &Comm,
    transport: &'static str,
    mode: &str,
    size: usize,
    w: usize,
    quick: bool,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let peer = 1 - me;
    let sbuf = Buffer::filled(size, 1);
    let mut rbufs = if mode == "send-owned" || me == 0 {
        Vec::new()
    } else {
        Buffer::many(w, size, 0)
    };
    let mut owned: Vec<Vec<u8>> = if me == 0 && mode == "send-owned" {
        vec![vec![1u8; size]; w]
    } else {
        Vec::new()
    };
    if is_buffered(mode) && me == 0 {
        comm.attach_buffer(w * (size + BSEND_OVERHEAD))?;
    }
    let mut token = [0u8; 1];
    let mut times = Vec::new();
    comm.barrier()?;
    for i in 0..windows(size, quick) + WARMUP {
        let t = Instant::now();
        if me == 0 {
            if is_ready(mode) {
                comm.recv(&mut token, peer, TAG_ACK)?;
            }
            send_window(comm, mode, w, &sbuf, &mut owned, peer)?;
            if mode == "send-owned" {
                // The receiver hands the buffers back: that is the acknowledgement.
                for _ in 0..w {
                    owned.push(comm.recv_owned::<u8>(peer, TAG_ACK)?.0);
                }
            } else {
                comm.recv(&mut token, peer, TAG_ACK)?;
            }
            if i >= WARMUP {
                times.push(t.elapsed().as_secs_f64() * 1e6 / w as f64);
            }
        } else if mode == "send-owned" {
            let got = (0..w)
                .map(|_| comm.recv_owned::<u8>(peer, TAG).map(|m| m.0))
                .collect::<Result<Vec<_>>>()?;
            for v in got {
                comm.send_owned(v, peer, TAG_ACK)?;
            }
        } else {
            comm.scope(|s| {
                let mut reqs = post_window(s, &mut rbufs, peer)?;
                if is_ready(mode) {
                    comm.send(&token, peer, TAG_ACK)?;
                }
                wait_all(&mut reqs).map(drop)
            })?;
            comm.send(&token, peer, TAG_ACK)?;
        }
    }
    if is_buffered(mode) && me == 0 {
        comm.detach_buffer()?;
    }
    comm.barrier()?;
    Ok((me == 0).then(|| summarize_as(times, size, transport, mode, "bw", 1)))
}

/// Bidirectional bandwidth: both pair ranks send a window to each other at once;
/// the figure counts the bytes of both directions. `Some` on rank 0.
pub(crate) fn bibw(
    comm: &Comm,
    transport: &'static str,
    mode: &str,
    size: usize,
    w: usize,
    quick: bool,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let peer = 1 - me;
    let sbuf = Buffer::filled(size, 1);
    let mut rbufs = Buffer::many(w, size, 0);
    if is_buffered(mode) {
        // Two windows: a rank may start its next window while its last one is
        // still stored (its peer has not drained it yet); the one before that
        // has been received, or the peer could not have sent its last window.
        comm.attach_buffer(2 * w * (size + BSEND_OVERHEAD))?;
    }
    let mut times = Vec::new();
    comm.barrier()?;
    for i in 0..windows(size, quick) + WARMUP {
        let t = Instant::now();
        if mode == "sendrecv" {
            for b in rbufs.iter_mut() {
                comm.sendrecv(&sbuf, peer, TAG, &mut b[..], peer, TAG)?;
            }
        } else {
            comm.scope(|s| {
                let mut reqs = post_window(s, &mut rbufs, peer)?;
                if is_ready(mode) {
                    // Each side's receives are posted before the other sends.
                    let mut theirs = [0u8; 1];
                    comm.sendrecv(&[1u8], peer, TAG_ACK, &mut theirs, peer, TAG_ACK)?;
                }
                for _ in 0..w {
                    reqs.push(start(s, mode, &sbuf, peer)?);
                }
                wait_all(&mut reqs).map(drop)
            })?;
        }
        if i >= WARMUP {
            times.push(t.elapsed().as_secs_f64() * 1e6 / w as f64);
        }
    }
    if is_buffered(mode) {
        comm.detach_buffer()?;
    }
    comm.barrier()?;
    Ok((me == 0).then(|| summarize_as(times, size, transport, mode, "bibw", 2)))
}

/// Message rate of `pairs` pairs at once (rank i sends to rank i + pairs, for
/// i < pairs; other ranks idle): windows of `mode`, each acknowledged. The
/// figure is messages per second summed over the pairs (the slowest pair's
/// window time). `Some` on rank 0.
pub(crate) fn mr(
    comm: &Comm,
    transport: &'static str,
    mode: &str,
    size: usize,
    w: usize,
    pairs: usize,
    quick: bool,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let (sender, receiver) = (me < pairs, me >= pairs && me < 2 * pairs);
    let peer = if sender {
        me + pairs
    } else {
        me.wrapping_sub(pairs)
    };
    let sbuf = Buffer::filled(size, 1);
    let mut rbufs = if receiver {
        Buffer::many(w, size, 0)
    } else {
        Vec::new()
    };
    let mut token = [0u8; 1];
    let mut times = Vec::new();
    for i in 0..windows(size, quick) + WARMUP {
        comm.barrier()?;
        let t = Instant::now();
        if sender {
            send_window(comm, mode, w, &sbuf, &mut Vec::new(), peer)?;
            comm.recv(&mut token, peer, TAG_ACK)?;
        } else if receiver {
            comm.scope(|s| {
                let mut reqs = post_window(s, &mut rbufs, peer)?;
                wait_all(&mut reqs).map(drop)
            })?;
            comm.send(&token, peer, TAG_ACK)?;
        }
        // The slowest sender's window time is the job's.
        let mine = [t.elapsed().as_secs_f64() * 1e6];
        let mut slowest = [0.0f64];
        comm.reduce(&mine, &mut slowest, 0, |a: f64, b: f64| a.max(b))?;
        if i >= WARMUP && me == 0 {
            times.push(slowest[0] / (w * pairs) as f64);
        }
    }
    Ok((me == 0).then(|| summarize_as(times, size, transport, mode, "mr", 1)))
}
