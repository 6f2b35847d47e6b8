//! Ordered multicast: every rank multicasts `messages` messages to the group
//! and delivers every rank's, in an order the kernel then verifies.
//!
//! | order | algorithm | unicasts per multicast |
//! |---|---|---|
//! | `total` | `lamport`: Lamport clocks + acknowledgements to all | (n−1) + (n−1)² (fewer with ACK batching) |
//! | `total` | `sequencer`: rank 0 numbers every message | (n−1) + (n−1)/n |
//! | `total` | `ring`: a numbering token circulates; messages travel the ring once | n−1 + token passes |
//! | `causal` | vector clocks, hold-back until causally ready | n−1 |
//! | `fifo` | per-sender sequence numbers | n−1 |
//! | `none` | deliver on receipt (the baseline) | n−1 |
//!
//! Each rank runs an event loop on the kernel's own [`dup`](courier::Comm::dup):
//! it multicasts its next message when due (`rate`), takes whatever has
//! arrived (matched probes, any source), and sends through an attached buffer
//! (`bsend`), so a full buffer means "poll and retry", never a deadlock. An
//! optional random delay per unicast (`delay_us`, each pair kept FIFO) mimics a
//! network that reorders messages between different pairs — which is what makes
//! a wrong order visible. At the end every rank checks its delivery log and the
//! ranks compare logs ([`Report::verified`], [`Report::divergence`]).
//!
//! ```
//! use courier_kernels::multicast::{self, Algorithm, Config, Order};
//!
//! let reports = courier::run(3, |comm| {
//!     multicast::run(comm, &Config::new(Order::Total, Algorithm::Lamport, 100))
//! })?;
//! assert!(reports[0].verified);
//! assert_eq!(reports[0].delivered, 300);
//! # Ok::<(), courier::Error>(())
//! ```

mod causal;
mod direct;
mod io;
mod lamport;
mod ring;
mod sequencer;
mod verify;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use courier::{Comm, Error, Result, ANY_SOURCE};
use serde::Serialize;

use io::{check_word, now_ns, Io};

const TAG: i32 = 1;
const DONE: u64 = 0;

/// The delivery order guaranteed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Every rank delivers every message in the same order.
    Total,
    /// A message is delivered after every message it may depend on.
    Causal,
    /// Each sender's messages in the order sent.
    Fifo,
    /// Any order (deliver on receipt): the baseline.
    None,
}

impl FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "total" => Ok(Order::Total),
            "causal" => Ok(Order::Causal),
            "fifo" => Ok(Order::Fifo),
            "none" => Ok(Order::None),
            _ => Err(format!("unknown order {s:?}: total, causal, fifo or none")),
        }
    }
}

/// How total order is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Lamport clocks and acknowledgements to all.
    Lamport,
    /// A fixed sequencer (rank 0).
    Sequencer,
    /// A numbering token on a ring.
    Ring,
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lamport" => Ok(Algorithm::Lamport),
            "sequencer" => Ok(Algorithm::Sequencer),
            "ring" => Ok(Algorithm::Ring),
            _ => Err(format!(
                "unknown algorithm {s:?}: lamport, sequencer or ring"
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Lamport => "lamport",
            Algorithm::Sequencer => "sequencer",
            Algorithm::Ring => "ring",
        })
    }
}

/// A multicast run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The order.
    pub order: Order,
    /// The algorithm (total order only).
    pub algorithm: Algorithm,
    /// Messages each rank multicasts.
    pub messages: u64,
    /// Payload bytes per message (at least 8: the first word is checked).
    pub size: usize,
    /// Multicasts per second per rank (0: as fast as possible).
    pub rate: f64,
    /// Each unicast is held back a random 0 ..= `delay_us` µs (pairs stay FIFO).
    pub delay_us: u64,
    /// Lamport: acknowledge once per polling pass, piggybacked on a multicast.
    pub batch_acks: bool,
    /// Seed of the random delays.
    pub seed: u64,
    /// Deliver on receipt whatever the order says (Lamport and causal): a
    /// deliberately broken order, for checking that the verifier catches it.
    pub sabotage: bool,
}

