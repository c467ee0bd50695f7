//! Instances (REQ-INST-*): the service façade. Creation runs in the background after
//! the request is accepted; actions on one instance are serialised by a per-instance
//! lock; a monitor keeps state and IP current (`monitor`).

pub mod create;
pub mod monitor;
pub mod state;
pub mod types;

mod actions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use state::State;

use crate::config::Limits;
use crate::db::Db;
use crate::db::instances::{self as rows, InstanceRow};
use crate::error::AppError;
use crate::exec::qemu_img::QemuImg;
use crate::exec::virsh::Virsh;
use crate::ids::InstanceId;
use crate::images::Images;
use crate::keypairs::KeyPairs;
use crate::network::NetworkManager;
use crate::paths::Paths;
use crate::platform::{GuestPlatform, IsoTool};
use crate::render::DhcpHost;

/// An instance as the service reports it (REQ-INST-014).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub state: State,
    pub state_reason: Option<String>,
    pub ip_address: Option<String>,
    pub mac_address: String,
    pub key_name: Option<String>,
    pub image_id: String,
    pub image_name: String,
    pub login_user: String,
    pub created_at: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
}

impl Instance {
    pub fn from_row(row: InstanceRow) -> Instance {
        Instance {
            state: row.state.parse().unwrap_or(State::Error),
            id: row.id,
            name: row.name,
            instance_type: row.instance_type,
            vcpus: row.vcpus,
            memory_mib: row.memory_mib,
            disk_gib: row.disk_gib,
            state_reason: row.state_reason,
            ip_address: row.ip_address,
            mac_address: row.mac_address,
            key_name: row.key_name,
            image_id: row.image_id,
            image_name: row.image_name,
            login_user: row.login_user,
            created_at: row.created_at,
            launched_at: row.launched_at,
            terminated_at: row.terminated_at,
        }
    }
}

/// What a user asks for at launch (REQ-INST-004).
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    pub instance_type: String,
    pub image: String,
    pub name: Option<String>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct InstancesConfig {
    pub limits: Limits,
    /// How long a guest gets to shut down before it is forced off.
    pub stop_timeout: Duration,
    pub monitor_interval: Duration,
    pub tool_timeout: Duration,
}

#[derive(Clone)]
pub struct Instances {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Db,
    pub paths: Paths,
    pub virsh: Virsh,
    pub qemu_img: QemuImg,
    pub images: Images,
    pub key_pairs: KeyPairs,
    pub network: NetworkManager,
    pub platform: GuestPlatform,
    pub iso_tool: Option<IsoTool>,
    pub config: InstancesConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) fn not_found(id: &str) -> AppError {
    AppError::NotFound { code: "InvalidInstanceID.NotFound", message: format!("no instance {id}") }
}

pub(crate) fn parse_id(id: &str) -> Result<InstanceId, AppError> {
    id.parse().map_err(|e: crate::ids::InvalidInstanceId| AppError::InvalidInput {
        code: "InvalidInstanceID.Malformed",
        message: e.to_string(),
    })
}

