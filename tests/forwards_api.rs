//! Port forwarding through the real service without libvirt (issue 16: port
//! forwarding). Instances cannot be launched here, so their rows are written into the
//! service's database before it starts: a "running" instance whose address is
//! 127.0.0.1, where the test's echo server stands in for the guest.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{NO_LIBVIRT, Service, client, get_json, post_json, wait_for};
use ec2local::db::Db;
use ec2local::db::instances::{InstanceRow, StatusWrite};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RUNNING: &str = "i-0000000a";
const STOPPED: &str = "i-0000000b";
const TERMINATED: &str = "i-0000000c";

fn instance(id: &str, state: &str, ip: Option<&str>, n: u8) -> InstanceRow {
    InstanceRow {
        id: id.into(),
        name: String::new(),
        instance_type: "t2.nano".into(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 8,
        image_id: "ami-00000001".into(),
        image_name: "test".into(),
        login_user: "ubuntu".into(),
        key_name: None,
        public_key: None,
        user_data: None,
        state: state.into(),
        task: None,
        state_reason: None,
        mac_address: format!("52:54:00:00:00:{n:02x}"),
        reserved_ip: None,
        ip_address: ip.map(str::to_string),
        created_at: "2026-01-01T00:00:00Z".into(),
        launched_at: None,
        terminated_at: None,
        reservation_id: None,
        disable_api_termination: false,
        disable_api_stop: false,
        reachable_at: None,
        host_public_keys: Vec::new(),
        host_key: None,
    }
}

fn database(data_dir: &Path) -> Db {
    std::fs::create_dir_all(data_dir).unwrap();
    Db::open(&ec2local::paths::Paths::new(data_dir).database()).unwrap()
}

/// A data dir with a running instance at 127.0.0.1, a stopped and a terminated one.
async fn seeded(data_dir: &Path) {
    let rows = [
        instance(RUNNING, "running", Some("127.0.0.1"), 1),
        instance(STOPPED, "stopped", None, 2),
        instance(TERMINATED, "terminated", None, 3),
    ];
    database(data_dir)
        .call(move |c| rows.iter().try_for_each(|row| ec2local::db::instances::insert(c, row)))
        .await
        .unwrap();
}

fn start(data_dir: &Path, env: &[(&str, &str)]) -> Service {
    let mut all = vec![("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT)];
    all.extend_from_slice(env);
    Service::start(data_dir, &all)
}

/// The guest's service: echoes each connection back, then closes its side.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
    port
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn round_trip(port: u16, data: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    stream.write_all(data).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back)).await.unwrap().unwrap();
    back
}

async fn closed_at_once(port: u16) -> bool {
    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(local(port)).is_ok()
}

async fn forward(service: &Service, id: &str, body: Value) -> (u16, Value) {
    post_json(&service.api(&format!("/instances/{id}/forwards")), &body).await
}

fn host_port(forward: &Value) -> u16 {
    forward["host_port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or_else(|| panic!("{forward}"))
}

async fn delete(service: &Service, id: &str, port: &str) -> (u16, Value) {
    let response = client().delete(service.api(&format!("/instances/{id}/forwards/{port}"))).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_forward_relays_to_the_instance_until_it_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seeded(&data).await;
    let service = start(&data, &[]);
    let guest = echo_server().await;

    let (status, created) = forward(&service, RUNNING, json!({"instance_port": guest})).await;
    assert_eq!(status, 201, "{created}");
    let port = host_port(&created);
    assert_eq!(created["instance_id"], RUNNING);
    assert_eq!(created["instance_port"], guest);
    assert_eq!(created["bind_address"], "127.0.0.1");
    assert_eq!(created["state"], "active", "{created}");
    assert!(created["state_reason"].is_null(), "{created}");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'), "{created}");
    assert_eq!(created["connections"], 0);
    assert_eq!(round_trip(port, b"through the forward").await, b"through the forward");

    // Listed for the instance and among every instance's.
    let (status, listed) = get_json(&service.api(&format!("/instances/{RUNNING}/forwards"))).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(1)), "{listed}");
    assert_eq!(listed[0]["host_port"], port);
    let (status, all) = get_json(&service.api("/forwards")).await;
    assert_eq!((status, all.as_array().map(Vec::len)), (200, Some(1)), "{all}");

    // A stopped instance's forward listens, paused, and closes connections at once.
    let (status, paused) = forward(&service, STOPPED, json!({"instance_port": 22})).await;
    assert_eq!(status, 201, "{paused}");
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["state_reason"], format!("instance {STOPPED} is stopped"));
    assert!(closed_at_once(host_port(&paused)).await);

    let (status, _) = delete(&service, RUNNING, &port.to_string()).await;
    assert_eq!(status, 204);
    wait_for("the port to be released", Duration::from_secs(5), Duration::from_millis(50), || async move {
        port_is_free(port).then_some(())
    })
    .await;
    let (status, again) = delete(&service, RUNNING, &port.to_string()).await;
    assert_eq!((status, again["code"].as_str()), (404, Some("ForwardNotFound")), "{again}");
    let (_, all) = get_json(&service.api("/forwards")).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seeded(&data).await;
    let service = start(&data, &[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    for (id, body, status, code) in [
        (RUNNING, json!({"instance_port": 0}), 400, "InvalidParameterValue"),
        (RUNNING, json!({"instance_port": 65536}), 400, "InvalidParameterValue"),
        (RUNNING, json!({"host_port": 0, "instance_port": 80}), 400, "InvalidParameterValue"),
        (RUNNING, json!({"host_port": 70000, "instance_port": 80}), 400, "InvalidParameterValue"),
        (RUNNING, json!({}), 400, "BadRequest"),
        (RUNNING, json!({"instance_port": "80"}), 400, "BadRequest"),
        (RUNNING, json!({"instance_port": 80, "hostport": 8080}), 400, "BadRequest"),
        ("i-0000000f", json!({"instance_port": 80}), 404, "InvalidInstanceID.NotFound"),
        ("web", json!({"instance_port": 80}), 400, "InvalidInstanceID.Malformed"),
        (TERMINATED, json!({"instance_port": 80}), 409, "IncorrectInstanceState"),
        (RUNNING, json!({"host_port": taken_port, "instance_port": 80}), 409, "PortInUse"),
    ] {
        let (got, body_back) = forward(&service, id, body.clone()).await;
        assert_eq!((got, body_back["code"].as_str()), (status, Some(code)), "{id} {body}: {body_back}");
        assert!(!body_back["message"].as_str().unwrap().is_empty(), "{body_back}");
    }
    // The answer names what is wrong.
    for (body, expected) in [
        (json!({}), "instance_port is required"),
        (json!({"instance_port": "80"}), "instance_port: expected a number, found a string"),
        (json!({"instance_port": 80, "hostport": 8080}), "hostport"),
        (json!({"host_port": 0, "instance_port": 80}), "host_port must be a port number from 1 to 65535, not 0"),
    ] {
        let (_, refused) = forward(&service, RUNNING, body).await;
        assert!(refused["message"].as_str().unwrap().contains(expected), "{refused}");
    }
    let (_, in_use) = forward(&service, RUNNING, json!({"host_port": taken_port, "instance_port": 80})).await;
    assert!(in_use["message"].as_str().unwrap().contains(&format!("port {taken_port}")), "{in_use}");
    let (status, not_port) = delete(&service, RUNNING, "http").await;
    assert_eq!(status, 400, "{not_port}");
    let (status, unknown) = get_json(&service.api("/instances/i-0000000f/forwards")).await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("InvalidInstanceID.NotFound")));
    let (status, all) = get_json(&service.api("/forwards")).await;
    assert_eq!((status, all), (200, json!([])), "a refused request recorded a forward");
    let (_, spec) = get_json(&format!("{}/openapi.json", service.url)).await;
    for (path, method) in [
        ("/instances/{id}/forwards", "post"),
        ("/instances/{id}/forwards", "get"),
        ("/instances/{id}/forwards/{host_port}", "delete"),
        ("/forwards", "get"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from the spec");
    }
}

