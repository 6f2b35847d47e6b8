//! `courier bench p2p`: every send mode side by side — latency, bandwidth,
//! bidirectional bandwidth and message rate per size — next to baselines
//! measured in the same run, so every figure reads as a ratio.
//!
//! Baselines: over shared memory, an atomic-flag ping-pong between the same two
//! cores (the hardware limit of a handoff), the same through one line per
//! direction (the limit when each direction has memory of its own), an 8-byte
//! message through a claimed one-line slot per direction (the floor of a
//! fastbox-like slot),
//! `memcpy` of the same size (the single-copy limit) and a bare crossbeam
//! channel; MPI itself (raw rsmpi calls: `MPI_Send`, `MPI_Bsend`,
//! `MPI_Ssend`, `MPI_Rsend` ping-pongs and an `MPI_Isend` window) — under
//! mpirun between the pair's processes, embedded from a 2-process child job
//! (Open MPI's `mpirun`, or MPICH's `mpiexec` for an MPICH build) started
//! before the shared-memory runs.
//!
//! Pairs: embedded, ranks 0 and 1 (`shm`), on cores chosen by `--pair`. Under
//! mpirun with P processes × T threads, rank 0 and rank T — thread 0 of
//! processes 0 and 1 (`mpi`), or the first thread of process 1 on another core
//! than rank 0 when the processes share cores — and, when T ≥ 2, ranks 0 and
//! 1 as well (`shm`).
//!
//! Method (OSU / IMB): warm-up iterations are not timed; latency samples time a
//! batch of round trips (fewer above 8 KiB), one-way = half a round trip;
//! bandwidth sends windows of W messages, acknowledged per window. Reported:
//! min, median and p99 over samples.

mod bandwidth;
mod baselines;
mod buffer;
mod latency;
mod mpi_child;
mod output;
mod plot;

use std::io::IsTerminal;
use std::path::PathBuf;

use courier::{Comm, Placement, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::{json, raw_mpi, JobArgs};
#[cfg_attr(not(feature = "mpi"), allow(unused_imports))]
pub(crate) use bandwidth::windows;
use bandwidth::{bw_measures, BIBW_MODES, MR_MODES};
pub(crate) use baselines::Lines;
pub(crate) use buffer::Buffer;
pub(crate) use latency::ping_pong;

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
const TESTS: [&str; 4] = ["latency", "bw", "bibw", "mr"];
const TAG: i32 = 1;

#[derive(clap::Args)]
pub struct P2pArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Message sizes in bytes (suffixes K and M allowed), comma-separated
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "1,2,4,8,16,32,64,128,256,512,1K,2K,4K,8K,16K,32K,64K,128K,256K,512K,1M,2M,4M")]
    sizes: Vec<usize>,
    /// Modes to run, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "send,bsend,ssend,rsend,isend,ibsend,issend,irsend,sendrecv,send-owned"
    )]
    modes: Vec<String>,
    /// Tests to run: latency (ping-pong), bw (osu_bw), bibw (osu_bibw), mr (osu_mbw_mr)
    #[arg(long, value_delimiter = ',', default_value = "latency,bw,bibw,mr")]
    tests: Vec<String>,
    /// Messages in flight per bandwidth window
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Sender/receiver pairs of the message-rate test [default: half the cores, at least 1]
    #[arg(long)]
    pairs: Option<usize>,
    /// Embedded pair placement: `cores` (two cores sharing caches) or `packages`
    /// (as far apart as the topology allows: other package or NUMA node when there is one)
    #[arg(long, default_value = "cores")]
    pair: String,
    /// Timed samples per (mode, size) latency
    #[arg(long, default_value_t = 40)]
    samples: usize,
    /// Short run for CI: few samples, small batches
    #[arg(long)]
    quick: bool,
    /// Embedded: measure MPI's own latency and bandwidth from an `mpirun -n 2`
    /// child in the same run (`auto`: when the MPI's launcher is found), or not (`off`)
    #[arg(long, default_value = "auto")]
    mpi_baseline: String,
    /// Under mpirun: only the raw-MPI baselines (what the embedded run's child does)
    #[arg(long, hide = true)]
    raw_only: bool,
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the results as CSV to this file
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw latency and bandwidth vs size to this file (.svg or .png)
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(crate) struct Latency {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
}

