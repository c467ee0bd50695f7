//! The status checks' probing (issue 16), once per monitor tick: every idle running
//! instance at once, each with at most one TCP connection to its SSH port and no virsh
//! call, each bounded so that one slow guest delays no other. Checks live in memory (a
//! restarted service learns them again by probing); when SSH first answered, and the host
//! keys, are stored.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::console_facts;
use super::status_check::{Check, CloudInit, Due, Probe, StatusCheck, decide, judge_host_keys, timestamp};
use super::{Inner, status_of};
use crate::db::instances::{self as rows, InstanceRow};
use crate::error::AppError;
use crate::guest_ssh::{self, Handshake, HostKey};

/// A guest's SSH port gets this long to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// And this long to complete a key exchange.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Each running instance's check. A run is numbered: a result computed for a run that a
/// stop, start or reboot has ended since is dropped.
#[derive(Default)]
pub(crate) struct Checks {
    entries: Mutex<HashMap<String, (u64, Check)>>,
    runs: AtomicU64,
}

impl Checks {
    /// A new run of the instance began (or it left running): its check starts over.
    pub(crate) fn restart(&self, id: &str, now: DateTime<Utc>) {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        self.lock().insert(id.to_string(), (run, Check::new(now, None)));
    }

    pub(crate) fn view(&self, row: &InstanceRow) -> StatusCheck {
        let entries = self.lock();
        StatusCheck::of(status_of(row), entries.get(&row.id).map(|(_, c)| c), row.reachable_at.as_deref())
    }

    /// The instance's check and its run; one is begun for an instance met for the first
    /// time, with the time SSH answered as stored.
    fn current(&self, row: &InstanceRow, now: DateTime<Utc>) -> (u64, Check) {
        let parse = |t: Option<&str>| t.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
        let mut entries = self.lock();
        let entry = entries.entry(row.id.clone()).or_insert_with(|| {
            // First met after a restart of the service: the guest gets a whole timeout
            // from now, not from a launch that may be days old.
            (self.runs.fetch_add(1, Ordering::SeqCst), Check::new(now, parse(row.reachable_at.as_deref())))
        });
        entry.clone()
    }

