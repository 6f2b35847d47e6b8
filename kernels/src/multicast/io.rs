//! What every algorithm talks to: the outgoing unicasts (through the attached
//! buffer, with optional random network delay that keeps each pair FIFO) and
//! the delivery log.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier::{Comm, Error, Result};

use super::super::rng::{unit, Stream};
use super::TAG;

/// One delivered message.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub origin: usize,
    pub seq: u64,
    /// Vector clock it was sent with (causal order only).
    pub vc: Vec<u64>,
}

/// Nanoseconds since the Unix epoch: comparable between processes of one
/// machine (and between machines with synchronized clocks).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) struct Io<'c> {
    pub comm: &'c Comm,
    pub n: usize,
    pub me: usize,
    /// Per destination: (release time, message), FIFO.
    queues: Vec<VecDeque<(Instant, Vec<u64>)>>,
    delay: Duration,
    jitter: Stream,
    draws: u64,
    /// Unicasts sent (DONE markers excluded).
    pub unicasts: u64,
    pub log: Vec<Delivery>,
    pub latencies_ns: Vec<u64>,
    /// Payload words that did not carry what their sender wrote.
    pub corrupted: u64,
}

/// The check word a payload starts with.
pub(crate) fn check_word(origin: usize, seq: u64) -> u64 {
    (origin as u64) << 40 ^ seq ^ 0x5eed_0000_0000
}

impl<'c> Io<'c> {
    pub(crate) fn new(comm: &'c Comm, delay_us: u64, seed: u64) -> Io<'c> {
        let n = comm.size();
        Io {
            comm,
            n,
            me: comm.rank(),
            queues: (0..n).map(|_| VecDeque::new()).collect(),
            delay: Duration::from_micros(delay_us),
            jitter: Stream::new(seed ^ comm.rank() as u64, 99),
            draws: 0,
            unicasts: 0,
            log: Vec::new(),
            latencies_ns: Vec::new(),
            corrupted: 0,
        }
    }

    /// Queues `msg` for `dest`, released after a random delay (never before an
    /// earlier message to the same destination).
    pub(crate) fn send(&mut self, dest: usize, msg: Vec<u64>) {
        self.unicasts += 1;
        self.enqueue(dest, msg);
    }

    /// [`send`](Io::send) to every other rank.
    pub(crate) fn send_to_others(&mut self, msg: &[u64]) {
        let me = self.me;
        for p in (0..self.n).filter(|&p| p != me) {
            self.send(p, msg.to_vec());
        }
    }

    /// Like [`send`](Io::send), not counted (the end-of-run marker).
    pub(crate) fn send_uncounted(&mut self, dest: usize, msg: Vec<u64>) {
        self.enqueue(dest, msg);
    }

    fn enqueue(&mut self, dest: usize, msg: Vec<u64>) {
        let mut at = Instant::now();
        if !self.delay.is_zero() {
            self.draws += 1;
            let f = unit(self.jitter.draw(self.draws, dest as u64));
            at += self.delay.mul_f64(f);
        }
        let q = &mut self.queues[dest];
        if let Some(&(last, _)) = q.back() {
            at = at.max(last);
        }
        q.push_back((at, msg));
    }

    /// Sends every queued message whose time has come, while the attached
    /// buffer has room. Returns whether anything went out.
    pub(crate) fn flush(&mut self) -> Result<bool> {
        let now = Instant::now();
        let mut any = false;
        for dest in 0..self.n {
            while let Some((at, msg)) = self.queues[dest].front() {
                if *at > now {
                    break;
                }
                match self.comm.bsend(msg, dest, TAG) {
                    Ok(()) => {
                        self.queues[dest].pop_front();
                        any = true;
                    }
                    // Full: the receivers drain it; try again on the next pass.
                    Err(Error::BufferExhausted { .. }) => return Ok(any),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(any)
    }

    pub(crate) fn idle(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// Delivers (origin, seq), sent at `sent_ns`, with `payload` to check.
    pub(crate) fn deliver(
        &mut self,
        origin: usize,
        seq: u64,
        sent_ns: u64,
        payload: &[u64],
        vc: &[u64],
    ) {
        if payload
            .first()
            .is_some_and(|&w| w != check_word(origin, seq))
        {
            self.corrupted += 1;
        }
        self.latencies_ns.push(now_ns().saturating_sub(sent_ns));
        self.log.push(Delivery {
            origin,
            seq,
            vc: vc.to_vec(),
        });
    }
}

/// Messages numbered by a sequencer or token, delivered in number order.
#[derive(Default)]
pub(crate) struct Numbered {
    next: u64,
    /// number → (origin, seq, sent_ns, payload).
    held: BTreeMap<u64, (usize, u64, u64, Vec<u64>)>,
}

impl Numbered {
    /// Takes message `number` and delivers every message now next in line.
    pub(crate) fn hold(
        &mut self,
        io: &mut Io,
        number: u64,
        origin: usize,
        seq: u64,
        sent: u64,
        payload: Vec<u64>,
    ) {
        self.held.insert(number, (origin, seq, sent, payload));
        while let Some((origin, seq, sent, payload)) = self.held.remove(&self.next) {
            io.deliver(origin, seq, sent, &payload, &[]);
            self.next += 1;
        }
    }
}