impl Config {
    /// `messages` per rank, 64-byte payloads, as fast as possible, no delay.
    pub fn new(order: Order, algorithm: Algorithm, messages: u64) -> Config {
        Config {
            order,
            algorithm,
            messages,
            size: 64,
            rate: 0.0,
            delay_us: 0,
            batch_acks: false,
            seed: 1,
            sabotage: false,
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if !(1..=1 << 24).contains(&self.messages) {
            return bad(format!("messages = {}: 1 ..= 2^24", self.messages));
        }
        if !(8..=1 << 20).contains(&self.size) {
            return bad(format!("size = {}: 8 bytes ..= 1 MiB", self.size));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return bad(format!("rate = {}: 0 (unlimited) or more", self.rate));
        }
        if self.sabotage
            && !matches!(
                (self.order, self.algorithm),
                (Order::Total, Algorithm::Lamport) | (Order::Causal, _)
            )
        {
            return bad("sabotage applies to total order with lamport, and to causal".into());
        }
        Ok(())
    }

    /// Unicasts per multicast in theory, on `n` ranks (ring: without the token).
    pub fn theory_unicasts(&self, n: usize) -> f64 {
        let m = n as f64 - 1.0;
        match (self.order, self.algorithm) {
            (Order::Total, Algorithm::Lamport) => m + m * m,
            (Order::Total, Algorithm::Sequencer) => m + m / n as f64,
            _ => m,
        }
    }
}

/// Latency percentiles, µs, from multicast to delivery (own deliveries included).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What a multicast run measured and whether its order held.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The order.
    pub order: Order,
    /// The algorithm (meaningful for total order).
    pub algorithm: Algorithm,
    /// Ranks.
    pub ranks: usize,
    /// Messages multicast per rank.
    pub messages: u64,
    /// Payload bytes.
    pub size: usize,
    /// Whether every check passed on every rank.
    pub verified: bool,
    /// The first failure (rank, position, what), when not verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
    /// Messages delivered per rank (ranks × messages when nothing was lost).
    pub delivered: u64,
    /// Deliveries per second per rank.
    pub throughput_msgs_s: f64,
    /// Multicast-to-delivery latency.
    pub latency_us: Latency,
    /// Runtime unicasts sent per multicast, measured.
    pub messages_per_multicast: f64,
    /// The same in theory (ring: without the token's passes).
    pub theory_messages_per_multicast: f64,
    /// Ring: the token's passes per multicast (included in the measured count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_passes_per_multicast: Option<f64>,
    /// Lamport acknowledgements batched.
    pub batch_acks: bool,
    /// Wall-clock seconds (slowest rank).
    pub wall_s: f64,
}

/// One ordering algorithm, driven by the event loop.
pub(crate) trait Orderer {
    /// Multicasts this rank's message `seq`.
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>);
    /// Takes a message from rank `from`.
    fn receive(&mut self, io: &mut Io, from: usize, msg: Vec<u64>);
    /// After each pass over the arrived messages.
    fn after_poll(&mut self, _io: &mut Io) {}
    /// Ring token passes sent (ring only).
    fn token_passes(&self) -> u64 {
        0
    }
}

impl Orderer for ring::Ring {
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        ring::Ring::push(self, io, seq, sent_ns, payload)
    }
    fn receive(&mut self, io: &mut Io, from: usize, msg: Vec<u64>) {
        ring::Ring::take(self, io, from, msg)
    }
    fn token_passes(&self) -> u64 {
        self.passes
    }
}

