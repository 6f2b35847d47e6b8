//! The machine as placement sees it: processing units (PUs, hardware threads)
//! grouped into cores, packages and NUMA nodes, and the caches they share.
//!
//! [`Machine::detect`] reads it with hwloc (feature `hwloc`), restricted to the
//! CPUs the calling thread may run on (the cpuset mpirun or Slurm gave the
//! process); without the feature it is the flat list of CPUs the OS affinity
//! call reports. [`Machine::synthetic`] builds one from an hwloc-style
//! description such as `"package:2 core:4 pu:2"`, for planning what a placement
//! would do on another machine.
//!
//! The seam below (`bind_current`, `read_binding`) is the only place a thread
//! is pinned; both backends implement it.

#[cfg(feature = "hwloc")]
mod hwloc;
#[cfg(not(feature = "hwloc"))]
mod os;

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use crate::{Error, Result};

#[cfg(feature = "hwloc")]
use self::hwloc as backend;
#[cfg(not(feature = "hwloc"))]
use self::os as backend;

/// One processing unit (hardware thread) and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pu {
    /// The OS's index for it (what `taskset`, `sched_getcpu` and hwloc's `P#` use).
    pub os: usize,
    /// Its core, as a logical index (0.. in topology order).
    pub core: usize,
    /// Its package (socket), as a logical index.
    pub package: usize,
    /// Its NUMA node, as a logical index.
    pub numa: usize,
}

/// A CPU cache and the PUs that share it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// `L1d`, `L1i`, `L2`, `L3`, ...
    pub name: String,
    /// Its level (1 for L1).
    pub level: u8,
    /// Logical index among the caches of this name.
    pub index: usize,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// OS indices of the PUs (of this machine's cpuset) that share it.
    pub pus: Vec<usize>,
}

impl Cache {
    /// Its short label, e.g. `L2#1`.
    pub fn label(&self) -> String {
        format!("{}#{}", self.name, self.index)
    }
}

/// A machine's PUs (only those this process may use) and caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Where the description came from (`hwloc 2.9.0`, `synthetic ...`, `os affinity`).
    pub source: String,
    /// The PUs this process may use, in topology order.
    pub pus: Vec<Pu>,
    /// Number of PUs the whole machine has, usable by this process or not.
    pub machine_pus: usize,
    /// CPU caches (data and unified; instruction caches are left out), by
    /// level then index.
    pub caches: Vec<Cache>,
}

impl Machine {
    /// The machine this process runs on, restricted to the CPUs the calling
    /// thread may run on. Call it before pinning the calling thread.
    ///
    /// # Errors
    /// [`Error::Topology`] if hwloc cannot load the topology or the cpuset is empty.
    pub fn detect() -> Result<Machine> {
        let machine = backend::detect().map_err(Error::Topology)?;
        if machine.pus.is_empty() {
            return Err(Error::Topology(
                "this process's cpuset is empty: no CPU to run on".into(),
            ));
        }
        Ok(machine)
    }

