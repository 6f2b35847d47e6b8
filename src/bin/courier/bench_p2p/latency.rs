//! Latency: ping-pong per mode, one-way = half the round trip.

use std::time::Instant;

use courier::{Comm, Result, BSEND_OVERHEAD};

use super::baselines::{Handoff, Lines};
use super::{batch, is_buffered, is_ready, median, summarize, Buffer, Handoffs, Record, TAG};

/// Times one (mode, size) ping-pong between ranks 0 and 1; `Some` on rank 0.
///
/// With `lines` (shared memory), each sample is followed by a batch of each
/// handoff baseline on the same two cores, and the record carries their
/// medians: its ratios then compare times taken in the same seconds, however
/// much the machine's speed drifts during a long run.
pub(crate) fn ping_pong(
    comm: &Comm,
    transport: &'static str,
    mode: &str,
    size: usize,
    samples: usize,
    quick: bool,
    lines: Option<&Lines>,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let peer = 1 - me;
    let b = batch(size, quick);
    let sbuf = Buffer::filled(size, me as u8);
    let mut rbuf = Buffer::filled(size, 0);
    let ready = is_ready(mode);
    let mut spare = Buffer::filled(if ready { size } else { 0 }, 0);
    let mut owned = Some(vec![0u8; size]);
    if is_buffered(mode) {
        comm.attach_buffer(2 * (size + BSEND_OVERHEAD))?;
    }
    // Ready modes: rank 1 pre-posts its first receive before the barrier.
    comm.barrier()?;
    let mut handoff = lines.map(|l| Handoff::new(comm, l)).transpose()?;
    let (mut flag, mut directions, mut slot) = (Vec::new(), Vec::new(), Vec::new());
    let hb = batch(8, quick);
    // Over MPI, each sample is followed by one of the raw rsmpi counterpart:
    // this machine's speed drifts by tens of percent over a run, and a ratio
    // is only as good as the seconds its two sides were timed in.
    let mut raw = (transport == "mpi")
        .then(|| crate::raw_mpi::RawPingPong::interleaved(comm, mode, size))
        .flatten();
    let mut raw_times = Vec::new();
    let mut times = Vec::with_capacity(samples);
    let warmup = 2;
    for s in 0..samples + warmup {
        let t = Instant::now();
        if ready {
            ready_round_trips(comm, mode, b, &sbuf, (&mut rbuf, &mut spare))?;
        } else {
            round_trips(comm, mode, b, peer, &sbuf, &mut rbuf, &mut owned)?;
        }
        if s >= warmup {
            let per = if mode == "sendrecv" { b } else { 2 * b };
            times.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
        }
        comm.barrier()?;
        if let Some(r) = &mut raw {
            let t = r.sample(b)?;
            if s >= warmup {
                raw_times.push(t);
            }
            if handoff.is_some() {
                // A raw `MPI_Bsend` may still need its sender's MPI progress
                // after that rank's last call returned (a large message's
                // rendezvous), which a handoff's spin would not give it.
                comm.barrier()?;
            }
        }
        if let Some(h) = &mut handoff {
            let (f, l, sl) = (h.flag(hb), h.directions(hb), h.slot(hb));
            if s >= warmup {
                flag.push(f);
                directions.push(l);
                slot.push(sl);
            }
        }
    }
    if let Some(h) = handoff {
        h.finish()?;
    }
    if is_buffered(mode) {
        comm.detach_buffer()?;
    }
    Ok((me == 0).then(|| {
        let mut r = summarize(times, size, transport, mode);
        r.handoffs_us = lines.map(|_| Handoffs {
            flag: median(flag),
            lines: median(directions),
            slot: median(slot),
        });
        r.raw_us = raw.map(|_| median(raw_times));
        r
    }))
}

