//! The user API: a communicator and what can be done with it.
//!
//! * [`p2p`](self) — blocking point-to-point: every send mode, receive, probes;
//! * [`request`](crate::Scope) — nonblocking operations in a [`Scope`](crate::Scope);
//! * collectives — barrier, broadcast, reductions, gathers, scatter, all-to-all;
//! * here — ranks, `dup` and `split`.

mod collective;
mod p2p;
pub(crate) mod request;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::matching::Pattern;
use crate::runtime::World;
use crate::{Error, Result, Runtime, Source, TagMatch, TAG_UB};

pub use p2p::Message;

/// A communicator: a group of ranks and a context that isolates its traffic.
///
/// Messages sent on one communicator only match receives on the same
/// communicator; collectives use a separate context of their own, so they never
/// match point-to-point traffic either. `Comm` is `Send + Sync`: several threads
/// of one rank may use it at once.
pub struct Comm {
    pub(crate) world: Arc<World>,
    rank: usize,
    /// World rank of each rank of this communicator.
    pub(crate) group: Arc<[usize]>,
    /// Rank in this communicator of each member's world rank.
    pub(crate) rank_of: Arc<HashMap<usize, usize>>,
    /// Point-to-point context; `ctx + 1` is the collective context.
    pub(crate) ctx: u32,
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm")
            .field("rank", &self.rank)
            .field("size", &self.size())
            .field("context", &self.ctx)
            .finish()
    }
}

impl Comm {
    pub(crate) fn world(world: Arc<World>, rank: usize) -> Comm {
        let n = world.layout.size();
        Comm::new(world, rank, (0..n).collect(), 0)
    }

    fn new(world: Arc<World>, rank: usize, group: Arc<[usize]>, ctx: u32) -> Comm {
        let rank_of = group.iter().enumerate().map(|(r, &w)| (w, r)).collect();
        Comm {
            world,
            rank,
            group,
            rank_of: Arc::new(rank_of),
            ctx,
        }
    }

    /// This rank's number in the communicator, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the communicator.
    pub fn size(&self) -> usize {
        self.group.len()
    }

    /// This rank's number in the world communicator.
    pub fn world_rank(&self) -> usize {
        self.group[self.rank]
    }

    /// Index of the process `rank` runs in (always 0 in an embedded job).
    pub fn node_of(&self, rank: usize) -> Result<usize> {
        self.world_of(rank).map(|w| self.world.layout.process_of(w))
    }

    /// Whether `rank` runs in this process (reached over shared memory; the
    /// others are reached over MPI).
    pub fn is_local(&self, rank: usize) -> Result<bool> {
        self.world_of(rank)
            .map(|w| self.world.layout.local(w).is_some())
    }

    /// The CPU (PU, OS index) `rank` is pinned to; `None` if unpinned, not yet
    /// started, or in another process.
    pub fn core_of(&self, rank: usize) -> Result<Option<usize>> {
        Ok(self.binding_of(rank)?.and_then(|b| b.pinned()))
    }

    /// Where `rank` was pinned and what the OS reported back right after
    /// (see [`Binding::verified`](crate::topology::Binding::verified)); `None`
    /// if not yet started or in another process.
    pub fn binding_of(&self, rank: usize) -> Result<Option<crate::topology::Binding>> {
        let w = self.world_of(rank)?;
        Ok(self
            .world
            .layout
            .local(w)
            .and_then(|l| self.world.pinned[l].get().cloned()))
    }

    /// Number of processes in the job (1 when embedded).
    pub fn processes(&self) -> usize {
        self.world.layout.processes
    }

    /// Index of this rank among the ranks of its process.
    pub(crate) fn me(&self) -> usize {
        self.world_rank() - self.world.layout.first()
    }

    /// The configuration the job was started with.
    pub fn config(&self) -> &Runtime {
        &self.world.config
    }

    /// A new communicator with the same group and a fresh context (collective:
    /// every rank must call it). Traffic on the copy never matches the original.
    pub fn dup(&self) -> Result<Comm> {
        let mut ctx = [0u32];
        if self.rank == 0 {
            ctx[0] = self.world.next_ctx.fetch_add(self.ctx_stride(), Relaxed);
        }
        self.broadcast(&mut ctx, 0)?;
        self.create_lanes(ctx[0], &self.group)?;
        Ok(Comm {
            world: self.world.clone(),
            rank: self.rank,
            group: self.group.clone(),
            rank_of: self.rank_of.clone(),
            ctx: ctx[0],
        })
    }

