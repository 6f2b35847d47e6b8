//! `courier info`: what a job would run on.

use std::path::PathBuf;

use serde::Serialize;

use crate::JobArgs;

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Also write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    mode: String,
    transports: Vec<&'static str>,
    processes: usize,
    ranks: usize,
    threads_per_process: usize,
    placement: String,
    eager_threshold: usize,
    credit: usize,
    ranks_detail: Vec<RankInfo>,
}

#[derive(Serialize)]
struct RankInfo {
    rank: usize,
    process: usize,
    core: Option<usize>,
}

pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = args.job.runtime();
    let detail = rt.run(|comm| {
        comm.barrier()?; // every rank has pinned itself by now
        let me = comm.rank();
        Ok(RankInfo {
            rank: me,
            process: comm.node_of(me)?,
            core: comm.core_of(me)?,
        })
    })?;
    let launch = match courier::Launch::detect()? {
        courier::Launch::Embedded => "embedded (one process, ranks are threads)".to_string(),
        courier::Launch::Parallel { launcher, .. } => {
            format!("embedded, started by {launcher} as a single process")
        }
    };
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        mode: launch,
        transports: vec!["shm (shared-memory mailboxes between rank-threads)"],
        processes: 1,
        ranks: detail.len(),
        threads_per_process: detail.len(),
        placement: rt.placement_policy().to_string(),
        eager_threshold: rt.eager_threshold_bytes(),
        credit: rt.credit_bytes(),
        ranks_detail: detail,
    };
    println!("courier {}", info.version);
    println!("mode          {}", info.mode);
    println!("transports    {}", info.transports.join(", "));
    println!("MPI           not built in (cluster mode comes with the `mpi` feature)");
    println!("processes     {}", info.processes);
    println!(
        "ranks         {} ({} threads per process)",
        info.ranks, info.threads_per_process
    );
    println!("placement     {}", info.placement);
    println!(
        "eager ≤       {} B, credit {} B per pair",
        info.eager_threshold, info.credit
    );
    println!("rank  process  core");
    for r in &info.ranks_detail {
        let core = r.core.map_or("unpinned".to_string(), |c| c.to_string());
        println!("{:>4}  {:>7}  {}", r.rank, r.process, core);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&info)?)?;
    }
    Ok(())
}
