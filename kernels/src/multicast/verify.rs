//! The verifier: every rank checks its own delivery log (nothing lost or
//! duplicated, FIFO per sender, causal precedence), then the ranks compare
//! logs for total order. The first failure, on the lowest rank that has one,
//! is the report's `divergence`.

use courier::{Comm, Result};

use super::io::Delivery;
use super::Order;

/// Longest failure message carried between ranks.
const MESSAGE: usize = 400;

fn local(order: Order, log: &[Delivery], n: usize, per_rank: u64) -> Option<String> {
    let mut count = vec![0u64; n];
    let mut seen = vec![vec![false; per_rank as usize]; n];
    let mut delivered = vec![0u64; n];
    for (i, d) in log.iter().enumerate() {
        if d.origin >= n || d.seq >= per_rank {
            return Some(format!(
                "position {i}: ({}, {}) was never sent",
                d.origin, d.seq
            ));
        }
        if std::mem::replace(&mut seen[d.origin][d.seq as usize], true) {
            return Some(format!(
                "position {i}: ({}, {}) delivered twice",
                d.origin, d.seq
            ));
        }
        if order != Order::None && d.seq != count[d.origin] {
            return Some(format!(
                "position {i}: ({}, {}) delivered before ({}, {}) from the same sender (FIFO)",
                d.origin, d.seq, d.origin, count[d.origin]
            ));
        }
        count[d.origin] += 1;
        if order == Order::Causal {
            if let Some(k) = (0..n).find(|&k| k != d.origin && d.vc[k] > delivered[k]) {
                return Some(format!(
                    "position {i}: ({}, {}) delivered before message {} of rank {k}, which its sender had delivered (causal)",
                    d.origin,
                    d.seq,
                    d.vc[k] - 1
                ));
            }
        }
        delivered[d.origin] += 1;
    }
    if let Some(o) = (0..n).find(|&o| count[o] != per_rank) {
        return Some(format!(
            "{} of rank {o}'s {per_rank} messages delivered",
            count[o]
        ));
    }
    None
}

/// Checks `order` on every rank's log; `(verified, first failure)`.
pub(crate) fn verify(
    comm: &Comm,
    order: Order,
    log: &[Delivery],
    per_rank: u64,
) -> Result<(bool, Option<String>)> {
    let (n, me) = (comm.size(), comm.rank());
    let total = n * per_rank as usize;
    let mut failure = local(order, log, n, per_rank);
    if order == Order::Total && failure.is_none() {
        // Same length everywhere (checked above), so the logs gather as blocks.
        let mine: Vec<u64> = log
            .iter()
            .map(|d| (d.origin as u64) << 32 | d.seq)
            .collect();
        let mut all = vec![0u64; total * n];
        let ok = u64::from(mine.len() == total);
        let mut all_ok = [0u64];
        comm.all_reduce(&[ok], &mut all_ok, u64::min)?;
        if all_ok[0] == 1 {
            comm.all_gather(&mine, &mut all)?;
            let reference = &all[..total];
            if let Some(i) = (0..total).find(|&i| mine[i] != reference[i]) {
                failure = Some(format!(
                    "total order: position {i} is ({}, {}) here, ({}, {}) on rank 0",
                    mine[i] >> 32,
                    mine[i] & 0xffff_ffff,
                    reference[i] >> 32,
                    reference[i] & 0xffff_ffff
                ));
            }
        }
    } else if order == Order::Total {
        let mut all_ok = [0u64];
        comm.all_reduce(&[0], &mut all_ok, u64::min)?;
    }
    // The lowest failing rank tells everyone.
    let flag = if failure.is_some() { me } else { n };
    let mut first = [0usize];
    comm.all_reduce(&[flag], &mut first, usize::min)?;
    if first[0] == n {
        return Ok((true, None));
    }
    let mut text = [0u8; MESSAGE];
    if let Some(f) = &failure {
        let f = format!("rank {me}: {f}");
        let len = f.len().min(MESSAGE);
        text[..len].copy_from_slice(&f.as_bytes()[..len]);
    }
    comm.broadcast(&mut text, first[0])?;
    let end = text.iter().position(|&b| b == 0).unwrap_or(MESSAGE);
    Ok((
        false,
        Some(String::from_utf8_lossy(&text[..end]).into_owned()),
    ))
}
