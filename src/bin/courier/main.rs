//! The `courier` command: runtime info, benchmarks and the kernels.

mod bench_p2p;
mod figure;
mod gossip;
mod info;
mod json;
/// The kernels crate, compiled into the binary from its source: it depends on
/// the courier library, which is this binary's own package, so the binary
/// cannot depend on it as a crate (Cargo forbids the cycle). Same code, same
/// `#![forbid(unsafe_code)]`; its paths are all relative, so it builds either way.
#[path = "../../../kernels/src/lib.rs"]
#[allow(dead_code)]
mod kernels;
mod multicast;
#[cfg(feature = "mpi")]
mod raw_mpi;
#[cfg(not(feature = "mpi"))]
#[path = "raw_mpi_disabled.rs"]
mod raw_mpi;
mod topo;

use clap::{Parser, Subcommand};
use courier::{Placement, Runtime};

#[derive(Parser)]
#[command(
    name = "courier",
    version,
    about = "MPI-style messaging runtime: info, topology, benchmarks and kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command shares: how the job is started.
#[derive(clap::Args, Clone, Debug)]
struct JobArgs {
    /// Ranks in the job [default: COURIER_RANKS, else SLURM_CPUS_PER_TASK in a Slurm
    /// job, else the cores this process may use; under mpirun/srun: processes × threads]
    #[arg(long, short = 'n')]
    ranks: Option<usize>,
    /// Rank-threads per process under mpirun/srun [default: COURIER_THREADS, else
    /// SLURM_CPUS_PER_TASK in a Slurm job, else the cores in this process's cpuset]
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Pinning policy: compact, scatter or none
    #[arg(long, default_value = "compact")]
    placement: Placement,
    /// Largest standard send copied eagerly (bytes)
    #[arg(long, default_value_t = courier::DEFAULT_EAGER_THRESHOLD)]
    eager_threshold: usize,
    /// Flow-control credit per pair of ranks (bytes)
    #[arg(long, default_value_t = courier::DEFAULT_CREDIT)]
    credit: usize,
}

impl JobArgs {
    fn runtime(&self) -> Runtime {
        let rt = Runtime::new()
            .placement(self.placement)
            .eager_threshold(self.eager_threshold)
            .credit(self.credit);
        let rt = match self.threads {
            Some(t) => rt.threads(t),
            None => rt,
        };
        match self.ranks {
            Some(n) => rt.ranks(n),
            None => rt,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Transports, ranks, threads and where each rank is pinned
    Info(info::InfoArgs),
    /// The machine's topology, the placement plan, and each rank's binding read back
    Topo(topo::TopoArgs),
    /// Run a gossip kernel (anti-entropy, rumor, flooding, push-sum, kv) against theory
    Gossip(gossip::GossipArgs),
    /// Run an ordered-multicast kernel (total, causal, fifo, none), verified
    Multicast(multicast::MulticastArgs),
    /// Benchmarks
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Compare send modes: ping-pong latency per mode and size, against baselines
    P2p(bench_p2p::P2pArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Topo(args) => topo::run(&args),
        Command::Gossip(args) => gossip::run(&args),
        Command::Multicast(args) => multicast::run(&args),
        Command::Bench {
            which: Bench::P2p(args),
        } => bench_p2p::run(&args),
    };
    if let Err(e) = result {
        eprintln!("courier: {e}");
        std::process::exit(1);
    }
}
