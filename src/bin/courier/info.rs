//! `courier info`: what a job runs on — transports, MPI library, processes ×
//! threads, and where each rank lives. Under mpirun, process 0 reports for all.

use std::path::PathBuf;

use serde::Serialize;

use crate::{json, JobArgs};

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Also write the report as JSON to this file (`-` for standard output)
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    mode: String,
    transports: Vec<&'static str>,
    mpi_library: Option<String>,
    mpi_standard: Option<String>,
    mpi_thread_level: Option<&'static str>,
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
    host: String,
    core: Option<usize>,
}

/// One rank's record as gathered: rank, process, core + 1 (0: unpinned), host.
const HOST_BYTES: usize = 64;
type Record = [u64; 3 + HOST_BYTES / 8];

pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = args.job.runtime();
    let host = courier::host_name();
    let gathered = rt.run(|comm| {
        comm.barrier()?; // every rank has pinned itself by now
        let me = comm.rank();
        let mut rec: Record = [0; 3 + HOST_BYTES / 8];
        rec[0] = me as u64;
        rec[1] = comm.node_of(me)? as u64;
        rec[2] = comm.core_of(me)?.map_or(0, |c| c as u64 + 1);
        let name: &mut [u8] = bytemuck::cast_slice_mut(&mut rec[3..]);
        let n = host.len().min(HOST_BYTES);
        name[..n].copy_from_slice(&host.as_bytes()[..n]);
        let mut all = vec![[0u64; 3 + HOST_BYTES / 8]; if me == 0 { comm.size() } else { 0 }];
        comm.gather(&[rec], &mut all, 0)?;
        Ok((comm.processes(), all))
    })?;
    let Some((processes, records)) = gathered.into_iter().next() else {
        return Ok(());
    };
    if records.is_empty() {
        return Ok(()); // not process 0: it reports for everyone
    }
    let detail: Vec<RankInfo> = records
        .iter()
        .map(|r| {
            let name: &[u8] = bytemuck::cast_slice(&r[3..]);
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            RankInfo {
                rank: r[0] as usize,
                process: r[1] as usize,
                host: String::from_utf8_lossy(&name[..end]).into_owned(),
                core: r[2].checked_sub(1).map(|c| c as usize),
            }
        })
        .collect();
    let mode = match courier::Launch::detect()? {
        courier::Launch::Embedded => "embedded (one process, ranks are threads)".to_string(),
        courier::Launch::Parallel { launcher, .. } if processes == 1 => {
            format!("embedded, started by {launcher} as a single process")
        }
        courier::Launch::Parallel { launcher, .. } => {
            format!("cluster, started by {launcher}: {processes} processes x threads")
        }
    };
    let mpi = courier::mpi_library();
    let mut transports = vec!["shm (shared-memory mailboxes between rank-threads of a process)"];
    if mpi.is_some() {
        transports.push("mpi (MPI between processes)");
    }
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        mode,
        transports,
        mpi_library: mpi.as_ref().map(|m| m.version.clone()),
        mpi_standard: mpi
            .as_ref()
            .map(|m| format!("{}.{}", m.standard.0, m.standard.1)),
        mpi_thread_level: mpi.as_ref().map(|m| m.thread_level),
        processes,
        ranks: detail.len(),
        threads_per_process: detail.len() / processes,
        placement: rt.placement_policy().to_string(),
        eager_threshold: rt.eager_threshold_bytes(),
        credit: rt.credit_bytes(),
        ranks_detail: detail,
    };
    if !json::to_stdout(args.json.as_deref()) {
        print_table(&info);
    }
    if let Some(path) = &args.json {
        json::write(path, &info)?;
    }
    Ok(())
}

fn print_table(info: &Info) {
    println!("courier {}", info.version);
    println!("mode          {}", info.mode);
    println!("transports    {}", info.transports.join(", "));
    match (&info.mpi_library, &info.mpi_standard, info.mpi_thread_level) {
        (Some(lib), Some(std), Some(level)) => {
            println!("MPI           {lib} (MPI {std}, {level})")
        }
        _ if cfg!(feature = "mpi") => {
            println!(
                "MPI           built in; used when started by mpirun/srun as several processes"
            )
        }
        _ => println!("MPI           not built in (cluster mode needs the `mpi` feature)"),
    }
    if let Some(job) = courier::SlurmJob::detect() {
        let or = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        println!(
            "slurm job     {} ({}), step {}, nodes {}, {} task(s) x {} CPU(s)",
            job.job_id,
            or(job.job_name),
            or(job.step_id),
            or(job.nodelist),
            or(job.ntasks.map(|n| n.to_string())),
            or(job.cpus_per_task.map(|n| n.to_string())),
        );
    }
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
    println!("rank  process  host              core");
    for r in &info.ranks_detail {
        let core = r.core.map_or("unpinned".to_string(), |c| c.to_string());
        println!("{:>4}  {:>7}  {:<16}  {}", r.rank, r.process, r.host, core);
    }
}
