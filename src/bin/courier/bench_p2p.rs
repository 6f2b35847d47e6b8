//! `courier bench p2p`: ping-pong latency of every send mode, per size, next to
//! baselines measured in the same run: over shared memory, an atomic-flag
//! ping-pong between the same two cores (the hardware limit of a handoff) and
//! `memcpy` of the same size (the single-copy limit); over MPI (under mpirun),
//! the same ping-pong written directly against rsmpi (`send`, `buffered_send`,
//! `synchronous_send`, `ready_send`), so the table shows courier's overhead.
//!
//! Pairs: embedded, ranks 0 and 1 (`shm`). Under mpirun with P processes × T
//! threads, rank 0 and rank T — thread 0 of processes 0 and 1 (`mpi`) — and,
//! when T ≥ 2, ranks 0 and 1 as well (`shm`).
//!
//! Method (OSU-style): rank 0 and rank 1 ping-pong; warm-up round trips are not
//! timed; each sample times a batch of round trips; one-way latency = batch time
//! / (2 × batch). Reported: min, median and p99 over samples.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Instant;

use courier::{Comm, Result, BSEND_OVERHEAD};
use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::{raw_mpi, JobArgs};

const MODES: [&str; 10] = [
    "send",
    "bsend",
    "ssend",
    "rsend",
    "isend",
    "ibsend",
    "issend",
    "irsend",
    "sendrecv",
    "send-owned",
];
const TAG: i32 = 1;

#[derive(clap::Args)]
pub struct P2pArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Message sizes in bytes (suffixes K and M allowed), comma-separated
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "8,64,512,1K,4K,16K,64K,256K,1M")]
    sizes: Vec<usize>,
    /// Modes to run, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "send,bsend,ssend,rsend,isend,ibsend,issend,irsend,sendrecv,send-owned"
    )]
    modes: Vec<String>,
    /// Timed samples per (mode, size)
    #[arg(long, default_value_t = 40)]
    samples: usize,
    /// Short run for CI: few samples, small batches
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct Latency {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Serialize, Clone, Debug)]
pub(crate) struct Record {
    pub transport: &'static str,
    pub mode: String,
    pub test: &'static str,
    pub size: usize,
    pub latency_us: Latency,
    pub bandwidth_mb_s: f64,
    pub msg_rate: f64,
}

#[derive(Serialize)]
struct Report {
    ranks: usize,
    processes: usize,
    placement: String,
    cores: Vec<Option<usize>>,
    eager_threshold: usize,
    results: Vec<Record>,
    baselines: Vec<Record>,
}

fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("not a size: {s:?}"))
}

/// Round trips per timed sample, by size (about 20–200 µs per sample).
pub(crate) fn batch(size: usize, quick: bool) -> usize {
    let b: usize = match size {
        0..=4096 => 200,
        4097..=65536 => 40,
        _ => 4,
    };
    if quick {
        b.div_ceil(4)
    } else {
        b
    }
}

pub(crate) fn summarize(
    mut samples: Vec<f64>,
    size: usize,
    transport: &'static str,
    mode: &str,
) -> Record {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let latency_us = Latency {
        min: samples[0],
        p50: pick(0.5),
        p99: pick(0.99),
    };
    Record {
        transport,
        mode: mode.to_string(),
        test: "latency",
        size,
        latency_us,
        bandwidth_mb_s: size as f64 / latency_us.p50,
        msg_rate: 1e6 / latency_us.p50,
    }
}

