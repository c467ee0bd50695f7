//! `ec2local doctor`: checks every host dependency and says how to fix what is missing.

use std::path::Path;
use std::time::Duration;

use crate::config::NetworkConfig;
use crate::exec::iso;
use crate::exec::virsh::Virsh;
use crate::network::{Finding, FindingKind, NetworkManager};
use crate::paths::Paths;
use crate::platform::{AcceleratorProbe, EfiFirmware, Host, HostTool, NetworkMode, VmnetProbe, find_program};
use crate::qemu_access;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// The command that fixes it, when it failed.
    pub fix: Option<String>,
    /// A failed required check makes doctor exit non-zero.
    pub required: bool,
}

fn data_dir_check(data_dir: &Path, qemu_user: &str) -> Check {
    let name = "data dir for QEMU".to_string();
    match qemu_access::problem(data_dir, qemu_user) {
        None => Check {
            name,
            ok: true,
            detail: format!("{} is reachable by {qemu_user}", data_dir.display()),
            fix: None,
            required: false,
        },
        Some(problem) => {
            Check { name, ok: false, detail: problem.to_string(), fix: Some(problem.fix()), required: false }
        }
    }
}

/// The UEFI firmware arm64 guests need (code and vars template), when the host's guests
/// boot with UEFI.
pub fn firmware_check(host: Host, efi: Option<&EfiFirmware>, exists: impl Fn(&Path) -> bool) -> Option<Check> {
    let efi = efi?;
    let missing: Vec<String> = [&efi.loader, &efi.vars_template]
        .into_iter()
        .filter(|file| !exists(file))
        .map(|file| file.display().to_string())
        .collect();
    let name = "UEFI firmware".to_string();
    Some(if missing.is_empty() {
        Check { name, ok: true, detail: efi.loader.display().to_string(), fix: None, required: true }
    } else {
        Check {
            name,
            ok: false,
            detail: format!("arm64 guests boot with UEFI; missing {}", missing.join(", ")),
            fix: Some(host.install_hint(HostTool::UefiFirmware)),
            required: true,
        }
    })
}

/// The guest network: what provides it and what keeps it from working, with fixes.
pub fn network_checks(mode: &NetworkMode, config: &NetworkConfig, findings: &[Finding]) -> Vec<Check> {
    let name = match mode {
        NetworkMode::LibvirtNat => "network",
        NetworkMode::VmnetShared | NetworkMode::SocketVmnet { .. } => "vmnet",
    };
    if findings.is_empty() {
        let detail = match mode {
            NetworkMode::LibvirtNat => {
                format!("libvirt NAT network {} on {} (created by `ec2local serve`)", config.name, config.subnet())
            }
            NetworkMode::VmnetShared => format!("QEMU's vmnet-shared on {} (QEMU runs as root)", config.subnet()),
            NetworkMode::SocketVmnet { socket } => {
                format!("socket_vmnet at {} on {}", socket.display(), config.subnet())
            }
        };
        return vec![Check { name: name.into(), ok: true, detail, fix: None, required: true }];
    }
    findings
        .iter()
        .map(|finding| Check {
            name: name.into(),
            ok: false,
            detail: finding.what.clone(),
            fix: Some(finding.fix.clone()),
            // A network on another subnet still works; one that cannot start does not.
            required: finding.kind == FindingKind::Problem,
        })
        .collect()
}

