//! The hwloc backend (hwlocality): the topology tree, binding and read-back.
//!
//! The topology is loaded once per process (hwloc's discovery takes
//! milliseconds) and shared: hwlocality's `Topology` is `Send + Sync`, and the
//! binding calls only read it.

use std::sync::OnceLock;

use hwlocality::bitmap::BitmapIndex;
use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology;

use super::{Cache, Machine, Pu};

fn topology() -> Result<&'static Topology, String> {
    static TOPOLOGY: OnceLock<Result<Topology, String>> = OnceLock::new();
    TOPOLOGY
        .get_or_init(|| {
            Topology::new().map_err(|e| format!("hwloc could not load the topology: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// This machine, restricted to the calling thread's binding.
pub(super) fn detect() -> Result<Machine, String> {
    let topology = topology()?;
    if !topology.is_this_system() {
        return Err(
            "hwloc's topology does not describe this machine (HWLOC_XMLFILE or \
                    HWLOC_SYNTHETIC is set; add HWLOC_THISSYSTEM=1 if it does)"
                .into(),
        );
    }
    let mut machine = machine(topology, "hwloc");
    let allowed = topology
        .cpu_binding(CpuBindingFlags::THREAD)
        .map_err(|e| format!("hwloc could not read this thread's binding: {e}"))?;
    let allowed: Vec<usize> = allowed.iter_set().map(usize::from).collect();
    if allowed.len() < machine.pus.len() {
        machine = machine.restrict(&allowed);
    }
    Ok(machine)
}

/// A machine from an hwloc synthetic description, read through hwloc (to check
/// [`Machine::synthetic`] against it).
#[cfg(test)]
pub(super) fn synthetic(description: &str) -> Result<Machine, String> {
    let topology = Topology::builder()
        .from_synthetic(description)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    Ok(machine(&topology, &format!("synthetic {description:?}")))
}

fn machine(topology: &Topology, source: &str) -> Machine {
    let numa: Vec<&TopologyObject> = topology.objects_with_type(ObjectType::NUMANode).collect();
    let logical_ancestor = |pu: &TopologyObject, ty| {
        pu.first_ancestor_with_type(ty)
            .map(TopologyObject::logical_index)
    };
    let pus: Vec<Pu> = topology
        .objects_with_type(ObjectType::PU)
        .filter_map(|pu| {
            let os = pu.os_index()?;
            Some(Pu {
                os,
                core: logical_ancestor(pu, ObjectType::Core).unwrap_or(pu.logical_index()),
                package: logical_ancestor(pu, ObjectType::Package).unwrap_or(0),
                numa: numa
                    .iter()
                    .position(|n| n.cpuset().is_some_and(|c| c.is_set(index(os))))
                    .unwrap_or(0),
            })
        })
        .collect();
    let levels = [
        (ObjectType::L1Cache, 1),
        (ObjectType::L2Cache, 2),
        (ObjectType::L3Cache, 3),
        (ObjectType::L4Cache, 4),
        (ObjectType::L5Cache, 5),
    ];
    let mut caches = Vec::new();
    for (ty, level) in levels {
        for cache in topology.objects_with_type(ty) {
            let size = match cache.attributes() {
                Some(ObjectAttributes::Cache(a)) => a.size().map(|s| s.get()),
                _ => None,
            };
            let covered: Vec<usize> = pus
                .iter()
                .map(|p| p.os)
                .filter(|&os| cache.cpuset().is_some_and(|c| c.is_set(index(os))))
                .collect();
            caches.push(Cache {
                name: if level == 1 {
                    "L1d".into()
                } else {
                    format!("L{level}")
                },
                level,
                index: cache.logical_index(),
                size,
                pus: covered,
            });
        }
    }
    let v = hwlocality::hwloc_api_version();
    Machine {
        source: format!("{source}, API {}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff),
        machine_pus: pus.len(),
        pus,
        caches,
    }
}

fn index(os: usize) -> BitmapIndex {
    BitmapIndex::try_from(os).unwrap_or(BitmapIndex::MAX)
}

/// Binds the calling thread to PU `pu`.
pub(super) fn bind_current(pu: usize) -> Result<(), String> {
    let topology = topology()?;
    let set = CpuSet::from(index(pu));
    topology
        .bind_cpu(&set, CpuBindingFlags::THREAD | CpuBindingFlags::STRICT)
        .map_err(|e| format!("hwloc could not bind to PU {pu}: {e}"))
}

/// The calling thread's cpuset and the CPU it last ran on.
pub(super) fn read_binding() -> (Vec<usize>, Option<usize>) {
    let Ok(topology) = topology() else {
        return (Vec::new(), None);
    };
    let cpuset = topology
        .cpu_binding(CpuBindingFlags::THREAD)
        .map(|s| s.iter_set().map(usize::from).collect())
        .unwrap_or_default();
    let last = topology
        .last_cpu_location(CpuBindingFlags::THREAD)
        .ok()
        .and_then(|s| s.first_set())
        .map(usize::from);
    (cpuset, last)
}
