//! Rounds of status checks over a loopback SSH server standing in for the guest
//! (issue 16: status checks).

use std::time::Duration;

use crate::exec::scripted::Scripted;
use crate::guest_ssh::test_sshd::Sshd;
use crate::instances::state::{Action, Event, Status};
use crate::instances::status_check::CheckStatus;
use crate::instances::testbench::{Bench, ID, config, instances_configured};
use crate::instances::{Instance, State};

const FIRST_BOOT: &str = include_str!("../../../tests/fixtures/console/debian12-first-boot.log");

/// A running instance at 127.0.0.1 whose SSH port is `port`.
async fn running_at_loopback(port: u16, status_timeout: Duration) -> Bench {
    let mut config = config(Duration::from_secs(1));
    (config.guest_ssh_port, config.status_timeout) = (port, status_timeout);
    let bench = instances_configured(Scripted::default(), config).with_instance("running").await;
    let db = &bench.instances.inner().deps.db;
    db.call(|c| crate::db::instances::set_ip_if_idle(c, ID, "running", Some("127.0.0.1"))).await.unwrap();
    bench
}

/// The first boot's console as far as `upto`, with the server's key as the guest's ed25519 key.
fn console(sshd: &Sshd, upto: &str) -> String {
    let ed25519 = FIRST_BOOT.lines().find(|l| l.starts_with("ssh-ed25519 ")).unwrap();
    let text = FIRST_BOOT.replace(ed25519, &format!("{} root@i-1a2b3c4d", sshd.host_key.openssh));
    text[..text.find(upto).unwrap()].to_string()
}

async fn instance(bench: &Bench) -> Instance {
    bench.instances.list(false).await.unwrap().into_iter().find(|i| i.id == ID).unwrap()
}

async fn round(bench: &Bench) {
    bench.instances.inner().check_statuses().await.unwrap();
}

#[tokio::test]
async fn ssh_then_cloud_init_make_an_instance_ok_and_its_host_keys_known() {
    let sshd = Sshd::start().await;
    let bench = running_at_loopback(sshd.address.port(), Duration::from_secs(300)).await;
    let log = bench.paths.instance_console_log(&ID.parse().unwrap());
    assert_eq!(instance(&bench).await.status_check.status, CheckStatus::Initializing, "before any probe");

    // SSH answers while cloud-init still runs: reachable, its key trusted on first use.
    std::fs::write(&log, console(&sshd, "-----BEGIN SSH HOST KEY KEYS-----")).unwrap();
    round(&bench).await;
    let waiting = instance(&bench).await;
    assert_eq!(waiting.status_check.status, CheckStatus::Initializing);
    assert_eq!(waiting.status_check.reason.as_deref(), Some("waiting for cloud-init to finish"));
    assert!(waiting.status_check.reachable_at.is_some());
    assert_eq!(waiting.host_keys, std::slice::from_ref(&sshd.host_key.openssh));
    let row = bench.row().await;
    assert_eq!(row.reachable_at, waiting.status_check.reachable_at, "stored for a restart");
    assert_eq!(row.host_key.as_deref(), Some(sshd.host_key.fingerprint.as_str()), "pinned like the terminal does");

    // While the console shows cloud-init running, the guest's sshd is left alone.
    round(&bench).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sshd.connections(), 1, "no handshake per tick once SSH answered");
    let still = instance(&bench).await.status_check;
    assert_eq!(
        (still.status, still.reachable_at),
        (CheckStatus::Initializing, waiting.status_check.reachable_at.clone())
    );

    // cloud-init finished and printed all three host keys: ok, and they replace the one seen.
    std::fs::write(&log, console(&sshd, "Debian GNU/Linux 12")).unwrap();
    round(&bench).await;
    let ok = instance(&bench).await;
    assert_eq!((ok.status_check.status, ok.status_check.reason), (CheckStatus::Ok, None));
    assert_eq!(ok.status_check.reachable_at, waiting.status_check.reachable_at);
    assert_eq!(ok.host_keys.len(), 3, "{:?}", ok.host_keys);
    assert!(ok.host_keys.contains(&sshd.host_key.openssh));
    assert_eq!(sshd.connections(), 2, "a handshake again when cloud-init finished");
    assert_eq!(bench.script.calls(), Vec::<String>::new(), "no virsh call for a status check");

    // Once ok, the next re-check is 30 s away: no connection now (given time to be counted).
    round(&bench).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sshd.connections(), 2);

    // A stop ends the run: not applicable, no reachable time, the host keys stay.
    let inner = bench.instances.inner();
    inner.transition(ID, Status::idle(State::Running), Event::Begin(Action::Stop), None).await.unwrap().unwrap();
    let stopping = bench.instances.list(false).await.unwrap().remove(0);
    assert_eq!((stopping.status_check.status, stopping.status_check.reachable_at), (CheckStatus::NotApplicable, None));
    assert_eq!(bench.row().await.reachable_at, None);
    assert_eq!(stopping.host_keys.len(), 3);
}