/// One measurement: a (transport, mode, test, size) and its figures.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Record {
    pub transport: String,
    pub mode: String,
    pub test: String,
    pub size: usize,
    /// One-way time per message (µs): min, median, p99 over samples.
    pub latency_us: Latency,
    /// Bytes per µs (= MB/s) at the median; both directions for `bibw`, all
    /// pairs for `mr`.
    pub bandwidth_mb_s: f64,
    /// Messages per second at the median (same scope as the bandwidth).
    pub msg_rate: f64,
    /// Shared-memory latency only: the handoff baselines timed between this
    /// record's samples, on the same cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoffs_us: Option<Handoffs>,
    /// MPI latency only: the median one-way time (µs) of the raw rsmpi
    /// counterpart, timed between this record's samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_us: Option<f64>,
}

/// Median one-way times (µs) of the handoff baselines, timed in batches
/// interleaved with a latency record's samples.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(crate) struct Handoffs {
    /// The atomic-flag ping-pong.
    pub flag: f64,
    /// The same ping-pong through one line per direction.
    pub lines: f64,
    /// 8 bytes through a claimed one-line slot per direction.
    pub slot: f64,
}

#[derive(Serialize, Deserialize)]
struct Report {
    ranks: usize,
    processes: usize,
    placement: String,
    cores: Vec<Option<usize>>,
    eager_threshold: usize,
    window: usize,
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

/// Round trips per timed latency sample, by size (about 20–200 µs per sample).
pub(crate) fn batch(size: usize, quick: bool) -> usize {
    let b: usize = match size {
        0..=8192 => 200,
        8193..=65536 => 40,
        _ => 4,
    };
    if quick {
        b.div_ceil(4)
    } else {
        b
    }
}

/// A latency record from per-message times (µs).
pub(crate) fn summarize(samples: Vec<f64>, size: usize, transport: &str, mode: &str) -> Record {
    summarize_as(samples, size, transport, mode, "latency", 1)
}

/// A record of `test` from per-message times (µs); `directions` = 2 counts the
/// bytes of both directions (bibw).
pub(crate) fn summarize_as(
    mut samples: Vec<f64>,
    size: usize,
    transport: &str,
    mode: &str,
    test: &str,
    directions: usize,
) -> Record {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let latency_us = Latency {
        min: samples[0],
        p50: pick(0.5),
        p99: pick(0.99),
    };
    Record {
        transport: transport.into(),
        mode: mode.into(),
        test: test.into(),
        size,
        latency_us,
        bandwidth_mb_s: (directions * size) as f64 / latency_us.p50,
        msg_rate: directions as f64 * 1e6 / latency_us.p50,
        handoffs_us: None,
        raw_us: None,
    }
}

/// The median of some times.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ready modes: the receiver must have posted first.
pub(crate) fn is_ready(mode: &str) -> bool {
    mode == "rsend" || mode == "irsend"
}

/// Buffered modes: the sender needs an attached buffer.
pub(crate) fn is_buffered(mode: &str) -> bool {
    mode == "bsend" || mode == "ibsend"
}

/// Modes of `test` on `transport` among the requested ones (all of them
/// validated). `send-owned` moves a `Vec` between threads of one process: over
/// MPI it would only be a copying `send`, so it is measured on `shm` only.
fn modes_of<'a>(test: &str, transport: &str, modes: &'a [String]) -> Vec<&'a str> {
    let measures = |m: &str| match test {
        "bw" => bw_measures(m),
        "bibw" => BIBW_MODES.contains(&m),
        "mr" => MR_MODES.contains(&m),
        _ => true,
    };
    modes
        .iter()
        .map(String::as_str)
        .filter(|m| measures(m) && !(transport == "mpi" && *m == "send-owned"))
        .collect()
}

