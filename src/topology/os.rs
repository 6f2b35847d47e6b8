//! The fallback backend without hwloc: the CPUs the OS affinity call reports,
//! each taken as a core of its own in one package and one NUMA node, so the
//! placement policies work by core index.

use super::{Machine, Pu};

/// CPUs a `cpu_set_t` holds (glibc's `CPU_SETSIZE`).
const CPU_SETSIZE: usize = 1024;

/// The CPUs the calling thread may run on (`core_affinity` reads the calling
/// thread's own mask: call this before pinning it).
pub(super) fn detect() -> Result<Machine, String> {
    let ids = core_affinity::get_core_ids()
        .ok_or("the OS affinity call could not list this process's CPUs")?;
    let online = std::thread::available_parallelism().map_or(ids.len(), |n| n.get());
    Ok(Machine {
        source: "os affinity (built without the hwloc feature)".into(),
        pus: ids
            .iter()
            .enumerate()
            .map(|(i, c)| Pu {
                os: c.id,
                core: i,
                package: 0,
                numa: 0,
            })
            .collect(),
        machine_pus: online_cpus().unwrap_or(online).max(ids.len()),
        caches: Vec::new(),
    })
}

/// Number of online CPUs from `/sys/devices/system/cpu/online` (`0-3,6`).
fn online_cpus() -> Option<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    list.trim().split(',').try_fold(0, |n, part| {
        Some(
            n + match part.split_once('-') {
                Some((a, b)) => b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
                None => 1,
            },
        )
    })
}

/// Pins the calling thread to CPU `pu`.
pub(super) fn bind_current(pu: usize) -> Result<(), String> {
    // libc's CPU_SET panics past its fixed-size set (and the panic cannot unwind).
    if pu >= CPU_SETSIZE {
        return Err(format!(
            "CPU {pu} is past the {CPU_SETSIZE} CPUs the OS affinity call can name"
        ));
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: pu }) {
        Ok(())
    } else {
        Err(format!("the OS refused to pin to CPU {pu}"))
    }
}

/// The calling thread's cpuset and the CPU it last ran on.
pub(super) fn read_binding() -> (Vec<usize>, Option<usize>) {
    let cpuset = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    (cpuset, last_cpu_from_proc())
}

/// The CPU the calling thread last ran on, from `/proc/thread-self/stat`
/// (field 39), for backends without a call of their own.
fn last_cpu_from_proc() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}