#[tokio::test]
async fn a_guest_showing_another_host_key_is_impaired_and_the_pin_stays() {
    let sshd = Sshd::start().await;
    let bench = running_at_loopback(sshd.address.port(), Duration::from_secs(300)).await;
    let db = &bench.instances.inner().deps.db;
    db.call(|c| crate::db::instances::set_host_key(c, ID, "SHA256:pinned-before")).await.unwrap();
    round(&bench).await;
    let changed = instance(&bench).await;
    assert_eq!(changed.status_check.status, CheckStatus::Impaired);
    assert_eq!(changed.status_check.reason.as_deref(), Some("host key changed"));
    let row = bench.row().await;
    assert_eq!((row.host_key.as_deref(), row.host_public_keys.len()), (Some("SHA256:pinned-before"), 0));
    assert_eq!(row.reachable_at, None, "an unknown server is not the guest answering");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_impaired() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bench = running_at_loopback(closed, Duration::from_secs(300)).await;
    round(&bench).await;
    let waiting = instance(&bench).await.status_check;
    assert_eq!((waiting.status, waiting.reason.as_deref()), (CheckStatus::Initializing, Some("waiting for SSH")));

    let bench = running_at_loopback(closed, Duration::ZERO).await;
    round(&bench).await;
    let late = instance(&bench).await.status_check;
    assert_eq!((late.status, late.reason.as_deref()), (CheckStatus::Impaired, Some("SSH did not answer within 0 s")));
    assert!(late.impaired_since.is_some());
}

#[tokio::test]
async fn a_guest_too_busy_to_finish_a_handshake_is_given_room() {
    // Accepts connections (the kernel's backlog) and never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bench = running_at_loopback(silent.local_addr().unwrap().port(), Duration::from_secs(300)).await;
    round(&bench).await;
    let waiting = instance(&bench).await.status_check;
    assert_eq!((waiting.status, waiting.reason.as_deref()), (CheckStatus::Initializing, Some("waiting for SSH")));
    let check = bench.instances.inner().checks.current_for_test(ID);
    assert_eq!(check.slow, 1, "the handshake was given up");
    assert_eq!(check.due(chrono::Utc::now()), crate::instances::status_check::Due::Nothing, "the next waits");
}

#[tokio::test]
async fn instances_that_are_not_idle_and_running_are_not_probed() {
    let sshd = Sshd::start().await;
    let bench = running_at_loopback(sshd.address.port(), Duration::from_secs(300)).await;
    let inner = bench.instances.inner();
    inner.transition(ID, Status::idle(State::Running), Event::Begin(Action::Reboot), None).await.unwrap().unwrap();
    round(&bench).await;
    assert_eq!(sshd.connections(), 0, "a reboot in flight owns the instance");
    let rebooting = instance(&bench).await.status_check;
    assert_eq!((rebooting.status, rebooting.reachable_at), (CheckStatus::Initializing, None));
}
