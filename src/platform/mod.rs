//! The one seam between Linux and macOS (and between x86_64 and aarch64).
//!
//! Everything that differs per host is decided here from a `Host` value, so the
//! decisions are unit-tested on any machine by injecting the host. `Host::detect` is
//! the only place that looks at `cfg(target_os)` / `cfg(target_arch)`.

pub mod macos;

use std::fmt;
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

/// Hardware acceleration for guests; `Tcg` is QEMU's software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Kvm,
    Hvf,
    Tcg,
}

impl Accelerator {
    /// The libvirt domain type for it.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf => "hvf",
            Accelerator::Tcg => "qemu",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf => "hvf",
            Accelerator::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Accelerator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accelerator::Kvm),
            "hvf" => Ok(Accelerator::Hvf),
            "tcg" | "qemu" => Ok(Accelerator::Tcg),
            other => Err(format!("unknown accelerator {other:?}: expected kvm, hvf or tcg")),
        }
    }
}

/// What the host offers for acceleration, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceleratorProbe {
    /// `/dev/kvm` exists and can be opened read-write.
    pub dev_kvm_usable: bool,
    /// The CPU advertises hardware virtualisation (`vmx`/`svm` on x86). A paravirtual
    /// `/dev/kvm` (e.g. PVM) without them cannot run a stock guest kernel.
    pub cpu_virtualization: bool,
    /// macOS `kern.hv_support` is 1.
    pub hypervisor_framework: bool,
}

impl AcceleratorProbe {
    /// What a Linux host offers: /dev/kvm and the CPU flags. (macOS asks `sysctl
    /// kern.hv_support`, a child process: `host::probe_accelerators` runs it.)
    pub fn read_linux() -> Self {
        Self::from_linux_facts()
    }

    /// The probe of a macOS host from `sysctl -n kern.hv_support`'s output.
    pub fn from_hv_support(sysctl_output: &str) -> Self {
        Self { hypervisor_framework: sysctl_output.trim() == "1", ..Default::default() }
    }

    fn from_linux_facts() -> Self {
        let dev_kvm_usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            dev_kvm_usable,
            cpu_virtualization: cpu_flags_have_virtualization(&cpuinfo),
            hypervisor_framework: false,
        }
    }
}

/// The accelerator as `ec2local doctor` explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceleratorReport {
    /// `KVM` or `hvf`.
    pub hardware: &'static str,
    pub accelerated: bool,
    pub detail: String,
    pub fix: Option<String>,
}

/// True when a `flags` line of /proc/cpuinfo has `vmx` or `svm`.
pub fn cpu_flags_have_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

impl Host {
    /// Picks the accelerator: the override if given, else KVM only when `/dev/kvm` is
    /// usable and (on x86) the CPU has vmx/svm, hvf when macOS supports it, else TCG.
    pub fn choose_accelerator(&self, probe: AcceleratorProbe, wanted: Option<Accelerator>) -> Accelerator {
        if let Some(accelerator) = wanted {
            return accelerator;
        }
        match self.os {
            Os::MacOs if probe.hypervisor_framework => Accelerator::Hvf,
            Os::MacOs => Accelerator::Tcg,
            Os::Linux => {
                // aarch64 Linux has no vmx/svm flags; a usable /dev/kvm is enough there.
                let cpu_ok = self.arch == Arch::Aarch64 || probe.cpu_virtualization;
                if probe.dev_kvm_usable && cpu_ok { Accelerator::Kvm } else { Accelerator::Tcg }
            }
        }
    }

    /// What the host's hardware acceleration is called, whether guests get it, and if
    /// not, why and (where there is one) the fix.
    pub fn accelerator_report(&self, probe: AcceleratorProbe) -> AcceleratorReport {
        let chosen = self.choose_accelerator(probe, None);
        let accelerated = chosen != Accelerator::Tcg;
        let detail = match (self.os, accelerated) {
            (_, true) => format!("{chosen} available"),
            (Os::Linux, false) if probe.dev_kvm_usable => {
                "/dev/kvm is usable but the CPU has no vmx/svm (nested or paravirtual KVM): guests run under TCG, slowly"
                    .into()
            }
            (Os::Linux, false) => "/dev/kvm is missing or not writable: guests run under TCG, slowly".into(),
            (Os::MacOs, false) => "kern.hv_support is not 1: guests run under TCG, slowly".into(),
        };
        let fix = (!accelerated && self.os == Os::Linux && !probe.dev_kvm_usable)
            .then(|| "sudo modprobe kvm_intel || sudo modprobe kvm_amd; sudo usermod -aG kvm $USER".to_string());
        let hardware = match self.os {
            Os::Linux => "KVM",
            Os::MacOs => "hvf",
        };
        AcceleratorReport { hardware, accelerated, detail, fix }
    }

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

