//! Cluster mode: the point-to-point and collective semantics again, over MPI
//! between processes and shared memory within them.
//!
//! A `harness = false` test. Started by `cargo test`, it launches itself under
//! `mpirun` for each layout — 2 and 4 processes (oversubscribed on CI's two
//! cores), 1 and 2 rank-threads each, so T = 2 mixes both transports in one
//! job — plus a job whose rank panics, and `courier info`, each under a
//! deadline that turns a hang into a failure. Started by `mpirun`, it runs the
//! cases; a failed assertion aborts the whole job with the rank and message,
//! which the launching side reports.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier::{test_all, wait_all, wait_any, Comm, Error, Runtime, Source, ANY_SOURCE, ANY_TAG};

type Case = fn(&Comm) -> courier::Result<()>;

const CASES: &[(&str, Case)] = &[
    (
        "every_mode_reaches_every_rank",
        every_mode_reaches_every_rank,
    ),
    (
        "nonblocking_modes_reach_every_rank",
        nonblocking_modes_reach_every_rank,
    ),
    (
        "fifo_per_pair_across_tags_and_sizes",
        fifo_per_pair_across_tags_and_sizes,
    ),
    (
        "large_messages_arrive_intact_whichever_side_waits",
        large_messages_arrive_intact_whichever_side_waits,
    ),
    (
        "any_source_sees_both_transports_in_order",
        any_source_sees_both_transports_in_order,
    ),
    (
        "ssend_completes_only_once_the_receive_is_posted",
        ssend_completes_only_once_the_receive_is_posted,
    ),
    (
        "rsend_without_a_posted_receive_is_not_ready",
        rsend_without_a_posted_receive_is_not_ready,
    ),
    ("rsend_into_a_blocking_recv", rsend_into_a_blocking_recv),
    (
        "rsend_takes_an_offer_while_the_receiver_is_away",
        rsend_takes_an_offer_while_the_receiver_is_away,
    ),
    (
        "mixed_ready_and_standard_sends_match_in_order",
        mixed_ready_and_standard_sends_match_in_order,
    ),
    (
        "offered_receives_of_every_size_take_ready_sends_whole",
        offered_receives_of_every_size_take_ready_sends_whole,
    ),
    (
        "a_cancelled_offered_receive_refuses_rsend",
        a_cancelled_offered_receive_refuses_rsend,
    ),
    (
        "a_window_of_ready_sends_lands_in_posting_order",
        a_window_of_ready_sends_lands_in_posting_order,
    ),
    (
        "rsend_behind_a_cancelled_queued_receive_is_refused",
        rsend_behind_a_cancelled_queued_receive_is_refused,
    ),
    (
        "a_ready_ping_pong_survives_every_other_use_of_its_receives",
        a_ready_ping_pong_survives_every_other_use_of_its_receives,
    ),
    ("probes_and_matched_probes", probes_and_matched_probes),
    ("truncation_and_cancel", truncation_and_cancel),
    (
        "buffered_sends_account_and_detach",
        buffered_sends_account_and_detach,
    ),
    (
        "collectives_are_correct_on_every_root",
        collectives_are_correct_on_every_root,
    ),
    (
        "dup_and_split_span_processes_and_isolate_traffic",
        dup_and_split_span_processes_and_isolate_traffic,
    ),
    ("sendrecv_ring", sendrecv_ring),
    (
        "posted_receives_let_every_standard_send_through",
        posted_receives_let_every_standard_send_through,
    ),
    (
        "a_detach_keeps_its_rank_receiving_until_delivered",
        a_detach_keeps_its_rank_receiving_until_delivered,
    ),
    (
        "bsends_go_through_while_another_rank_resizes_the_buffer",
        bsends_go_through_while_another_rank_resizes_the_buffer,
    ),
    (
        "receives_match_in_posting_order",
        receives_match_in_posting_order,
    ),
    (
        "lane_posted_receives_keep_courier_semantics",
        lane_posted_receives_keep_courier_semantics,
    ),
    (
        "a_receive_behind_a_waiting_any_source_receive_completes",
        a_receive_behind_a_waiting_any_source_receive_completes,
    ),
    (
        "a_ready_send_behind_a_waiting_any_source_receive_lands",
        a_ready_send_behind_a_waiting_any_source_receive_lands,
    ),
    (
        "a_message_claimed_for_a_filled_any_source_receive_goes_to_the_next",
        a_message_claimed_for_a_filled_any_source_receive_goes_to_the_next,
    ),
    (
        "a_ready_send_races_a_local_sender_for_any_source_receives",
        a_ready_send_races_a_local_sender_for_any_source_receives,
    ),
    (
        "a_probe_leaves_a_posted_receive_its_message",
        a_probe_leaves_a_posted_receive_its_message,
    ),
    (
        "remote_receives_complete_every_way",
        remote_receives_complete_every_way,
    ),
    (
        "remote_sends_complete_every_way",
        remote_sends_complete_every_way,
    ),
];

/// Layouts: (processes, threads per process).
const LAYOUTS: [(usize, usize); 4] = [(2, 1), (2, 2), (4, 1), (4, 2)];

/// A job takes a few seconds; oversubscribed CI machines are slow.
const DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some()
    {
        return run_cases();
    }
    launch_all();
}

/// Inside mpirun: every case, in order, on every process.
fn run_cases() {
    if std::env::var("COURIER_CLUSTER_CASE").as_deref() == Ok("panic") {
        let _ = Runtime::new().run(|comm| {
            if comm.rank() == comm.size() - 1 {
                panic!("rank {} gives up on purpose", comm.rank());
            }
            // Blocks on the panicking rank: only the abort can end this.
            comm.recv::<u8>(&mut [0], comm.size() - 1, 0)?;
            Ok(())
        });
        unreachable!("the job should have been aborted");
    }
    // Open MPI's launcher or a PMI one (MPICH's Hydra, Slurm).
    let first = ["OMPI_COMM_WORLD_RANK", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var(v).as_deref() == Ok("0"));
    for (name, case) in CASES {
        let rt = Runtime::new();
        let started = Instant::now();
        let results = rt.run(case);
        if let Err(e) = results {
            eprintln!("case {name} failed: {e}");
            std::process::exit(1);
        }
        if first {
            println!("case {name}: ok ({:.2} s)", started.elapsed().as_secs_f64());
        }
    }
}