/// `b` round trips (rank 0 pings, rank 1 pongs) in `mode`; for `sendrecv`, `b`
/// simultaneous exchanges. The mode is dispatched once, outside the loop, so
/// the loop times the calls alone, as the handoff baselines' loops do.
fn round_trips(
    comm: &Comm,
    mode: &str,
    b: usize,
    peer: usize,
    sbuf: &[u8],
    rbuf: &mut [u8],
    owned: &mut Option<Vec<u8>>,
) -> Result<()> {
    match mode {
        "send" => ping_pongs(comm, b, peer, rbuf, |c| c.send(sbuf, peer, TAG)),
        "bsend" => ping_pongs(comm, b, peer, rbuf, |c| c.bsend(sbuf, peer, TAG)),
        "ssend" => ping_pongs(comm, b, peer, rbuf, |c| c.ssend(sbuf, peer, TAG)),
        "isend" => ping_pongs(comm, b, peer, rbuf, |c| {
            c.scope(|s| s.isend(sbuf, peer, TAG)?.wait().map(drop))
        }),
        "ibsend" => ping_pongs(comm, b, peer, rbuf, |c| {
            c.scope(|s| s.ibsend(sbuf, peer, TAG)?.wait().map(drop))
        }),
        "issend" => ping_pongs(comm, b, peer, rbuf, |c| {
            c.scope(|s| s.issend(sbuf, peer, TAG)?.wait().map(drop))
        }),
        "sendrecv" => (0..b).try_for_each(|_| {
            comm.sendrecv(sbuf, peer, TAG, &mut *rbuf, peer, TAG)
                .map(drop)
        }),
        "send-owned" => (0..b).try_for_each(|_| {
            if comm.rank() == 0 {
                comm.send_owned(owned.take().expect("buffer"), peer, TAG)?;
                *owned = Some(comm.recv_owned(peer, TAG)?.0);
            } else {
                let (v, _) = comm.recv_owned::<u8>(peer, TAG)?;
                comm.send_owned(v, peer, TAG)?;
            }
            Ok(())
        }),
        _ => unreachable!("mode {mode}"),
    }
}

/// `b` round trips with `send` and a blocking receive.
fn ping_pongs(
    comm: &Comm,
    b: usize,
    peer: usize,
    rbuf: &mut [u8],
    send: impl Fn(&Comm) -> Result<()>,
) -> Result<()> {
    if comm.rank() == 0 {
        for _ in 0..b {
            send(comm)?;
            comm.recv(&mut *rbuf, peer, TAG)?;
        }
    } else {
        for _ in 0..b {
            comm.recv(&mut *rbuf, peer, TAG)?;
            send(comm)?;
        }
    }
    Ok(())
}

/// `b` round trips with ready sends: every receive is posted before the peer can
/// send to it (rank 0 posts its pong receive before it pings; rank 1 posts the
/// next ping receive before it pongs).
fn ready_round_trips(
    comm: &Comm,
    mode: &str,
    b: usize,
    sbuf: &[u8],
    rbufs: (&mut [u8], &mut [u8]),
) -> Result<()> {
    let rsend = |buf: &[u8], dest: usize| -> Result<()> {
        if mode == "rsend" {
            comm.rsend(buf, dest, TAG)
        } else {
            comm.scope(|s| s.irsend(buf, dest, TAG)?.wait().map(drop))
        }
    };
    let (rbuf, spare) = rbufs;
    if comm.rank() == 0 {
        comm.barrier()?; // rank 1 has posted the first ping receive
        for _ in 0..b {
            comm.scope(|s| {
                let r = s.irecv(&mut *rbuf, 1, TAG)?;
                rsend(sbuf, 1)?;
                r.wait().map(drop)
            })?;
        }
    } else {
        // Rank 1 alternates two receive buffers (the next ping's receive is posted
        // before this pong goes out) and pongs from its own send buffer, like the
        // other modes.
        let (mut cur, mut next) = (rbuf, spare);
        comm.scope(|s| {
            let r = s.irecv(&mut *cur, 0, TAG)?;
            comm.barrier()?;
            r.wait().map(drop)
        })?;
        for i in 0..b {
            comm.scope(|s| {
                let r = if i + 1 < b {
                    Some(s.irecv(&mut *next, 0, TAG)?)
                } else {
                    None
                };
                rsend(sbuf, 0)?;
                r.map_or(Ok(()), |r| r.wait().map(drop))
            })?;
            std::mem::swap(&mut cur, &mut next);
        }
    }
    Ok(())
}
