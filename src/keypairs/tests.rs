use std::path::Path;
use std::process::Command;

use super::*;

/// Generates a key with ssh-keygen; returns (public key line, private key PEM).
fn keygen(dir: &Path, kind: &str, bits: Option<u32>) -> (String, String) {
    let file = dir.join(format!("{kind}-{}", bits.unwrap_or(0)));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "test@ec2local", "-t", kind, "-f"]).arg(&file);
    if let Some(bits) = bits {
        cmd.args(["-b", &bits.to_string()]);
    }
    assert!(cmd.status().unwrap().success());
    (std::fs::read_to_string(file.with_extension("pub")).unwrap(), std::fs::read_to_string(&file).unwrap())
}

/// `ssh-keygen -l -E HASH` of a public key: the fingerprint column.
fn keygen_fingerprint(dir: &Path, public: &str, hash: &str) -> String {
    let file = dir.join("fp.pub");
    std::fs::write(&file, public).unwrap();
    let out = Command::new("ssh-keygen").args(["-l", "-E", hash, "-f"]).arg(&file).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

// REQ-SSH-001, REQ-SSH-002, REQ-SSH-003
#[test]
fn all_five_types_are_accepted_with_ssh_keygen_fingerprints() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, bits, expected_type) in [
        ("ed25519", None, "ssh-ed25519"),
        ("rsa", Some(2048), "ssh-rsa"),
        ("ecdsa", Some(256), "ecdsa-sha2-nistp256"),
        ("ecdsa", Some(384), "ecdsa-sha2-nistp384"),
        ("ecdsa", Some(521), "ecdsa-sha2-nistp521"),
    ] {
        let (public, _) = keygen(tmp.path(), kind, bits);
        let key = parse_public_key(&public).unwrap_or_else(|e| panic!("{expected_type}: {e}"));
        assert_eq!(key.key_type, expected_type);
        let md5 = keygen_fingerprint(tmp.path(), &public, "md5");
        assert_eq!(format!("MD5:{}", key.fingerprint_md5), md5, "{expected_type}");
        assert_eq!(key.fingerprint_sha256, keygen_fingerprint(tmp.path(), &public, "sha256"), "{expected_type}");
        assert_eq!(key.openssh, public.trim());
        assert_eq!(key.fingerprint_md5.len(), 47);
    }
}

// REQ-SSH-001
#[test]
fn surrounding_whitespace_and_a_missing_comment_are_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    let bare: Vec<&str> = public.split_whitespace().take(2).collect();
    for variant in [format!("  {public}\n\n"), format!("\t{}\r\n", public.trim()), bare.join(" ")] {
        let key = parse_public_key(&variant).unwrap_or_else(|e| panic!("{variant:?}: {e}"));
        assert_eq!(key.key_type, "ssh-ed25519");
    }
}

// REQ-SSH-004
#[test]
fn names_are_one_to_255_printable_ascii() {
    for ok in ["a", "my key", "deploy-2026_01.prod", &"x".repeat(255), "~!@#$%^&*()"] {
        assert!(validate_name(ok).is_ok(), "{ok:?}");
    }
    for bad in ["", " ", &"x".repeat(256), "tab\tname", "new\nline", "ünï", "nul\0"] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
}

async fn service(tmp: &Path) -> KeyPairs {
    let paths = Paths::new(tmp.join("data"));
    paths.ensure().unwrap();
    KeyPairs::new(Db::open(&paths.database()).unwrap(), paths)
}

// REQ-SSH-004, REQ-SSH-005, REQ-SSH-007
#[tokio::test]
async fn duplicates_by_name_or_by_key_are_409_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = service(tmp.path()).await;
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    let (other, _) = keygen(tmp.path(), "ecdsa", Some(256));
    let first = keys.import("laptop", &public).await.unwrap();
    assert!(!first.created_at.is_empty() && first.fingerprint_md5.contains(':'));
    let same_name = keys.import("laptop", &other).await.unwrap_err();
    assert!(matches!(same_name, AppError::KeyPair(KeyPairError::NameTaken(_))), "{same_name:?}");
    let same_key = keys.import("desktop", &public).await.unwrap_err();
    match same_key {
        AppError::KeyPair(KeyPairError::KeyTaken(existing)) => assert_eq!(existing, "laptop"),
        other => panic!("{other:?}"),
    }
    let all = keys.list().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0], first);
}

