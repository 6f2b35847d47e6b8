//! Slurm, for real: the job scripts in `slurm/` submitted with `sbatch --wait` to
//! a throw-away cluster on this machine (`slurm/local-cluster.sh`: munged,
//! slurmctld and two slurmd, so jobs really span two Slurm nodes), each with
//! `srun --mpi=pmix` and with `mpirun` inside the allocation; every job must
//! succeed and leave complete JSON labelled with its job id. The cluster goes
//! down at the end whatever happened (a guard's `Drop`, which also runs when a
//! check panics).
//!
//! A `harness = false` test. Opt-in where Slurm is absent: without slurmctld,
//! slurmd and munged (or without root, which slurmd needs to start jobs) it is
//! reported as ignored — unless `COURIER_SLURM_TESTS=1`, which `.ci/run` sets,
//! makes that a failure. Every `sbatch --wait` has a deadline: a job that hangs
//! is cancelled and fails the test.
//!
//! The two nodes share this machine's cores, so the jobs spanning both run
//! unpinned (`--placement none`): each node's first task would pin to core 0.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One job: an sbatch run and what its results must hold.
struct Job {
    name: &'static str,
    script: &'static str,
    sbatch_args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    check: fn(&Path, &str) -> Result<(), String>,
}

const QUICK_BENCH: (&str, &str) = ("COURIER_BENCH_ARGS", "--quick --sizes 8,1M");
const UNPINNED: (&str, &str) = ("COURIER_ARGS", "--placement none");

const JOBS: &[Job] = &[
    Job {
        name: "bench_p2p_two_tasks_on_one_node",
        script: "bench-p2p.sbatch",
        sbatch_args: &["--nodes=1", "--ntasks=2"],
        env: &[QUICK_BENCH],
        check: bench_p2p_one_node,
    },
    Job {
        name: "bench_p2p_two_nodes_one_task_each",
        script: "bench-p2p.sbatch",
        sbatch_args: &["--nodes=2", "--ntasks-per-node=1"],
        env: &[QUICK_BENCH, UNPINNED],
        check: bench_p2p_two_nodes,
    },
    Job {
        name: "gossip",
        script: "gossip.sbatch",
        sbatch_args: &[],
        env: &[(
            "COURIER_GOSSIP_ARGS",
            "--protocol push-pull --nodes 100000 --trials 2",
        )],
        check: gossip,
    },
    Job {
        name: "multicast_two_nodes_two_tasks_each",
        script: "multicast.sbatch",
        sbatch_args: &["--nodes=2", "--ntasks-per-node=2"],
        env: &[
            ("COURIER_MULTICAST_ARGS", "--compare --messages 1000"),
            UNPINNED,
        ],
        check: multicast,
    },
    Job {
        name: "hybrid_two_nodes_two_threads_each",
        script: "hybrid.sbatch",
        sbatch_args: &["--cpus-per-task=2"],
        env: &[
            ("COURIER_BENCH_ARGS", "--quick --sizes 8 --tests latency"),
            UNPINNED,
        ],
        check: hybrid_two_nodes,
    },
    Job {
        name: "hybrid_one_node_pinned",
        script: "hybrid.sbatch",
        sbatch_args: &["--nodes=1", "--cpus-per-task=2"],
        env: &[("COURIER_BENCH_ARGS", "--quick --sizes 8 --tests latency")],
        check: hybrid_one_node,
    },
];

const LAUNCHERS: [&str; 2] = ["srun", "mpirun"];

/// Nodes of the local cluster (slurmd daemons on this machine).
const NODES: usize = 2;

/// A quick job takes seconds; an oversubscribed CI machine is slow.
const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    let required = std::env::var("COURIER_SLURM_TESTS").as_deref() == Ok("1");
    if let Some(missing) = missing_prerequisite() {
        if required {
            println!("test slurm ... FAILED\nCOURIER_SLURM_TESTS=1 but {missing}");
            summary(0, 1, 0);
            std::process::exit(1);
        }
        println!(
            "test slurm ... ignored: {missing} (install slurmctld slurmd slurm-client munge \
             libpmix-dev, run as root, or set COURIER_SLURM_TESTS=1 to make this a failure)"
        );
        return summary(0, 0, 1);
    }
    let (mut passed, mut failed) = (0, 0);
    let mut check = |name: &str, result: Result<(), String>| match result {
        Ok(()) => {
            println!("test {name} ... ok");
            passed += 1;
        }
        Err(why) => {
            println!("test {name} ... FAILED\n{why}");
            failed += 1;
        }
    };
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("slurm-test");
    let cluster = match Cluster::up(&work) {
        Ok(c) => c,
        Err(why) => {
            check("local_cluster_comes_up", Err(why));
            Cluster::stop(&work);
            summary(passed, failed, 0);
            std::process::exit(1);
        }
    };
    check("local_cluster_comes_up", Ok(()));
    check("local_cluster_up_again_is_a_no_op", cluster.up_again());
    for launcher in LAUNCHERS {
        for job in JOBS {
            let name = format!("{}_with_{launcher}", job.name);
            check(&name, cluster.submit(job, launcher));
        }
    }
    check("a_failing_job_is_reported", cluster.failing_job());
    check("local_cluster_goes_down_and_stays_down", cluster.down());
    summary(passed, failed, 0);
    if failed > 0 {
        std::process::exit(1);
    }
}