/// From `cargo test`: launches the cases under each layout.
fn launch_all() {
    let mut passed = 0;
    let mut failed = Vec::new();
    let me = std::env::current_exe().expect("own path");
    let mut check = |name: String, ok: Result<(), String>| match ok {
        Ok(()) => {
            println!("test {name} ... ok");
            passed += 1;
        }
        Err(why) => {
            println!("test {name} ... FAILED\n{why}");
            failed.push(name);
        }
    };
    for (p, t) in LAYOUTS {
        let out = mpirun(p, &[("COURIER_THREADS", &t.to_string())], &me, &[]);
        let ok = out.and_then(|(ok, stdout, stderr)| {
            let cases = stdout.matches(": ok").count();
            if ok && cases == CASES.len() {
                Ok(())
            } else {
                Err(format!(
                    "exit ok: {ok}, {cases}/{} cases\n{stdout}\n{stderr}",
                    CASES.len()
                ))
            }
        });
        check(
            format!("cluster_cases_with_{p}_processes_x_{t}_threads"),
            ok,
        );
    }
    // Again with Open MPI's shared-memory eager limit cut from 4 KiB to
    // 1 KiB, as a site may set it: sends of 1–4 KiB become rendezvous, and
    // no case may depend on MPI buffering them (a `sendrecv` did).
    if other_mpiexec().is_none() {
        let eager_1k = [
            ("COURIER_THREADS", "2"),
            ("OMPI_MCA_btl_vader_eager_limit", "1024"),
        ];
        let out = mpirun(2, &eager_1k, &me, &[]);
        check(
            "cluster_cases_with_a_1_kib_mpi_eager_limit".into(),
            out.and_then(|(ok, stdout, stderr)| {
                let cases = stdout.matches(": ok").count();
                verdict(ok && cases == CASES.len(), ok, &stdout, &stderr)
            }),
        );
    }
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2"), ("COURIER_CLUSTER_CASE", "panic")],
        &me,
        &[],
    );
    check(
        "a_panicking_rank_aborts_the_job_naming_the_rank".into(),
        out.and_then(|(ok, stdout, stderr)| {
            verdict(
                !ok && stderr.contains("rank 3 panicked") && stderr.contains("on purpose"),
                ok,
                &stdout,
                &stderr,
            )
        }),
    );
    let info = std::path::Path::new(env!("CARGO_BIN_EXE_courier"));
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2")],
        info,
        &["info", "--json", "-"],
    );
    check(
        "courier_info_reports_mpi_processes_and_threads".into(),
        out.and_then(|(ok, stdout, stderr)| {
            let good = ok
                && stdout.contains("\"processes\": 2")
                && stdout.contains("\"threads_per_process\": 2")
                && stdout.contains("MPI_THREAD_MULTIPLE")
                && stdout.contains("\"mpi_library\"");
            verdict(good, ok, &stdout, &stderr)
        }),
    );
    // Two processes of two threads on one node, not bound by mpirun: each
    // process's block of the node-wide plan, read back and checked.
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2")],
        info,
        &["topo", "--check", "--json", "-"],
    );
    check(
        "courier_topo_check_reports_one_verified_block_per_process".into(),
        out.and_then(|(ok, stdout, stderr)| {
            let v: serde_json::Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}\n{stderr}"))?;
            let blocks = v["blocks"].as_array().map_or(0, Vec::len);
            verdict(
                ok && v["verified"] == true && blocks == 2 && v["ranks"] == 4,
                ok,
                &stdout,
                &stderr,
            )
        }),
    );
    // Gossip across processes (2 × 2 ranks: MPI and shared memory) gives what
    // one embedded rank gives for the same seed: the kernels do not depend on
    // the rank count, nor on the transport.
    for protocol in [
        &[
            "--protocol",
            "push-pull",
            "--loss",
            "0.1",
            "--crash",
            "0.05",
        ][..],
        &["--protocol", "rumor", "--model", "async", "--loss", "0.1"][..],
        &["--protocol", "kv", "--loss", "0.2"][..],
    ] {
        let args = [
            &["gossip", "--nodes", "3000", "--seed", "5", "--json", "-"][..],
            protocol,
        ]
        .concat();
        let embedded = Command::new(info)
            .args(&args)
            .args(["-n", "1"])
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                serde_json::from_slice::<serde_json::Value>(&o.stdout).map_err(|e| e.to_string())
            });
        let out = mpirun(2, &[("COURIER_THREADS", "2")], info, &args);
        check(
            format!(
                "gossip_{}_under_mpirun_matches_one_embedded_rank",
                protocol[1]
            ),
            out.and_then(|(ok, stdout, stderr)| {
                let v: serde_json::Value = serde_json::from_str(&stdout)
                    .map_err(|e| format!("{e}: {stdout}\n{stderr}"))?;
                let e = embedded.clone()?;
                let same = [
                    "rounds",
                    "residue",
                    "messages_per_node",
                    "ignorant_per_round",
                    "kv",
                ]
                .iter()
                .all(|k| v[k] == e[k]);
                if ok && v["ranks"] == 4 && e["ranks"] == 1 && same {
                    Ok(())
                } else {
                    Err(format!("exit ok: {ok}\n{stdout}\n{stderr}\nembedded: {e}"))
                }
            }),
        );
    }
    // Ordered multicast across processes: every order and algorithm verified
    // (the command exits non-zero otherwise), and a broken order caught.
    let json = std::env::temp_dir().join(format!("courier-mc-{}.json", std::process::id()));
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2")],
        info,
        &[
            "multicast",
            "--compare",
            "--messages",
            "300",
            "--delay-us",
            "50",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    check(
        "multicast_every_order_verified_across_processes".into(),
        out.and_then(|(ok, stdout, stderr)| {
            let report = std::fs::read_to_string(&json).unwrap_or_default();
            let _ = std::fs::remove_file(&json);
            let v: serde_json::Value =
                serde_json::from_str(&report).map_err(|e| format!("{e}: {stdout}\n{stderr}"))?;
            let runs = v["runs"].as_array().map_or(0, Vec::len);
            let all = v["runs"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|r| r["verified"] == true && r["ranks"] == 4 && r["delivered"] == 1200)
            });
            verdict(ok && runs == 7 && all, ok, &stdout, &stderr)
        }),
    );
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2")],
        info,
        &[
            "multicast",
            "--order",
            "causal",
            "--sabotage",
            "--messages",
            "300",
            "--delay-us",
            "300",
        ],
    );
    check(
        "multicast_broken_order_fails_the_job_with_the_divergence".into(),
        out.and_then(|(ok, stdout, stderr)| {
            verdict(
                !ok && stderr.contains("NOT verified") && stderr.contains("causal"),
                ok,
                &stdout,
                &stderr,
            )
        }),
    );
    let json = std::env::temp_dir().join(format!("courier-bench-{}.json", std::process::id()));
    let args = [
        "bench",
        "p2p",
        "--quick",
        "--sizes",
        "8,1M",
        "--tests",
        "latency,bw,bibw",
        "--window",
        "8",
        "--json",
    ];
    let out = mpirun(
        2,
        &[("COURIER_THREADS", "2")],
        info,
        &[&args[..], &[json.to_str().unwrap()]].concat(),
    );
    check(
        "bench_p2p_under_mpirun_reports_every_mode_over_mpi_with_raw_baselines".into(),
        out.and_then(|(ok, stdout, stderr)| {
            let report = std::fs::read_to_string(&json).unwrap_or_default();
            let _ = std::fs::remove_file(&json);
            let v: serde_json::Value =
                serde_json::from_str(&report).map_err(|e| format!("{e}: {stdout}\n{stderr}"))?;
            let count = |transport: &str| {
                v["results"].as_array().map_or(0, |r| {
                    r.iter().filter(|x| x["transport"] == transport).count()
                })
            };
            let raw = v["baselines"].as_array().map_or(0, |b| {
                b.iter().filter(|x| x["transport"] == "mpi-raw").count()
            });
            // MPI latency records, and only they, carry their raw counterpart
            // timed between their samples; every latency record (the two
            // processes share this node) the handoffs between its cores.
            let raw_alongside = v["results"].as_array().is_some_and(|r| {
                r.iter().all(|x| {
                    let latency = x["test"] == "latency";
                    let mpi_latency = x["transport"] == "mpi" && latency;
                    let flag = x["handoffs_us"]["flag"].as_f64();
                    x["raw_us"].as_f64().is_some_and(|m| m > 0.0) == mpi_latency
                        && flag.is_some_and(|f| f > 0.0) == latency
                })
            });
            // (10 latency + 9 bw + 5 bibw modes) x 2 sizes on shm, the same
            // less send-owned (latency, bw) over mpi; (5 raw latency modes +
            // the raw isend windows one way and both ways) x 2 sizes.
            if ok && count("mpi") == 44 && count("shm") == 48 && raw == 14 && raw_alongside {
                Ok(())
            } else {
                Err(format!(
                    "exit ok: {ok}, mpi {} shm {} raw {raw}, raw_us and handoffs_us where \
                     expected: {raw_alongside}\n{stdout}\n{stderr}",
                    count("mpi"),
                    count("shm")
                ))
            }
        }),
    );
    // Embedded, the send-mode comparison measures MPI itself from a
    // 2-process child job in the same run.
    embedded_bench_with_mpi_baselines(info, &mut check);
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// `courier bench p2p`, embedded, reports MPI's own figures from its child
/// job (Open MPI's `mpirun`, or MPICH's `mpiexec` for an MPICH build).
fn embedded_bench_with_mpi_baselines(
    info: &std::path::Path,
    check: &mut impl FnMut(String, Result<(), String>),
) {
    let json = std::env::temp_dir().join(format!("courier-bench-emb-{}.json", std::process::id()));
    let mut cmd = Command::new(info);
    cmd.args([
        "bench",
        "p2p",
        "--quick",
        "--sizes",
        "8,64K",
        "--tests",
        "latency,bw,bibw",
    ])
    .args(["--modes", "send,ssend,isend", "--window", "8", "--json"])
    .arg(&json)
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_btl", "self,vader,tcp")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    check(
        "embedded_bench_p2p_reports_mpi_baselines_from_a_child_job".into(),
        finish(cmd, "courier bench p2p").and_then(|(ok, stdout, stderr)| {
            let report = std::fs::read_to_string(&json).unwrap_or_default();
            let _ = std::fs::remove_file(&json);
            let v: serde_json::Value =
                serde_json::from_str(&report).map_err(|e| format!("{e}: {stdout}\n{stderr}"))?;
            let has = |mode: &str, test: &str, size: u64| {
                v["baselines"].as_array().is_some_and(|b| {
                    b.iter().any(|x| {
                        x["transport"] == "mpi-raw"
                            && x["mode"] == mode
                            && x["test"] == test
                            && x["size"] == size
                    })
                })
            };
            let all = [8, 65536].iter().all(|&size| {
                has("raw-send", "latency", size)
                    && has("raw-ssend", "latency", size)
                    && has("raw-isend", "bw", size)
                    && has("raw-isend", "bibw", size)
            });
            verdict(ok && all && stdout.contains("x MPI"), ok, &stdout, &stderr)
        }),
    );
}

