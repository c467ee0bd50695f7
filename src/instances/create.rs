//! Launching an instance: checks that refuse before anything is made, then the
//! provisioning pipeline in the background, undone as a whole if a step fails.

mod launch_steps;
#[cfg(test)]
mod launch_tests;
mod provision;
mod start_gate;

pub(crate) use provision::{Boot, RESERVATION_PATIENCE};
pub(crate) use start_gate::StartGate;

use std::time::Duration;

use super::state::{Event, Status};
use tokio::sync::OwnedMutexGuard;

use super::types::InstanceType;
use super::{Inner, Instance, Instances, LaunchRequest, Ticket, types};
use crate::db::instances::{self as rows, InstanceRow};
use crate::db::timestamp_now;
use crate::error::{AppError, InstanceError};
use crate::health::LaunchVerdict;
use crate::ids::InstanceId;
use crate::images::Image;
pub(super) use launch_steps::LaunchSteps;

pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
pub const MAX_NAME_CHARS: usize = 255;
/// How long a failed launch keeps trying to record its failure (the disk may be full).
const RECORD_RETRY_FOR: Duration = Duration::from_secs(600);

/// A recorded launch: its row, the ownership its build holds from the first step, and
/// whether it took a warm spare (its domain waits, paused, for its seed).
pub(super) type Recorded = (InstanceRow, (Ticket, OwnedMutexGuard<()>), bool);

impl Instances {
    /// Validates and records a launch, answers with the `pending` instance, and builds
    /// it in the background (REQ-INST-001, 003..007).
    pub async fn launch(&self, req: LaunchRequest) -> Result<Instance, AppError> {
        let mut reservation = self.run(super::run::RunRequest::one(req)).await?;
        Ok(reservation.instances.remove(0))
    }

    /// Refuses now, with 503 or 409, rather than accept and fail in the background.
    /// Returns the memory available (MiB) for the check made when the launch is recorded.
    pub(super) async fn check_host(&self, instance_type: &InstanceType) -> Result<u64, AppError> {
        let inner = self.inner();
        inner.check_libvirt_side().await?;
        inner.check_data_dir().await?;
        let available_memory_mib = self.check_capacity(instance_type.disk_gib).await?;
        if inner.deps.iso_tool.is_none() {
            return Err(InstanceError::NoSeedTool.into());
        }
        Ok(available_memory_mib)
    }

    /// One transaction checks memory against the launches in flight, picks an unused
    /// ID and a free address, and records them: concurrent launches are serialised there.
    pub(super) async fn record(
        &self,
        row: InstanceRow,
        available_memory_mib: u64,
        tags: Vec<(String, String)>,
    ) -> Result<Recorded, AppError> {
        let inner = self.inner();
        let warm = inner.config.warm_spares > 0;
        let mut evicted = false;
        loop {
            let recorded = self.record_once(row.clone(), available_memory_mib, tags.clone(), warm).await?;
            match recorded {
                Ok(recorded) => {
                    if warm {
                        inner.spares.launched(&recorded.0.image_id, &recorded.0.instance_type);
                    }
                    return Ok(recorded);
                }
                Err(rows::LaunchRefusal::Memory(message)) => {
                    return Err(InstanceError::InsufficientMemory(message).into());
                }
                // Warm spares never cost a launch its address: one is given up for it.
                Err(rows::LaunchRefusal::NoAddress) if warm && !evicted && inner.discard_a_spare().await => {
                    evicted = true;
                }
                Err(rows::LaunchRefusal::NoAddress) => return Err(self.pool_exhausted()),
            }
        }
    }

    /// One try at recording a launch (`record`).
    async fn record_once(
        &self,
        row: InstanceRow,
        available_memory_mib: u64,
        tags: Vec<(String, String)>,
        warm: bool,
    ) -> Result<Result<Recorded, rows::LaunchRefusal>, AppError> {
        let inner = self.inner();
        let min_available_memory_mib = inner.config.limits.min_available_memory_mib;
        let network = inner.deps.network.clone();
        let owner = inner.clone();
        let recorded = inner
            .deps
            .db
            .call(move |conn| {
                rows::record_launch(
                    conn,
                    row,
                    |launching_mib| {
                        check_memory(available_memory_mib, launching_mib, min_available_memory_mib)
                            .map_err(|e| e.to_string())
                    },
                    InstanceId::random_with_mac,
                    |taken| network.first_free_address(taken),
                    &tags,
                    warm,
                    // Owned before the row exists: the recovery pass never sees this launch
                    // without its owner, and the build holds the lock from its first step.
                    |id| {
                        let ticket = owner.ticket(id);
                        let guard = owner.lock(id).try_lock_owned().expect("a new instance's lock is free");
                        (ticket, guard)
                    },
                )
            })
            .await?;
        Ok(recorded)
    }

    fn pool_exhausted(&self) -> AppError {
        let config = self.inner().deps.network.config();
        InstanceError::AddressPoolExhausted(format!(
            "all {} addresses of network {} are in use; terminate an instance first",
            config.dhcp_size(),
            config.name
        ))
        .into()
    }