/// Runs `config` on every rank of `comm` (collective) and returns the report,
/// the same on every rank.
pub fn run(comm: &Comm, config: &Config) -> Result<Report> {
    config.validate()?;
    let comm = comm.dup()?;
    let (n, me) = (comm.size(), comm.rank());
    let per_rank = config.messages;
    let total = n as u64 * per_rank;
    let words = config.size.div_ceil(8);
    // Room for many messages in flight, and always for the largest one.
    comm.attach_buffer((64 << 20).max(64 * (words * 8 + 64 + 8 * n)))?;
    let mut io = Io::new(&comm, config.delay_us, config.seed);
    let mut orderer: Box<dyn Orderer> = match config.order {
        Order::Total => match config.algorithm {
            Algorithm::Lamport => {
                Box::new(lamport::Lamport::new(n, config.batch_acks, config.sabotage))
            }
            Algorithm::Sequencer => Box::new(sequencer::Sequencer::new()),
            Algorithm::Ring => Box::new(ring::Ring::new(me, total)),
        },
        Order::Causal => Box::new(causal::Causal::new(n, config.sabotage)),
        Order::Fifo => Box::new(direct::Direct::new(n, true)),
        Order::None => Box::new(direct::Direct::new(n, false)),
    };
    comm.barrier()?;
    let start = Instant::now();
    let gap = (config.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / config.rate));
    let (mut sent, mut dones, mut done_sent) = (0u64, 0usize, false);
    loop {
        let mut progress = false;
        let due = gap.is_none_or(|g| start.elapsed() >= g.mul_f64(sent as f64));
        if sent < per_rank && due {
            let mut payload = vec![0u64; words];
            payload[0] = check_word(me, sent);
            orderer.multicast(&mut io, sent, now_ns(), payload);
            sent += 1;
            progress = true;
        }
        while let Some(m) = comm.improbe(ANY_SOURCE, TAG)? {
            let from = m.status().source;
            let (msg, _) = m.mrecv_owned::<u64>()?;
            if msg[0] == DONE {
                dones += 1;
            } else {
                orderer.receive(&mut io, from, msg);
            }
            progress = true;
        }
        orderer.after_poll(&mut io);
        progress |= io.flush()?;
        if !done_sent && sent == per_rank && io.log.len() as u64 == total {
            // Everything this rank will ever send to a peer goes before this.
            for p in (0..n).filter(|&p| p != me) {
                io.send_uncounted(p, vec![DONE]);
            }
            done_sent = true;
        }
        if done_sent && dones == n - 1 && io.idle() {
            break;
        }
        if !progress {
            std::thread::yield_now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    comm.detach_buffer()?;
    let mut wall = [0.0f64];
    comm.all_reduce(&[elapsed], &mut wall, f64::max)?;
    let (verified, mut divergence) = verify::verify(&comm, config.order, &io.log, per_rank)?;
    let mut corrupted = [0u64];
    comm.all_reduce(&[io.corrupted], &mut corrupted, |a, b| a + b)?;
    if corrupted[0] > 0 && divergence.is_none() {
        divergence = Some(format!("{} payloads arrived altered", corrupted[0]));
    }
    let mut counts = [0u64; 2];
    comm.all_reduce(
        &[io.unicasts, orderer.token_passes()],
        &mut counts,
        |a, b| a + b,
    )?;
    let latency_us = latencies(&comm, &io.latencies_ns, total as usize)?;
    Ok(Report {
        order: config.order,
        algorithm: config.algorithm,
        ranks: n,
        messages: per_rank,
        size: config.size,
        verified: verified && corrupted[0] == 0,
        divergence,
        delivered: io.log.len() as u64,
        throughput_msgs_s: io.log.len() as f64 / wall[0].max(1e-9),
        latency_us,
        messages_per_multicast: counts[0] as f64 / total as f64,
        theory_messages_per_multicast: config.theory_unicasts(n),
        token_passes_per_multicast: (config.order == Order::Total
            && config.algorithm == Algorithm::Ring)
            .then(|| counts[1] as f64 / total as f64),
        batch_acks: config.batch_acks,
        wall_s: wall[0],
    })
}

/// p50 and p99 over every rank's deliveries (each rank contributes `total`
/// samples; a short log is padded and the padding ignored).
fn latencies(comm: &Comm, mine: &[u64], total: usize) -> Result<Latency> {
    let mut padded = vec![u64::MAX; total];
    let k = mine.len().min(total);
    padded[..k].copy_from_slice(&mine[..k]);
    let mut all = vec![0u64; total * comm.size()];
    comm.all_gather(&padded, &mut all)?;
    all.retain(|&x| x != u64::MAX);
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    Ok(Latency {
        p50: at(0.5),
        p99: at(0.99),
    })
}