fn summary(passed: usize, failed: usize, ignored: usize) {
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" },
    );
}

/// Why the cluster cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    for tool in ["slurmctld", "slurmd", "munged", "sbatch", "mpirun"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (slurmd must start jobs as their user)".into());
    }
    None
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The local cluster, brought down when dropped.
struct Cluster {
    work: PathBuf,
    port: u16,
    conf: PathBuf,
}

impl Cluster {
    fn up(work: &Path) -> Result<Cluster, String> {
        Self::stop(work); // what an interrupted earlier run may have left
        let _ = std::fs::remove_dir_all(work);
        let port = free_ports(3)?;
        let cluster = Cluster {
            work: work.to_path_buf(),
            port,
            conf: work.join("etc/slurm.conf"),
        };
        let (ok, out, err) = cluster.script("up")?;
        if !ok || !out.contains("export SLURM_CONF=") {
            return Err(format!("local-cluster.sh up failed:\n{out}\n{err}"));
        }
        Ok(cluster)
    }

    /// Runs `slurm/local-cluster.sh what` for this cluster.
    fn script(&self, what: &str) -> Result<(bool, String, String), String> {
        let mut cmd = Command::new(repo().join("slurm/local-cluster.sh"));
        cmd.arg(what)
            .env("COURIER_SLURM_DIR", &self.work)
            .env("COURIER_SLURM_PORT", self.port.to_string())
            .env("COURIER_SLURM_NODES", NODES.to_string())
            .env("COURIER_SLURM_CPUS", "2");
        run(cmd, &format!("local-cluster.sh {what}"), DEADLINE, |_| {})
    }

