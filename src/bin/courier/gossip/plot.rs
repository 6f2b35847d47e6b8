//! `--plot`: the fraction of nodes not yet reached per round (push-sum: the
//! largest relative error), one line per trial, log scale, with the analytic
//! curve dashed beside it.

use std::path::Path;

use plotters::prelude::*;

use crate::kernels::gossip::{Config, Protocol, Report};

pub(crate) fn draw(path: &Path, cfg: &Config, runs: &[Report]) -> Result<(), String> {
    let svg = svg(cfg, runs).map_err(|e| format!("drawing the plot: {e}"))?;
    crate::figure::save(path, &svg)
}

fn curve(cfg: &Config, r: &Report) -> Vec<f64> {
    match (&r.push_sum, cfg.protocol) {
        (Some(ps), Protocol::PushSum) => ps.error_per_round.clone(),
        _ => r.ignorant_per_round.clone(),
    }
}

fn svg(cfg: &Config, runs: &[Report]) -> Result<String, Box<dyn std::error::Error>> {
    let curves: Vec<Vec<f64>> = runs.iter().map(|r| curve(cfg, r)).collect();
    let longest = curves.iter().map(Vec::len).max().unwrap_or(1);
    let theory = super::theory_curve(cfg, longest - 1);
    let floor = 0.1 / cfg.nodes as f64;
    let points = |c: &[f64]| -> Vec<(f64, f64)> {
        c.iter()
            .enumerate()
            .filter(|(_, &y)| y > 0.0)
            .map(|(i, &y)| (i as f64, y.max(floor)))
            .collect()
    };
    let y_max = curves.iter().flatten().fold(1.0f64, |a, &b| a.max(b));
    let what = if cfg.protocol == Protocol::PushSum {
        "largest relative error"
    } else {
        "fraction not reached"
    };
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} ({:?}), {} nodes, {} trial(s): {what} per round",
                    cfg.protocol,
                    cfg.model,
                    cfg.nodes,
                    runs.len()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                0f64..(longest.max(2) - 1) as f64,
                (floor..y_max * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc(what)
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()?;
        for (i, c) in curves.iter().enumerate() {
            let style = ShapeStyle {
                color: BLUE.mix(if runs.len() > 1 { 0.4 } else { 1.0 }),
                filled: false,
                stroke_width: 2,
            };
            let s = chart.draw_series(LineSeries::new(points(c), style))?;
            if i == 0 {
                s.label("measured")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        if let Some((name, c)) = theory {
            let style = ShapeStyle {
                color: BLACK.mix(0.8),
                filled: false,
                stroke_width: 2,
            };
            chart
                .draw_series(DashedLineSeries::new(points(&c), 6, 4, style))?
                .label(format!("theory: {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(text)
}
