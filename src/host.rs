//! Host resources (REQ-LIM-003): memory of the machine and disk of the data dir.

use std::path::Path;

use sysinfo::{Disks, MemoryRefreshKind, RefreshKind, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_available_bytes: u64,
    pub cpu_count: usize,
}

/// Reads memory, and the file system that holds `data_dir` as the kernel reports it
/// for that very path (statvfs): sysinfo's disk list leaves out tmpfs and other
/// virtual file systems, which would make a full data dir look like the root disk.
pub fn read(data_dir: &Path) -> HostResources {
    let system =
        System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram())).ok();
    let (disk_total_bytes, disk_available_bytes) = disk_space(data_dir);
    HostResources {
        memory_total_bytes: system.as_ref().map_or(0, |s| s.total_memory()),
        memory_used_bytes: system.as_ref().map_or(0, |s| s.used_memory()),
        memory_available_bytes: system.as_ref().map_or(0, |s| s.available_memory()),
        disk_total_bytes,
        disk_available_bytes,
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// What the host offers for acceleration (REQ: KVM, HVF), read once at start.
pub async fn probe_accelerators(host: crate::platform::Host) -> crate::platform::AcceleratorProbe {
    use crate::platform::{AcceleratorProbe, Os};
    match host.os {
        Os::Linux => AcceleratorProbe::read_linux(),
        Os::MacOs => {
            let cmd = crate::exec::ToolCommand::new("sysctl", std::time::Duration::from_secs(5))
                .args(["-n", "kern.hv_support"]);
            let output = crate::exec::run(cmd).await.map(|out| out.stdout).unwrap_or_default();
            AcceleratorProbe::from_hv_support(&output)
        }
    }
}

/// (total, available) bytes of the file system that holds `path`.
pub fn disk_space(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(fs) => (fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize),
        Err(_) => mount_of(path),
    }
}

/// (total, available) of the listed disk with the longest mount point above `data_dir`,
/// when the path itself cannot be asked (it does not exist yet).
fn mount_of(data_dir: &Path) -> (u64, u64) {
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let disks = Disks::new_with_refreshed_list().ok();
    let disk = disks
        .iter()
        .flat_map(|d| d.iter())
        .filter(|d| data_dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    (disk.map_or(0, |d| d.total_space()), disk.map_or(0, |d| d.available_space()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-LIM-003
    #[test]
    fn reads_plausible_figures_for_this_host() {
        let tmp = tempfile::tempdir().unwrap();
        let r = read(tmp.path());
        assert!(r.memory_total_bytes > 0);
        assert!(r.memory_used_bytes <= r.memory_total_bytes);
        assert!(r.memory_available_bytes <= r.memory_total_bytes);
        assert!(r.disk_total_bytes > 0, "no disk found for {}", tmp.path().display());
        assert!(r.disk_available_bytes <= r.disk_total_bytes);
        assert!(r.cpu_count >= 1);
    }
}