/// Runs `exe args` under `mpirun -n p`, with a deadline: (success, stdout, stderr).
fn mpirun(
    p: usize,
    env: &[(&str, &str)],
    exe: &std::path::Path,
    args: &[&str],
) -> Result<(bool, String, String), String> {
    let mut cmd = match other_mpiexec() {
        // MPICH's Hydra (or another PMI launcher): neither binds nor
        // refuses to oversubscribe by default.
        Some(mpiexec) => {
            let mut cmd = Command::new(mpiexec);
            cmd.args(["-n", &p.to_string()]);
            for (k, v) in env {
                cmd.args(["-env", k, v]);
            }
            cmd
        }
        None => {
            let mut cmd = Command::new("mpirun");
            cmd.args(["-n", &p.to_string(), "--oversubscribe", "--bind-to", "none"]);
            for (k, v) in env {
                cmd.args(["-x", &format!("{k}={v}")]);
            }
            // Test scripts may run as root (CI containers); Open MPI refuses
            // unless told.
            cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .env("OMPI_MCA_btl", "self,vader,tcp");
            cmd
        }
    };
    cmd.arg(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(cmd, &format!("mpirun -n {p} {env:?}"))
}

/// The launcher of another MPI than Open MPI, from `COURIER_TEST_MPIEXEC`
/// (with Hydra's options: `mpiexec.mpich` for MPICH), for a build against
/// that MPI: `.ci/run` runs these tests again under MPICH, built into a
/// target dir of its own. Unset: Open MPI's `mpirun`.
fn other_mpiexec() -> Option<String> {
    std::env::var("COURIER_TEST_MPIEXEC")
        .ok()
        .filter(|m| !m.is_empty())
}

/// Runs `cmd` to the end, or kills it at the deadline (a hang is a failure).
fn finish(mut cmd: Command, what: &str) -> Result<(bool, String, String), String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {what} (is the MPI launcher installed?): {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {DEADLINE:?}: hang"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    Ok((status.success(), out, err))
}

fn payload(from: usize, to: usize, len: usize) -> Vec<u64> {
    (0..len)
        .map(|i| (from * 1_000_000 + to * 1000 + i) as u64)
        .collect()
}

/// Every blocking mode from every rank to every other, checked at the receiver.
fn every_mode_reaches_every_rank(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    comm.attach_buffer(n * (64 * 8 + courier::BSEND_OVERHEAD))?;
    for len in [1usize, 64, 20_000] {
        for (mode, tag) in [("send", 1), ("ssend", 2), ("bsend", 3), ("owned", 4)] {
            if mode == "bsend" && len > 64 {
                continue;
            }
            // Shift pattern: in round k, send to me+k and receive from me-k.
            for k in 1..n {
                let (to, from) = ((me + k) % n, (me + n - k) % n);
                let out = payload(me, to, len);
                let mut inc = vec![0u64; len];
                comm.scope(|s| {
                    let r = s.irecv(&mut inc, from, tag)?;
                    match mode {
                        "send" => comm.send(&out, to, tag)?,
                        "ssend" => comm.ssend(&out, to, tag)?,
                        "bsend" => comm.bsend(&out, to, tag)?,
                        _ => comm.send_owned(out.clone(), to, tag)?,
                    }
                    let st = r.wait()?;
                    assert_eq!((st.source, st.tag, st.count::<u64>()), (from, tag, len));
                    Ok::<_, Error>(())
                })?;
                assert_eq!(inc, payload(from, me, len), "{mode} of {len} from {from}");
            }
        }
    }
    comm.detach_buffer()?;
    // Ready send: the receiver posts, then tells the sender, who rsends.
    for k in 1..n {
        let (to, from) = ((me + k) % n, (me + n - k) % n);
        let mut inc = [0u64; 3];
        comm.scope(|s| {
            let r = s.irecv(&mut inc, from, 9)?;
            comm.send(&[1u8], from, 8)?;
            comm.recv::<u8>(&mut [0], to, 8)?;
            comm.rsend(&payload(me, to, 3), to, 9)?;
            r.wait()
        })?;
        assert_eq!(inc.to_vec(), payload(from, me, 3));
    }
    Ok(())
}

/// isend, ibsend, issend, irsend, irecv between every pair at once.
fn nonblocking_modes_reach_every_rank(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    comm.attach_buffer(n * (16 * 8 + courier::BSEND_OVERHEAD))?;
    let outs: Vec<Vec<u64>> = (0..n).map(|to| payload(me, to, 16)).collect();
    for mode in 0..3 {
        let mut incs = vec![vec![0u64; 16]; n];
        comm.scope(|s| {
            let mut reqs = Vec::new();
            for (from, inc) in incs.iter_mut().enumerate().filter(|(f, _)| *f != me) {
                reqs.push(s.irecv(inc, from, mode)?);
            }
            for to in (0..n).filter(|&t| t != me) {
                reqs.push(match mode {
                    0 => s.isend(&outs[to], to, mode)?,
                    1 => s.ibsend(&outs[to], to, mode)?,
                    _ => s.issend(&outs[to], to, mode)?,
                });
            }
            wait_all(&mut reqs).map(drop)
        })?;
        for (from, inc) in incs.iter().enumerate().filter(|(f, _)| *f != me) {
            assert_eq!(*inc, payload(from, me, 16), "mode {mode} from {from}");
        }
    }
    comm.detach_buffer()?;
    // irsend to the next rank, whose receive is posted before a barrier.
    let (to, from) = ((me + 1) % n, (me + n - 1) % n);
    let mut inc = [0u64; 4];
    if n > 1 {
        comm.scope(|s| {
            let r = s.irecv(&mut inc, from, 5)?;
            comm.barrier()?;
            let w = s.irsend(&outs[to][..4], to, 5)?;
            let mut reqs = vec![r, w];
            wait_all(&mut reqs).map(drop)
        })?;
        assert_eq!(inc.to_vec(), payload(from, me, 4));
    }
    Ok(())
}

/// Rank 0 sends a mix of tags and sizes (eager and rendezvous) to the last rank,
/// which receives with ANY_TAG: the order is the send order.
fn fifo_per_pair_across_tags_and_sizes(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    let sizes = [1usize, 100_000, 3, 131_072, 8, 1];
    if comm.rank() == 0 {
        for (i, &len) in sizes.iter().enumerate() {
            let msg = vec![i as u32; len];
            if i % 2 == 0 {
                comm.send(&msg, last, i as i32)?;
            } else {
                comm.ssend(&msg, last, i as i32)?;
            }
        }
    } else if comm.rank() == last {
        for (i, &len) in sizes.iter().enumerate() {
            let mut buf = vec![0u32; 131_072];
            let st = comm.recv(&mut buf, 0, ANY_TAG)?;
            assert_eq!((st.tag, st.count::<u32>()), (i as i32, len), "message {i}");
            assert!(buf[..len].iter().all(|&x| x == i as u32));
        }
    }
    Ok(())
}

/// Large messages from each even rank to the next odd one (the same process
/// when T = 2, another one when T = 1), with the receive posted before the send
/// and with the send started before the receive: whichever side copies (from
/// 128 KiB it shares a local copy with the other, waiting in cluster mode's
/// wait), every byte arrives and nothing is written past the message.
fn large_messages_arrive_intact_whichever_side_waits(comm: &Comm) -> courier::Result<()> {
    let (me, tag) = (comm.rank(), 9);
    let peer = me ^ 1;
    for (i, len) in [128 * 1024 + 1, (1 << 20) + 3].into_iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
        for posted_first in [true, false] {
            if me % 2 == 0 {
                if posted_first {
                    comm.barrier()?;
                    comm.send(&msg, peer, tag)?;
                } else {
                    comm.scope(|s| {
                        let r = s.isend(&msg, peer, tag)?;
                        comm.barrier()?;
                        r.wait().map(drop)
                    })?;
                }
                continue;
            }
            let mut buf = vec![0xA5u8; len + 64];
            let st = if posted_first {
                comm.scope(|s| {
                    let r = s.irecv(&mut buf[..], peer, tag)?;
                    comm.barrier()?;
                    r.wait()
                })?
            } else {
                comm.barrier()?;
                comm.recv(&mut buf, peer, tag)?
            };
            let what = format!("{len} bytes, receive posted first: {posted_first}");
            assert_eq!(st.count::<u8>(), len, "{what}");
            assert!(buf[..len] == msg[..], "{what}: the bytes differ");
            assert!(
                buf[len..].iter().all(|&b| b == 0xA5),
                "{what}: written past the end"
            );
        }
    }
    Ok(())
}

/// Every other rank sends numbered messages to rank 0, which takes them with
/// ANY_SOURCE: all arrive, and each sender's arrive in order.
fn any_source_sees_both_transports_in_order(comm: &Comm) -> courier::Result<()> {
    const K: u64 = 50;
    if comm.rank() == 0 {
        let mut next = vec![0u64; comm.size()];
        for _ in 0..K * (comm.size() as u64 - 1) {
            let mut m = [0u64; 2];
            let st = comm.recv(&mut m, ANY_SOURCE, ANY_TAG)?;
            assert_eq!(m[0], st.source as u64);
            assert_eq!(m[1], next[st.source], "from {}", st.source);
            next[st.source] += 1;
        }
        assert!(next[1..].iter().all(|&k| k == K));
    } else {
        for i in 0..K {
            comm.send(&[comm.rank() as u64, i], 0, 3)?;
        }
    }
    Ok(())
}

/// MPI gives a message to the first posted receive that matches it, however
/// long an earlier receive that does not match it keeps waiting. Here an
/// `ANY_SOURCE` receive for tag 7 waits while the receive posted after it,
/// from rank 0 with any tag, is sent tag 5: the second completes first, and
/// the tag-7 message that fills the first is sent only after that.
fn a_receive_behind_a_waiting_any_source_receive_completes(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.send(&[5u64], last, 5)?;
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.send(&[7u64], last, 7)?;
    } else if comm.rank() == last {
        let (mut first, mut second) = ([0u64], [0u64]);
        comm.scope(|s| {
            let waiting = s.irecv(&mut first, ANY_SOURCE, 7)?;
            let behind = s.irecv(&mut second, 0, ANY_TAG)?;
            let st = behind.wait()?;
            assert_eq!((st.source, st.tag), (0, 5), "the receive behind");
            comm.send(&[0u8], 0, 20)?;
            let st = waiting.wait()?;
            assert_eq!((st.source, st.tag), (0, 7), "the waiting receive");
            Ok(())
        })?;
        assert_eq!((first, second), ([7], [5]));
    }
    Ok(())
}

/// A ready send is refused only when no receive is free for it. The receiver
/// posts an `ANY_SOURCE` receive for tag 7 (which waits), a receive from rank
/// 0 with any tag, and a receive from rank 0 for tag 5. Rank 0 sends tag 5,
/// which the second receive takes, then ready-sends tag 5, which must land in
/// the third: the earlier standard message is not a reason to refuse it.
fn a_ready_send_behind_a_waiting_any_source_receive_lands(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.send(&[1u64], last, 5)?;
        comm.rsend(&[2u64], last, 5)?;
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.send(&[3u64], last, 7)?;
    } else if comm.rank() == last {
        let mut bufs = [[0u64]; 3];
        let [first, second, third] = &mut bufs;
        comm.scope(|s| {
            let waiting = s.irecv(first, ANY_SOURCE, 7)?;
            let standard = s.irecv(second, 0, ANY_TAG)?;
            let ready = s.irecv(third, 0, 5)?;
            comm.send(&[0u8], 0, 20)?;
            standard.wait()?;
            ready.wait()?;
            comm.send(&[0u8], 0, 20)?;
            waiting.wait().map(drop)
        })?;
        assert_eq!(bufs, [[3], [1], [2]], "(tag-7, standard, ready) receives");
    }
    Ok(())
}

/// `ROUNDS` rounds of two senders racing into the last rank's receives: it
/// posts one receive (tag 1) per entry of `sources`, then signals rank 0,
/// which runs `send_0(round)`, and the rank before it (of its own process when
/// processes have two threads), which sends `[its rank, round]`. `check`
/// gets each round's buffers once every receive has completed. Needs three
/// ranks (rank 0 would be both senders): with two, it does nothing.
fn race_two_senders<const N: usize>(
    comm: &Comm,
    sources: [Source; N],
    send_0: impl Fn(u64) -> courier::Result<()>,
    check: impl Fn(u64, [[u64; 2]; N]),
) -> courier::Result<()> {
    const ROUNDS: u64 = 300;
    if comm.size() < 3 {
        return Ok(());
    }
    let (last, other) = (comm.size() - 1, comm.size() - 2);
    for round in 0..ROUNDS {
        if comm.rank() == 0 {
            comm.recv::<u8>(&mut [0], last, 20)?;
            send_0(round)?;
        }
        if comm.rank() == other {
            comm.recv::<u8>(&mut [0], last, 20)?;
            comm.send(&[other as u64, round], last, 1)?;
        }
        if comm.rank() == last {
            let mut bufs = [[0u64; 2]; N];
            comm.scope(|s| {
                let mut reqs = bufs
                    .iter_mut()
                    .zip(sources)
                    .map(|(buf, source)| s.irecv(buf, source, 1))
                    .collect::<courier::Result<Vec<_>>>()?;
                comm.send(&[0u8], 0, 20)?;
                comm.send(&[0u8], other, 20)?;
                wait_all(&mut reqs).map(drop)
            })?;
            check(round, bufs);
        }
    }
    Ok(())
}

