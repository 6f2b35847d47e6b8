//! Gossip kernels: anti-entropy (push, pull, push-pull), rumor mongering,
//! probabilistic flooding, push-sum aggregation and a replicated key-value store
//! with death certificates, with message loss and crashed nodes.
//!
//! Each rank hosts a contiguous block of virtual nodes. A node's messages to a
//! node on another rank are batched per destination rank and round and go
//! through the runtime (one message per pair of ranks per round and direction),
//! on the kernel's own [`dup`](courier::Comm::dup) of the communicator.
//!
//! **Determinism.** Every random choice (contact target, coin, loss, crash) is a
//! hash of the seed, the node (or step) and the round, and rounds are
//! synchronous (a node's state at the start of a round decides what it sends),
//! so a run depends on the seed only, *not on the number of ranks*: 1 rank and
//! 8 ranks give the same rounds, residue, messages and per-round curves. Only
//! `wall_s` and `contacts_per_s` vary.
//!
//! ```
//! use courier_kernels::gossip::{self, Config, Protocol};
//!
//! let reports = courier::run(2, |comm| {
//!     gossip::run(comm, &Config::new(Protocol::PushPull, 10_000).seed(7))
//! })?;
//! let r = &reports[0];
//! assert_eq!(r.residue, 0.0); // push-pull reaches everyone
//! assert!(r.rounds < 20);     // in O(log N) rounds
//! # Ok::<(), courier::Error>(())
//! ```

mod anti_entropy;
mod flood;
mod kv;
mod nodes;
mod push_sum;
use super::rng;
mod rumor;
pub mod simulate;
pub mod theory;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use courier::{Comm, Error, Result};
use serde::Serialize;

pub use flood::Overlay;

/// Which gossip protocol runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Anti-entropy, push: every node sends what it has to a random node.
    Push,
    /// Anti-entropy, pull: every node asks a random node for what it has.
    Pull,
    /// Anti-entropy, push-pull: both in one exchange.
    PushPull,
    /// Rumor mongering: active nodes push until they lose interest ([`Stop`]).
    Rumor,
    /// Probabilistic flooding on an [`Overlay`] graph.
    Flood,
    /// Push-sum aggregation ([`Aggregate`]).
    PushSum,
    /// A replicated key-value store kept by push-pull anti-entropy, with
    /// deletes as death certificates that expire.
    Kv,
}

impl Protocol {
    /// Every protocol, in CLI order.
    pub const ALL: [Protocol; 7] = [
        Protocol::Push,
        Protocol::Pull,
        Protocol::PushPull,
        Protocol::Rumor,
        Protocol::Flood,
        Protocol::PushSum,
        Protocol::Kv,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Push => "push",
            Protocol::Pull => "pull",
            Protocol::PushPull => "push-pull",
            Protocol::Rumor => "rumor",
            Protocol::Flood => "flood",
            Protocol::PushSum => "push-sum",
            Protocol::Kv => "kv",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown protocol {s:?}: push, pull, push-pull, rumor, flood, push-sum or kv"
                )
            })
    }
}

/// How contacts are ordered in time (rumor mongering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Synchronous rounds: every active node contacts at once, from the state
    /// at the start of the round.
    Sync,
    /// One contact at a time: each step a uniformly random node, if active,
    /// contacts a random node and sees the effect of every earlier step. The
    /// model of the epidemic ODEs (and of the residue table). A round is N steps.
    Async,
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sync" => Ok(Model::Sync),
            "async" => Ok(Model::Async),
            _ => Err(format!("unknown model {s:?}: sync or async")),
        }
    }
}

/// When a rumor-mongering node stops spreading.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// Coin: stop with probability `p` after a contact — with `feedback`, only
    /// after a contact with a node that already knew; blind, after any contact.
    Coin {
        /// Stop probability.
        p: f64,
        /// Only contacts with a node that knew count.
        feedback: bool,
    },
    /// Counter: stop after `k` contacts — with `feedback`, `k` contacts with
    /// nodes that already knew; blind, any `k` contacts.
    Counter {
        /// Contacts before stopping.
        k: u32,
        /// Only contacts with a node that knew count.
        feedback: bool,
    },
}

