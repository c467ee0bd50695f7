use std::os::unix::fs::PermissionsExt;

use super::*;

const LEASES: &str = include_str!("../../../tests/fixtures/macos/dhcpd_leases");
const ARP: &str = include_str!("../../../tests/fixtures/macos/arp-an.txt");

fn socket_mode() -> NetworkMode {
    NetworkMode::SocketVmnet { socket: "/opt/homebrew/var/run/socket_vmnet".into() }
}

/// A stand-in for a host tool that prints `output`, so the exec path is the real one.
fn fake_tool(dir: &Path, name: &str, output: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\ncat <<'OUT'\n{output}OUT\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

// REQ-NET-001
#[test]
fn vmnet_shared_needs_qemu_as_root_and_says_how_to_fix_it() {
    let config = NetworkConfig::default();
    let as_user = vmnet_status(&config, &NetworkMode::VmnetShared, false, ProviderFacts::default());
    assert_eq!((as_user.name.as_str(), as_user.provider, as_user.active), ("ec2-as-service", "vmnet-shared", false));
    let problem = as_user.problem.unwrap();
    assert!(problem.contains("needs root") && problem.contains("scripts/macos-socket-vmnet install"), "{problem}");
    assert!(problem.contains("192.168.100.0/24") && problem.contains("qemu:///system"), "{problem}");

    let as_root = vmnet_status(&config, &NetworkMode::VmnetShared, true, ProviderFacts::default());
    assert!(as_root.active && as_root.problem.is_none() && as_root.conflict.is_none());
}

#[test]
fn socket_vmnet_must_be_running_on_our_subnet() {
    let config = NetworkConfig::default();
    let ours = ProviderFacts { socket_present: true, daemon_gateway: Some(config.gateway) };
    let fine = vmnet_status(&config, &socket_mode(), false, ours);
    assert!(fine.active && fine.problem.is_none() && fine.conflict.is_none(), "{fine:?}");
    assert_eq!(fine.provider, "socket_vmnet");

    let missing = vmnet_status(&config, &socket_mode(), false, ProviderFacts::default());
    assert!(!missing.active);
    assert!(missing.problem.unwrap().contains("/opt/homebrew/var/run/socket_vmnet is missing"));

    // Homebrew's own service runs socket_vmnet on 192.168.105.0/24.
    let homebrew = ProviderFacts { socket_present: true, daemon_gateway: Some(macos::SOCKET_VMNET_DEFAULT_GATEWAY) };
    let conflict = vmnet_status(&config, &socket_mode(), false, homebrew).conflict.unwrap();
    assert!(conflict.contains("gateway 192.168.105.1, not 192.168.100.1"), "{conflict}");
    assert!(conflict.contains("--vmnet-gateway=192.168.100.1"), "{conflict}");
}

// REQ-NET-004
#[test]
fn lease_file_first_then_arp_for_the_macs_it_lacks() {
    let leases = host_leases(LEASES, ARP);
    let by_mac = |mac: &str| leases.iter().find(|l| l.mac == mac).cloned();
    let fresh = by_mac("52:54:0a:0b:0c:0d").unwrap();
    assert_eq!(fresh.ip, "192.168.100.7", "the newest lease wins over the stale one");
    assert_eq!(fresh.hostname.as_deref(), Some("i-0a0b0c0d"));
    assert_eq!(fresh.expiry, "2024-12-19 05:32:48");
    let from_arp = by_mac("52:54:01:02:03:04").unwrap();
    assert_eq!((from_arp.ip.as_str(), from_arp.expiry.as_str()), ("192.168.100.9", "-"));
    // The bridge's own ARP entry is listed too; it matches no instance MAC.
    assert_eq!(leases.len(), 4);
    // A MAC in both sources keeps the lease file's address.
    let both = host_leases(LEASES, "? (192.168.100.99) at 52:54:a:b:c:d on bridge100 ifscope [bridge]\n");
    assert_eq!(both.iter().find(|l| l.mac == "52:54:0a:0b:0c:0d").unwrap().ip, "192.168.100.7");
}

#[tokio::test]
async fn leases_are_read_from_the_lease_file_and_arp_through_the_exec_runner() {
    let dir = tempfile::tempdir().unwrap();
    let lease_file = dir.path().join("dhcpd_leases");
    std::fs::write(&lease_file, LEASES).unwrap();
    let sources =
        HostSources { lease_file: lease_file.clone(), arp: fake_tool(dir.path(), "arp", ARP), ps: "false".into() };
    let network = VmnetNetwork::new(NetworkConfig::default(), NetworkMode::VmnetShared, true, sources.clone());
    let leases = network.leases().await;
    assert!(leases.iter().any(|l| l.mac == "52:54:0a:0b:0c:0d" && l.ip == "192.168.100.7"));
    assert!(leases.iter().any(|l| l.mac == "52:54:01:02:03:04" && l.ip == "192.168.100.9"));

    // No lease file yet and no arp: no leases, no error.
    let bare = HostSources {
        lease_file: dir.path().join("absent"),
        arp: dir.path().join("no-arp").display().to_string(),
        ..sources
    };
    let network = VmnetNetwork::new(NetworkConfig::default(), NetworkMode::VmnetShared, true, bare);
    assert!(network.leases().await.is_empty());
}

#[tokio::test]
async fn socket_vmnet_status_reads_the_socket_and_the_daemons_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("socket_vmnet");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mode = NetworkMode::SocketVmnet { socket: socket.clone() };
    let daemon = |gateway: &str| {
        format!(
            "/sbin/launchd\n/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet --vmnet-gateway={gateway} {}\n",
            socket.display()
        )
    };
    let sources = |ps: String| HostSources { lease_file: dir.path().join("l"), arp: "false".into(), ps };

    let ours = VmnetNetwork::new(
        NetworkConfig::default(),
        mode.clone(),
        false,
        sources(fake_tool(dir.path(), "ps-ours", &daemon("192.168.100.1"))),
    );
    let status = ours.ensure().await;
    assert!(status.active && status.conflict.is_none() && status.problem.is_none(), "{status:?}");

    let other = VmnetNetwork::new(
        NetworkConfig::default(),
        mode.clone(),
        false,
        sources(fake_tool(dir.path(), "ps-other", &daemon("192.168.105.1"))),
    );
    assert!(other.status().await.conflict.is_some());

    // A regular file at the socket's path is not a socket.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "").unwrap();
    let wrong = VmnetNetwork::new(
        NetworkConfig::default(),
        NetworkMode::SocketVmnet { socket: file },
        false,
        sources("false".into()),
    );
    let status = wrong.status().await;
    assert!(!status.active && status.problem.is_some(), "{status:?}");
}
