//! `ec2local doctor`: checks every host dependency and says how to fix what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::iso;
use crate::exec::virsh::Virsh;
use crate::platform::{AcceleratorProbe, Host, HostTool, Os, find_program};

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

/// Ancestors of `dir` that other users cannot traverse (no `o+x`). libvirt's system
/// daemon runs QEMU as its own user, which must reach the disks under the data dir.
pub fn untraversable_ancestors(dir: &Path, mode_of: impl Fn(&Path) -> Option<u32>) -> Vec<PathBuf> {
    dir.ancestors()
        .skip(1)
        .filter(|a| mode_of(a).is_some_and(|mode| mode & 0o001 == 0))
        .map(Path::to_path_buf)
        .collect()
}

fn data_dir_check(data_dir: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let blocked = untraversable_ancestors(data_dir, |p| std::fs::metadata(p).ok().map(|m| m.permissions().mode()));
    let name = "data dir for QEMU".to_string();
    if blocked.is_empty() {
        return Check {
            name,
            ok: true,
            detail: format!("{} is reachable", data_dir.display()),
            fix: None,
            required: false,
        };
    }
    let dirs: Vec<String> = blocked.iter().map(|d| d.display().to_string()).collect();
    Check {
        name,
        ok: false,
        detail: format!(
            "QEMU (run by libvirt as its own user) cannot traverse {}: instances will fail to start unless an ACL allows it",
            dirs.join(", ")
        ),
        fix: Some(format!("chmod o+x {}   (or choose another --data-dir)", dirs.join(" "))),
        required: false,
    }
}

pub async fn run_checks(host: Host, libvirt_uri: &str, data_dir: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
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
    checks.push(program("virsh", HostTool::Virsh));
    checks.push(program("qemu-img", HostTool::QemuImg));
    checks.push(program(host.qemu_system_binary(), HostTool::QemuSystem));
    checks.push(match iso::choose_tool(host.iso_tools(), |p| find_program(p).is_some()) {
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
    });

    let virsh = Virsh::new(libvirt_uri, Duration::from_secs(10));
    checks.push(match virsh.version().await {
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
    });

    checks.push(accelerator_check(host).await);
    if let Some(dir) = data_dir
        && libvirt_uri.split('?').next().is_some_and(|u| u.ends_with("/system"))
    {
        checks.push(data_dir_check(dir));
    }
    checks
}

async fn accelerator_check(host: Host) -> Check {
    let probe = AcceleratorProbe::read(host).await;
    let name = match host.os {
        Os::Linux => "KVM",
        Os::MacOs => "hvf",
    };
    let chosen = host.choose_accelerator(probe, None);
    let accelerated = chosen != crate::platform::Accelerator::Tcg;
    let detail = match (host.os, accelerated) {
        (_, true) => format!("{chosen} available"),
        (Os::Linux, false) if probe.dev_kvm_usable => {
            "/dev/kvm is usable but the CPU has no vmx/svm (nested or paravirtual KVM): guests run under TCG, slowly"
                .into()
        }
        (Os::Linux, false) => "/dev/kvm is missing or not writable: guests run under TCG, slowly".into(),
        (Os::MacOs, false) => "kern.hv_support is not 1: guests run under TCG, slowly".into(),
    };
    let fix = (!accelerated && host.os == Os::Linux && !probe.dev_kvm_usable)
        .then(|| "sudo modprobe kvm_intel || sudo modprobe kvm_amd; sudo usermod -aG kvm $USER".to_string());
    // Not required: TCG works, only slower.
    Check { name: name.into(), ok: accelerated, detail, fix, required: false }
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

    #[test]
    fn parents_without_other_execute_are_reported() {
        let modes = |p: &Path| match p.to_str()? {
            "/" => Some(0o755),
            "/home" => Some(0o755),
            "/home/alice" => Some(0o750),
            _ => None,
        };
        let blocked = untraversable_ancestors(Path::new("/home/alice/.ec2-as-service"), modes);
        assert_eq!(blocked, [PathBuf::from("/home/alice")]);
        let open = |_: &Path| Some(0o711);
        assert!(untraversable_ancestors(Path::new("/var/lib/x/data"), open).is_empty());
    }
}
