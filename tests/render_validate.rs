//! The rendered XML passes libvirt's own schemas (virt-xml-validate), for every
//! instance type and every supported host.

use ec2local::platform::{Accelerator, Arch, Host, Os, VmnetProbe};
use ec2local::render::{self, DomainSpec, NetworkSpec, PoolSpec};

fn validate(xml: &str, schema: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.xml");
    std::fs::write(&file, xml).unwrap();
    let output = std::process::Command::new("virt-xml-validate")
        .arg(&file)
        .arg(schema)
        .output()
        .expect("virt-xml-validate (libvirt-clients) is installed by scripts/install-deps");
    assert!(
        output.status.success(),
        "{schema} XML does not validate:\n{}\n{}\n{xml}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// REQ-INST-001, REQ-INST-002
#[test]
fn domain_xml_validates_for_every_type_and_host() {
    let types = [
        ("t2.nano", 1, 512),
        ("t2.micro", 1, 1024),
        ("t2.small", 1, 2048),
        ("t2.medium", 2, 4096),
        ("t2.large", 2, 8192),
    ];
    let hosts = [
        (Host { os: Os::Linux, arch: Arch::X86_64 }, Accelerator::Kvm, "/usr/bin/qemu-system-x86_64"),
        (Host { os: Os::Linux, arch: Arch::X86_64 }, Accelerator::Tcg, "/usr/bin/qemu-system-x86_64"),
        (Host { os: Os::Linux, arch: Arch::Aarch64 }, Accelerator::Kvm, "/usr/bin/qemu-system-aarch64"),
        (Host { os: Os::MacOs, arch: Arch::Aarch64 }, Accelerator::Hvf, "/opt/homebrew/bin/qemu-system-aarch64"),
        (Host { os: Os::MacOs, arch: Arch::Aarch64 }, Accelerator::Tcg, "/opt/homebrew/bin/qemu-system-aarch64"),
    ];
    // macOS: QEMU's vmnet-shared when QEMU runs as root, socket_vmnet otherwise.
    let root = VmnetProbe { qemu_as_root: true, ..Default::default() };
    let socket = VmnetProbe { found: Some("/opt/homebrew/var/run/socket_vmnet".into()), ..Default::default() };
    let variants = hosts.into_iter().flat_map(|(host, accelerator, emulator)| {
        let modes = match host.os {
            Os::Linux => vec![host.network_mode(&VmnetProbe::default())],
            Os::MacOs => vec![host.network_mode(&root), host.network_mode(&socket)],
        };
        modes.into_iter().map(move |mode| (host, accelerator, emulator, mode))
    });
    for (host, accelerator, emulator, mode) in variants {
        let platform = host.guest_platform(accelerator, emulator.into(), mode);
        for (name, vcpus, memory_mib) in types {
            let dir = "/home/u/.ec2-as-service/instances/i-0a1b2c3d";
            let spec = DomainSpec {
                name: "i-0a1b2c3d".into(),
                title: format!("{name} <test> & 'quotes'"),
                instance_type: name.into(),
                vcpus,
                memory_mib,
                mac_address: "52:54:0a:1b:2c:3d".into(),
                network: "ec2-as-service".into(),
                disk_path: format!("{dir}/disk.qcow2"),
                cidata_path: format!("{dir}/cloud-init.iso"),
                console_log_path: format!("{dir}/console.log"),
                nvram_path: format!("{dir}/nvram.fd"),
                // On macOS the NIC is given to QEMU through <qemu:commandline>.
                qemu_args: platform
                    .network
                    .qemu_nic_args(&ec2local::config::NetworkConfig::default().guest_subnet(), "52:54:0a:1b:2c:3d"),
            };
            let xml = render::domain_xml(&spec, &platform).unwrap();
            assert!(xml.contains(&format!("<memory unit='MiB'>{memory_mib}</memory>")));
            assert!(xml.contains(&format!("<vcpu placement='static'>{vcpus}</vcpu>")));
            if host.arch == Arch::Aarch64 && accelerator == Accelerator::Tcg {
                assert!(xml.contains("<cpu mode='maximum' check='none'/>"), "arm64 under TCG needs a 64-bit CPU");
            }
            validate(&xml, "domain");
        }
    }
}

// REQ-NET-001, REQ-NET-002, REQ-STOR-001
#[test]
fn network_and_pool_xml_validate() {
    let network = render::network_xml(&NetworkSpec {
        name: "ec2-as-service".into(),
        bridge: "ec2br0".into(),
        gateway: "192.168.100.1".into(),
        netmask: "255.255.255.0".into(),
        dhcp_start: "192.168.100.10".into(),
        dhcp_end: "192.168.100.254".into(),
        hosts: vec![],
        dnsmasq_options: vec!["dhcp-ignore=tag:!known".into()],
    })
    .unwrap();
    validate(&network, "network");
    let pool =
        render::pool_xml(&PoolSpec { name: ".ec2-as-service".into(), path: "/home/u/.ec2-as-service/storage".into() })
            .unwrap();
    validate(&pool, "storagepool");
}
