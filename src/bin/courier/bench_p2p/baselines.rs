//! Baselines measured in the same run: an atomic-flag ping-pong between the
//! same two cores (the hardware limit of a handoff), the same handoff carrying
//! 8 bytes through a claimed one-line slot per direction (the floor of a
//! fastbox-like slot), `memcpy` of the same size (the single-copy limit) and a
//! bare crossbeam channel ping-pong.

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Instant;

use courier::{Comm, Result};
use crossbeam_utils::CachePadded;

use super::{batch, summarize, Record};

/// The cache lines the handoff baselines share between ranks 0 and 1.
#[derive(Default)]
pub(crate) struct Lines {
    flag: CachePadded<AtomicU64>,
    /// `slots[r]`: the slot rank `r` receives in, as `[state, payload]`.
    slots: [CachePadded<[AtomicU64; 2]>; 2],
}

/// One-way latency of a handoff through one cache line between ranks 0 and 1.
pub(crate) fn flag_baseline(
    comm: &Comm,
    lines: &Lines,
    samples: usize,
    quick: bool,
) -> Result<Vec<Record>> {
    let flag = &*lines.flag;
    let b = batch(8, quick) as u64;
    comm.barrier()?;
    let me = comm.rank() as u64;
    let mut times = Vec::new();
    let mut next = 0u64;
    for s in 0..samples + 2 {
        let t = Instant::now();
        for _ in 0..b {
            // Rank 0 moves the flag to odd values, rank 1 to even ones.
            let (wait_for, set_to) = if me == 0 {
                (next, next + 1)
            } else {
                (next + 1, next + 2)
            };
            if me == 0 {
                flag.store(set_to, Release);
                spin_until(flag, set_to + 1);
            } else {
                spin_until(flag, wait_for);
                flag.store(set_to, Release);
            }
            next += 2;
        }
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / (2 * b) as f64);
        }
    }
    comm.barrier()?;
    flag.store(0, Relaxed);
    comm.barrier()?;
    Ok(vec![summarize(times, 8, "hardware", "atomic-flag")])
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

/// One-way latency of an 8-byte message through a one-line slot per direction,
/// claimed with a compare-and-swap on both sides, as courier's fastbox is
/// (several threads may fill it: threads of one rank; or drain it: whoever
/// holds the receiver's lock). Against the flag it shows what this design
/// costs the hardware before any courier code runs: each hop moves a slot line
/// to the receiver and back, and waits for two exclusive claims.
pub(crate) fn slot_baseline(
    comm: &Comm,
    lines: &Lines,
    samples: usize,
    quick: bool,
) -> Result<Vec<Record>> {
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
    let b = batch(8, quick) as u64;
    let (mine, peers) = (&*lines.slots[comm.rank()], &*lines.slots[1 - comm.rank()]);
    comm.barrier()?;
    let mut times = Vec::new();
    let mut v = 0u64;
    for s in 0..samples + 2 {
        let t = Instant::now();
        for _ in 0..b {
            if comm.rank() == 0 {
                put(peers, v);
                v = take(mine) + 1;
            } else {
                let got = take(mine);
                put(peers, got);
            }
        }
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / (2 * b) as f64);
        }
    }
    comm.barrier()?;
    if comm.rank() == 0 && v != (samples as u64 + 2) * b {
        return Err(courier::Error::InvalidConfig(
            "slot baseline: a message came back changed".into(),
        ));
    }
    Ok(vec![summarize(times, 8, "hardware", "slot-handoff")])
}

pub(crate) fn memcpy_baseline(size: usize, samples: usize, quick: bool) -> Record {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
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
    let sbuf = vec![me as u8; size];
    let mut rbuf = vec![0u8; size];
    let b = batch(size, quick);
    let mut times = Vec::new();
    comm.barrier()?;
    let lost = || courier::Error::InvalidConfig("the channel peer is gone".into());
    for s in 0..samples + 2 {
        let t = Instant::now();
        for _ in 0..b {
            if me == 0 {
                tx.send(sbuf.clone()).map_err(|_| lost())?;
                rbuf.copy_from_slice(&rx.recv().map_err(|_| lost())?);
            } else {
                rbuf.copy_from_slice(&rx.recv().map_err(|_| lost())?);
                tx.send(sbuf.clone()).map_err(|_| lost())?;
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
