//! Where rank-threads run: the placement policy and the plan it makes on a
//! [`Machine`].
//!
//! The policies order the cores of the machine (restricted to this process's
//! cpuset); rank `i` takes the `i`-th. One rank per core first (a core's second
//! hardware thread only once every core has a rank), one rank per PU before any
//! PU gets a second, and past that ranks wrap evenly over the PUs and the plan
//! says so. Pinning itself happens in [`crate::topology`].

use serde::Serialize;

use crate::topology::Machine;

use std::fmt;
use std::str::FromStr;

/// How rank-threads are pinned to the cores this process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Cores in topology order: neighbouring ranks share caches.
    #[default]
    Compact,
    /// Ranks spread over packages, NUMA nodes and caches (see [`Placement::plan`]).
    Scatter,
    /// Not pinned: the OS scheduler decides.
    None,
}

impl FromStr for Placement {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "compact" => Ok(Placement::Compact),
            "scatter" => Ok(Placement::Scatter),
            "none" => Ok(Placement::None),
            _ => Err(crate::Error::InvalidConfig(format!(
                "unknown placement {s:?} (expected compact, scatter or none)"
            ))),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Compact => "compact",
            Placement::Scatter => "scatter",
            Placement::None => "none",
        })
    }
}

/// Where each rank-thread of a process goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The PU (OS index) for each rank, in rank order; `None` = not pinned.
    pub pus: Vec<Option<usize>>,
    /// What the plan had to concede (more ranks than PUs, no usable CPU).
    pub notes: Vec<String>,
}

impl Placement {
    /// Places `ranks` rank-threads on `machine` (already restricted to the
    /// CPUs this process may use).
    ///
    /// * `compact`: cores in topology order, so neighbouring ranks share the
    ///   most caches;
    /// * `scatter`: ranks as far apart as the hierarchy allows: split over
    ///   packages, then NUMA nodes, then shared caches, in proportion to their
    ///   cores, spaced evenly inside the smallest group, and dealt out
    ///   round-robin (ranks 0 and 1 sit in different packages when there are two);
    /// * `none`: nothing pinned.
    ///
    /// ```
    /// use courier::{topology::Machine, Placement};
    /// let m = Machine::synthetic("package:2 core:4 pu:2").unwrap();
    /// assert_eq!(Placement::Compact.plan(&m, 2).pus, [Some(0), Some(2)]); // cores 0, 1
    /// assert_eq!(Placement::Scatter.plan(&m, 2).pus, [Some(0), Some(8)]); // one per package
    /// ```
    pub fn plan(self, machine: &Machine, ranks: usize) -> Plan {
        let mut notes = Vec::new();
        if self == Placement::None || ranks == 0 {
            return Plan {
                pus: vec![None; ranks],
                notes,
            };
        }
        let cores = cores_of(machine);
        if cores.is_empty() {
            notes.push("no usable CPU in this process's cpuset: ranks run unpinned".into());
            return Plan {
                pus: vec![None; ranks],
                notes,
            };
        }
        let order = |k: usize| -> Vec<&Core> {
            match self {
                Placement::Scatter => distribute(cores.iter().collect(), k, 0),
                _ => cores.iter().take(k).collect(),
            }
        };
        let pus: Vec<usize> = if ranks <= cores.len() {
            order(ranks).iter().map(|c| c.pus[0]).collect()
        } else {
            // Every core's first PU, then every core's second PU, ...
            let all = order(cores.len());
            let depth = all.iter().map(|c| c.pus.len()).max().unwrap_or(1);
            (0..depth)
                .flat_map(|r| all.iter().filter_map(move |c| c.pus.get(r).copied()))
                .collect()
        };
        if ranks > pus.len() {
            notes.push(format!(
                "{ranks} ranks on {} PUs: up to {} ranks share a PU (spread evenly)",
                pus.len(),
                ranks.div_ceil(pus.len())
            ));
        }
        Plan {
            pus: (0..ranks).map(|i| Some(pus[i % pus.len()])).collect(),
            notes,
        }
    }
}

/// A core: its usable PUs and its place in the hierarchy (package, NUMA node,
/// then the caches above it, largest first).
struct Core {
    pus: Vec<usize>,
    keys: Vec<usize>,
}

fn cores_of(machine: &Machine) -> Vec<Core> {
    let mut levels: Vec<u8> = machine.caches.iter().map(|c| c.level).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let mut cores: Vec<(usize, Core)> = Vec::new();
    for pu in &machine.pus {
        match cores.iter_mut().find(|(id, _)| *id == pu.core) {
            Some((_, core)) => core.pus.push(pu.os),
            None => {
                let caches = machine.caches_of(pu.os);
                let mut keys = vec![pu.package, pu.numa];
                keys.extend(levels.iter().map(|&l| {
                    caches
                        .iter()
                        .find(|c| c.level == l)
                        .map_or(usize::MAX, |c| c.index)
                }));
                let core = Core {
                    pus: vec![pu.os],
                    keys,
                };
                cores.push((pu.core, core));
            }
        }
    }
    cores.into_iter().map(|(_, c)| c).collect()
}

