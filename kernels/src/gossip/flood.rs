//! Probabilistic flooding on an overlay graph: a node that sees the message for
//! the first time forwards it to each neighbour except the one it heard it from,
//! each with probability `p_flood` (the source forwards to all). Rounds are
//! hops; messages to other ranks are batched per rank and round.

use std::fmt;
use std::str::FromStr;

use courier::{Comm, Result};
use serde::Serialize;

use super::nodes::{exchange, sum, Crashed, Nodes};
use super::rng::{purpose, Stream};
use super::{heard, unreached, Config, Outcome, NEVER};

const FORWARDS: i32 = 6;

/// The overlay graph flooding runs on. Every node can list its neighbours
/// from the seed alone (no rank holds the whole graph).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlay {
    /// A random `degree`-regular graph: the union of `degree / 2` random
    /// permutations σ, node `v` linked to σ(v) and σ⁻¹(v) — the permutation
    /// model of random regular graphs (self-loops dropped, and the rare
    /// repeated edge kept, so a few nodes have fewer distinct neighbours).
    Regular {
        /// Even, at least 2.
        degree: u32,
    },
    /// A ring: `v - 1` and `v + 1`.
    Ring,
    /// A binary tree: the parent `(v - 1) / 2` and the children `2v + 1`, `2v + 2`.
    Tree,
}

impl fmt::Display for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overlay::Regular { degree } => write!(f, "regular:{degree}"),
            Overlay::Ring => f.write_str("ring"),
            Overlay::Tree => f.write_str("tree"),
        }
    }
}

impl FromStr for Overlay {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ring" => Ok(Overlay::Ring),
            "tree" => Ok(Overlay::Tree),
            _ => s
                .strip_prefix("regular:")
                .and_then(|d| d.parse().ok())
                .map(|degree| Overlay::Regular { degree })
                .ok_or_else(|| format!("unknown overlay {s:?}: regular:D (D even), ring or tree")),
        }
    }
}

/// A pseudo-random permutation of `0..n`: a 4-round Feistel network on the
/// smallest even number of bits covering `n`, cycle-walking back into range
/// (fewer than 4 steps on average, since the domain is under 4n).
#[derive(Clone, Copy)]
struct Permutation {
    n: u64,
    half: u32,
    keys: [Stream; 4],
}

impl Permutation {
    fn new(n: u64, seed: u64, which: u64) -> Permutation {
        let bits = 64 - (n - 1).leading_zeros();
        let half = bits.div_ceil(2).max(1);
        let key = |k: u64| {
            Stream::new(
                seed ^ which.wrapping_mul(0x517c_c1b7_2722_0a95),
                purpose::GRAPH + 16 * k,
            )
        };
        Permutation {
            n,
            half,
            keys: [key(0), key(1), key(2), key(3)],
        }
    }

    fn once(&self, x: u64, inverse: bool) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        if inverse {
            for k in self.keys.iter().rev() {
                (l, r) = (r ^ (k.draw(l, 0) & mask), l);
            }
        } else {
            for k in &self.keys {
                (l, r) = (r, l ^ (k.draw(r, 0) & mask));
            }
        }
        l << self.half | r
    }

    fn apply(&self, mut x: u64, inverse: bool) -> u64 {
        loop {
            x = self.once(x, inverse);
            if x < self.n {
                return x;
            }
        }
    }
}

/// Neighbour lists of an overlay, computed on demand.
pub(crate) struct Graph {
    overlay: Overlay,
    n: u64,
    perms: Vec<Permutation>,
}

impl Graph {
    pub(crate) fn new(overlay: Overlay, n: u64, seed: u64) -> Graph {
        let k = match overlay {
            Overlay::Regular { degree } => u64::from(degree / 2),
            _ => 0,
        };
        Graph {
            overlay,
            n,
            perms: (0..k).map(|i| Permutation::new(n, seed, i)).collect(),
        }
    }

    /// The neighbours of `v` into `out` (cleared first).
    pub(crate) fn neighbours(&self, v: u64, out: &mut Vec<u64>) {
        out.clear();
        let n = self.n;
        match self.overlay {
            Overlay::Regular { .. } => {
                for p in &self.perms {
                    for w in [p.apply(v, false), p.apply(v, true)] {
                        if w != v {
                            out.push(w);
                        }
                    }
                }
            }
            Overlay::Ring => {
                out.push((v + n - 1) % n);
                if n > 2 {
                    out.push((v + 1) % n);
                }
            }
            Overlay::Tree => {
                if v > 0 {
                    out.push((v - 1) / 2);
                }
                out.extend([2 * v + 1, 2 * v + 2].into_iter().filter(|&c| c < n));
            }
        }
    }
}

