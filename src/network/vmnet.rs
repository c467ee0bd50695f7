//! vmnet on macOS: QEMU's vmnet-shared, or the socket_vmnet daemon, gives guests NAT and
//! DHCP on the configured subnet, and macOS's own DHCP server (bootpd) hands out the
//! addresses. There is nothing to define: this backend checks that the chosen provider
//! can work, says how to fix it when not, and finds addresses by MAC.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::NetworkStatus;
use crate::config::NetworkConfig;
use crate::exec::virsh::DhcpLease;
use crate::exec::{self, ToolCommand};
use crate::platform::{NetworkMode, macos};

/// The command that (re)starts socket_vmnet on ec2local's subnet.
const SOCKET_VMNET_FIX: &str = "sudo scripts/macos-socket-vmnet install";

/// Where the facts about the host's network are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSources {
    /// macOS's DHCP lease file.
    pub lease_file: PathBuf,
    /// `arp -an` lists what the lease file may not have yet.
    pub arp: String,
    /// `ps` shows the running socket_vmnet and its gateway.
    pub ps: String,
}

impl Default for HostSources {
    fn default() -> Self {
        Self { lease_file: PathBuf::from("/var/db/dhcpd_leases"), arp: "arp".into(), ps: "ps".into() }
    }
}

#[derive(Clone)]
pub struct VmnetNetwork {
    config: NetworkConfig,
    mode: NetworkMode,
    /// libvirt runs QEMU as root (system daemon), which vmnet-shared needs.
    qemu_as_root: bool,
    sources: HostSources,
    /// The last warning logged, so the supervisor's retries do not repeat it.
    last_warning: Arc<Mutex<Option<String>>>,
}

/// Something that keeps the network from working as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub what: String,
    /// The command (or choice) that fixes it.
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// The network cannot be used.
    Problem,
    /// It works, but not on the configured subnet.
    Conflict,
}

/// What was seen of the provider on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderFacts {
    pub socket_present: bool,
    /// The gateway of the running socket_vmnet daemon, if one runs.
    pub daemon_gateway: Option<Ipv4Addr>,
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

impl VmnetNetwork {
    pub fn new(config: NetworkConfig, mode: NetworkMode, qemu_as_root: bool, sources: HostSources) -> Self {
        Self { config, mode, qemu_as_root, sources, last_warning: Arc::default() }
    }

    /// Nothing to create: logs what stands in the way when that changes.
    pub async fn ensure(&self) -> NetworkStatus {
        let status = self.status().await;
        let why = status.problem.clone().or_else(|| status.conflict.clone());
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if why != *last {
            match &why {
                Some(why) => {
                    tracing::warn!(network = %status.name, provider = status.provider, %why, "vmnet network not usable as configured")
                }
                None => tracing::info!(network = %status.name, provider = status.provider, "vmnet network usable"),
            }
            *last = why;
        }
        status
    }

    pub async fn status(&self) -> NetworkStatus {
        vmnet_status(&self.config, &self.mode, self.qemu_as_root, self.facts().await)
    }

    pub async fn findings(&self) -> Vec<Finding> {
        findings(&self.config, &self.mode, self.qemu_as_root, self.facts().await)
    }

    async fn facts(&self) -> ProviderFacts {
        match &self.mode {
            NetworkMode::SocketVmnet { socket } => {
                ProviderFacts { socket_present: is_socket(socket), daemon_gateway: self.socket_vmnet_gateway().await }
            }
            _ => ProviderFacts::default(),
        }
    }

    async fn socket_vmnet_gateway(&self) -> Option<Ipv4Addr> {
        let ps = ToolCommand::new(&self.sources.ps, TOOL_TIMEOUT).args(["-axww", "-o", "command="]);
        match exec::run(ps).await {
            Ok(out) => macos::socket_vmnet_gateway(&out.stdout),
            Err(e) => {
                tracing::debug!(error = %e, "could not list processes to find socket_vmnet's gateway");
                None
            }
        }
    }

