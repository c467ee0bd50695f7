//! Status checks (issue 16), like EC2's DescribeInstanceStatus: whether a running
//! instance can be used yet. Decided here without I/O, from the last check, what this
//! tick's probe saw and what the console shows; `status_round` does the probing.
//!
//! Until SSH answers, an instance is probed every tick with an SSH handshake; then, while
//! the console shows cloud-init still running, the console alone is read: every
//! connection makes a TCG guest's sshd start a process and sign a key exchange, time
//! taken from cloud-init's last stages. `ok` needs SSH to answer and cloud-init to have
//! finished (or no cloud-init on the console after SSH answered for a minute); the tick
//! that sees it finish shakes hands again. Once ok, a plain TCP connect every 30 s; three
//! failures in a row make it impaired, and a later success ok again.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::state::{State, Status, Task};
use crate::guest_ssh::HostKey;

/// Spacing of the re-checks of an instance that was ok: the guest's logs stay quiet.
pub const RECHECK_EVERY: Duration = Duration::seconds(30);
/// Failed re-checks in a row that make an instance that was ok impaired.
pub const FAILURES_TO_IMPAIR: u32 = 3;
/// How long SSH must have answered before a guest showing no cloud-init is ok.
pub const NO_CLOUD_INIT_GRACE: Duration = Duration::seconds(60);
/// The spacing of handshakes after the first that found sshd too slow to finish one,
/// doubled for each further one, up to `SLOW_SPACING_MAX`: every attempt given up makes
/// the guest start another sshd, time a busy guest would rather spend booting.
pub const SLOW_SPACING: Duration = Duration::seconds(5);
pub const SLOW_SPACING_MAX: Duration = Duration::seconds(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Initializing,
    Ok,
    Impaired,
    /// The instance is not running (EC2's name).
    NotApplicable,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Initializing => "initializing",
            CheckStatus::Ok => "ok",
            CheckStatus::Impaired => "impaired",
            CheckStatus::NotApplicable => "not-applicable",
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this tick's probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The instance has no IP address yet: there was nothing to probe.
    NoAddress,
    NoAnswer,
    /// A connection was accepted but no handshake completed in time (a busy guest).
    Slow,
    /// SSH answered (for a handshake: with a host key the service trusts).
    Answered,
    /// sshd answered with a host key other than the pinned or recorded ones.
    HostKeyChanged,
}

/// How far cloud-init got in the current boot, as the console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloudInit {
    /// No trace of cloud-init (an image without it, or a console not written yet).
    #[default]
    Absent,
    Running,
    Finished,
}

/// Which probe a check wants this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Until ok: an SSH handshake, and a look at the console.
    Handshake,
    /// SSH answered in this run and it is not ok yet: the console, and a handshake only
    /// when it no longer shows cloud-init running.
    Console,
    /// Once ok: a plain TCP connect.
    Connect,
    /// A re-check is not due yet.
    Nothing,
}

/// An instance's check in its current run (since its launch, start or reboot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: CheckStatus,
    pub reason: Option<String>,
    /// When the run began: the timeout counts from here.
    pub since: DateTime<Utc>,
    /// When SSH first answered in this run.
    pub reachable_at: Option<DateTime<Utc>>,
    /// Whether it has been ok in this run: from then on only re-checks.
    pub confirmed: bool,
    pub probed_at: Option<DateTime<Utc>>,
    /// When the failing began: the run's start for a guest that never came up, the first
    /// failed re-check for one that stopped answering.
    pub failing_since: Option<DateTime<Utc>>,
    /// Failed re-checks in a row.
    pub failures: u32,
    /// Handshakes in a row that found sshd too slow: the next waits `slow_spacing`.
    pub slow: u32,
}

const WAITING_FOR_SSH: &str = "waiting for SSH";