    /// How guests are networked: libvirt's NAT network on Linux. On macOS, where
    /// libvirt has no network driver: socket_vmnet at the named socket, or at one found;
    /// else QEMU's own vmnet-shared when QEMU runs as root; else socket_vmnet at its
    /// usual path, the only way an unprivileged QEMU gets vmnet (health then says the
    /// daemon is missing and how to start it; it may also just be starting).
    pub fn network_mode(&self, vmnet: &VmnetProbe) -> NetworkMode {
        if self.os == Os::Linux {
            return NetworkMode::LibvirtNat;
        }
        match (&vmnet.wanted, &vmnet.found, vmnet.qemu_as_root) {
            (Some(socket), _, _) | (None, Some(socket), _) => NetworkMode::SocketVmnet { socket: socket.clone() },
            (None, None, true) => NetworkMode::VmnetShared,
            (None, None, false) => NetworkMode::SocketVmnet { socket: VmnetProbe::socket_candidates().remove(0) },
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

/// How guests get their network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// libvirt's NAT network with its dnsmasq (Linux).
    LibvirtNat,
    /// QEMU's own vmnet-shared netdev (macOS, where libvirt's network driver is absent).
    /// vmnet.framework needs root, so QEMU must run as root (libvirt's system daemon).
    VmnetShared,
    /// The socket_vmnet daemon (root) shares vmnet on a unix socket that an unprivileged
    /// QEMU connects to (QEMU >= 7.2 `-netdev stream`); works with `qemu:///session`.
    SocketVmnet { socket: PathBuf },
}

impl NetworkMode {
    /// Short name used in the health report and in logs.
    pub fn provider(&self) -> &'static str {
        match self {
            NetworkMode::LibvirtNat => "libvirt-nat",
            NetworkMode::VmnetShared => "vmnet-shared",
            NetworkMode::SocketVmnet { .. } => "socket_vmnet",
        }
    }

    /// Whether the guest NIC is an `<interface>` of a libvirt network (else QEMU
    /// arguments in `<qemu:commandline>` provide it).
    pub fn uses_libvirt_network(&self) -> bool {
        matches!(self, NetworkMode::LibvirtNat)
    }

    /// The QEMU arguments that give the guest its NIC, when libvirt does not.
    pub fn qemu_nic_args(&self, subnet: &GuestSubnet, mac: &str) -> Vec<String> {
        match self {
            NetworkMode::LibvirtNat => Vec::new(),
            NetworkMode::VmnetShared => macos::vmnet_args(subnet, mac),
            NetworkMode::SocketVmnet { socket } => macos::socket_vmnet_args(socket, mac),
        }
    }
}

/// The guests' subnet as the platform's networking needs it (vmnet-shared's range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSubnet {
    pub gateway: std::net::Ipv4Addr,
    pub netmask: std::net::Ipv4Addr,
    /// The last address handed to guests.
    pub last_address: std::net::Ipv4Addr,
}

/// What a macOS host offers for vmnet networking, read once at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmnetProbe {
    /// The socket the user named (`--vmnet-socket`), whether or not it exists yet.
    pub wanted: Option<PathBuf>,
    /// A socket_vmnet socket found at one of the usual paths.
    pub found: Option<PathBuf>,
    /// libvirt runs QEMU as root (system daemon), so QEMU's own vmnet can work.
    pub qemu_as_root: bool,
}

impl VmnetProbe {
    /// Where socket_vmnet puts its socket: Homebrew's prefix, then a source install's.
    pub fn socket_candidates() -> Vec<PathBuf> {
        vec![homebrew_prefix().join("var/run/socket_vmnet"), PathBuf::from("/var/run/socket_vmnet")]
    }

    /// Looks for a socket at the usual places; `wanted` is taken as given.
    pub fn read(wanted: Option<&Path>, libvirt_uri: &str) -> Self {
        use std::os::unix::fs::FileTypeExt;
        let is_socket = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
        Self {
            wanted: wanted.map(Path::to_path_buf),
            found: Self::socket_candidates().into_iter().find(|p| is_socket(p)),
            qemu_as_root: is_system_uri(libvirt_uri),
        }
    }
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
