//! /api/key-pairs against the real service (no libvirt needed).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Service, client, get_json, keygen};
use serde_json::{Value, json};

use common::start_without_libvirt as start;

async fn post(service: &Service, body: Value) -> (u16, Value) {
    let response = client().post(service.api("/key-pairs")).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn blob_of(line: &str) -> Vec<u8> {
    use russh::keys::ssh_encoding::Encode;
    russh::keys::PublicKey::from_openssh(line.trim()).unwrap().key_data().encode_vec().unwrap()
}

/// At least 30 inputs that are not a valid public key, each with a word its error must say.
fn invalid_corpus(dir: &Path) -> Vec<(String, &'static str)> {
    let (ed, ed_private) = keygen(dir, "ed25519", None);
    let (p256, _) = keygen(dir, "ecdsa", Some(256));
    let (rsa1024, _) = keygen(dir, "rsa", Some(1024));
    let ed_b64 = ed.split_whitespace().nth(1).unwrap().to_string();
    let p256_b64 = p256.split_whitespace().nth(1).unwrap().to_string();
    let ed_blob = blob_of(&ed);

    // A P-256 blob whose inner curve name says nistp384.
    let p256_point = {
        let blob = blob_of(&p256);
        blob[blob.len() - 65..].to_vec()
    };
    let mut wrong_curve = Vec::new();
    ssh_string(&mut wrong_curve, b"ecdsa-sha2-nistp256");
    ssh_string(&mut wrong_curve, b"nistp384");
    ssh_string(&mut wrong_curve, &p256_point);
    // An ed25519 blob with a 31-byte key.
    let mut short_ed = Vec::new();
    ssh_string(&mut short_ed, b"ssh-ed25519");
    ssh_string(&mut short_ed, &[7u8; 31]);
    let mut trailing = ed_blob.clone();
    trailing.extend_from_slice(b"extra");
    let mut dsa = Vec::new();
    ssh_string(&mut dsa, b"ssh-dss");
    ssh_string(&mut dsa, &[1u8; 20]);

    vec![
        (String::new(), "empty"),
        ("   \n\t ".into(), "empty"),
        ("ssh-ed25519".into(), "no key data"),
        ("ssh-ed25519 !!!not-base64!!!".into(), "does not decode"),
        ("ssh-ed25519 AAAA".into(), "does not decode"),
        (format!("ssh-ed25519 {}", &ed_b64[..ed_b64.len() - 8]), "does not decode"),
        (format!("ssh-rsa {ed_b64}"), "not a ssh-rsa key"),
        (format!("ecdsa-sha2-nistp384 {p256_b64}"), "not a ecdsa-sha2-nistp384 key"),
        (format!("ecdsa-sha2-nistp256 {ed_b64}"), "not a ecdsa-sha2-nistp256 key"),
        (format!("ssh-ed25519 {p256_b64}"), "not a ssh-ed25519 key"),
        (format!("ecdsa-sha2-nistp256 {}", b64(&wrong_curve)), "ecdsa-sha2-nistp256"),
        (format!("ssh-ed25519 {}", b64(&short_ed)), "ssh-ed25519"),
        (format!("ssh-ed25519 {}", b64(&trailing)), "ssh-ed25519"),
        (format!("ssh-dss {}", b64(&dsa)), "DSA keys are not supported"),
        (rsa1024.clone(), "at least 2048 bits"),
        (ed_private.clone(), "private key"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow==\n-----END RSA PRIVATE KEY-----".into(), "private key"),
        ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\n".into(), "PuTTY"),
        (format!("---- BEGIN SSH2 PUBLIC KEY ----\n{ed_b64}\n---- END SSH2 PUBLIC KEY ----"), "RFC 4716"),
        (format!("{}\n{}", ed.trim(), p256.trim()), "more than one line"),
        (format!("{} {}", ed.trim(), p256.trim()), "more than one key"),
        (format!("command=\"ls\" {}", ed.trim()), "authorized_keys options"),
        (format!("no-pty,restrict {}", ed.trim()), "authorized_keys options"),
        (format!("sk-ssh-ed25519@openssh.com {ed_b64}"), "security-key"),
        (format!("ssh-ed25519-cert-v01@openssh.com {ed_b64}"), "unsupported key type"),
        (format!("SSH-ED25519 {ed_b64}"), "unsupported key type"),
        (format!("ssh-foo {ed_b64}"), "unsupported key type"),
        (format!("{} comment\u{0}", ed.trim()), "control characters"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----".into(), "PEM block"),
        ("{\"public_key\": \"ssh-ed25519\"}".into(), "unsupported key type"),
        (format!("ssh-ed25519 {}", "A".repeat(100_000)), "does not decode"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI===".into(), "does not decode"),
        (format!("ssh-ed25519 {ed_b64}x"), "does not decode"),
    ]
}

// REQ-SSH-001, REQ-SSH-002
#[tokio::test]
async fn every_invalid_key_is_a_400_that_says_why_and_stores_nothing() {
    let (tmp, service) = start();
    let corpus = invalid_corpus(tmp.path());
    assert!(corpus.len() >= 30, "only {} cases", corpus.len());
    for (i, (input, reason)) in corpus.iter().enumerate() {
        let (status, body) = post(&service, json!({"name": format!("bad-{i}"), "public_key": input})).await;
        let shown: String = input.chars().take(60).collect();
        assert_eq!(status, 400, "{shown:?} -> {body}");
        assert_eq!(body["code"], "InvalidKeyFormat", "{shown:?} -> {body}");
        assert!(body["message"].as_str().unwrap().contains(reason), "{shown:?}: {body} does not say {reason:?}");
    }
    let (status, list) = get_json(&service.api("/key-pairs")).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]), "invalid keys were stored");
}

// REQ-SSH-003, REQ-SSH-004, REQ-SSH-005, REQ-SSH-006, REQ-SSH-007
#[tokio::test]
async fn import_list_get_delete_and_duplicates() {
    let (tmp, service) = start();
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    let (rsa, _) = keygen(tmp.path(), "rsa", Some(3072));
    let (status, imported) = post(&service, json!({"name": "laptop key", "public_key": public})).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["name"], "laptop key");
    assert_eq!(imported["key_type"], "ssh-ed25519");
    assert_eq!(imported["public_key"], public.trim());
    assert_eq!(imported["has_private_key"], false);
    assert!(imported.get("private_key").is_none());
    let md5 = imported["fingerprint"].as_str().unwrap();
    assert_eq!(md5.len(), 47, "{md5}");
    assert!(imported["fingerprint_sha256"].as_str().unwrap().starts_with("SHA256:"));
    assert!(imported["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, body) = post(&service, json!({"name": "laptop key", "public_key": rsa})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("KeyPairDuplicate")), "{body}");
    let (status, body) = post(&service, json!({"name": "same key again", "public_key": public})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("KeyPairDuplicate")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("laptop key"), "{body}");
    let (status, _) = post(&service, json!({"name": "rsa", "public_key": rsa})).await;
    assert_eq!(status, 201);

    let (_, list) = get_json(&service.api("/key-pairs")).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["laptop key", "rsa"]);
    let (status, one) = get_json(&service.api("/key-pairs/laptop%20key")).await;
    assert_eq!(status, 200);
    assert_eq!(one, imported);
    let (status, body) = get_json(&service.api("/key-pairs/nobody")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("KeyPairNotFound")));

    let deleted = client().delete(service.api("/key-pairs/laptop%20key")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let again = client().delete(service.api("/key-pairs/laptop%20key")).send().await.unwrap();
    assert_eq!(again.status(), 404);
    let (_, list) = get_json(&service.api("/key-pairs")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

// REQ-SSH-004
#[tokio::test]
async fn bad_names_and_bad_bodies_are_400_json() {
    let (tmp, service) = start();
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    for name in ["", "   ", &"x".repeat(256), "tab\there", "ünïcode"] {
        let (status, body) = post(&service, json!({"name": name, "public_key": public})).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("InvalidKeyPairName")), "{name:?} {body}");
    }
    let (status, body) = post(&service, json!({"public_key": public})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["code"].is_string() && body["message"].is_string(), "{body}");
    let response = client()
        .post(service.api("/key-pairs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "BadRequest");
    let (_, list) = get_json(&service.api("/key-pairs")).await;
    assert_eq!(list, json!([]));
}

// REQ-SSH-007
#[tokio::test]
async fn create_returns_the_private_key_once_and_keeps_it_private() {
    let (tmp, service) = start();
    let (status, created) = post(&service, json!({"name": "made here"})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key_type"], "ssh-ed25519");
    assert_eq!(created["has_private_key"], true);
    let pem = created["private_key"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));

    // The key works with OpenSSH's own tools and matches the public key.
    let key_file = tmp.path().join("made-here");
    std::fs::write(&key_file, pem).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let derived = std::process::Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key_file).output().unwrap();
    assert!(derived.status.success());
    let derived = String::from_utf8(derived.stdout).unwrap();
    assert_eq!(derived.split_whitespace().nth(1), created["public_key"].as_str().unwrap().split_whitespace().nth(1));

    // No GET ever shows it again.
    let (_, one) = get_json(&service.api("/key-pairs/made%20here")).await;
    assert!(one.get("private_key").is_none(), "{one}");
    let (_, list) = get_json(&service.api("/key-pairs")).await;
    assert!(!list.to_string().contains("PRIVATE KEY"));

    // Stored 0600 in a 0700 directory, with the database 0600, never logged.
    let keys_dir = service.data_dir.join("keys");
    assert_eq!(std::fs::metadata(&keys_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&keys_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), pem);
    let db = service.data_dir.join("ec2local.db");
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    let secret_line = pem.lines().nth(1).unwrap();
    assert!(!service.stderr().contains(secret_line));
    assert!(!std::fs::read_to_string(service.data_dir.join("logs/app.log")).unwrap().contains(secret_line));

    // Delete removes the private key file too.
    let deleted = client().delete(service.api("/key-pairs/made%20here")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn attaching_a_private_key_needs_the_matching_one() {
    let (tmp, service) = start();
    let (public, private) = keygen(tmp.path(), "ecdsa", Some(384));
    let (_, stranger) = keygen(tmp.path(), "ed25519", None);
    let (status, _) = post(&service, json!({"name": "ci", "public_key": public})).await;
    assert_eq!(status, 201);
    let put = |pem: String| {
        let url = service.api("/key-pairs/ci/private-key");
        async move {
            let response = client().put(url).json(&json!({"private_key": pem})).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = put(stranger).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("PrivateKeyMismatch")), "{body}");
    let (status, body) = put("garbage".into()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidPrivateKey")), "{body}");
    let (_, one) = get_json(&service.api("/key-pairs/ci")).await;
    assert_eq!(one["has_private_key"], false);
    let (status, body) = put(private).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_private_key"], true);
    assert!(body.get("private_key").is_none());
    let missing = client()
        .put(service.api("/key-pairs/nobody/private-key"))
        .json(&json!({"private_key": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
