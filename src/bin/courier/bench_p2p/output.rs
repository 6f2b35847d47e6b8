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
            // The handoffs timed alongside this record when there are some,
            // else the ones timed at the start of the run.
            let handoff = |mode| find(baselines, mode, "latency", 8).map(|b| b.latency_us.p50);
            let (flag, lines, slot) = match r.handoffs_us {
                Some(h) => (Some(h.flag), Some(h.lines), Some(h.slot)),
                None => (
                    handoff("atomic-flag"),
                    handoff("line-per-direction"),
                    handoff("slot-handoff"),
                ),
            };
            if let Some(f) = flag {
                out.push(("x flag", p50 / f));
            }
            if let Some(f) = lines.filter(|_| r.size == 8) {
                out.push(("x lines", p50 / f));
            }
            if let Some(f) = slot.filter(|_| r.size == 8) {
                out.push(("x slot", p50 / f));
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
            // The raw counterpart timed alongside this record when there is
            // one, else the one timed before the size's courier modes.
            let raw_p50 = r
                .raw_us
                .or_else(|| find(baselines, raw, "latency", r.size).map(|m| m.latency_us.p50));
            if let Some(m) = raw_p50 {
                out.push(("x raw", p50 / m));
                out.push(("+us raw", p50 - m));
            }
            // Between processes of one node: the handoff between the same
            // cores, timed alongside (see `raw_mpi::SharedLines`), which
            // tells how far apart the cores were.
            if let Some(h) = r.handoffs_us.filter(|_| r.size == 8) {
                out.push(("x flag", p50 / h.flag));
            }
        }
        ("bw" | "bibw" | "mr", _) => {
            // Bandwidth ratios: above 1 = more bandwidth than the baseline.
            // Open MPI's window one way, or both ways for `bibw`.
            let window = if r.test == "bibw" { "bibw" } else { "bw" };
            if let Some(m) = find(baselines, "raw-isend", window, r.size) {
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
        let rows = results
            .iter()
            .filter(|r| r.transport == transport && r.test == test);
        if let Some((lo, hi)) = flag_range(rows) {
            println!(
                "handoff between the pair's cores (atomic flag, timed alongside the rows): \
                 {lo:.3}-{hi:.3} us"
            );
        }
    }
    if let Some(note) = drift_note(results) {
        println!("\n{note}");
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

/// Largest change of the handoff time between latency rows before the run's
/// ratios to it are called out as drifting.
const DRIFT: f64 = 1.5;

/// A note when the atomic-flag handoff timed alongside the latency rows moved
/// by more than [`DRIFT`] during the run: absolute times then compare poorly
/// across rows, the rows' own ratios still do.
fn drift_note(results: &[Record]) -> Option<String> {
    let (lo, hi) = flag_range(results.iter())?;
    (hi > DRIFT * lo).then(|| {
        format!(
            "note: this machine's core-to-core handoff changed during the run (atomic flag \
             {lo:.3}-{hi:.3} us): compare rows by their ratios, which use the handoffs \
             timed alongside each row, rather than by absolute times"
        )
    })
}

/// The lowest and highest atomic-flag handoff timed alongside `rows`, if
/// any was.
fn flag_range<'a>(rows: impl Iterator<Item = &'a Record>) -> Option<(f64, f64)> {
    let flags = rows.filter_map(|r| r.handoffs_us.map(|h| h.flag));
    flags.fold(None, |range, f| match range {
        None => Some((f, f)),
        Some((lo, hi)) => Some((f.min(lo), f.max(hi))),
    })
}

/// One row per record: results, then baselines (`kind` tells them apart).
pub(crate) fn csv(results: &[Record], baselines: &[Record]) -> String {
    let mut out = String::from(
        "kind,transport,mode,test,size,latency_min_us,latency_p50_us,latency_p99_us,bandwidth_mb_s,msg_rate,flag_p50_us,lines_p50_us,slot_p50_us,raw_p50_us\n",
    );
    for (kind, records) in [("result", results), ("baseline", baselines)] {
        for r in records {
            let l = r.latency_us;
            let [flag, lines, slot] = r.handoffs_us.map_or(Default::default(), |h| {
                [h.flag, h.lines, h.slot].map(|t| t.to_string())
            });
            let raw = r.raw_us.map_or(String::new(), |m| m.to_string());
            let _ = writeln!(
                out,
                "{kind},{},{},{},{},{},{},{},{},{},{flag},{lines},{slot},{raw}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_p2p::{summarize, Handoffs};

    fn row(flag: f64) -> Record {
        let mut r = summarize(vec![0.1], 8, "shm", "send");
        r.handoffs_us = Some(Handoffs {
            flag,
            lines: 0.04,
            slot: 0.05,
        });
        r
    }

    #[test]
    fn drift_is_noted_past_one_and_a_half_times_only() {
        assert_eq!(drift_note(&[row(0.030), row(0.044)]), None);
        let note = drift_note(&[row(0.030), row(0.21), row(0.031)]).expect("a note");
        assert!(note.contains("0.030-0.210 us"), "{note}");
        // Rows without handoffs (bandwidth, MPI) neither trigger nor hide it.
        let bw = summarize(vec![1.0], 8, "shm", "isend");
        assert_eq!(drift_note(&[bw.clone(), row(0.03)]), None);
        assert!(drift_note(&[bw, row(0.03), row(0.2)]).is_some());
    }

    #[test]
    fn latency_ratios_use_the_handoffs_timed_alongside() {
        let start = [summarize(vec![0.02], 8, "hardware", "atomic-flag")];
        let r = row(0.05);
        let ratios = ratios(&r, &start);
        assert_eq!(ratios[0].0, "x flag");
        assert!((ratios[0].1 - 0.1 / 0.05).abs() < 1e-12, "{ratios:?}");
        assert_eq!(ratios[1].0, "x lines");
        assert!((ratios[1].1 - 0.1 / 0.04).abs() < 1e-12, "{ratios:?}");
        assert_eq!(ratios[2].0, "x slot");
        // Without its own, a row falls back to the flag timed at the start.
        let plain = summarize(vec![0.1], 8, "shm", "send");
        let ratios = super::ratios(&plain, &start);
        assert!((ratios[0].1 - 0.1 / 0.02).abs() < 1e-12, "{ratios:?}");
    }

    #[test]
    fn mpi_rows_read_against_raw_and_the_flag_between_their_cores() {
        let mut r = summarize(vec![0.5], 8, "mpi", "rsend");
        r.raw_us = Some(0.4);
        let labels = |r: &Record| ratios(r, &[]).iter().map(|x| x.0).collect::<Vec<_>>();
        // Pair on two nodes: no shared lines, no flag.
        assert_eq!(labels(&r), ["x raw", "+us raw"]);
        r.handoffs_us = Some(Handoffs {
            flag: 0.16,
            lines: 0.17,
            slot: 0.3,
        });
        let got = ratios(&r, &[]);
        assert_eq!(labels(&r), ["x raw", "+us raw", "x flag"]);
        assert!((got[1].1 - 0.1).abs() < 1e-12, "{got:?}");
        assert!((got[2].1 - 0.5 / 0.16).abs() < 1e-12, "{got:?}");
        assert_eq!(flag_range([&r, &row(0.03)].into_iter()), Some((0.03, 0.16)));
        assert_eq!(flag_range(std::iter::empty()), None);
    }
}