/// What push-sum computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// The average of the nodes' values (every weight starts at 1).
    Average,
    /// The sum of the values (only the source's weight starts at 1).
    Sum,
    /// The number of live nodes (values 1, only the source's weight 1).
    Count,
}

impl FromStr for Aggregate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "average" => Ok(Aggregate::Average),
            "sum" => Ok(Aggregate::Sum),
            "count" => Ok(Aggregate::Count),
            _ => Err(format!("unknown aggregate {s:?}: average, sum or count")),
        }
    }
}

/// A gossip run: protocol, size, randomness and faults. Build with
/// [`Config::new`] and the setters; every field has a sensible default.
#[derive(Clone, Debug)]
pub struct Config {
    /// The protocol.
    pub protocol: Protocol,
    /// Virtual nodes (2 ..= 2³¹).
    pub nodes: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Contact model (rumor mongering only; the others run synchronous rounds).
    pub model: Model,
    /// When rumor mongering stops (default: feedback + coin, p = 0.5).
    pub stop: Stop,
    /// Flooding: probability of forwarding on each edge (the source always does).
    pub p_flood: f64,
    /// Flooding: the overlay graph.
    pub overlay: Overlay,
    /// Push-sum: what is computed.
    pub aggregate: Aggregate,
    /// Push-sum: stop once every live node's relative error is at most this.
    pub tolerance: f64,
    /// Key-value store: keys (half of them are deleted).
    pub keys: u32,
    /// Key-value store: rounds a death certificate lives after its creation
    /// [default: 4·⌈log₂ N⌉ + 10].
    pub lifetime: Option<u32>,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Fraction of nodes crashed from the start (never the source).
    pub crash: f64,
    /// Give up after this many rounds [default: 1000].
    pub max_rounds: u32,
}

impl Config {
    /// Defaults for `protocol` on `nodes` nodes.
    pub fn new(protocol: Protocol, nodes: u64) -> Config {
        Config {
            protocol,
            nodes,
            seed: 1,
            model: Model::Sync,
            stop: Stop::Coin {
                p: 0.5,
                feedback: true,
            },
            p_flood: 1.0,
            overlay: Overlay::Regular { degree: 8 },
            aggregate: Aggregate::Average,
            tolerance: 1e-6,
            keys: 16,
            lifetime: None,
            loss: 0.0,
            crash: 0.0,
            max_rounds: 1000,
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Config {
        self.seed = seed;
        self
    }

    /// Sets the contact model.
    pub fn model(mut self, model: Model) -> Config {
        self.model = model;
        self
    }

    /// Sets the stopping rule of rumor mongering.
    pub fn stop(mut self, stop: Stop) -> Config {
        self.stop = stop;
        self
    }

    /// Sets the message loss probability.
    pub fn loss(mut self, p: f64) -> Config {
        self.loss = p;
        self
    }

    /// Sets the fraction of crashed nodes.
    pub fn crash(mut self, f: f64) -> Config {
        self.crash = f;
        self
    }

    /// The node that starts with the update (or the rumor): drawn from the seed.
    pub fn source(&self) -> u64 {
        rng::below(
            rng::Stream::new(self.seed, rng::purpose::NODE).draw(u64::MAX, 0),
            self.nodes,
        )
    }

    /// The death-certificate lifetime in rounds.
    pub fn certificate_lifetime(&self) -> u32 {
        self.lifetime
            .unwrap_or(4 * (64 - (self.nodes - 1).leading_zeros()) + 10)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidConfig(what));
        let prob = |x: f64| (0.0..=1.0).contains(&x);
        if !(2..=1 << 31).contains(&self.nodes) {
            return bad(format!("nodes = {}: between 2 and 2^31", self.nodes));
        }
        if !prob(self.loss) || self.loss >= 1.0 {
            return bad(format!("loss = {}: in [0, 1)", self.loss));
        }
        if !prob(self.crash) || self.crash >= 1.0 {
            return bad(format!("crash = {}: in [0, 1)", self.crash));
        }
        if !prob(self.p_flood) {
            return bad(format!("p_flood = {}: in [0, 1]", self.p_flood));
        }
        if !(1..=60_000).contains(&self.max_rounds) {
            return bad(format!("max_rounds = {}: 1 ..= 60000", self.max_rounds));
        }
        match self.stop {
            Stop::Coin { p, .. } if !(p > 0.0 && p <= 1.0) => {
                return bad(format!("p_stop = {p}: in (0, 1]"))
            }
            Stop::Counter { k: 0, .. } => return bad("k = 0: at least 1".into()),
            _ => {}
        }
        if let Overlay::Regular { degree } = self.overlay {
            if degree == 0 || degree % 2 == 1 || u64::from(degree) >= self.nodes {
                return bad(format!(
                    "degree = {degree}: an even number from 2 to nodes - 1"
                ));
            }
        }
        if self.protocol == Protocol::PushSum
            && self.tolerance.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad(format!("tolerance = {}: above 0", self.tolerance));
        }
        if self.protocol == Protocol::Kv && !(2..=1024).contains(&self.keys) {
            return bad(format!("keys = {}: 2 ..= 1024", self.keys));
        }
        Ok(())
    }
}

