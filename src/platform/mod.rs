//! The one seam between Linux and macOS (and between x86_64 and aarch64).
//!
//! Everything that differs per host is decided here from a `Host` value, so the
//! decisions are unit-tested on any machine by injecting the host. `Host::detect` is
//! the only place that looks at `cfg(target_os)` / `cfg(target_arch)`.

mod accel;
pub mod allocator;
pub mod macos;
mod network;

pub use accel::{Accelerator, AcceleratorProbe, AcceleratorReport, cpu_flags_have_virtualization};
pub use network::{GuestSubnet, NetworkMode, VmnetProbe};

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// libvirt's and QEMU's name for the architecture.
    pub fn libvirt_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    /// The name Ubuntu and Debian use for it in image file names.
    pub fn debian_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub os: Os,
    pub arch: Arch,
}

impl Host {
    pub fn detect() -> Host {
        let os = if cfg!(target_os = "macos") { Os::MacOs } else { Os::Linux };
        let arch = if cfg!(target_arch = "aarch64") { Arch::Aarch64 } else { Arch::X86_64 };
        Host { os, arch }
    }

    /// `qemu:///system` on Linux (NAT networks need the system daemon);
    /// `qemu:///session` on macOS, where Homebrew's libvirt runs as the user.
    pub fn default_libvirt_uri(&self) -> &'static str {
        match self.os {
            Os::Linux => "qemu:///system",
            Os::MacOs => "qemu:///session",
        }
    }

    /// ISO tools able to write a NoCloud `cidata` volume, in order of preference.
    pub fn iso_tools(&self) -> &'static [IsoTool] {
        match self.os {
            Os::Linux => &[IsoTool::Genisoimage, IsoTool::Mkisofs, IsoTool::Xorriso],
            Os::MacOs => &[IsoTool::Hdiutil, IsoTool::Mkisofs, IsoTool::Xorriso],
        }
    }

    /// The QEMU binary for guests: found on PATH, else where the package manager puts it
    /// (libvirt reports a clear error at define time if it is not there either).
    pub fn emulator(&self) -> PathBuf {
        find_program(self.qemu_system_binary()).unwrap_or_else(|| {
            let bin = match self.os {
                Os::Linux => PathBuf::from("/usr/bin"),
                Os::MacOs => homebrew_prefix().join("bin"),
            };
            bin.join(self.qemu_system_binary())
        })
    }

    pub fn qemu_system_binary(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// How a missing host tool is installed, as a command a user can paste.
    pub fn install_hint(&self, tool: HostTool) -> String {
        match self.os {
            Os::Linux => {
                let package = match tool {
                    HostTool::Virsh => "libvirt-clients",
                    HostTool::Libvirtd => "libvirt-daemon-system",
                    HostTool::QemuImg => "qemu-utils",
                    HostTool::QemuSystem => match self.arch {
                        Arch::X86_64 => "qemu-system-x86",
                        Arch::Aarch64 => "qemu-system-arm qemu-efi-aarch64",
                    },
                    HostTool::IsoTool => "genisoimage",
                    HostTool::UefiFirmware => "qemu-efi-aarch64",
                };
                format!("sudo apt-get install -y {package}")
            }
            Os::MacOs => {
                let formula = match tool {
                    HostTool::Virsh | HostTool::Libvirtd => "libvirt",
                    HostTool::QemuImg | HostTool::QemuSystem => "qemu",
                    HostTool::IsoTool => "cdrtools",
                    // The edk2 files ship in Homebrew's qemu; a missing one means a broken install.
                    HostTool::UefiFirmware => return "brew reinstall qemu".into(),
                };
                format!("brew install {formula}")
            }
        }
    }

    /// The user libvirt's system daemon runs QEMU as (Debian/Ubuntu `libvirt-qemu`,
    /// Fedora `qemu`): it must reach the instance files. None on macOS, where the
    /// session daemon runs QEMU as the user.
    pub fn system_qemu_user(&self) -> Option<String> {
        match self.os {
            Os::Linux => {
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                ["libvirt-qemu", "qemu"]
                    .into_iter()
                    .find(|user| passwd.lines().any(|l| l.split(':').next() == Some(*user)))
                    .map(str::to_string)
            }
            Os::MacOs => None,
        }
    }

    /// How libvirt itself is started when it is not reachable.
    pub fn libvirt_start_hint(&self) -> &'static str {
        match self.os {
            Os::Linux => "sudo systemctl enable --now libvirtd",
            Os::MacOs => "brew services start libvirt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTool {
    Virsh,
    Libvirtd,
    QemuImg,
    QemuSystem,
    IsoTool,
    /// The UEFI firmware arm64 guests boot from.
    UefiFirmware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoTool {
    Genisoimage,
    Mkisofs,
    Xorriso,
    Hdiutil,
}

impl IsoTool {
    pub fn program(self) -> &'static str {
        match self {
            IsoTool::Genisoimage => "genisoimage",
            IsoTool::Mkisofs => "mkisofs",
            IsoTool::Xorriso => "xorriso",
            IsoTool::Hdiutil => "hdiutil",
        }
    }
}

impl Host {
    /// How guests are built on this host with this accelerator.
    pub fn guest_platform(&self, accelerator: Accelerator, emulator: PathBuf, network: NetworkMode) -> GuestPlatform {
        let efi = match (self.os, self.arch) {
            (_, Arch::X86_64) => None,
            (Os::Linux, Arch::Aarch64) => Some(EfiFirmware {
                loader: PathBuf::from("/usr/share/AAVMF/AAVMF_CODE.fd"),
                vars_template: PathBuf::from("/usr/share/AAVMF/AAVMF_VARS.fd"),
            }),
            (Os::MacOs, Arch::Aarch64) => {
                let share = homebrew_prefix().join("share/qemu");
                Some(EfiFirmware {
                    loader: share.join("edk2-aarch64-code.fd"),
                    vars_template: share.join("edk2-arm-vars.fd"),
                })
            }
        };
        let (machine, cdrom_bus, cdrom_target) = match self.arch {
            // The cloud kernels we boot have no AHCI driver; the pc machine's IDE works.
            Arch::X86_64 => ("pc", "ide", "hdc"),
            Arch::Aarch64 => ("virt", "scsi", "sda"),
        };
        GuestPlatform {
            domain_type: accelerator.domain_type(),
            arch: self.arch,
            machine,
            emulator,
            efi,
            cdrom_bus,
            cdrom_target,
            cpu_mode: match (accelerator, self.arch) {
                (Accelerator::Kvm | Accelerator::Hvf, _) => Some("host-passthrough"),
                // QEMU's default CPU for `virt` is a 32-bit cortex-a15: arm64 kernels need
                // a 64-bit model, and `max` emulates the most TCG can.
                (Accelerator::Tcg, Arch::Aarch64) => Some("maximum"),
                (Accelerator::Tcg, Arch::X86_64) => None,
            },
            network,
        }
    }
}

fn homebrew_prefix() -> PathBuf {
    std::env::var_os("HOMEBREW_PREFIX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/opt/homebrew"))
}

