//! Launching an instance: checks that refuse before anything is made, then the
//! provisioning pipeline in the background, undone as a whole if a step fails.

use std::time::Duration;

use super::state::State;
use super::{Inner, Instance, Instances, LaunchRequest, types};
use crate::db::instances::{self as rows, InstanceRow};
use crate::db::timestamp_now;
use crate::error::AppError;
use crate::exec::iso;
use crate::ids::InstanceId;
use crate::images::Image;
use crate::render::{self, DomainSpec, cloud_init};

pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
pub const MAX_NAME_CHARS: usize = 255;

fn bad(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::InvalidInput { code, message: message.into() }
}

impl Instances {
    /// Validates and records a launch, answers with the `pending` instance, and builds
    /// it in the background (REQ-INST-001, 003..007).
    pub async fn launch(&self, req: LaunchRequest) -> Result<Instance, AppError> {
        let inner = self.inner();
        let instance_type = types::find(&req.instance_type).ok_or_else(|| {
            let known: Vec<&str> = types::INSTANCE_TYPES.iter().map(|t| t.name).collect();
            bad(
                "InvalidInstanceType",
                format!("unknown instance type {:?}; one of {}", req.instance_type, known.join(", ")),
            )
        })?;
        let name = req.name.clone().unwrap_or_default();
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(bad(
                "InvalidParameterValue",
                "the name must be at most 255 characters, without control characters",
            ));
        }
        if let Some(user_data) = &req.user_data
            && user_data.len() > MAX_USER_DATA_BYTES
        {
            return Err(bad(
                "InvalidUserData.Malformed",
                format!("user data is {} bytes; the limit is 16 KiB", user_data.len()),
            ));
        }
        let public_key = match &req.key_name {
            Some(key_name) => Some(inner.key_pairs.get(key_name).await?.public_key),
            None => None,
        };
        let image = inner.images.resolve_for_launch(&req.image).await?;
        // Refuse now, with 503, rather than accept and fail in the background.
        inner.virsh.version().await?;
        inner.network.check_usable().await?;
        let available_memory_mib = self.check_capacity(instance_type.disk_gib).await?;
        let min_available_memory_mib = inner.config.limits.min_available_memory_mib;
        if inner.iso_tool.is_none() {
            return Err(AppError::Internal("no ISO tool to build the cloud-init seed; run `ec2local doctor`".into()));
        }

        let network = inner.network.clone();
        let mut row = InstanceRow {
            id: String::new(),
            name,
            instance_type: instance_type.name.into(),
            vcpus: instance_type.vcpus,
            memory_mib: instance_type.memory_mib as i64,
            disk_gib: instance_type.disk_gib as i64,
            image_id: image.row.id.clone(),
            image_name: image.row.name.clone(),
            login_user: image.row.default_user.clone(),
            key_name: req.key_name.clone(),
            public_key,
            user_data: req.user_data.clone(),
            state: State::Pending.as_str().into(),
            state_reason: None,
            mac_address: String::new(),
            reserved_ip: None,
            ip_address: None,
            created_at: timestamp_now(),
            launched_at: None,
            terminated_at: None,
        };
        // One transaction checks memory against the launches in flight, picks an unused
        // ID and a free address, and records them: concurrent launches are serialised here.
        let row = inner
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let launching_mib = rows::launching_memory_mib(&tx)?;
                if let Err(refused) = check_memory(available_memory_mib, launching_mib, min_available_memory_mib) {
                    return Ok(Err(refused));
                }
                let id = loop {
                    let id = InstanceId::random();
                    if !rows::id_exists(&tx, &id.to_string())? {
                        break id;
                    }
                };
                let taken = rows::reserved_ips(&tx)?;
                let Some(ip) = network.first_free_address(&taken) else {
                    return Ok(Err(AppError::Conflict {
                        code: "AddressPoolExhausted",
                        message: format!(
                            "all {} addresses of network {} are in use; terminate an instance first",
                            network.config().dhcp_size(),
                            network.config().name
                        ),
                    }));
                };
                row.id = id.to_string();
                row.mac_address = id.mac_address();
                row.reserved_ip = Some(ip.to_string());
                rows::insert(&tx, &row)?;
                tx.commit()?;
                Ok(Ok(row))
            })
            .await??;
        tracing::info!(instance = %row.id, instance_type = %row.instance_type, image = %row.image_name, "launch accepted");
        let inner = inner.clone();
        let created = Instance::from_row(row.clone());
        tokio::spawn(async move {
            let lock = inner.lock(&row.id);
            let _guard = lock.lock().await;
            if let Err(err) = inner.provision(&row, &image).await {
                tracing::error!(instance = %row.id, error = %err, "launch failed; undoing");
                inner.fail_launch(&row, &err.to_string()).await;
            }
        });
        Ok(created)
    }

    /// REQ-LIM-002: enough disk on the host for one more instance. Returns the memory
    /// available now (MiB), checked against REQ-LIM-001 when the launch is recorded.
    async fn check_capacity(&self, disk_gib: u64) -> Result<u64, AppError> {
        let limits = self.inner().config.limits;
        let root = self.inner().paths.root().to_path_buf();
        let host = tokio::task::spawn_blocking(move || crate::host::read(&root)).await.expect("host read");
        const MIB: u64 = 1024 * 1024;
        const GIB: u64 = 1024 * MIB;
        let needed = (disk_gib + limits.disk_headroom_gib) * GIB;
        if host.disk_available_bytes <= needed {
            return Err(AppError::Conflict {
                code: "InsufficientDisk",
                message: format!(
                    "the data directory's disk has {:.1} GiB free; this instance needs more than {} GiB ({} GiB disk + {} GiB headroom)",
                    host.disk_available_bytes as f64 / GIB as f64,
                    disk_gib + limits.disk_headroom_gib,
                    disk_gib,
                    limits.disk_headroom_gib
                ),
            });
        }
        Ok(host.memory_available_bytes / MIB)
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
    Err(AppError::Conflict {
        code: "InsufficientMemory",
        message: format!(
            "the host has {uncommitted} MiB of memory available{launching}; new instances need at least {min_available_mib} MiB free"
        ),
    })
}

