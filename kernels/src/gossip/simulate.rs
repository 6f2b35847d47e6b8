//! The single-threaded limit: push-pull anti-entropy as a tight loop over one
//! array, with the kernel's own random draws — so it takes exactly the same
//! contacts and gives exactly the same per-round curve as
//! [`run`](super::run) on any number of ranks, and its contact rate is the
//! yardstick for the distributed kernel.

use std::time::Instant;

use super::rng::{other, purpose, Stream};
use super::{Config, Protocol, NEVER};

/// What the simulation measured.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Rounds to full coverage.
    pub rounds: u32,
    /// Ignorant nodes after each round (index 0 = before the first).
    pub ignorant: Vec<u64>,
    /// Node contacts.
    pub contacts: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

/// Push-pull anti-entropy on `nodes` nodes with `seed`, no faults, to full
/// coverage.
pub fn push_pull(nodes: u64, seed: u64) -> Simulation {
    let cfg = Config::new(Protocol::PushPull, nodes).seed(seed);
    let target = Stream::new(seed, purpose::TARGET);
    let start = Instant::now();
    let mut first = vec![NEVER; nodes as usize];
    first[cfg.source() as usize] = 0;
    let mut ignorant = vec![nodes - 1];
    let mut round = 0u32;
    while ignorant[ignorant.len() - 1] > 0 && round < cfg.max_rounds {
        round += 1;
        let r = round as u16;
        for u in 0..nodes {
            let v = other(target.draw(u, u64::from(round)), u, nodes) as usize;
            let i = u as usize;
            if first[i] == NEVER && first[v] < r {
                first[i] = r;
            } else if first[i] < r && first[v] == NEVER {
                first[v] = r;
            }
        }
        ignorant.push(first.iter().filter(|&&f| f == NEVER).count() as u64);
    }
    Simulation {
        rounds: round,
        contacts: nodes * u64::from(round),
        ignorant,
        wall_s: start.elapsed().as_secs_f64(),
    }
}