    /// A machine built from an hwloc synthetic description: levels from the top
    /// down, each `type:count`, e.g. `"package:2 numa:1 l3:1 core:4 pu:2"`.
    /// Types: `package` (or `pack`, `socket`), `numa` (or `node`), `l1`..`l5`
    /// (`l1d` too), `core`, `pu`. Missing levels mean one package, one NUMA node
    /// and one PU per core. PUs are numbered 0.. in order.
    ///
    /// ```
    /// let m = courier::topology::Machine::synthetic("package:2 core:4 pu:2").unwrap();
    /// assert_eq!((m.pus.len(), m.cores(), m.packages()), (16, 8, 2));
    /// assert_eq!(m.pus[9].core, 4); // PU 9 is core 4's second PU, in package 1
    /// ```
    ///
    /// # Errors
    /// [`Error::Topology`] for an unknown type, a bad count, or levels out of order.
    pub fn synthetic(description: &str) -> Result<Machine> {
        let bad =
            |why: String| Error::Topology(format!("synthetic topology {description:?}: {why}"));
        // (rank of the level from the top, kind, count)
        let mut levels: Vec<(u8, Level, usize)> = Vec::new();
        for token in description.split_whitespace() {
            let (ty, count) = token
                .split_once(':')
                .ok_or_else(|| bad(format!("{token:?} is not type:count")))?;
            let count: usize =
                count.parse().ok().filter(|&c| c > 0).ok_or_else(|| {
                    bad(format!("{token:?}: the count must be a positive number"))
                })?;
            let level = Level::parse(ty).ok_or_else(|| bad(format!("unknown type {ty:?}")))?;
            if let Some(&(prev, _, _)) = levels.last() {
                if level.rank() <= prev {
                    return Err(bad(format!("{ty:?} cannot come below the level before it")));
                }
            }
            levels.push((level.rank(), level, count));
        }
        if !levels.iter().any(|l| l.1 == Level::Pu) {
            levels.push((Level::Pu.rank(), Level::Pu, 1));
        }
        let total: usize = levels.iter().map(|l| l.2).product();
        if total > 1 << 16 {
            return Err(bad(format!("{total} PUs is more than this supports")));
        }
        // PU i belongs to object i / (product of the counts below it) at each level.
        let below = |k: usize| -> usize { levels[k + 1..].iter().map(|l| l.2).product() };
        let object_of = |kind: Level, pu: usize| -> Option<usize> {
            let k = levels.iter().position(|l| l.1 == kind)?;
            Some(pu / below(k))
        };
        let pus = (0..total)
            .map(|i| Pu {
                os: i,
                core: object_of(Level::Core, i).unwrap_or(i),
                package: object_of(Level::Package, i).unwrap_or(0),
                numa: object_of(Level::Numa, i).unwrap_or(0),
            })
            .collect();
        let mut caches = Vec::new();
        for (k, &(_, kind, _)) in levels.iter().enumerate() {
            if let Level::Cache(level) = kind {
                let per = below(k);
                let name = if level == 1 {
                    "L1d".into()
                } else {
                    format!("L{level}")
                };
                caches.extend((0..total / per).map(|index| Cache {
                    name: name.clone(),
                    level,
                    index,
                    size: None,
                    pus: (index * per..(index + 1) * per).collect(),
                }));
            }
        }
        caches.sort_by_key(|c| (c.level, c.index));
        Ok(Machine {
            source: format!("synthetic {description:?}"),
            pus,
            machine_pus: total,
            caches,
        })
    }

    /// The same machine with only the PUs in `cpuset` (OS indices) left.
    pub fn restrict(&self, cpuset: &[usize]) -> Machine {
        let keep = |os: &usize| cpuset.contains(os);
        Machine {
            source: self.source.clone(),
            pus: self.pus.iter().filter(|p| keep(&p.os)).cloned().collect(),
            machine_pus: self.machine_pus,
            caches: self
                .caches
                .iter()
                .filter_map(|c| {
                    let pus: Vec<usize> = c.pus.iter().copied().filter(keep).collect();
                    (!pus.is_empty()).then(|| Cache { pus, ..c.clone() })
                })
                .collect(),
        }
    }

    /// Number of cores with at least one usable PU.
    pub fn cores(&self) -> usize {
        distinct(self.pus.iter().map(|p| p.core))
    }

    /// Number of packages with at least one usable PU.
    pub fn packages(&self) -> usize {
        distinct(self.pus.iter().map(|p| p.package))
    }

    /// Number of NUMA nodes with at least one usable PU.
    pub fn numa_nodes(&self) -> usize {
        distinct(self.pus.iter().map(|p| p.numa))
    }

    /// Whether this process may use every PU of the machine (the launcher did
    /// not bind it to a part).
    pub fn is_whole(&self) -> bool {
        self.pus.len() == self.machine_pus
    }

    /// The PU with OS index `os`.
    pub fn pu(&self, os: usize) -> Option<&Pu> {
        self.pus.iter().find(|p| p.os == os)
    }

    /// The caches PU `os` uses, smallest level first.
    pub fn caches_of(&self, os: usize) -> Vec<&Cache> {
        let mut v: Vec<&Cache> = self.caches.iter().filter(|c| c.pus.contains(&os)).collect();
        v.sort_by_key(|c| c.level);
        v
    }

