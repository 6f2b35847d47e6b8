//! Total order through a fixed sequencer (rank 0): a sender hands its message
//! to the sequencer, which numbers it and multicasts it; everyone delivers in
//! number order. Unicasts per multicast: 1 + (n − 1), or n − 1 for the
//! sequencer's own: (n − 1) + (n − 1)/n on average.

use super::io::{Io, Numbered};
use super::Orderer;

const REQUEST: u64 = 5;
const ORDERED: u64 = 6;
const SEQUENCER: usize = 0;

pub(crate) struct Sequencer {
    next_number: u64,
    numbered: Numbered,
}

impl Sequencer {
    pub(crate) fn new() -> Sequencer {
        Sequencer {
            next_number: 0,
            numbered: Numbered::default(),
        }
    }

    /// At the sequencer: number the message and send it to everyone.
    fn order(&mut self, io: &mut Io, origin: usize, seq: u64, sent: u64, payload: Vec<u64>) {
        let number = self.next_number;
        self.next_number += 1;
        let mut msg = vec![ORDERED, origin as u64, seq, sent, number];
        msg.extend_from_slice(&payload);
        io.send_to_others(&msg);
        self.numbered.hold(io, number, origin, seq, sent, payload);
    }
}

impl Orderer for Sequencer {
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        if io.me == SEQUENCER {
            return self.order(io, io.me, seq, sent_ns, payload);
        }
        let mut msg = vec![REQUEST, io.me as u64, seq, sent_ns];
        msg.extend_from_slice(&payload);
        io.send(SEQUENCER, msg);
    }

    fn receive(&mut self, io: &mut Io, _from: usize, msg: Vec<u64>) {
        let (origin, seq, sent) = (msg[1] as usize, msg[2], msg[3]);
        match msg[0] {
            REQUEST => self.order(io, origin, seq, sent, msg[4..].to_vec()),
            _ => self
                .numbered
                .hold(io, msg[4], origin, seq, sent, msg[5..].to_vec()),
        }
    }
}