    /// `down` whatever ports it had: it only reads the pid files.
    fn stop(work: &Path) {
        let _ = Command::new(repo().join("slurm/local-cluster.sh"))
            .arg("down")
            .env("COURIER_SLURM_DIR", work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn pids(&self) -> Vec<String> {
        let mut pids: Vec<String> = ["munge/munged.pid", "run/slurmctld.pid"]
            .iter()
            .map(|p| self.work.join(p))
            .chain((1..=NODES).map(|i| self.work.join(format!("run/slurmd-node{i}.pid"))))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .collect();
        pids.sort();
        pids
    }

    fn up_again(&self) -> Result<(), String> {
        let before = self.pids();
        let (ok, out, err) = self.script("up")?;
        let (status_ok, status, _) = self.script("status")?;
        let after = self.pids();
        if ok
            && err.contains("already up")
            && before.len() == NODES + 2
            && before == after
            && status_ok
        {
            Ok(())
        } else {
            Err(format!(
                "second up: ok {ok}, pids {before:?} -> {after:?}\n{out}\n{err}\nstatus:\n{status}"
            ))
        }
    }

    fn down(&self) -> Result<(), String> {
        let pids = self.pids();
        let (ok, out, err) = self.script("down")?;
        let (status_ok, status, _) = self.script("status")?;
        let (again, _, again_err) = self.script("down")?;
        let alive: Vec<_> = pids
            .iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if ok && !status_ok && again && alive.is_empty() && status.contains("stopped") {
            Ok(())
        } else {
            Err(format!(
                "down: ok {ok}, still alive {alive:?}, status after down ok {status_ok}:\n{status}\n\
                 {out}\n{err}\nsecond down: {again} {again_err}"
            ))
        }
    }

    /// `sbatch --wait` of `script` from a fresh submit directory: (job id,
    /// success, the job's output, its results directory).
    fn sbatch(
        &self,
        name: &str,
        script: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(String, bool, String, PathBuf), String> {
        let submit = self.work.join("jobs").join(name);
        let _ = std::fs::remove_dir_all(&submit);
        std::fs::create_dir_all(&submit).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("sbatch");
        cmd.args(["--parsable", "--wait", "--time=10"])
            .args(args)
            .arg(repo().join("slurm").join(script))
            .current_dir(&submit)
            .env("SLURM_CONF", &self.conf)
            .env("COURIER", env!("CARGO_BIN_EXE_courier"))
            // Jobs run as root here (CI); Open MPI's mpirun refuses unless told.
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .envs(env.iter().copied());
        // A hung job is cancelled, so that it does not hold the nodes.
        let cancel = |id: &str| {
            let _ = Command::new("scancel")
                .arg(id.trim())
                .env("SLURM_CONF", &self.conf)
                .status();
        };
        let (ok, id, err) = run(cmd, &format!("sbatch {script}"), DEADLINE, cancel)?;
        let id = id.trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("sbatch gave no job id: {id:?}\n{err}"));
        }
        let output = std::fs::read_dir(&submit)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!("-{id}.out")))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        // job-setup.sh's default: courier-results/<job name>-<job id>.
        let results = submit.join("courier-results").join(format!(
            "courier-{}-{id}",
            script.trim_end_matches(".sbatch")
        ));
        Ok((id, ok, format!("{output}{err}"), results))
    }

    fn submit(&self, job: &Job, launcher: &str) -> Result<(), String> {
        let mut env = job.env.to_vec();
        env.push(("COURIER_LAUNCHER", launcher));
        let name = format!("{}-{launcher}", job.name);
        let start = Instant::now();
        let (id, ok, output, results) = self.sbatch(&name, job.script, job.sbatch_args, &env)?;
        println!(
            "--- job {id}: sbatch {} slurm/{} with {launcher}, {:.1} s ---\n{output}",
            job.sbatch_args.join(" "),
            job.script,
            start.elapsed().as_secs_f64()
        );
        if !ok {
            return Err(format!("job {id} failed"));
        }
        if !results.is_dir() {
            return Err(format!(
                "job {id}: no results directory named after the job: {}",
                results.display()
            ));
        }
        (job.check)(&results, &id).map_err(|e| format!("job {id}: {e}"))
    }

    /// A job whose command fails must fail `sbatch --wait` (the checks above
    /// could not tell a failed job otherwise).
    fn failing_job(&self) -> Result<(), String> {
        let env = [("COURIER", "/bin/false")];
        let (id, ok, output, _) = self.sbatch("failing", "gossip.sbatch", &[], &env)?;
        if ok {
            Err(format!("job {id} ran /bin/false and succeeded:\n{output}"))
        } else {
            Ok(())
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        Self::stop(&self.work);
    }
}

/// A base port with `n` consecutive free ports on loopback.
fn free_ports(n: u16) -> Result<u16, String> {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        if base > u16::MAX - n {
            continue;
        }
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    Err("no free run of ports on 127.0.0.1".into())
}

/// Runs `cmd` to the end or, at `deadline`, kills it and hands what it wrote
/// to stdout so far to `on_hang`: (success, stdout, stderr).
fn run(
    mut cmd: Command,
    what: &str,
    deadline: Duration,
    on_hang: impl FnOnce(&str),
) -> Result<(bool, String, String), String> {
    let dir = std::env::temp_dir();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let tag = format!(
        "courier-slurm-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Relaxed)
    );
    let (out_path, err_path) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    // Output goes to files, not pipes: a chatty child never blocks on a full pipe.
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| e.to_string());
    cmd.stdout(file(&out_path)?).stderr(file(&err_path)?);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let start = Instant::now();
    let read = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        s
    };
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            on_hang(&read(&out_path));
            let _ = std::fs::remove_file(&err_path);
            return Err(format!("{what} did not finish within {deadline:?}: hang"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status.success(), read(&out_path), read(&err_path)))
}

// ---- what each job's results must hold ---------------------------------------

fn read_json(dir: &Path, file: &str) -> Result<Value, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The report names the job that wrote it.
fn labelled(v: &Value, id: &str) -> Result<(), String> {
    if v["slurm"]["job_id"] == id {
        Ok(())
    } else {
        Err(format!(
            "JSON not labelled with job {id}: slurm = {}",
            v["slurm"]
        ))
    }
}

fn expect(cond: bool, what: &str, v: &Value) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        let text = v.to_string();
        Err(format!("{what}: {}", &text[..text.len().min(2000)]))
    }
}

