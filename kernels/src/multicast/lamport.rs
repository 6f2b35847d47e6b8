//! Total order with Lamport clocks and acknowledgements: every message carries
//! its sender's clock (+1 per event, max on receipt); every receiver queues it
//! by (timestamp, sender) and acknowledges it to everyone; the head of the
//! queue is delivered once a later message or acknowledgement has come from
//! every other process — with FIFO channels nothing earlier can still arrive.
//!
//! Unicasts per multicast: n − 1 messages + (n − 1)² acknowledgements. With
//! batching, a rank acknowledges once per polling pass (everything it received
//! in it) and not at all when it multicasts in that pass: its message's
//! timestamp acknowledges everything before it.

use std::collections::BTreeMap;

use super::io::Io;
use super::Orderer;

const MSG: u64 = 3;
const ACK: u64 = 4;
const HEADER: usize = 5;

pub(crate) struct Lamport {
    clock: u64,
    /// (timestamp, sender) → (seq, sent_ns, payload).
    queue: BTreeMap<(u64, usize), (u64, u64, Vec<u64>)>,
    /// Latest timestamp seen from each process.
    latest: Vec<u64>,
    batch: bool,
    ack_owed: bool,
    sabotage: bool,
}

impl Lamport {
    pub(crate) fn new(n: usize, batch: bool, sabotage: bool) -> Lamport {
        Lamport {
            clock: 0,
            queue: BTreeMap::new(),
            latest: vec![0; n],
            batch,
            ack_owed: false,
            sabotage,
        }
    }

    fn seen(&mut self, from: usize, ts: u64) {
        self.clock = self.clock.max(ts) + 1;
        self.latest[from] = self.latest[from].max(ts);
    }

    fn acknowledge(&mut self, io: &mut Io) {
        self.clock += 1;
        io.send_to_others(&[ACK, self.clock]);
    }

    fn deliver_ready(&mut self, io: &mut Io) {
        while let Some((&(ts, origin), _)) = self.queue.first_key_value() {
            let stable = (0..io.n)
                .filter(|&p| p != io.me && p != origin)
                .all(|p| (self.latest[p], p) > (ts, origin));
            if !stable {
                return;
            }
            let (_, (seq, sent, payload)) = self.queue.pop_first().expect("a head");
            io.deliver(origin, seq, sent, &payload, &[]);
        }
    }
}

impl Orderer for Lamport {
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        self.clock += 1;
        let ts = self.clock;
        let mut msg = vec![MSG, io.me as u64, seq, sent_ns, ts];
        msg.extend_from_slice(&payload);
        io.send_to_others(&msg);
        self.ack_owed = false;
        if self.sabotage {
            io.deliver(io.me, seq, sent_ns, &payload, &[]);
            return;
        }
        self.queue.insert((ts, io.me), (seq, sent_ns, payload));
        self.deliver_ready(io);
    }

    fn receive(&mut self, io: &mut Io, from: usize, msg: Vec<u64>) {
        match msg[0] {
            MSG => {
                let (origin, seq, sent, ts) = (msg[1] as usize, msg[2], msg[3], msg[4]);
                self.seen(from, ts);
                if self.sabotage {
                    io.deliver(origin, seq, sent, &msg[HEADER..], &[]);
                } else {
                    self.queue
                        .insert((ts, origin), (seq, sent, msg[HEADER..].to_vec()));
                }
                if self.batch {
                    self.ack_owed = true;
                } else {
                    self.acknowledge(io);
                }
            }
            _ => self.seen(from, msg[1]),
        }
        if !self.sabotage {
            self.deliver_ready(io);
        }
    }

    fn after_poll(&mut self, io: &mut Io) {
        if self.ack_owed {
            self.ack_owed = false;
            self.acknowledge(io);
        }
    }
}
