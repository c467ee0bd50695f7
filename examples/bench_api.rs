//! API benchmark (issue 17, items 3 and 5): latency of `GET /api/health`, answered from
//! the health snapshot, next to one live probe of libvirt (what every health request
//! cost before); latency of `GET /api/instances` with 1,000 terminated rows seeded
//! through the service's own database code, first with no guest, then with 10 t2.nano
//! guests launched through the service and running (the monitor and the status checks
//! working on them); and the service's resident memory: idle after start, after the
//! list benchmark, across 20 launch/terminate cycles and idle at the end. Run by
//! `scripts/bench-api` inside the bench; prints Markdown tables.
//!
//! With EC2LOCAL_BENCH_REFERENCE_BIN (an older build) it only compares the list of the
//! two builds, with no libvirt and no guest (`scripts/bench-api --list-only REF_BIN`).
//!
//! Environment: EC2LOCAL_BIN, EC2LOCAL_BENCH_WORK, EC2LOCAL_TEST_IMAGE; optional
//! EC2LOCAL_BENCH_GUESTS (10), EC2LOCAL_BENCH_CYCLES (20), EC2LOCAL_BENCH_SETTLE_SECS
//! (600: how long to wait for the guests' status checks to pass before the second
//! measurement with guests; 0 skips it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ec2local::db::Db;
use ec2local::db::instances::{self as rows, InstanceRow};
use serde_json::{Value, json};

