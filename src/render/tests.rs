//! Golden tests of the rendered XML. Run with `UPDATE_GOLDEN=1` to rewrite the files
//! after an intended template change, then review the diff.

use std::path::PathBuf;

use super::*;
use crate::config::NetworkConfig;
use crate::platform::{Accelerator, Arch, Host, NetworkMode, Os};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    // Rewriting never passes: the run that wrote the files cannot also vouch for them,
    // and a CI with UPDATE_GOLDEN set fails rather than agreeing with itself.
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        panic!("rewrote {}; review the diff, then run again without UPDATE_GOLDEN", path.display());
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

pub(crate) fn sample_domain() -> DomainSpec {
    DomainSpec {
        name: "i-1a2b3c4d".into(),
        title: "web server".into(),
        instance_type: "t2.micro".into(),
        vcpus: 1,
        memory_mib: 1024,
        mac_address: "52:54:1a:2b:3c:4d".into(),
        network: "ec2-as-service".into(),
        disk_path: "/home/u/.ec2-as-service/instances/i-1a2b3c4d/disk.qcow2".into(),
        cidata_path: "/home/u/.ec2-as-service/instances/i-1a2b3c4d/cloud-init.iso".into(),
        console_log_path: "/home/u/.ec2-as-service/instances/i-1a2b3c4d/console.log".into(),
        nvram_path: "/home/u/.ec2-as-service/instances/i-1a2b3c4d/nvram.fd".into(),
        qemu_args: vec![],
    }
}

#[test]
fn network_golden() {
    let xml = network_xml(&NetworkSpec {
        name: "ec2-as-service".into(),
        bridge: "ec2br0".into(),
        gateway: "192.168.100.1".into(),
        netmask: "255.255.255.0".into(),
        dhcp_start: "192.168.100.10".into(),
        dhcp_end: "192.168.100.254".into(),
        hosts: vec![DhcpHost {
            mac: "52:54:1a:2b:3c:4d".into(),
            name: "i-1a2b3c4d".into(),
            ip: "192.168.100.10".into(),
        }],
        dnsmasq_options: vec!["dhcp-ignore=tag:!known".into()],
    })
    .unwrap();
    golden("network.xml", &xml);
}

#[test]
fn pool_golden() {
    let xml =
        pool_xml(&PoolSpec { name: ".ec2-as-service".into(), path: "/home/u/.ec2-as-service/storage".into() }).unwrap();
    golden("pool.xml", &xml);
}

#[test]
fn domain_linux_x86_64_tcg_golden() {
    let host = Host { os: Os::Linux, arch: Arch::X86_64 };
    let platform = host.guest_platform(Accelerator::Tcg, "/usr/bin/qemu-system-x86_64".into(), NetworkMode::LibvirtNat);
    golden("domain-linux-x86_64-tcg.xml", &domain_xml(&sample_domain(), &platform).unwrap());
}

#[test]
fn domain_linux_aarch64_kvm_golden() {
    let host = Host { os: Os::Linux, arch: Arch::Aarch64 };
    let platform =
        host.guest_platform(Accelerator::Kvm, "/usr/bin/qemu-system-aarch64".into(), NetworkMode::LibvirtNat);
    golden("domain-linux-aarch64-kvm.xml", &domain_xml(&sample_domain(), &platform).unwrap());
}

#[test]
fn domain_macos_aarch64_hvf_vmnet_golden() {
    let host = Host { os: Os::MacOs, arch: Arch::Aarch64 };
    let platform =
        host.guest_platform(Accelerator::Hvf, "/opt/homebrew/bin/qemu-system-aarch64".into(), NetworkMode::VmnetShared);
    let mut spec = sample_domain();
    spec.qemu_args = platform.network.qemu_nic_args(&NetworkConfig::default().guest_subnet(), &spec.mac_address);
    golden("domain-macos-aarch64-hvf.xml", &domain_xml(&spec, &platform).unwrap());
}

#[test]
fn domain_macos_aarch64_hvf_socket_vmnet_golden() {
    let host = Host { os: Os::MacOs, arch: Arch::Aarch64 };
    let network = NetworkMode::SocketVmnet { socket: "/opt/homebrew/var/run/socket_vmnet".into() };
    let platform = host.guest_platform(Accelerator::Hvf, "/opt/homebrew/bin/qemu-system-aarch64".into(), network);
    let mut spec = sample_domain();
    spec.qemu_args = platform.network.qemu_nic_args(&NetworkConfig::default().guest_subnet(), &spec.mac_address);
    let xml = domain_xml(&spec, &platform).unwrap();
    assert!(!xml.contains("<interface"), "libvirt has no network on macOS: {xml}");
    golden("domain-macos-aarch64-hvf-socket_vmnet.xml", &xml);
}

#[test]
fn every_interpolated_value_is_escaped() {
    let host = Host { os: Os::Linux, arch: Arch::X86_64 };
    let platform = host.guest_platform(Accelerator::Kvm, "/usr/bin/qemu-system-x86_64".into(), NetworkMode::LibvirtNat);
    let mut spec = sample_domain();
    spec.title = "a'<b>&\"c".into();
    spec.disk_path = "/tmp/x'/><evil/>.qcow2".into();
    let xml = domain_xml(&spec, &platform).unwrap();
    assert!(xml.contains("<title>a&apos;&lt;b&gt;&amp;&quot;c</title>"), "{xml}");
    assert!(xml.contains("<source file='/tmp/x&apos;/&gt;&lt;evil/&gt;.qcow2'/>"), "{xml}");
    assert!(!xml.contains("<evil/>"));
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("rendered XML does not parse: {e}"),
        }
    }
}
