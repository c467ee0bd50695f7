//! Start, stop, reboot and terminate over a scripted virsh: each step that can fail
//! fails once, and the row must end where libvirt shows the guest, with the reason.

use std::time::Duration;

use crate::error::{AppError, InstanceError};
use crate::exec::scripted::Scripted;
use crate::instances::testbench::{ID, LIBVIRT_DOWN, NETWORK_INFO, NETWORK_XML, instances_over};

const SHORT: Duration = Duration::from_secs(1);

fn libvirt_up() -> Scripted {
    Scripted::default().ok(" version", "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n")
}

// REQ-INST-010
#[tokio::test]
async fn a_stop_asks_the_guest_and_ends_stopped() {
    let script =
        libvirt_up().once(" domstate ", "running\n").ok(" domstate ", "shut off\n").ok(" shutdown --mode acpi ", "");
    let bench = instances_over(script, Duration::from_secs(30)).with_instance("running").await;
    let answer = bench.instances.stop(ID).await.unwrap();
    assert_eq!((answer.state.as_str(), answer.task.map(|t| t.as_str())), ("stopping", Some("stopping")));
    let row = bench.settled().await;
    assert_eq!((row.state.as_str(), row.state_reason), ("stopped", None));
    assert_eq!(row.ip_address, None, "a stopped instance shows no address");
    assert_eq!(row.reserved_ip.as_deref(), Some(crate::instances::testbench::IP), "but keeps its reservation");
    assert_eq!(bench.script.count(" shutdown "), 1);
    assert_eq!(bench.script.count(" destroy "), 0, "asked, not forced");
}

// REQ-INST-010
#[tokio::test]
async fn a_guest_that_ignores_the_stop_is_forced_off_and_a_failed_force_is_said() {
    let forced = libvirt_up()
        .once(" domstate ", "running\n")
        .once(" domstate ", "running\n")
        .once(" domstate ", "running\n")
        .ok(" domstate ", "shut off\n")
        .ok(" shutdown ", "")
        .ok(" destroy ", "");
    let bench = instances_over(forced, SHORT).with_instance("running").await;
    bench.instances.stop(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "stopped");
    assert!(row.state_reason.unwrap().contains("did not shut down within 1s and was forced off"));

    let stuck = libvirt_up().ok(" domstate ", "running\n").ok(" shutdown ", "").fail(
        " destroy ",
        "error: Failed to destroy domain 'i-1a2b3c4d'\nerror: Timed out during operation: cannot acquire state change lock",
    );
    let bench = instances_over(stuck, SHORT).with_instance("running").await;
    bench.instances.stop(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "running", "libvirt still shows it running");
    let reason = row.state_reason.unwrap();
    assert!(reason.starts_with("stop failed:") && reason.contains("cannot acquire state change lock"), "{reason}");
}

// REQ-INST-009
#[tokio::test]
async fn a_start_ends_running_or_where_libvirt_left_it() {
    let started = libvirt_up()
        .ok(" net-info ", NETWORK_INFO)
        .ok(" net-dumpxml ", NETWORK_XML)
        .ok(&format!(" start {ID}"), "Domain 'i-1a2b3c4d' started\n");
    let bench = instances_over(started, SHORT).with_instance("stopped").await;
    let answer = bench.instances.start(ID).await.unwrap();
    assert_eq!((answer.state.as_str(), answer.task.map(|t| t.as_str())), ("pending", Some("starting")));
    let row = bench.settled().await;
    assert_eq!((row.state.as_str(), row.state_reason), ("running", None));
    assert!(row.launched_at.is_some());

    let refused = libvirt_up()
        .ok(" net-info ", NETWORK_INFO)
        .ok(" net-dumpxml ", NETWORK_XML)
        .fail(" start ", "error: Failed to start domain 'i-1a2b3c4d'\nerror: internal error: process exited while connecting to monitor")
        .ok(" domstate ", "shut off\n");
    let bench = instances_over(refused, SHORT).with_instance("stopped").await;
    bench.instances.start(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "stopped");
    let reason = row.state_reason.unwrap();
    assert!(reason.starts_with("start failed:") && reason.contains("process exited"), "{reason}");
}

// REQ-NET-001
#[tokio::test]
async fn a_start_on_a_network_that_is_not_ours_is_refused_before_anything_changes() {
    let foreign = NETWORK_XML.replace("mode='nat'", "mode='route'");
    let script = libvirt_up().ok(" net-info ", NETWORK_INFO).ok(" net-dumpxml ", &foreign);
    let bench = instances_over(script, SHORT).with_instance("stopped").await;
    let err = bench.instances.start(ID).await.unwrap_err();
    assert!(matches!(err, AppError::NetworkUnavailable(_)), "{err:?}");
    assert_eq!((bench.row().await.state.as_str(), bench.row().await.task), ("stopped", None));
    assert_eq!(bench.script.count(" start "), 0);
}