const REQUESTS: usize = 1000;
const LIST_REQUESTS: usize = 200;
const ROWS: usize = 1000;
const URI: &str = "qemu:///system";
const POOL: &str = "ec2-bench-api";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/bench-api)"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A terminated instance row, as the service writes one.
fn row(n: usize) -> InstanceRow {
    let id = format!("i-{n:08x}");
    InstanceRow {
        id,
        name: format!("bench-{n}"),
        instance_type: "t2.nano".into(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 8,
        image_id: "ami-00000001".into(),
        image_name: "debian-12-test".into(),
        login_user: "ubuntu".into(),
        key_name: None,
        public_key: None,
        user_data: None,
        state: "terminated".into(),
        task: None,
        state_reason: None,
        mac_address: format!("52:54:00:{:02x}:{:02x}:{:02x}", n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff),
        reserved_ip: None,
        ip_address: None,
        created_at: "2026-11-26T10:00:00Z".into(),
        launched_at: Some("2026-11-26T10:00:01Z".into()),
        terminated_at: Some("2026-11-26T10:05:00Z".into()),
        reservation_id: None,
        disable_api_termination: false,
        disable_api_stop: false,
        reachable_at: None,
        host_public_keys: Vec::new(),
        host_key: None,
    }
}

/// (p50, p99) in milliseconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// The service's resident memory, MB.
fn rss_mb(server: &Child) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

struct Bench {
    client: reqwest::Client,
    url: String,
}

impl Bench {
    async fn timed_gets(&self, path: &str, count: usize) -> Vec<f64> {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let response = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
            let _ = response.bytes().await.unwrap();
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method.clone(), format!("{}/api{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    async fn list(&self, include_terminated: bool) -> Vec<Value> {
        let path = format!("/instances?include_terminated={include_terminated}");
        self.call(reqwest::Method::GET, &path, None).await.as_array().unwrap().clone()
    }

    /// Launches `count` t2.nano instances at once; returns their ids.
    async fn launch(&self, image: &str, count: usize) -> Vec<String> {
        let body = json!({"instance_type": "t2.nano", "image_id": image});
        let posts = (0..count).map(|_| self.call(reqwest::Method::POST, "/instances", Some(body.clone())));
        futures_util::future::join_all(posts).await.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    }

    /// Waits until every one of `ids` satisfies `done`; false if `timeout` passes first.
    async fn wait_all(&self, ids: &[String], what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.list(true).await;
            let pending = ids.iter().filter(|id| !all.iter().any(|i| i["id"] == id.as_str() && done(i))).count();
            if pending == 0 {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("{pending} of {} instances not {what} after {timeout:?}", ids.len());
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_running(&self, ids: &[String]) {
        assert!(self.wait_all(ids, "running", Duration::from_secs(300), |i| i["state"] == "running").await);
    }

    async fn terminate(&self, ids: &[String]) {
        for id in ids {
            self.call(reqwest::Method::DELETE, &format!("/instances/{id}"), None).await;
        }
        assert!(self.wait_all(ids, "terminated", Duration::from_secs(300), |i| i["state"] == "terminated").await);
    }

    /// (p50, p99) of the default list (as the UI asks) and of the list with terminated rows.
    async fn list_latency(&self) -> [(f64, f64); 2] {
        self.timed_gets("/api/instances", 5).await;
        let default = percentiles(self.timed_gets("/api/instances", LIST_REQUESTS).await);
        let all = percentiles(self.timed_gets("/api/instances?include_terminated=true", LIST_REQUESTS).await);
        [default, all]
    }
}

/// What one health request cost before the snapshot: `virsh version`, then the
/// network's and the pool's state, as child processes.
fn live_probe_ms(network: &str, pool: &str) -> f64 {
    let started = Instant::now();
    for args in [vec!["version"], vec!["net-info", network], vec!["net-dumpxml", network], vec!["pool-info", pool]] {
        let ok = Command::new("virsh").args(["-c", URI]).args(&args).output().unwrap().status.success();
        assert!(ok, "virsh {args:?}");
    }
    started.elapsed().as_secs_f64() * 1000.0
}

async fn seed(data: &str) {
    std::fs::create_dir_all(data).unwrap();
    let db = Db::open(&ec2local::paths::Paths::new(data).database()).unwrap();
    db.call(|c| {
        for n in 1..=ROWS {
            rows::insert(c, &row(n))?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

fn start_server(bin: &str, data: &str, log: &str, uri: &str) -> (Child, String) {
    let log = std::fs::File::create(log).unwrap();
    let mut server = Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir", data, "--libvirt-uri", uri, "--pool-name", POOL])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().trim_start_matches("ec2local listening on ").to_string();
    (server, url)
}

fn ms_row(what: &str, (p50, p99): (f64, f64)) {
    println!("| {what} | {p50:.2} | {p99:.2} |");
}

/// A reference built before migration 6 refuses its database: its copy loses what
/// migration 6 added (two indexes), which is all that differs from schema 5.
fn schema_before_list_indexes(data: &str) {
    let conn = rusqlite::Connection::open(ec2local::paths::Paths::new(data).database()).unwrap();
    let undo = "DROP INDEX instances_created; DROP INDEX instances_live_created; PRAGMA user_version = 5;";
    conn.execute_batch(undo).unwrap();
}

/// The list alone, with no libvirt (runs anywhere, no bench): the 1,000 seeded rows
/// served by `bin` and by `reference` in turn, each from a fresh copy of the database,
/// three rounds each; latency and RSS per round.
async fn list_only(bin: &str, reference: &str, work: &str) {
    let seeded = format!("{work}/seeded");
    seed(&seeded).await;
    println!(
        "| binary, round | list as the UI asks, p50 / p99 (ms) | include_terminated ({ROWS} rows), p50 / p99 (ms) | RSS after start / after (MB) |"
    );
    println!("|---|---|---|---|");
    for round in 1..=3 {
        for (name, bin) in [("reference", reference), ("this build", bin)] {
            let data = format!("{work}/{name}-{round}");
            let copied = Command::new("cp").args(["-a", &seeded, &data]).status().unwrap();
            assert!(copied.success());
            if name == "reference" {
                schema_before_list_indexes(&data);
            }
            let no_libvirt = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
            let (mut server, url) = start_server(bin, &data, &format!("{data}.log"), no_libvirt);
            let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let bench = Bench { client, url };
            tokio::time::sleep(Duration::from_secs(3)).await;
            let idle = rss_mb(&server);
            bench.timed_gets("/api/instances?include_terminated=true", 5).await;
            let [default, all] = bench.list_latency().await;
            let after = rss_mb(&server);
            let _ = server.kill();
            let _ = server.wait();
            println!(
                "| {name}, {round} | {:.2} / {:.2} | {:.2} / {:.2} | {idle:.1} / {after:.1} |",
                default.0, default.1, all.0, all.1
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(reference) = std::env::var("EC2LOCAL_BENCH_REFERENCE_BIN") {
        return list_only(&env("EC2LOCAL_BIN"), &reference, &env("EC2LOCAL_BENCH_WORK")).await;
    }
    let (bin, work, image_file) = (env("EC2LOCAL_BIN"), env("EC2LOCAL_BENCH_WORK"), env("EC2LOCAL_TEST_IMAGE"));
    let guests = env_or("EC2LOCAL_BENCH_GUESTS", 10) as usize;
    let cycles = env_or("EC2LOCAL_BENCH_CYCLES", 20) as usize;
    let settle = Duration::from_secs(env_or("EC2LOCAL_BENCH_SETTLE_SECS", 600));
    let data = format!("{work}/data");
    seed(&data).await;
    let (mut server, url) = start_server(&bin, &data, &format!("{work}/service.log"), URI);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let bench = Bench { client, url };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut memory = vec![("idle, 3 s after start".to_string(), rss_mb(&server))];

    // Warm up: connections, the first snapshot, SQLite's cache.
    bench.timed_gets("/api/health", 20).await;
    bench.timed_gets("/api/instances?include_terminated=true", 5).await;
    let health = percentiles(bench.timed_gets("/api/health", REQUESTS).await);
    let probe = percentiles((0..20).map(|_| live_probe_ms("ec2-as-service", POOL)).collect());
    assert_eq!(bench.list(true).await.len(), ROWS);
    let no_guest = bench.list_latency().await;

    let body = json!({"name": "bench", "file_path": image_file, "default_user": "ubuntu"});
    let image = bench.call(reqwest::Method::POST, "/images", Some(body)).await["id"].as_str().unwrap().to_string();
    let ids = bench.launch(&image, guests).await;
    bench.wait_running(&ids).await;
    let booting = bench.list_latency().await;
    assert_eq!(bench.list(false).await.len(), guests);
    memory.push((format!("after the list benchmark, {guests} guests running"), rss_mb(&server)));
    let mut settled = None;
    if !settle.is_zero() {
        let ok = Instant::now();
        if bench.wait_all(&ids, "status ok", settle, |i| i["status"] == "ok").await {
            eprintln!("all {guests} status ok {:.0} s after the first measurement", ok.elapsed().as_secs_f64());
            settled = Some(bench.list_latency().await);
        }
    }
    bench.terminate(&ids).await;

    for cycle in 1..=cycles {
        let one = bench.launch(&image, 1).await;
        bench.wait_running(&one).await;
        bench.terminate(&one).await;
        if [1, cycles / 2, cycles].contains(&cycle) {
            memory.push((format!("after launch/terminate cycle {cycle}"), rss_mb(&server)));
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    memory.push(("idle, 10 s after the last cycle".to_string(), rss_mb(&server)));
    let total = ROWS + guests + cycles;
    assert_eq!(bench.list(true).await.len(), total);
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let _ = server.wait();
    let _ = Command::new("virsh").args(["-c", URI, "pool-destroy", POOL]).output();
    let _ = Command::new("virsh").args(["-c", URI, "pool-undefine", POOL]).output();

    println!("| request | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|");
    ms_row(&format!("GET /api/health (snapshot), {REQUESTS} requests"), health);
    ms_row("reference: one live probe (virsh version, net-info, net-dumpxml, pool-info), 20 runs", probe);
    let lists =
        [("no guest", Some(no_guest)), ("guests just running (booting)", Some(booting)), ("guests status ok", settled)];
    for (when, latency) in lists {
        let Some([default, all]) = latency else { continue };
        let guests = if when == "no guest" { 0 } else { guests };
        ms_row(&format!("GET /api/instances ({guests} rows, as the UI asks), {ROWS} terminated + {when}"), default);
        ms_row(&format!("GET /api/instances?include_terminated=true ({} rows), {when}", ROWS + guests), all);
    }
    println!();
    println!("| service memory | RSS (MB) |");
    println!("|---|---|");
    for (when, mb) in memory {
        println!("| {when} | {mb:.1} |");
    }
}
