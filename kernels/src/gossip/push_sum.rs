//! Push-sum aggregation (Kempe, Dobra, Gehrke): every node keeps a pair
//! (s, w); each round it keeps half and sends half to a random node; s / w
//! converges at every node to Σ s / Σ w, and both totals are conserved.
//!
//! Values are multiples of 2⁻¹⁰ below 2¹⁰, so the true aggregate is summed
//! exactly whatever the order. Each node adds what it receives in the order of
//! the senders' ids (its kept half first), so its estimate is bit-for-bit the
//! same on any number of ranks.

use courier::{Comm, Result};

use super::nodes::{exchange, sum, Crashed, Nodes};
use super::rng::{other, purpose, Stream};
use super::{Aggregate, Config, Outcome, PushSumReport};

const SHARES: i32 = 7;

/// Node `v`'s value: a multiple of 2⁻¹⁰ in [0, 1024).
fn value(values: Stream, v: u64) -> f64 {
    (values.draw(v, 0) >> 44) as f64 / 1024.0
}

fn totals(comm: &Comm, s: &[f64], w: &[f64]) -> Result<[f64; 2]> {
    let mut t = [0.0; 2];
    comm.all_reduce(
        &[s.iter().sum::<f64>(), w.iter().sum::<f64>()],
        &mut t,
        |a, b| a + b,
    )?;
    Ok(t)
}

pub(crate) fn run(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    let (n, lo, len) = (nodes.n, nodes.lo, nodes.len());
    let source = cfg.source();
    let crashed = Crashed::new(nodes, cfg.seed, cfg.crash, source);
    let values = Stream::new(cfg.seed, purpose::VALUE);
    let (mut s, mut w) = (vec![0.0f64; len], vec![0.0f64; len]);
    for i in (0..len).filter(|&i| !crashed.has(i)) {
        let v = lo + i as u64;
        s[i] = match cfg.aggregate {
            Aggregate::Count => 1.0,
            _ => value(values, v),
        };
        w[i] = match cfg.aggregate {
            Aggregate::Average => 1.0,
            _ => f64::from(u8::from(v == source)),
        };
    }
    let [live] = sum(comm, [crashed.live(len)])?;
    let mut truth = [0.0];
    comm.all_reduce(&[s.iter().sum::<f64>()], &mut truth, |a, b| a + b)?;
    let truth = match cfg.aggregate {
        Aggregate::Average => truth[0] / live as f64,
        _ => truth[0],
    };
    let mass_start = totals(comm, &s, &w)?;
    let target = Stream::new(cfg.seed, purpose::TARGET);
    let loss = Stream::new(cfg.seed, purpose::LOSS);
    // (receiver's local index, s, w), per destination rank, in sender order.
    let mut out: Vec<Vec<[f64; 3]>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let (mut messages, mut contacts) = (0u64, 0u64);
    let measure = |s: &[f64], w: &[f64]| -> Result<(f64, u64)> {
        let (mut worst, mut without) = (0.0f64, 0u64);
        for i in (0..len).filter(|&i| !crashed.has(i)) {
            if w[i] == 0.0 {
                without += 1;
                worst = worst.max(1.0);
            } else {
                worst = worst.max(((s[i] / w[i] - truth) / truth).abs());
            }
        }
        let mut e = [0.0];
        comm.all_reduce(&[worst], &mut e, f64::max)?;
        Ok((e[0], sum(comm, [without])?[0]))
    };
    let (e, without) = measure(&s, &w)?;
    let mut error_per_round = vec![e];
    let mut ignorant = vec![without];
    let mut round = 0u32;
    while error_per_round[error_per_round.len() - 1] > cfg.tolerance && round < cfg.max_rounds {
        round += 1;
        for i in 0..len {
            if crashed.has(i) {
                continue;
            }
            let u = lo + i as u64;
            s[i] *= 0.5;
            w[i] *= 0.5;
            contacts += 1;
            messages += 1;
            if cfg.loss > 0.0 && loss.coin(cfg.loss, u, u64::from(round)) {
                continue;
            }
            let v = other(target.draw(u, u64::from(round)), u, n);
            let q = nodes.owner(v);
            out[q].push([(v - nodes.first_of(q)) as f64, s[i], w[i]]);
        }
        for batch in exchange(comm, SHARES, &mut out)? {
            for [j, ds, dw] in batch {
                let j = j as usize;
                if !crashed.has(j) {
                    s[j] += ds;
                    w[j] += dw;
                }
            }
        }
        let (e, without) = measure(&s, &w)?;
        error_per_round.push(e);
        ignorant.push(without);
    }
    let mass_end = totals(comm, &s, &w)?;
    let [messages, contacts] = sum(comm, [messages, contacts])?;
    Ok(Outcome {
        rounds: round,
        live,
        bytes: 0,
        ignorant,
        messages,
        contacts,
        heard_sum: 0,
        heard_last: 0,
        push_sum: Some(PushSumReport {
            aggregate: cfg.aggregate,
            truth,
            error_per_round,
            mass_start,
            mass_end,
        }),
        kv: None,
    })
}
