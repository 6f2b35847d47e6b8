//! The analytic side: the anti-entropy recurrences, the rumor-mongering residue
//! equation and its epidemic ODEs, and the residue table the kernel reproduces.

/// Rumor mongering (feedback + coin), 10,000 nodes: (1/p_stop, residue s,
/// nodes never reached) from s = e^{-(1/p_stop + 1)(1 - s)}.
pub const RUMOR_TABLE: [(u32, f64, u32); 7] = [
    (1, 0.203188, 2032),
    (2, 0.059520, 595),
    (3, 0.019827, 198),
    (4, 0.006977, 70),
    (5, 0.002516, 25),
    (6, 0.000918, 9),
    (7, 0.000336, 3),
];

/// Fraction ignorant after each of `rounds` rounds of pull, from `p0`:
/// p_{i+1} = p_i² (ignorant, and asked an ignorant node).
pub fn pull(p0: f64, rounds: usize) -> Vec<f64> {
    iterate(p0, rounds, |p| p * p)
}

/// Push: p_{i+1} = p_i (1 − 1/(N−1))^{(N−1)(1−p_i)} — nobody of the informed
/// (N − 1)(1 − p_i) callers picked this node (≈ p_i / e late on).
pub fn push(n: u64, p0: f64, rounds: usize) -> Vec<f64> {
    iterate(p0, rounds, |p| p * missed(n, p))
}

/// Push-pull: ignorant after a round if it pulled from an ignorant node and no
/// informed node pushed to it: p_{i+1} = p_i² (1 − 1/(N−1))^{(N−1)(1−p_i)}.
pub fn push_pull(n: u64, p0: f64, rounds: usize) -> Vec<f64> {
    iterate(p0, rounds, |p| p * p * missed(n, p))
}

fn missed(n: u64, p: f64) -> f64 {
    let m = (n - 1) as f64;
    (1.0 - 1.0 / m).powf(m * (1.0 - p))
}

fn iterate(p0: f64, rounds: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
    let mut out = vec![p0];
    for _ in 0..rounds {
        out.push(f(out[out.len() - 1]));
    }
    out
}

/// The residue s of rumor mongering with feedback + coin: the root in (0, 1)
/// of s = e^{-(1/p_stop + 1)(1 - s)} (fixed-point iteration from 0, which
/// converges to it because the map is increasing and convex).
pub fn rumor_residue(p_stop: f64) -> f64 {
    let c = 1.0 / p_stop + 1.0;
    let mut s = 0.0f64;
    for _ in 0..10_000 {
        let next = (-c * (1.0 - s)).exp();
        if (next - s).abs() < 1e-15 {
            return next;
        }
        s = next;
    }
    s
}

/// The epidemic ODEs of feedback + coin rumor mongering, ds/dt = −s·i,
/// di/dt = s·i − p_stop(1 − s)·i, from one informed node of `n`; the susceptible
/// fraction s at t = 0, 1, …, `rounds` (one unit = N contacts, a round of the
/// asynchronous model). Runge–Kutta 4 with 1000 steps per unit.
pub fn rumor_ode(n: u64, p_stop: f64, rounds: usize) -> Vec<f64> {
    let f = |s: f64, i: f64| (-s * i, s * i - p_stop * (1.0 - s) * i);
    let (mut s, mut i) = (1.0 - 1.0 / n as f64, 1.0 / n as f64);
    let h = 1e-3;
    let mut out = vec![s];
    for _ in 0..rounds {
        for _ in 0..1000 {
            let k1 = f(s, i);
            let k2 = f(s + h / 2.0 * k1.0, i + h / 2.0 * k1.1);
            let k3 = f(s + h / 2.0 * k2.0, i + h / 2.0 * k2.1);
            let k4 = f(s + h * k3.0, i + h * k3.1);
            s += h / 6.0 * (k1.0 + 2.0 * k2.0 + 2.0 * k3.0 + k4.0);
            i += h / 6.0 * (k1.1 + 2.0 * k2.1 + 2.0 * k3.1 + k4.1);
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residue_equation_gives_the_table() {
        for (inv, s, ns) in RUMOR_TABLE {
            let got = rumor_residue(1.0 / f64::from(inv));
            assert!((got - s).abs() < 5e-7, "1/p = {inv}: {got} vs {s}");
            assert_eq!((got * 10_000.0).round() as u32, ns);
        }
    }

    #[test]
    fn ode_ends_at_the_residue() {
        for inv in 1..=5 {
            let p = 1.0 / f64::from(inv);
            let s = rumor_ode(1_000_000, p, 200);
            let end = s[s.len() - 1];
            assert!((end - rumor_residue(p)).abs() < 1e-3, "1/p = {inv}: {end}");
        }
    }

    #[test]
    fn recurrences_shrink_as_documented() {
        let p = pull(0.5, 3);
        assert_eq!(p, vec![0.5, 0.25, 0.0625, 0.00390625]);
        let q = push(1_000_000, 1e-3, 1);
        assert!((q[1] / q[0] - (-1.0f64).exp()).abs() < 2e-3);
    }
}
