//! Baselines measured in the same run: an atomic-flag ping-pong between the
//! same two cores (the hardware limit of a handoff), the same ping-pong
//! through one line per direction (the limit of any design that gives each
//! direction its own memory), the same handoff carrying 8 bytes through a
//! claimed one-line slot per direction (the floor of a fastbox-like slot),
//! `memcpy` of the same size (the single-copy limit) and a bare crossbeam
//! channel ping-pong.

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Instant;

use courier::{Comm, Result};
use crossbeam_utils::CachePadded;

use super::{batch, summarize, Buffer, Record};

/// The cache lines the handoff baselines share between ranks 0 and 1.
#[derive(Default)]
pub(crate) struct Lines {
    flag: CachePadded<AtomicU64>,
    /// `directions[r]`: the line rank `r` is handed the turn in, written only
    /// by the other rank.
    directions: [CachePadded<AtomicU64>; 2],
    /// `slots[r]`: the slot rank `r` receives in, as `[state, payload]`.
    slots: [CachePadded<[AtomicU64; 2]>; 2],
}

/// The two handoff baselines between ranks 0 and 1, one-way latency each:
///
/// * `atomic-flag`: a handoff through one cache line, the hardware limit;
/// * `line-per-direction`: the same ping-pong through a line per direction,
///   each written only by its sender, with nothing to claim: the limit of a
///   point-to-point transport whose two directions use separate memory, as
///   courier's pairs (and MPI's) do. On this project's 2-core test VM it
///   measured 0.14–0.17 µs while the flag took 0.07–0.08, and the same as the
///   flag (0.021 µs) in the stretches when the cores hand lines over fast;
/// * `slot-handoff`: an 8-byte message through a one-line slot per direction,
///   claimed with a compare-and-swap on both sides, as courier's fastbox is
///   (several threads may fill it: threads of one rank; or drain it: whoever
///   holds the receiver's lock). Against the flag it shows what this design
///   costs the hardware before any courier code runs: each hop moves a slot
///   line to the receiver and back, and waits for two exclusive claims.
pub(crate) fn handoff_baselines(
    comm: &Comm,
    lines: &Lines,
    samples: usize,
    quick: bool,
) -> Result<Vec<Record>> {
    let b = batch(8, quick);
    let mut handoff = Handoff::new(comm, lines)?;
    let runs = samples + 2; // the first two warm up
    let flag: Vec<f64> = (0..runs).map(|_| handoff.flag(b)).skip(2).collect();
    let lines: Vec<f64> = (0..runs).map(|_| handoff.directions(b)).skip(2).collect();
    let slot: Vec<f64> = (0..runs).map(|_| handoff.slot(b)).skip(2).collect();
    handoff.finish()?;
    Ok(vec![
        summarize(flag, 8, "hardware", "atomic-flag"),
        summarize(lines, 8, "hardware", "line-per-direction"),
        summarize(slot, 8, "hardware", "slot-handoff"),
    ])
}

/// The handoff baselines between ranks 0 and 1 of `comm`, as batches that both
/// ranks run in step (each round trip waits for the other rank), so they can
/// also be timed between the samples of another measurement.
pub(crate) struct Handoff<'a> {
    comm: &'a Comm,
    lines: &'a Lines,
    /// Value of the last round trip's end, through the flag or the direction
    /// lines.
    next: u64,
    /// Round trips through the slots so far.
    trips: u64,
    /// Rank 0: the value the last slot round trip brought back, plus one (each
    /// message carries the number of round trips before it).
    echoed: u64,
}

impl<'a> Handoff<'a> {
    /// Starts at a barrier, with the flag at 0 and the slots empty (as
    /// [`finish`](Self::finish) leaves them).
    pub(crate) fn new(comm: &'a Comm, lines: &'a Lines) -> Result<Self> {
        comm.barrier()?;
        Ok(Handoff {
            comm,
            lines,
            next: 0,
            trips: 0,
            echoed: 0,
        })
    }

    /// `b` round trips of the flag; µs per one-way handoff.
    pub(crate) fn flag(&mut self, b: usize) -> f64 {
        let flag = &*self.lines.flag;
        self.ping_pong(b, flag, flag)
    }

    /// `b` round trips through the direction lines; µs per one-way handoff.
    pub(crate) fn directions(&mut self, b: usize) -> f64 {
        let me = self.comm.rank();
        let lines = &self.lines.directions;
        self.ping_pong(b, &lines[1 - me], &lines[me])
    }

    /// `b` round trips in which each rank hands the turn over by a store to
    /// `out` and waits for it in `inbound` (one line for both, or one each).
    /// Rank 0 stores odd values, rank 1 even ones, from the one count `next`:
    /// every line only ever grows.
    fn ping_pong(&mut self, b: usize, out: &AtomicU64, inbound: &AtomicU64) -> f64 {
        let first = self.comm.rank() == 0;
        let t = Instant::now();
        for _ in 0..b {
            if first {
                out.store(self.next + 1, Release);
                spin_until(inbound, self.next + 2);
            } else {
                spin_until(inbound, self.next + 1);
                out.store(self.next + 2, Release);
            }
            self.next += 2;
        }
        t.elapsed().as_secs_f64() * 1e6 / (2 * b) as f64
    }

