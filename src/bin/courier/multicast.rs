//! `courier multicast`: run an ordered-multicast kernel, verify the order, and
//! report throughput, latency and unicasts per multicast against theory. A
//! failed verification prints the first divergence and exits non-zero.

use std::path::PathBuf;

use crate::kernels::multicast::{self, Algorithm, Config, Order, Report};
use crate::{json, JobArgs};

#[derive(clap::Args)]
pub struct MulticastArgs {
    #[command(flatten)]
    job: JobArgs,
    /// total, causal, fifo or none
    #[arg(long, required_unless_present = "compare")]
    order: Option<Order>,
    /// Run every algorithm and order (and Lamport with batched ACKs) in one job and
    /// compare each with unordered multicast measured in the same run
    #[arg(long, conflicts_with_all = ["order", "algorithm", "sabotage", "batch_acks"])]
    compare: bool,
    /// Total order: lamport, sequencer or ring [default: lamport]
    #[arg(long)]
    algorithm: Option<Algorithm>,
    /// Messages each rank multicasts
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Payload bytes per message (at least 8)
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Multicasts per second per rank [default: as fast as possible]
    #[arg(long)]
    rate: Option<f64>,
    /// Hold each unicast back a random 0..=D µs (each pair stays FIFO): reorders
    /// messages between different pairs, as a network would
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// Lamport: batch acknowledgements (one per polling pass, piggybacked on multicasts)
    #[arg(long)]
    batch_acks: bool,
    /// Seed of the random delays
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Deliver on receipt whatever the order (lamport, causal): shows the verifier
    /// catching a broken order
    #[arg(long, hide = true)]
    sabotage: bool,
    /// Write the report as JSON to this file (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
}

impl MulticastArgs {
    fn config(&self, order: Order, algorithm: Algorithm, batch_acks: bool) -> Config {
        Config {
            order,
            algorithm,
            messages: self.messages,
            size: self.size,
            rate: self.rate.unwrap_or(0.0),
            delay_us: self.delay_us,
            batch_acks,
            seed: self.seed,
            sabotage: self.sabotage,
        }
    }
}

/// `--compare`: unordered first, then every other kind, in one job.
fn compare(args: &MulticastArgs) -> Result<(), Box<dyn std::error::Error>> {
    let kinds = [
        (Order::None, Algorithm::Lamport, false),
        (Order::Fifo, Algorithm::Lamport, false),
        (Order::Causal, Algorithm::Lamport, false),
        (Order::Total, Algorithm::Lamport, false),
        (Order::Total, Algorithm::Lamport, true),
        (Order::Total, Algorithm::Sequencer, false),
        (Order::Total, Algorithm::Ring, false),
    ];
    let configs: Vec<Config> = kinds
        .iter()
        .map(|&(o, a, b)| args.config(o, a, b))
        .collect();
    for c in &configs {
        c.validate()?;
    }
    let reports = args.job.runtime().run(|comm| {
        let rs = configs
            .iter()
            .map(|c| multicast::run(comm, c))
            .collect::<courier::Result<Vec<_>>>()?;
        Ok((comm.rank() == 0).then_some(rs))
    })?;
    let Some(rs) = reports.into_iter().flatten().next() else {
        return Ok(());
    };
    let base = rs[0].throughput_msgs_s;
    println!(
        "multicast compare: {} ranks x {} messages of {} B; ratios to unordered multicast in the same run",
        rs[0].ranks, rs[0].messages, rs[0].size
    );
    println!(
        "{:<22} {:>8} {:>14} {:>9} {:>10} {:>10} {:>9} {:>8}",
        "order/algorithm",
        "verified",
        "deliveries/s",
        "x none",
        "p50 us",
        "p99 us",
        "unicasts",
        "theory"
    );
    for r in &rs {
        println!(
            "{:<22} {:>8} {:>14.0} {:>9.2} {:>10.1} {:>10.1} {:>9.2} {:>8.2}",
            name(r),
            if r.verified { "yes" } else { "NO" },
            r.throughput_msgs_s,
            r.throughput_msgs_s / base,
            r.latency_us.p50,
            r.latency_us.p99,
            r.messages_per_multicast,
            r.theory_messages_per_multicast
        );
    }
    if let Some(path) = &args.json {
        json::write(path, &serde_json::json!({ "runs": rs }))?;
    }
    match rs.iter().find(|r| !r.verified) {
        Some(r) => Err(format!("{} NOT verified: {:?}", name(r), r.divergence).into()),
        None => Ok(()),
    }
}

fn name(r: &Report) -> String {
    match r.order {
        Order::Total if r.batch_acks => format!("total/{}+batch", r.algorithm),
        Order::Total => format!("total/{}", r.algorithm),
        o => format!("{o:?}").to_lowercase(),
    }
}

pub fn run(args: &MulticastArgs) -> Result<(), Box<dyn std::error::Error>> {
    let Some(order) = args.order else {
        return compare(args);
    };
    if order != Order::Total && args.algorithm.is_some() {
        return Err("--algorithm applies to --order total only".into());
    }
    let cfg = args.config(
        order,
        args.algorithm.unwrap_or(Algorithm::Lamport),
        args.batch_acks,
    );
    cfg.validate()?;
    let reports = args.job.runtime().run(|comm| {
        let r = multicast::run(comm, &cfg)?;
        Ok((comm.rank() == 0).then_some(r))
    })?;
    let Some(r) = reports.into_iter().flatten().next() else {
        return Ok(());
    };
    let text = table(&r);
    if json::to_stdout(args.json.as_deref()) {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(path) = &args.json {
        json::write(path, &r)?;
    }
    match &r.divergence {
        Some(d) if !r.verified => Err(format!("order NOT verified: {d}").into()),
        _ => Ok(()),
    }
}

fn table(r: &Report) -> String {
    let mut s = format!(
        "multicast, {}: {} ranks x {} messages of {} B\n",
        name(r),
        r.ranks,
        r.messages,
        r.size,
    );
    s += &format!(
        "  verified               {}\n  delivered per rank     {}\n  throughput             {:.0} deliveries/s per rank\n  latency p50 / p99      {:.1} / {:.1} us\n  unicasts per multicast {:.2} (theory {:.2}{})\n  wall                   {:.3} s\n",
        if r.verified { "yes" } else { "NO" },
        r.delivered,
        r.throughput_msgs_s,
        r.latency_us.p50,
        r.latency_us.p99,
        r.messages_per_multicast,
        r.theory_messages_per_multicast,
        r.token_passes_per_multicast
            .map(|t| format!(" + {t:.2} token passes"))
            .unwrap_or_default(),
        r.wall_s
    );
    s
}
