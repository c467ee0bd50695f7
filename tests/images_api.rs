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
    assert_eq!(jammy["availability"], "not-downloaded");
    assert_eq!(jammy["file_path"], data.join("images").join(JAMMY).display().to_string());
    assert!(jammy["description"].as_str().unwrap().contains("22.04"));
    assert!(jammy["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(jammy["unavailable_reason"].as_str().unwrap().contains("ec2local images pull ubuntu-22.04"), "{jammy}");
    // The id works as well as the name.
    assert_eq!(image(&service, jammy["id"].as_str().unwrap()).await["name"], "ubuntu-22.04");
    // Verified at start, and a catalog image nobody pulled yet is no warning.
    let log = std::fs::read_to_string(data.join("logs/app.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("base image not downloaded yet") && l.contains("ubuntu-22.04")), "{log}");
    assert!(!log.lines().any(|l| l.contains("WARN") && l.contains("ubuntu-22.04")), "{log}");
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
    assert_eq!(done["availability"], "available");
    assert!(done.get("unavailable_reason").is_none(), "{done}");
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
    // A failed pull is a problem, not the quiet "not downloaded".
    assert_eq!(failed["availability"], "pull-failed");
    assert!(failed["unavailable_reason"].as_str().unwrap().contains("checksum mismatch"), "{failed}");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("images")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// REQ-IMG-001, issue 16: `ec2local images` is a client of the running service: pull with a
// progress line, then the listing shows the image available, and catalog images never
// pulled as "not downloaded", not as errors.
#[tokio::test]
async fn the_cli_pulls_through_the_service_with_a_progress_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let content = fake_image(1 << 20, 4);
    let mirror = mirror_with(&content, &content).await;
    let service = start(&data, &mirror.url);
    let endpoint = format!("http://127.0.0.1:{}", service.port);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "pull", "ubuntu-20.04", "--endpoint", &endpoint])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("ubuntu-20.04") && stderr.contains("MiB"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ubuntu-20.04 is ready"));
    assert!(data.join("images").join(FOCAL).is_file());
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "ls", "--endpoint", &endpoint])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && list.stderr.is_empty(), "{}", String::from_utf8_lossy(&list.stderr));
    assert!(listing.lines().any(|l| l.contains("ubuntu-20.04") && l.contains(" available")), "{listing}");
    let jammy = listing.lines().find(|l| l.contains("ubuntu-22.04")).unwrap_or_default();
    assert!(jammy.contains("not downloaded") && jammy.contains("ec2local images pull ubuntu-22.04"), "{listing}");
    // Not in the catalog: a clear refusal and exit code 1.
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "pull", "no-such-image", "--endpoint", &endpoint])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-image"));
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