    /// The usable part of the machine as an indented tree: packages, NUMA nodes,
    /// the caches (largest first), cores and PUs.
    pub fn tree(&self) -> String {
        let mut out = format!(
            "Machine ({} of {} PUs usable; {})\n",
            self.pus.len(),
            self.machine_pus,
            self.source
        );
        let mut last: Vec<String> = Vec::new();
        for pu in &self.pus {
            let mut path = vec![
                format!("Package L#{}", pu.package),
                format!("NUMANode L#{}", pu.numa),
            ];
            let mut caches = self.caches_of(pu.os);
            caches.reverse();
            path.extend(caches.iter().map(|c| match c.size {
                Some(s) => format!("{} ({})", c.label(), human_bytes(s)),
                None => c.label(),
            }));
            path.push(format!("Core L#{}", pu.core));
            path.push(format!("PU P#{}", pu.os));
            // Print the levels that differ from the previous PU's path.
            let same = path.iter().zip(&last).take_while(|(a, b)| a == b).count();
            for (depth, label) in path.iter().enumerate().skip(same) {
                let _ = writeln!(out, "{}{label}", "  ".repeat(depth + 1));
            }
            last = path;
        }
        out
    }
}

/// The levels of a synthetic description, top down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Package,
    Numa,
    Cache(u8),
    Core,
    Pu,
}

impl Level {
    fn parse(ty: &str) -> Option<Level> {
        Some(match ty.to_ascii_lowercase().as_str() {
            "package" | "pack" | "socket" => Level::Package,
            "numa" | "node" | "numanode" => Level::Numa,
            "core" => Level::Core,
            "pu" => Level::Pu,
            "l1" | "l1d" | "l1cache" => Level::Cache(1),
            "l2" | "l2cache" => Level::Cache(2),
            "l3" | "l3cache" => Level::Cache(3),
            "l4" | "l4cache" => Level::Cache(4),
            "l5" | "l5cache" => Level::Cache(5),
            _ => return None,
        })
    }

    /// Position from the top: larger caches sit above smaller ones.
    fn rank(self) -> u8 {
        match self {
            Level::Package => 0,
            Level::Numa => 1,
            Level::Cache(l) => 10 - l,
            Level::Core => 20,
            Level::Pu => 21,
        }
    }
}

fn distinct(it: impl Iterator<Item = usize>) -> usize {
    let mut v: Vec<usize> = it.collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Where a rank-thread ended up after pinning, read back from the OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The PU (OS index) the plan gave this rank; `None` = not pinned.
    pub planned: Option<usize>,
    /// The CPUs the thread may run on, read back after pinning.
    pub cpuset: Vec<usize>,
    /// The CPU the thread last ran on, read back after pinning.
    pub last_cpu: Option<usize>,
    /// Why pinning failed, if it did (the rank then runs unpinned).
    pub error: Option<String>,
}

impl Binding {
    /// Whether the OS agrees with the plan: a pinned rank's cpuset is exactly
    /// its PU and it last ran there. Unpinned ranks always agree.
    pub fn verified(&self) -> bool {
        match self.planned {
            None => true,
            Some(pu) => self.error.is_none() && self.cpuset == [pu] && self.last_cpu == Some(pu),
        }
    }

    /// The PU this rank is pinned to, if pinning succeeded.
    pub fn pinned(&self) -> Option<usize> {
        self.planned.filter(|_| self.error.is_none())
    }
}

