//! Rumor mongering (push): an active node contacts a random node; a node that
//! hears the rumor for the first time becomes active; an active node loses
//! interest by the [`Stop`] rule (coin or counter, with feedback — the callee
//! says whether it already knew — or blind).
//!
//! Two contact models. *Synchronous*: rounds in which every active node
//! contacts at once, deciding from the state at the start of the round, with
//! remote contacts batched per rank. *Asynchronous*: one contact at a time —
//! step `s` picks a uniformly random node; if it is active it contacts a random
//! node and sees the effect of every earlier step. Picking among all nodes
//! (not only active ones) runs the same chain of contacts as picking a random
//! active node, and makes a round (N steps) one unit of the ODE's time. Steps
//! are global: every rank walks the same sequence and the two ranks a step
//! involves exchange one message (contact or skip) and, for a contact, the
//! answer. Exact, but a message per cross-rank step: the asynchronous model is
//! for checking against theory, the synchronous one for scale.

use courier::{Comm, Result};

use super::nodes::{exchange, sum, Crashed, Loss, Nodes};
use super::rng::{below, other, purpose, Stream};
use super::{heard, unreached, Config, Outcome, Stop, NEVER};

const PUSHES: i32 = 3;
const ANSWERS: i32 = 4;
const STEP: i32 = 5;

/// Answers in the asynchronous model (one byte per cross-rank step).
const SKIP: u8 = 0;
const CONTACT: u8 = 1;
const NO_ANSWER: u8 = 0;
const DID_NOT_KNOW: u8 = 1;
const KNEW_IT: u8 = 2;

/// An active node's state: how many contacts counted towards stopping, and
/// whether it is still spreading.
struct Spreaders {
    count: Vec<u32>,
    active: Vec<bool>,
}

impl Spreaders {
    /// After a contact by local node `i` (id `u`, draw key `key`): `answer` is
    /// `Some(knew)` when the callee answered. Returns whether `i` stopped.
    fn after_contact(
        &mut self,
        stop: Stop,
        coin: Stream,
        i: usize,
        u: u64,
        key: u64,
        answer: Option<bool>,
    ) -> bool {
        let knew = answer == Some(true);
        let stops = match stop {
            Stop::Coin { p, feedback } => (knew || !feedback) && coin.coin(p, u, key),
            Stop::Counter { k, feedback } => {
                if knew || !feedback {
                    self.count[i] += 1;
                }
                self.count[i] >= k
            }
        };
        if stops {
            self.active[i] = false;
        }
        stops
    }
}

/// What every run starts from: the source informed and active.
fn start(nodes: &Nodes, cfg: &Config) -> (Crashed, Vec<u16>, Spreaders) {
    let len = nodes.len();
    let source = cfg.source();
    let crashed = Crashed::new(nodes, cfg.seed, cfg.crash, source);
    let mut first = vec![NEVER; len];
    let mut sp = Spreaders {
        count: vec![0; len],
        active: vec![false; len],
    };
    if (nodes.lo..nodes.hi).contains(&source) {
        let i = (source - nodes.lo) as usize;
        first[i] = 0;
        sp.active[i] = true;
    }
    (crashed, first, sp)
}

/// After a round: records the live nodes not reached; returns how many
/// nodes are still spreading, over all ranks.
fn end_round(
    comm: &Comm,
    sp: &Spreaders,
    first: &[u16],
    crashed: &Crashed,
    ignorant: &mut Vec<u64>,
) -> Result<u64> {
    let active = sp.active.iter().filter(|&&a| a).count() as u64;
    let [left, active] = sum(comm, [unreached(first, crashed), active])?;
    ignorant.push(left);
    Ok(active)
}

