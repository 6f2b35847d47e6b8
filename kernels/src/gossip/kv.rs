//! A replicated key-value store kept by push-pull anti-entropy, where a delete
//! is a *death certificate*: a newer version of the key that says "deleted".
//! Deleting by forgetting would not work — the next exchange with a replica
//! that still has the value brings it back. A certificate lives `lifetime`
//! rounds after its creation (clocks are the shared round number) and is then
//! dropped everywhere; long enough, and every replica has seen it by then.
//!
//! The run: the source writes every key (version 1) at round 0; once every live
//! node has every key it deletes the odd-numbered keys (version 2,
//! certificates); the run goes on until the certificates have expired everywhere,
//! then 2·⌈log₂ N⌉ + 10 rounds more, so a value that could come back has the
//! time to spread. A *resurrection* is a node holding a deleted
//! value after it had held the certificate.

use courier::{Comm, Result};

use super::nodes::{exchange, sum, Crashed, Loss, Nodes};
use super::rng::{other, purpose, Stream};
use super::{Config, KvReport, Outcome};

const REQUESTS: i32 = 8;
const ANSWERS: i32 = 9;

/// An entry: version (low 32 bits), kind (2 bits), round it was born (16 bits).
type Entry = u64;
const ABSENT: u64 = 0;
const VALUE: u64 = 1;
const DEAD: u64 = 2;

fn entry(version: u64, kind: u64, born: u32) -> Entry {
    version | kind << 32 | u64::from(born) << 34
}
fn kind(e: Entry) -> u64 {
    e >> 32 & 3
}
fn born(e: Entry) -> u32 {
    (e >> 34) as u32
}

/// What a replica keeps of `e` at round `round`: an expired certificate is gone.
fn alive(e: Entry, round: u32, lifetime: u32) -> Entry {
    if kind(e) == DEAD && round - born(e) > lifetime {
        ABSENT
    } else {
        e
    }
}

/// The newer of two entries (higher version; a certificate beats a value of
/// the same version).
fn merge(a: Entry, b: Entry) -> Entry {
    if (b as u32, kind(b)) > (a as u32, kind(a)) {
        b
    } else {
        a
    }
}

fn deleted(key: usize) -> bool {
    key % 2 == 1
}