/// An `ANY_SOURCE` receive is posted on both transports, so a message from
/// another process can be claimed for it just as a rank of its own process
/// fills it. The claimed message then belongs to the next receive that
/// accepts it. Each round, the receiver posts `ANY_SOURCE`, from rank 0, and
/// `ANY_SOURCE` again; rank 0 sends two numbered messages and the other
/// sender one. The receive from rank 0 must hold one of rank 0's, and rank
/// 0's two must land in the order they were sent.
fn a_message_claimed_for_a_filled_any_source_receive_goes_to_the_next(
    comm: &Comm,
) -> courier::Result<()> {
    let (last, other) = (comm.size() - 1, comm.size().saturating_sub(2) as u64);
    let send_0 = |round: u64| {
        comm.send(&[0, 2 * round], last, 1)?;
        comm.send(&[0, 2 * round + 1], last, 1)
    };
    let sources = [ANY_SOURCE, Source::Rank(0), ANY_SOURCE];
    race_two_senders(comm, sources, send_0, |round, bufs| {
        let from_0: Vec<u64> = bufs.iter().filter(|m| m[0] == 0).map(|m| m[1]).collect();
        assert_eq!(
            from_0,
            [2 * round, 2 * round + 1],
            "round {round}: {bufs:?}"
        );
        assert_eq!(bufs[1][0], 0, "round {round}: the receive from rank 0");
        assert!(bufs.contains(&[other, round]), "round {round}: {bufs:?}");
    })
}

/// A ready send is answered *yes* when any matching receive is free, even if
/// the first one it looks at has just been filled over shared memory (the
/// query drains the local sender's message while withdrawing it). Each
/// round the receiver posts two `ANY_SOURCE` receives; the other sender
/// sends a standard message and rank 0 a ready one, at the same time. Both
/// must land, one in each.
fn a_ready_send_races_a_local_sender_for_any_source_receives(comm: &Comm) -> courier::Result<()> {
    let (last, other) = (comm.size() - 1, comm.size().saturating_sub(2) as u64);
    let send_0 = |round: u64| comm.rsend(&[0, round], last, 1);
    race_two_senders(comm, [ANY_SOURCE; 2], send_0, |round, mut bufs| {
        bufs.sort();
        assert_eq!(bufs, [[0, round], [other, round]], "round {round}");
    })
}

/// Two receives posted from rank 0, the first for tag 1, the second for any
/// tag; rank 0 then sends tag 1 and tag 2. The tag-1 message belongs to the
/// first receive even when it arrives while the receiver is between probing
/// for the first and for the second.
fn receives_match_in_posting_order(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    for round in 0..300u64 {
        if comm.rank() == 0 {
            comm.recv::<u8>(&mut [], last, 9)?; // both receives are posted
            comm.send(&[round], last, 1)?;
            comm.send(&[round + 1000], last, 2)?;
        } else if comm.rank() == last {
            let (mut first, mut second) = ([0u64], [0u64]);
            comm.scope(|s| {
                let r1 = s.irecv(&mut first, 0, 1)?;
                let r2 = s.irecv(&mut second, 0, ANY_TAG)?;
                comm.send::<u8>(&[], 0, 9)?;
                // The second first: taken out of order, it would hold tag 1 (and
                // the first would wait forever).
                let tag = r2.wait()?.tag;
                assert_eq!(tag, 2, "round {round}: matched out of posting order");
                assert_eq!(r1.wait()?.tag, 1);
                Ok::<_, Error>(())
            })?;
            assert_eq!((first, second), ([round], [round + 1000]), "round {round}");
        }
    }
    Ok(())
}

/// Nonblocking receives from one remote rank with an exact tag are posted on
/// their lane at the MPI level, where MPI matches them; everything courier
/// promises must still hold:
/// * a receive posted after an `ANY_TAG` one from the same rank does not take
///   the message the earlier one should (posting order);
/// * a window larger than the lane-posted limit receives in order;
/// * a message too long for the buffer is reported with its size, and the
///   buffer is untouched, also at rendezvous size;
/// * an unmatched receive cancels; one whose message arrived first does not,
///   and still delivers it.
fn lane_posted_receives_keep_courier_semantics(comm: &Comm) -> courier::Result<()> {
    const WINDOW: u64 = 100; // more than a thread keeps posted on lanes (16)
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [], last, 9)?; // both receives are posted
        comm.send(&[1u64], last, 1)?;
        comm.send(&[2u64], last, 1)?;
        comm.recv::<u8>(&mut [], last, 9)?; // the window is posted
        for i in 0..WINDOW {
            comm.send(&[i], last, 2)?;
        }
        comm.send(&[3u64; 8], last, 3)?;
        comm.send(&[4u64; 2048], last, 3)?;
        comm.send(&[5u64], last, 4)?;
        comm.send::<u8>(&[], last, 9)?; // the tag-4 message went first
    } else if comm.rank() == last {
        let (mut any, mut one) = ([0u64], [0u64]);
        comm.scope(|s| {
            let r_any = s.irecv(&mut any, 0, ANY_TAG)?;
            let r_one = s.irecv(&mut one, 0, 1)?;
            comm.send::<u8>(&[], 0, 9)?;
            // The later one first: had it been matched ahead of the earlier
            // one, it would hold the first message.
            r_one.wait()?;
            r_any.wait().map(drop)
        })?;
        assert_eq!((any, one), ([1], [2]), "matched out of posting order");

        let mut window = vec![[u64::MAX]; WINDOW as usize];
        comm.scope(|s| {
            let mut reqs = Vec::new();
            for b in window.iter_mut() {
                reqs.push(s.irecv(b, 0, 2)?);
            }
            comm.send::<u8>(&[], 0, 9)?;
            for r in reqs.into_iter().rev() {
                r.wait()?;
            }
            Ok::<_, Error>(())
        })?;
        let got: Vec<u64> = window.iter().map(|b| b[0]).collect();
        assert_eq!(got, (0..WINDOW).collect::<Vec<_>>(), "window out of order");

        for expect in [64, 16384] {
            let mut small = [0u64; 2];
            let outcome = comm.scope(|s| s.irecv(&mut small, 0, 3)?.wait());
            match outcome {
                Err(Error::Truncated { message, buffer }) => {
                    assert_eq!((message, buffer), (expect, 16))
                }
                other => panic!("expected truncation, got {other:?}"),
            }
            assert_eq!(small, [0; 2], "a truncated receive wrote the buffer");
        }

        let (mut never, mut early) = ([0u64], [0u64]);
        comm.scope(|s| {
            let mut r = s.irecv(&mut never, 0, 77)?;
            assert!(r.cancel()?, "an unmatched receive was not cancelled");
            let mut r = s.irecv(&mut early, 0, 4)?;
            comm.recv::<u8>(&mut [], 0, 9)?; // its message has arrived
            assert!(!r.cancel()?, "a matched receive was cancelled");
            assert_eq!(r.wait()?.tag, 4);
            Ok::<_, Error>(())
        })?;
        assert_eq!((never, early), ([0], [5]));
    }
    Ok(())
}

/// An issend to a rank in another process is not complete until that rank posts
/// its receive, which it only does after hearing that the send was still pending.
fn ssend_completes_only_once_the_receive_is_posted(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        assert!(
            !comm.is_local(last)?,
            "rank 0 and the last rank share a process"
        );
        let data = [42u64; 4];
        comm.scope(|s| {
            let mut r = s.issend(&data, last, 1)?;
            for _ in 0..1000 {
                assert!(
                    r.test()?.is_none(),
                    "issend completed before the receive was posted"
                );
            }
            comm.send(&[1u8], last, 2)?;
            r.wait().map(drop)
        })?;
    } else if comm.rank() == last {
        comm.recv::<u8>(&mut [0], 0, 2)?;
        let mut buf = [0u64; 4];
        comm.recv(&mut buf, 0, 1)?;
        assert_eq!(buf, [42; 4]);
    }
    Ok(())
}

/// A ready send to a remote rank with no matching receive posted returns
/// NotReady and delivers nothing; once posted, it goes through.
fn rsend_without_a_posted_receive_is_not_ready(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        assert_not_ready(
            comm.rsend(&[7u64], last, 9),
            (last, 9),
            "without a posted receive",
        );
        comm.send(&[1u8], last, 2)?;
        comm.recv::<u8>(&mut [0], last, 3)?;
        comm.rsend(&[8u64], last, 9)?;
    } else if comm.rank() == last {
        // Waiting here answers rank 0's query: no receive for tag 9 is posted.
        comm.recv::<u8>(&mut [0], 0, 2)?;
        assert_eq!(
            comm.iprobe(0, 9)?,
            None,
            "a refused ready send delivered something"
        );
        let mut v = [0u64];
        recv_after_signal(comm, &mut v, 9, 3)?;
        assert_eq!(v, [8]);
    }
    Ok(())
}

/// A ready send into a blocking `recv` from a rank in another process goes
/// through: that receive waits on its own `MPI_Irecv`, and withdraws it into the
/// registry when the query comes, so the query finds it posted.
fn rsend_into_a_blocking_recv(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 12)?;
        comm.rsend(&[5u64, 6], last, 11)?;
        comm.rsend(&[7u64], last, 13)?;
        comm.recv::<u8>(&mut [0], last, 12)?;
        comm.rsend(&[9u64; 2048], last, 14)?;
    } else if comm.rank() == last {
        // Queries are answered only from inside a courier call, and the eager
        // send makes none: rank 0's query waits until the receive is posted.
        comm.send(&[1u8], 0, 12)?;
        let mut v = [0u64; 2];
        let st = comm.recv(&mut v, 0, 11)?;
        assert_eq!((v, st.tag, st.count::<u64>()), ([5, 6], 11, 2));
        // The same through a receive of any tag (the matched-probe path).
        let mut w = [0u64];
        let st = comm.recv(&mut w, 0, ANY_TAG)?;
        assert_eq!((w, st.tag), ([7], 13));
        // A ready send longer than the posted receive (and past MPI's eager
        // size): truncated, reported whole, the buffer untouched.
        let mut small = [0u64; 4];
        match recv_after_signal(comm, &mut small, 14, 12) {
            Err(Error::Truncated { message, buffer }) => assert_eq!((message, buffer), (16384, 32)),
            other => panic!("expected truncation, got {other:?}"),
        }
        assert_eq!(small, [0; 4], "a truncated ready receive wrote the buffer");
    }
    Ok(())
}