/// Looks a program up on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiFirmware {
    pub loader: PathBuf,
    pub vars_template: PathBuf,
}

/// Whether `uri` names libvirt's system daemon (QEMU runs as root or as libvirt's own
/// user), not a per-user session daemon (QEMU runs as the user).
pub fn is_system_uri(uri: &str) -> bool {
    uri.split('?').next().is_some_and(|u| u.ends_with("/system"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlatform {
    pub domain_type: &'static str,
    pub arch: Arch,
    pub machine: &'static str,
    pub emulator: PathBuf,
    pub efi: Option<EfiFirmware>,
    pub cdrom_bus: &'static str,
    pub cdrom_target: &'static str,
    /// libvirt's `<cpu mode=…>`; None keeps QEMU's default model.
    pub cpu_mode: Option<&'static str>,
    pub network: NetworkMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_X86: Host = Host { os: Os::Linux, arch: Arch::X86_64 };
    const LINUX_ARM: Host = Host { os: Os::Linux, arch: Arch::Aarch64 };
    const MAC_ARM: Host = Host { os: Os::MacOs, arch: Arch::Aarch64 };

    #[test]
    fn pvm_kvm_without_vmx_falls_back_to_tcg() {
        let pvm = AcceleratorProbe { dev_kvm_usable: true, cpu_virtualization: false, hypervisor_framework: false };
        assert_eq!(LINUX_X86.choose_accelerator(pvm, None), Accelerator::Tcg);
        let real = AcceleratorProbe { cpu_virtualization: true, ..pvm };
        assert_eq!(LINUX_X86.choose_accelerator(real, None), Accelerator::Kvm);
        let no_dev = AcceleratorProbe { dev_kvm_usable: false, ..real };
        assert_eq!(LINUX_X86.choose_accelerator(no_dev, None), Accelerator::Tcg);
        assert_eq!(LINUX_ARM.choose_accelerator(pvm, None), Accelerator::Kvm);
    }

    #[test]
    fn macos_uses_hvf_when_supported_and_override_wins() {
        let hv = AcceleratorProbe { hypervisor_framework: true, ..Default::default() };
        assert_eq!(MAC_ARM.choose_accelerator(hv, None), Accelerator::Hvf);
        assert_eq!(MAC_ARM.choose_accelerator(AcceleratorProbe::default(), None), Accelerator::Tcg);
        assert_eq!(MAC_ARM.choose_accelerator(hv, Some(Accelerator::Tcg)), Accelerator::Tcg);
    }

    #[test]
    fn the_accelerator_report_explains_tcg() {
        let pvm = AcceleratorProbe { dev_kvm_usable: true, cpu_virtualization: false, hypervisor_framework: false };
        let report = LINUX_X86.accelerator_report(pvm);
        assert_eq!((report.hardware, report.accelerated), ("KVM", false));
        assert!(report.detail.contains("no vmx/svm") && report.fix.is_none(), "{report:?}");
        let missing = LINUX_X86.accelerator_report(AcceleratorProbe::default());
        assert!(missing.fix.unwrap().contains("modprobe kvm"));
        let mac = MAC_ARM.accelerator_report(AcceleratorProbe { hypervisor_framework: true, ..Default::default() });
        assert_eq!((mac.hardware, mac.accelerated, mac.detail.as_str()), ("hvf", true, "hvf available"));
    }

    #[test]
    fn cpuinfo_flags_are_read_from_the_flags_line() {
        assert!(cpu_flags_have_virtualization("processor : 0\nflags : fpu vme vmx sse\n"));
        assert!(cpu_flags_have_virtualization("flags\t\t: svm lm\n"));
        assert!(!cpu_flags_have_virtualization("flags : fpu vme sse hypervisor\nmodel name : vmx-like\n"));
    }

    #[test]
    fn default_uri_and_iso_tools_per_os() {
        assert_eq!(LINUX_X86.default_libvirt_uri(), "qemu:///system");
        assert_eq!(MAC_ARM.default_libvirt_uri(), "qemu:///session");
        assert_eq!(LINUX_X86.iso_tools()[0], IsoTool::Genisoimage);
        assert_eq!(MAC_ARM.iso_tools()[0], IsoTool::Hdiutil);
    }

    #[test]
    fn guest_platform_per_host() {
        let linux_net = LINUX_X86.network_mode(&VmnetProbe::default());
        let x86 = LINUX_X86.guest_platform(Accelerator::Tcg, "/usr/bin/qemu-system-x86_64".into(), linux_net);
        assert_eq!((x86.machine, x86.cdrom_bus, x86.domain_type), ("pc", "ide", "qemu"));
        assert!(x86.efi.is_none() && x86.cpu_mode.is_none());
        let mac_net = MAC_ARM.network_mode(&VmnetProbe { qemu_as_root: true, ..Default::default() });
        let mac = MAC_ARM.guest_platform(Accelerator::Hvf, "/opt/homebrew/bin/qemu-system-aarch64".into(), mac_net);
        assert_eq!((mac.machine, mac.domain_type, mac.network), ("virt", "hvf", NetworkMode::VmnetShared));
        assert!(mac.efi.unwrap().loader.ends_with("edk2-aarch64-code.fd"));
        assert_eq!(mac.cpu_mode, Some("host-passthrough"));
        let mac_tcg = MAC_ARM.guest_platform(Accelerator::Tcg, "/q".into(), NetworkMode::VmnetShared);
        assert_eq!(mac_tcg.cpu_mode, Some("maximum"), "arm64 guests need a 64-bit CPU under TCG");
        let linux_kvm = LINUX_X86.guest_platform(Accelerator::Kvm, "/q".into(), NetworkMode::LibvirtNat);
        assert_eq!(linux_kvm.cpu_mode, Some("host-passthrough"));
    }

    // REQ-NET-001
    #[test]
    fn network_mode_per_host_and_vmnet_probe() {
        let homebrew = PathBuf::from("/opt/homebrew/var/run/socket_vmnet");
        let found = VmnetProbe { found: Some(homebrew.clone()), ..Default::default() };
        assert_eq!(LINUX_X86.network_mode(&found), NetworkMode::LibvirtNat, "Linux ignores socket_vmnet");
        assert_eq!(LINUX_ARM.network_mode(&VmnetProbe::default()), NetworkMode::LibvirtNat);
        assert_eq!(MAC_ARM.network_mode(&found), NetworkMode::SocketVmnet { socket: homebrew.clone() });
        let named = VmnetProbe { wanted: Some("/tmp/vmnet.sock".into()), ..found.clone() };
        assert_eq!(MAC_ARM.network_mode(&named), NetworkMode::SocketVmnet { socket: "/tmp/vmnet.sock".into() });
        let root = VmnetProbe { qemu_as_root: true, ..Default::default() };
        assert_eq!(MAC_ARM.network_mode(&root), NetworkMode::VmnetShared);
        // Unprivileged QEMU and no daemon yet: socket_vmnet is still the only way.
        let NetworkMode::SocketVmnet { socket } = MAC_ARM.network_mode(&VmnetProbe::default()) else {
            panic!("an unprivileged QEMU cannot use vmnet-shared")
        };
        assert!(socket.ends_with("var/run/socket_vmnet"));

        assert!(NetworkMode::LibvirtNat.uses_libvirt_network());
        let subnet = crate::config::NetworkConfig::default().guest_subnet();
        assert!(NetworkMode::LibvirtNat.qemu_nic_args(&subnet, "52:54:00:00:00:01").is_empty());
        let vmnet = NetworkMode::VmnetShared.qemu_nic_args(&subnet, "52:54:00:00:00:01");
        assert!(vmnet[1].starts_with("vmnet-shared,"), "{vmnet:?}");
        let stream = MAC_ARM.network_mode(&found).qemu_nic_args(&subnet, "52:54:00:00:00:01");
        assert!(
            stream[1].starts_with("stream,") && stream[1].ends_with("addr.path=/opt/homebrew/var/run/socket_vmnet")
        );

        let probe = VmnetProbe::read(Some(Path::new("/x.sock")), "qemu:///system");
        assert_eq!((probe.wanted.as_deref(), probe.qemu_as_root), (Some(Path::new("/x.sock")), true));
        assert!(!VmnetProbe::read(None, "qemu:///session").qemu_as_root);
        assert!(is_system_uri("qemu:///system") && is_system_uri("qemu+ssh://h/system?x=1"));
        assert!(!is_system_uri("qemu:///session"));
    }

    #[test]
    fn install_hints_name_real_packages() {
        assert_eq!(LINUX_X86.install_hint(HostTool::Virsh), "sudo apt-get install -y libvirt-clients");
        assert_eq!(MAC_ARM.install_hint(HostTool::QemuSystem), "brew install qemu");
    }
}