pub(crate) fn run(comm: &Comm, nodes: &Nodes, cfg: &Config) -> Result<Outcome> {
    let (n, me, lo, len) = (nodes.n, nodes.rank, nodes.lo, nodes.len());
    let keys = cfg.keys as usize;
    let lifetime = cfg.certificate_lifetime();
    let source = cfg.source();
    let crashed = Crashed::new(nodes, cfg.seed, cfg.crash, source);
    let target = Stream::new(cfg.seed, purpose::TARGET);
    let loss = Loss::new(cfg.seed, cfg.loss);
    let lost = |u: u64, round: u32, answer: bool| loss.lost(u, round, answer);
    let mut cur = vec![ABSENT; len * keys];
    let mine = (lo..nodes.hi)
        .contains(&source)
        .then(|| (source - lo) as usize);
    if let Some(i) = mine {
        cur[i * keys..(i + 1) * keys].fill(entry(1, VALUE, 0));
    }
    let mut saw_certificate = vec![false; len * keys];
    let [live] = sum(comm, [crashed.live(len)])?;
    let mut requests: Vec<Vec<u64>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut answers: Vec<Vec<u64>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let mut askers: Vec<Vec<usize>> = (0..nodes.ranks).map(|_| Vec::new()).collect();
    let (mut messages, mut contacts, mut resurrections, mut peak) = (0u64, 0u64, 0u64, 0u64);
    // Whether local node i is up to date: every kept key, no deleted value.
    let up_to_date = |cur: &[Entry], i: usize, deletes_issued: bool| {
        (0..keys).all(|k| {
            let e = cur[i * keys + k];
            if deletes_issued && deleted(k) {
                kind(e) != VALUE
            } else {
                kind(e) == VALUE
            }
        })
    };
    let behind = |cur: &[Entry], issued: bool| {
        (0..len)
            .filter(|&i| !crashed.has(i) && !up_to_date(cur, i, issued))
            .count() as u64
    };
    let mut ignorant = vec![sum(comm, [behind(&cur, false)])?[0]];
    let mut delete_round: Option<u32> = None;
    let mut end = cfg.max_rounds;
    let tail = 2 * (64 - (n - 1).leading_zeros()) + 10;
    let mut round = 0u32;
    while round < end {
        round += 1;
        if delete_round.is_none() && ignorant[ignorant.len() - 1] == 0 {
            delete_round = Some(round);
            if let Some(i) = mine {
                for k in (0..keys).filter(|&k| deleted(k)) {
                    cur[i * keys + k] = entry(2, DEAD, round);
                }
            }
        }
        for e in cur.iter_mut() {
            *e = alive(*e, round, lifetime);
        }
        let mut new = cur.clone();
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
            let q = nodes.owner(v);
            let mine = &cur[i * keys..(i + 1) * keys];
            if q != me {
                requests[q].push(v - nodes.first_of(q));
                requests[q].extend_from_slice(mine);
                askers[q].push(i);
                continue;
            }
            let j = (v - lo) as usize;
            if crashed.has(j) {
                continue;
            }
            messages += 1;
            for k in 0..keys {
                new[j * keys + k] = merge(new[j * keys + k], mine[k]);
            }
            if !lost(u, round, true) {
                for k in 0..keys {
                    new[i * keys + k] = merge(new[i * keys + k], cur[j * keys + k]);
                }
            }
        }
        if nodes.ranks > 1 {
            for (q, batch) in exchange(comm, REQUESTS, &mut requests)?.iter().enumerate() {
                for req in batch.chunks_exact(keys + 1) {
                    let j = req[0] as usize;
                    if crashed.has(j) {
                        answers[q].push(u64::MAX);
                        continue;
                    }
                    messages += 1;
                    answers[q].extend_from_slice(&cur[j * keys..(j + 1) * keys]);
                    for k in 0..keys {
                        new[j * keys + k] = merge(new[j * keys + k], req[k + 1]);
                    }
                }
            }
            let back = exchange(comm, ANSWERS, &mut answers)?;
            for (q, who) in askers.iter_mut().enumerate() {
                let mut at = 0;
                for &i in who.iter() {
                    if back[q][at] == u64::MAX {
                        at += 1;
                        continue;
                    }
                    let theirs = &back[q][at..at + keys];
                    at += keys;
                    if !lost(lo + i as u64, round, true) {
                        for k in 0..keys {
                            new[i * keys + k] = merge(new[i * keys + k], theirs[k]);
                        }
                    }
                }
                who.clear();
            }
        }
        let mut certificates = 0;
        for (x, (&before, &after)) in cur.iter().zip(&new).enumerate() {
            match kind(after) {
                DEAD => {
                    saw_certificate[x] = true;
                    certificates += 1;
                }
                VALUE if kind(before) != VALUE && saw_certificate[x] => resurrections += 1,
                _ => {}
            }
        }
        cur = new;
        let [left, certificates] = sum(comm, [behind(&cur, delete_round.is_some()), certificates])?;
        peak = peak.max(certificates);
        ignorant.push(left);
        if delete_round.is_some() && certificates == 0 && end == cfg.max_rounds {
            // Every certificate has expired: give a value that survived
            // somewhere the time to spread again (push-pull reaches everyone in
            // about log₃ N rounds).
            end = end.min(round + tail);
        }
    }
    let (mut values_left, mut certificates_left, mut complete) = (0u64, 0u64, true);
    for i in (0..len).filter(|&i| !crashed.has(i)) {
        for k in 0..keys {
            let e = cur[i * keys + k];
            values_left += u64::from(deleted(k) && kind(e) == VALUE);
            certificates_left += u64::from(kind(e) == DEAD);
            complete &= deleted(k) || kind(e) == VALUE;
        }
    }
    let [messages, contacts, resurrections, values_left, certificates_left, incomplete] = sum(
        comm,
        [
            messages,
            contacts,
            resurrections,
            values_left,
            certificates_left,
            u64::from(!complete),
        ],
    )?;
    Ok(Outcome {
        rounds: round,
        live,
        bytes: 0,
        ignorant,
        messages,
        contacts,
        heard_sum: 0,
        heard_last: 0,
        push_sum: None,
        kv: Some(KvReport {
            keys: cfg.keys,
            deleted: (0..keys).filter(|&k| deleted(k)).count() as u32,
            delete_round: delete_round.unwrap_or(0),
            lifetime,
            resurrections,
            deleted_values_left: values_left,
            certificates_left,
            certificates_peak: peak,
            live_keys_complete: incomplete == 0,
        }),
    })
}
