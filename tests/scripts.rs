//! The shell scripts' `as_root` helper (scripts/lib/as-root.bash), run by bash with a
//! PATH of stand-ins: `id` says who we are and `sudo`, when there is one, logs what it
//! was asked. Nothing here needs or gains root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/as-root.bash");

fn stand_in(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `as_root` on a command that writes `ran` into `dir/ran` (bash builtins only, so
/// the PATH holds nothing but the stand-ins), as user `uid`, with or without sudo.
fn as_root(dir: &Path, uid: u32, with_sudo: bool) -> Output {
    stand_in(dir, "id", &format!("echo {uid}"));
    let sudo = dir.join("sudo");
    if with_sudo {
        stand_in(dir, "sudo", &format!("echo \"$*\" >> {}/sudo.log\n\"$@\"", dir.display()));
    } else if sudo.exists() {
        std::fs::remove_file(sudo).unwrap();
    }
    let snippet = format!("source {HELPER}\nas_root eval 'echo ran > {}/ran'", dir.display());
    Command::new("/bin/bash").args(["-c", &snippet, "install-deps"]).env("PATH", dir).output().unwrap()
}

#[test]
fn as_root_runs_directly_for_root_even_without_sudo() {
    let dir = tempfile::tempdir().unwrap();
    let output = as_root(dir.path(), 0, false);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("ran")).unwrap(), "ran\n");
}

#[test]
fn as_root_goes_through_sudo_for_a_user_who_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = as_root(dir.path(), 1000, true);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("ran")).unwrap(), "ran\n");
    let asked = std::fs::read_to_string(dir.path().join("sudo.log")).unwrap();
    assert!(asked.starts_with("eval echo ran > "), "{asked}");
}

#[test]
fn as_root_without_root_or_sudo_says_what_to_run_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = as_root(dir.path(), 1000, false);
    assert!(!output.status.success());
    assert!(!dir.path().join("ran").exists());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.starts_with("install-deps: this step needs root and sudo is not installed"), "{said}");
    assert!(said.contains("run install-deps as root, or run as root: eval echo\\ ran\\ \\>\\ "), "{said}");
    assert!(!said.contains("command not found"), "{said}");
}

#[test]
fn every_shell_script_parses() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut checked = 0;
    for path in [std::fs::read_dir(&scripts).unwrap(), std::fs::read_dir(scripts.join("lib")).unwrap()]
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
    {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !(text.starts_with("#!/usr/bin/env bash") || text.starts_with("# shellcheck shell=bash")) {
            continue;
        }
        let output = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} scripts found");
}
