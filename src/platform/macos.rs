//! macOS networking facts: QEMU's vmnet-shared and socket_vmnet arguments (libvirt's
//! network driver does not run on macOS), which subnet a running socket_vmnet serves,
//! and finding a guest's address by MAC in macOS's DHCP lease file
//! (`/var/db/dhcpd_leases`) or, failing that, in `arp -an`.

use std::net::Ipv4Addr;
use std::path::Path;

use super::GuestSubnet;

/// QEMU arguments that attach the guest to vmnet-shared on the configured subnet.
pub fn vmnet_args(subnet: &GuestSubnet, mac: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "vmnet-shared,id=net0,start-address={},end-address={},subnet-mask={}",
            subnet.gateway, subnet.last_address, subnet.netmask
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={mac}"),
    ]
}

/// QEMU arguments that connect the guest to socket_vmnet's unix socket. `-netdev stream`
/// (QEMU >= 7.2) speaks socket_vmnet's length-prefixed frames itself, so QEMU needs no
/// `socket_vmnet_client` wrapper and libvirt can start it directly.
pub fn socket_vmnet_args(socket: &Path, mac: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("stream,id=net0,server=off,addr.type=unix,addr.path={}", socket.display()),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={mac}"),
    ]
}

/// socket_vmnet's gateway when started without `--vmnet-gateway` (Homebrew's service).
pub const SOCKET_VMNET_DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 105, 1);

/// The gateway of the running socket_vmnet daemon, read from `ps -axww -o command=`;
/// None when no socket_vmnet daemon runs.
pub fn socket_vmnet_gateway(ps_commands: &str) -> Option<Ipv4Addr> {
    ps_commands
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| {
            let program = words.next()?;
            (program.rsplit('/').next() == Some("socket_vmnet")).then_some(words)
        })
        .map(|mut args| {
            let mut gateway = SOCKET_VMNET_DEFAULT_GATEWAY;
            while let Some(arg) = args.next() {
                let value = match arg.strip_prefix("--vmnet-gateway") {
                    Some(rest) if rest.starts_with('=') => rest[1..].to_string(),
                    Some("") => args.next().unwrap_or_default().to_string(),
                    _ => continue,
                };
                if let Ok(ip) = value.parse() {
                    gateway = ip;
                }
            }
            gateway
        })
}

/// `52:54:0:a:b:c` (macOS drops leading zeros) → `52:54:00:0a:0b:0c`.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.trim().split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let octets: Option<Vec<String>> =
        parts.iter().map(|p| u8::from_str_radix(p, 16).ok().map(|b| format!("{b:02x}"))).collect();
    octets.map(|o| o.join(":"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacLease {
    pub mac: String,
    pub ip: Ipv4Addr,
    /// The host name the guest sent.
    pub name: Option<String>,
    /// Expiry as seconds since the epoch (`lease=0x…`).
    pub expires: u64,
}

/// Parses `/var/db/dhcpd_leases`; when a MAC has several leases, the newest wins.
pub fn parse_dhcpd_leases(text: &str) -> Vec<MacLease> {
    let mut leases: Vec<MacLease> = Vec::new();
    for block in text.split('{').skip(1) {
        let block = block.split('}').next().unwrap_or_default();
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).and_then(|rest| rest.strip_prefix('=')).map(str::trim))
        };
        let ip = field("ip_address").and_then(|v| v.parse().ok());
        // hw_address=1,52:54:… (the 1 is the hardware type, Ethernet).
        let mac = field("hw_address").and_then(|v| v.split_once(',').map(|(_, m)| m)).and_then(normalize_mac);
        let expires =
            field("lease").and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
        let (Some(ip), Some(mac)) = (ip, mac) else { continue };
        let lease = MacLease { mac, ip, name: field("name").map(str::to_string), expires };
        match leases.iter_mut().find(|l| l.mac == lease.mac) {
            Some(existing) if existing.expires >= expires => {}
            Some(existing) => *existing = lease,
            None => leases.push(lease),
        }
    }
    leases
}

