//! Fault injection: the service is killed (SIGKILL) in the middle of each action and
//! of concurrent launches, then started again on the same data dir. Nothing the user
//! had is lost, every instance ends in a real state with a reason, nothing is orphaned.
//! Failpoints (`src/failpoint.rs`) stop the service at a known step before the kill.
//! Runs inside the bench's network namespace (scripts/test); see RELIABILITY.md.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Bench, Failpoints, Service, assert_nothing_orphaned, delete, get_json, import_test_image, post_empty, post_json,
    wait_instance,
};
use serde_json::{Value, json};

const URI: &str = "qemu:///system";
const SETTLE: Duration = Duration::from_secs(120);

struct Harness {
    network: String,
    data: PathBuf,
    env: Vec<(String, String)>,
    failpoints: Failpoints,
}

impl Harness {
    fn new(tmp: &Path, name: &str, octet: u8) -> Harness {
        let failpoints = Failpoints::new(&tmp.join("failpoints"));
        let pool = format!("ec2-bench-{name}");
        let mut env = vec![
            ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
            ("EC2LOCAL_POOL_NAME".to_string(), pool),
            ("EC2LOCAL_MONITOR_INTERVAL_SECS".to_string(), "2".to_string()),
            // The guest is still booting under TCG and ignores ACPI: keep forced stops short.
            ("EC2LOCAL_STOP_TIMEOUT_SECS".to_string(), "5".to_string()),
            ("EC2LOCAL_TERMINATE_GRACE_SECS".to_string(), "2".to_string()),
            (failpoints.env().0.to_string(), failpoints.env().1),
        ];
        env.extend(common::own_network(name, octet));
        Harness { network: format!("ec2-bench-{name}"), data: tmp.join("data"), env, failpoints }
    }

    fn start(&self) -> Service {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Service::start(&self.data, &env)
    }

    /// Arms `point`, runs `act`, waits until `count` callers are paused there, kills the
    /// service, disarms, and starts it again.
    async fn kill_at(&self, service: &mut Service, point: &str, count: usize) -> Service {
        self.failpoints.reached(point, count).await;
        service.kill();
        self.failpoints.release(point);
        self.start()
    }

    fn disk(&self, id: &str) -> PathBuf {
        self.data.join("instances").join(id).join("disk.qcow2")
    }
}

async fn settled(service: &Service, id: &str, state: &str) -> Value {
    wait_instance(service, id, state, SETTLE, |i| i["state"] == state && i["task"].is_null()).await
}

async fn action(service: &Service, id: &str, verb: &str) {
    let (status, body) = post_empty(&service.api(&format!("/instances/{id}/{verb}"))).await;
    assert_eq!(status, 202, "{verb}: {body}");
}

// REQ-REL-001, REQ-INST-009, REQ-INST-010, REQ-INST-011, REQ-INST-012, REQ-STOR-004
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_restart_during_any_action_loses_no_disk_and_the_next_action_works() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let h = Harness::new(tmp.path(), "ra", 81);
    let mut svc = h.start();
    import_test_image(&svc, &bench).await;
    let (status, launched) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap().to_string();
    settled(&svc, &id, "running").await;
    let disk = h.disk(&id);
    assert!(disk.is_file());

    // Each action is killed at its failpoint; the instance ends where the guest is, with
    // a reason that says what to do, its disk intact; the same action then works.
    let cases = [
        // Stop: the guest still runs, so the instance is running again.
        ("stop", "stop.before-shutdown", "running", "stop it again", "stopped"),
        // Start (the case that used to delete the disk): stopped, disk kept.
        ("start", "start.before-virsh", "stopped", "start it again", "running"),
        ("reboot", "reboot.before-virsh", "running", "reboot", "running"),
    ];
    for (verb, point, after_restart, reason, after_retry) in cases {
        h.failpoints.arm(point);
        action(&svc, &id, verb).await;
        svc = h.kill_at(&mut svc, point, 1).await;
        let after = settled(&svc, &id, after_restart).await;
        assert!(after["state_reason"].as_str().unwrap().contains(reason), "{verb}: {after}");
        assert!(disk.is_file(), "the disk was lost after a restart during {verb}");
        action(&svc, &id, verb).await;
        settled(&svc, &id, after_retry).await;
    }
    assert_nothing_orphaned(&svc, &h.network).await;

    // Killed during a terminate: the restart finishes what the user asked for.
    h.failpoints.arm("terminate.before-shutdown");
    assert_eq!(delete(&svc.api(&format!("/instances/{id}"))).await, 202);
    svc = h.kill_at(&mut svc, "terminate.before-shutdown", 1).await;
    let gone = settled(&svc, &id, "terminated").await;
    assert!(gone["terminated_at"].is_string());
    assert_eq!(delete(&svc.api(&format!("/instances/{id}"))).await, 202, "a second terminate is a no-op");
    assert_nothing_orphaned(&svc, &h.network).await;
}