    /// The lease file's leases, then ARP entries for MACs the file does not have.
    pub async fn leases(&self) -> Vec<DhcpLease> {
        let lease_file = tokio::fs::read_to_string(&self.sources.lease_file).await.unwrap_or_else(|e| {
            // The file appears with the first lease bootpd gives.
            tracing::debug!(file = %self.sources.lease_file.display(), error = %e, "no DHCP lease file");
            String::new()
        });
        let arp = match exec::run(ToolCommand::new(&self.sources.arp, TOOL_TIMEOUT).arg("-an")).await {
            Ok(out) => out.stdout,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the ARP table");
                String::new()
            }
        };
        host_leases(&lease_file, &arp)
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The network's status from what was seen of its provider.
pub fn vmnet_status(
    config: &NetworkConfig,
    mode: &NetworkMode,
    qemu_as_root: bool,
    facts: ProviderFacts,
) -> NetworkStatus {
    let mut status = NetworkStatus {
        name: config.name.clone(),
        provider: mode.provider(),
        // vmnet has no definition to keep; it comes up with the first guest.
        defined: true,
        active: true,
        autostart: true,
        ..Default::default()
    };
    for finding in findings(config, mode, qemu_as_root, facts) {
        let text = Some(format!("{}; fix: {}", finding.what, finding.fix));
        match finding.kind {
            FindingKind::Problem => {
                status.active = false;
                status.problem = text;
            }
            FindingKind::Conflict => status.conflict = text,
        }
    }
    status
}

/// What stands between the provider and a usable network, each with its fix.
pub fn findings(config: &NetworkConfig, mode: &NetworkMode, qemu_as_root: bool, facts: ProviderFacts) -> Vec<Finding> {
    let subnet = config.subnet();
    let mut found = Vec::new();
    match mode {
        NetworkMode::VmnetShared if !qemu_as_root => found.push(Finding {
            kind: FindingKind::Problem,
            what: "QEMU's vmnet-shared needs root, but libvirt's session daemon runs QEMU as you".into(),
            fix: format!(
                "start socket_vmnet on {subnet} with `{SOCKET_VMNET_FIX}` and restart ec2local, or run libvirt as root and serve with --libvirt-uri qemu:///system"
            ),
        }),
        NetworkMode::SocketVmnet { socket } => {
            if !facts.socket_present {
                found.push(Finding {
                    kind: FindingKind::Problem,
                    what: format!("socket_vmnet's socket {} is missing (is the daemon running?)", socket.display()),
                    fix: SOCKET_VMNET_FIX.into(),
                });
            }
            if let Some(gateway) = facts.daemon_gateway.filter(|gateway| *gateway != config.gateway) {
                found.push(Finding {
                    kind: FindingKind::Conflict,
                    what: format!(
                        "socket_vmnet runs with gateway {gateway}, not {} ({subnet}): guests would get addresses outside the range ec2local manages",
                        config.gateway
                    ),
                    fix: format!("{SOCKET_VMNET_FIX}   (restarts it with --vmnet-gateway={})", config.gateway),
                });
            }
        }
        _ => {}
    }
    found
}

/// Leases from macOS's lease file (newest per MAC), then ARP entries for other MACs.
pub fn host_leases(lease_file: &str, arp: &str) -> Vec<DhcpLease> {
    let mut leases: Vec<DhcpLease> = macos::parse_dhcpd_leases(lease_file)
        .into_iter()
        .map(|lease| DhcpLease {
            expiry: chrono::DateTime::from_timestamp(lease.expires as i64, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            mac: lease.mac,
            ip: lease.ip.to_string(),
            hostname: lease.name,
        })
        .collect();
    for (mac, ip) in macos::parse_arp(arp) {
        if !leases.iter().any(|l| l.mac == mac) {
            leases.push(DhcpLease { expiry: "-".into(), mac, ip: ip.to_string(), hostname: None });
        }
    }
    leases
}

#[cfg(test)]
mod tests;
