//! `--plot`: latency and bandwidth vs size, one line per mode, log scales, with
//! the baselines dashed.

use std::path::Path;

use plotters::prelude::*;

use super::Record;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 1300;

type Series = (String, Vec<(f64, f64)>, bool);

pub(crate) fn draw(path: &Path, results: &[Record], baselines: &[Record]) -> Result<(), String> {
    let svg = svg(results, baselines).map_err(|e| format!("drawing the plot: {e}"))?;
    crate::figure::save(path, &svg)
}

/// The transport drawn: shared memory when measured, else MPI.
fn transport(results: &[Record]) -> &str {
    if results.iter().any(|r| r.transport == "shm") {
        "shm"
    } else {
        "mpi"
    }
}

fn series(results: &[Record], baselines: &[Record], test: &str) -> Vec<Series> {
    let t = transport(results);
    let value = |r: &Record| {
        if test == "latency" {
            r.latency_us.p50
        } else {
            r.bandwidth_mb_s
        }
    };
    let mut out: Vec<Series> = Vec::new();
    for r in results
        .iter()
        .filter(|r| r.transport == t && r.test == test)
    {
        let point = (r.size.max(1) as f64, value(r));
        match out.iter_mut().find(|s| s.0 == r.mode) {
            Some(s) => s.1.push(point),
            None => out.push((r.mode.clone(), vec![point], false)),
        }
    }
    // Baselines: memcpy (both panels), Open MPI's send (latency) / isend window (bw).
    let wanted: [(&str, &str, &str); 3] = [
        ("memcpy", "latency", "memcpy"),
        ("raw-send", "latency", "Open MPI send"),
        ("raw-isend", "bw", "Open MPI isend"),
    ];
    for (mode, btest, label) in wanted {
        if btest != test && mode != "memcpy" {
            continue;
        }
        let points: Vec<(f64, f64)> = baselines
            .iter()
            .filter(|b| b.mode == mode && b.test == btest)
            .map(|b| (b.size.max(1) as f64, value(b)))
            .collect();
        if !points.is_empty() {
            out.push((format!("{label} (baseline)"), points, true));
        }
    }
    out
}

fn svg(results: &[Record], baselines: &[Record]) -> Result<String, Box<dyn std::error::Error>> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((2, 1));
        let t = transport(results);
        let titles = [
            (
                "latency",
                format!("{t}: one-way latency (p50, us) vs message size (bytes)"),
            ),
            (
                "bw",
                format!("{t}: bandwidth (MB/s, window of W) vs message size (bytes)"),
            ),
        ];
        for (panel, (test, title)) in panels.iter().zip(titles) {
            let lines = series(results, baselines, test);
            let all = || lines.iter().flat_map(|s| s.1.iter());
            let (Some(x0), Some(x1)) = (
                all().map(|p| p.0).reduce(f64::min),
                all().map(|p| p.0).reduce(f64::max),
            ) else {
                continue;
            };
            let y0 = all()
                .map(|p| p.1)
                .filter(|v| *v > 0.0)
                .fold(f64::MAX, f64::min);
            let y1 = all().map(|p| p.1).fold(0.0, f64::max);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (x0..x1.max(x0 * 2.0)).log_scale(),
                    (y0 / 1.5..y1 * 1.5).log_scale(),
                )?;
            chart
                .configure_mesh()
                .x_desc("bytes")
                .x_label_formatter(&|x| bytes_label(*x))
                .y_desc(if test == "latency" { "us" } else { "MB/s" })
                .draw()?;
            for (i, (name, points, baseline)) in lines.into_iter().enumerate() {
                let color = if baseline {
                    BLACK.mix(0.7)
                } else {
                    Palette99::pick(i).mix(1.0)
                };
                let style = ShapeStyle {
                    color,
                    filled: false,
                    stroke_width: if baseline { 1 } else { 2 },
                };
                let drawn = if baseline {
                    chart.draw_series(DashedLineSeries::new(points, 6, 4, style))?
                } else {
                    chart.draw_series(LineSeries::new(points, style))?
                };
                drawn
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    Ok(text)
}

/// 1024 as `1K`, 1048576 as `1M`.
fn bytes_label(x: f64) -> String {
    match x as u64 {
        b if b >= 1 << 20 => format!("{}M", b >> 20),
        b if b >= 1 << 10 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}
