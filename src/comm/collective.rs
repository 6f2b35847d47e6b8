//! Collectives: every rank of the communicator calls them in the same order.
//! They run on the communicator's collective context, so they never match
//! point-to-point traffic.
//!
//! Algorithms: dissemination barrier (⌈log₂ p⌉ rounds); binomial-tree broadcast
//! and reduce (reduce keeps rank order, so `op` need only be associative);
//! gather, scatter and all-to-all post all their transfers at once, so senders
//! copy straight into the receiver's buffer in parallel.
//!
//! In cluster mode barrier, broadcast and reduce (and so all_reduce,
//! all_gather) are hierarchical: within each process over shared memory to the
//! process's leader (its lowest rank), then the same algorithms among the
//! leaders over MPI, then back down. Reduce does so only when every process's
//! ranks are consecutive in the communicator (always for `world` and its
//! `dup`s), which keeps the rank order of a non-commutative `op`.

use bytemuck::Pod;

use crate::matching::Pattern;
use crate::transport::shm::Mode;
use crate::{wait_all, Comm, Error, Result, Status};

const BARRIER: i32 = 1;
const BROADCAST: i32 = 2;
const REDUCE: i32 = 3;
const GATHER: i32 = 4;
const SCATTER: i32 = 5;
const ALL_TO_ALL: i32 = 6;

impl Comm {
    fn coll_send<T: Pod>(&self, buf: &[T], dest: usize, tag: i32) -> Result<()> {
        self.send_on(
            self.coll_ctx(),
            bytemuck::cast_slice(buf),
            dest,
            tag,
            Mode::Standard,
        )
    }

    fn coll_pattern(&self, source: usize, tag: i32) -> Pattern {
        Pattern {
            ctx: self.coll_ctx(),
            source: Some(source),
            tag: Some(tag),
        }
    }

    fn coll_recv<T: Pod>(&self, buf: &mut [T], source: usize, tag: i32) -> Result<Status> {
        let status = self.recv_on(self.coll_pattern(source, tag), buf)?;
        expect_len(
            status,
            std::mem::size_of_val(buf),
            "collective message (bytes)",
        )
    }

    fn check_root(&self, root: usize) -> Result<()> {
        self.world_of(root).map(|_| ())
    }

    /// The two levels of this communicator in cluster mode, `None` when all its
    /// ranks share one process.
    fn levels(&self) -> Result<Option<Levels>> {
        if self.world.mpi.is_none() {
            return Ok(None);
        }
        let nodes: Vec<usize> = (0..self.size())
            .map(|r| self.node_of(r))
            .collect::<Result<_>>()?;
        let mine = nodes[self.rank()];
        let local: Vec<usize> = (0..self.size()).filter(|&r| nodes[r] == mine).collect();
        if local.len() == self.size() {
            return Ok(None);
        }
        let leaders: Vec<usize> = (0..self.size())
            .filter(|&r| !nodes[..r].contains(&nodes[r]))
            .collect();
        let contiguous = nodes.windows(2).filter(|w| w[0] != w[1]).count() + 1 == leaders.len();
        Ok(Some(Levels {
            leader_of: nodes
                .iter()
                .map(|n| {
                    leaders[leaders
                        .iter()
                        .position(|&l| nodes[l] == *n)
                        .expect("a leader per node")]
                })
                .collect(),
            local,
            leaders,
            contiguous,
        }))
    }