async fn launch_three(svc: &Service) -> Vec<String> {
    let posts = (0..3).map(|n| {
        let url = svc.api("/instances");
        async move {
            let body = json!({"instance_type": "t2.nano", "image_id": "debian-12-test", "name": format!("burst {n}")});
            let (status, launched) = post_json(&url, &body).await;
            assert_eq!(status, 202, "{launched}");
            launched["id"].as_str().unwrap().to_string()
        }
    });
    futures_util::future::join_all(posts).await
}

async fn all_settled(svc: &Service, ids: &[String]) -> Vec<Value> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(wait_instance(svc, id, "settled", SETTLE, |i| i["task"].is_null()).await);
    }
    rows
}

// REQ-INST-007, REQ-REL-001, REQ-NET-007
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_restart_during_concurrent_launches_leaves_every_domain_with_a_row_and_nothing_orphaned() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let h = Harness::new(tmp.path(), "rl", 82);
    let mut svc = h.start();
    import_test_image(&svc, &bench).await;

    // Killed with three launches built but not defined: undone, each row says why.
    h.failpoints.arm("launch.before-define");
    let ids = launch_three(&svc).await;
    svc = h.kill_at(&mut svc, "launch.before-define", 3).await;
    for row in all_settled(&svc, &ids).await {
        assert_eq!(row["state"], "error", "{row}");
        assert!(row["state_reason"].as_str().unwrap().contains("restarted before the instance was built"), "{row}");
    }
    assert_nothing_orphaned(&svc, &h.network).await;

    // Killed with three domains defined but not started: the launches are finished.
    h.failpoints.arm("launch.before-start");
    let ids = launch_three(&svc).await;
    svc = h.kill_at(&mut svc, "launch.before-start", 3).await;
    for row in all_settled(&svc, &ids).await {
        assert_eq!(row["state"], "running", "{row}");
        assert!(row["launched_at"].is_string(), "{row}");
    }
    assert_nothing_orphaned(&svc, &h.network).await;

    // Killed at whatever step three launches have reached right after they were accepted.
    let ids_any = launch_three(&svc).await;
    svc.kill();
    svc = h.start();
    for row in all_settled(&svc, &ids_any).await {
        assert!(matches!(row["state"].as_str(), Some("running" | "error")), "{row}");
    }
    assert_nothing_orphaned(&svc, &h.network).await;

    // The addresses of undone launches are free again: a terminate of everything
    // leaves nothing, and the database agrees with libvirt.
    let (_, list) = get_json(&svc.api("/instances")).await;
    for row in list.as_array().unwrap() {
        assert_eq!(delete(&svc.api(&format!("/instances/{}", row["id"].as_str().unwrap()))).await, 202);
    }
    for row in list.as_array().unwrap() {
        settled(&svc, row["id"].as_str().unwrap(), "terminated").await;
    }
    assert_nothing_orphaned(&svc, &h.network).await;
}
