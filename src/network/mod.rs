//! The network instances attach to: `ec2-as-service` on 192.168.100.0/24 with NAT and
//! DHCP (REQ-NET-001..008). On Linux it is libvirt's NAT network; on macOS, where
//! libvirt has no network driver, it is vmnet, provided by QEMU or socket_vmnet. The
//! platform seam picks the mode; this module hides which backend serves it.

mod libvirt;
mod vmnet;

use std::net::Ipv4Addr;

pub use libvirt::NetworkDefinition;
pub use vmnet::{Finding, FindingKind};

use crate::config::NetworkConfig;
use crate::error::AppError;
use crate::exec::virsh::{DhcpLease, Virsh};
use crate::paths::Paths;
use crate::platform::NetworkMode;
use crate::render::DhcpHost;
use libvirt::LibvirtNetwork;
use vmnet::{HostSources, VmnetNetwork};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkStatus {
    pub name: String,
    /// What provides it: `libvirt-nat`, `vmnet-shared` or `socket_vmnet`.
    pub provider: &'static str,
    pub defined: bool,
    pub active: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
    /// Why the existing network is not the one ec2local needs, if it is not.
    pub conflict: Option<String>,
    /// Why the network cannot be used now, with the command that fixes it.
    pub problem: Option<String>,
}

impl NetworkStatus {
    /// Why instances cannot be attached to the network as it is, if they cannot.
    pub fn refusal(&self) -> Option<AppError> {
        let why = match (&self.conflict, &self.problem) {
            (Some(conflict), _) => conflict.clone(),
            (None, Some(problem)) => problem.clone(),
            (None, None) if !self.active => "it is not active".to_string(),
            (None, None) => return None,
        };
        Some(AppError::NetworkUnavailable(format!(
            "network {} ({}) cannot take new instances: {why}",
            self.name, self.provider
        )))
    }

    /// The commands that free the name for ec2local, which then defines its own network.
    pub fn fix_conflict(&self) -> String {
        format!(
            "virsh net-destroy {0}; virsh net-undefine {0}   (ec2local recreates it), or serve with --network-name",
            self.name
        )
    }
}

#[derive(Clone)]
pub struct NetworkManager {
    config: NetworkConfig,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Libvirt(LibvirtNetwork),
    Vmnet(VmnetNetwork),
}

impl NetworkManager {
    pub fn new(virsh: Virsh, config: NetworkConfig, paths: Paths, mode: NetworkMode) -> Self {
        let backend = match mode {
            NetworkMode::LibvirtNat => Backend::Libvirt(LibvirtNetwork::new(virsh, config.clone(), paths)),
            vmnet_mode => Backend::Vmnet(VmnetNetwork::new(
                config.clone(),
                vmnet_mode,
                crate::platform::is_system_uri(virsh.uri()),
                HostSources::default(),
            )),
        };
        Self { config, backend }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Makes the network usable where ec2local can (define, start, autostart the libvirt
    /// network); reports what it cannot fix. Idempotent.
    pub async fn ensure(&self) -> Result<NetworkStatus, AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.ensure().await,
            Backend::Vmnet(network) => Ok(network.ensure().await),
        }
    }

