//! `courier gossip`: run a gossip kernel, embedded or under mpirun/srun, and
//! report against theory — the anti-entropy recurrences, the rumor-mongering
//! residue — with `--trials` for means and standard deviations. Push-pull runs
//! also time the single-threaded simulator on the same problem, the yardstick
//! for the contact rate.

mod plot;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

use crate::kernels::gossip::{
    self, simulate, theory, Aggregate, Config, Model, Overlay, Protocol, Report, Stop,
};
use crate::{json, JobArgs};

#[derive(clap::Args)]
pub struct GossipArgs {
    #[command(flatten)]
    job: JobArgs,
    /// push, pull, push-pull, rumor, flood, push-sum or kv
    #[arg(long)]
    protocol: Protocol,
    /// Virtual nodes, spread over the ranks
    #[arg(long, default_value_t = 10_000)]
    nodes: u64,
    /// Rumor: stop with this probability after a contact (coin) [default: 0.5]
    #[arg(long, conflicts_with = "k")]
    p_stop: Option<f64>,
    /// Rumor: stop after K contacts (counter)
    #[arg(long)]
    k: Option<u32>,
    /// Rumor: count every contact towards stopping, not only those with a node
    /// that already knew (blind instead of feedback)
    #[arg(long)]
    blind: bool,
    /// Rumor contact model: async (one contact at a time, the ODE's model) or
    /// sync (rounds)
    #[arg(long, default_value = "sync")]
    model: Model,
    /// Flooding: forward on each edge with this probability
    #[arg(long, default_value_t = 1.0)]
    p_flood: f64,
    /// Flooding overlay: regular:D (random D-regular, D even), ring or tree
    #[arg(long, default_value = "regular:8")]
    overlay: Overlay,
    /// Push-sum: average, sum or count
    #[arg(long, default_value = "average")]
    aggregate: Aggregate,
    /// Push-sum: stop once every node's relative error is at most this
    #[arg(long, default_value_t = 1e-6)]
    tolerance: f64,
    /// Key-value store: keys written (the odd ones are then deleted)
    #[arg(long, default_value_t = 16)]
    keys: u32,
    /// Key-value store: death-certificate lifetime in rounds [default: 4·⌈log2 N⌉ + 10]
    #[arg(long)]
    lifetime: Option<u32>,
    /// Probability that a message is lost
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Fraction of nodes crashed from the start
    #[arg(long, default_value_t = 0.0)]
    crash: f64,
    /// Seed; trial t uses seed + t
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Independent runs (seeds seed, seed + 1, …): means and standard deviations
    #[arg(long, default_value_t = 1)]
    trials: u64,
    /// Give up after this many rounds
    #[arg(long, default_value_t = 1000)]
    max_rounds: u32,
    /// Write the runs as JSON to this file (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the per-round curves beside theory to this file (.svg or .png)
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl GossipArgs {
    fn config(&self, seed: u64) -> Config {
        let mut c = Config::new(self.protocol, self.nodes).seed(seed);
        c.model = self.model;
        c.stop = match (self.k, self.p_stop) {
            (Some(k), _) => Stop::Counter {
                k,
                feedback: !self.blind,
            },
            (None, p) => Stop::Coin {
                p: p.unwrap_or(0.5),
                feedback: !self.blind,
            },
        };
        c.p_flood = self.p_flood;
        c.overlay = self.overlay;
        c.aggregate = self.aggregate;
        c.tolerance = self.tolerance;
        c.keys = self.keys;
        c.lifetime = self.lifetime;
        c.loss = self.loss;
        c.crash = self.crash;
        c.max_rounds = self.max_rounds;
        c
    }
}

/// Mean and sample standard deviation of one figure over the trials.
#[derive(Serialize, Clone, Copy)]
struct Spread {
    mean: f64,
    std: f64,
}

fn spread(xs: impl Iterator<Item = f64>) -> Spread {
    let xs: Vec<f64> = xs.collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Spread {
        mean,
        std: var.sqrt(),
    }
}

/// The analytic curve of the fraction ignorant per round, when there is one.
pub(crate) fn theory_curve(cfg: &Config, rounds: usize) -> Option<(String, Vec<f64>)> {
    let n = cfg.nodes;
    let p0 = 1.0 - 1.0 / n as f64;
    let faultless = cfg.loss == 0.0 && cfg.crash == 0.0;
    match cfg.protocol {
        Protocol::Pull if faultless => Some(("p' = p²".into(), theory::pull(p0, rounds))),
        Protocol::Push if faultless => Some((
            "p' = p(1-1/(N-1))^((N-1)(1-p))".into(),
            theory::push(n, p0, rounds),
        )),
        Protocol::PushPull if faultless => Some((
            "p' = p²(1-1/(N-1))^((N-1)(1-p))".into(),
            theory::push_pull(n, p0, rounds),
        )),
        Protocol::Rumor => match (cfg.model, cfg.stop) {
            (Model::Async, Stop::Coin { p, feedback: true }) if faultless => {
                Some(("epidemic ODE".into(), theory::rumor_ode(n, p, rounds)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The residue theory predicts, when there is a formula for it.
fn theory_residue(cfg: &Config) -> Option<f64> {
    match (cfg.protocol, cfg.stop) {
        (Protocol::Rumor, Stop::Coin { p, feedback: true })
            if cfg.loss == 0.0 && cfg.crash == 0.0 =>
        {
            Some(theory::rumor_residue(p))
        }
        _ => None,
    }
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: &GossipArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.trials == 0 {
        return Err("--trials needs at least 1".into());
    }
    args.config(args.seed).validate()?;
    let rt = args.job.runtime();
    let mut runs: Vec<Report> = Vec::new();
    let mut first_process = true;
    for t in 0..args.trials {
        let cfg = args.config(args.seed + t);
        let reports = rt.run(|comm| {
            let report = gossip::run(comm, &cfg)?;
            Ok((comm.rank() == 0).then_some(report))
        })?;
        match reports.into_iter().flatten().next() {
            Some(r) => runs.push(r),
            None => first_process = false,
        }
    }
    if !first_process {
        return Ok(());
    }
    let cfg = args.config(args.seed);
    let rss = peak_rss();
    // The single-threaded limit on the same problem, in the same run.
    let baseline = (args.protocol == Protocol::PushPull && args.loss == 0.0 && args.crash == 0.0)
        .then(|| simulate::push_pull(args.nodes, args.seed));
    let text = table(args, &cfg, &runs, baseline.as_ref(), rss);
    // With `--json -` the JSON owns stdout.
    if json::to_stdout(args.json.as_deref()) {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    let out = to_json(args, &cfg, &runs, baseline.as_ref(), rss);
    if let Some(path) = &args.json {
        json::write(path, &out)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &cfg, &runs)?;
    }
    Ok(())
}

fn table(
    args: &GossipArgs,
    cfg: &Config,
    runs: &[Report],
    baseline: Option<&simulate::Simulation>,
    rss: Option<u64>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let r0 = &runs[0];
    let _ = writeln!(
            out,
        "gossip {} ({:?} model), {} nodes ({} live) on {} ranks, loss {}, crash {}, {} trial(s) from seed {}",
        args.protocol,
        cfg.model,
        cfg.nodes,
        r0.live_nodes,
        r0.ranks,
        cfg.loss,
        cfg.crash,
        runs.len(),
        args.seed
    );
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Report) -> f64, digits: usize| {
        let s = spread(runs.iter().map(f));
        let _ = if runs.len() > 1 {
            writeln!(
                out,
                "  {name:<22} {:>14.digits$} ± {:.digits$}",
                s.mean, s.std
            )
        } else {
            writeln!(out, "  {name:<22} {:>14.digits$}", s.mean)
        };
    };
    row(&mut out, "rounds", &|r| f64::from(r.rounds), 2);
    row(&mut out, "residue", &|r| r.residue, 6);
    if let Some(s) = theory_residue(cfg) {
        let _ = writeln!(
            out,
            "  {:<22} {s:>14.6}  (s = e^-(1/p+1)(1-s))",
            "residue, theory"
        );
    }
    row(&mut out, "messages per node", &|r| r.messages_per_node, 3);
    row(&mut out, "t_avg (rounds)", &|r| r.t_avg, 3);
    row(&mut out, "t_last (rounds)", &|r| f64::from(r.t_last), 2);
    row(&mut out, "wall (s)", &|r| r.wall_s, 4);
    row(&mut out, "contacts per s", &|r| r.contacts_per_s, 0);
    if let Some(b) = r0.bytes_per_node {
        let _ = writeln!(
            out,
            "  {:<22} {b:>14.2}  (kernel state and message buffers, all ranks)",
            "bytes per node"
        );
    }
    if let Some(rss) = rss {
        let _ = writeln!(
            out,
            "  {:<22} {:>14.2}  (whole process, runtime included)",
            "peak RSS per node",
            rss as f64 / cfg.nodes as f64
        );
    }
    if let Some(ps) = &r0.push_sum {
        let _ = writeln!(
            out,
            "  push-sum {:?}: truth {}, final max relative error {:.3e}, mass (Σs, Σw) {:?} -> {:?}",
            ps.aggregate,
            ps.truth,
            ps.error_per_round.last().copied().unwrap_or(f64::NAN),
            ps.mass_start,
            ps.mass_end
        );
    }
    if let Some(kv) = &r0.kv {
        let _ = writeln!(
            out,
            "  kv: {} keys, {} deleted at round {}, certificate lifetime {}, resurrections {}, deleted values left {}, certificates left {} (peak {}), live keys complete: {}",
            kv.keys,
            kv.deleted,
            kv.delete_round,
            kv.lifetime,
            kv.resurrections,
            kv.deleted_values_left,
            kv.certificates_left,
            kv.certificates_peak,
            kv.live_keys_complete
        );
    }
    if let Some(b) = baseline {
        let rate = b.contacts as f64 / b.wall_s;
        let same = b.ignorant
            == r0
                .ignorant_per_round
                .iter()
                .map(|f| (f * r0.live_nodes as f64).round() as u64)
                .collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "  single-threaded simulator, same run: {rate:.0} contacts/s ({} rounds{}); kernel/simulator = {:.2}",
            b.rounds,
            if same { ", identical curve" } else { ", DIFFERENT curve" },
            r0.contacts_per_s / rate
        );
    }
    out
}

fn to_json(
    args: &GossipArgs,
    cfg: &Config,
    runs: &[Report],
    baseline: Option<&simulate::Simulation>,
    rss: Option<u64>,
) -> Value {
    let mut out = if runs.len() == 1 {
        serde_json::to_value(&runs[0]).unwrap_or(Value::Null)
    } else {
        let s = |f: &dyn Fn(&Report) -> f64| spread(runs.iter().map(f));
        json!({
            "protocol": cfg.protocol,
            "model": cfg.model,
            "nodes": cfg.nodes,
            "ranks": runs[0].ranks,
            "seed": args.seed,
            "trials": runs.len(),
            "mean_std": {
                "rounds": s(&|r| f64::from(r.rounds)),
                "residue": s(&|r| r.residue),
                "messages_per_node": s(&|r| r.messages_per_node),
                "t_avg": s(&|r| r.t_avg),
                "t_last": s(&|r| f64::from(r.t_last)),
                "wall_s": s(&|r| r.wall_s),
                "contacts_per_s": s(&|r| r.contacts_per_s),
            },
            "runs": runs,
        })
    };
    if let Value::Object(map) = &mut out {
        if let Some(s) = theory_residue(cfg) {
            map.insert("theory_residue".into(), json!(s));
        }
        let longest = runs
            .iter()
            .map(|r| r.ignorant_per_round.len())
            .max()
            .unwrap_or(1);
        if let Some((name, curve)) = theory_curve(cfg, longest - 1) {
            map.insert(
                "theory".into(),
                json!({"recurrence": name, "ignorant_per_round": curve}),
            );
        }
        if let Some(rss) = rss {
            map.insert("peak_rss_bytes".into(), json!(rss));
        }
        if let Some(b) = baseline {
            map.insert(
                "baseline".into(),
                json!({
                    "what": "single-threaded push-pull simulator, same draws",
                    "rounds": b.rounds,
                    "wall_s": b.wall_s,
                    "contacts_per_s": b.contacts as f64 / b.wall_s,
                }),
            );
        }
    }
    out
}
