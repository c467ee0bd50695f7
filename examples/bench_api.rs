//! API benchmark (issue 17, items 3 and 5): latency of `GET /api/health`, answered from
//! the health snapshot, next to one live probe of libvirt (what every health request
//! cost before), and of `GET /api/instances` with 1,000 rows seeded through the
//! service's own database code. Run by `scripts/bench-api` inside the bench; prints a
//! Markdown table.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ec2local::db::Db;
use ec2local::db::instances::{self as rows, InstanceRow};

const REQUESTS: usize = 1000;
const ROWS: usize = 1000;
const URI: &str = "qemu:///system";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/bench-api)"))
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

async fn timed_gets(client: &reqwest::Client, url: &str, count: usize) -> Vec<f64> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = client.get(url).send().await.unwrap();
        let _ = response.bytes().await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples
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

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (bin, work) = (env("EC2LOCAL_BIN"), env("EC2LOCAL_BENCH_WORK"));
    let data = format!("{work}/data");
    std::fs::create_dir_all(&data).unwrap();
    let db = Db::open(&ec2local::paths::Paths::new(&data).database()).unwrap();
    db.call(|c| {
        for n in 1..=ROWS {
            rows::insert(c, &row(n))?;
        }
        Ok(())
    })
    .await
    .unwrap();
    drop(db);
    let mut server = Command::new(&bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir", &data, "--libvirt-uri", URI])
        .args(["--pool-name", "ec2-bench-api"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().trim_start_matches("ec2local listening on ").to_string();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    // Warm up: connections, the first snapshot, SQLite's cache.
    timed_gets(&client, &format!("{url}/api/health"), 20).await;
    timed_gets(&client, &format!("{url}/api/instances?include_terminated=true"), 5).await;

    let health = percentiles(timed_gets(&client, &format!("{url}/api/health"), REQUESTS).await);
    let probe = percentiles((0..20).map(|_| live_probe_ms("ec2-as-service", "ec2-bench-api")).collect());
    let listed: serde_json::Value =
        client.get(format!("{url}/api/instances?include_terminated=true")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), ROWS);
    let list = percentiles(timed_gets(&client, &format!("{url}/api/instances?include_terminated=true"), 200).await);
    let _ = server.kill();
    let _ = server.wait();
    let _ = Command::new("virsh").args(["-c", URI, "pool-destroy", "ec2-bench-api"]).output();
    let _ = Command::new("virsh").args(["-c", URI, "pool-undefine", "ec2-bench-api"]).output();

    println!("| request | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|");
    println!("| GET /api/health (snapshot), {REQUESTS} requests | {:.2} | {:.2} |", health.0, health.1);
    println!(
        "| reference: one live probe (virsh version, net-info, net-dumpxml, pool-info), 20 runs | {:.1} | {:.1} |",
        probe.0, probe.1
    );
    println!("| GET /api/instances, {ROWS} rows (all terminated), 200 requests | {:.2} | {:.2} |", list.0, list.1);
}