    /// Splits the communicator (collective): ranks passing the same `color` form a
    /// new communicator, ordered by `key` then by rank here. `None` as color takes
    /// no part (`MPI_UNDEFINED`) and gets `None` back.
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Comm>> {
        let mine = [color.map_or(-1, i64::from), i64::from(key)];
        let mut all = vec![[0i64; 2]; self.size()];
        self.all_gather(&[mine], &mut all)?;
        let mut colors: Vec<i64> = all.iter().map(|c| c[0]).filter(|&c| c >= 0).collect();
        colors.sort_unstable();
        colors.dedup();
        let mut base = [0u32];
        if self.rank == 0 {
            base[0] = self
                .world
                .next_ctx
                .fetch_add(self.ctx_stride() * colors.len() as u32, Relaxed);
        }
        self.broadcast(&mut base, 0)?;
        let Some(color) = color else { return Ok(None) };
        let index = colors
            .binary_search(&i64::from(color))
            .expect("own color was gathered") as u32;
        let mut members: Vec<(i64, usize)> = (0..self.size())
            .filter(|&r| all[r][0] == i64::from(color))
            .map(|r| (all[r][1], r))
            .collect();
        members.sort_unstable();
        let rank = members
            .iter()
            .position(|&(_, r)| r == self.rank)
            .expect("self is a member");
        let group: Arc<[usize]> = members.iter().map(|&(_, r)| self.group[r]).collect();
        let ctx = base[0] + self.ctx_stride() * index;
        self.create_lanes(ctx, &group)?;
        Ok(Some(Comm::new(self.world.clone(), rank, group, ctx)))
    }

    /// Step between the contexts one process hands out: contexts come in pairs
    /// and process p hands out 2 + 2p + 2P·k, so they are unique job-wide.
    fn ctx_stride(&self) -> u32 {
        2 * self.world.layout.processes as u32
    }

    /// In cluster mode, creates the MPI lanes of contexts `ctx` and `ctx + 1`
    /// for a communicator of `members` (world ranks): one rank per process does
    /// it, collectively with the other processes that host members.
    fn create_lanes(&self, ctx: u32, members: &[usize]) -> Result<()> {
        let Some(mpi) = &self.world.mpi else {
            return Ok(());
        };
        let layout = self.world.layout;
        let leader = members
            .iter()
            .copied()
            .filter(|&w| layout.local(w).is_some())
            .min();
        if leader != Some(self.world_rank()) {
            return Ok(());
        }
        let mut processes: Vec<usize> = members.iter().map(|&w| layout.process_of(w)).collect();
        processes.sort_unstable();
        processes.dedup();
        mpi.create_context(ctx, &processes)?;
        mpi.create_context(ctx + 1, &processes)
    }

    /// World rank of `rank`, or `InvalidRank`.
    pub(crate) fn world_of(&self, rank: usize) -> Result<usize> {
        // `ok_or_else`: an `Error` built eagerly is dropped on every call (a
        // measurable share of a tiny send).
        self.group
            .get(rank)
            .copied()
            .ok_or_else(|| Error::InvalidRank {
                rank,
                size: self.size(),
            })
    }

    pub(crate) fn coll_ctx(&self) -> u32 {
        self.ctx + 1
    }

    /// A receive pattern on context `ctx`, validated.
    pub(crate) fn pattern(&self, ctx: u32, source: Source, tag: TagMatch) -> Result<Pattern> {
        let source = match source {
            Source::Rank(r) => Some(self.world_of(r).map(|_| r)?),
            Source::Any => None,
        };
        let tag = match tag {
            TagMatch::Tag(t) => Some(check_tag(t)?),
            TagMatch::Any => None,
        };
        Ok(Pattern { ctx, source, tag })
    }
}

/// `Ok(tag)` for a valid user tag.
pub(crate) fn check_tag(tag: i32) -> Result<i32> {
    if (0..=TAG_UB).contains(&tag) {
        Ok(tag)
    } else {
        Err(Error::InvalidTag { tag })
    }
}