/// `k` of `cores` (k <= cores.len()), as far apart as the hierarchy from
/// level `depth` down allows, in the order ranks should take them.
fn distribute(cores: Vec<&Core>, k: usize, depth: usize) -> Vec<&Core> {
    let Some(levels) = cores.first().map(|c| c.keys.len()) else {
        return Vec::new();
    };
    if k == 0 {
        return Vec::new();
    }
    if depth >= levels {
        // One group left: space the k cores evenly.
        let m = cores.len();
        return (0..k).map(|i| cores[i * m / k]).collect();
    }
    let mut groups: Vec<(usize, Vec<&Core>)> = Vec::new();
    for core in cores {
        let key = core.keys[depth];
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, members)) => members.push(core),
            None => groups.push((key, vec![core])),
        }
    }
    if groups.len() == 1 {
        let (_, members) = groups.remove(0);
        return distribute(members, k, depth + 1);
    }
    let sizes: Vec<usize> = groups.iter().map(|g| g.1.len()).collect();
    let lists: Vec<Vec<&Core>> = groups
        .into_iter()
        .zip(shares(k, &sizes))
        .map(|((_, members), share)| distribute(members, share, depth + 1))
        .collect();
    // Deal round-robin: one from each group in turn.
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| lists.iter().filter_map(move |l| l.get(i).copied()))
        .collect()
}

