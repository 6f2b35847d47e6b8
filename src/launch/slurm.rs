//! The Slurm job this process runs in, read from the variables Slurm sets:
//! `sbatch`/`salloc` for the job (`SLURM_JOB_ID`, `SLURM_NTASKS`,
//! `SLURM_CPUS_PER_TASK`, …), `srun` for each task of a step (`SLURM_PROCID`,
//! `SLURM_STEP_NUM_TASKS`, `SLURM_STEP_TASKS_PER_NODE`, `SLURM_NODEID`, …).
//!
//! The launch itself (which process is which) is [`Launch`](super::Launch);
//! this module adds what courier takes from the job: the rank-threads per task
//! (`SLURM_CPUS_PER_TASK`), how many tasks share this node (for placing
//! processes that Slurm did not bind), and the job's identity, which labels
//! every JSON report the `courier` command writes.

use serde::Serialize;

/// The Slurm job (and step, under `srun`) this process belongs to.
///
/// ```
/// use courier::SlurmJob;
///
/// let vars = [("SLURM_JOB_ID", "42"), ("SLURM_CPUS_PER_TASK", "4")];
/// let env = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
/// let job = SlurmJob::from_env(env).expect("inside a job");
/// assert_eq!(job.job_id, "42");
/// assert_eq!(job.cpus_per_task, Some(4));
/// assert_eq!(SlurmJob::from_env(|_| None), None); // not under Slurm
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlurmJob {
    /// `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_JOB_NAME`.
    pub job_name: Option<String>,
    /// `SLURM_STEP_ID`: set inside an `srun` step.
    pub step_id: Option<String>,
    /// `SLURM_JOB_NODELIST`, in Slurm's compressed form (`node[1-2]`).
    pub nodelist: Option<String>,
    /// `SLURM_JOB_NUM_NODES`.
    pub nodes: Option<usize>,
    /// `SLURM_NTASKS`: tasks of the job (of the step, under `srun`).
    pub ntasks: Option<usize>,
    /// `SLURM_CPUS_PER_TASK`: set when the job asked for `--cpus-per-task`.
    pub cpus_per_task: Option<usize>,
    /// `SLURMD_NODENAME`: the Slurm node this process runs on.
    pub node_name: Option<String>,
}

impl SlurmJob {
    /// The job of this process, `None` outside Slurm (no `SLURM_JOB_ID`).
    pub fn detect() -> Option<SlurmJob> {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// The job described by the variables `var` returns (testable without
    /// touching the real environment). Malformed numbers read as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<SlurmJob> {
        let text = |k: &str| {
            var(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let number = |k: &str| text(k)?.parse::<usize>().ok();
        Some(SlurmJob {
            job_id: text("SLURM_JOB_ID")?,
            job_name: text("SLURM_JOB_NAME"),
            step_id: text("SLURM_STEP_ID"),
            nodelist: text("SLURM_JOB_NODELIST"),
            nodes: number("SLURM_JOB_NUM_NODES"),
            ntasks: number("SLURM_NTASKS"),
            cpus_per_task: number("SLURM_CPUS_PER_TASK").filter(|&c| c > 0),
            node_name: text("SLURMD_NODENAME"),
        })
    }
}

/// Tasks of this `srun` step on this process's node: entry `SLURM_NODEID` of
/// `SLURM_STEP_TASKS_PER_NODE`, whose form is Slurm's run-length list
/// (`"2(x3),1"` = 2, 2, 2, 1).
pub(crate) fn step_tasks_on_this_node(var: impl Fn(&str) -> Option<String>) -> Option<usize> {
    let node = var("SLURM_NODEID")?.trim().parse().ok()?;
    tasks_on_node(&var("SLURM_STEP_TASKS_PER_NODE")?, node)
}

/// Entry `node` of a Slurm tasks-per-node list such as `"2(x3),1"`.
fn tasks_on_node(list: &str, node: usize) -> Option<usize> {
    let mut first = 0;
    for part in list.split(',') {
        let part = part.trim();
        let (tasks, repeat) = match part.split_once("(x") {
            Some((t, r)) => (t, r.strip_suffix(')')?.parse::<usize>().ok()?),
            None => (part, 1),
        };
        let tasks = tasks.parse::<usize>().ok()?;
        if node < first + repeat {
            return Some(tasks);
        }
        first += repeat;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::*;

    #[test]
    fn a_step_of_a_two_node_job_is_read_whole() {
        let vars = [
            ("SLURM_JOB_ID", "17"),
            ("SLURM_JOB_NAME", "bench-p2p"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_JOB_NODELIST", "node[1-2]"),
            ("SLURM_JOB_NUM_NODES", "2"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("SLURMD_NODENAME", "node2"),
        ];
        let job = SlurmJob::from_env(env(&vars)).unwrap();
        assert_eq!(
            job,
            SlurmJob {
                job_id: "17".into(),
                job_name: Some("bench-p2p".into()),
                step_id: Some("0".into()),
                nodelist: Some("node[1-2]".into()),
                nodes: Some(2),
                ntasks: Some(2),
                cpus_per_task: Some(4),
                node_name: Some("node2".into()),
            }
        );
    }

    #[test]
    fn outside_a_job_or_with_bad_numbers() {
        assert_eq!(SlurmJob::from_env(env(&[("SLURM_NTASKS", "2")])), None);
        let bad = [
            ("SLURM_JOB_ID", "5"),
            ("SLURM_NTASKS", "two"),
            ("SLURM_CPUS_PER_TASK", "0"),
        ];
        let job = SlurmJob::from_env(env(&bad)).unwrap();
        assert_eq!((job.ntasks, job.cpus_per_task), (None, None));
    }

    #[test]
    fn tasks_per_node_lists_are_expanded() {
        assert_eq!(tasks_on_node("2", 0), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 0), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 2), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 3), Some(1));
        assert_eq!(tasks_on_node("2(x3),1", 4), None);
        assert_eq!(tasks_on_node("4,3(x2)", 2), Some(3));
        assert_eq!(tasks_on_node("x", 0), None);
        assert_eq!(tasks_on_node("2(x", 0), None);
        let step = [("SLURM_NODEID", "1"), ("SLURM_STEP_TASKS_PER_NODE", "3,1")];
        assert_eq!(step_tasks_on_this_node(env(&step)), Some(1));
    }
}
