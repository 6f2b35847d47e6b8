//! `courier topo`: the real machine's plan is pinned and read back as planned,
//! restricted cpusets are honoured, synthetic machines plan as documented.

use std::process::{Command, Output};

use serde_json::Value;

fn courier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(args)
        .output()
        .expect("run courier")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "courier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// (rank, planned PU, read-back cpuset) of every rank in the report.
fn places(report: &Value) -> Vec<(u64, Option<u64>, Vec<u64>)> {
    report["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["ranks"].as_array().unwrap().clone())
        .map(|r| {
            let cpuset = r["binding"]["cpuset"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_u64().unwrap()).collect())
                .unwrap_or_default();
            (r["rank"].as_u64().unwrap(), r["pu"].as_u64(), cpuset)
        })
        .collect()
}

#[test]
fn this_machine_pins_one_rank_per_pu_and_reads_it_back() {
    let report = json_of(&courier(&["topo", "--check", "--json", "-"]));
    assert_eq!(report["verified"], true);
    let machine = &report["blocks"][0]["machine"];
    let pus = machine["pus"].as_array().unwrap().len();
    assert!(pus >= 1);
    let places = places(&report);
    // Default ranks = cores of the cpuset; one per PU, each bound to exactly it.
    let mut used: Vec<u64> = places.iter().map(|p| p.1.expect("pinned")).collect();
    for (rank, pu, cpuset) in &places {
        assert_eq!(cpuset, &[pu.unwrap()], "rank {rank}");
    }
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), places.len(), "two ranks share a PU: {places:?}");
}

#[test]
fn more_ranks_than_pus_are_spread_evenly_and_said_so() {
    let out = courier(&["topo", "-n", "8", "--check", "--json", "-"]);
    let report = json_of(&out);
    let pus = report["blocks"][0]["machine"]["pus"]
        .as_array()
        .unwrap()
        .len();
    let places = places(&report);
    assert_eq!(places.len(), 8);
    if pus < 8 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("8 ranks on {pus} PUs")),
            "{stderr}"
        );
        for pu in 0..pus as u64 {
            let load = places.iter().filter(|p| p.1 == Some(pu)).count();
            assert!(
                load == 8 / pus || load == 8_usize.div_ceil(pus),
                "PU {pu}: {load}"
            );
        }
    }
}

#[test]
fn a_restricted_cpuset_is_honoured() {
    let taskset = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_courier")])
        .args(["topo", "-n", "2", "--check", "--json", "-"])
        .output();
    let Ok(out) = taskset else {
        eprintln!("taskset not installed: restricted cpuset not checked");
        return;
    };
    let report = json_of(&out);
    assert_eq!(
        report["blocks"][0]["machine"]["pus"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(places(&report)
        .iter()
        .all(|(_, pu, cpuset)| *pu == Some(0) && cpuset == &[0]));
}

#[test]
fn synthetic_machines_plan_compact_and_scatter_as_documented() {
    let plan = |policy: &str, n: &str| -> Vec<Option<u64>> {
        let out = courier(&[
            "topo",
            "--synthetic",
            "package:2 core:4 pu:2",
            "--placement",
            policy,
            "-n",
            n,
            "--json",
            "-",
        ]);
        places(&json_of(&out)).into_iter().map(|p| p.1).collect()
    };
    assert_eq!(plan("compact", "4"), [Some(0), Some(2), Some(4), Some(6)]);
    assert_eq!(plan("scatter", "4"), [Some(0), Some(8), Some(4), Some(12)]);
    assert_eq!(plan("none", "2"), [None, None]);
}

#[test]
fn bad_topologies_and_placements_fail_with_a_message() {
    let out = courier(&["topo", "--synthetic", "core:two"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("count must be a positive number"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn hwloc_describing_another_machine_runs_unpinned_with_a_warning() {
    // hwloc honours HWLOC_SYNTHETIC: the topology is then not this machine's,
    // so the runtime must not pin by it.
    let out = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["info", "-n", "2", "--json", "-"])
        .env("HWLOC_SYNTHETIC", "package:4 core:4 pu:1")
        .output()
        .unwrap();
    let info = json_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "hwloc") {
        assert!(
            stderr.contains("does not describe this machine"),
            "{stderr}"
        );
        assert!(info["ranks_detail"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["core"].is_null()));
    }
}