/// Asserts that a ready send `what` was refused as `NotReady` for (dest, tag)
/// `to`.
fn assert_not_ready(sent: courier::Result<()>, to: (usize, i32), what: &str) {
    match sent {
        Err(Error::NotReady { dest, tag }) => assert_eq!((dest, tag), to, "rsend {what}"),
        other => panic!("rsend {what}: {other:?}"),
    }
}

/// Rank 0's first ready send to `last`, on tag `tag`: answered by the query
/// handshake, after which `last` offers its receives from rank 0 (processes
/// of one node share the offers; all of this suite's are on one).
fn first_rsend(comm: &Comm, last: usize, tag: i32) -> courier::Result<()> {
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.rsend(&[1u64], last, tag)?;
    } else if comm.rank() == last {
        let mut v = [0u64];
        recv_after_signal(comm, &mut v, tag, 20)?;
        assert_eq!(v, [1]);
    }
    Ok(())
}

/// Receives from rank 0 with `tag` into `buf`, posted before rank 0 is told
/// so by a byte on `signal`: what a ready send needs.
fn recv_after_signal(
    comm: &Comm,
    buf: &mut [u64],
    tag: i32,
    signal: i32,
) -> courier::Result<courier::Status> {
    comm.scope(|s| {
        let r = s.irecv(buf, 0, tag)?;
        comm.send(&[0u8], 0, signal)?;
        r.wait()
    })
}

/// Once a lane has carried a ready send, its receiver offers the receives it
/// posts, and a ready send into an offered receive needs nothing from the
/// receiver: here the receiver is outside the runtime (waiting for a file)
/// while it is sent. The query handshake would wait for an answer that never
/// comes, and the receiver's deadline would fail the job. The standard send
/// after it is the pair's next message.
fn rsend_takes_an_offer_while_the_receiver_is_away(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    first_rsend(comm, last, 21)?;
    // Named by rank 0, whose process id makes it unique on this machine.
    let flag = |pid: u64| std::env::temp_dir().join(format!("courier-offer-{pid}"));
    if comm.rank() == 0 {
        let pid = u64::from(std::process::id());
        comm.send(&[pid], last, 22)?;
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.rsend(&[2u64], last, 21)?;
        std::fs::write(flag(pid), b"sent").expect("writing the flag file");
        comm.send(&[3u64], last, 21)?;
    } else if comm.rank() == last {
        let mut pid = [0u64];
        comm.recv(&mut pid, 0, 22)?;
        let mut v = [0u64];
        comm.scope(|s| {
            let r = s.irecv(&mut v, 0, 21)?;
            comm.send(&[0u8], 0, 20)?;
            // Away from the runtime until the ready send has returned.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag(pid[0]).exists() {
                assert!(
                    Instant::now() < deadline,
                    "the ready send waited for its receiver to poll"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            r.wait()
        })?;
        let _ = std::fs::remove_file(flag(pid[0]));
        assert_eq!(v, [2]);
        let mut w = [0u64];
        comm.recv(&mut w, 0, ANY_TAG)?;
        assert_eq!(w, [3], "the message after the ready send");
    }
    Ok(())
}

/// Rounds of four receives posted at once, filled by a mix of ready,
/// nonblocking ready and standard sends (chosen by a fixed pseudo-random
/// sequence, some past MPI's eager size): every message lands in the receive
/// posting order gives it, whether its ready send took an offer, was asked
/// for, or a standard send withdrew an offer.
fn mixed_ready_and_standard_sends_match_in_order(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    first_rsend(comm, last, 1)?;
    let mut lcg = 0x2545_f491_u64;
    for round in 0..60u64 {
        // (tag, mode, length) of each of the round's four messages.
        let plan: Vec<(i32, u64, usize)> = (0..4)
            .map(|_| {
                lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let len = if (lcg >> 20) % 16 == 0 {
                    1000
                } else {
                    1 + (lcg >> 8) as usize % 4
                };
                (1 + (lcg >> 33) as i32 % 2, (lcg >> 40) % 3, len)
            })
            .collect();
        let data = |j: usize, len: usize| vec![round * 100 + j as u64; len];
        if comm.rank() == 0 {
            let msgs: Vec<Vec<u64>> = (0..4).map(|j| data(j, plan[j].2)).collect();
            comm.recv::<u8>(&mut [0], last, 20)?;
            comm.scope(|s| {
                let mut pending = Vec::new();
                for (msg, &(tag, mode, _)) in msgs.iter().zip(&plan) {
                    match mode {
                        0 => comm.send(msg, last, tag)?,
                        1 => comm.rsend(msg, last, tag)?,
                        _ => pending.push(s.irsend(msg, last, tag)?),
                    }
                }
                wait_all(&mut pending).map(drop)
            })?;
        } else if comm.rank() == last {
            let mut bufs = vec![vec![0u64; 1000]; 4];
            let statuses = comm.scope(|s| {
                let mut reqs = Vec::new();
                for (b, &(tag, _, _)) in bufs.iter_mut().zip(&plan) {
                    reqs.push(s.irecv(b, 0, tag)?);
                }
                comm.send(&[0u8], 0, 20)?;
                wait_all(&mut reqs)
            })?;
            for (j, (st, &(tag, mode, len))) in statuses.iter().zip(&plan).enumerate() {
                assert_eq!(
                    (st.tag, st.count::<u64>(), &bufs[j][..len]),
                    (tag, len, &data(j, len)[..]),
                    "round {round}, message {j} (mode {mode})"
                );
            }
        }
    }
    Ok(())
}

/// Ready sends into offered receives whose buffers alternate between sizes
/// that take the receive posted ahead while the receiver waited (up to 2 KiB,
/// copied from its own region) and larger ones, which withdraw that receive
/// and post their own into the user's buffer: every message lands whole, with
/// its length, in order, and the receive's elements beyond it stay untouched.
fn offered_receives_of_every_size_take_ready_sends_whole(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    first_rsend(comm, last, 51)?;
    // Buffer lengths in u64: 256 is exactly 2 KiB, 257 just above.
    let caps = [1usize, 256, 257, 4, 1000, 2, 256, 8];
    for i in 0..64usize {
        let cap = caps[i % caps.len()];
        let len = 1 + (i * 7) % cap;
        let data: Vec<u64> = (0..len as u64).map(|k| (i as u64) << 32 | k).collect();
        if comm.rank() == 0 {
            comm.recv::<u8>(&mut [0], last, 20)?;
            comm.rsend(&data, last, 51)?;
        } else if comm.rank() == last {
            let mut buf = vec![u64::MAX; cap];
            let st = recv_after_signal(comm, &mut buf, 51, 20)?;
            assert_eq!(
                (st.count::<u64>(), &buf[..len]),
                (len, &data[..]),
                "message {i} into a receive of {cap} u64"
            );
            assert!(
                buf[len..].iter().all(|&w| w == u64::MAX),
                "message {i} wrote past its length"
            );
        }
    }
    Ok(())
}

/// Cancelling an offered receive withdraws the offer: the ready send that
/// follows finds nothing posted and is refused, and nothing is delivered.
fn a_cancelled_offered_receive_refuses_rsend(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    first_rsend(comm, last, 41)?;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 20)?;
        assert_not_ready(
            comm.rsend(&[9u64], last, 41),
            (last, 41),
            "into a cancelled receive",
        );
        comm.send(&[1u8], last, 20)?;
    } else if comm.rank() == last {
        let mut v = [0u64];
        comm.scope(|s| {
            let mut r = s.irecv(&mut v, 0, 41)?;
            assert!(r.cancel()?, "an offered receive nothing matched cancels");
            Ok(())
        })?;
        comm.send(&[0u8], 0, 20)?;
        comm.recv::<u8>(&mut [0], 0, 20)?; // answers rank 0's query meanwhile
        assert_eq!(v, [0], "a cancelled receive was written");
        assert_eq!(
            comm.iprobe(0, ANY_TAG)?,
            None,
            "a refused ready send delivered"
        );
    }
    Ok(())
}

/// A window of receives posted at once, filled by back-to-back ready sends,
/// blocking then nonblocking: the receiver offers one receive at a time, so
/// a send that finds the next offer not raised yet asks instead; every
/// message lands in the receive posting order gives it.
fn a_window_of_ready_sends_lands_in_posting_order(comm: &Comm) -> courier::Result<()> {
    const W: u64 = 16;
    let last = comm.size() - 1;
    first_rsend(comm, last, 44)?;
    for round in 0..4u64 {
        let data = |j: u64| [round * 100 + j, j];
        if comm.rank() == 0 {
            comm.recv::<u8>(&mut [0], last, 20)?;
            if round % 2 == 0 {
                for j in 0..W {
                    comm.rsend(&data(j), last, 44)?;
                }
            } else {
                let msgs: Vec<[u64; 2]> = (0..W).map(data).collect();
                comm.scope(|s| {
                    let mut reqs = msgs
                        .iter()
                        .map(|m| s.irsend(m, last, 44))
                        .collect::<courier::Result<Vec<_>>>()?;
                    wait_all(&mut reqs).map(drop)
                })?;
            }
        } else if comm.rank() == last {
            let mut bufs = vec![[0u64; 2]; W as usize];
            comm.scope(|s| {
                let mut reqs = bufs
                    .iter_mut()
                    .map(|b| s.irecv(b, 0, 44))
                    .collect::<courier::Result<Vec<_>>>()?;
                comm.send(&[0u8], 0, 20)?;
                wait_all(&mut reqs).map(drop)
            })?;
            let want: Vec<[u64; 2]> = (0..W).map(data).collect();
            assert_eq!(bufs, want, "round {round}");
        }
    }
    Ok(())
}