/// Parses `arp -an`: (MAC, IP) of complete entries.
pub fn parse_arp(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .filter_map(|line| {
            let ip = line.split_once('(')?.1.split_once(')')?.0.parse().ok()?;
            let mac = line.split_once(" at ")?.1.split_whitespace().next()?;
            Some((normalize_mac(mac)?, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like macOS 14's /var/db/dhcpd_leases: a stale and a fresh lease for one MAC,
    // leading zeros dropped from the octets.
    const LEASES: &str = "{\n\tname=i-0a0b0c0d\n\tip_address=192.168.100.3\n\thw_address=1,52:54:a:b:c:d\n\tidentifier=1,52:54:a:b:c:d\n\tlease=0x6763a000\n}\n{\n\tname=i-0a0b0c0d\n\tip_address=192.168.100.7\n\thw_address=1,52:54:a:b:c:d\n\tidentifier=1,52:54:a:b:c:d\n\tlease=0x6763b000\n}\n{\n\tname=other\n\tip_address=192.168.100.4\n\thw_address=1,f2:1:22:33:44:5\n\tidentifier=1,f2:1:22:33:44:5\n\tlease=0x6763a100\n}\n";
    const ARP: &str = "? (192.168.100.1) at 3e:22:fb:b1:8:64 on bridge100 ifscope permanent [bridge]\n? (192.168.100.9) at 52:54:1:2:3:4 on bridge100 ifscope [bridge]\n? (192.168.100.10) at (incomplete) on bridge100 ifscope [bridge]\n";

    #[test]
    fn macs_get_their_leading_zeros_back() {
        assert_eq!(normalize_mac("52:54:a:b:c:d").as_deref(), Some("52:54:0a:0b:0c:0d"));
        assert_eq!(normalize_mac("52:54:1A:2b:3c:4d").as_deref(), Some("52:54:1a:2b:3c:4d"));
        assert_eq!(normalize_mac("52:54:a:b:c"), None);
        assert_eq!(normalize_mac("(incomplete)"), None);
    }

    #[test]
    fn the_newest_lease_of_a_mac_wins() {
        let leases = parse_dhcpd_leases(LEASES);
        assert_eq!(leases.len(), 2);
        assert_eq!(
            leases[0],
            MacLease {
                mac: "52:54:0a:0b:0c:0d".into(),
                ip: "192.168.100.7".parse().unwrap(),
                name: Some("i-0a0b0c0d".into()),
                expires: 0x6763b000
            }
        );
        assert_eq!(leases[1].mac, "f2:01:22:33:44:05");
    }

    #[test]
    fn arp_entries_are_read_without_incomplete_ones() {
        let entries = parse_arp(ARP);
        assert_eq!(entries.len(), 2, "incomplete entries are skipped");
        assert_eq!(entries[1], ("52:54:01:02:03:04".to_string(), "192.168.100.9".parse().unwrap()));
    }

    #[test]
    fn socket_vmnet_arguments_connect_to_its_socket() {
        let args = socket_vmnet_args(Path::new("/opt/homebrew/var/run/socket_vmnet"), "52:54:0a:0b:0c:0d");
        assert_eq!(
            args,
            [
                "-netdev",
                "stream,id=net0,server=off,addr.type=unix,addr.path=/opt/homebrew/var/run/socket_vmnet",
                "-device",
                "virtio-net-pci,netdev=net0,mac=52:54:0a:0b:0c:0d"
            ]
        );
    }

    // Shaped like `ps -axww -o command=` on macOS 14 with socket_vmnet and a Lima VM.
    const PS: &str = "/sbin/launchd\n/usr/libexec/bootpd -S\n/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet_client /opt/homebrew/var/run/socket_vmnet qemu-system-aarch64 -m 4096\n";

    #[test]
    fn the_running_socket_vmnet_gateway_is_read_from_ps() {
        let ours = format!(
            "{PS}/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet --vmnet-gateway=192.168.100.1 --vmnet-dhcp-end=192.168.100.254 /opt/homebrew/var/run/socket_vmnet\n"
        );
        assert_eq!(socket_vmnet_gateway(&ours), Some(Ipv4Addr::new(192, 168, 100, 1)));
        let spaced = format!("{PS}/opt/socket_vmnet/bin/socket_vmnet --vmnet-gateway 10.0.5.1 /var/run/socket_vmnet\n");
        assert_eq!(socket_vmnet_gateway(&spaced), Some(Ipv4Addr::new(10, 0, 5, 1)));
        // Homebrew's service passes no gateway: socket_vmnet's default applies.
        let homebrew =
            format!("{PS}/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet /opt/homebrew/var/run/socket_vmnet\n");
        assert_eq!(socket_vmnet_gateway(&homebrew), Some(SOCKET_VMNET_DEFAULT_GATEWAY));
        assert_eq!(socket_vmnet_gateway(PS), None, "the client wrapper is not the daemon");
    }

    #[test]
    fn vmnet_arguments_use_the_configured_subnet() {
        let subnet = GuestSubnet {
            gateway: Ipv4Addr::new(192, 168, 100, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            last_address: Ipv4Addr::new(192, 168, 100, 254),
        };
        let args = vmnet_args(&subnet, "52:54:0a:0b:0c:0d");
        assert_eq!(
            args,
            [
                "-netdev",
                "vmnet-shared,id=net0,start-address=192.168.100.1,end-address=192.168.100.254,subnet-mask=255.255.255.0",
                "-device",
                "virtio-net-pci,netdev=net0,mac=52:54:0a:0b:0c:0d"
            ]
        );
    }
}