/// Local node `j` receives the message from `sender` in round `r`.
#[allow(clippy::too_many_arguments)]
fn deliver(
    first: &mut [u16],
    from: &mut [u32],
    crashed: &Crashed,
    r: u16,
    j: usize,
    sender: u32,
    next: &mut Vec<usize>,
) {
    if crashed.has(j) {
        return;
    }
    if first[j] == NEVER {
        first[j] = r;
        from[j] = sender;
        next.push(j);
    } else if first[j] == r {
        from[j] = from[j].min(sender);
    }
}

pub(crate) fn run(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    let (me, lo, len) = (nodes.rank, nodes.lo, nodes.len());
    let source = cfg.source();
    let crashed = Crashed::new(nodes, cfg.seed, cfg.crash, source);
    let graph = Graph::new(cfg.overlay, nodes.n, cfg.seed);
    let coin = Stream::new(cfg.seed, purpose::COIN);
    let loss = Stream::new(cfg.seed, purpose::LOSS);
    let mut first = vec![NEVER; len];
    // Who each node first heard from (the smallest sender of its first round).
    let mut from = vec![u32::MAX; len];
    let mut frontier: Vec<usize> = Vec::new();
    if (lo..nodes.hi).contains(&source) {
        let i = (source - lo) as usize;
        first[i] = 0;
        frontier.push(i);
    }
    let [live] = sum(comm, [crashed.live(len)])?;
    let mut out: Vec<Vec<[u32; 2]>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut next: Vec<usize> = Vec::new();
    let mut nb = Vec::new();
    let (mut messages, mut contacts) = (0u64, 0u64);
    let mut ignorant = vec![live - 1];
    let mut round = 0u32;
    let mut spreading = 1;
    while spreading > 0 && round < cfg.max_rounds {
        round += 1;
        let r = round as u16;
        for &i in &frontier {
            let u = lo + i as u64;
            contacts += 1;
            graph.neighbours(u, &mut nb);
            for (k, &w) in nb.iter().enumerate() {
                if w == u64::from(from[i]) {
                    continue;
                }
                if u != source && !coin.coin(cfg.p_flood, u, k as u64) {
                    continue;
                }
                messages += 1;
                if cfg.loss > 0.0 && loss.coin(cfg.loss, u, k as u64) {
                    continue;
                }
                let q = nodes.owner(w);
                if q == me {
                    deliver(
                        &mut first,
                        &mut from,
                        &crashed,
                        r,
                        (w - lo) as usize,
                        u as u32,
                        &mut next,
                    );
                } else {
                    out[q].push([(w - nodes.first_of(q)) as u32, u as u32]);
                }
            }
        }
        if nodes.ranks > 1 {
            for batch in exchange(comm, FORWARDS, &mut out)? {
                for [j, sender] in batch {
                    deliver(
                        &mut first, &mut from, &crashed, r, j as usize, sender, &mut next,
                    );
                }
            }
        }
        std::mem::swap(&mut frontier, &mut next);
        next.clear();
        let left = unreached(&first, &crashed);
        let [left, spread] = sum(comm, [left, frontier.len() as u64])?;
        ignorant.push(left);
        spreading = spread;
    }
    let (heard_sum, heard_last) = heard(comm, &first, &crashed)?;
    let [messages, contacts] = sum(comm, [messages, contacts])?;
    Ok(Outcome {
        rounds: round,
        live,
        bytes: 0,
        ignorant,
        messages,
        contacts,
        heard_sum,
        heard_last,
        push_sum: None,
        kv: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_bijections_with_inverses() {
        for n in [2u64, 3, 5, 17, 1000, 4097] {
            let p = Permutation::new(n, 42, 1);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.apply(x, false);
                assert!(y < n);
                assert!(!seen[y as usize], "n={n}: {y} twice");
                seen[y as usize] = true;
                assert_eq!(p.apply(y, true), x);
            }
        }
    }

    #[test]
    fn regular_graph_is_symmetric_with_degree_d() {
        let g = Graph::new(Overlay::Regular { degree: 6 }, 500, 3);
        let (mut nb, mut back) = (Vec::new(), Vec::new());
        let mut full = 0;
        for v in 0..500u64 {
            g.neighbours(v, &mut nb);
            assert!(nb.len() <= 6);
            full += usize::from(nb.len() == 6);
            for &w in &nb {
                g.neighbours(w, &mut back);
                assert!(back.contains(&v), "{v}-{w} one way only");
            }
        }
        // Self-loops are rare: about 3 permutations × 1 fixed point each.
        assert!(full >= 490, "{full} of 500 nodes have degree 6");
    }
}