pub async fn run_checks(
    host: Host,
    libvirt_uri: &str,
    data_dir: Option<&Path>,
    vmnet_socket: Option<&Path>,
) -> Vec<Check> {
    let mut checks = tool_checks(host);
    let virsh = Virsh::new(libvirt_uri, Duration::from_secs(10));
    let libvirt = libvirt_check(host, &virsh, libvirt_uri).await;
    let libvirt_ok = libvirt.ok;
    checks.push(libvirt);

    let probe = crate::host::probe_accelerators(host).await;
    let mode = host.network_mode(&VmnetProbe::read(vmnet_socket, libvirt_uri));
    let platform = host.guest_platform(host.choose_accelerator(probe, None), host.emulator(), mode.clone());
    checks.extend(firmware_check(host, platform.efi.as_ref(), Path::exists));
    // The libvirt network can only be looked at when libvirt answers; vmnet always.
    if libvirt_ok || !mode.uses_libvirt_network() {
        let config = NetworkConfig::default();
        let paths = Paths::new(data_dir.map(Path::to_path_buf).unwrap_or_default());
        let network = NetworkManager::new(virsh.clone(), config.clone(), paths, mode.clone());
        match network.findings().await {
            Ok(findings) => checks.extend(network_checks(&mode, &config, &findings)),
            Err(err) => tracing::debug!(error = %err, "could not look at the network"),
        }
    }
    checks.push(accelerator_check(host, probe));
    if let Some(dir) = data_dir
        && crate::platform::is_system_uri(libvirt_uri)
        && let Some(qemu_user) = host.system_qemu_user()
    {
        checks.push(data_dir_check(dir, &qemu_user));
    }
    checks
}

/// The programs ec2local runs: virsh, qemu-img, QEMU, and one ISO tool.
fn tool_checks(host: Host) -> Vec<Check> {
    let program = |name: &str, tool: HostTool| -> Check {
        match find_program(name) {
            Some(path) => {
                Check { name: name.into(), ok: true, detail: path.display().to_string(), fix: None, required: true }
            }
            None => Check {
                name: name.into(),
                ok: false,
                detail: "not found on PATH".into(),
                fix: Some(host.install_hint(tool)),
                required: true,
            },
        }
    };
    let iso = match iso::choose_tool(host.iso_tools(), |p| find_program(p).is_some()) {
        Some(tool) => {
            Check { name: "ISO tool".into(), ok: true, detail: tool.program().into(), fix: None, required: true }
        }
        None => Check {
            name: "ISO tool".into(),
            ok: false,
            detail: format!(
                "none of {} found",
                host.iso_tools().iter().map(|t| t.program()).collect::<Vec<_>>().join(", ")
            ),
            fix: Some(host.install_hint(HostTool::IsoTool)),
            required: true,
        },
    };
    vec![
        program("virsh", HostTool::Virsh),
        program("qemu-img", HostTool::QemuImg),
        program(host.qemu_system_binary(), HostTool::QemuSystem),
        iso,
    ]
}

async fn libvirt_check(host: Host, virsh: &Virsh, libvirt_uri: &str) -> Check {
    match virsh.version().await {
        Ok(v) => Check {
            name: "libvirt".into(),
            ok: true,
            detail: format!(
                "{libvirt_uri}: {}, {}",
                v.library.unwrap_or_default(),
                v.hypervisor.unwrap_or_else(|| "no hypervisor".into())
            ),
            fix: None,
            required: true,
        },
        Err(err) => Check {
            name: "libvirt".into(),
            ok: false,
            detail: err.to_string(),
            fix: Some(format!("{}   (or: {})", host.libvirt_start_hint(), host.install_hint(HostTool::Libvirtd))),
            required: true,
        },
    }
}

fn accelerator_check(host: Host, probe: AcceleratorProbe) -> Check {
    let report = host.accelerator_report(probe);
    // Not required: TCG works, only slower.
    Check {
        name: report.hardware.into(),
        ok: report.accelerated,
        detail: report.detail,
        fix: report.fix,
        required: false,
    }
}

