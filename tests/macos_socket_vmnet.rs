//! `scripts/macos-socket-vmnet` runs socket_vmnet on ec2local's subnet; its launchd plist
//! is checked here (the daemon itself only runs on macOS).

use std::process::Command;

use ec2local::config::NetworkConfig;
use ec2local::platform::{VmnetProbe, macos};
use quick_xml::events::Event;

fn script() -> Command {
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/macos-socket-vmnet"));
    for var in ["HOMEBREW_PREFIX", "EC2LOCAL_NETWORK_GATEWAY", "EC2LOCAL_DHCP_RANGE", "EC2LOCAL_VMNET_SOCKET"] {
        command.env_remove(var);
    }
    command
}

/// The `<string>`s of the plist's ProgramArguments array; panics on malformed XML.
fn program_arguments(plist: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(plist);
    let (mut last_key, mut in_arguments, mut text, mut arguments) = (String::new(), false, String::new(), Vec::new());
    loop {
        match reader.read_event().expect("the plist is well-formed XML") {
            Event::Start(e) if e.name().as_ref() == "array" => in_arguments = last_key == "ProgramArguments",
            Event::End(e) if e.name().as_ref() == "array" => in_arguments = false,
            Event::Text(t) => text = t.xml_content(quick_xml::XmlVersion::Implicit1_0).to_string(),
            Event::End(e) if e.name().as_ref() == "key" => last_key = std::mem::take(&mut text),
            Event::End(e) if e.name().as_ref() == "string" && in_arguments => arguments.push(std::mem::take(&mut text)),
            Event::Eof => break,
            _ => {}
        }
    }
    arguments
}

// REQ-NET-001, REQ-NET-002
#[test]
fn the_daemon_runs_on_the_services_subnet_and_socket() {
    let output = script().arg("plist").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plist = String::from_utf8(output.stdout).unwrap();
    let arguments = program_arguments(&plist);
    let config = NetworkConfig::default();
    assert_eq!(
        arguments,
        [
            "/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet".to_string(),
            format!("--vmnet-gateway={}", config.gateway),
            format!("--vmnet-dhcp-end={}", config.dhcp_end),
            VmnetProbe::socket_candidates()[0].display().to_string(),
        ]
    );
    // What the service reads back from `ps` once the daemon runs is our gateway.
    assert_eq!(macos::socket_vmnet_gateway(&arguments.join(" ")), Some(config.gateway));
}

#[test]
fn the_plist_follows_the_serve_settings() {
    let output = script()
        .arg("plist")
        .env("HOMEBREW_PREFIX", "/usr/local")
        .env("EC2LOCAL_NETWORK_GATEWAY", "10.20.0.1/24")
        .env("EC2LOCAL_DHCP_RANGE", "10.20.0.10-10.20.0.99")
        .output()
        .unwrap();
    let arguments = program_arguments(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(
        arguments,
        [
            "/usr/local/opt/socket_vmnet/bin/socket_vmnet",
            "--vmnet-gateway=10.20.0.1",
            "--vmnet-dhcp-end=10.20.0.99",
            "/usr/local/var/run/socket_vmnet"
        ]
    );
}

#[test]
fn install_refuses_outside_macos_or_without_root() {
    let output = script().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run it with sudo") || stderr.contains("socket_vmnet is for macOS"), "{stderr}");
    let usage = script().output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stdout).contains("sudo scripts/macos-socket-vmnet install"));
}