pub fn run(args: &P2pArgs) -> std::result::Result<(), Box<dyn std::error::Error>> {
    for m in &args.modes {
        if !MODES.contains(&m.as_str()) {
            return Err(format!("unknown mode {m:?}; modes: {}", MODES.join(", ")).into());
        }
    }
    for t in &args.tests {
        if !TESTS.contains(&t.as_str()) {
            return Err(format!("unknown test {t:?}; tests: {}", TESTS.join(", ")).into());
        }
    }
    if args.window == 0 || args.sizes.is_empty() {
        return Err("--window and --sizes need at least one".into());
    }
    let placement = match args.pair.as_str() {
        "cores" => args.job.placement,
        "packages" => Placement::Scatter,
        p => return Err(format!("unknown pair placement {p:?} (cores or packages)").into()),
    };
    let launch = courier::Launch::detect()?;
    let cluster = matches!(launch, courier::Launch::Parallel { processes, .. } if processes > 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pairs = args.pairs.unwrap_or((cores / 2).max(1));
    if pairs == 0 {
        return Err("--pairs needs at least 1".into());
    }
    let wants = |t: &str| args.tests.iter().any(|x| x == t);
    let rt = args.job.runtime().placement(placement);
    let rt = match args.job.ranks {
        Some(n) if n < 2 => return Err("bench p2p needs at least 2 ranks".into()),
        None if !cluster => rt.ranks(if wants("mr") { 2 * pairs } else { 2 }),
        _ => rt,
    };
    let samples = if args.quick {
        args.samples.min(8)
    } else {
        args.samples.max(1)
    };
    // Open MPI's figures first, from a child job, while this process is idle.
    let mut mpi_baselines = Vec::new();
    if !cluster && args.mpi_baseline == "auto" && !args.raw_only {
        match mpi_child::measure(args, samples) {
            Ok(b) => mpi_baselines = b,
            Err(e) => eprintln!("courier: note: no Open MPI baseline in this run: {e}"),
        }
    }
    let first_process = match launch {
        courier::Launch::Parallel { index, .. } => index == 0,
        courier::Launch::Embedded => true,
    };
    let progress = if first_process && std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let lines = baselines::Lines::default();
    let channels = baselines::Channels::new();
    let reports = rt.run(|comm| {
        let threads = comm.size() / comm.processes();
        let cores = gather_cores(comm)?;
        let mut pair_list = Vec::new();
        if comm.processes() > 1 {
            pair_list.push(("mpi", 0, mpi_partner(comm, threads, &cores)?));
        }
        if threads >= 2 && !args.raw_only {
            pair_list.push(("shm", 0, 1));
        }
        let mr_transport = if comm.size() >= 2 && comm.is_local(pairs.min(comm.size() / 2))? {
            "shm"
        } else {
            "mpi"
        };
        let per_size: usize = ["latency", "bw", "bibw"]
            .iter()
            .filter(|t| wants(t))
            .flat_map(|t| {
                pair_list
                    .iter()
                    .map(|p| modes_of(t, p.0, &args.modes).len())
            })
            .sum();
        let mr_units = if wants("mr") {
            modes_of("mr", mr_transport, &args.modes).len() * args.sizes.len()
        } else {
            0
        };
        if comm.rank() == 0 {
            progress.set_length((per_size * args.sizes.len() + mr_units) as u64);
        }
        let mut out = (Vec::new(), Vec::new());
        for (transport, a, b) in pair_list {
            let me = comm.rank();
            let member = (me == a || me == b).then_some(0);
            let Some(pair) = comm.split(member, i32::from(me == b))? else {
                continue;
            };
            measure_pair(
                &pair,
                transport,
                args,
                samples,
                (&lines, &channels),
                &progress,
                &mut out,
            )?;
        }
        if wants("mr") && !args.raw_only && comm.size() >= 2 {
            let (p, transport) = (pairs.min(comm.size() / 2), mr_transport);
            for &size in &args.sizes {
                for mode in modes_of("mr", transport, &args.modes) {
                    progress.set_message(format!("{transport} mr {mode} {size} B, {p} pairs"));
                    let r = bandwidth::mr(comm, transport, mode, size, args.window, p, args.quick)?;
                    out.0.extend(r);
                    if comm.rank() == 0 {
                        progress.inc(1);
                    }
                }
            }
        }
        comm.barrier()?;
        Ok((out, cores, comm.size(), comm.processes()))
    })?;
    progress.finish_and_clear();
    let Some(((results, mut baselines), cores, ranks, processes)) = reports.into_iter().next()
    else {
        return Ok(());
    };
    if results.is_empty() && baselines.is_empty() {
        return Ok(()); // not process 0: it reports
    }
    baselines.extend(mpi_baselines);
    let report = Report {
        ranks,
        processes,
        placement: rt.placement_policy().to_string(),
        cores,
        eager_threshold: rt.eager_threshold_bytes(),
        window: args.window,
        results,
        baselines,
    };
    if !args.raw_only {
        let pu = |r: usize| match report.cores.get(r) {
            Some(Some(c)) => c.to_string(),
            _ => "unpinned".into(),
        };
        println!(
            "{ranks} ranks in {processes} process(es); pair on PUs {} and {}",
            pu(0),
            pu(1)
        );
        output::print_tables(&report.results, &report.baselines);
    }
    if let Some(path) = &args.json {
        json::write(path, &report)?;
        if !args.raw_only && !json::to_stdout(Some(path)) {
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, output::csv(&report.results, &report.baselines))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &report.results, &report.baselines)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The rank that rank 0 measures the MPI transport with: thread 0 of process
/// 1, unless that rank is pinned to rank 0's core (processes not bound apart,
/// more ranks than cores), then the first rank of process 1 on another core.
/// Two ranks that poll MPI on one core take turns by the scheduler's tick: on
/// a 2-core host with 2 threads per process, 4 ms per message, for raw MPI
/// as for courier.
/// `cores` as [`gather_cores`] gives them.
fn mpi_partner(comm: &Comm, threads: usize, cores: &[Option<usize>]) -> Result<usize> {
    let mut partner = [threads as u64];
    if comm.rank() == 0 {
        let apart = (threads..2 * threads).find(|&r| cores[0].is_none() || cores[r] != cores[0]);
        partner[0] = apart.unwrap_or(threads) as u64;
    }
    comm.broadcast(&mut partner, 0)?;
    Ok(partner[0] as usize)
}

/// Each rank's own core (`None`: unpinned), gathered on rank 0 (empty
/// elsewhere): another process's ranks are not known locally.
fn gather_cores(comm: &Comm) -> Result<Vec<Option<usize>>> {
    // Gathered as core + 1, 0 for unpinned.
    let mine = comm.core_of(comm.rank())?.map_or(0, |c| c as u64 + 1);
    let mut all = vec![0u64; if comm.rank() == 0 { comm.size() } else { 0 }];
    comm.gather(&[mine], &mut all, 0)?;
    Ok(all
        .iter()
        .map(|&c| c.checked_sub(1).map(|c| c as usize))
        .collect())
}

/// Every requested test, mode and size on one pair, with its baselines.
fn measure_pair(
    pair: &Comm,
    transport: &'static str,
    args: &P2pArgs,
    samples: usize,
    (lines, channels): (&baselines::Lines, &baselines::Channels),
    progress: &ProgressBar,
    (results, base): &mut (Vec<Record>, Vec<Record>),
) -> Result<()> {
    let quick = args.quick;
    let wants = |t: &str| args.tests.iter().any(|x| x == t);
    if transport == "shm" {
        base.extend(baselines::handoff_baselines(pair, lines, samples, quick)?);
    }
    // The lines latency rows time the handoffs through: between processes of
    // one node, in a shared window.
    let shared = (transport == "mpi" && !args.raw_only)
        .then(raw_mpi::SharedLines::new)
        .flatten();
    let handoff_lines = match &shared {
        Some(s) => Some(s.lines()),
        None => (transport == "shm").then_some(lines),
    };
    for &size in &args.sizes {
        if transport == "shm" {
            if pair.rank() == 0 {
                base.push(baselines::memcpy_baseline(size, samples, quick));
            }
            base.extend(baselines::channel_baseline(
                pair, channels, size, samples, quick,
            )?);
        } else {
            base.extend(raw_mpi::baselines(pair, size, samples, quick)?);
            if wants("bw") {
                base.extend(raw_mpi::bandwidth(pair, size, args.window, quick)?);
            }
            if wants("bibw") {
                base.extend(raw_mpi::bidirectional(pair, size, args.window, quick)?);
            }
        }
        if args.raw_only {
            continue;
        }
        for test in ["latency", "bw", "bibw"].into_iter().filter(|t| wants(t)) {
            for mode in modes_of(test, transport, &args.modes) {
                if pair.rank() == 0 {
                    progress.set_message(format!("{transport} {test} {mode} {size} B"));
                }
                let r = match test {
                    "latency" => {
                        ping_pong(pair, transport, mode, size, samples, quick, handoff_lines)?
                    }
                    "bw" => bandwidth::bw(pair, transport, mode, size, args.window, quick)?,
                    _ => bandwidth::bibw(pair, transport, mode, size, args.window, quick)?,
                };
                results.extend(r);
                if pair.rank() == 0 {
                    progress.inc(1);
                }
            }
        }
    }
    Ok(())
}