/// Prints the checks; returns whether every required one passed.
pub fn print_report(checks: &[Check]) -> bool {
    for check in checks {
        let mark = match (check.ok, check.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        println!("[{mark}] {:<20} {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("       fix: {fix}");
        }
    }
    let ok = checks.iter().all(|c| c.ok || !c.required);
    println!(
        "{}",
        if ok { "All required dependencies are in place." } else { "Some required dependencies are missing." }
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Accelerator, Arch, Os};

    const MAC_ARM: Host = Host { os: Os::MacOs, arch: Arch::Aarch64 };
    const LINUX_ARM: Host = Host { os: Os::Linux, arch: Arch::Aarch64 };
    const LINUX_X86: Host = Host { os: Os::Linux, arch: Arch::X86_64 };

    fn efi(host: Host) -> Option<EfiFirmware> {
        host.guest_platform(Accelerator::Tcg, "/q".into(), NetworkMode::LibvirtNat).efi
    }

    #[test]
    fn homebrew_firmware_is_checked_with_the_fix() {
        let missing = firmware_check(MAC_ARM, efi(MAC_ARM).as_ref(), |_| false).unwrap();
        assert!(!missing.ok && missing.required);
        assert!(missing.detail.contains("share/qemu/edk2-aarch64-code.fd"), "{}", missing.detail);
        assert_eq!(missing.fix.as_deref(), Some("brew reinstall qemu"));
        let present = firmware_check(MAC_ARM, efi(MAC_ARM).as_ref(), |_| true).unwrap();
        assert!(present.ok && present.detail.ends_with("edk2-aarch64-code.fd"));
        let linux = firmware_check(LINUX_ARM, efi(LINUX_ARM).as_ref(), |_| false).unwrap();
        assert_eq!(linux.fix.as_deref(), Some("sudo apt-get install -y qemu-efi-aarch64"));
        assert!(firmware_check(LINUX_X86, efi(LINUX_X86).as_ref(), |_| false).is_none(), "x86 guests boot BIOS");
    }

    fn manager(uri: &str, mode: NetworkMode) -> NetworkManager {
        NetworkManager::new(Virsh::new(uri, Duration::from_secs(5)), NetworkConfig::default(), Paths::new("/x"), mode)
    }

    // REQ-NET-001
    #[tokio::test]
    async fn vmnet_is_checked_with_the_commands_that_fix_it() {
        let config = NetworkConfig::default();
        // Homebrew's libvirt runs as the user: QEMU's own vmnet cannot work.
        let session = manager("qemu:///session", NetworkMode::VmnetShared).findings().await.unwrap();
        let checks = network_checks(&NetworkMode::VmnetShared, &config, &session);
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].ok && checks[0].required && checks[0].name == "vmnet");
        let fix = checks[0].fix.as_deref().unwrap();
        assert!(fix.contains("sudo scripts/macos-socket-vmnet install") && fix.contains("qemu:///system"), "{fix}");

        let system = manager("qemu:///system", NetworkMode::VmnetShared).findings().await.unwrap();
        let checks = network_checks(&NetworkMode::VmnetShared, &config, &system);
        assert!(checks[0].ok && checks[0].detail.contains("192.168.100.0/24"), "{:?}", checks[0]);

        let gone = NetworkMode::SocketVmnet { socket: "/nonexistent/socket_vmnet".into() };
        let findings = manager("qemu:///session", gone.clone()).findings().await.unwrap();
        let checks = network_checks(&gone, &config, &findings);
        assert!(
            checks.iter().any(|c| !c.ok && c.required && c.detail.contains("/nonexistent/socket_vmnet is missing"))
        );
    }

    #[test]
    fn a_socket_vmnet_on_another_subnet_is_a_warning() {
        let mode = NetworkMode::SocketVmnet { socket: "/opt/homebrew/var/run/socket_vmnet".into() };
        let conflict = Finding { kind: FindingKind::Conflict, what: "other subnet".into(), fix: "f".into() };
        let checks = network_checks(&mode, &NetworkConfig::default(), &[conflict]);
        assert!(!checks[0].ok && !checks[0].required, "it works, on other addresses");
        let fine = network_checks(&mode, &NetworkConfig::default(), &[]);
        assert_eq!(fine[0].detail, "socket_vmnet at /opt/homebrew/var/run/socket_vmnet on 192.168.100.0/24");
    }
}
