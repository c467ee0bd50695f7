//! Warm spares end to end on the bench (issue 17, item 1): a launch that takes a spare
//! is a full instance (its key, user data, name, ID-derived MAC and address), a spare
//! gives its address up to a launch that needs it, and no spare outlives the service:
//! a crash leaves them to the next start, a stop takes them, and so does an image's
//! deletion.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Bench, Service, get_json, import_test_image, post_json, ssh, ssh_keygen, wait_for, wait_instance};
use ec2local::exec::virsh::Virsh;
use serde_json::{Value, json};

const URI: &str = "qemu:///system";
const BOOT: Duration = Duration::from_secs(420);
const NETWORK: &str = "ec2-bench-warm";

fn virsh() -> Virsh {
    Virsh::new(URI, Duration::from_secs(60))
}

/// A service on a network of three addresses, keeping `spares` warm spares.
fn service(data_dir: &Path, spares: u16) -> Service {
    let spares = spares.to_string();
    Service::start(
        data_dir,
        &[
            ("EC2LOCAL_LIBVIRT_URI", URI),
            ("EC2LOCAL_POOL_NAME", "ec2-bench-warm"),
            ("EC2LOCAL_NETWORK_NAME", NETWORK),
            ("EC2LOCAL_NETWORK_BRIDGE", "ec2br-warm"),
            ("EC2LOCAL_NETWORK_GATEWAY", "10.88.0.1/24"),
            ("EC2LOCAL_DHCP_RANGE", "10.88.0.10-10.88.0.12"),
            ("EC2LOCAL_MONITOR_INTERVAL_SECS", "2"),
            ("EC2LOCAL_WARM_SPARES", &spares),
        ],
    )
}

async fn spares(svc: &Service) -> Vec<Value> {
    let (status, body) = get_json(&svc.api("/warm-spares")).await;
    assert_eq!(status, 200, "{body}");
    body["spares"].as_array().unwrap().clone()
}

/// Waits for a ready spare of `instance_type` other than `not`.
async fn ready_spare(svc: &Service, instance_type: &str, not: &[&str]) -> Value {
    wait_for(
        &format!("a ready {instance_type} warm spare"),
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async move {
            spares(svc).await.into_iter().find(|s| {
                s["state"] == "ready"
                    && s["instance_type"] == instance_type
                    && !not.contains(&s["id"].as_str().unwrap())
            })
        },
    )
    .await
}

async fn launch(svc: &Service, body: Value) -> Value {
    let (status, launched) = post_json(&svc.api("/instances"), &body).await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap().to_string();
    wait_instance(svc, &id, "running", Duration::from_secs(120), |i| i["state"] == "running").await
}

async fn terminate(svc: &Service, id: &str) {
    assert_eq!(common::delete(&svc.api(&format!("/instances/{id}"))).await, 202);
    wait_instance(svc, id, "terminated", Duration::from_secs(120), |i| i["state"] == "terminated").await;
}

