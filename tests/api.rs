//! The HTTP surface with libvirt unreachable: these run in a plain `cargo test`.

mod common;

use common::{NO_LIBVIRT, client, get_json};

use common::start_without_libvirt as start;

// REQ-USE-002
#[tokio::test]
async fn swagger_ui_and_the_openapi_spec_are_served() {
    let (_tmp, service) = start();
    let docs = client().get(format!("{}/docs", service.url)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    let (status, spec) = get_json(&format!("{}/openapi.json", service.url)).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health", "/host", "/network"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} missing from the spec");
    }
    assert_eq!(spec["servers"][0]["url"], "/api");
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    // The whole surface, the WebSocket terminal and the image upload included.
    let terminal = &spec["paths"]["/instances/{id}/terminal"]["get"];
    assert!(terminal["description"].as_str().unwrap().contains("WebSocket"), "{terminal}");
    for status in ["101", "403", "404", "409", "429"] {
        assert!(terminal["responses"][status].is_object(), "terminal status {status} undocumented: {terminal}");
    }
    let params: Vec<&str> =
        terminal["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["id", "cols", "rows"]);
    assert!(spec["paths"]["/images/{name}/file"]["put"].is_object());
}

// issue 16: status checks. The instance's status check and host keys are part of its
// documented contract (a CLI waits on `status` and writes known_hosts from `host_keys`).
#[tokio::test]
async fn instances_carry_their_status_check_and_host_keys_in_the_spec() {
    let (_tmp, service) = start();
    let (_, spec) = get_json(&format!("{}/openapi.json", service.url)).await;
    let instance = &spec["components"]["schemas"]["InstanceDto"];
    for field in ["status", "status_reason", "reachable_at", "host_keys"] {
        let described = instance["properties"][field]["description"].as_str().unwrap_or_default();
        assert!(!described.is_empty(), "{field} undocumented: {instance}");
    }
    assert!(instance["properties"]["status"]["description"].as_str().unwrap().contains("not-applicable"));
    assert_eq!(instance["properties"]["host_keys"]["type"], "array");
    let required: Vec<&str> = instance["required"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(required.contains(&"status") && required.contains(&"host_keys"), "{required:?}");
    assert!(!required.contains(&"reachable_at"), "null until SSH answers: {required:?}");
}

// REQ-REL-002, REQ-REL-003
#[tokio::test]
async fn health_and_libvirt_endpoints_answer_503_with_a_clear_message_when_libvirt_is_unreachable() {
    let (_tmp, service) = start();
    let (status, health) = get_json(&service.api("/health")).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["code"], "LibvirtUnavailable");
    assert_eq!(health["libvirt"]["reachable"], false);
    assert_eq!(health["libvirt"]["uri"], NO_LIBVIRT);
    assert!(health["message"].as_str().unwrap().contains("unreachable"), "{health}");
    let (status, body) = get_json(&service.api("/network")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "LibvirtUnavailable");
    assert!(body["message"].as_str().unwrap().contains("/nonexistent/libvirt-sock"), "{body}");
}

// REQ-REL-002, issue 17: health is answered from a snapshot taken once per recheck
// interval, however many pages poll it; it says when it was taken.
#[tokio::test]
async fn health_answers_from_a_snapshot_taken_once_per_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let service = common::Service::start(
        &tmp.path().join("data"),
        &[("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT), ("EC2LOCAL_LIBVIRT_RECHECK_SECS", "1")],
    );
    let (_, first) = get_json(&service.api("/health")).await;
    let taken = first["checked_at"].as_str().unwrap().to_string();
    chrono::DateTime::parse_from_rfc3339(&taken).unwrap();
    // However slow the machine, 20 requests see at most one snapshot per interval
    // (1 s) they span, and two more for the edges; a probe per request would be 20.
    let started = std::time::Instant::now();
    let mut snapshots = std::collections::BTreeSet::from([taken.clone()]);
    for _ in 0..20 {
        let (status, health) = get_json(&service.api("/health")).await;
        assert_eq!(status, 503, "{health}");
        assert!(health["age_ms"].as_u64().unwrap() < 3000, "{health}");
        snapshots.insert(health["checked_at"].as_str().unwrap().to_string());
    }
    let spanned = started.elapsed().as_secs() as usize;
    assert!(snapshots.len() <= spanned + 2, "requests took snapshots of their own: {} in {spanned} s", snapshots.len());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, later) = get_json(&service.api("/health")).await;
    assert_ne!(later["checked_at"], taken.as_str(), "the snapshot was not renewed: {later}");
}

// REQ-LIM-003
#[tokio::test]
async fn host_resources_are_reported_without_libvirt() {
    let (_tmp, service) = start();
    let (status, host) = get_json(&service.api("/host")).await;
    assert_eq!(status, 200, "{host}");
    let n = |k: &str| host[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {host}"));
    assert!(n("memory_total_bytes") > 0);
    assert!(n("memory_used_bytes") <= n("memory_total_bytes"));
    assert!(n("memory_available_bytes") <= n("memory_total_bytes"));
    assert!(n("disk_total_bytes") > 0);
    assert!(n("disk_available_bytes") <= n("disk_total_bytes"));
    assert!(n("cpu_count") >= 1);
    assert_eq!(host["data_dir"], service.data_dir.display().to_string());
}

#[tokio::test]
async fn a_foreign_host_header_is_refused() {
    let (_tmp, service) = start();
    let response = client()
        .get(service.api("/host"))
        .header("Host", format!("rebind.attacker.example:{}", service.port))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "ForbiddenHost");
    let ok =
        client().get(service.api("/host")).header("Host", format!("localhost:{}", service.port)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (_tmp, service) = start();
    let (status, body) = get_json(&service.api("/no-such-thing")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NotFound");
    let response = client().delete(service.api("/health")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "MethodNotAllowed");
}

// REQ-STOR-005, REQ-LOG-001
#[tokio::test]
async fn the_data_dir_is_laid_out_and_warnings_reach_app_log() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, service) = start();
    let root = &service.data_dir;
    for sub in ["storage", "images", "instances", "logs"] {
        assert!(root.join(sub).is_dir(), "{sub} missing");
    }
    let db = root.join("ec2local.db");
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(root.join("logs")).unwrap().permissions().mode() & 0o777, 0o700);
    // Starting without libvirt logs a warning; it must be in app.log.
    let log = std::fs::read_to_string(root.join("logs/app.log")).unwrap();
    assert!(log.contains("WARN") && log.contains("libvirt is not ready yet"), "app.log:\n{log}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let (_tmp, service) = start();
    let response = client()
        .post(service.api("/key-pairs"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "PayloadTooLarge");
}
