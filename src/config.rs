//! Configuration, validated once at start.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::paths::Paths;
use crate::platform::Accelerator;

/// The NAT network of REQ-NET-001/002.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub name: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            name: "ec2-as-service".into(),
            bridge: "ec2br0".into(),
            gateway: Ipv4Addr::new(192, 168, 100, 1),
            prefix_len: 24,
            dhcp_start: Ipv4Addr::new(192, 168, 100, 10),
            dhcp_end: Ipv4Addr::new(192, 168, 100, 254),
        }
    }
}

impl NetworkConfig {
    /// Builds and checks a network configuration from its textual parts:
    /// `gateway` as `ADDRESS/PREFIX`, `dhcp_range` as `FIRST-LAST`.
    pub fn parse(name: &str, bridge: &str, gateway: &str, dhcp_range: &str) -> Result<Self, String> {
        if name.is_empty() || name.contains('/') {
            return Err(format!("invalid network name {name:?}"));
        }
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(|c: char| c == '/' || c.is_whitespace()) {
            return Err(format!("invalid bridge name {bridge:?}: 1-15 characters, no '/' or spaces"));
        }
        let (address, prefix) = gateway
            .split_once('/')
            .ok_or_else(|| format!("gateway {gateway:?} must be ADDRESS/PREFIX, e.g. 192.168.100.1/24"))?;
        let gateway: Ipv4Addr = address.parse().map_err(|_| format!("invalid gateway address {address:?}"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("invalid prefix {prefix:?}: expected 8 to 30"))?;
        let (first, last) =
            dhcp_range.split_once('-').ok_or_else(|| format!("DHCP range {dhcp_range:?} must be FIRST-LAST"))?;
        let dhcp_start: Ipv4Addr = first.trim().parse().map_err(|_| format!("invalid DHCP range start {first:?}"))?;
        let dhcp_end: Ipv4Addr = last.trim().parse().map_err(|_| format!("invalid DHCP range end {last:?}"))?;
        let config = Self { name: name.into(), bridge: bridge.into(), gateway, prefix_len, dhcp_start, dhcp_end };
        let mask = u32::from(config.netmask());
        let in_subnet = |ip: Ipv4Addr| u32::from(ip) & mask == u32::from(gateway) & mask;
        if !in_subnet(dhcp_start) || !in_subnet(dhcp_end) || u32::from(dhcp_start) > u32::from(dhcp_end) {
            return Err(format!("DHCP range {dhcp_range} must be ascending and inside {}", config.subnet()));
        }
        if (u32::from(dhcp_start)..=u32::from(dhcp_end)).contains(&u32::from(gateway)) {
            return Err(format!("DHCP range {dhcp_range} must not include the gateway {gateway}"));
        }
        Ok(config)
    }

    /// How many addresses the DHCP range holds.
    pub fn dhcp_size(&self) -> u32 {
        u32::from(self.dhcp_end) - u32::from(self.dhcp_start) + 1
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0))
    }
    pub fn subnet(&self) -> String {
        let network = u32::from(self.gateway) & u32::from(self.netmask());
        format!("{}/{}", Ipv4Addr::from(network), self.prefix_len)
    }
}

