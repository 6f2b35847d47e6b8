//! Causal multicast with vector clocks (Birman–Schiper–Stephenson): a message
//! carries its sender's vector of delivered counts; a receiver holds it back
//! until it has delivered every message its sender had delivered before
//! sending it, and the sender's previous ones.

use super::io::Io;
use super::Orderer;

const DATA: u64 = 2;
const HEADER: usize = 4;

pub(crate) struct Causal {
    /// Messages delivered here, per sender.
    delivered: Vec<u64>,
    held: Vec<Vec<u64>>,
    /// Deliver on receipt, ignoring the clocks (for testing the verifier).
    sabotage: bool,
}

impl Causal {
    pub(crate) fn new(n: usize, sabotage: bool) -> Causal {
        Causal {
            delivered: vec![0; n],
            held: Vec::new(),
            sabotage,
        }
    }

    fn deliverable(&self, msg: &[u64], n: usize) -> bool {
        let origin = msg[1] as usize;
        let vc = &msg[HEADER..HEADER + n];
        (0..n).all(|k| {
            if k == origin {
                vc[k] == self.delivered[k] + 1
            } else {
                vc[k] <= self.delivered[k]
            }
        })
    }

    fn deliver(&mut self, io: &mut Io, msg: &[u64]) {
        let (origin, n) = (msg[1] as usize, io.n);
        self.delivered[origin] += 1;
        io.deliver(
            origin,
            msg[2],
            msg[3],
            &msg[HEADER + n..],
            &msg[HEADER..HEADER + n],
        );
    }
}

impl Orderer for Causal {
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        let mut vc = self.delivered.clone();
        vc[io.me] += 1;
        let mut msg = vec![DATA, io.me as u64, seq, sent_ns];
        msg.extend_from_slice(&vc);
        msg.extend_from_slice(&payload);
        io.send_to_others(&msg);
        self.deliver(io, &msg);
    }

    fn receive(&mut self, io: &mut Io, _from: usize, msg: Vec<u64>) {
        if self.sabotage {
            return self.deliver(io, &msg);
        }
        self.held.push(msg);
        // Each delivery may release others: rescan until nothing moves.
        while let Some(i) = (0..self.held.len()).find(|&i| self.deliverable(&self.held[i], io.n)) {
            let msg = self.held.swap_remove(i);
            self.deliver(io, &msg);
        }
    }
}