// REQ-SSH-006, REQ-SSH-007
#[tokio::test]
async fn create_stores_a_private_key_0600_that_matches_and_delete_removes_both() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let keys = service(tmp.path()).await;
    let (pair, pem) = keys.create("generated", KeyKind::Ed25519).await.unwrap();
    assert_eq!(pair.key_type, "ssh-ed25519");
    assert!(pair.has_private_key);
    assert!(pem.0.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(!format!("{pem:?}").contains("BEGIN"), "Debug must redact the key");
    let file = keys.paths.private_key("generated");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(keys.paths.keys()).unwrap().permissions().mode() & 0o777, 0o700);
    // The private key is the one of the stored public key, by ssh-keygen's own reading.
    let key_file = tmp.path().join("generated.pem");
    std::fs::write(&key_file, &pem.0).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let derived = Command::new("ssh-keygen").args(["-y", "-f"]).arg(&key_file).output().unwrap();
    let derived = String::from_utf8(derived.stdout).unwrap();
    assert_eq!(derived.split_whitespace().nth(1), pair.public_key.split_whitespace().nth(1));

    keys.delete("generated").await.unwrap();
    assert!(!file.exists());
    assert!(matches!(keys.get("generated").await.unwrap_err(), AppError::KeyPair(KeyPairError::NotFound(_))));
    assert!(matches!(keys.delete("generated").await.unwrap_err(), AppError::KeyPair(KeyPairError::NotFound(_))));
}

#[tokio::test]
async fn a_private_key_is_attached_only_when_it_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = service(tmp.path()).await;
    let (public, private) = keygen(tmp.path(), "ed25519", None);
    let (_, stranger) = keygen(tmp.path(), "ecdsa", Some(256));
    keys.import("imported", &public).await.unwrap();
    let mismatch = keys.attach_private_key("imported", &stranger).await.unwrap_err();
    assert!(matches!(mismatch, AppError::KeyPair(KeyPairError::PrivateKeyMismatch(_))), "{mismatch:?}");
    assert!(!keys.get("imported").await.unwrap().has_private_key);
    let garbage = keys.attach_private_key("imported", "not a key").await.unwrap_err();
    assert!(matches!(garbage, AppError::KeyPair(KeyPairError::InvalidPrivateKey(_))), "{garbage:?}");
    let attached = keys.attach_private_key("imported", &private).await.unwrap();
    assert!(attached.has_private_key);
    assert!(keys.private_key("imported").await.unwrap().is_some());
    let missing = keys.attach_private_key("nobody", &private).await.unwrap_err();
    assert!(matches!(missing, AppError::KeyPair(KeyPairError::NotFound(_))));
}

// REQ-TERM-012
#[tokio::test]
async fn a_stored_key_logs_into_only_the_instances_launched_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = service(tmp.path()).await;
    let (first, pem) = keys.create("deploy", KeyKind::Ed25519).await.unwrap();
    let launched_with = first.public_key.clone();
    assert_eq!(keys.login_key("deploy", &launched_with).await.unwrap(), LoginKey::Stored(pem));

    // Deleted and made again under the same name: the new key is not handed to the
    // instance launched with the old one.
    keys.delete("deploy").await.unwrap();
    assert_eq!(keys.login_key("deploy", &launched_with).await.unwrap(), LoginKey::Deleted);
    let (second, new_pem) = keys.create("deploy", KeyKind::Ed25519).await.unwrap();
    assert_ne!(second.fingerprint_sha256, first.fingerprint_sha256);
    assert_eq!(keys.login_key("deploy", &launched_with).await.unwrap(), LoginKey::Replaced);
    assert_eq!(keys.login_key("deploy", &second.public_key).await.unwrap(), LoginKey::Stored(new_pem));

    // Only the public half imported under the name: nothing to hand out, to instances
    // of either key.
    keys.delete("deploy").await.unwrap();
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    keys.import("deploy", &public).await.unwrap();
    assert_eq!(keys.login_key("deploy", &public).await.unwrap(), LoginKey::NotStored);
    assert_eq!(keys.login_key("deploy", &second.public_key).await.unwrap(), LoginKey::Replaced);
    // A key file that is not the pair's (damaged, or left behind) is not used.
    std::fs::write(keys.paths.private_key("deploy"), "garbage").unwrap();
    assert_eq!(keys.login_key("deploy", &public).await.unwrap(), LoginKey::NotStored);
}

/// ssh-keygen's private key in the given `-m` format, with a passphrase when given.
fn keygen_private(dir: &Path, kind: &str, format: &str, passphrase: &str) -> (String, String) {
    let file = dir.join(format!("{kind}-{format}-{}", passphrase.len()));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-m", format, "-N", passphrase, "-C", "x", "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    (std::fs::read_to_string(file.with_extension("pub")).unwrap(), std::fs::read_to_string(&file).unwrap())
}

