//! How this process was started: alone (embedded), or as one of several processes
//! of a parallel launcher (`mpirun`/`mpiexec`, `srun`).
//!
//! One of several processes runs in cluster mode (processes × rank-threads, MPI
//! between processes) — which needs the `mpi` feature. A build without it refuses
//! to run as one of several processes instead of silently running an independent
//! embedded job in each (`mpirun -n 2 courier bench p2p` would otherwise print two
//! unrelated results). `COURIER_LAUNCH=embedded` forces embedded mode.

mod slurm;

use std::fmt;

pub(crate) use slurm::step_tasks_on_this_node;
pub use slurm::SlurmJob;

use crate::{Error, Result};

/// The launcher that started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Open MPI's `mpirun`/`mpiexec` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// MPICH's Hydra `mpiexec` and other PMI launchers (`PMI_RANK`, `PMI_SIZE`).
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`).
    Srun,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::OpenMpi => "Open MPI mpirun",
            Launcher::Pmi => "a PMI launcher (MPICH mpiexec)",
            Launcher::Srun => "Slurm srun",
        })
    }
}

/// How this process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// No parallel launcher (or `COURIER_LAUNCH=embedded`): one process, ranks are threads.
    Embedded,
    /// Process `index` of `processes`, started by `launcher`.
    Parallel {
        /// Who started the processes.
        launcher: Launcher,
        /// This process's index, `0..processes`.
        index: usize,
        /// How many processes the launcher started.
        processes: usize,
    },
}

impl Launch {
    /// Reads the launch from this process's environment.
    pub fn detect() -> Result<Launch> {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// Reads the launch from the variables `var` returns (testable without
    /// touching the real environment).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        match var("COURIER_LAUNCH").as_deref() {
            None | Some("auto") => {}
            Some("embedded") => return Ok(Launch::Embedded),
            Some(other) => {
                return Err(Error::InvalidConfig(format!(
                    "COURIER_LAUNCH={other:?}: expected auto or embedded"
                )))
            }
        }
        let candidates = [
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
            ),
            (Launcher::Pmi, "PMI_RANK", "PMI_SIZE"),
            (Launcher::Srun, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
        ];
        for (launcher, rank_var, size_var) in candidates {
            let (Some(rank), Some(size)) = (var(rank_var), var(size_var)) else {
                continue;
            };
            let number = |name: &str, v: &str| {
                v.trim().parse::<usize>().map_err(|_| {
                    Error::InvalidConfig(format!("{name}={v:?} set by {launcher} is not a number"))
                })
            };
            let (index, processes) = (number(rank_var, &rank)?, number(size_var, &size)?);
            if index >= processes {
                return Err(Error::InvalidConfig(format!(
                    "{rank_var}={index} is not below {size_var}={processes}"
                )));
            }
            return Ok(Launch::Parallel {
                launcher,
                index,
                processes,
            });
        }
        Ok(Launch::Embedded)
    }

    /// `Ok` if this build can run this launch: always with the `mpi` feature;
    /// without it, embedded or a single process.
    pub fn check_supported(&self) -> Result<()> {
        if cfg!(feature = "mpi") {
            return Ok(());
        }
        match *self {
            Launch::Parallel {
                launcher,
                index,
                processes,
            } if processes > 1 => Err(Error::InvalidConfig(format!(
                "started by {launcher} as process {index} of {processes}, but this build has \
                 no cluster mode (built without the `mpi` feature): each process would run an \
                 unrelated job. Rebuild with `--features mpi`, start one process, or set \
                 COURIER_LAUNCH=embedded to run independent embedded jobs anyway"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables of a test's environment (shared with `slurm`'s tests).
    pub(super) fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_launcher_variables_mean_embedded() {
        assert_eq!(Launch::from_env(env(&[])).unwrap(), Launch::Embedded);
        // A Slurm batch script (no srun step) stays embedded.
        let batch = [
            ("SLURM_JOB_ID", "7"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "0"),
        ];
        assert_eq!(Launch::from_env(env(&batch)).unwrap(), Launch::Embedded);
    }

    #[test]
    fn each_launcher_is_recognized() {
        let cases = [
            (
                vec![("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")],
                Launcher::OpenMpi,
                1,
                2,
            ),
            (
                vec![("PMI_RANK", "3"), ("PMI_SIZE", "4")],
                Launcher::Pmi,
                3,
                4,
            ),
            (
                vec![("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "8")],
                Launcher::Srun,
                0,
                8,
            ),
        ];
        for (vars, launcher, index, processes) in cases {
            let launch = Launch::from_env(env(&vars)).unwrap();
            assert_eq!(
                launch,
                Launch::Parallel {
                    launcher,
                    index,
                    processes
                }
            );
        }
    }

    #[test]
    #[cfg(not(feature = "mpi"))]
    fn several_processes_are_refused_with_a_way_out_and_one_is_fine() {
        let two = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")];
        let err = Launch::from_env(env(&two))
            .unwrap()
            .check_supported()
            .unwrap_err();
        assert!(err.to_string().contains("COURIER_LAUNCH=embedded"), "{err}");
        let one = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")];
        assert!(Launch::from_env(env(&one))
            .unwrap()
            .check_supported()
            .is_ok());
        let forced = [("COURIER_LAUNCH", "embedded"), two[0], two[1]];
        assert_eq!(Launch::from_env(env(&forced)).unwrap(), Launch::Embedded);
    }

    #[test]
    fn malformed_variables_are_errors() {
        let bad = [("PMI_RANK", "x"), ("PMI_SIZE", "2")];
        assert!(matches!(
            Launch::from_env(env(&bad)),
            Err(Error::InvalidConfig(_))
        ));
        let out_of_range = [("PMI_RANK", "2"), ("PMI_SIZE", "2")];
        assert!(Launch::from_env(env(&out_of_range)).is_err());
        assert!(Launch::from_env(env(&[("COURIER_LAUNCH", "cluster")])).is_err());
    }
}
