//! Port forwarding on the bench (issue 16: port forwarding): a real guest serves a web
//! page and an echo service, reached through forwards on 127.0.0.1 of the host, across
//! a stop and start of the instance and a restart of the service, until the instance is
//! terminated and its forwards end with it.

mod common;

use std::time::Duration;

use common::{Bench, Service, client, get_json, import_test_image, post_empty, post_json, wait_for, wait_instance};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const URI: &str = "qemu:///system";
const BOOT: Duration = Duration::from_secs(300);
const NETWORK: &str = "ec2-bench-fwd";

/// The guest's services, run by systemd so that they come back after a stop and start.
/// The test image is Debian's with cloud-init, hence python3.
const USER_DATA: &str = r#"#!/bin/sh
set -e
mkdir -p /srv/www
echo "hello from the guest" > /srv/www/index.html
cat > /usr/local/bin/echo-server <<'PY'
import socketserver

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

Server(("0.0.0.0", 7000), Echo).serve_forever()
PY
cat > /etc/systemd/system/guest-web.service <<'UNIT'
[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --directory /srv/www
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
cat > /etc/systemd/system/guest-echo.service <<'UNIT'
[Service]
ExecStart=/usr/bin/python3 /usr/local/bin/echo-server
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now guest-web.service guest-echo.service
"#;

fn start(data_dir: &std::path::Path) -> Service {
    let mut env = vec![
        ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
        ("EC2LOCAL_POOL_NAME".to_string(), "ec2-bench-fwd".to_string()),
        ("EC2LOCAL_MONITOR_INTERVAL_SECS".to_string(), "2".to_string()),
    ];
    env.extend(common::own_network("fwd", 87));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(data_dir, &env)
}

fn host_port(forward: &Value) -> u16 {
    forward["host_port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or_else(|| panic!("{forward}"))
}

/// The page at `http://127.0.0.1:PORT/`, once it answers.
async fn page_through(port: u16, what: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/");
    wait_for(what, BOOT, Duration::from_secs(2), || {
        let url = url.clone();
        async move {
            let response = client().get(&url).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            response.text().await.ok()
        }
    })
    .await
}

async fn echoed(port: u16, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).await.unwrap();
    sender.await.unwrap();
    back
}

async fn closed_at_once(port: u16) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

async fn forwards_of(service: &Service, id: &str) -> Vec<Value> {
    let (status, list) = get_json(&service.api(&format!("/instances/{id}/forwards"))).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn forwards_reach_a_guests_services_through_its_life() {
    let bench = Bench::from_env();
    let tmp = bench.data_dir.with_file_name("forwards");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let data_dir = tmp.join("data");
    let mut svc = start(&data_dir);
    import_test_image(&svc, &bench).await;
    let (status, launched) = post_json(
        &svc.api("/instances"),
        &json!({"instance_type": "t2.nano", "image_id": "debian-12-test", "name": "forwarded", "user_data": USER_DATA}),
    )
    .await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap().to_string();
    let forwards = svc.api(&format!("/instances/{id}/forwards"));

    // Forwards may be made before the guest is up: they wait for it.
    let (status, web) = post_json(&forwards, &json!({"instance_port": 8080})).await;
    assert_eq!(status, 201, "{web}");
    let (status, echo) = post_json(&forwards, &json!({"instance_port": 7000})).await;
    assert_eq!(status, 201, "{echo}");
    let (web, echo) = (host_port(&web), host_port(&echo));
    wait_instance(&svc, &id, "running with an address", BOOT, |i| {
        i["state"] == "running" && i["ip_address"].is_string()
    })
    .await;
    let page = page_through(web, "the guest's page through the forward").await;
    assert_eq!(page.trim(), "hello from the guest");
    assert!(forwards_of(&svc, &id).await.iter().all(|f| f["state"] == "active"));

    // 50 connections at once through one forward, a MiB each way, all intact.
    let mut parallel = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        parallel.spawn(async move {
            let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(31) ^ n) as u8).collect();
            (echoed(echo, sent.clone()).await == sent, n)
        });
    }
    let all_done = tokio::time::timeout(BOOT, async {
        while let Some(done) = parallel.join_next().await {
            let (intact, n) = done.unwrap();
            assert!(intact, "connection {n} came back altered");
        }
    });
    all_done.await.expect("50 parallel connections through the forward did not finish");

    // Stopped: the forward stays, paused; connections are closed at once.
    let (status, _) = post_empty(&svc.api(&format!("/instances/{id}/stop"))).await;
    assert_eq!(status, 202);
    wait_instance(&svc, &id, "stopped", Duration::from_secs(120), |i| i["state"] == "stopped").await;
    let paused = forwards_of(&svc, &id).await;
    assert!(paused.iter().all(|f| f["state"] == "paused"), "{paused:?}");
    assert_eq!(paused[0]["state_reason"], format!("instance {id} is stopped"));
    assert!(closed_at_once(web).await, "a stopped instance's forward relayed a connection");

    // Started again: the same forward works.
    let (status, _) = post_empty(&svc.api(&format!("/instances/{id}/start"))).await;
    assert_eq!(status, 202);
    wait_instance(&svc, &id, "running again", BOOT, |i| i["state"] == "running" && i["ip_address"].is_string()).await;
    assert_eq!(page_through(web, "the page after a start").await.trim(), "hello from the guest");

    // A restart of the service opens the forwards again.
    drop(svc);
    svc = start(&data_dir);
    assert_eq!(forwards_of(&svc, &id).await.len(), 2);
    assert_eq!(page_through(web, "the page after a service restart").await.trim(), "hello from the guest");

    // Terminated: its forwards end and their ports are released.
    let status = client().delete(svc.api(&format!("/instances/{id}"))).send().await.unwrap().status();
    assert_eq!(status, 202);
    wait_instance(&svc, &id, "terminated", Duration::from_secs(120), |i| i["state"] == "terminated").await;
    assert!(forwards_of(&svc, &id).await.is_empty());
    let gone = client().delete(svc.api(&format!("/instances/{id}/forwards/{web}"))).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    for port in [web, echo] {
        wait_for(
            "the forward's port to be released",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || async move { std::net::TcpListener::bind(("127.0.0.1", port)).is_ok().then_some(()) },
        )
        .await;
    }
    common::assert_nothing_orphaned(&svc, NETWORK).await;
}
