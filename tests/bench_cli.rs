//! Issue 16 on a real guest: the CLI a person uses (`run --wait`, `ssh`, `ssh-config`
//! with the system ssh, stop/start/terminate by name), the status check it waits for,
//! and port forwarding through the service (stop/start, a service restart, 50 parallel
//! connections, terminate). One guest serves every step, in order.

mod common;

use std::time::Duration;

use common::cli::CliUser;
use common::{Bench, Service, get_json, import_test_image, wait_for};

const URI: &str = "qemu:///system";

/// A web server and a TCP echo server that come back on every boot (systemd units); the
/// test image is Debian's with cloud-init, hence python3.
const USER_DATA: &str = r#"#cloud-config
write_files:
  - path: /srv/www/index.html
    content: "hello through the forward\n"
  - path: /usr/local/bin/echo-server
    content: |
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
  - path: /etc/systemd/system/guest-web.service
    content: |
      [Service]
      ExecStart=/usr/bin/python3 -m http.server 80 --directory /srv/www
      Restart=always
      [Install]
      WantedBy=multi-user.target
  - path: /etc/systemd/system/guest-echo.service
    content: |
      [Service]
      ExecStart=/usr/bin/python3 /usr/local/bin/echo-server
      Restart=always
      [Install]
      WantedBy=multi-user.target
runcmd:
  - systemctl daemon-reload
  - systemctl enable --now guest-web.service guest-echo.service
"#;

fn service_env() -> Vec<(String, String)> {
    let mut env = vec![
        ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
        ("EC2LOCAL_POOL_NAME".to_string(), "ec2-bench-cli".to_string()),
        ("EC2LOCAL_MONITOR_INTERVAL_SECS".to_string(), "2".to_string()),
        ("EC2LOCAL_STOP_TIMEOUT_SECS".to_string(), "30".to_string()),
    ];
    env.extend(common::own_network("cli", 87));
    env
}

fn start_service(data: &std::path::Path) -> Service {
    let env = service_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(data, &env)
}

/// The host port in `forward`'s answer: `127.0.0.1:PORT -> i-… port N (active)`.
fn forwarded_port(made: &str) -> u16 {
    made.split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {made:?}"))
}

/// `data` sent through the forward to the guest's echo server, and what came back.
async fn echoed(port: u16, data: Vec<u8>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
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

/// GET through the forward; None when the connection is refused or closed.
async fn fetch(port: u16, path: &str) -> Option<Vec<u8>> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let response = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.bytes().await.ok().map(|b| b.to_vec())
}

async fn page_through(port: u16) -> String {
    wait_for("the page through the forward", Duration::from_secs(60), Duration::from_secs(1), || async move {
        fetch(port, "/").await.map(|b| String::from_utf8_lossy(&b).into_owned())
    })
    .await
}