impl Check {
    pub fn new(since: DateTime<Utc>, reachable_at: Option<DateTime<Utc>>) -> Check {
        Check {
            status: CheckStatus::Initializing,
            reason: Some(WAITING_FOR_SSH.into()),
            since,
            reachable_at,
            confirmed: false,
            probed_at: None,
            failing_since: None,
            failures: 0,
            slow: 0,
        }
    }

    pub fn due(&self, now: DateTime<Utc>) -> Due {
        match self.probed_at {
            Some(last) if !self.confirmed && self.slow > 0 && now - last < slow_spacing(self.slow) => Due::Nothing,
            _ if !self.confirmed && self.reachable_at.is_some() => Due::Console,
            _ if !self.confirmed => Due::Handshake,
            Some(last) if now - last < RECHECK_EVERY => Due::Nothing,
            _ => Due::Connect,
        }
    }
}

/// The wait before the handshake that follows `slow` slow ones in a row.
pub fn slow_spacing(slow: u32) -> Duration {
    (SLOW_SPACING * 2i32.saturating_pow(slow.saturating_sub(1).min(8))).min(SLOW_SPACING_MAX)
}

/// The check after this tick's probe.
pub fn decide(prev: &Check, probe: Probe, cloud_init: CloudInit, now: DateTime<Utc>, timeout: Duration) -> Check {
    let mut next = Check { probed_at: Some(now), ..prev.clone() };
    next.slow = if probe == Probe::Slow { prev.slow + 1 } else { 0 };
    if prev.confirmed {
        recheck(&mut next, probe, now);
        return next;
    }
    if probe == Probe::Answered {
        next.reachable_at.get_or_insert(now);
    }
    let timed_out = now - prev.since >= timeout;
    let secs = timeout.num_seconds();
    let (status, reason) = match probe {
        Probe::HostKeyChanged => (CheckStatus::Impaired, "host key changed".to_string()),
        Probe::Answered => match cloud_init {
            CloudInit::Finished => (CheckStatus::Ok, String::new()),
            CloudInit::Absent if next.reachable_at.is_some_and(|at| now - at >= NO_CLOUD_INIT_GRACE) => {
                (CheckStatus::Ok, String::new())
            }
            CloudInit::Running if timed_out => {
                (CheckStatus::Impaired, format!("cloud-init did not finish within {secs} s"))
            }
            _ => (CheckStatus::Initializing, "waiting for cloud-init to finish".to_string()),
        },
        Probe::NoAddress if !timed_out => (CheckStatus::Initializing, "waiting for an IP address".to_string()),
        // A handshake that did not finish is no answer yet.
        Probe::NoAnswer | Probe::Slow if !timed_out => (CheckStatus::Initializing, WAITING_FOR_SSH.to_string()),
        Probe::NoAddress => (CheckStatus::Impaired, format!("no IP address within {secs} s")),
        Probe::NoAnswer | Probe::Slow if prev.reachable_at.is_some() => {
            (CheckStatus::Impaired, "SSH stopped answering".to_string())
        }
        Probe::NoAnswer | Probe::Slow => (CheckStatus::Impaired, format!("SSH did not answer within {secs} s")),
    };
    // EC2: an instance impaired since its launch is impaired since its launch time.
    let failing_from = if matches!(probe, Probe::NoAddress | Probe::NoAnswer | Probe::Slow) { prev.since } else { now };
    next.failing_since = (status == CheckStatus::Impaired).then(|| prev.failing_since.unwrap_or(failing_from));
    next.confirmed = status == CheckStatus::Ok;
    next.status = status;
    next.reason = (!reason.is_empty()).then_some(reason);
    next
}

fn recheck(next: &mut Check, probe: Probe, now: DateTime<Utc>) {
    if probe == Probe::Answered {
        (next.status, next.reason, next.failures, next.failing_since) = (CheckStatus::Ok, None, 0, None);
        return;
    }
    next.failures += 1;
    next.failing_since.get_or_insert(now);
    if probe == Probe::HostKeyChanged {
        (next.status, next.reason) = (CheckStatus::Impaired, Some("host key changed".into()));
    } else if next.failures >= FAILURES_TO_IMPAIR {
        (next.status, next.reason) = (CheckStatus::Impaired, Some("SSH stopped answering".into()));
    }
}

