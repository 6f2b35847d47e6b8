//! Anti-entropy: every live node contacts one random node per round and they
//! compare states — push (the caller's update goes to the callee), pull (the
//! callee's goes back to the caller) or both.
//!
//! Per round and pair of ranks: one batch of requests (4 bytes per contact: the
//! callee's local index, the caller's "I have it" bit on top) and, for pull,
//! one batch of one-byte answers in the same order, for the callers that do not
//! have the update yet. The caller side does not remember who asked: its nodes
//! still without the update draw the same targets again to read the answers,
//! which keeps the kernel at a few bytes per node.

use courier::{Comm, Result};

use super::nodes::{exchange, sum, Crashed, Loss, Nodes};
use super::rng::{other, purpose, Stream};
use super::{heard, unreached, Config, Outcome, Protocol, NEVER};

const REQUESTS: i32 = 1;
const ANSWERS: i32 = 2;
const HAS: u32 = 1 << 31;

pub(crate) fn run(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    match cfg.protocol {
        Protocol::Push => rounds::<true, false>(comm, nodes, cfg),
        Protocol::Pull => rounds::<false, true>(comm, nodes, cfg),
        _ => rounds::<true, true>(comm, nodes, cfg),
    }
}

/// The rounds, compiled once per (push, pull) pair so the contact loop has no
/// protocol branches.
fn rounds<const PUSH: bool, const PULL: bool>(
    comm: &Comm,
    nodes: &Nodes,
    cfg: &Config,
) -> Result<Outcome> {
    let (n, me, lo, len) = (nodes.n, nodes.rank, nodes.lo, nodes.len());
    let source = cfg.source();
    let crashed = Crashed::new(nodes, cfg.seed, cfg.crash, source);
    let mut first = vec![NEVER; len];
    if (lo..nodes.hi).contains(&source) {
        first[(source - lo) as usize] = 0;
    }
    let [live] = sum(comm, [crashed.live(len)])?;
    let target = Stream::new(cfg.seed, purpose::TARGET);
    let loss = Loss::new(cfg.seed, cfg.loss);
    let lost = |u: u64, round: u32, answer: bool| loss.lost(u, round, answer);
    let share = len / nodes.ranks + len / 64 + 16;
    let mut requests: Vec<Vec<u32>> = (0..nodes.ranks)
        .map(|q| Vec::with_capacity(if q == me { 0 } else { share }))
        .collect();
    let mut answers: Vec<Vec<u8>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut cursor = vec![0usize; nodes.ranks];
    let (mut messages, mut contacts) = (0u64, 0u64);
    let mut ignorant = vec![live - 1];
    // Batches at their largest, over the run; node state added at the end.
    let mut peak = 0usize;
    let mut round = 0u32;
    while ignorant[ignorant.len() - 1] > 0 && round < cfg.max_rounds {
        round += 1;
        let r = round as u16;
        // Local contacts at once; remote ones batched per rank.
        for i in 0..len {
            if crashed.has(i) {
                continue;
            }
            contacts += 1;
            messages += 1;
            let u = lo + i as u64;
            let v = other(target.draw(u, u64::from(round)), u, n);
            if lost(u, round, false) {
                continue;
            }
            let has = first[i] < r;
            let q = nodes.owner(v);
            if q != me {
                requests[q].push((v - nodes.first_of(q)) as u32 | if has { HAS } else { 0 });
                continue;
            }
            let j = (v - lo) as usize;
            if crashed.has(j) {
                continue;
            }
            if PULL {
                messages += 1;
                if first[i] == NEVER && first[j] < r && !lost(u, round, true) {
                    first[i] = r;
                }
            }
            if PUSH && has && first[j] == NEVER {
                first[j] = r;
            }
        }
        if nodes.ranks > 1 {
            let held = bytes_of(&requests);
            let incoming = exchange(comm, REQUESTS, &mut requests)?;
            peak = peak.max(held + bytes_of(&incoming));
            for (q, batch) in incoming.iter().enumerate() {
                for &w in batch {
                    let j = (w & !HAS) as usize;
                    let alive = !crashed.has(j);
                    if PULL {
                        // Answer from the state at the start of the round; a
                        // caller that has the update is answered too (counted)
                        // but the answer cannot change it, so it is not carried.
                        messages += u64::from(alive);
                        if w & HAS == 0 {
                            answers[q].push(u8::from(alive && first[j] < r));
                        }
                    }
                    if PUSH && alive && w & HAS != 0 && first[j] == NEVER {
                        first[j] = r;
                    }
                }
            }
            if PULL {
                peak = peak.max(bytes_of(&requests) + bytes_of(&incoming) + bytes_of(&answers));
                drop(incoming);
                let back = exchange(comm, ANSWERS, &mut answers)?;
                peak = peak.max(bytes_of(&requests) + bytes_of(&answers) + bytes_of(&back));
                cursor.fill(0);
                // The same draws as above, in the same order, pair each answer
                // with the node that asked (nodes that had the update at the
                // start of the round were not answered).
                for (i, f) in first.iter_mut().enumerate() {
                    if *f < r || crashed.has(i) {
                        continue;
                    }
                    let u = lo + i as u64;
                    let v = other(target.draw(u, u64::from(round)), u, n);
                    let q = nodes.owner(v);
                    if q == me || lost(u, round, false) {
                        continue;
                    }
                    let yes = back[q][cursor[q]] == 1;
                    cursor[q] += 1;
                    if yes && *f == NEVER && !lost(u, round, true) {
                        *f = r;
                    }
                }
            }
        }
        let left = unreached(&first, &crashed);
        ignorant.push(sum(comm, [left])?[0]);
    }
    let (heard_sum, heard_last) = heard(comm, &first, &crashed)?;
    let [messages, contacts] = sum(comm, [messages, contacts])?;
    let state = first.capacity() * 2 + len.div_ceil(8) + cursor.capacity() * 8;
    Ok(Outcome {
        rounds: round,
        live,
        bytes: (state + peak) as u64,
        ignorant,
        messages,
        contacts,
        heard_sum,
        heard_last,
        push_sum: None,
        kv: None,
    })
}

/// Bytes allocated by a set of batches (capacity, not length: what is held).
fn bytes_of<T>(batches: &[Vec<T>]) -> usize {
    batches
        .iter()
        .map(|b| b.capacity() * std::mem::size_of::<T>())
        .sum()
}