fn finish(
    comm: &Comm,
    crashed: &Crashed,
    first: &[u16],
    live: u64,
    rounds: u32,
    ignorant: Vec<u64>,
    counts: [u64; 2],
) -> Result<Outcome> {
    let (heard_sum, heard_last) = heard(comm, first, crashed)?;
    let [messages, contacts] = sum(comm, counts)?;
    Ok(Outcome {
        rounds,
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

pub(crate) fn run_sync(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    let (n, me, lo, len) = (nodes.n, nodes.rank, nodes.lo, nodes.len());
    let (crashed, mut first, mut sp) = start(nodes, cfg);
    let [live] = sum(comm, [crashed.live(len)])?;
    let target = Stream::new(cfg.seed, purpose::TARGET);
    let loss = Loss::new(cfg.seed, cfg.loss);
    let coin = Stream::new(cfg.seed, purpose::COIN);
    let lost = |u: u64, round: u32, answer: bool| loss.lost(u, round, answer);
    let mut pushes: Vec<Vec<u32>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut answers: Vec<Vec<u8>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut pushers: Vec<Vec<u32>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let (mut messages, mut contacts) = (0u64, 0u64);
    let mut ignorant = vec![live - 1];
    let mut active_left = 1;
    let mut round = 0u32;
    while active_left > 0 && round < cfg.max_rounds {
        round += 1;
        let r = round as u16;
        let key = u64::from(round);
        for i in 0..len {
            // Active since before this round (nodes reached in it start next round).
            if !sp.active[i] || first[i] >= r {
                continue;
            }
            contacts += 1;
            messages += 1;
            let u = lo + i as u64;
            let v = other(target.draw(u, key), u, n);
            let q = nodes.owner(v);
            if lost(u, round, false) {
                sp.after_contact(cfg.stop, coin, i, u, key, None);
            } else if q != me {
                pushes[q].push((v - nodes.first_of(q)) as u32);
                pushers[q].push(i as u32);
            } else {
                let j = (v - lo) as usize;
                let answer = if crashed.has(j) {
                    None
                } else {
                    let knew = first[j] < r;
                    if first[j] == NEVER {
                        first[j] = r;
                        sp.active[j] = true;
                    }
                    (!lost(u, round, true)).then_some(knew)
                };
                sp.after_contact(cfg.stop, coin, i, u, key, answer);
            }
        }
        if nodes.ranks > 1 {
            let incoming = exchange(comm, PUSHES, &mut pushes)?;
            for (q, batch) in incoming.iter().enumerate() {
                for &w in batch {
                    let j = w as usize;
                    if crashed.has(j) {
                        answers[q].push(NO_ANSWER);
                        continue;
                    }
                    let knew = first[j] < r;
                    if first[j] == NEVER {
                        first[j] = r;
                        sp.active[j] = true;
                    }
                    answers[q].push(if knew { KNEW_IT } else { DID_NOT_KNOW });
                }
            }
            let back = exchange(comm, ANSWERS, &mut answers)?;
            for (q, who) in pushers.iter_mut().enumerate() {
                for (&i, &a) in who.iter().zip(&back[q]) {
                    let i = i as usize;
                    let u = lo + i as u64;
                    let answer = (a != NO_ANSWER && !lost(u, round, true)).then_some(a == KNEW_IT);
                    sp.after_contact(cfg.stop, coin, i, u, key, answer);
                }
                who.clear();
            }
        }
        active_left = end_round(comm, &sp, &first, &crashed, &mut ignorant)?;
    }
    finish(
        comm,
        &crashed,
        &first,
        live,
        round,
        ignorant,
        [messages, contacts],
    )
}

pub(crate) fn run_async(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    let (n, me, lo, len) = (nodes.n, nodes.rank, nodes.lo, nodes.len());
    let (crashed, mut first, mut sp) = start(nodes, cfg);
    let [live] = sum(comm, [crashed.live(len)])?;
    let pick = Stream::new(cfg.seed, purpose::NODE);
    let target = Stream::new(cfg.seed, purpose::TARGET);
    let loss = Loss::new(cfg.seed, cfg.loss);
    let coin = Stream::new(cfg.seed, purpose::COIN);
    // Steps are global: the step number keys the draw (round 0).
    let lost = |s: u64, answer: bool| loss.lost(s, 0, answer);
    let (mut messages, mut contacts) = (0u64, 0u64);
    let mut ignorant = vec![live - 1];
    let mut active_left = 1;
    let mut round = 0u32;
    let mut byte = [0u8];
    while active_left > 0 && round < cfg.max_rounds {
        // A node reached during round `round + 1` (steps round·N ..) records it.
        round += 1;
        let r = round as u16;
        for s in (u64::from(round) - 1) * n..u64::from(round) * n {
            let u = below(pick.draw(s, 0), n);
            let (qu, v) = (nodes.owner(u), other(target.draw(s, 0), u, n));
            let qv = nodes.owner(v);
            if qu != me && qv != me {
                continue;
            }
            // The caller's side: is it active, and is the push lost?
            let mut contact = false;
            if qu == me {
                let i = (u - lo) as usize;
                contact = sp.active[i];
                if qv != me {
                    let what = if contact && !lost(s, false) {
                        CONTACT
                    } else {
                        SKIP
                    };
                    comm.send(&[what], qv, STEP)?;
                }
            } else {
                comm.recv(&mut byte, qu, STEP)?;
            }
            let delivered = if qu == me {
                contact && !lost(s, false)
            } else {
                byte[0] == CONTACT
            };
            // The callee's side: hear the rumor, answer whether it knew.
            let mut answer = NO_ANSWER;
            if qv == me && delivered {
                let j = (v - lo) as usize;
                if !crashed.has(j) {
                    answer = if first[j] == NEVER {
                        first[j] = r;
                        sp.active[j] = true;
                        DID_NOT_KNOW
                    } else {
                        KNEW_IT
                    };
                }
                if qu != me {
                    comm.send(&[answer], qu, STEP)?;
                }
            }
            if qu == me && contact {
                let i = (u - lo) as usize;
                contacts += 1;
                messages += 1;
                if qv != me && delivered {
                    comm.recv(&mut byte, qv, STEP)?;
                    answer = byte[0];
                }
                let heard = (answer != NO_ANSWER && !lost(s, true)).then_some(answer == KNEW_IT);
                sp.after_contact(cfg.stop, coin, i, u, s, heard);
            }
        }
        active_left = end_round(comm, &sp, &first, &crashed, &mut ignorant)?;
    }
    finish(
        comm,
        &crashed,
        &first,
        live,
        round,
        ignorant,
        [messages, contacts],
    )
}