/// A ready-send ping-pong, whose every receive is posted alone and offered
/// (the fast path of a ping-pong), while the receiving rank also does what
/// else a registry serves, the receive waiting: posts a second receive
/// behind it, probes, takes a standard send into it, cancels it and posts it
/// again. Every message lands where posting order puts it, and the probe
/// sees no ping before its ready send.
fn a_ready_ping_pong_survives_every_other_use_of_its_receives(comm: &Comm) -> courier::Result<()> {
    const ROUNDS: u64 = 16;
    let last = comm.size() - 1;
    first_rsend(comm, last, 50)?;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 20)?;
        for round in 0..ROUNDS {
            let mut pong = [0u64];
            comm.scope(|s| {
                let r = s.irecv(&mut pong, last, 51)?;
                // Every fourth ping is a standard send, into a receive that
                // was posted with nothing else happening (see below).
                if round % 4 == 0 && round > 0 {
                    comm.send(&[round], last, 50)?;
                } else {
                    comm.rsend(&[round], last, 50)?;
                }
                r.wait()
            })?;
            assert_eq!(pong, [round + 100], "pong {round}");
            if round % 4 == 1 {
                comm.send(&[round + 200], last, 52)?;
            }
        }
    } else if comm.rank() == last {
        let mut ping = [0u64];
        comm.scope(|s| {
            let r = s.irecv(&mut ping, 0, 50)?;
            comm.send(&[0u8], 0, 20)?;
            r.wait()
        })?;
        for round in 0..ROUNDS {
            assert_eq!(ping, [round], "ping {round}");
            let (mut next, mut extra, mut cancelled) = ([u64::MAX], [0u64], [u64::MAX]);
            comm.scope(|s| {
                let more = round + 1 < ROUNDS;
                if more && round % 4 == 0 {
                    // Posted, cancelled, and posted again below.
                    let mut r = s.irecv(&mut cancelled, 0, 50)?;
                    assert!(r.cancel()?, "a receive no ping can have reached");
                }
                let r = more.then(|| s.irecv(&mut next, 0, 50)).transpose()?;
                let mut behind = None;
                match round % 4 {
                    // A second receive behind the waiting one.
                    1 => behind = Some(s.irecv(&mut extra, 0, 52)?),
                    // A probe: the next ping waits for this pong.
                    2 => assert_eq!(comm.iprobe(0, 50)?, None, "a ping before its pong"),
                    _ => {}
                }
                comm.rsend(&[round + 100], 0, 51)?;
                if let Some(b) = behind {
                    assert_eq!(b.wait()?.tag, 52);
                }
                r.map_or(Ok(()), |r| r.wait().map(drop))
            })?;
            if round % 4 == 1 {
                assert_eq!(extra, [round + 200], "the receive behind, round {round}");
            }
            assert_eq!(cancelled, [u64::MAX], "a cancelled receive was written");
            ping = next;
        }
    }
    Ok(())
}

/// A receive queued behind an offered one (same sender, same tag) and then
/// cancelled is never offered: the ready send into the offered receive lands,
/// and the ready sends after it are refused, the second as the first. Nothing
/// else is delivered.
fn rsend_behind_a_cancelled_queued_receive_is_refused(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    first_rsend(comm, last, 45)?;
    if comm.rank() == 0 {
        comm.recv::<u8>(&mut [0], last, 20)?;
        comm.rsend(&[1u64], last, 45)?;
        for _ in 0..2 {
            let refused = comm.rsend(&[2u64], last, 45);
            assert_not_ready(refused, (last, 45), "behind a cancelled receive");
        }
        comm.send(&[1u8], last, 20)?;
    } else if comm.rank() == last {
        let (mut v, mut w) = ([0u64], [0u64]);
        comm.scope(|s| {
            let first = s.irecv(&mut v, 0, 45)?;
            let mut second = s.irecv(&mut w, 0, 45)?;
            assert!(second.cancel()?, "a receive behind an offer cancels");
            comm.send(&[0u8], 0, 20)?;
            first.wait().map(drop)
        })?;
        comm.recv::<u8>(&mut [0], 0, 20)?; // answers rank 0's queries meanwhile
        assert_eq!((v, w), ([1], [0]), "what the receives hold");
        assert_eq!(
            comm.iprobe(0, ANY_TAG)?,
            None,
            "a refused ready send delivered"
        );
    }
    Ok(())
}

fn probes_and_matched_probes(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.send(&[1u32, 2, 3], last, 4)?;
        comm.send(&[9u32], last, 5)?;
    } else if comm.rank() == last {
        let st = comm.probe(0, 5)?;
        assert_eq!((st.source, st.tag, st.count::<u32>()), (0, 5, 1));
        let msg = comm.mprobe(ANY_SOURCE, 4)?;
        assert_eq!(msg.status().count::<u32>(), 3);
        // Claimed: an iprobe no longer sees it.
        assert_eq!(comm.iprobe(0, 4)?, None);
        let (v, _) = msg.mrecv_owned::<u32>()?;
        assert_eq!(v, [1, 2, 3]);
        let (v, st) = comm.recv_owned::<u32>(0, ANY_TAG)?;
        assert_eq!((v, st.tag), (vec![9], 5));
    }
    Ok(())
}

/// Set by a thread that has seen rank 0's messages queued at the MPI level
/// in its process (see the case below).
static QUEUED_BY_MPI: AtomicBool = AtomicBool::new(false);

