//! The decision table of status checks, a test per row, and the host-key judgement.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;

const TIMEOUT: Duration = Duration::seconds(300);

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap() + Duration::seconds(secs)
}

/// A check started at 0 after the given probes, each at its time, with that console.
fn after(probes: &[(i64, Probe, CloudInit)]) -> Check {
    probes.iter().fold(Check::new(at(0), None), |check, (secs, probe, console)| {
        decide(&check, *probe, *console, at(*secs), TIMEOUT)
    })
}

fn shown(check: &Check) -> (CheckStatus, Option<&str>) {
    (check.status, check.reason.as_deref())
}

use CheckStatus::{Impaired, Initializing, Ok as Fine};
use CloudInit::{Absent, Finished, Running};
use Probe::{Answered, HostKeyChanged, NoAddress, NoAnswer, Slow};

#[test]
fn a_new_run_is_initializing_and_wants_a_handshake() {
    let check = Check::new(at(0), None);
    assert_eq!(shown(&check), (Initializing, Some("waiting for SSH")));
    assert_eq!(check.due(at(0)), Due::Handshake);
}

#[test]
fn no_address_waits_then_is_impaired_after_the_timeout() {
    assert_eq!(shown(&after(&[(10, NoAddress, Absent)])), (Initializing, Some("waiting for an IP address")));
    let late = after(&[(10, NoAddress, Absent), (300, NoAddress, Absent)]);
    assert_eq!(shown(&late), (Impaired, Some("no IP address within 300 s")));
    assert_eq!(late.failing_since, Some(at(0)), "impaired since the run began, as EC2 says of a launch");
}

#[test]
fn no_ssh_waits_then_is_impaired_after_the_timeout() {
    assert_eq!(shown(&after(&[(299, NoAnswer, Running)])), (Initializing, Some("waiting for SSH")));
    let late = after(&[(300, NoAnswer, Running)]);
    assert_eq!(shown(&late), (Impaired, Some("SSH did not answer within 300 s")));
    assert_eq!((late.failing_since, late.reachable_at), (Some(at(0)), None));
    // Handshakes go on: a late answer still makes it ok.
    assert_eq!(late.due(at(305)), Due::Handshake);
    let recovered = decide(&late, Answered, Finished, at(310), TIMEOUT);
    assert_eq!((shown(&recovered), recovered.failing_since), ((Fine, None), None));
}

#[test]
fn handshakes_sshd_was_too_slow_for_are_spaced_out_then_every_tick_again_once_one_finishes() {
    let once = after(&[(10, Slow, Running)]);
    assert_eq!(shown(&once), (Initializing, Some("waiting for SSH")));
    assert_eq!((once.due(at(14)), once.due(at(15))), (Due::Nothing, Due::Handshake), "5 s after the first");
    let twice = decide(&once, Slow, Running, at(15), TIMEOUT);
    assert_eq!((twice.due(at(24)), twice.due(at(25))), (Due::Nothing, Due::Handshake), "then 10 s");
    let many = (0..6).fold(twice, |c, i| decide(&c, Slow, Running, at(30 + 40 * i), TIMEOUT));
    assert_eq!(many.slow, 8);
    assert_eq!((many.due(at(259)), many.due(at(260))), (Due::Nothing, Due::Handshake), "at most 30 s");
    assert_eq!(slow_spacing(u32::MAX), SLOW_SPACING_MAX);
    // An answer, or a refused connection (nothing to give up), probes every tick again.
    assert_eq!(decide(&once, NoAnswer, Running, at(15), TIMEOUT).due(at(16)), Due::Handshake);
    let answered = decide(&once, Answered, Running, at(15), TIMEOUT);
    assert_eq!((answered.slow, answered.reachable_at), (0, Some(at(15))));
    // It is no answer for the status: impaired when the timeout passes.
    let late = decide(&once, Slow, Running, at(300), TIMEOUT);
    assert_eq!(shown(&late), (Impaired, Some("SSH did not answer within 300 s")));
}

#[test]
fn ssh_and_cloud_init_finished_is_ok_and_reachable_since_the_first_answer() {
    let ok = after(&[(20, Answered, Running), (40, Answered, Finished)]);
    assert_eq!(shown(&ok), (Fine, None));
    assert_eq!(ok.reachable_at, Some(at(20)));
    assert!(ok.confirmed);
}

