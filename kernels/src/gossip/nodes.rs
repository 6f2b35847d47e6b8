//! Virtual nodes spread over ranks, and the per-round exchange of batched
//! node-to-node messages between ranks.

use courier::{wait_all, Comm, Result};

use super::rng::{purpose, Stream};

/// Node ids `0..n` in equal contiguous blocks, one per rank (the last may be
/// shorter): node `v` lives on rank `v / block`.
#[derive(Clone, Debug)]
pub(crate) struct Nodes {
    pub n: u64,
    pub ranks: usize,
    pub rank: usize,
    block: u64,
    /// ⌊2⁶⁴ / block⌋ + 1: `v / block` as a multiply for 32-bit `v` (Lemire,
    /// "Faster remainder by direct computation"), which matters because every
    /// contact asks where its target lives.
    magic: u64,
    /// This rank's first node and one past its last.
    pub lo: u64,
    pub hi: u64,
}

impl Nodes {
    pub(crate) fn new(n: u64, ranks: usize, rank: usize) -> Nodes {
        let block = n.div_ceil(ranks as u64).max(1);
        let lo = (rank as u64 * block).min(n);
        Nodes {
            n,
            ranks,
            rank,
            block,
            magic: if block == 1 { 0 } else { u64::MAX / block + 1 },
            lo,
            hi: (lo + block).min(n),
        }
    }

    /// How many nodes this rank hosts.
    pub(crate) fn len(&self) -> usize {
        (self.hi - self.lo) as usize
    }

    /// The rank hosting node `v`.
    #[inline]
    pub(crate) fn owner(&self, v: u64) -> usize {
        if self.block == 1 {
            v as usize
        } else {
            ((self.magic as u128 * v as u128) >> 64) as usize
        }
    }

    /// The first node of `rank`.
    pub(crate) fn first_of(&self, rank: usize) -> u64 {
        (rank as u64 * self.block).min(self.n)
    }
}

/// Crashed nodes: a fraction `f` of the nodes, drawn from the seed, never the
/// source. Kept as one bit per local node.
pub(crate) struct Crashed {
    bits: Vec<u64>,
    any: bool,
}

impl Crashed {
    pub(crate) fn new(nodes: &Nodes, seed: u64, f: f64, source: u64) -> Crashed {
        let s = Stream::new(seed, purpose::CRASH);
        let mut bits = vec![0u64; nodes.len().div_ceil(64)];
        let mut any = false;
        if f > 0.0 {
            for v in nodes.lo..nodes.hi {
                if v != source && s.coin(f, v, 0) {
                    let i = (v - nodes.lo) as usize;
                    bits[i / 64] |= 1 << (i % 64);
                    any = true;
                }
            }
        }
        Crashed { bits, any }
    }

    /// Whether local node `i` has crashed.
    #[inline]
    pub(crate) fn has(&self, i: usize) -> bool {
        self.any && self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// Live local nodes.
    pub(crate) fn live(&self, len: usize) -> u64 {
        len as u64
            - self
                .bits
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>()
    }
}

/// Message loss: whether the request (or its answer) of a contact made by `a`
/// in `round` is lost, drawn from the seed.
#[derive(Clone, Copy)]
pub(crate) struct Loss {
    p: f64,
    draws: Stream,
}

impl Loss {
    pub(crate) fn new(seed: u64, p: f64) -> Loss {
        Loss {
            p,
            draws: Stream::new(seed, purpose::LOSS),
        }
    }

    #[inline]
    pub(crate) fn lost(self, a: u64, round: u32, answer: bool) -> bool {
        self.p > 0.0
            && self
                .draws
                .coin(self.p, a, 2 * u64::from(round) + u64::from(answer))
    }
}

/// Sends `out[q]` to every other rank `q` and returns what each rank sent here,
/// indexed by source rank (`out[me]` passes straight through). One message per
/// pair of ranks per call: this is the per-round batching.
pub(crate) fn exchange<T: bytemuck::Pod + Send>(
    comm: &Comm,
    tag: i32,
    out: &mut [Vec<T>],
) -> Result<Vec<Vec<T>>> {
    let me = comm.rank();
    let mut inbox: Vec<Vec<T>> = (0..comm.size()).map(|_| Vec::new()).collect();
    inbox[me] = std::mem::take(&mut out[me]);
    comm.scope(|s| -> Result<()> {
        let mut sends = Vec::with_capacity(out.len());
        for (q, batch) in out.iter().enumerate() {
            if q != me {
                sends.push(s.isend(batch, q, tag)?);
            }
        }
        for (q, slot) in inbox.iter_mut().enumerate() {
            if q != me {
                *slot = comm.recv_owned(q, tag)?.0;
            }
        }
        wait_all(&mut sends)?;
        Ok(())
    })?;
    for batch in out.iter_mut() {
        batch.clear();
    }
    Ok(inbox)
}

/// Element-wise sums of `x` over all ranks.
pub(crate) fn sum<const K: usize>(comm: &Comm, x: [u64; K]) -> Result<[u64; K]> {
    let mut out = [0u64; K];
    comm.all_reduce(&x, &mut out, |a, b| a + b)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_matches_division_and_blocks_cover_every_node() {
        for n in [2u64, 3, 7, 10, 1000, 1_000_003] {
            for ranks in 1..=9usize {
                let parts: Vec<Nodes> = (0..ranks).map(|r| Nodes::new(n, ranks, r)).collect();
                assert_eq!(parts.iter().map(Nodes::len).sum::<usize>() as u64, n);
                for p in &parts {
                    for v in [p.lo, p.hi.saturating_sub(1)] {
                        if p.len() > 0 {
                            assert_eq!(p.owner(v), p.rank, "n={n} ranks={ranks} v={v}");
                        }
                    }
                    assert_eq!(p.first_of(p.rank), p.lo);
                }
                let p = &parts[0];
                for v in (0..n).step_by((n / 97).max(1) as usize) {
                    assert_eq!(p.owner(v) as u64, v / p.block);
                }
            }
        }
    }
}