// issue 16: CLI, status checks and port forwarding; REQ-SSH-001, REQ-INST-001, REQ-INST-009, REQ-INST-010, REQ-INST-012
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_person_runs_logs_in_and_forwards_ports_from_the_command_line() {
    let bench = Bench::from_env();
    let tmp = bench.data_dir.with_file_name("cli");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let data = tmp.join("data");
    let mut service = start_service(&data);
    import_test_image(&service, &bench).await;
    let mut user = CliUser::new(&service.url, &tmp.join("home"));
    user.run(&["keys", "create", "k1"]).ok();
    let user_data = tmp.join("user-data.yaml");
    std::fs::write(&user_data, USER_DATA).unwrap();

    // run --wait: progress on stderr, then how to log in, once SSH answers.
    let launch = user.run(&[
        "run",
        "--image",
        "debian-12-test",
        "--name",
        "web",
        "--key",
        "k1",
        "--type",
        "t2.micro",
        "--user-data",
        user_data.to_str().unwrap(),
        "--wait",
    ]);
    let out = launch.ok();
    assert!(out.contains("is ready at 10.87.0.") && out.contains("ec2local ssh web"), "{out}");
    let shown: serde_json::Value = serde_json::from_str(&user.run(&["show", "web", "--json"]).ok()).unwrap();
    let id = shown["id"].as_str().unwrap().to_string();
    assert_eq!(shown["status"], "ok", "{shown}");
    assert!(shown["reachable_at"].is_string(), "{shown}");
    assert!(!shown["host_keys"].as_array().unwrap().is_empty(), "{shown}");
    let listing = user.run(&["ls"]).ok();
    let row = listing.lines().find(|l| l.starts_with(&id)).unwrap_or_default().to_string();
    assert!(row.contains(" web ") && row.contains(" running ") && row.contains(" ok "), "{listing}");

    // ssh runs the system ssh with the saved key and the recorded host key.
    let hello = user.run(&["ssh", "web", "--", "echo", "hello", "from", "$(id", "-un)"]).ok();
    assert_eq!(hello.trim(), "hello from ubuntu");
    let known = std::fs::read_to_string(user.config_dir().join("known_hosts")).unwrap();
    assert!(known.lines().any(|l| l.starts_with(&format!("{id} ssh-"))), "{known}");

    // ssh-config --install: the system ssh logs in by name through ~/.ssh/config.
    user.run(&["ssh-config", "--install"]).ok();
    let ssh_config = user.home.join(".ssh/config");
    let system_ssh = |host: &str| {
        std::process::Command::new("ssh")
            .args(["-F", ssh_config.to_str().unwrap(), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host])
            .args(["echo", "via-config"])
            .output()
            .unwrap()
    };
    for host in ["web", id.as_str()] {
        let output = system_ssh(host);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "via-config",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A guest whose key is not the recorded one is refused, not trusted.
    let known_hosts = user.config_dir().join("known_hosts");
    let (other_key, _) = common::keygen(&tmp, "ed25519", None);
    let other = other_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&known_hosts, format!("{id} {other}\n")).unwrap();
    let refused = system_ssh("web");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    user.run(&["ssh-config", "--install"]).ok();

    // forward: a free host port to the guest's port 80.
    let made = user.run(&["forward", "web", "80"]).ok();
    assert!(made.starts_with("127.0.0.1:"), "{made}");
    let port = forwarded_port(&made);
    assert_eq!(page_through(port).await, "hello through the forward\n");

    // 50 connections at once through one forward, a MiB each way, all intact.
    let echo = forwarded_port(&user.run(&["forward", "web", "7000"]).ok());
    let mut parallel = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        parallel.spawn(async move {
            let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(31) ^ n) as u8).collect();
            (echoed(echo, sent.clone()).await == sent, n)
        });
    }
    let all_done = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(done) = parallel.join_next().await {
            let (intact, n) = done.unwrap();
            assert!(intact, "connection {n} came back altered");
        }
    });
    all_done.await.expect("50 parallel connections through the forward did not finish");

    // stop by name: the forward pauses; start: it relays again, same host key.
    let host_keys = |user: &CliUser| {
        let shown: serde_json::Value = serde_json::from_str(&user.run(&["show", "web", "--json"]).ok()).unwrap();
        shown["host_keys"].clone()
    };
    let keys_before = host_keys(&user);
    assert!(user.run(&["stop", "web", "--wait"]).ok().contains("stopped"));
    let forwards: serde_json::Value = serde_json::from_str(&user.run(&["forward", "ls", "--json"]).ok()).unwrap();
    assert_eq!(forwards.as_array().unwrap().len(), 2, "{forwards}");
    assert!(forwards.as_array().unwrap().iter().all(|f| f["state"] == "paused"), "{forwards}");
    assert_eq!(fetch(port, "/").await, None);
    let (_, stopped) = get_json(&service.api(&format!("/instances/{id}"))).await;
    assert_eq!(stopped["status"], "not-applicable", "{stopped}");
    assert!(user.run(&["start", "web", "--wait"]).ok().contains("running"));
    assert_eq!(host_keys(&user), keys_before, "the guest's host keys changed across stop and start");
    assert_eq!(page_through(port).await, "hello through the forward\n");
    assert_eq!(user.run(&["ssh", "web", "--", "echo", "again"]).ok().trim(), "again");

    // A restart of the service keeps the forward.
    service.kill();
    service = start_service(&data);
    user.endpoint = service.url.clone();
    assert_eq!(page_through(port).await, "hello through the forward\n");
    assert_eq!(echoed(echo, b"both forwards".to_vec()).await, b"both forwards");
    let listed = user.run(&["forward", "ls"]).ok();
    assert!(listed.contains(&format!("127.0.0.1:{port}")) && listed.contains("active"), "{listed}");
    // A host port of one's choosing, the instance named by its id; `forward rm` frees it.
    let chosen = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let made = user.run(&["forward", &id, &format!("{chosen}:80")]).ok();
    assert!(made.starts_with(&format!("127.0.0.1:{chosen} ")), "{made}");
    assert_eq!(page_through(chosen).await, "hello through the forward\n");
    user.run(&["forward", "rm", &id, &chosen.to_string()]).ok();
    assert!(std::net::TcpListener::bind(("127.0.0.1", chosen)).is_ok(), "forward rm left the port taken");
    let left: serde_json::Value = serde_json::from_str(&user.run(&["forward", "ls", "--json"]).ok()).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    let console = user.run(&["console", "web"]).ok();
    assert!(console.contains("Cloud-init"), "{console}");

    // terminate by name: the forward goes with the instance and its port is free again.
    assert!(user.run(&["terminate", "web", "--wait"]).ok().contains("terminated"));
    assert_eq!(user.run(&["forward", "ls", "--json"]).ok().trim(), "[]");
    wait_for(
        "the forward's port to be free after terminate",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async move { std::net::TcpListener::bind(("127.0.0.1", port)).ok().map(drop) },
    )
    .await;
    let stderr = user.run(&["ssh", "web"]).failed();
    assert!(stderr.contains("terminated"), "{stderr}");
    // `ls` leaves terminated instances out; `ls --all` shows them.
    let listed = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&user.run(args).ok()).unwrap().as_array().unwrap().clone()
    };
    assert!(!listed(&["ls", "--json"]).iter().any(|i| i["id"] == id.as_str()));
    let all = listed(&["ls", "--all", "--json"]);
    assert!(all.iter().any(|i| i["id"] == id.as_str() && i["state"] == "terminated"), "{all:?}");
    common::assert_nothing_orphaned(&service, "ec2-bench-cli").await;
}
