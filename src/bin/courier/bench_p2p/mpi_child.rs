//! MPI's own figures for an embedded run: a 2-process child job of the MPI
//! this binary is linked to (Open MPI's `mpirun`, or MPICH's Hydra
//! `mpiexec`; one process per core, bound) runs only the raw rsmpi baselines
//! before the shared-memory measurements start, and reports them as JSON.

use super::{P2pArgs, Record};

#[cfg(feature = "mpi")]
pub(crate) fn measure(args: &P2pArgs, samples: usize) -> Result<Vec<Record>, String> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    // Inside a launcher's job step (e.g. `srun -n 1`, one task of a Slurm job)
    // a nested mpirun would wait for the step's own CPUs or be refused.
    if let Ok(courier::Launch::Parallel { launcher, .. }) = courier::Launch::detect() {
        return Err(format!(
            "this process was started by {launcher}, and a nested mpirun would compete \
             with its job step; start 2 processes for MPI figures"
        ));
    }
    let (launchers, bind) = launchers();
    let mpirun = launchers
        .iter()
        .copied()
        .find(|m| {
            Command::new(m)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .ok_or_else(|| format!("none of {} on PATH", launchers.join(", ")))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tmp = std::env::temp_dir();
    let json = tmp.join(format!("courier-mpi-baseline-{}.json", std::process::id()));
    let log = tmp.join(format!("courier-mpi-baseline-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let sizes: Vec<String> = args.sizes.iter().map(usize::to_string).collect();
    // The raw window tests the run asks for, and the ping-pongs.
    let windows = ["bw", "bibw"]
        .into_iter()
        .filter(|w| args.tests.iter().any(|t| t == w));
    let tests = std::iter::once("latency")
        .chain(windows)
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new(mpirun);
    cmd.args(["-n", "2", bind, "core"])
        .arg(exe)
        .args([
            "bench",
            "p2p",
            "--raw-only",
            "--mpi-baseline",
            "off",
            "--tests",
            &tests,
        ])
        .args(["--sizes", &sizes.join(",")])
        .args([
            "--samples",
            &samples.to_string(),
            "--window",
            &args.window.to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .env("COURIER_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    if args.quick {
        cmd.arg("--quick");
    }
    let mut child = cmd.spawn().map_err(|e| format!("{mpirun}: {e}"))?;
    // A child that hangs must not hang the benchmark.
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                return Err(format!("{mpirun} -n 2 did not finish in 15 minutes"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        // Open MPI frames its messages in dashes: quote the first line of words.
        let said = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.chars().any(char::is_alphabetic))
            .unwrap_or("");
        return Err(format!("{mpirun} -n 2 failed ({status}): {said}"));
    }
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    serde_json::from_value::<Vec<Record>>(report["baselines"].clone())
        .map(|b| b.into_iter().filter(|r| r.transport == "mpi-raw").collect())
        .map_err(|e| e.to_string())
}

/// The launchers to try for a child job of the MPI this binary is linked to,
/// in order, and their option binding processes (`core` follows it). The
/// library says which it is (`MPI_Get_library_version` may be called before
/// `MPI_Init`): an MPICH build started by Open MPI's `mpirun` runs as
/// unrelated singletons, and the other way round too.
#[cfg(feature = "mpi")]
fn launchers() -> (&'static [&'static str], &'static str) {
    let library = mpi::environment::library_version().unwrap_or_default();
    if library.starts_with("MPICH") {
        (&["mpiexec.mpich", "mpiexec.hydra", "mpiexec"], "-bind-to")
    } else {
        (&["mpirun", "mpiexec"], "--bind-to")
    }
}

#[cfg(not(feature = "mpi"))]
pub(crate) fn measure(_: &P2pArgs, _: usize) -> Result<Vec<Record>, String> {
    Err("built without the mpi feature".into())
}