    pub async fn status(&self) -> Result<NetworkStatus, AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.status().await,
            Backend::Vmnet(network) => Ok(network.status().await),
        }
    }

    /// Refuses when instances cannot be attached: the network conflicts with the
    /// configuration or cannot be used. An inactive libvirt network is started first.
    pub async fn check_usable(&self) -> Result<(), AppError> {
        let mut status = self.status().await?;
        if !status.active && status.conflict.is_none() && status.problem.is_none() {
            status = self.ensure().await?;
        }
        status.refusal().map_or(Ok(()), Err)
    }

    /// Pins the instance's address in the DHCP server where ec2local owns it (libvirt's
    /// dnsmasq). macOS's DHCP server is not ec2local's: there the address is only
    /// counted against the range, and the guest takes what macOS offers.
    pub async fn reserve(&self, host: &DhcpHost) -> Result<(), AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.reserve(host).await,
            Backend::Vmnet(_) => Ok(()),
        }
    }

    /// Whether a launch may start its instance before the reservation is made (the
    /// DHCP server leases nothing to a host it has no reservation for). On macOS there
    /// is no reservation to wait for either way.
    pub fn reserves_after_start(&self) -> bool {
        match &self.backend {
            Backend::Libvirt(network) => network.reserves_after_start(),
            Backend::Vmnet(_) => false,
        }
    }

    /// The MACs with a reservation, where ec2local keeps them (None on macOS).
    pub async fn reserved_macs(&self) -> Result<Option<Vec<String>>, AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.reserved_macs().await.map(Some),
            Backend::Vmnet(_) => Ok(None),
        }
    }

    /// Removes a reservation; one that is already gone is not an error.
    pub async fn release(&self, host: &DhcpHost) -> Result<(), AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.release(host).await,
            Backend::Vmnet(_) => Ok(()),
        }
    }

    /// What keeps the network from working as configured, each with its fix (for
    /// `ec2local doctor`). The libvirt network is created by the service itself; only an
    /// existing, different one needs the user.
    pub async fn findings(&self) -> Result<Vec<Finding>, AppError> {
        match &self.backend {
            Backend::Libvirt(network) => {
                let status = network.status().await?;
                Ok(status
                    .conflict
                    .as_ref()
                    .map(|conflict| Finding {
                        kind: FindingKind::Conflict,
                        what: format!("the existing libvirt network {} differs: {conflict}", self.config.name),
                        fix: status.fix_conflict(),
                    })
                    .into_iter()
                    .collect())
            }
            Backend::Vmnet(network) => Ok(network.findings().await),
        }
    }

    /// The current DHCP leases (macOS: the lease file, then the ARP table).
    pub async fn leases(&self) -> Result<Vec<DhcpLease>, AppError> {
        match &self.backend {
            Backend::Libvirt(network) => network.leases().await,
            Backend::Vmnet(network) => Ok(network.leases().await),
        }
    }

    /// The lowest address of the DHCP range that is not in `taken` (REQ-NET-007), nor
    /// reserved in libvirt's network for another host (a guest reserved by hand). One
    /// still leased to a gone guest is taken only when no other is left: the guest
    /// reserved at it would get another address until that lease runs out.
    pub fn first_free_address(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let (reserved, leased) = match &self.backend {
            Backend::Libvirt(network) => (network.reserved_addresses(), network.leased_addresses()),
            Backend::Vmnet(_) => (Vec::new(), Vec::new()),
        };
        let range = (u32::from(self.config.dhcp_start)..=u32::from(self.config.dhcp_end)).map(Ipv4Addr::from);
        let free = |ip: &Ipv4Addr| !taken.contains(ip) && !reserved.contains(ip);
        range.clone().find(|ip| free(ip) && !leased.contains(ip)).or_else(|| range.clone().find(free))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmnet(uri: &str, mode: NetworkMode) -> NetworkManager {
        let virsh = Virsh::new(uri, std::time::Duration::from_secs(5));
        NetworkManager::new(virsh, NetworkConfig::default(), Paths::new("/x"), mode)
    }

    // REQ-NET-001
    #[tokio::test]
    async fn launches_are_refused_while_vmnet_cannot_work() {
        let err = vmnet("qemu:///session", NetworkMode::VmnetShared).check_usable().await.unwrap_err();
        assert_eq!(err.code(), "NetworkUnavailable");
        let message = err.to_string();
        assert!(message.starts_with("network ec2-as-service (vmnet-shared) cannot take new instances"), "{message}");
        assert!(message.contains("sudo scripts/macos-socket-vmnet install"), "{message}");

        vmnet("qemu:///system", NetworkMode::VmnetShared).check_usable().await.unwrap();

        let missing = NetworkMode::SocketVmnet { socket: "/nonexistent/socket_vmnet".into() };
        let err = vmnet("qemu:///session", missing).check_usable().await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/socket_vmnet is missing"), "{err}");
    }

    #[test]
    fn addresses_are_handed_out_lowest_first() {
        let network = vmnet("qemu:///system", NetworkMode::VmnetShared);
        let first = network.first_free_address(&[]).unwrap();
        assert_eq!(first, Ipv4Addr::new(192, 168, 100, 10));
        let taken = [Ipv4Addr::new(192, 168, 100, 10), Ipv4Addr::new(192, 168, 100, 12)];
        assert_eq!(network.first_free_address(&taken), Some(Ipv4Addr::new(192, 168, 100, 11)));
        let all: Vec<Ipv4Addr> = (10..=254).map(|n| Ipv4Addr::new(192, 168, 100, n)).collect();
        assert_eq!(network.first_free_address(&all), None, "REQ-NET-007: the pool is exhausted");
    }

    // Issue 17: an address still leased to a gone guest's MAC is handed out last, or
    // dnsmasq would give the guest reserved at it another address of the range.
    #[tokio::test]
    async fn an_address_still_leased_to_a_gone_guest_is_handed_out_last() {
        let leases = " 2026-11-27 08:41:02   52:54:1a:2b:3c:4d   ipv4       192.168.100.10/24   i-1a2b3c4d   -\n                       2026-11-27 08:42:10   52:54:1a:2b:3c:4e   ipv4       192.168.100.11/24   i-1a2b3c4e   -\n";
        let script = std::sync::Arc::new(crate::exec::scripted::Scripted::default().ok("net-dhcp-leases", leases));
        let virsh = Virsh::with_runner("test:///scripted", std::time::Duration::from_secs(5), script);
        let network =
            NetworkManager::new(virsh, NetworkConfig::default(), Paths::new("/nonexistent"), NetworkMode::LibvirtNat);
        let ip = |n| Ipv4Addr::new(192, 168, 100, n);
        assert_eq!(network.first_free_address(&[]), Some(ip(10)), "no lease seen yet");
        network.leases().await.unwrap();
        assert_eq!(network.first_free_address(&[]), Some(ip(12)));
        assert_eq!(network.first_free_address(&[ip(12)]), Some(ip(13)));
        // Every other address taken: a leased one rather than none.
        let others: Vec<Ipv4Addr> = (12..=254).map(ip).collect();
        assert_eq!(network.first_free_address(&others), Some(ip(10)));
    }
}