/// Every send mode over MPI at every size, with raw MPI in the same run.
fn bench_p2p_complete(dir: &Path, id: &str, nodes: u64) -> Result<Value, String> {
    let v = read_json(dir, "bench-p2p.json")?;
    labelled(&v, id)?;
    expect(
        v["ranks"] == 2 && v["processes"] == 2 && v["slurm"]["nodes"] == nodes,
        "2 ranks in 2 processes on the nodes asked for",
        &v,
    )?;
    let has = |list: &str, transport: &str, mode: &str, size: u64| {
        v[list].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["transport"] == transport
                    && r["mode"] == mode
                    && r["test"] == "latency"
                    && r["size"] == size
                    && r["latency_us"]["p50"].as_f64().is_some_and(|t| t > 0.0)
            })
        })
    };
    let modes = [
        "send", "bsend", "ssend", "rsend", "isend", "ibsend", "issend", "irsend", "sendrecv",
    ];
    for size in [8, 1 << 20] {
        for mode in modes {
            expect(
                has("results", "mpi", mode, size),
                &format!("no mpi {mode} latency at {size} B"),
                &v,
            )?;
        }
        expect(
            has("baselines", "mpi-raw", "raw-send", size),
            &format!("no raw MPI baseline at {size} B"),
            &v,
        )?;
    }
    for file in ["bench-p2p.csv", "bench-p2p.svg"] {
        let len = std::fs::metadata(dir.join(file)).map_or(0, |m| m.len());
        expect(len > 0, &format!("{file} missing or empty"), &v)?;
    }
    Ok(v)
}

fn bench_p2p_one_node(dir: &Path, id: &str) -> Result<(), String> {
    bench_p2p_complete(dir, id, 1).map(drop)
}

fn bench_p2p_two_nodes(dir: &Path, id: &str) -> Result<(), String> {
    let v = bench_p2p_complete(dir, id, 2)?;
    expect(v["slurm"]["nodelist"] == "node[1-2]", "both nodes", &v)
}

fn gossip(dir: &Path, id: &str) -> Result<(), String> {
    let v = read_json(dir, "gossip.json")?;
    labelled(&v, id)?;
    let runs = v["runs"].as_array().map_or(&[][..], Vec::as_slice);
    expect(
        v["protocol"] == "push-pull" && v["nodes"] == 100_000 && v["ranks"] == 2,
        "push-pull on 10^5 nodes over 2 ranks",
        &v,
    )?;
    expect(
        runs.len() == 2
            && runs
                .iter()
                .all(|r| r["residue"] == 0.0 && r["rounds"].as_u64() > Some(0)),
        "2 trials, every node reached",
        &v,
    )?;
    let plot = std::fs::metadata(dir.join("gossip.svg")).map_or(0, |m| m.len());
    expect(plot > 0, "gossip.svg missing", &v)
}

fn multicast(dir: &Path, id: &str) -> Result<(), String> {
    let v = read_json(dir, "multicast.json")?;
    labelled(&v, id)?;
    let runs = v["runs"].as_array().map_or(&[][..], Vec::as_slice);
    expect(
        runs.len() == 7
            && runs.iter().all(|r| {
                r["verified"] == true
                    && r["ranks"] == 4
                    && r["delivered"] == 4000
                    && r["throughput_msgs_s"].as_f64().is_some_and(|t| t > 0.0)
            }),
        "7 kinds, each verified, 4 ranks x 1000 messages delivered everywhere",
        &v,
    )?;
    expect(v["slurm"]["nodes"] == 2, "on two nodes", &v)
}

/// The hybrid layout's `courier info` (tasks x SLURM_CPUS_PER_TASK ranks) and
/// its bench report.
fn hybrid_info(dir: &Path, id: &str, processes: u64) -> Result<(Value, Value), String> {
    let v = read_json(dir, "info.json")?;
    labelled(&v, id)?;
    expect(
        v["slurm"]["cpus_per_task"] == 2
            && v["processes"] == processes
            && v["threads_per_process"] == 2
            && v["ranks"] == 2 * processes,
        "threads per process = SLURM_CPUS_PER_TASK = 2 on every task",
        &v,
    )?;
    let bench = read_json(dir, "bench-p2p.json")?;
    labelled(&bench, id)?;
    Ok((v, bench))
}

fn hybrid_two_nodes(dir: &Path, id: &str) -> Result<(), String> {
    let (_, bench) = hybrid_info(dir, id, 2)?;
    let transports = |t: &str| {
        bench["results"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["transport"] == t))
    };
    expect(
        transports("shm") && transports("mpi"),
        "pairs over both transports",
        &bench,
    )
}

fn hybrid_one_node(dir: &Path, id: &str) -> Result<(), String> {
    let (v, _) = hybrid_info(dir, id, 1)?;
    let cores: Vec<_> = v["ranks_detail"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|r| r["core"].clone())
        .collect();
    expect(
        cores.len() == 2 && cores.iter().all(Value::is_u64) && cores[0] != cores[1],
        "both threads pinned, to different cores",
        &v,
    )
}
