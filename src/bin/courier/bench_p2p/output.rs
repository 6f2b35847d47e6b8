//! The readable tables and the CSV of `bench p2p`.

use std::fmt::Write as _;

use super::Record;

/// The baseline record of `mode` and `size` in `test`, if measured.
fn find<'a>(baselines: &'a [Record], mode: &str, test: &str, size: usize) -> Option<&'a Record> {
    baselines
        .iter()
        .find(|b| b.mode == mode && b.test == test && b.size == size)
}

/// The ratios a record is read by: (label, value), value > 1 = slower / less.
pub(crate) fn ratios(r: &Record, baselines: &[Record]) -> Vec<(&'static str, f64)> {
    let p50 = r.latency_us.p50;
    let mut out = Vec::new();
    let raw = crate::raw_mpi::counterpart(&r.mode);
    match (r.test.as_str(), r.transport.as_str()) {
        ("latency", "shm") => {
            if let Some(f) = baselines.iter().find(|b| b.mode == "atomic-flag") {
                out.push(("x flag", p50 / f.latency_us.p50));
            }
            if let Some(f) = find(baselines, "slot-handoff", "latency", r.size) {
                out.push(("x slot", p50 / f.latency_us.p50));
            }
            if let Some(m) = find(baselines, "memcpy", "latency", r.size) {
                out.push(("x memcpy", p50 / m.latency_us.p50));
            }
            if let Some(c) = find(baselines, "channel", "latency", r.size) {
                out.push(("x channel", p50 / c.latency_us.p50));
            }
            if let Some(m) = find(baselines, raw, "latency", r.size) {
                out.push(("x MPI", p50 / m.latency_us.p50));
            }
        }
        ("latency", _) => {
            if let Some(m) = find(baselines, raw, "latency", r.size) {
                out.push(("x raw", p50 / m.latency_us.p50));
                out.push(("+us raw", p50 - m.latency_us.p50));
            }
        }
        ("bw" | "bibw" | "mr", _) => {
            // Bandwidth ratios: above 1 = more bandwidth than the baseline.
            if let Some(m) = find(baselines, "raw-isend", "bw", r.size) {
                out.push(("bw / MPI bw", r.bandwidth_mb_s / m.bandwidth_mb_s));
            }
            if let Some(m) = find(baselines, "memcpy", "latency", r.size) {
                out.push(("bw / memcpy", r.bandwidth_mb_s / m.bandwidth_mb_s));
            }
        }
        _ => {}
    }
    out
}

pub(crate) fn print_tables(results: &[Record], baselines: &[Record]) {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in results {
        if !groups.contains(&(&r.transport, &r.test)) {
            groups.push((&r.transport, &r.test));
        }
    }
    for (transport, test) in groups {
        let what = match test {
            "latency" => "one-way latency (ping-pong)",
            "bw" => "bandwidth, window of W sends acknowledged (osu_bw)",
            "bibw" => "bidirectional bandwidth, both directions counted (osu_bibw)",
            _ => "message rate of all pairs at once (osu_mbw_mr)",
        };
        println!("\n{transport} {test}: {what}");
        println!(
            "{:<11} {:>8} {:>10} {:>10} {:>10} {:>11} {:>12}  ratios",
            "mode", "size", "p50 us", "min us", "p99 us", "MB/s", "msg/s"
        );
        for r in results
            .iter()
            .filter(|r| r.transport == transport && r.test == test)
        {
            let l = r.latency_us;
            let mut rs = String::new();
            for (label, v) in ratios(r, baselines) {
                let _ = write!(rs, "  {label} {v:.2}");
            }
            println!(
                "{:<11} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>11.0} {:>12.0}{rs}",
                r.mode, r.size, l.p50, l.min, l.p99, r.bandwidth_mb_s, r.msg_rate
            );
        }
    }
    if !baselines.is_empty() {
        println!("\nbaselines (same run)");
        println!(
            "{:<11} {:<11} {:<8} {:>8} {:>10} {:>11}",
            "transport", "mode", "test", "size", "p50 us", "MB/s"
        );
        for b in baselines {
            println!(
                "{:<11} {:<11} {:<8} {:>8} {:>10.3} {:>11.0}",
                b.transport, b.mode, b.test, b.size, b.latency_us.p50, b.bandwidth_mb_s
            );
        }
    }
}

/// One row per record: results, then baselines (`kind` tells them apart).
pub(crate) fn csv(results: &[Record], baselines: &[Record]) -> String {
    let mut out = String::from(
        "kind,transport,mode,test,size,latency_min_us,latency_p50_us,latency_p99_us,bandwidth_mb_s,msg_rate\n",
    );
    for (kind, records) in [("result", results), ("baseline", baselines)] {
        for r in records {
            let l = r.latency_us;
            let _ = writeln!(
                out,
                "{kind},{},{},{},{},{},{},{},{},{}",
                r.transport,
                r.mode,
                r.test,
                r.size,
                l.min,
                l.p50,
                l.p99,
                r.bandwidth_mb_s,
                r.msg_rate
            );
        }
    }
    out
}
