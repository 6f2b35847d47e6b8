//! Counter-based randomness: every draw is a hash of (seed, purpose, node or
//! step, round), so a node's choices do not depend on which rank hosts it, nor
//! on the order in which ranks run. This is what makes a run with a given seed
//! give the same result on 1 rank or on 8.

/// SplitMix64's finaliser: a bijective mix of 64 bits.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One independent stream of draws, keyed by (seed, purpose).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream {
    key: u64,
}

impl Stream {
    pub(crate) fn new(seed: u64, purpose: u64) -> Stream {
        Stream {
            key: mix(mix(seed) ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// 64 random bits for (a, b).
    #[inline]
    pub(crate) fn draw(self, a: u64, b: u64) -> u64 {
        mix(self
            .key
            .wrapping_add(a.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(mix(b)))
    }

    /// True with probability `p` for (a, b).
    #[inline]
    pub(crate) fn coin(self, p: f64, a: u64, b: u64) -> bool {
        p > 0.0 && unit(self.draw(a, b)) < p
    }
}

/// A uniform draw in [0, 1) from 64 random bits.
#[inline]
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw in [0, n) from 64 random bits (Lemire's multiply-shift).
#[inline]
pub(crate) fn below(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

/// A node other than `u`, uniform among the other `n - 1`.
#[inline]
pub(crate) fn other(h: u64, u: u64, n: u64) -> u64 {
    let t = below(h, n - 1);
    t + u64::from(t >= u)
}

/// Purposes: one stream each, so draws for different decisions are independent.
pub(crate) mod purpose {
    pub const TARGET: u64 = 1;
    pub const LOSS: u64 = 2;
    pub const CRASH: u64 = 3;
    pub const COIN: u64 = 4;
    pub const NODE: u64 = 5;
    pub const GRAPH: u64 = 6;
    pub const VALUE: u64 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_is_uniform_and_never_self() {
        let s = Stream::new(7, purpose::TARGET);
        let (n, u) = (10u64, 3u64);
        let mut hits = [0u32; 10];
        for i in 0..100_000 {
            hits[other(s.draw(i, 0), u, n) as usize] += 1;
        }
        assert_eq!(hits[u as usize], 0);
        // 100,000 / 9 ≈ 11,111 each; the standard deviation is about 100.
        for (v, &h) in hits.iter().enumerate() {
            if v as u64 != u {
                assert!((10_700..11_500).contains(&h), "node {v}: {h}");
            }
        }
    }

    #[test]
    fn coin_rate_matches_p() {
        let s = Stream::new(1, purpose::COIN);
        let heads = (0..100_000).filter(|&i| s.coin(0.3, i, 9)).count();
        // Binomial(100000, 0.3): sd ≈ 145.
        assert!((29_400..30_600).contains(&heads), "{heads}");
        assert!(!(0..1000).any(|i| s.coin(0.0, i, 0)));
        assert!((0..1000).all(|i| s.coin(1.0, i, 0)));
    }
}
