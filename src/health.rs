//! Libvirt connectivity and the state of what ec2local needs from it (REQ-REL-002),
//! and the last snapshot of it that the service keeps (`Latest`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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

/// A health report and when it was taken.
#[derive(Debug)]
pub struct HealthSnapshot {
    pub report: HealthReport,
    pub checked_at: chrono::DateTime<chrono::Utc>,
    taken: Instant,
    /// `Virsh::unreachable_count` when the probe began: a call that found libvirt
    /// unreachable after it means the report may no longer hold.
    unreachable_before: u64,
}

/// What a launch may conclude from the snapshot without asking libvirt.
#[derive(Debug)]
pub enum LaunchVerdict {
    /// libvirt answered and the network takes instances: go on.
    Ready,
    /// libvirt or the network is down in a way the service cannot fix: refuse now.
    Refuse(AppError),
    /// Too old, or libvirt failed a call since, or the network is only stopped (which
    /// the live check starts): ask libvirt.
    Ask,
}

impl HealthSnapshot {
    /// A report whose probe began when `virsh.unreachable_count()` was `unreachable_before`.
    pub fn new(report: HealthReport, unreachable_before: u64) -> Self {
        Self { report, checked_at: chrono::Utc::now(), taken: Instant::now(), unreachable_before }
    }

    pub fn age(&self) -> Duration {
        self.taken.elapsed()
    }

    /// The verdict for a launch, from a snapshot no older than `max_age` and the
    /// unreachable count now.
    pub fn for_launch(&self, max_age: Duration, unreachable_now: u64) -> LaunchVerdict {
        if self.age() > max_age {
            return LaunchVerdict::Ask;
        }
        let libvirt = &self.report.libvirt;
        if !libvirt.reachable {
            let why = libvirt.error.clone().unwrap_or_else(|| format!("libvirt at {} is unreachable", libvirt.uri));
            return LaunchVerdict::Refuse(AppError::LibvirtUnavailable(why));
        }
        if unreachable_now != self.unreachable_before {
            return LaunchVerdict::Ask;
        }
        match &self.report.network {
            Some(network) if network.conflict.is_some() || network.problem.is_some() => {
                LaunchVerdict::Refuse(network.refusal().expect("a conflict or problem refuses"))
            }
            Some(network) if network.active => LaunchVerdict::Ready,
            _ => LaunchVerdict::Ask,
        }
    }
}

/// The last snapshot, shared by the loop that takes it and whoever answers from it.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    slot: Arc<RwLock<Option<Arc<HealthSnapshot>>>>,
}

impl Latest {
    pub fn get(&self) -> Option<Arc<HealthSnapshot>> {
        self.slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, snapshot: Arc<HealthSnapshot>) {
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }
}