    /// Builds the recorded instance; a failure undoes the build and says why on the row.
    pub(super) fn build_in_background(
        &self,
        row: InstanceRow,
        image: Image,
        (ticket, guard): (Ticket, OwnedMutexGuard<()>),
        from_spare: bool,
        steps: LaunchSteps,
    ) {
        let inner = self.inner().clone();
        tokio::spawn(async move {
            let _guard = guard;
            let built = if from_spare {
                inner.hand_over_spare(&row, &steps).await.map(|()| false)
            } else {
                inner.provision(&row, &image, &steps, Boot::Now).await
            };
            match built {
                Ok(reserve_later) => {
                    let finish = inner.transition(&row.id, Status::LAUNCHING, Event::Finished, None);
                    let finished = steps.time(&row.id, "finish", finish).await;
                    steps.log_summary(&row.id, "running");
                    match finished {
                        Ok(Some(_)) => {
                            tracing::info!(instance = %row.id, "running");
                            // The launch is over: the monitor may apply what libvirt says of
                            // the guest from now on. The reservation is made still under the
                            // instance's lock, so an action taken meanwhile waits for it.
                            ticket.done();
                            if reserve_later {
                                inner.reserve_late(&row, &steps).await;
                            }
                            // A spare was defined before its name was known.
                            if from_spare && !row.name.is_empty() {
                                let titled = inner.deps.virsh.set_title(&row.id, &row.name).await;
                                if let Err(e) = titled {
                                    tracing::warn!(instance = %row.id, error = %e, "could not set the domain's title");
                                }
                            }
                        }
                        // Terminated while it was being built: the terminate runs next.
                        Ok(None) => ticket.done(),
                        // The ticket, dropped undone, asks for a recovery pass.
                        Err(e) => {
                            tracing::error!(instance = %row.id, error = %e, "could not record the launch");
                        }
                    }
                }
                Err(err) => {
                    steps.log_summary(&row.id, "failed");
                    tracing::error!(instance = %row.id, error = %err, "launch failed; undoing");
                    if matches!(err, AppError::LibvirtUnavailable(_)) {
                        inner.want_recovery();
                    }
                    inner.fail_launch(&row, &err.to_string()).await;
                    ticket.done();
                }
            }
        });
    }

    /// REQ-LIM-002: enough disk on the host for one more instance. Returns the memory
    /// available now (MiB), checked against REQ-LIM-001 when the launch is recorded.
    pub(super) async fn check_capacity(&self, disk_gib: u64) -> Result<u64, AppError> {
        let limits = self.inner().config.limits;
        let root = self.inner().deps.paths.root().to_path_buf();
        let host = tokio::task::spawn_blocking(move || crate::host::read(&root)).await.expect("host read");
        const MIB: u64 = 1024 * 1024;
        const GIB: u64 = 1024 * MIB;
        let needed = (disk_gib + limits.disk_headroom_gib) * GIB;
        if host.disk_available_bytes <= needed {
            return Err(InstanceError::InsufficientDisk(format!(
                "the data directory's disk has {:.1} GiB free; this instance needs more than {} GiB ({} GiB disk + {} GiB headroom)",
                host.disk_available_bytes as f64 / GIB as f64,
                disk_gib + limits.disk_headroom_gib,
                disk_gib,
                limits.disk_headroom_gib
            ))
            .into());
        }
        Ok(host.memory_available_bytes / MIB)
    }
}

/// The checks of the request itself: a known type, a printable name, user data in size.
pub fn validate(req: &LaunchRequest) -> Result<InstanceType, AppError> {
    let instance_type = types::find(&req.instance_type).ok_or_else(|| {
        let known: Vec<&str> = types::INSTANCE_TYPES.iter().map(|t| t.name).collect();
        InstanceError::InvalidInstanceType(format!(
            "unknown instance type {:?}; one of {}",
            req.instance_type,
            known.join(", ")
        ))
    })?;
    let name = req.name.as_deref().unwrap_or_default();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(InstanceError::InvalidParameter(
            "the name must be at most 255 characters, without control characters".into(),
        )
        .into());
    }
    if let Some(user_data) = &req.user_data
        && user_data.len() > MAX_USER_DATA_BYTES
    {
        return Err(InstanceError::InvalidUserData(format!(
            "user data is {} bytes; the limit is 16 KiB",
            user_data.len()
        ))
        .into());
    }
    Ok(instance_type)
}

/// The row of a launch being accepted; its id, MAC and address are picked when it is recorded.
pub(super) fn new_row(
    req: LaunchRequest,
    instance_type: &InstanceType,
    image: &Image,
    public_key: Option<String>,
) -> InstanceRow {
    InstanceRow {
        id: String::new(),
        name: req.name.unwrap_or_default(),
        instance_type: instance_type.name.into(),
        vcpus: instance_type.vcpus,
        memory_mib: instance_type.memory_mib as i64,
        disk_gib: instance_type.disk_gib as i64,
        image_id: image.row.id.clone(),
        image_name: image.row.name.clone(),
        login_user: image.row.default_user.clone(),
        key_name: req.key_name,
        public_key,
        user_data: req.user_data,
        state: Status::LAUNCHING.state.as_str().into(),
        task: Status::LAUNCHING.task.map(|t| t.as_str().to_string()),
        state_reason: None,
        mac_address: String::new(),
        reserved_ip: None,
        ip_address: None,
        created_at: timestamp_now(),
        launched_at: None,
        terminated_at: None,
        reservation_id: None,
        disable_api_termination: false,
        disable_api_stop: false,
        reachable_at: None,
        host_public_keys: Vec::new(),
        host_key: None,
    }
}