#[test]
fn ssh_before_cloud_init_finishes_waits_for_it_then_is_impaired_after_the_timeout() {
    let waiting = after(&[(20, Answered, Running)]);
    assert_eq!(shown(&waiting), (Initializing, Some("waiting for cloud-init to finish")));
    assert_eq!(waiting.reachable_at, Some(at(20)));
    assert_eq!(waiting.due(at(21)), Due::Console, "the guest is spared a handshake per tick");
    let slow = decide(&waiting, Answered, Running, at(300), TIMEOUT);
    assert_eq!(shown(&slow), (Impaired, Some("cloud-init did not finish within 300 s")));
    assert_eq!(slow.failing_since, Some(at(300)));
    assert_eq!(shown(&decide(&slow, Answered, Finished, at(400), TIMEOUT)), (Fine, None));
}

#[test]
fn without_cloud_init_on_the_console_ssh_answering_for_a_minute_is_ok() {
    let early = after(&[(20, Answered, Absent), (79, Answered, Absent)]);
    assert_eq!(shown(&early), (Initializing, Some("waiting for cloud-init to finish")));
    assert_eq!(shown(&decide(&early, Answered, Absent, at(80), TIMEOUT)), (Fine, None));
}

#[test]
fn a_changed_host_key_is_impaired_until_the_known_key_answers() {
    let changed = after(&[(20, HostKeyChanged, Finished)]);
    assert_eq!(shown(&changed), (Impaired, Some("host key changed")));
    assert_eq!((changed.failing_since, changed.reachable_at), (Some(at(20)), None));
    assert_eq!(changed.due(at(21)), Due::Handshake, "an unknown server is not the guest answering");
    assert_eq!(shown(&decide(&changed, Answered, Finished, at(25), TIMEOUT)), (Fine, None));
}

#[test]
fn ssh_that_answered_then_went_quiet_before_ok() {
    let quiet = after(&[(20, Answered, Running), (25, NoAnswer, Running)]);
    assert_eq!(shown(&quiet), (Initializing, Some("waiting for SSH")));
    assert_eq!(quiet.reachable_at, Some(at(20)), "the first answer stays the time it became reachable");
    let late = decide(&quiet, NoAnswer, Running, at(300), TIMEOUT);
    assert_eq!(shown(&late), (Impaired, Some("SSH stopped answering")));
}

#[test]
fn once_ok_a_tcp_recheck_every_30_seconds() {
    let ok = after(&[(40, Answered, Finished)]);
    assert_eq!(ok.due(at(41)), Due::Nothing);
    assert_eq!(ok.due(at(69)), Due::Nothing);
    assert_eq!(ok.due(at(70)), Due::Connect);
    let still = decide(&ok, Answered, Absent, at(70), TIMEOUT);
    assert_eq!((shown(&still), still.reachable_at, still.due(at(99))), ((Fine, None), Some(at(40)), Due::Nothing));
}

#[test]
fn three_failed_rechecks_in_a_row_are_impaired_and_a_success_is_ok_again() {
    let ok = after(&[(40, Answered, Finished)]);
    let once = decide(&ok, NoAnswer, Absent, at(70), TIMEOUT);
    let twice = decide(&once, NoAnswer, Absent, at(100), TIMEOUT);
    assert_eq!((shown(&twice), twice.failures), ((Fine, None), 2));
    let thrice = decide(&twice, NoAnswer, Absent, at(130), TIMEOUT);
    assert_eq!(shown(&thrice), (Impaired, Some("SSH stopped answering")));
    assert_eq!(thrice.failing_since, Some(at(70)), "impaired since the first failed re-check");
    assert_eq!(thrice.due(at(160)), Due::Connect, "still re-checked sparsely");
    let back = decide(&thrice, Answered, Absent, at(160), TIMEOUT);
    assert_eq!((shown(&back), back.failures, back.failing_since), ((Fine, None), 0, None));
    // A success between failures starts the count again.
    let interrupted = decide(&decide(&twice, Answered, Absent, at(130), TIMEOUT), NoAnswer, Absent, at(160), TIMEOUT);
    assert_eq!((interrupted.status, interrupted.failures), (Fine, 1));
}

#[test]
fn only_running_and_rebooting_instances_have_a_check() {
    use crate::instances::state::{ALL_STATES, ALL_TASKS};
    let check = after(&[(40, Answered, Finished)]);
    for state in ALL_STATES {
        for task in std::iter::once(None).chain(ALL_TASKS.map(Some)) {
            let view = StatusCheck::of(Status { state, task }, Some(&check), Some("2026-11-26T10:00:40Z"));
            let has_check = state == State::Running && matches!(task, None | Some(Task::Rebooting));
            assert_eq!(view.status != CheckStatus::NotApplicable, has_check, "{state} {task:?}");
            if !has_check {
                assert_eq!(view, StatusCheck::NOT_APPLICABLE);
            }
        }
    }
}