#[tokio::test]
async fn forwards_survive_a_restart_and_a_port_taken_meanwhile_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seeded(&data).await;
    let guest = echo_server().await;
    let service = start(&data, &[]);
    let (_, kept) = forward(&service, RUNNING, json!({"instance_port": guest})).await;
    let (_, squatted) = forward(&service, RUNNING, json!({"instance_port": guest})).await;
    let (kept, squatted) = (host_port(&kept), host_port(&squatted));
    drop(service);
    let squatter = std::net::TcpListener::bind(local(squatted)).expect("the stopped service released its ports");

    let service = start(&data, &[]);
    assert_eq!(round_trip(kept, b"after a restart").await, b"after a restart");
    let (_, all) = get_json(&service.api("/forwards")).await;
    let waiting = all.as_array().unwrap().iter().find(|f| f["host_port"] == squatted).unwrap().clone();
    assert_eq!(waiting["state"], "paused", "{waiting}");
    assert!(waiting["state_reason"].as_str().unwrap().contains("in use"), "{waiting}");

    drop(squatter);
    let url = service.api("/forwards");
    wait_for("the port to be bound again", Duration::from_secs(10), Duration::from_millis(200), || {
        let url = url.clone();
        async move {
            let (_, all) = get_json(&url).await;
            all.as_array().unwrap().iter().all(|f| f["state"] == "active").then_some(())
        }
    })
    .await;
    assert_eq!(round_trip(squatted, b"retried").await, b"retried");
}

#[tokio::test]
async fn terminating_the_instance_ends_its_forwards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seeded(&data).await;
    let service = start(&data, &[]);
    let (status, created) = forward(&service, RUNNING, json!({"instance_port": 80})).await;
    assert_eq!(status, 201, "{created}");
    let port = host_port(&created);
    // The state write a terminate ends with, as the instance service makes it.
    let terminated = database(&data)
        .call(|c| {
            let write = StatusWrite {
                from_state: "running",
                to_state: "terminated",
                terminated_at: Some("now"),
                ..Default::default()
            };
            ec2local::db::instances::write_status(c, RUNNING, &write)
        })
        .await
        .unwrap();
    assert!(terminated);
    let (status, listed) = get_json(&service.api(&format!("/instances/{RUNNING}/forwards"))).await;
    assert_eq!((status, listed), (200, json!([])));
    wait_for("the upkeep to close the port", Duration::from_secs(10), Duration::from_millis(100), || async move {
        port_is_free(port).then_some(())
    })
    .await;
}

#[tokio::test]
async fn listening_beyond_loopback_is_warned_about_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    // No forward is made: nothing listens on that address.
    let service = start(&tmp.path().join("data"), &[("EC2LOCAL_FORWARD_BIND", "0.0.0.0")]);
    let stderr = service.stderr();
    assert!(stderr.contains("warning: port forwards listen on 0.0.0.0"), "{stderr}");
}
