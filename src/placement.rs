//! Where rank-threads run: the placement policy and the pinning seam.
//!
//! This is the OS-affinity fallback (`sched_setaffinity` through `core_affinity`),
//! placing by core index; topology-aware placement (hwloc) plugs in here.

use std::fmt;
use std::str::FromStr;

/// How rank-threads are pinned to the cores this process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Rank `i` on core `i` (mod the number of cores): neighbours share caches.
    #[default]
    Compact,
    /// Ranks spread evenly over the cores (rank `i` of `n` on core `i·cores/n`).
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

/// The cores this process may run on (read on the calling thread, before any
/// pinning: `core_affinity` reports the calling thread's own mask).
pub(crate) fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// The core for each of `ranks` ranks (`None` = unpinned).
pub(crate) fn plan(policy: Placement, ranks: usize, cores: &[usize]) -> Vec<Option<usize>> {
    let n = cores.len();
    (0..ranks)
        .map(|i| match policy {
            _ if n == 0 => None,
            Placement::None => None,
            Placement::Compact => Some(cores[i % n]),
            Placement::Scatter if ranks <= n => Some(cores[i * n / ranks]),
            Placement::Scatter => Some(cores[i % n]),
        })
        .collect()
}

/// Pins the calling thread to `core`; `false` if the OS refused.
pub(crate) fn pin_current(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_fills_in_order_and_wraps() {
        assert_eq!(
            plan(Placement::Compact, 5, &[0, 1, 2, 3]),
            vec![Some(0), Some(1), Some(2), Some(3), Some(0)]
        );
    }

    #[test]
    fn scatter_spreads_fewer_ranks_than_cores() {
        assert_eq!(
            plan(Placement::Scatter, 2, &[0, 1, 2, 3]),
            vec![Some(0), Some(2)]
        );
        assert_eq!(
            plan(Placement::Scatter, 3, &[4, 5]),
            vec![Some(4), Some(5), Some(4)]
        );
    }

    #[test]
    fn none_and_unknown_cores_leave_ranks_unpinned() {
        assert_eq!(plan(Placement::None, 2, &[0, 1]), vec![None, None]);
        assert_eq!(plan(Placement::Compact, 2, &[]), vec![None, None]);
    }
}
