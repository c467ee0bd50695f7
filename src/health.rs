//! Libvirt connectivity and the state of what ec2local needs from it (REQ-REL-002).

use crate::error::AppError;
use crate::exec::virsh::Virsh;
use crate::network::{NetworkManager, NetworkStatus};
use crate::platform::{Accelerator, AcceleratorProbe};
use crate::qemu_access::AccessProblem;
use crate::storage::{PoolStatus, StoragePool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtStatus {
    pub uri: String,
    pub reachable: bool,
    pub library_version: Option<String>,
    pub hypervisor_version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub libvirt: LibvirtStatus,
    pub network: Option<NetworkStatus>,
    pub storage_pool: Option<PoolStatus>,
    pub accelerator: Accelerator,
    pub accelerator_probe: AcceleratorProbe,
    /// Why libvirt's QEMU user cannot reach the data dir, if it cannot.
    pub data_dir_problem: Option<AccessProblem>,
}

impl HealthReport {
    /// Healthy: libvirt answers, the network and pool are active without conflict, and
    /// QEMU can reach the data dir.
    pub fn is_healthy(&self) -> bool {
        self.data_dir_problem.is_none()
            && self.libvirt.reachable
            && self.network.as_ref().is_some_and(|n| n.active && n.conflict.is_none() && n.problem.is_none())
            && self.storage_pool.as_ref().is_some_and(|p| p.active && p.conflict.is_none())
    }
}

pub async fn check(
    virsh: &Virsh,
    network: &NetworkManager,
    pool: &StoragePool,
    accelerator: Accelerator,
    accelerator_probe: AcceleratorProbe,
) -> HealthReport {
    let mut libvirt = LibvirtStatus {
        uri: virsh.uri().to_string(),
        reachable: false,
        library_version: None,
        hypervisor_version: None,
        error: None,
    };
    let (mut network_status, mut pool_status) = (None, None);
    match virsh.version().await {
        Ok(version) => {
            libvirt.reachable = true;
            libvirt.library_version = version.library;
            libvirt.hypervisor_version = version.hypervisor;
            let (net, pool) = tokio::join!(network.status(), pool.status());
            network_status = keep_or_note(net, &mut libvirt);
            pool_status = keep_or_note(pool, &mut libvirt);
        }
        Err(err) => libvirt.error = Some(AppError::from(err).to_string()),
    }
    HealthReport {
        libvirt,
        network: network_status,
        storage_pool: pool_status,
        accelerator,
        accelerator_probe,
        data_dir_problem: None,
    }
}

fn keep_or_note<T>(result: Result<T, AppError>, libvirt: &mut LibvirtStatus) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            if matches!(err, AppError::LibvirtUnavailable(_)) {
                libvirt.reachable = false;
            }
            libvirt.error.get_or_insert_with(|| err.to_string());
            None
        }
    }
}
