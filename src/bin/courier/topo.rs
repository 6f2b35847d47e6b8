//! `courier topo`: the machine's topology (restricted to this process's
//! cpuset), the placement plan, and where each rank really ended up. Under
//! mpirun, one block per process, printed by process 0.

use std::path::PathBuf;

use courier::topology::{Binding, Machine};
use courier::Comm;
use serde::{Deserialize, Serialize};

use crate::{json, JobArgs};

#[derive(clap::Args)]
pub struct TopoArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Exit non-zero if a rank's binding, read back from the OS, differs from
    /// the plan, or two ranks share a PU while another PU is idle
    #[arg(long)]
    check: bool,
    /// Plan on a synthetic machine instead of running (hwloc syntax, e.g.
    /// "package:2 core:4 pu:2"); ranks default to its cores
    #[arg(long, value_name = "DESCRIPTION")]
    synthetic: Option<String>,
    /// Also measure an 8-byte `send` ping-pong between two ranks pinned
    /// (compact) and unpinned, alternating, in this one run
    #[arg(long)]
    latency: bool,
    /// Also write the report as JSON to this file (`-` for standard output)
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Report {
    placement: String,
    processes: usize,
    ranks: usize,
    /// Every binding matches the plan and no PU is doubled up needlessly.
    verified: bool,
    blocks: Vec<Block>,
    /// With `--latency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<PinnedVsUnpinned>,
}

/// One-way 8 B `send` latency (p50 over alternating rounds) pinned and unpinned.
#[derive(Serialize, Deserialize)]
struct PinnedVsUnpinned {
    pinned_p50_us: f64,
    unpinned_p50_us: f64,
    /// unpinned / pinned: above 1, pinning helps.
    ratio: f64,
    rounds: usize,
}