// REQ-INST-011
#[tokio::test]
async fn a_reboot_not_taken_is_forced_with_a_reset_and_a_failed_reset_is_said() {
    let taken =
        libvirt_up().ok(" event --domain ", "event 'reboot' for domain 'i-1a2b3c4d'\n").ok(" reboot --mode acpi ", "");
    let bench = instances_over(taken, SHORT).with_instance("running").await;
    bench.instances.reboot(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!((row.state.as_str(), row.state_reason), ("running", None));
    assert_eq!(bench.script.count(" reset "), 0);

    let ignored = libvirt_up().ok(" event --domain ", "").ok(" reboot ", "").ok(" reset ", "");
    let bench = instances_over(ignored, SHORT).with_instance("running").await;
    bench.instances.reboot(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "running");
    assert_eq!(row.state_reason.as_deref(), Some("the guest did not reboot on request and was reset"));

    let broken = libvirt_up()
        .ok(" event --domain ", "")
        .ok(" reboot ", "")
        .fail(" reset ", "error: Failed to reset domain\nerror: internal error: reset failed")
        .ok(" domstate ", "running\n");
    let bench = instances_over(broken, SHORT).with_instance("running").await;
    bench.instances.reboot(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "running");
    assert!(row.state_reason.unwrap().starts_with("reboot failed:"));
}

// REQ-INST-012
#[tokio::test]
async fn a_terminate_removes_domain_reservation_and_files() {
    let script = libvirt_up()
        .once(" domstate ", "running\n")
        .ok(" domstate ", "shut off\n")
        .ok(" shutdown ", "")
        .fail(" destroy ", "error: Failed to destroy domain 'i-1a2b3c4d'\nerror: Requested operation is not valid: domain is not running")
        .ok(" undefine --nvram ", "")
        .ok(" net-dumpxml ", NETWORK_XML)
        .ok(" net-info ", NETWORK_INFO)
        .ok(" net-update ", "");
    let bench = instances_over(script, Duration::from_secs(30)).with_instance("running").await;
    bench.instances.terminate(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!((row.state.as_str(), row.state_reason), ("terminated", None));
    assert_eq!((row.reserved_ip, row.ip_address), (None, None), "the address is free");
    assert!(row.terminated_at.is_some());
    assert!(!bench.instance_dir().exists());
    let update = bench.script.calls().into_iter().find(|c| c.contains(" net-update ")).unwrap();
    assert!(update.contains(" delete ip-dhcp-host ") && update.contains("52:54:1a:2b:3c:4d"), "{update}");
}

// REQ-INST-012, REQ-REL-002
#[tokio::test]
async fn a_terminate_that_cannot_remove_the_domain_keeps_files_and_address_and_says_so() {
    let script = libvirt_up()
        .ok(" domstate ", "shut off\n")
        .ok(" destroy ", "")
        .fail(" undefine ", "error: Failed to undefine domain 'i-1a2b3c4d'\nerror: operation failed: domain is locked")
        .ok(" net-dumpxml ", NETWORK_XML)
        .ok(" net-info ", NETWORK_INFO)
        .ok(" net-update ", "");
    let bench = instances_over(script, SHORT).with_instance("running").await;
    bench.instances.terminate(ID).await.unwrap();
    let row = bench.settled().await;
    assert_eq!(row.state, "error");
    let reason = row.state_reason.unwrap();
    assert!(
        reason.contains("left behind: the libvirt domain i-1a2b3c4d") && reason.contains("domain is locked"),
        "{reason}"
    );
    assert!(reason.ends_with("terminate again"), "{reason}");
    assert!(bench.instance_dir().exists(), "files stay while the domain exists: a QEMU may hold them");
}

// REQ-REL-003
#[tokio::test]
async fn no_action_changes_anything_while_libvirt_is_down() {
    for (state, action) in [("stopped", "start"), ("running", "stop"), ("running", "reboot"), ("running", "terminate")]
    {
        let script = Scripted::default().fail(" version", LIBVIRT_DOWN);
        let bench = instances_over(script, SHORT).with_instance(state).await;
        let err = match action {
            "start" => bench.instances.start(ID).await,
            "stop" => bench.instances.stop(ID).await,
            "reboot" => bench.instances.reboot(ID).await,
            _ => bench.instances.terminate(ID).await,
        }
        .unwrap_err();
        assert!(matches!(err, AppError::LibvirtUnavailable(_)), "{action}: {err:?}");
        let row = bench.row().await;
        assert_eq!((row.state.as_str(), row.task), (state, None), "{action}");
        assert_eq!(bench.script.calls().len(), 1, "{action}: only the version was asked");
    }
}

// REQ-INST-010
#[tokio::test]
async fn an_action_the_state_does_not_allow_is_refused_without_asking_libvirt() {
    let bench = instances_over(libvirt_up(), SHORT).with_instance("stopped").await;
    let err = bench.instances.reboot(ID).await.unwrap_err();
    assert!(matches!(err, AppError::Instance(InstanceError::IncorrectState(_))), "{err:?}");
    assert!(bench.script.calls().is_empty());
    // Asking for the state it is in is no error and no work, as on EC2.
    assert_eq!(bench.instances.stop(ID).await.unwrap().state.as_str(), "stopped");
    assert!(bench.script.calls().is_empty());
    // Terminating a terminated instance neither.
    let bench = instances_over(libvirt_up(), SHORT).with_instance("terminated").await;
    assert_eq!(bench.instances.terminate(ID).await.unwrap().state.as_str(), "terminated");
    assert!(bench.script.calls().is_empty());
}