#[test]
fn the_view_shows_times_as_rfc3339_and_impaired_since_only_when_impaired() {
    let running = Status::idle(State::Running);
    let ok = after(&[(40, Answered, Finished)]);
    let view = StatusCheck::of(running, Some(&ok), None);
    assert_eq!(view.reachable_at.as_deref(), Some("2026-11-26T10:00:40Z"));
    assert_eq!((view.status.as_str(), view.impaired_since), ("ok", None));
    let impaired = after(&[(300, NoAnswer, Absent)]);
    let view = StatusCheck::of(running, Some(&impaired), None);
    assert_eq!((view.status.as_str(), view.impaired_since.as_deref()), ("impaired", Some("2026-11-26T10:00:00Z")));
    // Not probed yet since the service started: what was stored.
    let unprobed = StatusCheck::of(running, None, Some("2026-11-26T09:00:00Z"));
    assert_eq!(unprobed.status, Initializing);
    assert_eq!(unprobed.reachable_at.as_deref(), Some("2026-11-26T09:00:00Z"));
}

mod host_keys {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> HostKey {
        let private = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        HostKey::from_public(private.public_key()).unwrap()
    }

    #[test]
    fn the_first_key_seen_is_recorded_and_pinned() {
        let k = key();
        let outcome = judge_host_keys(None, &[], &[], Some(&k));
        assert_eq!(outcome, HostKeyOutcome { record: Some(vec![k.clone()]), pin: Some(k.fingerprint), changed: false });
    }

    #[test]
    fn a_key_pinned_by_the_terminal_is_recorded_when_seen_again() {
        let k = key();
        let outcome = judge_host_keys(Some(&k.fingerprint), &[], &[], Some(&k));
        assert_eq!(outcome, HostKeyOutcome { record: Some(vec![k]), pin: None, changed: false });
    }

    #[test]
    fn a_known_key_changes_nothing_and_another_is_a_change() {
        let (k, other) = (key(), key());
        assert_eq!(
            judge_host_keys(Some(&k.fingerprint), std::slice::from_ref(&k), &[], Some(&k)),
            HostKeyOutcome::default()
        );
        assert_eq!(judge_host_keys(None, &[], &[], None), HostKeyOutcome::default());
        let changed = judge_host_keys(Some(&k.fingerprint), std::slice::from_ref(&k), &[], Some(&other));
        assert_eq!(changed, HostKeyOutcome { record: None, pin: None, changed: true });
        // Pinned but never recorded (by the terminal): the pin decides.
        assert!(judge_host_keys(Some(&k.fingerprint), &[], &[], Some(&other)).changed);
    }

    #[test]
    fn the_consoles_keys_replace_the_one_seen_on_first_use() {
        let (ecdsa, ed25519) = (key(), key());
        let console = [ecdsa.clone(), ed25519.clone()];
        let outcome =
            judge_host_keys(Some(&ed25519.fingerprint), std::slice::from_ref(&ed25519), &console, Some(&ed25519));
        assert_eq!(outcome, HostKeyOutcome { record: Some(console.to_vec()), pin: None, changed: false });
        // Before SSH answers: recorded from the console alone, nothing pinned.
        let first = judge_host_keys(None, &[], &console, None);
        assert_eq!(first, HostKeyOutcome { record: Some(console.to_vec()), pin: None, changed: false });
        // Once recorded, seeing any of them is fine.
        assert_eq!(judge_host_keys(None, &console, &console, Some(&ecdsa)), HostKeyOutcome::default());
    }

    #[test]
    fn a_console_that_contradicts_what_is_known() {
        let (pinned, a, b) = (key(), key(), key());
        // Against the pin, with nothing recorded: a change, nothing recorded.
        let outcome = judge_host_keys(Some(&pinned.fingerprint), &[], &[a.clone(), b.clone()], None);
        assert_eq!(outcome, HostKeyOutcome { record: None, pin: None, changed: true });
        // Against recorded keys (the guest's keys were made again): a change, whatever answers.
        let recorded = std::slice::from_ref(&pinned);
        assert!(judge_host_keys(None, recorded, std::slice::from_ref(&a), Some(&pinned)).changed);
        assert!(judge_host_keys(None, recorded, std::slice::from_ref(&a), None).changed);
        // A console that holds the recorded keys and more is no change.
        assert!(!judge_host_keys(None, recorded, &[pinned.clone(), a.clone()], Some(&a)).changed);
    }
}