/// Push-sum results.
#[derive(Clone, Debug, Serialize)]
pub struct PushSumReport {
    /// What was computed.
    pub aggregate: Aggregate,
    /// The true value, over live nodes.
    pub truth: f64,
    /// Largest relative error of any live node's estimate, per round
    /// (a node with weight 0 has no estimate and counts as error 1).
    pub error_per_round: Vec<f64>,
    /// Σ value and Σ weight over all nodes at the start and at the end: equal
    /// (up to float rounding) without loss or crashes.
    pub mass_start: [f64; 2],
    /// See `mass_start`.
    pub mass_end: [f64; 2],
}

/// Key-value store results.
#[derive(Clone, Debug, Serialize)]
pub struct KvReport {
    /// Keys written (at round 0, by the source).
    pub keys: u32,
    /// Keys deleted (by a death certificate).
    pub deleted: u32,
    /// Round the deletes were issued (once every live node had every key).
    pub delete_round: u32,
    /// Rounds a certificate lives after its creation.
    pub lifetime: u32,
    /// Times a node that had a key's death certificate later held the deleted
    /// value again (a resurrection). Zero is the property to keep.
    pub resurrections: u64,
    /// (node, deleted key) pairs still holding the value at the end.
    pub deleted_values_left: u64,
    /// Certificates still held at the end (0: all were dropped).
    pub certificates_left: u64,
    /// Largest number of certificates held at once.
    pub certificates_peak: u64,
    /// Whether every live node holds every key that was not deleted.
    pub live_keys_complete: bool,
}

/// What a gossip run measured. The fields other than `wall_s` and
/// `contacts_per_s` do not depend on the number of ranks.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The protocol.
    pub protocol: Protocol,
    /// The contact model.
    pub model: Model,
    /// Virtual nodes.
    pub nodes: u64,
    /// Nodes that did not crash.
    pub live_nodes: u64,
    /// Ranks the nodes were spread over.
    pub ranks: usize,
    /// The seed.
    pub seed: u64,
    /// Rounds run (until nothing more could happen, or `max_rounds`).
    pub rounds: u32,
    /// Fraction of live nodes never reached (flooding: 1 − coverage; push-sum:
    /// fraction without an estimate; kv: fraction not up to date).
    pub residue: f64,
    /// Node-to-node messages sent, per node (lost ones included).
    pub messages_per_node: f64,
    /// Fraction of live nodes not yet reached after each round (index 0 =
    /// before the first round).
    pub ignorant_per_round: Vec<f64>,
    /// Average round at which a reached node first heard.
    pub t_avg: f64,
    /// Last round at which a node first heard.
    pub t_last: u32,
    /// Node contacts (a node taking the initiative), in total.
    pub contacts: u64,
    /// Wall-clock time of the run (slowest rank).
    pub wall_s: f64,
    /// `contacts / wall_s`.
    pub contacts_per_s: f64,
    /// Anti-entropy: the peak bytes of node state and message batches (sent and
    /// received) held at once, summed over ranks, per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_node: Option<f64>,
    /// Push-sum only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_sum: Option<PushSumReport>,
    /// Key-value store only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvReport>,
}