/// Whether an instance has a status check: running, or rebooting (which starts a new run).
pub fn applies(status: Status) -> bool {
    status.state == State::Running && matches!(status.task, None | Some(Task::Rebooting))
}

/// An instance's status check as the APIs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCheck {
    pub status: CheckStatus,
    pub reason: Option<String>,
    /// RFC 3339: when SSH first answered in the current run.
    pub reachable_at: Option<String>,
    /// RFC 3339, while impaired: since when.
    pub impaired_since: Option<String>,
}

impl StatusCheck {
    pub const NOT_APPLICABLE: StatusCheck =
        StatusCheck { status: CheckStatus::NotApplicable, reason: None, reachable_at: None, impaired_since: None };

    /// The view of an instance in `status`, from its check in memory, else from the time
    /// SSH answered as stored (a restarted service has not probed it yet).
    pub fn of(status: Status, check: Option<&Check>, stored_reachable_at: Option<&str>) -> StatusCheck {
        if !applies(status) {
            return StatusCheck::NOT_APPLICABLE;
        }
        let Some(check) = check else {
            return StatusCheck {
                status: CheckStatus::Initializing,
                reason: Some(WAITING_FOR_SSH.into()),
                reachable_at: stored_reachable_at.map(str::to_string),
                impaired_since: None,
            };
        };
        StatusCheck {
            status: check.status,
            reason: check.reason.clone(),
            reachable_at: check.reachable_at.map(timestamp),
            impaired_since: check.failing_since.filter(|_| check.status == CheckStatus::Impaired).map(timestamp),
        }
    }
}

/// As every timestamp the APIs show: RFC 3339, UTC, seconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What to record of a guest's host keys after a look at it, and whether its key changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostKeyOutcome {
    /// The host public keys to record, when they differ from the recorded ones.
    pub record: Option<Vec<HostKey>>,
    /// A fingerprint to pin: the key seen on first use.
    pub pin: Option<String>,
    /// The guest shows a key other than the pinned or recorded ones: nothing is recorded.
    pub changed: bool,
}

/// Judges the key the handshake saw (`seen`) and the keys the console shows against the
/// pinned fingerprint and the recorded keys. The console's keys are recorded when they
/// agree with what is known (they hold the pinned one and every recorded one), else the
/// key seen, on first use. A console or a key seen that disagrees with what is known is
/// a change, and then nothing is recorded.
pub fn judge_host_keys(
    pinned: Option<&str>,
    recorded: &[HostKey],
    console: &[HostKey],
    seen: Option<&HostKey>,
) -> HostKeyOutcome {
    const CHANGED: HostKeyOutcome = HostKeyOutcome { record: None, pin: None, changed: true };
    if !console.is_empty() {
        let holds_pin = pinned.is_none_or(|p| console.iter().any(|k| k.fingerprint == p));
        if !holds_pin || !recorded.iter().all(|k| console.contains(k)) {
            return CHANGED;
        }
    }
    let mut known = if console.is_empty() { recorded.to_vec() } else { console.to_vec() };
    let mut pin = None;
    if let Some(key) = seen {
        let trusted = known.contains(key) || pinned == Some(key.fingerprint.as_str());
        let first_use = known.is_empty() && pinned.is_none();
        if !trusted && !first_use {
            return CHANGED;
        }
        if known.is_empty() {
            known.push(key.clone()); // on first use, or the key pinned by the terminal
        }
        if first_use {
            pin = Some(key.fingerprint.clone());
        }
    }
    HostKeyOutcome { record: (known != recorded).then_some(known), pin, changed: false }
}

#[cfg(test)]
mod tests;