impl Inner {
    /// Builds the disk, seed and domain, reserves the address, defines and starts.
    async fn provision(&self, row: &InstanceRow, image: &Image) -> Result<(), AppError> {
        let id: InstanceId =
            row.id.parse().map_err(|e: crate::ids::InvalidInstanceId| AppError::Internal(e.to_string()))?;
        self.paths.ensure_instance_dir(&id)?;
        let disk = self.paths.instance_disk(&id);
        self.qemu_img
            .create_overlay(
                std::path::Path::new(&image.row.file_path),
                &image.row.format,
                &disk,
                (row.disk_gib as u64) << 30,
            )
            .await?;

        let seed_dir = self.paths.instance_dir(&id).join("seed");
        std::fs::create_dir_all(&seed_dir)?;
        let seed = cloud_init::SeedSpec {
            instance_id: row.id.clone(),
            hostname: row.id.clone(),
            ssh_public_keys: row.public_key.iter().cloned().collect(),
            user_data: row.user_data.clone(),
        };
        for (file, content) in cloud_init::seed_files(&seed) {
            std::fs::write(seed_dir.join(file), content)?;
        }
        let tool = self.iso_tool.expect("checked at launch");
        iso::build_cidata(tool, &seed_dir, &self.paths.instance_cidata(&id), self.config.tool_timeout).await?;
        std::fs::remove_dir_all(&seed_dir)?;

        let spec = DomainSpec {
            name: row.id.clone(),
            title: if row.name.is_empty() { row.id.clone() } else { row.name.clone() },
            instance_type: row.instance_type.clone(),
            vcpus: row.vcpus,
            memory_mib: row.memory_mib as u64,
            mac_address: row.mac_address.clone(),
            network: self.network.config().name.clone(),
            disk_path: disk.display().to_string(),
            cidata_path: self.paths.instance_cidata(&id).display().to_string(),
            console_log_path: self.paths.instance_console_log(&id).display().to_string(),
            nvram_path: self.paths.instance_dir(&id).join("nvram.fd").display().to_string(),
            qemu_args: self.platform.network.qemu_nic_args(self.network.config(), &row.mac_address),
        };
        let xml_file = self.paths.instance_domain_xml(&id);
        std::fs::write(&xml_file, render::domain_xml(&spec, &self.platform)?)?;
        if let Some(host) = Self::dhcp_host(row) {
            self.network.reserve(&host).await?;
        }
        self.virsh.define(&xml_file).await?;
        self.virsh.start(&row.id).await?;
        let (key, at) = (row.id.clone(), timestamp_now());
        self.db.call(move |c| rows::set_launched(c, &key, &at)).await?;
        tracing::info!(instance = %row.id, "running");
        Ok(())
    }

    /// REQ-INST-007: the half-made instance is removed and the row says why it failed.
    pub(crate) async fn fail_launch(&self, row: &InstanceRow, reason: &str) {
        // Give a hung libvirt a moment rather than leave a domain behind.
        for attempt in 0..3 {
            match self.remove_resources(row).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(instance = %row.id, attempt, error = %e, "cleaning up a failed launch");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        let key = row.id.clone();
        let reason = format!("launch failed: {reason}");
        let stored = self
            .db
            .call(move |c| {
                rows::release_ip(c, &key)?;
                rows::set_state(c, &key, State::Error.as_str(), Some(&reason))
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(instance = %row.id, error = %e, "could not record the failed launch");
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
        let Err(AppError::Conflict { code, message }) = check_memory(4095, 0, 4096) else { panic!("accepted") };
        assert_eq!(code, "InsufficientMemory");
        assert_eq!(message, "the host has 4095 MiB of memory available; new instances need at least 4096 MiB free");
        // 12 GiB free, but an 8 GiB instance is still booting: 4 GiB is all that is left.
        assert!(check_memory(12288, 8192, 4096).is_ok());
        let Err(AppError::Conflict { message, .. }) = check_memory(12288, 9216, 4096) else { panic!("accepted") };
        assert!(
            message.contains("3072 MiB of memory available (12288 MiB, less 9216 MiB for instances still launching)")
        );
        assert!(check_memory(1024, 8192, 4096).is_err(), "no underflow");
    }
}