/// One process: its machine and its ranks.
#[derive(Serialize, Deserialize)]
struct Block {
    process: usize,
    host: String,
    machine: Machine,
    tree: String,
    ranks: Vec<RankPlace>,
    /// What is wrong with this process's placement (empty when verified).
    mismatches: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct RankPlace {
    rank: usize,
    /// PU (OS index) the plan gave the rank; `None` = unpinned.
    pu: Option<usize>,
    core: Option<usize>,
    package: Option<usize>,
    numa: Option<usize>,
    /// The caches the rank's PU uses, and which other ranks of the process use them.
    caches: Vec<SharedCache>,
    /// Read back after pinning (absent with `--synthetic`).
    binding: Option<Binding>,
}

#[derive(Serialize, Deserialize)]
struct SharedCache {
    cache: String,
    shared_with: Vec<usize>,
}

const TAG_BLOCK: i32 = 77;

pub fn run(args: &TopoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = args.job.runtime();
    let report = match &args.synthetic {
        Some(description) => {
            let machine = Machine::synthetic(description)?;
            let n = args.job.ranks.unwrap_or_else(|| machine.cores());
            let plan = rt.placement_policy().plan(&machine, n);
            for note in &plan.notes {
                eprintln!("courier: note: {note}");
            }
            let places = plan.pus.iter().map(|&pu| (pu, None)).collect();
            let block = block(0, "synthetic".into(), machine, places, 0);
            Report {
                placement: rt.placement_policy().to_string(),
                processes: 1,
                ranks: n,
                verified: block.mismatches.is_empty(),
                blocks: vec![block],
                latency: None,
            }
        }
        None => {
            // Read on this (unpinned) thread: the cpuset the ranks are placed in.
            let machine = Machine::detect()?;
            let host = courier::host_name();
            let gathered = rt.run(|comm| gather(comm, &machine, &host))?;
            match gathered.into_iter().next().flatten() {
                Some(blocks) => Report {
                    placement: rt.placement_policy().to_string(),
                    processes: blocks.len(),
                    ranks: blocks.iter().map(|b| b.ranks.len()).sum(),
                    verified: blocks.iter().all(|b| b.mismatches.is_empty()),
                    blocks,
                    latency: None,
                },
                None => return Ok(()), // not process 0: it reports for everyone
            }
        }
    };
    let mut report = report;
    if args.latency {
        report.latency = Some(pinned_vs_unpinned(&args.job)?);
    }
    if !json::to_stdout(args.json.as_deref()) {
        print_report(&report);
    }
    if let Some(path) = &args.json {
        json::write(path, &report)?;
    }
    if args.check && !report.verified {
        let first = report.blocks.iter().flat_map(|b| &b.mismatches).next();
        return Err(format!(
            "placement check failed: {}",
            first.map_or("", String::as_str)
        )
        .into());
    }
    Ok(())
}

/// Rounds of the pinned/unpinned comparison, alternating so drift hits both.
const LATENCY_ROUNDS: usize = 5;

fn pinned_vs_unpinned(job: &JobArgs) -> Result<PinnedVsUnpinned, Box<dyn std::error::Error>> {
    if courier::Launch::detect()? != courier::Launch::Embedded {
        return Err("--latency measures an embedded pair: run it without mpirun".into());
    }
    let p50 = |placement| -> Result<f64, Box<dyn std::error::Error>> {
        let rt = job.runtime().ranks(2).placement(placement);
        let records =
            rt.run(|comm| crate::bench_p2p::ping_pong(comm, "shm", "send", 8, 200, false, None))?;
        let record = records
            .into_iter()
            .flatten()
            .next()
            .ok_or("rank 0 measured nothing")?;
        Ok(record.latency_us.p50)
    };
    let (mut pinned, mut unpinned) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_ROUNDS {
        pinned.push(p50(courier::Placement::Compact)?);
        unpinned.push(p50(courier::Placement::None)?);
    }
    let median = crate::bench_p2p::median;
    let (pinned, unpinned) = (median(pinned), median(unpinned));
    Ok(PinnedVsUnpinned {
        pinned_p50_us: pinned,
        unpinned_p50_us: unpinned,
        ratio: unpinned / pinned,
        rounds: LATENCY_ROUNDS,
    })
}

/// Each process's first rank builds its block and sends it (as JSON) to rank 0,
/// which returns all of them.
fn gather(comm: &Comm, machine: &Machine, host: &str) -> courier::Result<Option<Vec<Block>>> {
    comm.barrier()?; // every rank of the job has pinned itself by now
    let me = comm.rank();
    let threads = comm.size() / comm.processes();
    let process = comm.node_of(me)?;
    let first = process * threads;
    if me != first {
        return Ok(None);
    }
    let mut places = Vec::with_capacity(threads);
    for rank in first..first + threads {
        let binding = comm.binding_of(rank)?;
        places.push((binding.as_ref().and_then(|b| b.planned), binding));
    }
    let block = block(process, host.to_string(), machine.clone(), places, first);
    if me != 0 {
        let json = serde_json::to_vec(&block).expect("a block serializes");
        comm.send(&json, 0, TAG_BLOCK)?;
        return Ok(None);
    }
    let mut blocks = vec![block];
    for p in 1..comm.processes() {
        let (json, _) = comm.recv_owned::<u8>(p * threads, TAG_BLOCK)?;
        let block = serde_json::from_slice(&json).map_err(|e| {
            courier::Error::InvalidConfig(format!("process {p} sent a bad block: {e}"))
        })?;
        blocks.push(block);
    }
    Ok(Some(blocks))
}

fn block(
    process: usize,
    host: String,
    machine: Machine,
    places: Vec<(Option<usize>, Option<Binding>)>,
    first_rank: usize,
) -> Block {
    let pus: Vec<Option<usize>> = places.iter().map(|p| p.0).collect();
    let ranks: Vec<RankPlace> = places
        .into_iter()
        .enumerate()
        .map(|(i, (pu, binding))| {
            let info = pu.and_then(|p| machine.pu(p));
            let caches = pu.map_or_else(Vec::new, |p| {
                machine
                    .caches_of(p)
                    .into_iter()
                    .map(|c| SharedCache {
                        cache: c.label(),
                        shared_with: (0..pus.len())
                            .filter(|&j| j != i && pus[j].is_some_and(|q| c.pus.contains(&q)))
                            .map(|j| first_rank + j)
                            .collect(),
                    })
                    .collect()
            });
            RankPlace {
                rank: first_rank + i,
                pu,
                core: info.map(|p| p.core),
                package: info.map(|p| p.package),
                numa: info.map(|p| p.numa),
                caches,
                binding,
            }
        })
        .collect();
    let mismatches = mismatches(&machine, &ranks);
    Block {
        process,
        host,
        tree: machine.tree(),
        machine,
        ranks,
        mismatches,
    }
}

/// Bindings the OS does not confirm, and PUs with two ranks while another is idle.
fn mismatches(machine: &Machine, ranks: &[RankPlace]) -> Vec<String> {
    let mut out: Vec<String> = ranks
        .iter()
        .filter_map(|r| {
            let b = r.binding.as_ref()?;
            (!b.verified()).then(|| {
                format!(
                    "rank {} planned on PU {:?}, but the OS reports cpuset {:?}, last ran on {:?}{}",
                    r.rank,
                    b.planned,
                    b.cpuset,
                    b.last_cpu,
                    b.error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
                )
            })
        })
        .collect();
    let load = |os: usize| ranks.iter().filter(|r| r.pu == Some(os)).count();
    let busiest = machine.pus.iter().max_by_key(|p| load(p.os));
    let idlest = machine.pus.iter().min_by_key(|p| load(p.os));
    if let (Some(hi), Some(lo)) = (busiest, idlest) {
        if load(hi.os) > load(lo.os) + 1 || (load(hi.os) > 1 && load(lo.os) == 0) {
            out.push(format!(
                "PU {} has {} ranks while PU {} has {}",
                hi.os,
                load(hi.os),
                lo.os,
                load(lo.os)
            ));
        }
    }
    out
}

fn print_report(report: &Report) {
    for b in &report.blocks {
        println!("process {} on {}", b.process, b.host);
        print!("{}", b.tree);
        println!(
            "placement {}: {} ranks in this process",
            report.placement,
            b.ranks.len()
        );
        println!("rank    PU  core  pkg  numa  bound    last  ok  shares");
        for r in &b.ranks {
            let opt = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
            let (bound, last, ok) = match &r.binding {
                Some(bd) => (
                    compact_list(&bd.cpuset),
                    opt(bd.last_cpu),
                    if bd.verified() { "ok" } else { "NO" },
                ),
                None => ("-".into(), "-".into(), "-"),
            };
            let shares: Vec<String> = r
                .caches
                .iter()
                .filter(|c| !c.shared_with.is_empty())
                .map(|c| format!("{} with {}", c.cache, compact_list(&c.shared_with)))
                .collect();
            println!(
                "{:>4}  {:>4}  {:>4}  {:>3}  {:>4}  {:<7}  {:>4}  {:>2}  {}",
                r.rank,
                opt(r.pu),
                opt(r.core),
                opt(r.package),
                opt(r.numa),
                bound,
                last,
                ok,
                shares.join(", ")
            );
        }
        for m in &b.mismatches {
            println!("MISMATCH: {m}");
        }
    }
    if let Some(l) = &report.latency {
        println!(
            "ping-pong 8 B send, one-way p50 (median of {} alternating rounds): pinned {:.3} us, \
             unpinned {:.3} us, unpinned/pinned {:.2}",
            l.rounds, l.pinned_p50_us, l.unpinned_p50_us, l.ratio
        );
    }
    let pinned = report
        .blocks
        .iter()
        .flat_map(|b| &b.ranks)
        .any(|r| r.binding.is_some());
    println!(
        "placement {}",
        match (pinned, report.verified) {
            (false, true) => "planned only (synthetic machine: nothing was pinned)",
            (true, true) => "verified: every binding read back as planned",
            (_, false) => "NOT verified (see MISMATCH lines)",
        }
    );
}

/// `[0,1,2,5]` as `0-2,5`.
fn compact_list(v: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(planned: usize, cpuset: Vec<usize>, last_cpu: usize) -> Option<Binding> {
        Some(Binding {
            planned: Some(planned),
            cpuset,
            last_cpu: Some(last_cpu),
            error: None,
        })
    }

    #[test]
    fn check_reports_a_binding_the_os_does_not_confirm() {
        let machine = Machine::synthetic("core:2").unwrap();
        let ok = block(
            0,
            "h".into(),
            machine.clone(),
            vec![(Some(0), binding(0, vec![0], 0))],
            0,
        );
        assert!(ok.mismatches.is_empty(), "{:?}", ok.mismatches);
        let moved = vec![
            (Some(0), binding(0, vec![0, 1], 1)),
            (Some(1), binding(1, vec![1], 1)),
        ];
        let bad = block(0, "h".into(), machine, moved, 0);
        assert_eq!(bad.mismatches.len(), 1, "{:?}", bad.mismatches);
        assert!(bad.mismatches[0].starts_with("rank 0 planned on PU Some(0)"));
    }

    #[test]
    fn check_reports_two_ranks_on_a_pu_while_another_idles() {
        let machine = Machine::synthetic("core:2").unwrap();
        let doubled = vec![(Some(1), None), (Some(1), None)];
        let b = block(0, "h".into(), machine.clone(), doubled, 0);
        assert_eq!(b.mismatches, ["PU 1 has 2 ranks while PU 0 has 0"]);
        let even = vec![(Some(0), None), (Some(1), None), (Some(0), None)];
        assert!(block(0, "h".into(), machine, even, 0).mismatches.is_empty());
    }

    #[test]
    fn lists_are_compacted() {
        assert_eq!(compact_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(compact_list(&[]), "-");
    }
}
