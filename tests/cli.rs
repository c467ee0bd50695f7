//! `ec2local` as a client of the service, without libvirt: what a person sees when the
//! service is down, when a name is unknown, and the key pair commands end to end.
//! The commands that need a guest are in bench_cli.rs.

mod common;

use common::cli::CliUser;
use common::start_without_libvirt;

// issue 16: the service being down is said with the address tried, exit code 1.
#[test]
fn a_service_that_is_not_running_is_said_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let user = CliUser::new("http://127.0.0.1:9", tmp.path());
    for args in [&["ls"][..], &["show", "web"], &["keys", "ls"], &["images", "ls"], &["forward", "ls"]] {
        let stderr = user.run(args).failed();
        assert!(
            stderr.contains("http://127.0.0.1:9/") && stderr.contains("is `ec2local serve` running"),
            "{args:?}: {stderr}"
        );
    }
    let stderr = user.run(&["ls", "--endpoint", "ftp://example"]).failed();
    assert!(stderr.contains("is not an http:// address"), "{stderr}");
}

// issue 16: an unknown name or id gets a clear message and exit code 1; nothing changes.
#[test]
fn unknown_instances_are_named_in_the_error() {
    let (tmp, service) = start_without_libvirt();
    let user = CliUser::new(&service.url, &tmp.path().join("home"));
    let empty = user.run(&["ls"]);
    assert_eq!(empty.code, Some(0));
    assert!(empty.stderr.contains("no instances"), "{}", empty.stderr);
    assert_eq!(user.run(&["ls", "--json"]).ok().trim(), "[]");
    for args in [
        &["show", "nope"][..],
        &["ssh", "nope"],
        &["stop", "nope"],
        &["terminate", "i-0123abcd"],
        &["console", "nope"],
        &["forward", "nope", "8080:80"],
    ] {
        let stderr = user.run(args).failed();
        let named = args.iter().find(|a| **a == "nope" || a.starts_with("i-")).unwrap();
        assert!(stderr.contains(&format!("no instance is called \"{named}\"")), "{args:?}: {stderr}");
    }
    // The service's own refusal comes through with its code.
    let stderr = user.run(&["run", "--image", "missing-image", "--type", "t2.micro"]).failed();
    assert!(stderr.contains("missing-image") && stderr.contains("NotFound"), "{stderr}");
    let stderr = user.run(&["forward", "web", "8080:0"]).failed();
    assert!(stderr.contains("ports are 1 to 65535"), "{stderr}");
}

// issue 16 (REQ-SSH-001): `keys create` saves the private key, private to the user, where
// `ec2local ssh` finds it; `keys rm` removes both.
#[test]
fn key_pairs_are_managed_from_the_command_line() {
    let (tmp, service) = start_without_libvirt();
    let user = CliUser::new(&service.url, &tmp.path().join("home"));
    let out = user.run(&["keys", "create", "laptop"]).ok();
    let saved = user.config_dir().join("keys/laptop");
    assert!(out.contains("private key saved to") && out.contains(saved.to_str().unwrap()), "{out}");
    let private = std::fs::read_to_string(&saved).unwrap();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    // A second create with the name does not overwrite the saved key.
    let stderr = user.run(&["keys", "create", "laptop"]).failed();
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), private);

    let (public, _) = common::keygen(tmp.path(), "ed25519", None);
    let pub_file = tmp.path().join("imported.pub");
    std::fs::write(&pub_file, &public).unwrap();
    user.run(&["keys", "import", "desk", pub_file.to_str().unwrap()]).ok();
    let listing = user.run(&["keys", "ls"]).ok();
    let laptop = listing.lines().find(|l| l.starts_with("laptop")).unwrap_or_default();
    assert!(laptop.contains("ssh-ed25519") && laptop.contains(saved.to_str().unwrap()), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("desk ") && l.contains("SHA256:")), "{listing}");
    let json: serde_json::Value = serde_json::from_str(&user.run(&["keys", "ls", "--json"]).ok()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    user.run(&["keys", "rm", "laptop"]).ok();
    assert!(!saved.exists());
    let stderr = user.run(&["keys", "rm", "laptop"]).failed();
    assert!(stderr.contains("laptop"), "{stderr}");
}