// REQ-IMG-003: a mirror that stops sending fails the pull with a message, and pulling
// again resumes from what arrived.
#[tokio::test]
async fn a_stalled_pull_fails_with_a_message_and_a_retry_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let content = fake_image(2 << 20, 5);
    let mirror = mirror_with(&content, &content).await;
    mirror.stall_after(Some(512 * 1024));
    let service = Service::start(
        &data,
        &[
            ("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT),
            ("EC2LOCAL_IMAGE_BASE_URL", &mirror.url),
            ("EC2LOCAL_PULL_READ_TIMEOUT_SECS", "2"),
        ],
    );
    client().post(service.api("/images/ubuntu-22.04/pull")).send().await.unwrap();
    let failed = wait_pull_end(&service, "ubuntu-22.04").await;
    assert_eq!(failed["pull"]["state"], "failed", "{failed}");
    let error = failed["pull"]["error"].as_str().unwrap();
    assert!(error.contains("stopped sending") && error.contains("pull again"), "{error}");
    assert_eq!(failed["available"], false);
    let partial = data.join("images").join(format!(".{JAMMY}.partial"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 512 * 1024, "what arrived was not kept");

    mirror.stall_after(None);
    client().post(service.api("/images/ubuntu-22.04/pull")).send().await.unwrap();
    let done = wait_pull_end(&service, "ubuntu-22.04").await;
    assert_eq!(done["pull"]["state"], "done", "{done}");
    assert_eq!(done["pull"]["bytes_resumed"], 512 * 1024);
    assert_eq!(std::fs::read(done["file_path"].as_str().unwrap()).unwrap(), content);
}

async fn upload(service: &Service, name: &str, query: &str, body: reqwest::Body) -> (u16, Value) {
    let url = service.api(&format!("/images/{name}/file{query}"));
    let response = client().put(url).body(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn image_dir_files(service: &Service) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(service.data_dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A raw disk with a boot signature, `len` bytes.
fn bootable_raw(len: usize) -> Vec<u8> {
    let mut disk = fake_image(len, 6);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk
}

// REQ-IMG-005: an image comes in as the request's bytes, so the service needs no path
// it can read; the same checks hold, and nothing of a refused upload stays.
#[tokio::test]
async fn an_upload_streams_an_image_in_and_refuses_what_an_import_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let bytes = std::fs::read(&good).unwrap();

    let (status, body) =
        upload(&service, "uploaded", "?default_user=debian&os=debian&os_version=12", bytes.clone().into()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["default_user"].as_str(), body["os"].as_str()), (Some("debian"), Some("debian")));
    assert_eq!(body["available"], true);
    assert_eq!(image_dir_files(&service), ["uploaded.qcow2"]);

    // Chunked, with no length: a raw disk, converted to qcow2.
    let raw = bootable_raw(4 << 20);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = raw.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let (status, body) =
        upload(&service, "raw-disk", "", reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).await;
    assert_eq!(status, 201, "{body}");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", body["file_path"].as_str().unwrap()])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((info["format"].as_str(), info["virtual-size"].as_u64()), (Some("qcow2"), Some(4 << 20)));

    // Refused: a taken name (the first image's file untouched), a text file, an overlay,
    // an empty body, a bad name. Each leaves nothing.
    let (status, body) = upload(&service, "uploaded", "", b"not even an image".to_vec().into()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ImageDuplicate")), "{body}");
    assert_eq!(std::fs::read(service.data_dir.join("images/uploaded.qcow2")).unwrap().len(), {
        let (_, img) = get_json(&service.api("/images/uploaded")).await;
        img["size_bytes"].as_u64().unwrap() as usize
    });
    let base = tmp.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    let overlay = tmp.path().join("overlay.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.to_str().unwrap(), overlay.to_str().unwrap()]);
    for (name, content, code, why) in [
        ("text", b"this is not a disk image\n".to_vec(), "InvalidImage", "not a bootable disk image"),
        ("overlay", std::fs::read(&overlay).unwrap(), "InvalidImage", "backing file"),
        ("empty", Vec::new(), "InvalidImage", "empty"),
        (".hidden", bytes.clone(), "InvalidImageName", "image name"),
    ] {
        let (status, body) = upload(&service, name, "", content.into()).await;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{name}: {body}");
    }
    assert_eq!(image_dir_files(&service), ["raw-disk.qcow2", "uploaded.qcow2"], "a refused upload left a file");
    let (_, list) = get_json(&service.api("/images")).await;
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");

    // A page on another site cannot upload.
    let response = client()
        .put(service.api("/images/evil/file"))
        .header("origin", "http://evil.example")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(!image_dir_files(&service).contains(&"evil.qcow2".to_string()));
}

// REQ-IMG-005: a declared size larger than the disk can take is refused before a byte is read.
#[tokio::test]
async fn an_upload_larger_than_the_free_disk_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", service.port)).await.unwrap();
    let head = format!(
        "PUT /api/images/huge/file HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
        service.port,
        1u64 << 50
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0u8; 4096]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("ImageTooLarge") && answer.contains("twice its size"), "{answer}");
    drop(stream);
    assert!(image_dir_files(&service).is_empty(), "{:?}", image_dir_files(&service));
}

// Concurrent imports of one name: one wins, the other is refused, nothing is shared or replaced.
#[tokio::test]
async fn concurrent_uploads_of_one_name_never_share_or_replace_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let disks: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let mut disk = bootable_raw(8 << 20);
            disk[1000] = i;
            disk
        })
        .collect();
    let attempts = disks.iter().map(|disk| upload(&service, "contested", "", disk.clone().into()));
    let results = futures_util::future::join_all(attempts).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        let code = body["code"].as_str().unwrap();
        assert!(code == "ImageDuplicate" || code == "ImageImportInProgress", "{body}");
    }
    assert_eq!(image_dir_files(&service), ["contested.qcow2"]);
    // The registered file is the winner's, whole.
    let (_, img) = get_json(&service.api("/images/contested")).await;
    let on_disk = std::fs::read(service.data_dir.join("images/contested.qcow2")).unwrap();
    assert_eq!(img["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&on_disk)));
}

// REQ-IMG-005: the CLI streams a file to the running service with a progress line.
#[tokio::test]
async fn the_cli_uploads_to_the_running_service() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "upload", "--name", "from-cli", "--default-user", "debian", "--endpoint"])
        .arg(format!("http://127.0.0.1:{}", service.port))
        .arg(&good)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("uploading") && stderr.contains("100%"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("uploaded from-cli as ami-"));
    let img = image(&service, "from-cli").await;
    assert_eq!(img["default_user"], "debian");
    // A taken name or a bad one is said before any byte is sent.
    for (name, why) in [("from-cli", "already exists"), ("../x", "image name")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
            .args(["images", "upload", "--name", name, "--endpoint"])
            .arg(format!("http://127.0.0.1:{}", service.port))
            .arg(&good)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why) && !stderr.contains("uploading"), "{name}: {stderr}");
    }
    // The service being elsewhere is said plainly.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ec2local"))
        .args(["images", "upload", "--name", "nowhere", "--endpoint", "http://127.0.0.1:9"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is `ec2local serve` running"));
}

// What a crashed import left in images/ is removed at the next start; pulls keep their partials.
#[tokio::test]
async fn leftovers_of_an_interrupted_import_are_removed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let images = data.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in [".debian.0a1b2c3d.upload", ".debian.0a1b2c3d.importing", &format!(".{JAMMY}.partial")] {
        std::fs::write(images.join(name), "x").unwrap();
        std::fs::File::options().write(true).open(images.join(name)).unwrap().set_modified(old).unwrap();
    }
    let service = start(&data, "http://127.0.0.1:9");
    assert_eq!(image_dir_files(&service), [format!(".{JAMMY}.partial")]);
}