// REQ-INST-005, REQ-INST-006, REQ-NET-006, REQ-NET-007
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_launch_takes_a_warm_spare_and_no_spare_outlives_the_service() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut svc = service(&data, 1);
    let image_id = import_test_image(&svc, &bench).await;
    assert!(spares(&svc).await.is_empty(), "nothing launched yet, so nothing to keep spares of");

    // The first launch says what to keep spares of.
    let first = launch(&svc, json!({"instance_type": "t2.nano", "image_id": image_id})).await;
    terminate(&svc, first["id"].as_str().unwrap()).await;
    let spare = ready_spare(&svc, "t2.nano", &[]).await;
    let spare_id = spare["id"].as_str().unwrap().to_string();
    assert_eq!(virsh().domstate(&spare_id).await.unwrap(), "paused", "started, before its firmware ran");

    // A launch with a key, user data and a name takes it.
    let key = ssh_keygen(tmp.path(), "warm");
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (status, body) =
        post_json(&svc.api("/key-pairs"), &json!({"name": "warm", "public_key": public_key.trim()})).await;
    assert_eq!(status, 201, "{body}");
    let user_data = "#cloud-config\nruncmd:\n  - echo from-the-seed > /home/ubuntu/warm.txt\n";
    let warm = launch(
        &svc,
        json!({"instance_type": "t2.nano", "image_id": image_id, "key_name": "warm", "name": "warm one", "user_data": user_data}),
    )
    .await;
    let warm_id = warm["id"].as_str().unwrap().to_string();
    assert_eq!(warm_id, spare_id, "the launch took the spare");
    let mac_tail = &warm_id[2..];
    let mac = warm["mac_address"].as_str().unwrap().replace(':', "");
    assert!(mac.ends_with(mac_tail), "the MAC still derives from the ID: {mac} for {warm_id}");
    assert!(!spares(&svc).await.iter().any(|s| s["id"] == warm_id.as_str()), "a spare taken is no longer one");
    let log = svc.stderr();
    let timed = log.lines().find(|l| l.contains("launch timed") && l.contains(&warm_id) && l.contains("\"running\""));
    let timed = timed.unwrap_or_else(|| panic!("no launch summary for {warm_id}"));
    assert!(timed.contains("write_seed=") && timed.contains("resume=") && !timed.contains(" start="), "{timed}");
    // Set once the instance runs (the spare was defined before its name was known).
    wait_for("the domain's title to be the name", Duration::from_secs(60), Duration::from_millis(500), || async {
        virsh().run(&["list", "--title"]).await.unwrap().contains("warm one").then_some(())
    })
    .await;

    // Another spare is made for the next launch, and leaves one address free.
    let second = ready_spare(&svc, "t2.nano", &[&warm_id]).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    // REQ-NET-007: two launches of another type at once find one free address and the
    // spare's, which gives way: both are accepted, neither refused.
    let micro = json!({"instance_type": "t2.micro", "image_id": image_id});
    let (one, two) = tokio::join!(launch(&svc, micro.clone()), launch(&svc, micro.clone()));
    assert_eq!(virsh().domstate_if_defined(&second_id).await.unwrap(), None, "the spare gave up its domain");
    assert!(!data.join("instances").join(&second_id).exists());
    for micro in [one, two] {
        terminate(&svc, micro["id"].as_str().unwrap()).await;
    }

    // The guest that took the spare boots with its seed: the key lets in, the user data ran.
    let ip = wait_instance(&svc, &warm_id, "an address", BOOT, |i| i["ip_address"].is_string()).await["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_for("the user data to run", BOOT, Duration::from_secs(5), || {
        let (key, ip) = (key.clone(), ip.clone());
        async move {
            tokio::task::spawn_blocking(move || ssh(&key, "ubuntu", &ip, "cat warm.txt && hostname")).await.unwrap()
        }
    })
    .await;
    assert_eq!(done, format!("from-the-seed\n{warm_id}\n"));

    // A crash leaves the spare (now of t2.micro, launched last) to the next start.
    let crashed = ready_spare(&svc, "t2.micro", &[]).await["id"].as_str().unwrap().to_string();
    svc.kill();
    let svc = service(&data, 1);
    let after_crash = ready_spare(&svc, "t2.micro", &[&crashed]).await["id"].as_str().unwrap().to_string();
    assert_eq!(virsh().domstate_if_defined(&crashed).await.unwrap(), None, "discarded at start");
    assert!(!data.join("instances").join(&crashed).exists());
    assert!(!virsh().net_dumpxml_inactive(NETWORK).await.unwrap().contains(&crashed), "its reservation too");

    // A stop takes its spares with it.
    drop(svc);
    assert_eq!(virsh().domstate_if_defined(&after_crash).await.unwrap(), None, "discarded at shutdown");

    // An image's spares go before it: its deletion is not refused because of them.
    let svc = service(&data, 1);
    terminate(&svc, &warm_id).await;
    let last = ready_spare(&svc, "t2.micro", &[]).await["id"].as_str().unwrap().to_string();
    let response = common::client().delete(svc.api(&format!("/images/{image_id}"))).send().await.unwrap();
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    assert_eq!(virsh().domstate_if_defined(&last).await.unwrap(), None);
    assert!(spares(&svc).await.is_empty());
    common::assert_nothing_orphaned(&svc, NETWORK).await;
    drop(svc);
    let _ = virsh().run(&["net-destroy", NETWORK]).await;
    let _ = virsh().run(&["net-undefine", NETWORK]).await;
}
