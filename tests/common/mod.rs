//! Shared by the integration tests: every job runs under a deadline, so a hang
//! becomes a test failure instead of a stuck CI run.
#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use courier::{Comm, Result, Runtime};

/// Generous: jobs take milliseconds; 8 ranks on a loaded 2-core machine may be slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on `ranks` ranks; panics if the job has not finished by the deadline.
pub fn run<R, F>(ranks: usize, f: F) -> Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(&Comm) -> Result<R> + Send + Sync + 'static,
{
    run_with(Runtime::new().ranks(ranks), f)
}

/// Like [`run`] with a configured runtime.
pub fn run_with<R, F>(rt: Runtime, f: F) -> Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(&Comm) -> Result<R> + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(rt.run(f));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(r) => r,
        Err(_) => panic!("job did not finish within {DEADLINE:?}: hang"),
    }
}

/// Runs and unwraps, naming the failed rank on error.
pub fn run_ok<R, F>(ranks: usize, f: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(&Comm) -> Result<R> + Send + Sync + 'static,
{
    run(ranks, f).unwrap_or_else(|e| panic!("job failed: {e}"))
}

/// Rank counts every semantic test runs with (8 > the 2 cores of CI).
pub const RANK_COUNTS: [usize; 4] = [1, 2, 3, 8];
