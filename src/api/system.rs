//! Health, host resources and network: the service's view of its host.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::{ApiError, ErrorBody};
use crate::app::App;
use crate::health::{HealthReport, HealthSnapshot};

pub struct SystemApi;

#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, `degraded` (libvirt answers but the network or pool is not in place) or
    /// `unavailable` (libvirt does not answer).
    pub status: String,
    /// Set when not ok, like every error body.
    #[oai(skip_serializing_if_is_none)]
    pub code: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub message: Option<String>,
    pub libvirt: LibvirtHealth,
    pub network: Option<NetworkHealth>,
    pub storage_pool: Option<PoolHealth>,
    pub accelerator: AcceleratorHealth,
    pub terminal: TerminalHealth,
    pub data_dir: DataDirHealth,
    /// When libvirt, the network, the pool and the data dir were last probed: health is
    /// answered from that snapshot, taken every `--libvirt-recheck-secs`.
    pub checked_at: String,
    /// How old that snapshot is, in milliseconds.
    pub age_ms: u64,
}

#[derive(Debug, Object)]
pub struct DataDirHealth {
    /// Whether libvirt's QEMU user can reach the instance files under the data dir.
    pub reachable: bool,
    #[oai(skip_serializing_if_is_none)]
    pub problem: Option<String>,
    /// The command that grants the access.
    #[oai(skip_serializing_if_is_none)]
    pub fix: Option<String>,
}

#[derive(Debug, Object)]
pub struct TerminalHealth {
    /// Open web terminal sessions.
    pub sessions: u64,
    /// Background tasks serving them.
    pub tasks: u64,
}

#[derive(Debug, Object)]
pub struct LibvirtHealth {
    pub uri: String,
    pub reachable: bool,
    pub library_version: Option<String>,
    pub hypervisor_version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Object)]
pub struct NetworkHealth {
    pub name: String,
    /// What provides the network: `libvirt-nat` (Linux), `vmnet-shared` or
    /// `socket_vmnet` (macOS).
    pub provider: String,
    pub defined: bool,
    pub active: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
    pub conflict: Option<String>,
    /// Why the network cannot be used now, with the command that fixes it.
    pub problem: Option<String>,
}

#[derive(Debug, Object)]
pub struct PoolHealth {
    pub name: String,
    pub defined: bool,
    pub active: bool,
    pub autostart: bool,
    pub path: Option<String>,
    pub conflict: Option<String>,
}

#[derive(Debug, Object)]
pub struct AcceleratorHealth {
    /// `kvm`, `hvf` or `tcg` (software emulation, slow).
    pub name: String,
    /// The libvirt domain type used for guests.
    pub domain_type: String,
    pub dev_kvm_usable: bool,
    pub cpu_virtualization: bool,
    pub hypervisor_framework: bool,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// libvirt answers and the network and storage pool are in place.
    #[oai(status = 200)]
    Ok(Json<Health>),
    /// libvirt is unreachable, or what ec2local needs from it is not in place.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

#[derive(Debug, Object)]
pub struct HostResourcesDto {
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    /// The disk that holds the data directory.
    pub disk_total_bytes: u64,
    pub disk_available_bytes: u64,
    pub cpu_count: u64,
    pub data_dir: String,
    /// New instances are refused below this much available memory (MiB).
    pub min_available_memory_mib: u64,
    /// New instances need more free disk than their own disk plus this (GiB).
    pub disk_headroom_gib: u64,
}

/// Warm spares (`--warm-spares`): domains started paused ahead of any launch of their
/// image and type; a launch takes one and keeps its ID and address.
#[derive(Debug, Object)]
pub struct WarmSparesDto {
    /// How many the service keeps (`--warm-spares`).
    pub wanted: u64,
    pub spares: Vec<WarmSpareDto>,
}

#[derive(Debug, Object)]
pub struct WarmSpareDto {
    /// The ID the instance that takes it will have.
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    pub ip_address: Option<String>,
    /// `building`, `ready` (a launch can take it) or `discarding`.
    pub state: String,
    pub created_at: String,
}

#[derive(Debug, Object)]
pub struct NetworkDto {
    pub name: String,
    /// `libvirt-nat` (Linux), `vmnet-shared` or `socket_vmnet` (macOS, where macOS's
    /// own DHCP server gives the addresses).
    pub provider: String,
    pub subnet: String,
    pub gateway: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
    pub bridge: Option<String>,
    pub defined: bool,
    pub active: bool,
    pub autostart: bool,
    pub conflict: Option<String>,
    pub problem: Option<String>,
    pub leases: Vec<LeaseDto>,
}

#[derive(Debug, Object)]
pub struct LeaseDto {
    pub mac_address: String,
    pub ip_address: String,
    pub hostname: Option<String>,
    pub expiry: String,
}

/// What keeps a reachable libvirt from serving instances, each with its fix.
fn problems(report: &HealthReport) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(n) = &report.network {
        if let Some(c) = &n.conflict {
            problems.push(format!("network {} conflicts: {c}; to free the name: {}", n.name, n.fix_conflict()));
        }
        if let Some(p) = &n.problem {
            problems.push(format!("network {}: {p}", n.name));
        } else if !n.active && n.conflict.is_none() {
            problems.push(format!("network {} is not active", n.name));
        }
    }
    if let Some(p) = &report.storage_pool {
        if let Some(c) = &p.conflict {
            problems.push(format!("storage pool {} conflicts: {c}; to free the name: {}", p.name, p.fix_conflict()));
        } else if !p.active {
            problems.push(format!("storage pool {} is not active", p.name));
        }
    }
    if let Some(e) = &report.libvirt.error {
        problems.push(e.clone());
    }
    if let Some(p) = &report.data_dir_problem {
        problems.push(format!("{p}; fix: {}", p.fix()));
    }
    problems
}