    /// `b` round trips of 8 bytes through the slots; µs per one-way message.
    pub(crate) fn slot(&mut self, b: usize) -> f64 {
        let put = |slot: &[AtomicU64; 2], v: u64| {
            let mut spins = 0;
            while slot[0]
                .compare_exchange(EMPTY, WRITING, Acquire, Relaxed)
                .is_err()
            {
                spin(&mut spins);
            }
            slot[1].store(v, Relaxed);
            slot[0].store(FULL, Release);
        };
        let take = |slot: &[AtomicU64; 2]| {
            let mut spins = 0;
            while slot[0].load(Relaxed) != FULL
                || slot[0]
                    .compare_exchange(FULL, TAKING, Acquire, Relaxed)
                    .is_err()
            {
                spin(&mut spins);
            }
            let v = slot[1].load(Relaxed);
            slot[0].store(EMPTY, Release);
            v
        };
        let me = self.comm.rank();
        let (mine, peers) = (&*self.lines.slots[me], &*self.lines.slots[1 - me]);
        let t = Instant::now();
        for _ in 0..b {
            if me == 0 {
                put(peers, self.trips);
                self.echoed = take(mine) + 1;
            } else {
                let got = take(mine);
                put(peers, got);
            }
            self.trips += 1;
        }
        t.elapsed().as_secs_f64() * 1e6 / (2 * b) as f64
    }

    /// Leaves the lines as [`new`](Self::new) expects them; checks that every
    /// slot message came back unchanged.
    pub(crate) fn finish(self) -> Result<()> {
        self.comm.barrier()?;
        self.lines.flag.store(0, Relaxed);
        for line in &self.lines.directions {
            line.store(0, Relaxed);
        }
        self.comm.barrier()?;
        if self.comm.rank() == 0 && self.echoed != self.trips {
            return Err(courier::Error::InvalidConfig(
                "slot baseline: a message came back changed".into(),
            ));
        }
        Ok(())
    }
}

fn spin_until(flag: &AtomicU64, value: u64) {
    let mut spins = 0u32;
    while flag.load(Acquire) < value {
        spin(&mut spins);
    }
}

fn spin(spins: &mut u32) {
    *spins += 1;
    if *spins % 4096 == 0 {
        std::thread::yield_now(); // more ranks than cores: let the peer run
    } else {
        std::hint::spin_loop();
    }
}

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const TAKING: u64 = 3;

pub(crate) fn memcpy_baseline(size: usize, samples: usize, quick: bool) -> Record {
    let src = Buffer::filled(size, 1);
    let mut dst = Buffer::filled(size, 0);
    let b = batch(size, quick) * 2;
    let mut times = Vec::new();
    for s in 0..samples + 2 {
        let t = Instant::now();
        for _ in 0..b {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / b as f64);
        }
    }
    summarize(times, size, "hardware", "memcpy")
}

/// Ping-pong through a pair of bare crossbeam channels (`bounded(1)`) between
/// ranks 0 and 1, each message a fresh `Vec` copied from the send buffer and
/// copied out on arrival, as courier's eager path does. `Some` on rank 0.
pub(crate) fn channel_baseline(
    comm: &Comm,
    channels: &Channels,
    size: usize,
    samples: usize,
    quick: bool,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let (tx, rx) = if me == 0 {
        (&channels.ping.0, &channels.pong.1)
    } else {
        (&channels.pong.0, &channels.ping.1)
    };
    let sbuf = Buffer::filled(size, me as u8);
    let mut rbuf = Buffer::filled(size, 0);
    let b = batch(size, quick);
    let mut times = Vec::new();
    comm.barrier()?;
    let lost = || courier::Error::InvalidConfig("the channel peer is gone".into());
    for s in 0..samples + 2 {
        let t = Instant::now();
        for _ in 0..b {
            if me == 0 {
                tx.send(sbuf.to_vec()).map_err(|_| lost())?;
                rbuf.copy_from_slice(&rx.recv().map_err(|_| lost())?);
            } else {
                rbuf.copy_from_slice(&rx.recv().map_err(|_| lost())?);
                tx.send(sbuf.to_vec()).map_err(|_| lost())?;
            }
        }
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / (2 * b) as f64);
        }
    }
    comm.barrier()?;
    Ok((me == 0).then(|| summarize(times, size, "crossbeam", "channel")))
}

/// The two channels of the crossbeam baseline (rank 0 → 1, rank 1 → 0).
pub(crate) struct Channels {
    ping: (
        crossbeam_channel::Sender<Vec<u8>>,
        crossbeam_channel::Receiver<Vec<u8>>,
    ),
    pong: (
        crossbeam_channel::Sender<Vec<u8>>,
        crossbeam_channel::Receiver<Vec<u8>>,
    ),
}

impl Channels {
    pub(crate) fn new() -> Self {
        Channels {
            ping: crossbeam_channel::bounded(1),
            pong: crossbeam_channel::bounded(1),
        }
    }
}