/// Host capacity thresholds below which new instances are refused (REQ-LIM-001/002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_available_memory_mib: u64,
    pub disk_headroom_gib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { min_available_memory_mib: 4096, disk_headroom_gib: 5 }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub paths: Paths,
    pub libvirt_uri: String,
    /// None: choose from what the host offers.
    pub accelerator: Option<Accelerator>,
    pub network: NetworkConfig,
    pub pool_name: String,
    pub limits: Limits,
    /// Ceiling for one virsh call; a hung libvirtd must not hang a request.
    pub virsh_timeout: Duration,
    /// Ceiling for qemu-img and the ISO tool.
    pub tool_timeout: Duration,
    /// How long a guest gets to shut down (or reboot) before it is forced.
    pub stop_timeout: Duration,
    /// How long a terminated guest gets to shut down before it is destroyed.
    pub terminate_grace: Duration,
    /// How often the monitor refreshes every instance's state and address.
    pub monitor_interval: Duration,
    /// WebSocket ping and SSH keep-alive interval of terminal sessions.
    pub terminal_keepalive: Duration,
    /// How many web terminal sessions may be open at once.
    pub terminal_max_sessions: usize,
    /// Where catalog images are downloaded from (a mirror of cloud-images.ubuntu.com).
    /// Where catalog images come from, and how long transfers may stall.
    pub images: crate::images::ImagesConfig,
    /// How often the service re-checks libvirt to recreate what it needs after an outage.
    pub libvirt_recheck_interval: Duration,
    /// macOS: socket_vmnet's socket [default: look in the usual places].
    pub vmnet_socket: Option<std::path::PathBuf>,
}

impl Config {
    pub fn new(bind: SocketAddr, paths: Paths, libvirt_uri: String) -> Self {
        Self {
            bind,
            paths,
            libvirt_uri,
            accelerator: None,
            network: NetworkConfig::default(),
            pool_name: crate::paths::DATA_DIR_NAME.to_string(),
            limits: Limits::default(),
            virsh_timeout: Duration::from_secs(30),
            tool_timeout: Duration::from_secs(600),
            libvirt_recheck_interval: Duration::from_secs(5),
            images: crate::images::ImagesConfig::default(),
            stop_timeout: Duration::from_secs(60),
            terminate_grace: Duration::from_secs(10),
            terminal_keepalive: Duration::from_secs(30),
            terminal_max_sessions: 16,
            monitor_interval: Duration::from_secs(5),
            vmnet_socket: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-NET-001, REQ-NET-002
    #[test]
    fn default_network_is_the_required_one() {
        let net = NetworkConfig::default();
        assert_eq!(net.name, "ec2-as-service");
        assert_eq!(net.subnet(), "192.168.100.0/24");
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(net.dhcp_start, Ipv4Addr::new(192, 168, 100, 10));
        assert_eq!(net.dhcp_end, Ipv4Addr::new(192, 168, 100, 254));
    }

    #[test]
    fn network_config_is_parsed_and_checked() {
        let net =
            NetworkConfig::parse("ec2-as-service", "ec2br0", "192.168.100.1/24", "192.168.100.10-192.168.100.254")
                .unwrap();
        assert_eq!(net, NetworkConfig::default());
        assert_eq!(net.dhcp_size(), 245);
        let tiny = NetworkConfig::parse("t", "br-t", "10.9.0.1/29", "10.9.0.2-10.9.0.3").unwrap();
        assert_eq!(tiny.dhcp_size(), 2);
        for (gw, range) in [
            ("192.168.100.1", "192.168.100.10-192.168.100.20"),
            ("192.168.100.1/33", "192.168.100.10-192.168.100.20"),
            ("192.168.100.1/24", "192.168.101.10-192.168.101.20"),
            ("192.168.100.1/24", "192.168.100.20-192.168.100.10"),
            ("192.168.100.1/24", "192.168.100.1-192.168.100.10"),
            ("192.168.100.1/24", "192.168.100.10"),
        ] {
            assert!(NetworkConfig::parse("n", "br0", gw, range).is_err(), "{gw} {range} accepted");
        }
        assert!(
            NetworkConfig::parse("n", "a-bridge-name-too-long", "192.168.100.1/24", "192.168.100.10-192.168.100.20")
                .is_err()
        );
    }

    // REQ-STOR-001
    #[test]
    fn the_pool_is_named_after_the_data_dir() {
        let config = Config::new("127.0.0.1:8000".parse().unwrap(), Paths::new("/x"), "qemu:///system".into());
        assert_eq!(config.pool_name, ".ec2-as-service");
    }
}