/// Pins the calling thread to PU `pu` (OS index), then reads the binding back.
pub(crate) fn pin_current(pu: Option<usize>) -> Binding {
    let error = pu.and_then(|pu| backend::bind_current(pu).err());
    let (cpuset, last_cpu) = backend::read_binding();
    Binding {
        planned: pu,
        cpuset,
        last_cpu,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_numbers_pus_cores_and_packages_in_order() {
        let m = Machine::synthetic("package:2 l3:1 l2:4 core:1 pu:2").unwrap();
        assert_eq!(
            (m.pus.len(), m.cores(), m.packages(), m.numa_nodes()),
            (16, 8, 2, 1)
        );
        assert_eq!(
            m.pus[5],
            Pu {
                os: 5,
                core: 2,
                package: 0,
                numa: 0
            }
        );
        assert_eq!(
            m.pus[8],
            Pu {
                os: 8,
                core: 4,
                package: 1,
                numa: 0
            }
        );
        let l3: Vec<_> = m.caches.iter().filter(|c| c.level == 3).collect();
        assert_eq!(l3.len(), 2);
        assert_eq!(l3[1].pus, (8..16).collect::<Vec<_>>());
        let labels: Vec<String> = m.caches_of(9).iter().map(|c| c.label()).collect();
        assert_eq!(labels, ["L2#4", "L3#1"]);
        assert!(m.is_whole());
    }

    #[test]
    fn synthetic_rejects_bad_descriptions() {
        for bad in ["core:0", "core:x", "core", "gpu:2", "core:2 package:2", ""] {
            let r = Machine::synthetic(bad);
            if bad.is_empty() {
                assert_eq!(r.unwrap().pus.len(), 1, "an empty description is one PU");
            } else {
                assert!(matches!(r, Err(Error::Topology(_))), "{bad:?} was accepted");
            }
        }
    }

    #[test]
    fn restrict_keeps_only_the_cpuset() {
        let m = Machine::synthetic("package:2 core:4 pu:2").unwrap();
        let r = m.restrict(&[8, 9, 10]);
        assert_eq!((r.pus.len(), r.cores(), r.packages()), (3, 2, 1));
        assert!(!r.is_whole());
        assert_eq!(r.machine_pus, 16);
    }

    #[test]
    fn tree_prints_every_level_once() {
        let m = Machine::synthetic("package:2 l3:1 core:2 pu:2").unwrap();
        let tree = m.tree();
        assert_eq!(tree.matches("Package").count(), 2, "{tree}");
        assert_eq!(tree.matches("L3#").count(), 2, "{tree}");
        assert_eq!(tree.matches("Core").count(), 4, "{tree}");
        assert_eq!(tree.matches("PU P#").count(), 8, "{tree}");
    }

    /// The hwloc reader and the synthetic builder agree on what each
    /// description means (so placement tests on synthetic machines say what
    /// happens on the real ones hwloc reads).
    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_reads_synthetic_topologies_as_machine_synthetic_builds_them() {
        for d in [
            "package:1 core:2 pu:1",
            "package:2 core:4 pu:2",
            "package:2 l3:1 l2:2 core:2 pu:2",
            "package:1 numa:2 core:4 pu:1",
        ] {
            let ours = Machine::synthetic(d).unwrap();
            let theirs = hwloc::synthetic(d).unwrap_or_else(|e| panic!("{d}: {e}"));
            assert_eq!(ours.pus, theirs.pus, "{d}");
            let shape = |m: &Machine| -> Vec<(String, usize, Vec<usize>)> {
                m.caches
                    .iter()
                    .map(|c| (c.name.clone(), c.index, c.pus.clone()))
                    .collect()
            };
            assert_eq!(shape(&ours), shape(&theirs), "{d}");
        }
    }

    #[test]
    fn binding_is_verified_only_when_the_os_agrees() {
        let b = |planned, cpuset: Vec<usize>, last_cpu, error: Option<&str>| Binding {
            planned,
            cpuset,
            last_cpu,
            error: error.map(String::from),
        };
        assert!(b(Some(1), vec![1], Some(1), None).verified());
        assert!(!b(Some(1), vec![0, 1], Some(1), None).verified());
        assert!(!b(Some(1), vec![1], Some(0), None).verified());
        assert!(!b(Some(1), vec![1], Some(1), Some("EPERM")).verified());
        assert!(b(None, vec![0, 1], Some(0), None).verified());
    }

    #[test]
    fn pinning_to_a_cpu_that_does_not_exist_fails_softly() {
        let b = std::thread::spawn(|| pin_current(Some(4095)))
            .join()
            .unwrap();
        assert!(b.error.is_some(), "{b:?}");
        assert!(!b.verified());
        assert_eq!(b.pinned(), None);
        assert!(!b.cpuset.is_empty(), "the thread can still run somewhere");
    }

    #[test]
    fn the_real_machine_is_detected_and_a_thread_pins_to_each_of_its_pus() {
        let m = Machine::detect().expect("topology of this machine");
        assert!(!m.pus.is_empty());
        for pu in m.pus.iter().map(|p| p.os) {
            let b = std::thread::spawn(move || pin_current(Some(pu)))
                .join()
                .unwrap();
            assert!(b.verified(), "pinned to {pu}, read back {b:?}");
        }
    }
}