// REQ-TERM-012
#[test]
fn private_keys_are_read_in_the_forms_users_have_them() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, format) in [("ed25519", "RFC4716"), ("rsa", "PEM"), ("rsa", "PKCS8"), ("ecdsa", "PEM")] {
        let (public, private) = keygen_private(tmp.path(), kind, format, "");
        let expected = PublicKey::from_openssh(public.trim()).unwrap();
        let parsed = parse_private_key(&private).unwrap_or_else(|e| panic!("{kind} {format}: {e}"));
        assert_eq!(parsed.public_key().key_data(), expected.key_data(), "{kind} {format}");
        // Pasted into a one-line field: line breaks became spaces, or vanished.
        for collapsed in [private.replace('\n', " "), private.replace('\n', "")] {
            let parsed = parse_private_key(&collapsed).unwrap_or_else(|e| panic!("{kind} {format} collapsed: {e}"));
            assert_eq!(parsed.public_key().key_data(), expected.key_data());
        }
        // Windows line ends; indentation and trailing spaces from a chat window.
        assert!(parse_private_key(&private.replace('\n', "\r\n")).is_ok(), "{kind} {format} CRLF");
        let indented: String = private.lines().map(|l| format!("    {l}  \n")).collect();
        assert!(parse_private_key(&indented).is_ok(), "{kind} {format} indented");
    }
    let (public, encrypted) = keygen_private(tmp.path(), "ed25519", "RFC4716", "secret phrase");
    assert!(parse_private_key(&encrypted).unwrap_err().contains("passphrase"));
    let (_, encrypted_pem) = keygen_private(tmp.path(), "rsa", "PEM", "secret phrase");
    assert!(parse_private_key(&encrypted_pem).unwrap_err().contains("passphrase"));
    assert!(parse_private_key(&public).unwrap_err().contains("public key"));
    assert!(parse_private_key("hello").unwrap_err().contains("BEGIN OPENSSH PRIVATE KEY"));
}

/// `openssl ARGS` reading `input`, its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

/// The hex digest of `openssl DIGEST -c` ("MD5(stdin)= aa:bb…").
fn openssl_digest(digest: &str, input: &[u8]) -> String {
    let out = String::from_utf8(openssl(&[digest, "-c"], input)).unwrap();
    out.rsplit(' ').next().unwrap().trim().to_string()
}

// The fingerprints EC2 shows, checked against the commands AWS documents for them.
#[tokio::test]
async fn ec2_fingerprints_are_the_ones_aws_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = service(tmp.path()).await;

    // Imported RSA: MD5 of the public key's DER.
    let (public, _) = keygen(tmp.path(), "rsa", Some(2048));
    let pem_file = tmp.path().join("rsa-2048");
    Command::new("ssh-keygen").args(["-q", "-p", "-N", "", "-m", "PEM", "-f"]).arg(&pem_file).status().unwrap();
    let pem = std::fs::read(&pem_file).unwrap();
    let der = openssl(&["rsa", "-pubout", "-outform", "DER"], &pem);
    let imported = keys.import("imported-rsa", &public).await.unwrap();
    assert_eq!(ec2_fingerprint(&imported), openssl_digest("md5", &der));

    // RSA made here: SHA-1 of the private key's PKCS#8 DER, and the key is PKCS#1 PEM.
    let (made, private) = keys.create("made-rsa", KeyKind::Rsa).await.unwrap();
    assert!(private.0.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{}", private.0);
    let pkcs8 = openssl(&["pkcs8", "-inform", "PEM", "-outform", "DER", "-topk8", "-nocrypt"], private.0.as_bytes());
    assert_eq!(ec2_fingerprint(&made), openssl_digest("sha1", &pkcs8));
    assert_eq!(made.key_type, "ssh-rsa");
    assert!(made.key_pair_id.starts_with("key-") && made.key_pair_id.len() == 21);
    assert!(parse_private_key(&private.0).is_ok(), "the terminal can use it");

    // ed25519: base64 SHA-256, padded (ssh-keygen prints it unpadded).
    let (public, _) = keygen(tmp.path(), "ed25519", None);
    let sha256 = keygen_fingerprint(tmp.path(), &public, "sha256");
    let imported = keys.import("imported-ed25519", &public).await.unwrap();
    assert_eq!(ec2_fingerprint(&imported), format!("{}=", sha256.trim_start_matches("SHA256:")));
}