/// Splits `k` (at most the sum of `sizes`) over groups of `sizes` in
/// proportion; the largest remainders get the leftovers (earlier groups first
/// on ties), and no group gets more than its size.
fn shares(k: usize, sizes: &[usize]) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let mut out: Vec<usize> = sizes.iter().map(|&s| k * s / total).collect();
    let mut left = k.min(total) - out.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..sizes.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(k * sizes[i] % total));
    while left > 0 {
        for &i in &by_remainder {
            if left > 0 && out[i] < sizes[i] {
                out[i] += 1;
                left -= 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Machine;
    use proptest::prelude::*;

    fn machine(description: &str) -> Machine {
        Machine::synthetic(description).unwrap()
    }

    fn pus(plan: &Plan) -> Vec<usize> {
        plan.pus.iter().map(|p| p.expect("pinned")).collect()
    }

    #[test]
    fn one_socket_two_cores() {
        let m = machine("package:1 core:2");
        assert_eq!(pus(&Placement::Compact.plan(&m, 2)), [0, 1]);
        assert_eq!(pus(&Placement::Scatter.plan(&m, 2)), [0, 1]);
        assert_eq!(pus(&Placement::Scatter.plan(&m, 1)), [0]);
        assert!(Placement::Compact.plan(&m, 2).notes.is_empty());
        // 8 ranks on 2 cores (the tests' usual load): 4 per core, and it says so.
        let over = Placement::Compact.plan(&m, 8);
        assert_eq!(pus(&over), [0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(over.notes.len(), 1);
        assert!(
            over.notes[0].contains("8 ranks on 2 PUs"),
            "{:?}",
            over.notes
        );
    }

    #[test]
    fn two_sockets_four_cores_two_pus() {
        let m = machine("package:2 core:4 pu:2");
        // compact: one rank per core in order, package 0 first.
        assert_eq!(pus(&Placement::Compact.plan(&m, 4)), [0, 2, 4, 6]);
        assert_eq!(
            pus(&Placement::Compact.plan(&m, 8)),
            [0, 2, 4, 6, 8, 10, 12, 14]
        );
        // Second hardware threads only once every core has a rank.
        assert_eq!(
            pus(&Placement::Compact.plan(&m, 10)),
            [0, 2, 4, 6, 8, 10, 12, 14, 1, 3]
        );
        // scatter: alternate packages, spaced inside each.
        assert_eq!(pus(&Placement::Scatter.plan(&m, 2)), [0, 8]);
        assert_eq!(pus(&Placement::Scatter.plan(&m, 4)), [0, 8, 4, 12]);
        assert_eq!(
            pus(&Placement::Scatter.plan(&m, 8)),
            [0, 8, 2, 10, 4, 12, 6, 14]
        );
        for policy in [Placement::Compact, Placement::Scatter] {
            let full = policy.plan(&m, 16);
            let mut all = pus(&full);
            all.sort_unstable();
            assert_eq!(all, (0..16).collect::<Vec<_>>(), "{policy}: every PU once");
            assert!(full.notes.is_empty());
            assert_eq!(policy.plan(&m, 17).notes.len(), 1, "{policy}: 17 > 16 PUs");
        }
    }

    #[test]
    fn scatter_splits_numa_nodes_and_caches_too() {
        let m = machine("package:1 numa:2 l3:2 core:4");
        // Two NUMA nodes (cores 0-7 / 8-15), two L3s in each (4 cores each).
        assert_eq!(pus(&Placement::Scatter.plan(&m, 2)), [0, 8]);
        assert_eq!(pus(&Placement::Scatter.plan(&m, 4)), [0, 8, 4, 12]);
        assert_eq!(pus(&Placement::Compact.plan(&m, 4)), [0, 1, 2, 3]);
    }

    #[test]
    fn restricted_cpusets() {
        let m = machine("package:2 core:4 pu:2");
        // Bound to package 1 (as mpirun --bind-to package would).
        let p1 = m.restrict(&(8..16).collect::<Vec<_>>());
        assert_eq!(pus(&Placement::Compact.plan(&p1, 2)), [8, 10]);
        assert_eq!(pus(&Placement::Scatter.plan(&p1, 2)), [8, 12]);
        // Bound to one core's two hardware threads: two ranks fit, a third does not.
        let core = m.restrict(&[6, 7]);
        assert_eq!(pus(&Placement::Compact.plan(&core, 2)), [6, 7]);
        assert!(Placement::Compact.plan(&core, 2).notes.is_empty());
        assert_eq!(Placement::Compact.plan(&core, 3).notes.len(), 1);
        // Scattered cpuset: PUs 1, 5 and 12 (three cores in two packages).
        let odd = m.restrict(&[1, 5, 12]);
        assert_eq!(pus(&Placement::Compact.plan(&odd, 3)), [1, 5, 12]);
        assert_eq!(pus(&Placement::Scatter.plan(&odd, 2)), [1, 12]);
        // Empty: nothing to pin to, and it says so.
        let empty = m.restrict(&[]);
        let plan = Placement::Compact.plan(&empty, 2);
        assert_eq!(plan.pus, [None, None]);
        assert!(plan.notes[0].contains("no usable CPU"));
    }

    #[test]
    fn none_pins_nothing() {
        let plan = Placement::None.plan(&machine("core:4"), 3);
        assert_eq!(plan.pus, [None, None, None]);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn shares_are_proportional_and_capped() {
        assert_eq!(shares(4, &[4, 4]), [2, 2]);
        assert_eq!(shares(3, &[4, 4]), [2, 1]);
        assert_eq!(shares(3, &[1, 6]), [0, 3]);
        assert_eq!(shares(7, &[1, 6]), [1, 6]);
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [Placement::Compact, Placement::Scatter, Placement::None] {
            assert_eq!(p.to_string().parse::<Placement>().unwrap(), p);
        }
        assert!("diagonal".parse::<Placement>().is_err());
    }

    proptest! {
        /// On any machine and cpuset: only usable PUs; no PU shared while
        /// ranks <= PUs, no core shared while ranks <= cores; past that the
        /// load differs by at most one rank between PUs.
        #[test]
        fn plans_never_double_up_before_they_must(
            packages in 1usize..4, cores in 1usize..5, smt in 1usize..3,
            mask in any::<u64>(), ranks in 1usize..40, scatter in any::<bool>(),
        ) {
            let m = machine(&format!("package:{packages} core:{cores} pu:{smt}"));
            let allowed: Vec<usize> = (0..m.pus.len()).filter(|i| mask >> i & 1 == 1).collect();
            let m = m.restrict(&allowed);
            let policy = if scatter { Placement::Scatter } else { Placement::Compact };
            let plan = policy.plan(&m, ranks);
            prop_assert_eq!(plan.pus.len(), ranks);
            if m.pus.is_empty() {
                prop_assert!(plan.pus.iter().all(Option::is_none));
                return Ok(());
            }
            let placed = pus(&plan);
            prop_assert!(placed.iter().all(|p| allowed.contains(p)));
            let mut load = vec![0usize; 64];
            for &p in &placed { load[p] += 1; }
            let used: Vec<usize> = allowed.iter().map(|&p| load[p]).collect();
            let (lo, hi) = (used.iter().min().unwrap(), used.iter().max().unwrap());
            prop_assert!(hi - lo <= 1 || ranks < m.pus.len() && *hi == 1);
            if ranks <= m.pus.len() { prop_assert_eq!(*hi, 1); }
            prop_assert_eq!(plan.notes.is_empty(), ranks <= m.pus.len());
            if ranks <= m.cores() {
                let mut cores_used: Vec<usize> =
                    placed.iter().map(|&p| m.pu(p).unwrap().core).collect();
                cores_used.sort_unstable();
                cores_used.dedup();
                prop_assert_eq!(cores_used.len(), ranks);
            }
        }
    }
}
