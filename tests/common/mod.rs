//! Shared by the integration tests: start the real `ec2local` binary, talk to it over
//! HTTP, and (for bench tests) find the test bench set up by `scripts/test`.
#![allow(dead_code)]

pub mod cli;
pub mod mirror;
mod ssh_options;

pub use ssh_options::SSH_OPTIONS;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ec2local serve`, killed on drop.
pub struct Service {
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    child: Child,
    stderr_log: PathBuf,
}

impl Service {
    /// Starts the service on an ephemeral loopback port with `data_dir` and `env`.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Service {
        let stderr_log = data_dir.with_extension("stderr.log");
        if let Some(parent) = data_dir.parent() {
            std::fs::create_dir_all(parent).expect("data dir parent");
        }
        // Appended: a test that restarts the service keeps every run's log.
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&stderr_log).expect("stderr log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ec2local"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info,ec2local=debug")
            .env_remove("EC2LOCAL_BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ec2local");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let url = line
            .trim()
            .strip_prefix("ec2local listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("unexpected first line {line:?}; stderr:\n{log}")
            })
            .to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Service { url, port, data_dir: data_dir.to_path_buf(), child, stderr_log }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api{}", self.url, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or a power cut would end it; waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the service");
        self.child.wait().expect("reap the service");
    }

    /// Whether the process is still the same one (not restarted, not dead).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.stderr();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the service's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A libvirt URI that cannot answer: for the tests of the HTTP surface without libvirt.
pub const NO_LIBVIRT: &str = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";

/// A service with a data dir of its own and no libvirt; the directory lives as long as
/// the returned guard.
pub fn start_without_libvirt() -> (tempfile::TempDir, Service) {
    let tmp = tempfile::tempdir().unwrap();
    let service = Service::start(&tmp.path().join("data"), &[("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT)]);
    (tmp, service)
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// GET a JSON document; returns (status, body).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {status} body is not JSON ({e}): {text}"));
    (status, body)
}

/// Polls `check` every `every` until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// The test bench that `scripts/test` set up: a libvirtd in a network namespace
/// (this process runs inside it), the test image, and a data dir for the service.
pub struct Bench {
    pub image: PathBuf,
    pub data_dir: PathBuf,
    pub testbed: PathBuf,
}

impl Bench {
    pub fn from_env() -> Bench {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: bench tests run through scripts/test"))
        };
        let bench = Bench {
            image: var("EC2LOCAL_TEST_IMAGE").into(),
            data_dir: var("EC2LOCAL_BENCH_DATA").into(),
            testbed: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed"),
        };
        assert!(bench.image.is_file(), "test image {} is missing", bench.image.display());
        bench
    }

    pub fn testbed(&self, verb: &str) {
        let status = Command::new(&self.testbed).arg(verb).status().expect("run scripts/testbed");
        assert!(status.success(), "scripts/testbed {verb} failed");
    }
}

/// Generates an ed25519 key pair with ssh-keygen; returns the private key path.
pub fn ssh_keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ec2local-test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    key
}

/// Runs a command in a guest over SSH as `user`; None while SSH is not up yet.
pub fn ssh(key: &Path, user: &str, ip: &str, command: &str) -> Option<String> {
    let output = ssh_output(key, user, ip, command);
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ssh_output(key: &Path, user: &str, ip: &str, command: &str) -> std::process::Output {
    Command::new("ssh")
        .args(SSH_OPTIONS)
        .arg("-i")
        .arg(key)
        .arg(format!("{user}@{ip}"))
        .arg(command)
        .output()
        .expect("ssh client")
}

/// Runs `command` on a guest that already answers SSH, and returns its output. A loaded
/// host can keep a TCG guest's sshd from greeting within `ConnectTimeout`, so a failure
/// to connect (ssh's own exit code, 255) is tried again; any other failure panics with
/// ssh's error.
pub fn ssh_must(key: &Path, user: &str, ip: &str, command: &str) -> String {
    let mut last_error = String::new();
    for _ in 0..4 {
        let output = ssh_output(key, user, ip, command);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        last_error = format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        if output.status.code() != Some(255) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    panic!("ssh {user}@{ip} {command:?} failed: {last_error}");
}

/// Generates a key of `kind` (ed25519, rsa, ecdsa) with ssh-keygen; returns
/// (public key line, private key PEM).
pub fn keygen(dir: &Path, kind: &str, bits: Option<u32>) -> (String, String) {
    let file = dir.join(format!("{kind}-{}-{}", bits.unwrap_or(0), std::process::id()));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "test@ec2local", "-t", kind, "-f"]).arg(&file);
    if let Some(bits) = bits {
        cmd.args(["-b", &bits.to_string()]);
    }
    let _ = std::fs::remove_file(&file);
    assert!(cmd.status().unwrap().success());
    (std::fs::read_to_string(file.with_extension("pub")).unwrap(), std::fs::read_to_string(&file).unwrap())
}

/// POST JSON; returns (status, body).
pub async fn post_json(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = client().post(url).json(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: {status} not JSON ({e}): {text}")))
}

/// POST with no body (actions); returns (status, body).
pub async fn post_empty(url: &str) -> (u16, serde_json::Value) {
    let response = client().post(url).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls GET /api/instances/{id} until `done` accepts it.
pub async fn wait_instance(
    service: &Service,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let url = service.api(&format!("/instances/{id}"));
    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (status, body) = get_json(&url).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{id}: timed out after {timeout:?} waiting for {what}; last seen: {last}\n{}", service.stderr());
}

/// Imports the bench's test image into a service through the API; returns its id.
pub async fn import_test_image(service: &Service, bench: &Bench) -> String {
    // The copy of the image takes its time while guests boot on the same two cores.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let response = client
        .post(service.api("/images"))
        .json(&serde_json::json!({
            "name": "debian-12-test",
            "file_path": bench.image,
            "os": "debian",
            "os_version": "12",
            "default_user": "ubuntu",
            "description": "Debian 12 cloud image built by scripts/build-test-image"
        }))
        .send()
        .await
        .expect("POST /api/images");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Environment for a service with a NAT network of its own (`ec2-bench-NAME` on
/// 10.OCTET.0.0/24): services with separate databases must not hand out the same
/// addresses on one network, and tests run side by side.
pub fn own_network(name: &str, octet: u8) -> Vec<(String, String)> {
    vec![
        ("EC2LOCAL_NETWORK_NAME".into(), format!("ec2-bench-{name}")),
        ("EC2LOCAL_NETWORK_BRIDGE".into(), format!("ec2br-{name}")),
        ("EC2LOCAL_NETWORK_GATEWAY".into(), format!("10.{octet}.0.1/24")),
        ("EC2LOCAL_DHCP_RANGE".into(), format!("10.{octet}.0.10-10.{octet}.0.254")),
    ]
}

/// The service's failpoints (`src/failpoint.rs`): arm one, wait until the service is
/// paused there, do the damage, release it.
pub struct Failpoints {
    pub dir: PathBuf,
}

impl Failpoints {
    pub fn new(dir: &Path) -> Failpoints {
        std::fs::create_dir_all(dir).unwrap();
        Failpoints { dir: dir.to_path_buf() }
    }

    /// The environment that points a service at these failpoints.
    pub fn env(&self) -> (&'static str, String) {
        ("EC2LOCAL_FAILPOINT_DIR", self.dir.display().to_string())
    }

    pub fn arm(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.reached")));
        std::fs::write(self.dir.join(name), b"").unwrap();
    }

    /// Waits until `count` callers are paused at `name`.
    pub async fn reached(&self, name: &str, count: usize) {
        let marker = self.dir.join(format!("{name}.reached"));
        wait_for(&format!("{count} at failpoint {name}"), Duration::from_secs(120), Duration::from_millis(100), || {
            let n = std::fs::read_to_string(&marker).map(|s| s.lines().count()).unwrap_or(0);
            async move { (n >= count).then_some(()) }
        })
        .await
    }

    pub fn release(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }
}

/// DELETE (terminate); returns the status.
pub async fn delete(url: &str) -> u16 {
    client().delete(url).send().await.unwrap_or_else(|e| panic!("DELETE {url}: {e}")).status().as_u16()
}

/// The invariant of the fault-injection tests, over every instance of `service`:
/// settled (no task), a running or stopped row has its domain and disk, an error or
/// terminated row has no domain, directory or DHCP reservation left, every instance
/// directory belongs to a live row, and every domain using the data dir has a row.
pub async fn assert_nothing_orphaned(service: &Service, network: &str) -> Vec<serde_json::Value> {
    let virsh = ec2local::exec::virsh::Virsh::new("qemu:///system", Duration::from_secs(60));
    let (status, rows) = get_json(&service.api("/instances?include_terminated=true")).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap().clone();
    let net = virsh.net_dumpxml_inactive(network).await.unwrap();
    let instances = service.data_dir.join("instances");
    for row in &rows {
        let id = row["id"].as_str().unwrap();
        let mac = row["mac_address"].as_str().unwrap();
        let dir = instances.join(id);
        assert!(row["task"].is_null(), "{id} is still busy: {row}");
        let domain = virsh.domstate_if_defined(id).await.unwrap();
        match row["state"].as_str().unwrap() {
            "running" | "stopped" => {
                assert!(domain.is_some(), "{id} is {} without a domain", row["state"]);
                assert!(dir.join("disk.qcow2").is_file(), "{id} lost its disk");
            }
            "error" | "terminated" => {
                if row["state"] == "error" {
                    assert!(row["state_reason"].is_string(), "{id} is in error without a reason");
                }
                assert_eq!(domain, None, "{id} is {} but its domain is left", row["state"]);
                assert!(!dir.exists(), "{id} is {} but {} is left", row["state"], dir.display());
                assert!(!net.contains(mac), "{id} is {} but its DHCP reservation is left", row["state"]);
            }
            other => panic!("{id} is {other}, not a settled state: {row}"),
        }
    }
    let live =
        |id: &str| rows.iter().any(|r| r["id"] == id && matches!(r["state"].as_str(), Some("running" | "stopped")));
    if let Ok(entries) = std::fs::read_dir(&instances) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(live(&name), "orphan directory {}", entry.path().display());
        }
    }
    let names = virsh.run(&["list", "--all", "--name"]).await.unwrap();
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let xml = virsh.run(&["dumpxml", name]).await.unwrap_or_default();
        if xml.contains(&*instances.to_string_lossy()) {
            assert!(rows.iter().any(|r| r["id"] == name), "orphan domain {name}");
        }
    }
    rows
}
