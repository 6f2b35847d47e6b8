//! Unordered and FIFO multicast: one unicast to every other rank. Unordered
//! delivers on receipt; FIFO holds a message back until every earlier one from
//! its sender was delivered (courier keeps each pair FIFO, so with no loss the
//! hold-back queue stays empty — it is there for what the runtime does not
//! promise, and the verifier checks it).

use std::collections::BTreeMap;

use super::io::Io;
use super::Orderer;

const DATA: u64 = 1;
const HEADER: usize = 4;

pub(crate) struct Direct {
    fifo: bool,
    next: Vec<u64>,
    held: Vec<BTreeMap<u64, (u64, Vec<u64>)>>,
}

impl Direct {
    pub(crate) fn new(n: usize, fifo: bool) -> Direct {
        Direct {
            fifo,
            next: vec![0; n],
            held: (0..n).map(|_| BTreeMap::new()).collect(),
        }
    }
}

impl Orderer for Direct {
    fn multicast(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        let mut msg = vec![DATA, io.me as u64, seq, sent_ns];
        msg.extend_from_slice(&payload);
        io.send_to_others(&msg);
        io.deliver(io.me, seq, sent_ns, &payload, &[]);
        self.next[io.me] += 1;
    }

    fn receive(&mut self, io: &mut Io, _from: usize, msg: Vec<u64>) {
        let (origin, seq, sent) = (msg[1] as usize, msg[2], msg[3]);
        if !self.fifo {
            io.deliver(origin, seq, sent, &msg[HEADER..], &[]);
            return;
        }
        self.held[origin].insert(seq, (sent, msg[HEADER..].to_vec()));
        while let Some((sent, payload)) = self.held[origin].remove(&self.next[origin]) {
            io.deliver(origin, self.next[origin], sent, &payload, &[]);
            self.next[origin] += 1;
        }
    }
}
