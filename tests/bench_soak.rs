//! Soak: create → running → terminate, many times, on one service. Nothing may leak:
//! domains, instance files, DHCP reservations, file descriptors, threads, tasks; memory
//! stays flat. Prints one line of figures per cycle and a summary that `scripts/soak`
//! records in RELIABILITY.md. `EC2LOCAL_SOAK_CYCLES` sets the count (default 20).
//! Alone in its own test binary; runs inside the bench's network namespace.

mod common;

use std::time::{Duration, Instant};

use common::{Bench, Service, assert_nothing_orphaned, delete, get_json, import_test_image, post_json, wait_instance};
use serde_json::json;

const URI: &str = "qemu:///system";
const NETWORK: &str = "ec2-as-service";

#[derive(Debug, Clone, Copy)]
struct Figures {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn figures(pid: u32) -> Figures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    Figures { rss_kib: field("VmRSS:"), fds, threads: field("Threads:") }
}

async fn domains_named_i() -> usize {
    let virsh = ec2local::exec::virsh::Virsh::new(URI, Duration::from_secs(60));
    let names = virsh.run(&["list", "--all", "--name"]).await.unwrap();
    names.lines().filter(|n| n.trim().starts_with("i-")).count()
}

// REQ-REL-001, REQ-INST-006, REQ-INST-012, REQ-STOR-004
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn create_run_terminate_cycles_leak_nothing() {
    let bench = Bench::from_env();
    let cycles: usize = std::env::var("EC2LOCAL_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let svc = Service::start(
        &tmp.path().join("data"),
        &[
            ("EC2LOCAL_LIBVIRT_URI", URI),
            ("EC2LOCAL_POOL_NAME", "ec2-bench-soak"),
            ("EC2LOCAL_MONITOR_INTERVAL_SECS", "1"),
            // The guest is still in its firmware when terminated: it cannot take ACPI yet.
            ("EC2LOCAL_TERMINATE_GRACE_SECS", "1"),
        ],
    );
    import_test_image(&svc, &bench).await;
    let domains_before = domains_named_i().await;
    let mut samples = Vec::new();
    let started = Instant::now();
    for cycle in 1..=cycles {
        let t0 = Instant::now();
        let (status, launched) =
            post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
        assert_eq!(status, 202, "cycle {cycle}: {launched}");
        let id = launched["id"].as_str().unwrap().to_string();
        wait_instance(&svc, &id, "running", Duration::from_secs(120), |i| i["state"] == "running").await;
        let running_after = t0.elapsed();
        assert_eq!(delete(&svc.api(&format!("/instances/{id}"))).await, 202);
        wait_instance(&svc, &id, "terminated", Duration::from_secs(120), |i| {
            i["state"] == "terminated" && i["task"].is_null()
        })
        .await;
        let f = figures(svc.pid());
        println!(
            "soak cycle {cycle:>3}: running after {:>5.2}s, terminated after {:>5.2}s, rss {} KiB, fds {}, threads {}",
            running_after.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            f.rss_kib,
            f.fds,
            f.threads
        );
        samples.push(f);
    }
    let total = started.elapsed();
    let rows = assert_nothing_orphaned(&svc, NETWORK).await;
    assert_eq!(rows.len(), cycles);
    assert!(rows.iter().all(|r| r["state"] == "terminated"));
    assert_eq!(domains_named_i().await, domains_before, "domains leaked");
    let leftovers: Vec<_> = std::fs::read_dir(svc.data_dir.join("instances")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "instance files leaked: {leftovers:?}");
    let (_, health) = get_json(&svc.api("/health")).await;
    assert_eq!(health["terminal"]["tasks"], 0);

    // After warm-up (cycle 5), nothing grows with the number of cycles.
    let warm = samples[samples.len().min(5) - 1];
    let last = *samples.last().unwrap();
    println!(
        "soak summary: {cycles} cycles in {:.0}s; after warm-up → last: rss {} → {} KiB, fds {} → {}, threads {} → {}",
        total.as_secs_f64(),
        warm.rss_kib,
        last.rss_kib,
        warm.fds,
        last.fds,
        warm.threads,
        last.threads
    );
    assert!(last.fds <= warm.fds + 2, "file descriptors grow: {warm:?} → {last:?}");
    assert!(last.threads <= warm.threads + 8, "threads grow: {warm:?} → {last:?}");
    assert!(last.rss_kib <= warm.rss_kib + 16 * 1024, "memory grows by more than 16 MiB: {warm:?} → {last:?}");
}