    /// Blocks until every rank of the communicator has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        let Some(lv) = self.levels()? else {
            return self.barrier_among(&(0..self.size()).collect::<Vec<_>>());
        };
        let (me, leader) = (self.rank(), lv.leader_of[self.rank()]);
        if me != leader {
            self.coll_send::<u8>(&[], leader, BARRIER)?;
            self.coll_recv::<u8>(&mut [], leader, BARRIER)?;
            return Ok(());
        }
        for &r in lv.local.iter().filter(|&&r| r != me) {
            self.coll_recv::<u8>(&mut [], r, BARRIER)?;
        }
        self.barrier_among(&lv.leaders)?;
        for &r in lv.local.iter().filter(|&&r| r != me) {
            self.coll_send::<u8>(&[], r, BARRIER)?;
        }
        Ok(())
    }

    /// Dissemination barrier among `members` (this rank is one of them).
    fn barrier_among(&self, members: &[usize]) -> Result<()> {
        let p = members.len();
        let r = members
            .iter()
            .position(|&m| m == self.rank())
            .expect("a member");
        let mut dist = 1;
        while dist < p {
            self.coll_send::<u8>(&[], members[(r + dist) % p], BARRIER)?;
            self.coll_recv::<u8>(&mut [], members[(r + p - dist) % p], BARRIER)?;
            dist *= 2;
        }
        Ok(())
    }

    /// Copies `buf` of rank `root` into `buf` of every rank (binomial tree).
    pub fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        let Some(lv) = self.levels()? else {
            let all: Vec<usize> = (0..self.size()).collect();
            return self.broadcast_among(buf, &all, root);
        };
        let (me, leader, top) = (self.rank(), lv.leader_of[self.rank()], lv.leader_of[root]);
        if root != top {
            if me == root {
                self.coll_send(buf, top, BROADCAST)?;
            } else if me == top {
                self.coll_recv(buf, root, BROADCAST)?;
            }
        }
        if me == leader {
            self.broadcast_among(buf, &lv.leaders, top)?;
            for &r in lv.local.iter().filter(|&&r| r != me && r != root) {
                self.coll_send(buf, r, BROADCAST)?;
            }
        } else if me != root {
            self.coll_recv(buf, leader, BROADCAST)?;
        }
        Ok(())
    }

    /// Binomial-tree broadcast among `members` from `root` (both comm ranks).
    fn broadcast_among<T: Pod>(&self, buf: &mut [T], members: &[usize], root: usize) -> Result<()> {
        let p = members.len();
        let index = |r: usize| members.iter().position(|&m| m == r).expect("a member");
        let (me, root) = (index(self.rank()), index(root));
        let vr = (me + p - root) % p;
        let mut mask = 1;
        while mask < p {
            if vr & mask != 0 {
                self.coll_recv(buf, members[(vr - mask + root) % p], BROADCAST)?;
                break;
            }
            mask <<= 1;
        }
        mask >>= 1;
        while mask > 0 {
            if vr + mask < p {
                self.coll_send(buf, members[(vr + mask + root) % p], BROADCAST)?;
            }
            mask >>= 1;
        }
        Ok(())
    }

    /// Combines `send` of all ranks element-wise with `op` in rank order
    /// (`op(op(x0, x1), x2)…`) into `recv` at `root`. `op` must be associative;
    /// `recv` must have `send.len()` elements at the root and is ignored elsewhere.
    pub fn reduce<T: Pod, F: Fn(T, T) -> T>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: usize,
        op: F,
    ) -> Result<()> {
        self.check_root(root)?;
        if self.rank() == root && recv.len() != send.len() {
            return Err(Error::CountMismatch {
                what: "reduce receive buffer",
                expected: send.len(),
                got: recv.len(),
            });
        }
        let r = self.rank();
        let mut acc = send.to_vec();
        match self.levels()? {
            Some(lv) if lv.contiguous => {
                // Each leader combines its process's ranks in order, then the
                // leaders (in rank order, consecutive blocks) combine theirs.
                let leader = lv.leader_of[r];
                self.reduce_among(&mut acc, &lv.local, &op)?;
                if r == leader {
                    self.reduce_among(&mut acc, &lv.leaders, &op)?;
                }
            }
            _ => self.reduce_among(&mut acc, &(0..self.size()).collect::<Vec<_>>(), &op)?,
        }
        match (r, root) {
            (0, 0) => recv.copy_from_slice(&acc),
            (0, _) => self.coll_send(&acc, root, REDUCE)?,
            (_, _) if r == root => {
                self.coll_recv(recv, 0, REDUCE)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Binomial tree among `members` (ascending comm ranks) toward `members[0]`:
    /// member i ends up holding the combination of members i..i+mask in order;
    /// `acc` holds the full result at `members[0]`.
    fn reduce_among<T: Pod, F: Fn(T, T) -> T>(
        &self,
        acc: &mut [T],
        members: &[usize],
        op: &F,
    ) -> Result<()> {
        let p = members.len();
        let r = members
            .iter()
            .position(|&m| m == self.rank())
            .expect("a member");
        let mut tmp = vec![T::zeroed(); acc.len()];
        let mut mask = 1;
        while mask < p {
            if r & mask != 0 {
                self.coll_send(acc, members[r - mask], REDUCE)?;
                break;
            }
            if r + mask < p {
                self.coll_recv(&mut tmp, members[r + mask], REDUCE)?;
                for (a, &b) in acc.iter_mut().zip(&tmp) {
                    *a = op(*a, b);
                }
            }
            mask <<= 1;
        }
        Ok(())
    }

    /// [`reduce`](Comm::reduce) with the result on every rank; `recv` must have
    /// `send.len()` elements.
    pub fn all_reduce<T: Pod, F: Fn(T, T) -> T>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: F,
    ) -> Result<()> {
        if recv.len() != send.len() {
            return Err(Error::CountMismatch {
                what: "all_reduce receive buffer",
                expected: send.len(),
                got: recv.len(),
            });
        }
        self.reduce(send, recv, 0, op)?;
        self.broadcast(recv, 0)
    }

    /// Concatenates `send` of every rank, in rank order, into `recv` at `root`
    /// (`size() * send.len()` elements there; ignored elsewhere). Every rank must
    /// contribute the same number of elements.
    pub fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        if self.rank() != root {
            return self.coll_send(send, root, GATHER);
        }
        let k = send.len();
        check_len("gather receive buffer", self.size() * k, recv.len())?;
        self.collect_chunks(recv, k, GATHER, |_| None, send)
    }

    /// [`gather`](Comm::gather) with the result on every rank.
    pub fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        check_len(
            "all_gather receive buffer",
            self.size() * send.len(),
            recv.len(),
        )?;
        self.gather(send, recv, 0)?;
        self.broadcast(recv, 0)
    }

    /// Sends chunk `i` of `send` at `root` (`size() * recv.len()` elements there;
    /// ignored elsewhere) to rank `i`'s `recv`.
    pub fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        let k = recv.len();
        if self.rank() != root {
            self.coll_recv(recv, root, SCATTER)?;
            return Ok(());
        }
        check_len("scatter send buffer", self.size() * k, send.len())?;
        let me = self.rank();
        recv.copy_from_slice(&send[me * k..(me + 1) * k]);
        self.scope(|s| {
            let mut reqs = Vec::with_capacity(self.size());
            for i in (0..self.size()).filter(|&i| i != me) {
                let chunk: &[u8] = bytemuck::cast_slice(&send[i * k..(i + 1) * k]);
                reqs.push(s.isend_on(self.coll_ctx(), chunk, i, SCATTER, Mode::Standard)?);
            }
            wait_all(&mut reqs).map(drop)
        })
    }

    /// Rank `i` sends chunk `j` of its `send` to rank `j`, which stores it as chunk
    /// `i` of its `recv`; both buffers have `size() * k` elements.
    pub fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let p = self.size();
        if send.len() % p != 0 {
            return Err(Error::CountMismatch {
                what: "all_to_all send buffer (a multiple of size())",
                expected: send.len() / p * p,
                got: send.len(),
            });
        }
        check_len("all_to_all receive buffer", send.len(), recv.len())?;
        let k = send.len() / p;
        self.collect_chunks(
            recv,
            k,
            ALL_TO_ALL,
            |j| Some(&send[j * k..(j + 1) * k]),
            &send[self.rank() * k..][..k],
        )
    }

    /// Posts a receive for chunk `i` of `recv` from every rank `i` but this one
    /// (which contributes `own`), sends `outgoing(j)` to every other rank `j`,
    /// and waits for all of it.
    fn collect_chunks<'a, T: Pod>(
        &self,
        recv: &mut [T],
        k: usize,
        tag: i32,
        outgoing: impl Fn(usize) -> Option<&'a [T]>,
        own: &[T],
    ) -> Result<()> {
        let me = self.rank();
        recv[me * k..(me + 1) * k].copy_from_slice(own);
        let chunk_bytes = k * std::mem::size_of::<T>();
        let statuses = self.scope(|s| {
            let mut reqs = Vec::with_capacity(2 * self.size());
            if k > 0 {
                for (i, chunk) in recv.chunks_mut(k).enumerate().filter(|&(i, _)| i != me) {
                    reqs.push(s.irecv_on(self.coll_pattern(i, tag), chunk)?);
                }
            } else {
                for i in (0..self.size()).filter(|&i| i != me) {
                    reqs.push(s.irecv_on::<T>(self.coll_pattern(i, tag), &mut [])?);
                }
            }
            for j in (0..self.size()).filter(|&j| j != me) {
                if let Some(out) = outgoing(j) {
                    reqs.push(s.isend_on(
                        self.coll_ctx(),
                        bytemuck::cast_slice(out),
                        j,
                        tag,
                        Mode::Standard,
                    )?);
                }
            }
            wait_all(&mut reqs)
        })?;
        for st in statuses.into_iter().take(self.size() - 1) {
            expect_len(st, chunk_bytes, "collective message (bytes)")?;
        }
        Ok(())
    }
}

/// A communicator's ranks grouped by process (cluster mode).
struct Levels {
    /// Ranks in this rank's process, ascending.
    local: Vec<usize>,
    /// The lowest rank of each process, ascending.
    leaders: Vec<usize>,
    /// The leader of each rank's process.
    leader_of: Vec<usize>,
    /// Whether each process's ranks are consecutive.
    contiguous: bool,
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::CountMismatch {
            what,
            expected,
            got,
        })
    }
}

/// A collective message must fill its buffer exactly.
fn expect_len(status: Status, bytes: usize, what: &'static str) -> Result<Status> {
    check_len(what, bytes, status.bytes).map(|()| status)
}
