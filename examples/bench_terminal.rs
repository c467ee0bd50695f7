//! Terminal benchmark (issue 6): echo round-trip latency and bulk throughput through the
//! service's WebSocket↔SSH relay, next to a direct `ssh` to the same guest. Run by
//! `scripts/bench-terminal` inside the bench, once cloud-init has finished in the guest;
//! rounds of relay then direct, so both see the same load; prints a Markdown table.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The tests' ssh options, so the benchmark's direct ssh is the one the tests use.
#[path = "../tests/common/ssh_options.rs"]
mod ssh_options;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Keystrokes per round and path, and rounds.
const SAMPLES: usize = 100;
const ROUNDS: usize = 4;
const BULK_BYTES: usize = 10_000_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/bench-terminal)"))
}

fn ssh_args(key: &str, ip: &str) -> Vec<String> {
    ssh_options::SSH_OPTIONS
        .iter()
        .map(|s| s.to_string())
        .chain(["-i".into(), key.into(), format!("ubuntu@{ip}")])
        .collect()
}

fn ssh(key: &str, ip: &str, command: &str) -> bool {
    Command::new("ssh").args(ssh_args(key, ip)).arg(command).status().map(|s| s.success()).unwrap_or(false)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn p90(v: &[f64]) -> f64 {
    quantile(v, 0.9)
}

async fn json(method: reqwest::Method, url: String, body: Option<serde_json::Value>) -> serde_json::Value {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Through the relay: the echo of each single keystroke (ms), then seconds for a 10 MB
/// cat, timed from the command to the marker after it (the session is already open).
async fn relay_round(ws_url: &str) -> (Vec<f64>, f64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut buffer = Vec::new();
    let mut read_until = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, needle: &[u8]| loop {
        if let Some(Ok(Message::Binary(b))) = ws.next().await {
            // Search only the new bytes (and the few before them): linear in the output.
            let from = buffer.len().saturating_sub(needle.len());
            buffer.extend_from_slice(&b);
            if buffer[from..].windows(needle.len()).any(|w| w == needle) {
                buffer.clear();
                return;
            }
        }
    };
    read_until(&mut ws, b"$ ").await;
    let mut rtt = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        ws.send(Message::Binary(b"x".to_vec().into())).await.unwrap();
        read_until(&mut ws, b"x").await;
        rtt.push(t.elapsed().as_secs_f64() * 1000.0);
        ws.send(Message::Binary(b"\x15".to_vec().into())).await.unwrap(); // Ctrl-U clears the line
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    // '-' is not in base64's alphabet, so the marker cannot occur in the data.
    ws.send(Message::Binary(b"stty -echo; cat /tmp/big; printf '\\n--EN''D--\\n'\n".to_vec().into())).await.unwrap();
    read_until(&mut ws, b"--END--").await;
    let secs = t.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    (rtt, secs)
}

/// The same over a direct interactive `ssh -tt` session (the reference).
fn direct_round(key: &str, ip: &str) -> (Vec<f64>, f64) {
    let mut child = Command::new("ssh")
        .arg("-tt")
        .args(ssh_args(key, ip))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut read_direct = |needle: &[u8]| {
        let mut seen = Vec::new();
        let mut byte = [0u8; 4096];
        loop {
            let n = stdout.read(&mut byte).unwrap();
            let from = seen.len().saturating_sub(needle.len());
            seen.extend_from_slice(&byte[..n]);
            if seen[from..].windows(needle.len()).any(|w| w == needle) {
                return;
            }
        }
    };
    read_direct(b"$ ");
    let mut rtt = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        stdin.write_all(b"x").unwrap();
        stdin.flush().unwrap();
        read_direct(b"x");
        rtt.push(t.elapsed().as_secs_f64() * 1000.0);
        stdin.write_all(b"\x15").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same command as through the relay, in this open session: the guest-side PTY
    // is the same, and neither time includes a connection.
    let t = Instant::now();
    stdin.write_all(b"stty -echo; cat /tmp/big; printf '\\n--EN''D--\\n'\n").unwrap();
    stdin.flush().unwrap();
    read_direct(b"--END--");
    let secs = t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    (rtt, secs)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (bin, image, work) = (env("EC2LOCAL_BIN"), env("EC2LOCAL_TEST_IMAGE"), env("EC2LOCAL_BENCH_WORK"));
    let mut server = Command::new(&bin)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            &format!("{work}/data"),
            "--libvirt-uri",
            "qemu:///system",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let api = |path: &str| format!("{url}/api{path}");

    json(reqwest::Method::POST, api("/images"), Some(serde_json::json!({"name": "bench", "file_path": image}))).await;
    let pair = json(reqwest::Method::POST, api("/key-pairs"), Some(serde_json::json!({"name": "bench"}))).await;
    let key = format!("{work}/key");
    std::fs::write(&key, pair["private_key"].as_str().unwrap()).unwrap();
    Command::new("chmod").args(["600", &key]).status().unwrap();
    let inst = json(
        reqwest::Method::POST,
        api("/instances"),
        Some(serde_json::json!({"instance_type": "t2.micro", "image_id": "bench", "key_name": "bench"})),
    )
    .await;
    let id = inst["id"].as_str().unwrap().to_string();
    let ip = loop {
        let i = json(reqwest::Method::GET, api(&format!("/instances/{id}")), None).await;
        if let Some(ip) = i["ip_address"].as_str() {
            break ip.to_string();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    while !ssh(&key, &ip, "true") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(ssh(&key, &ip, &format!("head -c {} /dev/urandom | base64 -w0 > /tmp/big", BULK_BYTES / 4 * 3)));

    // Cloud-init still works for a while after SSH first answers: measure a quiet guest.
    while !ssh(&key, &ip, "test -f /var/lib/cloud/instance/boot-finished") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Rounds of relay and direct in turn, so that both see the same host load.
    let ws_url = format!("{}/api/instances/{id}/terminal", url.replace("http://", "ws://"));
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let relay = relay_round(&ws_url).await;
        let direct = direct_round(&key, &ip);
        rounds.push((relay, direct));
    }
    let t = Instant::now();
    let out = Command::new("ssh").args(ssh_args(&key, &ip)).arg("cat /tmp/big").output().unwrap();
    let direct_secs = t.elapsed().as_secs_f64();
    assert_eq!(out.stdout.len(), BULK_BYTES);

    let mb = BULK_BYTES as f64 / 1e6;
    println!("| round, path | echo round trip, median / p90 of {SAMPLES} (ms) | 10 MB cat (s) | throughput (MB/s) |");
    println!("|---|---|---|---|");
    for (n, ((relay_rtt, relay_secs), (direct_rtt, pty_secs))) in rounds.iter().enumerate() {
        let n = n + 1;
        let (rm, rp, dm, dp) = (median(relay_rtt), p90(relay_rtt), median(direct_rtt), p90(direct_rtt));
        println!("| {n}, web terminal relay | {rm:.2} / {rp:.2} | {relay_secs:.1} | {:.2} |", mb / relay_secs);
        println!("| {n}, direct ssh -tt (PTY) | {dm:.2} / {dp:.2} | {pty_secs:.1} | {:.2} |", mb / pty_secs);
    }
    println!("| direct ssh, no PTY | – | {direct_secs:.1} | {:.2} |", mb / direct_secs);
    println!();
    for (n, ((relay_rtt, relay_secs), (direct_rtt, pty_secs))) in rounds.iter().enumerate() {
        println!(
            "round {}: relay throughput {:.0} % of ssh -tt; echo median {:+.2} ms against ssh -tt",
            n + 1,
            100.0 * pty_secs / relay_secs,
            median(relay_rtt) - median(direct_rtt)
        );
    }
    let relay_all: Vec<f64> = rounds.iter().flat_map(|((rtt, _), _)| rtt.iter().copied()).collect();
    let direct_all: Vec<f64> = rounds.iter().flat_map(|(_, (rtt, _))| rtt.iter().copied()).collect();
    println!(
        "all {} keystrokes each: relay median {:.2} ms, p90 {:.2}; ssh -tt median {:.2} ms, p90 {:.2}; median {:+.2} ms",
        relay_all.len(),
        median(&relay_all),
        p90(&relay_all),
        median(&direct_all),
        p90(&direct_all),
        median(&relay_all) - median(&direct_all)
    );
    let (relay_secs, pty_secs): (f64, f64) =
        rounds.iter().map(|((_, r), (_, d))| (*r, *d)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!("all {ROUNDS} rounds' 10 MB together: relay throughput {:.0} % of ssh -tt", 100.0 * pty_secs / relay_secs);
    json(reqwest::Method::DELETE, api(&format!("/instances/{id}")), None).await;
    // Gone before the service is: no domain or reservation is left for the next run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while json(reqwest::Method::GET, api(&format!("/instances/{id}")), None).await["state"] != "terminated" {
        assert!(Instant::now() < deadline, "the guest was not terminated within 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
}
