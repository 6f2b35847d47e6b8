//! Total order on a ring: a token carrying the next sequence number circulates
//! rank 0 → 1 → … → n − 1 → 0. Its holder numbers its waiting messages, sends
//! each to its successor, and passes the token on behind them. A message
//! travels the ring once (n − 1 hops, each rank receives it exactly once: the
//! fewest unicasts per delivery, as in LCR), and since every link is FIFO and
//! the token follows the messages it released, numbers arrive in order; a
//! hold-back queue delivers by number regardless. The token retires once the
//! last message is numbered. Unicasts per multicast: n − 1, plus the token's
//! passes shared by the messages of a rotation.

use std::collections::VecDeque;

use super::io::{Io, Numbered};

const DATA: u64 = 7;
const TOKEN: u64 = 8;
const HEADER: usize = 6;

pub(crate) struct Ring {
    total: u64,
    token: Option<u64>,
    waiting: VecDeque<(u64, u64, Vec<u64>)>,
    numbered: Numbered,
    /// Token passes sent by this rank.
    pub passes: u64,
}

impl Ring {
    pub(crate) fn new(me: usize, total: u64) -> Ring {
        Ring {
            total,
            token: (me == 0).then_some(0),
            waiting: VecDeque::new(),
            numbered: Numbered::default(),
            passes: 0,
        }
    }

    fn release(&mut self, io: &mut Io) {
        let Some(mut number) = self.token else { return };
        let next = (io.me + 1) % io.n;
        while let Some((seq, sent, payload)) = self.waiting.pop_front() {
            if io.n > 1 {
                let mut msg = vec![DATA, io.me as u64, seq, sent, number, io.n as u64 - 1];
                msg.extend_from_slice(&payload);
                io.send(next, msg);
            }
            self.numbered.hold(io, number, io.me, seq, sent, payload);
            number += 1;
        }
        if io.n == 1 {
            self.token = Some(number);
        } else {
            self.token = None;
            if number < self.total {
                self.passes += 1;
                io.send(next, vec![TOKEN, number]);
            }
        }
    }
}

impl Ring {
    pub(crate) fn push(&mut self, io: &mut Io, seq: u64, sent_ns: u64, payload: Vec<u64>) {
        self.waiting.push_back((seq, sent_ns, payload));
        self.release(io);
    }

    pub(crate) fn take(&mut self, io: &mut Io, _from: usize, mut msg: Vec<u64>) {
        if msg[0] == TOKEN {
            self.token = Some(msg[1]);
            return self.release(io);
        }
        let (origin, seq, sent, number, hops) = (msg[1] as usize, msg[2], msg[3], msg[4], msg[5]);
        let payload = msg[HEADER..].to_vec();
        if hops > 1 {
            msg[5] = hops - 1;
            io.send((io.me + 1) % io.n, msg);
        }
        self.numbered.hold(io, number, origin, seq, sent, payload);
    }
}
