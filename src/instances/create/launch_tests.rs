//! The launch path over a scripted `virsh`: what the host check asks libvirt, and what
//! a failed concurrent step leaves behind.

use std::sync::Arc;
use std::time::Duration;

use super::{Boot, LaunchSteps};
use crate::db::images::ImageRow;
use crate::error::AppError;
use crate::exec::scripted::Scripted;
use crate::health::{HealthReport, HealthSnapshot, LibvirtStatus};
use crate::images::{Availability, Image};
use crate::instances::testbench::{
    Bench, ID, LIBVIRT_DOWN, NETWORK_INFO, NETWORK_XML, config, instances_built, instances_over,
};
use crate::network::NetworkStatus;
use crate::platform::{Accelerator, IsoTool};

const NOT_DEFINED: &str = "error: failed to get domain 'i-1a2b3c4d'";

/// A health report: libvirt reachable or not, the network active or in conflict.
fn report(reachable: bool, network_active: bool, conflict: Option<&str>) -> HealthReport {
    HealthReport {
        libvirt: LibvirtStatus {
            uri: "test:///scripted".into(),
            reachable,
            library_version: None,
            hypervisor_version: None,
            error: (!reachable).then(|| "libvirt at test:///scripted is unreachable: socket missing".into()),
        },
        network: reachable.then(|| NetworkStatus {
            name: "ec2-as-service".into(),
            provider: "libvirt-nat",
            defined: true,
            active: network_active,
            autostart: true,
            bridge: Some("ec2br0".into()),
            conflict: conflict.map(str::to_string),
            problem: None,
        }),
        storage_pool: None,
        accelerator: Accelerator::Tcg,
        accelerator_probe: Default::default(),
        data_dir_problem: None,
    }
}

/// Keeps `report` as the service's snapshot, taken now.
fn snapshot(bench: &Bench, report: HealthReport) {
    let deps = &bench.instances.inner().deps;
    deps.health.set(Arc::new(HealthSnapshot::new(report, deps.virsh.unreachable_count())));
}

// REQ-REL-003, issue 17: the 503 comes from the snapshot, with no child process.
#[tokio::test]
async fn the_host_check_refuses_from_a_bad_snapshot_without_running_virsh() {
    let bench =
        instances_over(Scripted::default().ok("version", "Using library: libvirt 9.0.0\n"), Duration::from_secs(1));
    snapshot(&bench, report(false, false, None));
    let err = bench.instances.inner().check_libvirt_side().await.unwrap_err();
    assert!(matches!(err, AppError::LibvirtUnavailable(_)), "{err:?}");
    snapshot(&bench, report(true, true, Some("forward mode is \"route\", not nat")));
    let err = bench.instances.inner().check_libvirt_side().await.unwrap_err();
    assert!(matches!(err, AppError::NetworkUnavailable(_)) && err.to_string().contains("route"), "{err:?}");
    assert_eq!(bench.script.calls(), Vec::<String>::new(), "no virsh for a refusal");

    // A fresh, good snapshot is enough too.
    snapshot(&bench, report(true, true, None));
    bench.instances.inner().check_libvirt_side().await.unwrap();
    assert_eq!(bench.script.calls(), Vec::<String>::new(), "no virsh for a good snapshot");
}

// A good snapshot stops vouching once a libvirt call has found libvirt unreachable.
#[tokio::test]
async fn the_host_check_asks_libvirt_once_a_call_found_it_down_since_the_snapshot() {
    let bench = instances_over(Scripted::default().fail("version", LIBVIRT_DOWN), Duration::from_secs(1));
    snapshot(&bench, report(true, true, None));
    let inner = bench.instances.inner();
    assert!(inner.deps.virsh.version().await.is_err(), "libvirt went down after the snapshot");
    let err = inner.check_libvirt_side().await.unwrap_err();
    assert!(matches!(err, AppError::LibvirtUnavailable(_)), "{err:?}");
    assert_eq!(bench.script.count("version"), 2, "the host check asked libvirt: {:?}", bench.script.calls());
}

// An old snapshot, or a network that is only stopped, is checked live (and started).
#[tokio::test]
async fn the_host_check_asks_libvirt_when_the_snapshot_is_old_or_the_network_stopped() {
    let script = Scripted::default()
        .ok("version", "Using library: libvirt 9.0.0\n")
        .ok("net-info", NETWORK_INFO)
        .ok("net-dumpxml", NETWORK_XML);
    let mut aged = config(Duration::from_secs(1));
    aged.health_max_age = Duration::ZERO;
    let bench = instances_built(script, aged, |_| {});
    snapshot(&bench, report(true, true, None));
    bench.instances.inner().check_libvirt_side().await.unwrap();
    assert_eq!(bench.script.count("version"), 1, "{:?}", bench.script.calls());

    let script = Scripted::default()
        .ok("version", "Using library: libvirt 9.0.0\n")
        .ok("net-info", NETWORK_INFO)
        .ok("net-dumpxml", NETWORK_XML);
    let bench = instances_over(script, Duration::from_secs(1));
    snapshot(&bench, report(true, false, None));
    bench.instances.inner().check_libvirt_side().await.unwrap();
    assert_eq!(bench.script.count("net-info"), 1, "{:?}", bench.script.calls());
}