fn health_dto(snapshot: &HealthSnapshot) -> (bool, Health) {
    let report = snapshot.report.clone();
    let healthy = report.is_healthy();
    let (status, code, message) = if healthy {
        ("ok", None, None)
    } else if !report.libvirt.reachable {
        (
            "unavailable",
            Some("LibvirtUnavailable"),
            Some(report.libvirt.error.clone().unwrap_or_else(|| "libvirt is unreachable".into())),
        )
    } else {
        ("degraded", Some("InfrastructureNotReady"), Some(problems(&report).join("; ")))
    };
    let health = Health {
        status: status.into(),
        code: code.map(str::to_string),
        message,
        libvirt: LibvirtHealth {
            uri: report.libvirt.uri,
            reachable: report.libvirt.reachable,
            library_version: report.libvirt.library_version,
            hypervisor_version: report.libvirt.hypervisor_version,
            error: report.libvirt.error,
        },
        network: report.network.map(|n| NetworkHealth {
            name: n.name,
            provider: n.provider.into(),
            defined: n.defined,
            active: n.active,
            autostart: n.autostart,
            bridge: n.bridge,
            conflict: n.conflict,
            problem: n.problem,
        }),
        storage_pool: report.storage_pool.map(|p| PoolHealth {
            name: p.name,
            defined: p.defined,
            active: p.active,
            autostart: p.autostart,
            path: p.path,
            conflict: p.conflict,
        }),
        accelerator: AcceleratorHealth {
            name: report.accelerator.name().into(),
            domain_type: report.accelerator.domain_type().into(),
            dev_kvm_usable: report.accelerator_probe.dev_kvm_usable,
            cpu_virtualization: report.accelerator_probe.cpu_virtualization,
            hypervisor_framework: report.accelerator_probe.hypervisor_framework,
        },
        terminal: TerminalHealth {
            sessions: crate::terminal::active_sessions() as u64,
            tasks: crate::terminal::active_tasks() as u64,
        },
        data_dir: DataDirHealth {
            reachable: report.data_dir_problem.is_none(),
            fix: report.data_dir_problem.as_ref().map(|p| p.fix()),
            problem: report.data_dir_problem.map(|p| p.to_string()),
        },
        checked_at: snapshot.checked_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        age_ms: snapshot.age().as_millis() as u64,
    };
    (healthy, health)
}

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Service health: libvirt connectivity and versions, the NAT network and storage
    /// pool, and the accelerator guests run with. 200 when healthy, 503 otherwise.
    #[oai(path = "/health", method = "get")]
    async fn health(&self, app: Data<&Arc<App>>) -> HealthResponse {
        match health_dto(&*app.health().await) {
            (true, health) => HealthResponse::Ok(Json(health)),
            (false, health) => HealthResponse::Unavailable(Json(health)),
        }
    }

    /// Host resources: memory, and disk space where the data directory is.
    #[oai(path = "/host", method = "get")]
    async fn host(&self, app: Data<&Arc<App>>) -> Json<HostResourcesDto> {
        let data_dir = app.config.paths.root().to_path_buf();
        let r = tokio::task::spawn_blocking({
            let data_dir = data_dir.clone();
            move || crate::host::read(&data_dir)
        })
        .await
        .expect("reading host resources does not panic");
        Json(HostResourcesDto {
            memory_total_bytes: r.memory_total_bytes,
            memory_used_bytes: r.memory_used_bytes,
            memory_available_bytes: r.memory_available_bytes,
            disk_total_bytes: r.disk_total_bytes,
            disk_available_bytes: r.disk_available_bytes,
            cpu_count: r.cpu_count as u64,
            data_dir: data_dir.display().to_string(),
            min_available_memory_mib: app.config.limits.min_available_memory_mib,
            disk_headroom_gib: app.config.limits.disk_headroom_gib,
        })
    }

    /// The warm spares kept for the next launch (`--warm-spares`).
    #[oai(path = "/warm-spares", method = "get")]
    async fn warm_spares(&self, app: Data<&Arc<App>>) -> Result<Json<WarmSparesDto>, ApiError> {
        let spares = app.instances.spares().await?;
        Ok(Json(WarmSparesDto {
            wanted: app.config.warm_spares as u64,
            spares: spares
                .into_iter()
                .map(|s| WarmSpareDto {
                    id: s.id,
                    image_id: s.image_id,
                    instance_type: s.instance_type,
                    ip_address: s.reserved_ip,
                    state: s.state,
                    created_at: s.created_at,
                })
                .collect(),
        }))
    }

    /// The NAT network instances are attached to, and its current DHCP leases.
    #[oai(path = "/network", method = "get")]
    async fn network(&self, app: Data<&Arc<App>>) -> Result<Json<NetworkDto>, ApiError> {
        let status = app.network.status().await?;
        let leases = if status.active { app.network.leases().await? } else { Vec::new() };
        let config = app.network.config();
        Ok(Json(NetworkDto {
            name: status.name,
            provider: status.provider.into(),
            subnet: config.subnet(),
            gateway: config.gateway.to_string(),
            dhcp_start: config.dhcp_start.to_string(),
            dhcp_end: config.dhcp_end.to_string(),
            bridge: status.bridge,
            defined: status.defined,
            active: status.active,
            autostart: status.autostart,
            conflict: status.conflict,
            problem: status.problem,
            leases: leases
                .into_iter()
                .map(|l| LeaseDto { mac_address: l.mac, ip_address: l.ip, hostname: l.hostname, expiry: l.expiry })
                .collect(),
        }))
    }
}

// Keeps ErrorBody in the spec's components even before an endpoint returns it directly.
#[allow(dead_code)]
fn _error_body_is_documented(_: ErrorBody) {}
