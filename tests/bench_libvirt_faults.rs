//! Fault injection: libvirtd is stopped in the middle of a launch and of a stop. Every
//! endpoint that needs libvirt answers 503 and changes nothing while it is down; the
//! interrupted work ends with a reason; once libvirtd is back the service finishes the
//! cleanup and takes actions again, without a restart. Alone in its own test binary,
//! since it stops the bench's libvirtd. See RELIABILITY.md.

mod common;

use std::time::Duration;

use common::{
    Bench, Failpoints, Service, assert_nothing_orphaned, delete, get_json, import_test_image, post_empty, post_json,
    wait_for, wait_instance,
};
use serde_json::{Value, json};

const URI: &str = "qemu:///system";
const NETWORK: &str = "ec2-as-service";
const SETTLE: Duration = Duration::from_secs(120);

async fn settled(service: &Service, id: &str, state: &str) -> Value {
    wait_instance(service, id, state, SETTLE, |i| i["state"] == state && i["task"].is_null()).await
}

/// Restarts libvirtd even when an assertion fails, so the bench stays usable.
struct LibvirtDown<'a>(&'a Bench, bool);

impl<'a> LibvirtDown<'a> {
    fn stop(bench: &'a Bench) -> Self {
        bench.testbed("stop-libvirtd");
        LibvirtDown(bench, true)
    }
    fn start(mut self) {
        self.0.testbed("start-libvirtd");
        self.1 = false;
    }
}

impl Drop for LibvirtDown<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.testbed("start-libvirtd");
        }
    }
}

/// Every endpoint that needs libvirt answers 503 `LibvirtUnavailable`, and `running`
/// is left as it was.
async fn everything_needing_libvirt_is_503(svc: &Service, running: &str) {
    let (status, body) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("LibvirtUnavailable")), "launch: {body}");
    for verb in ["stop", "reboot"] {
        let (status, body) = post_empty(&svc.api(&format!("/instances/{running}/{verb}"))).await;
        assert_eq!((status, body["code"].as_str()), (503, Some("LibvirtUnavailable")), "{verb}: {body}");
    }
    let response = common::client().delete(svc.api(&format!("/instances/{running}"))).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503, "terminate");
    for path in ["/network".to_string(), format!("/instances/{running}")] {
        let (status, body) = get_json(&svc.api(&path)).await;
        assert_eq!(status, 503, "GET {path}: {body}");
    }
    // Health answers from the snapshot taken every recheck interval (1 s here).
    wait_for("health to say libvirt is down", Duration::from_secs(5), Duration::from_millis(100), || {
        let url = svc.api("/health");
        async move {
            let (status, body) = get_json(&url).await;
            (status == 503 && body["code"] == "LibvirtUnavailable").then_some(())
        }
    })
    .await;
    // Nothing changed: the list comes from the database and still shows it running.
    let (status, list) = get_json(&svc.api("/instances")).await;
    assert_eq!(status, 200);
    let row = list.as_array().unwrap().iter().find(|i| i["id"] == running).unwrap().clone();
    assert_eq!((row["state"].as_str(), row["task"].as_str()), (Some("running"), None), "{row}");
    let total = list.as_array().unwrap().len();
    assert!(total <= 2, "a refused launch was recorded: {list}");
}

// REQ-REL-002, REQ-REL-003, REQ-INST-007
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn libvirt_stopped_during_a_launch_and_a_stop_leaves_nothing_behind_and_recovers_without_a_restart() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let failpoints = Failpoints::new(&tmp.path().join("failpoints"));
    let (fp_key, fp_dir) = failpoints.env();
    let mut svc = Service::start(
        &tmp.path().join("data"),
        &[
            ("EC2LOCAL_LIBVIRT_URI", URI),
            ("EC2LOCAL_POOL_NAME", "ec2-bench-libvirt-faults"),
            ("EC2LOCAL_MONITOR_INTERVAL_SECS", "2"),
            ("EC2LOCAL_LIBVIRT_RECHECK_SECS", "1"),
            ("EC2LOCAL_STOP_TIMEOUT_SECS", "5"),
            ("EC2LOCAL_TERMINATE_GRACE_SECS", "2"),
            (fp_key, &fp_dir),
        ],
    );
    import_test_image(&svc, &bench).await;
    let launch = |name: &'static str| {
        let url = svc.api("/instances");
        async move {
            let (status, body) =
                post_json(&url, &json!({"instance_type": "t2.nano", "image_id": "debian-12-test", "name": name})).await;
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let running = launch("stays").await;
    settled(&svc, &running, "running").await;

    // libvirtd stops before the launch defines the domain. (Its address is reserved after
    // the start; the cleanup, unable to read the network, names the reservation anyway.)
    failpoints.arm("launch.before-define");
    let broken = launch("broken").await;
    failpoints.reached("launch.before-define", 1).await;
    let down = LibvirtDown::stop(&bench);
    failpoints.release("launch.before-define");
    let failed = wait_instance(&svc, &broken, "a failed launch waiting for its cleanup", SETTLE, |i| {
        i["state"] == "error" && i["task"] == "cleaning-up"
    })
    .await;
    let reason = failed["state_reason"].as_str().unwrap();
    assert!(reason.contains("launch failed") && reason.contains("left behind"), "{reason}");
    assert!(reason.contains("DHCP reservation"), "the row says the reservation is left: {reason}");
    everything_needing_libvirt_is_503(&svc, &running).await;
    down.start();

    // Back without a restart: the cleanup is finished and the row keeps why it failed.
    let cleaned = settled(&svc, &broken, "error").await;
    let reason = cleaned["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("launch failed") && !reason.contains("left behind"), "{reason}");
    assert_nothing_orphaned(&svc, NETWORK).await;

    // libvirtd stops while a stop is under way: the stop fails with a reason and the
    // instance is left as it was, running.
    failpoints.arm("stop.before-shutdown");
    let (status, body) = post_empty(&svc.api(&format!("/instances/{running}/stop"))).await;
    assert_eq!(status, 202, "{body}");
    failpoints.reached("stop.before-shutdown", 1).await;
    let down = LibvirtDown::stop(&bench);
    failpoints.release("stop.before-shutdown");
    let stopped_badly = wait_for("the stop to fail", SETTLE, Duration::from_millis(500), || {
        let url = svc.api("/instances");
        let id = running.clone();
        async move {
            let (_, list) = get_json(&url).await;
            list.as_array()?.iter().find(|i| i["id"] == id.as_str() && i["task"].is_null()).cloned()
        }
    })
    .await;
    down.start();
    assert_eq!(stopped_badly["state"], "running", "{stopped_badly}");
    let reason = stopped_badly["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("stop failed") && reason.contains("unreachable"), "{reason}");

    // Actions work again, without restarting the service.
    let pid = svc.pid();
    wait_for("health 200 again", SETTLE, Duration::from_millis(500), || {
        let url = svc.api("/health");
        async move { (get_json(&url).await.0 == 200).then_some(()) }
    })
    .await;
    let (status, body) = post_empty(&svc.api(&format!("/instances/{running}/stop"))).await;
    assert_eq!(status, 202, "{body}");
    settled(&svc, &running, "stopped").await;
    for id in [&running, &broken] {
        assert_eq!(delete(&svc.api(&format!("/instances/{id}"))).await, 202);
        settled(&svc, id, "terminated").await;
    }
    assert_nothing_orphaned(&svc, NETWORK).await;
    assert!(svc.is_running() && svc.pid() == pid, "the service was restarted");
}