/// What every protocol hands back for the common part of the report.
pub(crate) struct Outcome {
    rounds: u32,
    live: u64,
    /// Peak bytes of node state and message batches on this rank (0: not counted).
    bytes: u64,
    /// Ignorant live nodes after each round (index 0 = before round 1).
    ignorant: Vec<u64>,
    messages: u64,
    contacts: u64,
    /// Σ first-heard round and the latest one, over reached live nodes.
    heard_sum: u64,
    heard_last: u32,
    push_sum: Option<PushSumReport>,
    kv: Option<KvReport>,
}

/// Round at which a node first heard; `NEVER` while it has not.
pub(crate) const NEVER: u16 = u16::MAX;

/// Runs `config` on every rank of `comm` (collective: every rank calls it with
/// the same config) and returns the report, the same on every rank.
pub fn run(comm: &Comm, config: &Config) -> Result<Report> {
    config.validate()?;
    let comm = comm.dup()?;
    let nodes = nodes::Nodes::new(config.nodes, comm.size(), comm.rank());
    comm.barrier()?;
    let start = Instant::now();
    let out = match config.protocol {
        Protocol::Push | Protocol::Pull | Protocol::PushPull => {
            anti_entropy::run(&comm, &nodes, config)?
        }
        Protocol::Rumor => match config.model {
            Model::Sync => rumor::run_sync(&comm, &nodes, config)?,
            Model::Async => rumor::run_async(&comm, &nodes, config)?,
        },
        Protocol::Flood => flood::run(&comm, &nodes, config)?,
        Protocol::PushSum => push_sum::run(&comm, &nodes, config)?,
        Protocol::Kv => kv::run(&comm, &nodes, config)?,
    };
    let mut wall = [0.0f64];
    comm.all_reduce(&[start.elapsed().as_secs_f64()], &mut wall, f64::max)?;
    let wall_s = wall[0];
    let [bytes] = nodes::sum(&comm, [out.bytes])?;
    let live = out.live.max(1) as f64;
    let reached = out.live - out.ignorant.last().copied().unwrap_or(0);
    Ok(Report {
        protocol: config.protocol,
        model: config.model,
        nodes: config.nodes,
        live_nodes: out.live,
        ranks: comm.size(),
        seed: config.seed,
        rounds: out.rounds,
        residue: *out.ignorant.last().unwrap_or(&0) as f64 / live,
        messages_per_node: out.messages as f64 / config.nodes as f64,
        ignorant_per_round: out.ignorant.iter().map(|&i| i as f64 / live).collect(),
        t_avg: if reached > 0 {
            out.heard_sum as f64 / reached as f64
        } else {
            0.0
        },
        t_last: out.heard_last,
        contacts: out.contacts,
        wall_s,
        contacts_per_s: out.contacts as f64 / wall_s.max(1e-9),
        bytes_per_node: (bytes > 0).then(|| bytes as f64 / config.nodes as f64),
        push_sum: out.push_sum,
        kv: out.kv,
    })
}

/// Σ first-heard round and latest first-heard round over the live local
/// nodes that heard, reduced over ranks: the common end of every protocol.
pub(crate) fn heard(comm: &Comm, first: &[u16], crashed: &nodes::Crashed) -> Result<(u64, u32)> {
    let (mut sum, mut last) = (0u64, 0u64);
    for (i, &f) in first.iter().enumerate() {
        if f != NEVER && !crashed.has(i) {
            sum += u64::from(f);
            last = last.max(u64::from(f));
        }
    }
    let [sum] = nodes::sum(comm, [sum])?;
    let mut l = [0u64];
    comm.all_reduce(&[last], &mut l, u64::max)?;
    Ok((sum, l[0] as u32))
}

/// Live local nodes that have not heard yet.
pub(crate) fn unreached(first: &[u16], crashed: &nodes::Crashed) -> u64 {
    (0..first.len())
        .filter(|&i| first[i] == NEVER && !crashed.has(i))
        .count() as u64
}
