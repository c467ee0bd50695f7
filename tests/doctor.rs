//! `ec2local doctor` names what is missing and how to install it.

use std::process::Command;

#[test]
fn doctor_reports_an_unreachable_libvirt_with_the_fix_and_fails() {
    let output = Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["doctor", "--libvirt-uri", "qemu+unix:///system?socket=/nonexistent/sock"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{report}");
    assert!(report.contains("[FAIL] libvirt"), "{report}");
    assert!(report.contains("fix: sudo systemctl enable --now libvirtd"), "{report}");
    assert!(report.contains("Some required dependencies are missing."), "{report}");
}

#[test]
fn doctor_reports_missing_programs_with_their_packages() {
    // An empty PATH hides every tool.
    let output =
        Command::new(env!("CARGO_BIN_EXE_ec2local")).args(["doctor"]).env("PATH", "/nonexistent").output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(report.contains("[FAIL] virsh"), "{report}");
    assert!(report.contains("fix: sudo apt-get install -y libvirt-clients"), "{report}");
    assert!(report.contains("fix: sudo apt-get install -y qemu-utils"), "{report}");
    assert!(report.contains("fix: sudo apt-get install -y genisoimage"), "{report}");
}

#[test]
#[ignore = "needs the test bench: run scripts/test"]
fn doctor_passes_on_the_bench() {
    let output = Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["doctor", "--libvirt-uri", "qemu:///system"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("[ok  ] libvirt"), "{report}");
    assert!(report.contains("[ok  ] genisoimage") || report.contains("[ok  ] ISO tool"), "{report}");
    // This machine's /dev/kvm has no vmx/svm: a warning, not a failure.
    assert!(report.contains("KVM"), "{report}");
}