/// REQ-LIM-001: refuses a launch when the host's available memory, less what instances
/// still launching will take (their QEMU has not allocated it yet), is under the limit.
pub fn check_memory(available_mib: u64, launching_mib: u64, min_available_mib: u64) -> Result<(), AppError> {
    let uncommitted = available_mib.saturating_sub(launching_mib);
    if uncommitted >= min_available_mib {
        return Ok(());
    }
    let launching = if launching_mib > 0 {
        format!(" ({available_mib} MiB, less {launching_mib} MiB for instances still launching)")
    } else {
        String::new()
    };
    Err(InstanceError::InsufficientMemory(format!(
        "the host has {uncommitted} MiB of memory available{launching}; new instances need at least {min_available_mib} MiB free"
    ))
    .into())
}

impl Inner {
    /// libvirt answers and the network takes instances. The health snapshot the service
    /// keeps says so without a child process while it is fresh and good; one that says
    /// libvirt is down, or the network conflicts or cannot work, refuses at once (503).
    /// libvirt is asked, as before, when the snapshot is old, when a libvirt call has
    /// found it unreachable since, or when the network is only stopped (`check_usable`
    /// starts it, rather than refusing what the service can fix).
    async fn check_libvirt_side(&self) -> Result<(), AppError> {
        let verdict = match self.deps.health.get() {
            Some(snapshot) => snapshot.for_launch(self.config.health_max_age, self.deps.virsh.unreachable_count()),
            None => LaunchVerdict::Ask,
        };
        match verdict {
            LaunchVerdict::Ready => Ok(()),
            LaunchVerdict::Refuse(refusal) => Err(refusal),
            LaunchVerdict::Ask => {
                self.deps.virsh.version().await?;
                self.deps.network.check_usable().await
            }
        }
    }

    /// REQ-INST-007: the half-made instance is removed and the row says why it failed.
    /// When the cleanup cannot finish (libvirt is down), the row says what is left and
    /// waits in `error` (cleaning-up) for the recovery pass to finish it.
    pub(crate) async fn fail_launch(&self, row: &InstanceRow, reason: &str) {
        let mut outcome = self.remove_resources(row).await;
        // Give a libvirt that hiccupped a moment before leaving the cleanup for later.
        for attempt in 1..3 {
            let Err(left) = &outcome else { break };
            if matches!(left.cause, AppError::LibvirtUnavailable(_)) {
                break;
            }
            tracing::warn!(instance = %row.id, attempt, error = %left, "cleaning up a failed launch");
            tokio::time::sleep(Duration::from_secs(2)).await;
            outcome = self.remove_resources(row).await;
        }
        let (event, reason, release) = match outcome {
            Ok(()) => (Event::Settled(super::state::State::Error), format!("launch failed: {reason}"), true),
            Err(left) => {
                tracing::error!(instance = %row.id, error = %left, "a failed launch could not be cleaned up yet");
                let reason =
                    format!("launch failed: {reason}; {left}; removed when libvirt answers again, or terminate it");
                (Event::CleanupPending, reason, left.reservation_released)
            }
        };
        // The database may be what failed (a full disk): keep trying while this task
        // still owns the instance, so the row ends with the real reason.
        let deadline = std::time::Instant::now() + RECORD_RETRY_FOR;
        loop {
            match self.transition_releasing(&row.id, Status::LAUNCHING, event, Some(reason.clone()), release).await {
                Ok(_) => return,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(instance = %row.id, error = %e, "could not record the failed launch yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    tracing::error!(instance = %row.id, error = %e, "could not record the failed launch");
                    self.want_recovery();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-LIM-001
    #[test]
    fn memory_promised_to_launching_instances_is_not_available() {
        assert!(check_memory(4096, 0, 4096).is_ok());
        let Err(AppError::Instance(InstanceError::InsufficientMemory(message))) = check_memory(4095, 0, 4096) else {
            panic!("accepted")
        };
        assert_eq!(message, "the host has 4095 MiB of memory available; new instances need at least 4096 MiB free");
        // 12 GiB free, but an 8 GiB instance is still booting: 4 GiB is all that is left.
        assert!(check_memory(12288, 8192, 4096).is_ok());
        let Err(AppError::Instance(InstanceError::InsufficientMemory(message))) = check_memory(12288, 9216, 4096)
        else {
            panic!("accepted")
        };
        assert!(
            message.contains("3072 MiB of memory available (12288 MiB, less 9216 MiB for instances still launching)")
        );
        assert!(check_memory(1024, 8192, 4096).is_err(), "no underflow");
    }
}