impl Instances {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        paths: Paths,
        virsh: Virsh,
        qemu_img: QemuImg,
        images: Images,
        key_pairs: KeyPairs,
        network: NetworkManager,
        platform: GuestPlatform,
        iso_tool: Option<IsoTool>,
        config: InstancesConfig,
    ) -> Self {
        Instances {
            inner: Arc::new(Inner {
                db,
                paths,
                virsh,
                qemu_img,
                images,
                key_pairs,
                network,
                platform,
                iso_tool,
                config,
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub async fn list(&self, include_terminated: bool) -> Result<Vec<Instance>, AppError> {
        let rows = self.inner.db.call(move |c| rows::list(c, include_terminated)).await?;
        Ok(rows.into_iter().map(Instance::from_row).collect())
    }

    /// One instance, with its state and IP read from libvirt now (REQ-INST-015).
    pub async fn get(&self, id: &str) -> Result<Instance, AppError> {
        let id = parse_id(id)?.to_string();
        let row = self.inner.row(&id).await?;
        let state: State = row.state.parse().unwrap_or(State::Error);
        if matches!(state, State::Running | State::Stopped) {
            // Skip the refresh while an action holds the instance: it owns the state.
            if let Ok(_guard) = self.inner.lock(&id).try_lock() {
                let domain = match self.inner.virsh.domstate(&id).await {
                    Ok(s) => Some(s),
                    Err(crate::exec::virsh::VirshError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                let lease = if domain.as_deref() == Some("running") {
                    self.inner.network.leases().await?.into_iter().find(|l| l.mac == row.mac_address).map(|l| l.ip)
                } else {
                    None
                };
                if let Some(change) = monitor::reconcile(&row, domain.as_deref(), lease.as_deref()) {
                    self.inner.apply(&row.id, change).await?;
                    return Ok(Instance::from_row(self.inner.row(&id).await?));
                }
            }
        }
        Ok(Instance::from_row(row))
    }

    /// The guest's serial console, like EC2 GetConsoleOutput (the last 64 KiB).
    pub async fn console_output(&self, id: &str) -> Result<String, AppError> {
        let instance_id = parse_id(id)?;
        self.inner.row(&instance_id.to_string()).await?;
        let path = self.inner.paths.instance_console_log(&instance_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let tail = &bytes[bytes.len().saturating_sub(64 * 1024)..];
        Ok(String::from_utf8_lossy(tail).into_owned())
    }
}

impl Inner {
    pub(crate) fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap().entry(id.to_string()).or_default().clone()
    }

    pub(crate) async fn row(&self, id: &str) -> Result<InstanceRow, AppError> {
        let key = id.to_string();
        self.db.call(move |c| rows::get(c, &key)).await?.ok_or_else(|| not_found(id))
    }

    pub(crate) async fn set_state(&self, id: &str, state: State, reason: Option<String>) -> Result<(), AppError> {
        let key = id.to_string();
        self.db.call(move |c| rows::set_state(c, &key, state.as_str(), reason.as_deref())).await?;
        tracing::info!(instance = %id, %state, "state changed");
        Ok(())
    }

    pub(crate) async fn apply(&self, id: &str, change: monitor::Change) -> Result<(), AppError> {
        if let Some((state, reason)) = change.state {
            self.set_state(id, state, reason).await?;
        }
        if let Some(ip) = change.ip {
            let key = id.to_string();
            self.db.call(move |c| rows::set_ip(c, &key, ip.as_deref())).await?;
        }
        Ok(())
    }

    pub(crate) fn dhcp_host(row: &InstanceRow) -> Option<DhcpHost> {
        row.reserved_ip.as_ref().map(|ip| DhcpHost {
            mac: row.mac_address.clone(),
            name: row.id.clone(),
            ip: ip.clone(),
        })
    }

    /// Removes everything an instance has outside the database: its domain (stopped
    /// first), its DHCP reservation and its directory. Each step tolerates what is
    /// already gone, so it serves both terminate and the undo of a failed create.
    pub(crate) async fn remove_resources(&self, row: &InstanceRow) -> Result<(), AppError> {
        use crate::exec::virsh::VirshError;
        let ignore_missing = |r: Result<(), VirshError>| match r {
            Ok(()) | Err(VirshError::NotFound(_)) => Ok(()),
            Err(VirshError::Failed(e)) if e.stderr().is_some_and(|s| s.contains("not running")) => Ok(()),
            Err(e) => Err(e),
        };
        ignore_missing(self.virsh.destroy(&row.id).await)?;
        ignore_missing(self.virsh.undefine(&row.id).await)?;
        if let Some(host) = Self::dhcp_host(row) {
            self.network.release(&host).await?;
        }
        let id: InstanceId =
            row.id.parse().map_err(|e: crate::ids::InvalidInstanceId| AppError::Internal(e.to_string()))?;
        match std::fs::remove_dir_all(self.paths.instance_dir(&id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}
