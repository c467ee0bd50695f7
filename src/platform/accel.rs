//! Hardware acceleration: what the host offers (KVM, hvf) and which one guests get.

use std::fmt;

use super::{Arch, Host, Os};

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
}