// A client that stops sending mid-upload is dropped after the idle time, and its name
// and bytes are free again.
#[tokio::test]
async fn a_stalled_upload_is_dropped_and_leaves_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let service = Service::start(
        &tmp.path().join("data"),
        &[
            ("EC2LOCAL_LIBVIRT_URI", NO_LIBVIRT),
            ("EC2LOCAL_IMAGE_BASE_URL", "http://127.0.0.1:9"),
            ("EC2LOCAL_UPLOAD_IDLE_TIMEOUT_SECS", "2"),
        ],
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", service.port)).await.unwrap();
    let head = format!(
        "PUT /api/images/stalled/file HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
        service.port,
        10 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0u8; 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout") && answer.contains("sent nothing for 2s"), "{answer}");
    drop(stream);
    assert!(image_dir_files(&service).is_empty(), "{:?}", image_dir_files(&service));
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let (status, body) = upload(&service, "stalled", "", std::fs::read(&good).unwrap().into()).await;
    assert_eq!(status, 201, "{body}");
}

// An import killed between recording its row and placing its file leaves the row alone:
// it shows as unavailable, is deleted through the API, and the name is free again.
#[tokio::test]
async fn a_row_left_without_its_file_can_be_deleted_and_the_name_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let service = start(&tmp.path().join("data"), "http://127.0.0.1:9");
    let good = tmp.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let (status, body) = upload(&service, "half", "", std::fs::read(&good).unwrap().into()).await;
    assert_eq!(status, 201, "{body}");
    std::fs::remove_file(service.data_dir.join("images/half.qcow2")).unwrap();
    let left = image(&service, "half").await;
    assert_eq!(left["available"], false);
    assert_eq!(left["availability"], "missing-file");
    assert!(left["unavailable_reason"].as_str().unwrap().contains("missing"), "{left}");
    let response = client().delete(service.api("/images/half")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) = upload(&service, "half", "", std::fs::read(&good).unwrap().into()).await;
    assert_eq!(status, 201, "{body}");
}
