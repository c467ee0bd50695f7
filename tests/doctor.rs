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

/// The doctor's report for `data` under a system libvirt URI (unreachable: only the local
/// checks matter here).
fn doctor_with_data_dir(data: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["doctor", "--libvirt-uri", "qemu+unix:///system?socket=/nonexistent/sock", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn doctor_warns_when_qemu_cannot_reach_the_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.join(".ec2-as-service");
    let report = doctor_with_data_dir(&data);
    assert!(report.contains("[warn] data dir for QEMU"), "{report}");
    let fix = format!("fix: setfacl -m u:libvirt-qemu:x {}", private.display());
    assert!(report.contains(&fix), "{report}");

    // scripts/run applies that fix (scripts/grant-qemu-access): afterwards the data dir is
    // reachable, and a second run has nothing left to grant.
    let grant =
        || Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/grant-qemu-access")).arg(&data).output().unwrap();
    let first = grant();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(said.contains(&format!("setfacl -m u:libvirt-qemu:x {}", private.display())), "{said}");
    let again = grant();
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
    let report = doctor_with_data_dir(&data);
    assert!(report.contains("[ok  ] data dir for QEMU"), "{report}");
    assert!(report.contains("is reachable by libvirt-qemu"), "{report}");
}
