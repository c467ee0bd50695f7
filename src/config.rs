//! Configuration, validated once at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
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

/// Why a network given on the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("invalid network name {0:?}")]
    Name(String),
    #[error("invalid bridge name {0:?}: 1-15 characters, no '/' or spaces")]
    Bridge(String),
    #[error("gateway {0:?} must be ADDRESS/PREFIX with a prefix of 8 to 30, e.g. 192.168.100.1/24")]
    Gateway(String),
    #[error("DHCP range {0:?} must be FIRST-LAST, e.g. 192.168.100.10-192.168.100.254")]
    RangeFormat(String),
    #[error("DHCP range {range} must be ascending and inside {subnet}")]
    RangeOutside { range: String, subnet: String },
    #[error("DHCP range {range} must not include the gateway {gateway}")]
    RangeHasGateway { range: String, gateway: Ipv4Addr },
}

impl NetworkConfig {
    /// Builds and checks a network configuration from its textual parts:
    /// `gateway` as `ADDRESS/PREFIX`, `dhcp_range` as `FIRST-LAST`.
    pub fn parse(name: &str, bridge: &str, gateway: &str, dhcp_range: &str) -> Result<Self, NetworkConfigError> {
        use NetworkConfigError as E;
        if name.is_empty() || name.contains('/') {
            return Err(E::Name(name.into()));
        }
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(|c: char| c == '/' || c.is_whitespace()) {
            return Err(E::Bridge(bridge.into()));
        }
        let gateway_net: Ipv4Net = gateway.parse().map_err(|_| E::Gateway(gateway.into()))?;
        if !(8..=30).contains(&gateway_net.prefix_len()) {
            return Err(E::Gateway(gateway.into()));
        }
        let (first, last) = dhcp_range.split_once('-').ok_or_else(|| E::RangeFormat(dhcp_range.into()))?;
        let parse = |ip: &str| ip.trim().parse::<Ipv4Addr>().map_err(|_| E::RangeFormat(dhcp_range.into()));
        let (dhcp_start, dhcp_end) = (parse(first)?, parse(last)?);
        let gateway = gateway_net.addr();
        let config = Self {
            name: name.into(),
            bridge: bridge.into(),
            gateway,
            prefix_len: gateway_net.prefix_len(),
            dhcp_start,
            dhcp_end,
        };
        let subnet = gateway_net.trunc();
        if !subnet.contains(&dhcp_start) || !subnet.contains(&dhcp_end) || dhcp_start > dhcp_end {
            return Err(E::RangeOutside { range: dhcp_range.into(), subnet: subnet.to_string() });
        }
        if (dhcp_start..=dhcp_end).contains(&gateway) {
            return Err(E::RangeHasGateway { range: dhcp_range.into(), gateway });
        }
        Ok(config)
    }

    /// How many addresses the DHCP range holds.
    pub fn dhcp_size(&self) -> u32 {
        u32::from(self.dhcp_end) - u32::from(self.dhcp_start) + 1
    }

    /// The subnet as the platform's guest networking takes it.
    pub fn guest_subnet(&self) -> crate::platform::GuestSubnet {
        crate::platform::GuestSubnet { gateway: self.gateway, netmask: self.netmask(), last_address: self.dhcp_end }
    }

    fn net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.prefix_len).expect("the prefix was checked when parsed")
    }
    pub fn netmask(&self) -> Ipv4Addr {
        self.net().netmask()
    }
    /// `192.168.100.0/24`.
    pub fn subnet(&self) -> String {
        self.net().trunc().to_string()
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
    /// How often the monitor ticks: it polls libvirt fully only while libvirt's events
    /// cannot be followed, else only leases of guests still without an address.
    pub monitor_interval: Duration,
    /// How often the monitor looks at every instance although no event asked it to.
    pub safety_poll_interval: Duration,
    /// How many warm spares to keep of the image and type launched last (0: none).
    pub warm_spares: usize,
    /// How long a launched, started or rebooted instance has for SSH to answer before its
    /// status check is impaired.
    pub status_timeout: Duration,
    /// WebSocket ping and SSH keep-alive interval of terminal sessions.
    pub terminal_keepalive: Duration,
    /// How many web terminal sessions may be open at once.
    pub terminal_max_sessions: usize,
    /// Where catalog images come from, and how long transfers may stall.
    pub images: crate::images::ImagesConfig,
    /// How often the service re-checks libvirt to recreate what it needs after an outage,
    /// and takes a health snapshot while something is wrong or events are not followed.
    pub libvirt_recheck_interval: Duration,
    /// macOS: socket_vmnet's socket [default: look in the usual places].
    pub vmnet_socket: Option<std::path::PathBuf>,
    /// The address port forwards listen on (issue 16).
    pub forward_bind: IpAddr,
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
            monitor_interval: Duration::from_secs(2),
            safety_poll_interval: Duration::from_secs(30),
            warm_spares: 0,
            status_timeout: Duration::from_secs(300),
            vmnet_socket: None,
            forward_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
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
        use NetworkConfigError as E;
        let outside = |range: &str| E::RangeOutside { range: range.into(), subnet: "192.168.100.0/24".into() };
        for (gw, range, expected) in [
            ("192.168.100.1", "192.168.100.10-192.168.100.20", E::Gateway("192.168.100.1".into())),
            ("192.168.100.1/33", "192.168.100.10-192.168.100.20", E::Gateway("192.168.100.1/33".into())),
            ("192.168.100.1/31", "192.168.100.10-192.168.100.20", E::Gateway("192.168.100.1/31".into())),
            ("192.168.100.1/24", "192.168.101.10-192.168.101.20", outside("192.168.101.10-192.168.101.20")),
            ("192.168.100.1/24", "192.168.100.20-192.168.100.10", outside("192.168.100.20-192.168.100.10")),
            (
                "192.168.100.1/24",
                "192.168.100.1-192.168.100.10",
                E::RangeHasGateway {
                    range: "192.168.100.1-192.168.100.10".into(),
                    gateway: Ipv4Addr::new(192, 168, 100, 1),
                },
            ),
            ("192.168.100.1/24", "192.168.100.10", E::RangeFormat("192.168.100.10".into())),
        ] {
            assert_eq!(NetworkConfig::parse("n", "br0", gw, range), Err(expected), "{gw} {range}");
        }
        assert_eq!(
            NetworkConfig::parse("n", "br0", "10.1.2.3/16", "10.1.3.10-10.1.255.250").unwrap().subnet(),
            "10.1.0.0/16"
        );
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
