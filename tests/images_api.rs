//! /api/images and `ec2local images`: catalog, start-up verification, pulls against a
//! local mirror (resume, checksum), imports and deletion. No libvirt needed.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::mirror::Mirror;
use common::{Service, client, get_json, wait_for};
use serde_json::{Value, json};
use sha2::Digest;

use common::NO_LIBVIRT;
const JAMMY: &str = "jammy-server-cloudimg-amd64.img";
const FOCAL: &str = "focal-server-cloudimg-amd64.img";

fn start(data: &Path, base_url: &str) -> Service {
    Service::start(data, &[("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT), ("EC2LOCAL_IMAGE_BASE_URL", base_url)])
}

/// Pseudo-random bytes standing in for an image.
fn fake_image(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed).collect()
}

fn sums(entries: &[(&str, &[u8])]) -> Vec<u8> {
    entries
        .iter()
        .map(|(name, content)| format!("{} *{name}\n", hex::encode(sha2::Sha256::digest(content))))
        .collect::<String>()
        .into_bytes()
}

async fn mirror_with(jammy: &[u8], listed_jammy: &[u8]) -> Mirror {
    let focal = fake_image(1 << 20, 9);
    let mut files = HashMap::new();
    files.insert(format!("/jammy/current/{JAMMY}"), jammy.to_vec());
    files.insert("/jammy/current/SHA256SUMS".into(), sums(&[(JAMMY, listed_jammy)]));
    files.insert(format!("/focal/current/{FOCAL}"), focal.clone());
    files.insert("/focal/current/SHA256SUMS".into(), sums(&[(FOCAL, &focal)]));
    Mirror::start(files).await
}

async fn image(service: &Service, name: &str) -> Value {
    let (status, body) = get_json(&service.api(&format!("/images/{name}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_pull_end(service: &Service, name: &str) -> Value {
    wait_for("the pull to end", Duration::from_secs(60), Duration::from_millis(100), || async {
        let img = image(service, name).await;
        let state = img["pull"]["state"].as_str().unwrap_or("").to_string();
        (state == "done" || state == "failed").then_some(img)
    })
    .await
}

// REQ-IMG-001, REQ-IMG-002, REQ-IMG-003, REQ-IMG-005
#[tokio::test]
async fn the_catalog_is_listed_with_missing_files_reported_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let service = start(&data, "http://127.0.0.1:9");
    let (status, list) = get_json(&service.api("/images")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ubuntu-20.04", "ubuntu-22.04"]);
    let jammy = image(&service, "ubuntu-22.04").await;
    assert!(jammy["id"].as_str().unwrap().starts_with("ami-"));
    assert_eq!(jammy["os"], "ubuntu");
    assert_eq!(jammy["os_version"], "22.04");
    assert_eq!(jammy["architecture"], std::env::consts::ARCH);
    assert_eq!(jammy["default_user"], "ubuntu");
    assert_eq!(jammy["available"], false);
    assert_eq!(jammy["file_path"], data.join("images").join(JAMMY).display().to_string());
    assert!(jammy["description"].as_str().unwrap().contains("22.04"));
    assert!(jammy["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(jammy["unavailable_reason"].as_str().unwrap().contains("ec2local images pull ubuntu-22.04"), "{jammy}");
    // The id works as well as the name.
    assert_eq!(image(&service, jammy["id"].as_str().unwrap()).await["name"], "ubuntu-22.04");
    let log = std::fs::read_to_string(data.join("logs/app.log")).unwrap();
    assert!(log.contains("WARN") && log.contains("base image unavailable") && log.contains("ubuntu-22.04"), "{log}");
    drop(service);

    // A file in place is found at the next start.
    std::fs::write(data.join("images").join(JAMMY), b"present").unwrap();
    let service = start(&data, "http://127.0.0.1:9");
    assert_eq!(image(&service, "ubuntu-22.04").await["available"], true);
    assert_eq!(image(&service, "ubuntu-20.04").await["available"], false);
    // A file that vanishes later is noticed without a restart.
    std::fs::remove_file(data.join("images").join(JAMMY)).unwrap();
    assert_eq!(image(&service, "ubuntu-22.04").await["available"], false);
}

// REQ-IMG-003, REQ-IMG-005
#[tokio::test]
async fn pull_through_the_api_shows_progress_and_verifies_the_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let content = fake_image(3 << 20, 1);
    let mirror = mirror_with(&content, &content).await;
    let service = start(&tmp.path().join("data"), &mirror.url);
    let response = client().post(service.api("/images/ubuntu-22.04/pull")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.unwrap();
    assert!(started["pull"]["state"].is_string(), "{started}");
    let done = wait_pull_end(&service, "ubuntu-22.04").await;
    assert_eq!(done["pull"]["state"], "done", "{done}");
    assert_eq!(done["pull"]["bytes_done"], content.len());
    assert_eq!(done["pull"]["bytes_total"], content.len());
    assert_eq!(done["available"], true);
    assert_eq!(done["sha256"], hex::encode(sha2::Sha256::digest(&content)));
    assert_eq!(done["size_bytes"], content.len());
    assert_eq!(std::fs::read(done["file_path"].as_str().unwrap()).unwrap(), content);
    assert_eq!(mirror.range_requests(), 0);
}

#[tokio::test]
async fn a_partial_download_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let content = fake_image(2 << 20, 2);
    let mirror = mirror_with(&content, &content).await;
    std::fs::create_dir_all(data.join("images")).unwrap();
    let half = content.len() / 2;
    std::fs::write(data.join("images").join(format!(".{JAMMY}.partial")), &content[..half]).unwrap();
    let service = start(&data, &mirror.url);
    client().post(service.api("/images/ubuntu-22.04/pull")).send().await.unwrap();
    let done = wait_pull_end(&service, "ubuntu-22.04").await;
    assert_eq!(done["pull"]["state"], "done", "{done}");
    assert_eq!(done["pull"]["bytes_resumed"], half);
    assert_eq!(mirror.range_requests(), 1);
    assert_eq!(std::fs::read(done["file_path"].as_str().unwrap()).unwrap(), content);
    assert!(!data.join("images").join(format!(".{JAMMY}.partial")).exists());
}

#[tokio::test]
async fn a_checksum_mismatch_deletes_the_download_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let content = fake_image(1 << 20, 3);
    let mirror = mirror_with(&content, b"something else").await;
    let service = start(&data, &mirror.url);
    client().post(service.api("/images/ubuntu-22.04/pull")).send().await.unwrap();
    let failed = wait_pull_end(&service, "ubuntu-22.04").await;
    assert_eq!(failed["pull"]["state"], "failed", "{failed}");
    let error = failed["pull"]["error"].as_str().unwrap();
    assert!(error.contains("checksum mismatch") && error.contains("deleted"), "{error}");
    assert_eq!(failed["available"], false);
    let leftovers: Vec<_> = std::fs::read_dir(data.join("images")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn the_cli_pulls_with_a_progress_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let content = fake_image(1 << 20, 4);
    let mirror = mirror_with(&content, &content).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "pull", "ubuntu-20.04", "--data-dir"])
        .arg(&data)
        .args(["--image-base-url", &mirror.url])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("MiB") && stderr.contains("verifying"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ubuntu-20.04 is ready"));
    assert!(data.join("images").join(FOCAL).is_file());
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(listing.lines().any(|l| l.contains("ubuntu-20.04") && l.contains(" available")), "{listing}");
}

fn qemu_img(args: &[&str]) {
    assert!(std::process::Command::new("qemu-img").args(args).status().unwrap().success());
}

async fn import(service: &Service, body: Value) -> (u16, Value) {
    let response = client().post(service.api("/images")).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

// REQ-IMG-005
#[tokio::test]
async fn import_registers_good_images_and_refuses_broken_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "this is not a disk image\n").unwrap();
    let base = tmp.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    let overlay = tmp.path().join("overlay.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.to_str().unwrap(), overlay.to_str().unwrap()]);
    std::fs::remove_file(&base).unwrap();

    for (name, path, why) in [
        ("text", text.to_str().unwrap(), "not a bootable disk image"),
        ("missing", "/nonexistent/disk.qcow2", "is not a file"),
        ("orphan", overlay.to_str().unwrap(), "backing file"),
    ] {
        let (status, body) = import(&service, json!({"name": name, "file_path": path})).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{name}: {body}");
    }
    let (status, body) = import(&service, json!({"name": "../escape", "file_path": good})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidImageName")), "{body}");
    let (_, list) = get_json(&service.api("/images")).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "a refused import was registered: {list}");
    let images_dir = service.data_dir.join("images");
    assert_eq!(std::fs::read_dir(&images_dir).unwrap().count(), 0, "a refused import left a file");

    let (status, body) = import(
        &service,
        json!({"name": "debian-12", "file_path": good, "os": "debian", "os_version": "12", "default_user": "debian"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("ami-"));
    assert_eq!(body["available"], true);
    assert_eq!(body["in_catalog"], false);
    assert_eq!(body["default_user"], "debian");
    assert_eq!(body["file_path"], images_dir.join("debian-12.qcow2").display().to_string());
    assert!(good.is_file(), "the source was moved instead of copied");
    let (status, body) = import(&service, json!({"name": "debian-12", "file_path": good})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ImageDuplicate")), "{body}");
    // Pulling an imported image makes no sense.
    let response = client().post(service.api("/images/debian-12/pull")).send().await.unwrap();
    assert_eq!(response.status(), 409);
}

#[tokio::test]
async fn delete_is_refused_while_an_instance_uses_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let (_, img) = import(&service, json!({"name": "in-use", "file_path": good})).await;
    let id = img["id"].as_str().unwrap().to_string();
    let db = rusqlite::Connection::open(service.data_dir.join("ec2local.db")).unwrap();
    db.execute(
        "INSERT INTO instances (id, instance_type, vcpus, memory_mib, disk_gib, image_id, state, mac_address, created_at)
         VALUES ('i-0000abcd', 't2.nano', 1, 512, 8, ?1, 'running', '52:54:00:00:ab:cd', '2026-01-01T00:00:00Z')",
        [&id],
    )
    .unwrap();
    let response = client().delete(service.api(&format!("/images/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "ImageInUse");
    assert!(Path::new(img["file_path"].as_str().unwrap()).is_file());
    db.execute("UPDATE instances SET state = 'terminated' WHERE id = 'i-0000abcd'", []).unwrap();
    let response = client().delete(service.api(&format!("/images/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(!Path::new(img["file_path"].as_str().unwrap()).exists());
    let (status, _) = get_json(&service.api(&format!("/images/{id}"))).await;
    assert_eq!(status, 404);
}

// REQ-IMG-005: an import reads nothing the caller did not name as a standalone image.
#[tokio::test]
async fn imports_that_would_read_other_files_are_refused_and_register_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    // A secret the import must never flatten into an image.
    let secret = path("id_rsa");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n-----END OPENSSH PRIVATE KEY-----\n")
        .unwrap();
    let on_secret = path("on-secret.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &secret, &on_secret, "64M"]);
    let on_json = path("on-json.qcow2");
    let json_backing =
        format!("json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{secret}\"}}}}");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &json_backing, &on_json, "64M"]);
    let with_data_file = path("data-file.qcow2");
    let data_file = path("data-file.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={data_file},data_file_raw=on"),
        &with_data_file,
        "1M",
    ]);
    let good = path("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &good, "64M"]);
    let link = path("link.qcow2");
    std::os::unix::fs::symlink(&good, &link).unwrap();

    for (name, file_path, why) in [
        ("backing-secret", on_secret.as_str(), "backing file"),
        ("backing-json", on_json.as_str(), "backing file"),
        ("data-file", with_data_file.as_str(), "external file"),
        ("symlink", link.as_str(), "symbolic link"),
        ("relative", "good.qcow2", "not an absolute path"),
        ("protocol", "json:{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}", "not an absolute path"),
        ("nbd", "nbd://127.0.0.1:10809/x", "not an absolute path"),
        ("device", "/dev/zero", "not a regular file"),
    ] {
        let (status, body) = import(&service, json!({"name": name, "file_path": file_path})).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{name}: {body}");
    }
    let (_, list) = get_json(&service.api("/images")).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "a refused import was registered: {list}");
    assert_eq!(std::fs::read_dir(service.data_dir.join("images")).unwrap().count(), 0, "a refused import left a file");
    let (status, body) = import(&service, json!({"name": "good", "file_path": good})).await;
    assert_eq!(status, 201, "{body}");
}