fn missing_image() -> Image {
    Image {
        row: ImageRow {
            id: "ami-00000001".into(),
            name: "debian-12".into(),
            description: String::new(),
            os: "debian".into(),
            os_version: "12".into(),
            architecture: "x86_64".into(),
            file_path: "/nonexistent/ec2local-test/base.qcow2".into(),
            format: "qcow2".into(),
            default_user: "admin".into(),
            source_url: None,
            sha256: None,
            size_bytes: None,
            created_at: crate::db::timestamp_now(),
        },
        available: true,
        availability: Availability::Available,
        unavailable_reason: None,
        in_catalog: false,
        pull: None,
    }
}

// REQ-INST-007, issue 17: the overlay fails while the reservation, made at the same
// time, succeeds; the undo still finds and removes the reservation and the files.
#[tokio::test]
async fn a_failed_concurrent_step_leaves_no_reservation_files_domain_or_busy_row() {
    let script = Scripted::default()
        .ok("net-update ec2-as-service add-last", "")
        .ok("net-update ec2-as-service delete", "")
        .ok("net-dumpxml", NETWORK_XML)
        .ok("net-info", NETWORK_INFO)
        .fail("destroy", NOT_DEFINED)
        .fail("undefine", NOT_DEFINED);
    let with_tool = |deps: &mut crate::instances::InstanceDeps| deps.iso_tool = Some(IsoTool::Genisoimage);
    let bench = instances_built(script, config(Duration::from_secs(1)), with_tool)
        .with_busy_instance("pending", Some("launching"))
        .await;
    let inner = bench.instances.inner();
    let row = bench.row().await;

    let err = inner.provision(&row, &missing_image(), &LaunchSteps::start(), Boot::Now).await.unwrap_err();
    assert!(err.to_string().contains("qemu-img"), "the overlay failed: {err}");
    assert_eq!(bench.script.count("add-last"), 1, "the reservation ran to its end: {:?}", bench.script.calls());
    assert_eq!(bench.script.count(" define ") + bench.script.count(" start "), 0, "{:?}", bench.script.calls());

    inner.fail_launch(&row, &err.to_string()).await;
    assert_eq!(bench.script.count("net-update ec2-as-service delete"), 1, "{:?}", bench.script.calls());
    assert!(!bench.instance_dir().exists(), "the disk and seed are gone");
    let row = bench.row().await;
    assert_eq!((row.state.as_str(), row.task.as_deref()), ("error", None), "{row:?}");
    assert!(row.state_reason.unwrap().starts_with("launch failed"));
    assert_eq!(row.id, ID);
}

// Issue 17: where the network leases nothing to hosts without a reservation, the
// reservation waits until the instance runs; a launch that fails before that made none.
#[tokio::test]
async fn on_a_known_hosts_only_network_the_reservation_follows_the_start() {
    let known_only = NETWORK_XML.replace(
        "</network>",
        "<dnsmasq:options xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
         <dnsmasq:option value='dhcp-ignore=tag:!known'/></dnsmasq:options></network>",
    );
    let script = Scripted::default().ok("net-dumpxml", &known_only).ok("net-info", NETWORK_INFO);
    let with_tool = |deps: &mut crate::instances::InstanceDeps| deps.iso_tool = Some(IsoTool::Genisoimage);
    let bench = instances_built(script, config(Duration::from_secs(1)), with_tool)
        .with_busy_instance("pending", Some("launching"))
        .await;
    let inner = bench.instances.inner();
    assert!(!inner.deps.network.reserves_after_start(), "not before a status has seen the running network");
    inner.deps.network.status().await.unwrap();
    assert!(inner.deps.network.reserves_after_start());
    // The network's own reservations (.10 here, one made by hand, say) are not handed out.
    let first = inner.deps.network.first_free_address(&[]);
    assert_eq!(first, Some(std::net::Ipv4Addr::new(192, 168, 100, 11)), "{known_only}");

    let row = bench.row().await;
    let err = inner.provision(&row, &missing_image(), &LaunchSteps::start(), Boot::Now).await.unwrap_err();
    assert!(err.to_string().contains("qemu-img"), "the overlay failed: {err}");
    assert_eq!(bench.script.count("net-update"), 0, "no reservation before the start: {:?}", bench.script.calls());
}
