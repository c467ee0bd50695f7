//! macOS networking facts: QEMU's vmnet-shared arguments (libvirt's network driver does
//! not run on macOS), and finding a guest's address by MAC in macOS's DHCP lease file
//! (`/var/db/dhcpd_leases`) or, failing that, in `arp -an`.

use std::net::Ipv4Addr;

use crate::config::NetworkConfig;

/// QEMU arguments that attach the guest to vmnet-shared on the configured subnet.
pub fn vmnet_args(network: &NetworkConfig, mac: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "vmnet-shared,id=net0,start-address={},end-address={},subnet-mask={}",
            network.gateway,
            network.dhcp_end,
            network.netmask()
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={mac}"),
    ]
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
        match leases.iter_mut().find(|l| l.mac == mac) {
            Some(existing) if existing.expires >= expires => {}
            Some(existing) => *existing = MacLease { mac, ip, expires },
            None => leases.push(MacLease { mac, ip, expires }),
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

/// The guest's address: the lease file first, then the ARP table.
pub fn find_ip(mac: &str, dhcpd_leases: &str, arp: &str) -> Option<Ipv4Addr> {
    let mac = normalize_mac(mac)?;
    parse_dhcpd_leases(dhcpd_leases)
        .into_iter()
        .find(|l| l.mac == mac)
        .map(|l| l.ip)
        .or_else(|| parse_arp(arp).into_iter().find(|(m, _)| *m == mac).map(|(_, ip)| ip))
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
            MacLease { mac: "52:54:0a:0b:0c:0d".into(), ip: "192.168.100.7".parse().unwrap(), expires: 0x6763b000 }
        );
        assert_eq!(leases[1].mac, "f2:01:22:33:44:05");
    }

    #[test]
    fn arp_is_the_fallback() {
        assert_eq!(find_ip("52:54:0a:0b:0c:0d", LEASES, ARP), Some("192.168.100.7".parse().unwrap()));
        assert_eq!(find_ip("52:54:01:02:03:04", LEASES, ARP), Some("192.168.100.9".parse().unwrap()));
        assert_eq!(find_ip("52:54:99:99:99:99", LEASES, ARP), None);
        assert_eq!(parse_arp(ARP).len(), 2, "incomplete entries are skipped");
    }

    #[test]
    fn vmnet_arguments_use_the_configured_subnet() {
        let args = vmnet_args(&NetworkConfig::default(), "52:54:0a:0b:0c:0d");
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