/// MPI matches a message with the first posted receive that accepts it, so a
/// probe never sees a message that a posted receive takes. The last rank
/// posts a receive from rank 0 for any tag; rank 0 sends two tag-1 messages.
/// They are queued in MPI before the receiver probes: with two threads per
/// process the rank before it, on the same process, receives a later
/// message from rank 0 (which makes Open MPI queue the two) and then raises
/// a flag the receiver waits for outside the runtime; with one, the receiver
/// sleeps. The posted receive must get the first message, a matched probe
/// the second, and a probe after that nothing.
fn a_probe_leaves_a_posted_receive_its_message(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    // Whether the rank before the last shares its process (each rank asks
    // from where it stands; rank 0 is told).
    let neighbour = |r: usize| r == last - 1 && r != 0;
    if comm.rank() == 0 {
        let mut has_neighbour = [0u8];
        comm.recv(&mut has_neighbour, last, 20)?;
        comm.send(&[1u64], last, 1)?;
        comm.send(&[2u64], last, 1)?;
        if has_neighbour == [1] {
            comm.send(&[0u8], last - 1, 21)?;
        }
    } else if neighbour(comm.rank()) && comm.is_local(last)? {
        comm.recv::<u8>(&mut [0], 0, 21)?;
        QUEUED_BY_MPI.store(true, Ordering::Release);
    } else if comm.rank() == last {
        let has_neighbour = neighbour(last - 1) && comm.is_local(last - 1)?;
        let (mut posted, mut probed) = ([0u64], [0u64]);
        comm.scope(|s| {
            let r = s.irecv(&mut posted, 0, ANY_TAG)?;
            comm.send(&[u8::from(has_neighbour)], 0, 20)?;
            if has_neighbour {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !QUEUED_BY_MPI.swap(false, Ordering::Acquire) {
                    assert!(
                        Instant::now() < deadline,
                        "the neighbour never saw the messages"
                    );
                    std::thread::yield_now();
                }
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
            let msg = comm.mprobe(0, 1)?;
            msg.mrecv(&mut probed)?;
            assert_eq!(comm.iprobe(0, ANY_TAG)?, None, "a third message");
            r.wait().map(drop)
        })?;
        assert_eq!(
            (posted, probed),
            ([1], [2]),
            "(posted receive, matched probe)"
        );
    }
    Ok(())
}

fn truncation_and_cancel(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        comm.send(&[1u64; 8], last, 1)?;
        comm.send(&[2u64; 2], last, 1)?;
        comm.send(&[3u8; 3], last, 1)?;
        comm.send(&[4u64; 2048], last, 1)?;
        comm.send(&[5u64; 2], last, 1)?;
    } else if comm.rank() == last {
        let mut small = [0u64; 4];
        match comm.recv(&mut small, 0, 1) {
            Err(Error::Truncated { message, buffer }) => assert_eq!((message, buffer), (64, 32)),
            other => panic!("expected truncation, got {other:?}"),
        }
        assert_eq!(small, [0; 4], "a truncated receive wrote the buffer");
        comm.recv(&mut small, 0, 1)?;
        assert_eq!(small[..2], [2, 2]);
        assert!(matches!(
            comm.recv(&mut small, 0, 1),
            Err(Error::TypeMismatch { bytes: 3, .. })
        ));
        // A rendezvous-sized message into a small receive (which posts its own
        // MPI receive): consumed, reported with its size, buffer untouched.
        small = [0; 4];
        match comm.recv(&mut small, 0, 1) {
            Err(Error::Truncated { message, buffer }) => {
                assert_eq!((message, buffer), (16384, 32))
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        assert_eq!(small, [0; 4], "a truncated receive wrote the buffer");
        comm.recv(&mut small, 0, 1)?;
        assert_eq!(small[..2], [5, 5]);
        let mut buf = [0u8; 4];
        let cancelled = comm.scope(|s| {
            let mut r = s.irecv(&mut buf, 0, 77)?;
            r.cancel()
        })?;
        assert!(cancelled);
    }
    Ok(())
}

fn buffered_sends_account_and_detach(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    if comm.rank() == 0 {
        assert_eq!(comm.bsend(&[1u8], last, 1), Err(Error::NoBufferAttached));
        comm.attach_buffer(2 * (100 + courier::BSEND_OVERHEAD))?;
        comm.bsend(&[5u8; 100], last, 1)?;
        comm.bsend(&[6u8; 100], last, 1)?;
        assert!(matches!(
            comm.bsend(&[0u8; 1000], last, 1),
            Err(Error::BufferExhausted { .. })
        ));
        assert_eq!(comm.detach_buffer()?, 2 * (100 + courier::BSEND_OVERHEAD));
    } else if comm.rank() == last {
        for v in [5u8, 6] {
            let mut b = [0u8; 100];
            comm.recv(&mut b, 0, 1)?;
            assert_eq!(b, [v; 100]);
        }
    }
    Ok(())
}

/// 2×2 matrices mod 2^64: associative, not commutative, so a reduce that got
/// the order wrong gives a different product.
type M = [u64; 4];
fn mul(a: M, b: M) -> M {
    let m = |x: u64, y: u64| x.wrapping_mul(y);
    [
        m(a[0], b[0]).wrapping_add(m(a[1], b[2])),
        m(a[0], b[1]).wrapping_add(m(a[1], b[3])),
        m(a[2], b[0]).wrapping_add(m(a[3], b[2])),
        m(a[2], b[1]).wrapping_add(m(a[3], b[3])),
    ]
}
fn mat(r: usize) -> M {
    [r as u64 + 1, 2, 3 * r as u64 + 1, 5]
}

fn collectives_are_correct_on_every_root(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    comm.barrier()?;
    let want = (1..n).fold(mat(0), |acc, r| mul(acc, mat(r)));
    for root in 0..n {
        let mut b = if me == root {
            [root as u64 + 7; 5]
        } else {
            [0; 5]
        };
        comm.broadcast(&mut b, root)?;
        assert_eq!(b, [root as u64 + 7; 5]);
        let mut out = [[0u64; 4]];
        comm.reduce(&[mat(me)], &mut out, root, mul)?;
        if me == root {
            assert_eq!(out[0], want, "reduce order at root {root}");
        }
        let mut g = vec![0u64; if me == root { 2 * n } else { 0 }];
        comm.gather(&[me as u64, 1], &mut g, root)?;
        if me == root {
            let expect: Vec<u64> = (0..n).flat_map(|r| [r as u64, 1]).collect();
            assert_eq!(g, expect);
        }
        let src: Vec<u64> = (0..n as u64 * 2).map(|x| x + 100 * root as u64).collect();
        let mut mine = [0u64; 2];
        comm.scatter(if me == root { &src } else { &[] }, &mut mine, root)?;
        assert_eq!(mine.to_vec(), src[2 * me..2 * me + 2].to_vec());
    }
    let mut all = [[0u64; 4]];
    comm.all_reduce(&[mat(me)], &mut all, mul)?;
    assert_eq!(all[0], want);
    let mut ag = vec![0u64; n];
    comm.all_gather(&[me as u64 * 3], &mut ag)?;
    assert_eq!(ag, (0..n as u64).map(|r| r * 3).collect::<Vec<_>>());
    let send: Vec<u64> = (0..n).map(|j| (me * 100 + j) as u64).collect();
    let mut recv = vec![0u64; n];
    comm.all_to_all(&send, &mut recv)?;
    assert_eq!(
        recv,
        (0..n).map(|i| (i * 100 + me) as u64).collect::<Vec<_>>()
    );
    comm.barrier()
}

fn dup_and_split_span_processes_and_isolate_traffic(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    let dup = comm.dup()?;
    let last = n - 1;
    if me == 0 {
        dup.send(&[2u8], last, 1)?;
        comm.send(&[1u8], last, 1)?;
    } else if me == last {
        let mut b = [0u8];
        comm.recv(&mut b, 0, 1)?;
        assert_eq!(b, [1], "the world receive took the dup's message");
        dup.recv(&mut b, 0, 1)?;
        assert_eq!(b, [2]);
    }
    // Even and odd ranks: each half spans the processes when T = 1.
    let half = comm
        .split(Some((me % 2) as u32), -(me as i32))?
        .expect("a color was given");
    let size = n.div_ceil(2) - (me % 2) * (n % 2);
    assert_eq!(half.size(), size);
    let mut sum = [0u64];
    half.all_reduce(&[me as u64], &mut sum, |a, b| a + b)?;
    let expect: u64 = (0..n).filter(|r| r % 2 == me % 2).map(|r| r as u64).sum();
    assert_eq!(sum[0], expect);
    // Keys reversed the order: rank 0 of the half is its largest world rank.
    let mut top = [me as u64];
    half.broadcast(&mut top, 0)?;
    assert_eq!(
        top[0],
        (0..n).filter(|r| r % 2 == me % 2).max().unwrap() as u64
    );
    let none = comm.split(None, 0)?;
    assert!(none.is_none());
    Ok(())
}

fn sendrecv_ring(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    let mut v = [me as u64; 1000];
    for _ in 0..n {
        comm.sendrecv_replace(&mut v, (me + 1) % n, 0, (me + n - 1) % n, 0)?;
    }
    assert_eq!(v, [me as u64; 1000]);
    // Every rank gets its left neighbour's message of each round, in order,
    // from any source and with any tag.
    let left = (me + n - 1) % n;
    for round in 0..3 * n as u64 {
        let mut got = [u64::MAX; 2];
        let st = comm.sendrecv(
            &[me as u64, round],
            (me + 1) % n,
            7,
            &mut got,
            ANY_SOURCE,
            ANY_TAG,
        )?;
        assert_eq!(got, [left as u64, round]);
        assert_eq!((st.source, st.tag, st.bytes), (left, 7, 16));
    }
    // Every rank sends at once, so a send that waited for its receiver
    // before receiving would deadlock the ring: sizes around Open MPI's
    // shared-memory eager limit (4 KiB including its header), and below it,
    // which a lowered limit (the job `cluster_cases_with_a_1_kib_mpi_eager_limit`)
    // makes rendezvous sends.
    for bytes in [
        1000, 2000, 3000, 3840, 4000, 4064, 4080, 4088, 4096, 4097, 8192,
    ] {
        let out: Vec<u8> = (0..bytes).map(|i| (i + me) as u8).collect();
        let mut got = vec![0u8; bytes];
        let st = comm.sendrecv(&out, (me + 1) % n, 8, &mut got, left, 8)?;
        assert_eq!(st.bytes, bytes);
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == (i + left) as u8),
            "{bytes} bytes from rank {left}"
        );
    }
    // Again with another receive of each rank pending, so the exchange's
    // receive is registered behind it instead of posted on its own.
    let mut held = [u64::MAX];
    comm.scope(|s| {
        let h = s.irecv(&mut held, ANY_SOURCE, 9)?;
        for bytes in [8, 3000, 8192] {
            let out: Vec<u8> = (0..bytes).map(|i| (i * 3 + me) as u8).collect();
            let mut got = vec![0u8; bytes];
            let st = comm.sendrecv(&out, (me + 1) % n, 8, &mut got, left, 8)?;
            assert_eq!((st.source, st.bytes), (left, bytes));
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i * 3 + left) as u8),
                "{bytes} bytes from rank {left}, behind a pending receive"
            );
        }
        comm.send(&[me as u64], (me + 1) % n, 9)?;
        assert_eq!(h.wait()?.source, left);
        Ok::<_, courier::Error>(())
    })?;
    assert_eq!(held, [left as u64]);
    Ok(())
}

/// The ranks that are this rank's thread of the next and of the previous
/// process (a ring over the processes).
fn same_thread_of_next_and_previous_process(comm: &Comm) -> (usize, usize) {
    let (n, me) = (comm.size(), comm.rank());
    let t = n / comm.processes();
    ((me + t) % n, (me + n - t) % n)
}

/// Every rank posts a receive, sends to its thread of the next process, all
/// at once, and only then waits: legal MPI whatever the MPI's eager limit,
/// since every send meets a posted receive. Under a 1 KiB limit (the job
/// `cluster_cases_with_a_1_kib_mpi_eager_limit`) these are rendezvous sends,
/// each done only once its receiver's thread has taken it, so a sender that
/// stopped matching its own receives while it waited would deadlock the ring.
/// Both kinds of registered receive: `ANY_SOURCE`, and one rank into a buffer
/// too large to post on the lane.
fn posted_receives_let_every_standard_send_through(comm: &Comm) -> courier::Result<()> {
    let me = comm.rank();
    let (next, prev) = same_thread_of_next_and_previous_process(comm);
    let bytes_of =
        |from: usize, len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 + from) as u8).collect() };
    for len in [1000, 2000, 3000, 3840, 4000] {
        let out = bytes_of(me, len);
        let mut any = vec![0u8; len];
        let mut large = vec![0u8; 8192];
        comm.scope(|s| {
            let r = s.irecv(&mut any, ANY_SOURCE, 1)?;
            comm.send(&out, next, 1)?;
            let st = r.wait()?;
            assert_eq!((st.source, st.bytes), (prev, len), "ANY_SOURCE, {len} B");
            let r = s.irecv(&mut large, prev, 2)?;
            comm.send(&out, next, 2)?;
            let st = r.wait()?;
            assert_eq!((st.source, st.bytes), (prev, len), "from {prev}, {len} B");
            Ok::<_, courier::Error>(())
        })?;
        assert!(
            any == bytes_of(prev, len),
            "ANY_SOURCE, {len} B: bytes differ"
        );
        assert!(
            large[..len] == bytes_of(prev, len),
            "from {prev}, {len} B: bytes differ"
        );
    }
    Ok(())
}

/// Every rank posts a receive, `bsend`s a large message to its thread of the
/// next process, all at once, and detaches its buffer before it waits: legal
/// MPI, where the detach waits for delivery, which the posted receives allow.
/// Those receives are matched by their own threads, so a detach that stopped
/// its rank from matching (a blocking `MPI_Buffer_detach`) would deadlock the
/// ring on its rendezvous messages.
fn a_detach_keeps_its_rank_receiving_until_delivered(comm: &Comm) -> courier::Result<()> {
    let me = comm.rank();
    let (next, prev) = same_thread_of_next_and_previous_process(comm);
    let len = 256 * 1024;
    let out: Vec<u8> = (0..len).map(|i| (i * 5 + me) as u8).collect();
    let mut got = vec![0u8; len];
    comm.scope(|s| {
        let r = s.irecv(&mut got, prev, 3)?;
        comm.attach_buffer(len + courier::BSEND_OVERHEAD)?;
        comm.bsend(&out, next, 3)?;
        assert!(comm.detach_buffer()? >= len);
        assert_eq!(r.wait()?.bytes, len);
        Ok::<_, courier::Error>(())
    })?;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 5 + prev) as u8),
        "{len} bytes from rank {prev}"
    );
    Ok(())
}