    /// Stores a check computed for `run`; false when that run has ended meanwhile.
    fn store(&self, id: &str, run: u64, check: Check) -> bool {
        match self.lock().get_mut(id) {
            Some(entry) if entry.0 == run => {
                entry.1 = check;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn current_for_test(&self, id: &str) -> Check {
        self.lock().get(id).expect("a check").1.clone()
    }

    fn keep_only(&self, running: &[&str]) {
        self.lock().retain(|id, _| running.contains(&id.as_str()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Check)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// One round of status checks over every idle running instance, all at once.
    pub(crate) async fn check_statuses(&self) -> Result<(), AppError> {
        let rows = self.deps.db.call(|c| rows::list(c, false)).await?;
        let running: Vec<&str> = rows.iter().filter(|r| r.state == "running").map(|r| r.id.as_str()).collect();
        self.checks.keep_only(&running);
        let now = Utc::now();
        let idle = rows.iter().filter(|r| r.state == "running" && r.task.is_none() && !self.has_ticket(&r.id));
        let outcomes = futures_util::future::join_all(idle.map(|row| self.check_one(row, now))).await;
        outcomes.into_iter().collect()
    }

    async fn check_one(&self, row: &InstanceRow, now: DateTime<Utc>) -> Result<(), AppError> {
        let (run, prev) = self.checks.current(row, now);
        let due = prev.due(now);
        let address = row.ip_address.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
        let (probe, cloud_init) = match (due, address) {
            (Due::Nothing, _) => return Ok(()),
            (_, None) => (Probe::NoAddress, CloudInit::Absent),
            (Due::Connect, Some(ip)) => {
                let answered = guest_ssh::accepts(self.ssh_address(ip), CONNECT_TIMEOUT).await;
                (if answered { Probe::Answered } else { Probe::NoAnswer }, CloudInit::Absent)
            }
            (Due::Handshake, Some(ip)) => {
                let (seen, console) = tokio::join!(self.handshake(ip), self.console_facts(row));
                self.judge(row, seen, console).await?
            }
            (Due::Console, Some(ip)) => match self.console_facts(row).await {
                // SSH answered in this run: no handshake until cloud-init is done.
                console if console.cloud_init == CloudInit::Running => (Probe::Answered, CloudInit::Running),
                console => {
                    let seen = self.handshake(ip).await;
                    self.judge(row, seen, console).await?
                }
            },
        };
        let timeout = chrono::Duration::from_std(self.config.status_timeout).unwrap_or(chrono::Duration::MAX);
        // Timed from the probe's end: a handshake given up took its whole timeout.
        let next = decide(&prev, probe, cloud_init, Utc::now(), timeout);
        let newly_reachable = next.reachable_at.filter(|_| prev.reachable_at.is_none());
        let (status, reason) = (next.status, next.reason.clone());
        if !self.checks.store(&row.id, run, next) {
            return Ok(()); // a stop, start or reboot began a new run meanwhile
        }
        if (status, &reason) != (prev.status, &prev.reason) {
            let reason = reason.as_deref().unwrap_or("");
            tracing::info!(instance = %row.id, from = %prev.status, to = %status, reason, "status check");
        }
        if let Some(at) = newly_reachable {
            let (id, at) = (row.id.clone(), timestamp(at));
            self.deps.db.call(move |c| rows::set_reachable_at(c, &id, &at)).await?;
        }
        Ok(())
    }

    fn ssh_address(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.config.guest_ssh_port)
    }

    /// What the guest's sshd shows in a handshake.
    async fn handshake(&self, ip: IpAddr) -> Handshake {
        guest_ssh::host_key(self.ssh_address(ip), CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT).await
    }

    /// The probe a handshake and the console amount to, with the host keys judged and recorded.
    async fn judge(
        &self,
        row: &InstanceRow,
        handshake: Handshake,
        console: console_facts::ConsoleFacts,
    ) -> Result<(Probe, CloudInit), AppError> {
        let (seen, unanswered) = match handshake {
            Handshake::Key(key) => (Some(key), Probe::NoAnswer),
            Handshake::NoAnswer => (None, Probe::NoAnswer),
            Handshake::Slow => (None, Probe::Slow),
        };
        let recorded: Vec<HostKey> = row.host_public_keys.iter().filter_map(|k| HostKey::parse(k)).collect();
        let outcome = judge_host_keys(row.host_key.as_deref(), &recorded, &console.host_keys, seen.as_ref());
        if outcome.record.is_some() || outcome.pin.is_some() {
            let keys = outcome.record.unwrap_or(recorded).into_iter().map(|k| k.openssh).collect::<Vec<_>>();
            let (id, pin) = (row.id.clone(), outcome.pin);
            self.deps.db.call(move |c| rows::set_host_public_keys(c, &id, &keys, pin.as_deref())).await?;
        }
        let probe = match (outcome.changed, seen) {
            (true, _) => Probe::HostKeyChanged,
            (false, Some(_)) => Probe::Answered,
            (false, None) => unanswered,
        };
        Ok((probe, console.cloud_init))
    }

    /// What the console shows; nothing when it cannot be read (it is libvirt's file).
    async fn console_facts(&self, row: &InstanceRow) -> console_facts::ConsoleFacts {
        let tail = match Inner::instance_id(row) {
            Ok(id) => self.console_tail(&id).await,
            Err(e) => Err(e),
        };
        match tail {
            Ok(text) => console_facts::read(&text),
            Err(e) => {
                tracing::debug!(instance = %row.id, error = %e, "console not readable for the status check");
                console_facts::ConsoleFacts::default()
            }
        }
    }
}

#[cfg(test)]
mod tests;