pub fn run(args: &P2pArgs) -> std::result::Result<(), Box<dyn std::error::Error>> {
    for m in &args.modes {
        if !MODES.contains(&m.as_str()) {
            return Err(format!("unknown mode {m:?}; modes: {}", MODES.join(", ")).into());
        }
    }
    let rt = args.job.runtime();
    let cluster = matches!(
        courier::Launch::detect()?,
        courier::Launch::Parallel { processes, .. } if processes > 1
    );
    let rt = match args.job.ranks {
        Some(n) if n < 2 => return Err("bench p2p needs at least 2 ranks".into()),
        None if !cluster => rt.ranks(2),
        _ => rt,
    };
    let samples = if args.quick {
        args.samples.min(8)
    } else {
        args.samples.max(1)
    };
    let flag = CachePadded::new(AtomicU64::new(0));
    let reports = rt.run(|comm| {
        let threads = comm.size() / comm.processes();
        let mut pairs = Vec::new();
        if comm.processes() > 1 {
            pairs.push(("mpi", 0, threads));
        }
        if threads >= 2 {
            pairs.push(("shm", 0, 1));
        }
        let mut out = (Vec::new(), Vec::new());
        for (transport, a, b) in pairs {
            let me = comm.rank();
            let member = (me == a || me == b).then_some(0);
            let Some(pair) = comm.split(member, i32::from(me == b))? else {
                continue;
            };
            if transport == "shm" {
                out.1
                    .extend(flag_baseline(&pair, &flag, samples, args.quick)?);
            }
            for &size in &args.sizes {
                if pair.rank() == 0 && transport == "shm" {
                    out.1.push(memcpy_baseline(size, samples, args.quick));
                }
                if transport == "mpi" {
                    out.1
                        .extend(raw_mpi::baselines(&pair, size, samples, args.quick)?);
                }
                for mode in &args.modes {
                    let r = ping_pong(&pair, transport, mode, size, samples, args.quick)?;
                    out.0.extend(r);
                }
            }
        }
        comm.barrier()?;
        let cores = (0..comm.size())
            .map(|r| comm.core_of(r))
            .collect::<Result<Vec<_>>>()?;
        Ok((out, cores, comm.size(), comm.processes()))
    })?;
    let Some(((results, baselines), cores, ranks, processes)) = reports.into_iter().next() else {
        return Ok(());
    };
    if results.is_empty() {
        return Ok(()); // not process 0: it reports
    }
    println!("{ranks} ranks in {processes} process(es)");
    print_table(&results, &baselines);
    if let Some(path) = &args.json {
        let report = Report {
            ranks,
            processes,
            placement: rt.placement_policy().to_string(),
            cores,
            eager_threshold: rt.eager_threshold_bytes(),
            results,
            baselines,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(results: &[Record], baselines: &[Record]) {
    let mpi: Vec<&Record> = results.iter().filter(|r| r.transport == "mpi").collect();
    if !mpi.is_empty() {
        println!(
            "\ntransport mpi (rank 0 and thread 0 of process 1), against raw rsmpi in the same run"
        );
        println!(
            "{:<11} {:>8} {:>10} {:>10} {:>10} {:>11} {:>8} {:>10}",
            "mode", "size", "p50 us", "min us", "p99 us", "raw p50 us", "x raw", "+us"
        );
        for r in mpi {
            let raw = raw_mpi::counterpart(&r.mode);
            let base = baselines
                .iter()
                .find(|b| b.mode == raw && b.size == r.size)
                .map_or(f64::NAN, |b| b.latency_us.p50);
            let l = r.latency_us;
            println!(
                "{:<11} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>11.3} {:>8.2} {:>10.3}",
                r.mode,
                r.size,
                l.p50,
                l.min,
                l.p99,
                base,
                l.p50 / base,
                l.p50 - base
            );
        }
    }
    let results: Vec<Record> = results
        .iter()
        .filter(|r| r.transport == "shm")
        .cloned()
        .collect();
    if results.is_empty() {
        return;
    }
    println!("\ntransport shm (ranks 0 and 1, threads of one process)");
    let flag = baselines
        .iter()
        .find(|b| b.mode == "atomic-flag")
        .map(|b| b.latency_us.p50);
    let memcpy = |size| {
        baselines
            .iter()
            .find(|b| b.mode == "memcpy" && b.size == size)
    };
    if let Some(f) = flag {
        println!("baseline atomic-flag ping-pong (same cores): one-way p50 {f:.3} us");
    }
    println!(
        "{:<11} {:>8} {:>10} {:>10} {:>10} {:>11} {:>8} {:>9}",
        "mode", "size", "p50 us", "min us", "p99 us", "MB/s", "x flag", "x memcpy"
    );
    for r in results {
        let l = r.latency_us;
        let xm = memcpy(r.size).map_or(f64::NAN, |m| l.p50 / m.latency_us.p50);
        println!(
            "{:<11} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>11.0} {:>8.2} {:>9.2}",
            r.mode,
            r.size,
            l.p50,
            l.min,
            l.p99,
            r.bandwidth_mb_s,
            flag.map_or(f64::NAN, |f| l.p50 / f),
            xm
        );
    }
    for b in baselines.iter().filter(|b| b.mode == "memcpy") {
        println!(
            "baseline memcpy {:>8} B: {:.3} us ({:.0} MB/s)",
            b.size, b.latency_us.p50, b.bandwidth_mb_s
        );
    }
}

/// One-way latency of a handoff through one cache line between ranks 0 and 1.
fn flag_baseline(
    comm: &Comm,
    flag: &AtomicU64,
    samples: usize,
    quick: bool,
) -> Result<Vec<Record>> {
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
        spins += 1;
        if spins % 4096 == 0 {
            std::thread::yield_now(); // more ranks than cores: let the peer run
        } else {
            std::hint::spin_loop();
        }
    }
}

fn memcpy_baseline(size: usize, samples: usize, quick: bool) -> Record {
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

/// Times one (mode, size) ping-pong between ranks 0 and 1; `Some` on rank 0.
pub(crate) fn ping_pong(
    comm: &Comm,
    transport: &'static str,
    mode: &str,
    size: usize,
    samples: usize,
    quick: bool,
) -> Result<Option<Record>> {
    let me = comm.rank();
    let peer = 1 - me;
    let b = batch(size, quick);
    let sbuf = vec![me as u8; size];
    let mut rbuf = vec![0u8; size];
    let mut spare = if mode == "rsend" || mode == "irsend" {
        vec![0u8; size]
    } else {
        vec![]
    };
    let mut owned = Some(vec![0u8; size]);
    if mode == "bsend" || mode == "ibsend" {
        comm.attach_buffer(2 * (size + BSEND_OVERHEAD))?;
    }
    // Ready modes: rank 1 pre-posts its first receive before the barrier.
    let ready = mode == "rsend" || mode == "irsend";
    comm.barrier()?;
    let mut times = Vec::with_capacity(samples);
    let warmup = 2;
    for s in 0..samples + warmup {
        let t = Instant::now();
        if ready {
            ready_round_trips(comm, mode, b, &sbuf, (&mut rbuf, &mut spare))?;
        } else {
            for _ in 0..b {
                round_trip(comm, mode, peer, &sbuf, &mut rbuf, &mut owned)?;
            }
        }
        if s >= warmup {
            let per = if mode == "sendrecv" { b } else { 2 * b };
            times.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
        }
        comm.barrier()?;
    }
    if mode == "bsend" || mode == "ibsend" {
        comm.detach_buffer()?;
    }
    Ok((me == 0).then(|| summarize(times, size, transport, mode)))
}

/// One round trip (rank 0 pings, rank 1 pongs) in `mode`; for `sendrecv`, one
/// simultaneous exchange.
fn round_trip(
    comm: &Comm,
    mode: &str,
    peer: usize,
    sbuf: &[u8],
    rbuf: &mut [u8],
    owned: &mut Option<Vec<u8>>,
) -> Result<()> {
    let first = comm.rank() == 0;
    let send = |comm: &Comm| -> Result<()> {
        match mode {
            "send" => comm.send(sbuf, peer, TAG),
            "bsend" => comm.bsend(sbuf, peer, TAG),
            "ssend" => comm.ssend(sbuf, peer, TAG),
            "isend" => comm.scope(|s| s.isend(sbuf, peer, TAG)?.wait().map(drop)),
            "ibsend" => comm.scope(|s| s.ibsend(sbuf, peer, TAG)?.wait().map(drop)),
            "issend" => comm.scope(|s| s.issend(sbuf, peer, TAG)?.wait().map(drop)),
            _ => unreachable!("mode {mode}"),
        }
    };
    match mode {
        "sendrecv" => comm.sendrecv(sbuf, peer, TAG, rbuf, peer, TAG).map(drop),
        "send-owned" => {
            if first {
                comm.send_owned(owned.take().expect("buffer"), peer, TAG)?;
                *owned = Some(comm.recv_owned(peer, TAG)?.0);
            } else {
                let (v, _) = comm.recv_owned::<u8>(peer, TAG)?;
                comm.send_owned(v, peer, TAG)?;
            }
            Ok(())
        }
        _ if first => {
            send(comm)?;
            comm.recv(rbuf, peer, TAG).map(drop)
        }
        _ => {
            comm.recv(rbuf, peer, TAG)?;
            send(comm)
        }
    }
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
