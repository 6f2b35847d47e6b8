//! The `courier` command: tables, JSON output, clear errors.

use std::process::Command;

use serde_json::Value;

fn courier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(args)
        .output()
        .expect("run courier")
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("courier-cli-{}-{name}", std::process::id()))
}

#[test]
fn info_reports_ranks_and_placement_as_text_and_json() {
    let path = tmp("info.json");
    let out = courier(&["info", "--ranks", "3", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ranks         3"), "{text}");
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["ranks"], 3);
    assert_eq!(json["ranks_detail"].as_array().unwrap().len(), 3);
    assert_eq!(json["placement"], "compact");
    std::fs::remove_file(path).ok();
}

#[test]
fn bench_p2p_quick_writes_every_test_mode_and_baseline_as_json_csv_and_svg() {
    let (json_path, csv_path, svg_path) = (tmp("bench.json"), tmp("bench.csv"), tmp("bench.svg"));
    let out = courier(&[
        "bench",
        "p2p",
        "--quick",
        "--mpi-baseline",
        "off",
        "--sizes",
        "8,64K",
        "--window",
        "8",
        "--json",
        json_path.to_str().unwrap(),
        "--csv",
        csv_path.to_str().unwrap(),
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    let all = [
        "send",
        "bsend",
        "ssend",
        "rsend",
        "isend",
        "ibsend",
        "issend",
        "irsend",
        "sendrecv",
        "send-owned",
    ];
    let per_test: [(&str, Vec<&str>); 4] = [
        ("latency", all.to_vec()),
        (
            "bw",
            all.iter().copied().filter(|m| *m != "sendrecv").collect(),
        ),
        (
            "bibw",
            vec!["isend", "ibsend", "issend", "irsend", "sendrecv"],
        ),
        ("mr", vec!["isend", "send"]),
    ];
    let expected: usize = per_test.iter().map(|(_, m)| m.len() * 2).sum();
    assert_eq!(results.len(), expected);
    for (test, modes) in &per_test {
        for mode in modes {
            for size in [8, 65536] {
                let r = results
                    .iter()
                    .find(|r| r["test"] == *test && r["mode"] == *mode && r["size"] == size)
                    .unwrap_or_else(|| panic!("{test} {mode} {size} missing"));
                assert_eq!(r["transport"], "shm");
                let l = &r["latency_us"];
                let (min, p50, p99) = (
                    l["min"].as_f64().unwrap(),
                    l["p50"].as_f64().unwrap(),
                    l["p99"].as_f64().unwrap(),
                );
                assert!(
                    0.0 < min && min <= p50 && p50 <= p99,
                    "{test} {mode} {size}: {l}"
                );
                let bw = r["bandwidth_mb_s"].as_f64().unwrap();
                let rate = r["msg_rate"].as_f64().unwrap();
                // bandwidth = bytes per message x messages per second (bibw: both ways).
                assert!((bw * 1e6 / rate - size as f64).abs() < 1e-6 * size as f64);
                // Shared-memory latency rows carry the handoffs timed between their
                // samples; the window tests have none.
                let handoffs = &r["handoffs_us"];
                if *test == "latency" {
                    let positive = |k: &str| handoffs[k].as_f64().is_some_and(|t| t > 0.0);
                    assert!(
                        ["flag", "lines", "slot"].into_iter().all(positive),
                        "{mode} {size}: {handoffs}"
                    );
                } else {
                    assert!(handoffs.is_null(), "{test} {mode} {size}: {handoffs}");
                }
                // Only MPI latency records carry a raw counterpart.
                assert!(r["raw_us"].is_null(), "{test} {mode} {size}");
            }
        }
    }
    let baselines = json["baselines"].as_array().unwrap();
    let count = |mode: &str| baselines.iter().filter(|b| b["mode"] == mode).count();
    assert_eq!(
        (
            count("atomic-flag"),
            count("line-per-direction"),
            count("slot-handoff"),
            count("memcpy"),
            count("channel")
        ),
        (1, 1, 1, 2, 2)
    );
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(csv.starts_with("kind,transport,mode,test,size,"));
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .ends_with(",flag_p50_us,lines_p50_us,slot_p50_us,raw_p50_us"));
    assert_eq!(csv.lines().count(), 1 + expected + baselines.len());
    let latency_rows = csv
        .lines()
        .filter(|l| l.starts_with("result,shm,") && l.contains(",latency,"));
    for row in latency_rows {
        let fields: Vec<&str> = row.split(',').collect();
        assert!(
            fields[10..13].iter().all(|f| f.parse::<f64>().is_ok()) && fields[13].is_empty(),
            "{row}"
        );
    }
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("send-owned") && svg.contains("memcpy"));
    for p in [json_path, csv_path, svg_path] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn bad_arguments_fail_with_a_message_not_a_panic() {
    let out = courier(&["bench", "p2p", "--modes", "telepathy"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode \"telepathy\""));
    let out = courier(&["bench", "p2p", "--ranks", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 2 ranks"));
    let out = courier(&["info", "--ranks", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one rank"));
    let out = courier(&["info", "--placement", "diagonal"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown placement"));
    let out = courier(&["bench", "p2p", "--sizes", "12Q"]);
    assert!(!out.status.success());
}

/// `courier info --ranks 2` as process 0 of `processes`, as Open MPI's mpirun
/// would start it — but without mpirun, so there is no MPI job behind it.
fn info_under_fake_mpirun(processes: &str, extra: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["info", "--ranks", "2"])
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", processes)
        .envs(extra.iter().copied())
        .output()
        .expect("run courier")
}

#[test]
fn a_process_that_is_not_really_one_of_several_says_so_instead_of_running_alone() {
    let out = info_under_fake_mpirun("2", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "mpi") {
        // MPI starts as a singleton: its world does not match the launcher's.
        assert!(
            err.contains("reported 2 processes but MPI_COMM_WORLD has 1"),
            "{err}"
        );
    } else {
        assert!(
            err.contains("process 0 of 2") && err.contains("COURIER_LAUNCH=embedded"),
            "{err}"
        );
    }
    let out = info_under_fake_mpirun("2", &[("COURIER_LAUNCH", "embedded")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = info_under_fake_mpirun("1", &[]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("started by Open MPI mpirun as a single process"));
}

#[test]
fn gossip_writes_the_documented_json_and_a_plot() {
    let (json_path, svg_path) = (tmp("gossip.json"), tmp("gossip.svg"));
    let out = courier(&[
        "gossip",
        "--protocol",
        "pull",
        "--nodes",
        "5000",
        "-n",
        "3",
        "--json",
        json_path.to_str().unwrap(),
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gossip pull") && text.contains("contacts per s"),
        "{text}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    for key in [
        "protocol",
        "model",
        "nodes",
        "ranks",
        "seed",
        "rounds",
        "residue",
        "messages_per_node",
        "ignorant_per_round",
        "t_avg",
        "t_last",
        "wall_s",
        "contacts_per_s",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    assert_eq!(
        (v["protocol"].as_str(), v["ranks"].as_u64()),
        (Some("pull"), Some(3))
    );
    // The curve beside its recurrence, same length.
    let measured = v["ignorant_per_round"].as_array().unwrap().len();
    assert_eq!(
        v["theory"]["ignorant_per_round"].as_array().unwrap().len(),
        measured
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("theory"),
        "not an SVG with the theory curve"
    );
    std::fs::remove_file(json_path).ok();
    std::fs::remove_file(svg_path).ok();
}

#[test]
fn gossip_trials_report_mean_and_standard_deviation() {
    let out = courier(&[
        "gossip",
        "--protocol",
        "rumor",
        "--model",
        "async",
        "--p-stop",
        "0.5",
        "--nodes",
        "2000",
        "--trials",
        "4",
        "-n",
        "2",
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON");
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    let seeds: Vec<u64> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [1, 2, 3, 4]);
    let residue = &v["mean_std"]["residue"];
    assert!(residue["mean"].as_f64().unwrap() > 0.0 && residue["std"].as_f64().unwrap() > 0.0);
    assert!((v["theory_residue"].as_f64().unwrap() - 0.059520).abs() < 1e-6);
}

#[test]
fn gossip_rejects_bad_arguments_with_a_message() {
    for args in [
        &["gossip", "--protocol", "gossipy"][..],
        &["gossip", "--protocol", "push", "--nodes", "1"][..],
        &["gossip", "--protocol", "push", "--loss", "1.5"][..],
        &["gossip", "--protocol", "flood", "--overlay", "regular:3"][..],
        &[
            "gossip",
            "--protocol",
            "rumor",
            "--p-stop",
            "0.5",
            "--k",
            "2",
        ][..],
    ] {
        let out = courier(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(!err.trim().is_empty(), "{args:?}: no message");
    }
}