/// MPI has one buffer per process, which each rank's `attach_buffer` and
/// `detach_buffer` resize: a rank's `bsend`s within its own buffer go through
/// while another rank of its process attaches and detaches, again and again.
/// Thread 0 of each process resizes; the other threads `bsend` to their thread
/// of the next process, which receives them.
fn bsends_go_through_while_another_rank_resizes_the_buffer(comm: &Comm) -> courier::Result<()> {
    let (n, me) = (comm.size(), comm.rank());
    let t = n / comm.processes();
    if t < 2 {
        return Ok(());
    }
    let (next, prev) = same_thread_of_next_and_previous_process(comm);
    const ROUNDS: u64 = 2000;
    static SENDING: AtomicUsize = AtomicUsize::new(0);
    static SENT: AtomicUsize = AtomicUsize::new(0);
    if me % t == 0 {
        // Until this process's other ranks are done (they check in below),
        // one resize per message they sent: as many resizes as messages,
        // whatever the MPI. Resizing flat out, MPICH's detach (which returned
        // in 0.1 ms) took 1.6 million resizes, and the ring 187 s, where
        // Open MPI's took 1 200 and 5 s.
        let mut seen = 0;
        while SENDING.load(Ordering::SeqCst) < t - 1 {
            let sent = SENT.load(Ordering::SeqCst);
            if sent == seen {
                std::thread::yield_now();
                continue;
            }
            seen = sent;
            comm.attach_buffer(4096)?;
            comm.detach_buffer()?;
        }
        SENDING.store(0, Ordering::SeqCst); // for the next layout's run
        SENT.store(0, Ordering::SeqCst);
    } else {
        // Above the eager limit: Open MPI sends small buffered messages at
        // once, without the buffer. A rank of the ring is at most P - 1
        // rounds ahead of the next, so at most P of its messages are
        // undelivered at once.
        const WORDS: usize = 2048;
        comm.attach_buffer(comm.processes() * (8 * WORDS + courier::BSEND_OVERHEAD))?;
        let mut out = vec![me as u64; WORDS];
        let mut got = vec![u64::MAX; WORDS];
        for i in 0..ROUNDS {
            out[1] = i;
            comm.scope(|s| {
                let r = s.irecv(&mut got, prev, 4)?;
                comm.bsend(&out, next, 4)?;
                SENT.fetch_add(1, Ordering::SeqCst);
                r.wait()
            })?;
            assert_eq!((got[0], got[1]), (prev as u64, i));
        }
        comm.detach_buffer()?;
        SENDING.fetch_add(1, Ordering::SeqCst);
    }
    comm.barrier()
}

/// A CLI check's result: `Ok` when `good`, else the run's exit status and output.
fn verdict(good: bool, ok: bool, stdout: &str, stderr: &str) -> Result<(), String> {
    if good {
        Ok(())
    } else {
        Err(format!("exit ok: {ok}\n{stdout}\n{stderr}"))
    }
}

/// Nonblocking receives from one rank of another process complete every way
/// a request can, and each reports its message once:
/// * polled with `test` (nothing before its message was even sent);
/// * `wait_any` in the order the messages come, then `None`;
/// * `test_all`: nothing until every receive is done, then all;
/// * a scope's end: a dropped receive whose message came is delivered, and a
///   dropped one whose message never came is withdrawn, leaving its buffer,
///   and that message, to a receive posted later.
fn remote_receives_complete_every_way(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    // Rank `last` tells rank 0 when to send the next message (tag 99).
    let go = |to| comm.send::<u8>(&[], to, 99);
    let wait_go = |from| comm.recv::<u8>(&mut [], from, 99).map(drop);
    if comm.rank() == 0 {
        for tag in 1..=3 {
            wait_go(last)?;
            comm.send(&[tag as u64], last, tag)?;
        }
        wait_go(last)?;
        comm.send(&[4u64], last, 4)?;
        comm.send(&[5u64], last, 5)?;
        wait_go(last)?;
        comm.send(&[6u64], last, 6)?;
        go(last)?; // after tag 6 on the same lane: matched in that order
        wait_go(last)?; // the scope with the dropped receives has ended
        comm.send(&[7u64], last, 7)?;
    } else if comm.rank() == last {
        assert!(
            !comm.is_local(0)?,
            "rank 0 and the last rank share a process"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let in_time = |what: &str| assert!(Instant::now() < deadline, "{what} never completed");

        let mut a = [0u64];
        comm.scope(|s| {
            let mut r = s.irecv(&mut a, 0, 1)?;
            for _ in 0..100 {
                assert!(r.test()?.is_none(), "complete before its message was sent");
            }
            go(0)?;
            let st = loop {
                if let Some(st) = r.test()? {
                    break st;
                }
                in_time("a tested receive");
            };
            assert_eq!((st.source, st.tag, st.bytes), (0, 1, 8));
            assert!(
                matches!(r.test(), Err(Error::InactiveRequest)),
                "a completion reported twice"
            );
            Ok::<_, Error>(())
        })?;
        assert_eq!(a, [1]);

        let (mut b2, mut b3) = ([0u64], [0u64]);
        comm.scope(|s| {
            let mut reqs = vec![s.irecv(&mut b2, 0, 2)?, s.irecv(&mut b3, 0, 3)?];
            go(0)?; // tag 2 first
            let (i, st) = wait_any(&mut reqs)?.expect("two requests are active");
            assert_eq!((i, st?.tag), (0, 2));
            go(0)?;
            let (i, st) = wait_any(&mut reqs)?.expect("one request is active");
            assert_eq!((i, st?.tag), (1, 3));
            assert!(wait_any(&mut reqs)?.is_none(), "no request is active");
            Ok::<_, Error>(())
        })?;
        assert_eq!((b2, b3), ([2], [3]));

        let (mut b4, mut b5) = ([0u64], [0u64]);
        comm.scope(|s| {
            let mut reqs = vec![s.irecv(&mut b4, 0, 4)?, s.irecv(&mut b5, 0, 5)?];
            for _ in 0..100 {
                assert!(test_all(&mut reqs)?.is_none(), "done before any message");
            }
            go(0)?;
            let statuses = loop {
                if let Some(st) = test_all(&mut reqs)? {
                    break st;
                }
                in_time("test_all");
            };
            let tags: Vec<i32> = statuses.iter().map(|st| st.tag).collect();
            assert_eq!(tags, [4, 5]);
            Ok::<_, Error>(())
        })?;
        assert_eq!((b4, b5), ([4], [5]));

        let (mut b6, mut b7) = ([0u64], [0u64]);
        comm.scope(|s| {
            let _came = s.irecv(&mut b6, 0, 6)?;
            let _never = s.irecv(&mut b7, 0, 7)?;
            go(0)?;
            wait_go(0) // sent after tag 6
        })?;
        assert_eq!((b6, b7), ([6], [0]), "a dropped receive at the scope's end");
        go(0)?;
        let mut again = [0u64];
        let st = comm.recv(&mut again, 0, 7)?;
        assert_eq!(
            (again, st.tag),
            ([7], 7),
            "the withdrawn receive took its message"
        );
    }
    Ok(())
}

/// Nonblocking sends to another process complete every way a request can: a
/// request dropped unwaited, which its scope's end waits for (the message
/// sent after the scope cannot come before the receiver has matched it);
/// `test_all` (nothing done before the receives are posted) then `wait_any`
/// (each once, then `None`) over a rendezvous `isend` and an `issend`; and
/// `test` polled to completion, reported once.
fn remote_sends_complete_every_way(comm: &Comm) -> courier::Result<()> {
    let last = comm.size() - 1;
    // 64 KiB: past MPI's eager limit, so only done once received.
    let big = vec![7u64; 8192];
    if comm.rank() == 0 {
        comm.scope(|s| {
            drop(s.issend(&[1u64], last, 1)?);
            comm.send(&[0u8], last, 2)
        })?;
        comm.send(&[5u64], last, 5)?;
        comm.scope(|s| {
            let mut reqs = vec![s.isend(&big, last, 6)?, s.issend(&[2u64], last, 7)?];
            assert!(
                test_all(&mut reqs)?.is_none(),
                "sends done before their receives were posted"
            );
            comm.send(&[0u8], last, 2)?;
            let mut seen = Vec::new();
            while let Some((i, st)) = wait_any(&mut reqs)? {
                st?;
                seen.push(i);
            }
            seen.sort_unstable();
            assert_eq!(seen, [0, 1], "wait_any reports each send once");
            Ok::<_, Error>(())
        })?;
        comm.scope(|s| {
            let mut r = s.issend(&[3u64], last, 8)?;
            comm.send(&[0u8], last, 2)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let st = loop {
                if let Some(st) = r.test()? {
                    break st;
                }
                assert!(Instant::now() < deadline, "a polled issend never completed");
            };
            assert_eq!((st.source, st.tag, st.count::<u64>()), (last, 8, 1));
            assert!(
                matches!(r.test(), Err(Error::InactiveRequest)),
                "a completion reported twice"
            );
            Ok::<_, Error>(())
        })?;
    } else if comm.rank() == last {
        let mut v = [0u64];
        comm.recv::<u8>(&mut [0], 0, 2)?;
        // Rank 0's scope still waits for its dropped issend: nothing sent
        // after that scope can be here yet.
        for _ in 0..20 {
            assert_eq!(
                comm.iprobe(0, 5)?,
                None,
                "the scope ended before its dropped issend was matched"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        comm.recv(&mut v, 0, 1)?;
        assert_eq!(v, [1]);
        comm.recv(&mut v, 0, 5)?;
        assert_eq!(v, [5]);
        comm.recv::<u8>(&mut [0], 0, 2)?;
        comm.recv(&mut v, 0, 7)?;
        assert_eq!(v, [2]);
        let mut b = vec![0u64; 8192];
        comm.recv(&mut b, 0, 6)?;
        assert_eq!(b, big);
        comm.recv::<u8>(&mut [0], 0, 2)?;
        comm.recv(&mut v, 0, 8)?;
        assert_eq!(v, [3]);
    }
    Ok(())
}
