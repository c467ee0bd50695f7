//! Settling work that a restart of the service (or a libvirt outage) cut short.
//!
//! A row with a task and no owner in this process was being worked on by an earlier
//! run. What happens to it is one table (`decide`), one row per task and domain state,
//! after Nova's `_init_instance`: a launch that never ran is finished if its domain is
//! complete and undone otherwise; nothing that has ever run is undone; a terminate is
//! finished; a start, stop or reboot ends where libvirt shows the guest, with a reason.

use std::sync::atomic::Ordering;

use super::state::{Event, State, Status, Task};
use super::{Inner, Instances, status_of};
use crate::db::instances::{self as rows, InstanceRow};
use crate::error::AppError;

/// What libvirt shows of an instance's domain: the one reading of `virsh domstate` that
/// recovery and the actions' failure paths share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Missing,
    /// Running, paused, shutting down: QEMU is up.
    Up,
    /// Defined, not running (shut off, crashed).
    Off,
}

impl Domain {
    pub fn from_domstate(state: Option<&str>) -> Domain {
        match state {
            None => Domain::Missing,
            Some("running" | "paused" | "idle" | "in shutdown" | "blocked" | "pmsuspended") => Domain::Up,
            Some(_) => Domain::Off,
        }
    }
}

/// What the recovery does with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was cut short.
    Leave,
    /// The task's own end, as if it had finished.
    Finish(Option<&'static str>),
    /// End the task in this state, with the reason.
    Settle(State, &'static str),
    /// The launch got as far as a complete domain: start it.
    ResumeLaunch,
    /// The launch never ran and its domain is incomplete: remove what it made.
    UndoLaunch,
    FinishTerminate,
    RetryCleanup,
}

const GONE: &str =
    "the libvirt domain disappeared while the service was down; the disk is kept until the instance is terminated";

/// The recovery table: `status` as stored, the domain as libvirt shows it, and whether
/// the instance has ever run (it has a launch time).
pub fn decide(status: Status, domain: Domain, ever_ran: bool) -> Recovery {
    use Domain::*;
    let Some(task) = status.task else { return Recovery::Leave };
    match (task, domain) {
        (Task::Terminating, _) => Recovery::FinishTerminate,
        (Task::CleaningUp, _) => Recovery::RetryCleanup,
        (Task::Launching, Up) => Recovery::Finish(Some("the service restarted during the launch; the instance runs")),
        (Task::Launching, Off) if !ever_ran => Recovery::ResumeLaunch,
        (Task::Launching, Missing) if !ever_ran => Recovery::UndoLaunch,
        (Task::Launching, Off) => Recovery::Settle(State::Stopped, "the service restarted during the launch"),
        (Task::Starting, Up) => Recovery::Finish(Some("the service restarted during the start; the instance runs")),
        (Task::Starting, Off) => {
            Recovery::Settle(State::Stopped, "the service restarted before the instance started; start it again")
        }
        (Task::Stopping, Up) => {
            Recovery::Settle(State::Running, "the service restarted before the instance stopped; stop it again")
        }
        (Task::Stopping, Off) => Recovery::Finish(Some("the service restarted during the stop; the instance is off")),
        (Task::Rebooting, Up) => Recovery::Finish(Some("the service restarted during the reboot")),
        (Task::Rebooting, Off) => {
            Recovery::Settle(State::Stopped, "the service restarted during the reboot and the guest is off; start it")
        }
        (_, Missing) => Recovery::Settle(State::Error, GONE),
    }
}

impl Instances {
    /// Settles every row with a task that no work of this process owns. Safe to run at
    /// any time: work in flight holds a ticket and is skipped.
    pub async fn recover_interrupted(&self) -> Result<(), AppError> {
        let inner = self.inner();
        inner.recovery_wanted.store(false, Ordering::SeqCst);
        let busy = inner.deps.db.call(|c| rows::list_busy(c)).await?;
        for row in busy {
            let Some(ticket) = inner.ticket_if_free(&row.id) else { continue };
            let lock = inner.lock(&row.id);
            let _guard = lock.lock().await;
            // Read again under the lock: the row may have moved since the list.
            let row = inner.row(&row.id).await?;
            match inner.recover(&row).await {
                Ok(()) => ticket.done(),
                // The ticket, dropped undone, asks for another pass later.
                Err(e) if matches!(e, AppError::LibvirtUnavailable(_)) => return Err(e),
                Err(e) => tracing::error!(instance = %row.id, error = %e, "could not settle interrupted work"),
            }
        }
        inner.restore_reservations().await
    }
}

impl Inner {
    /// Makes again the DHCP reservation of every idle instance that holds an address
    /// the network has no reservation for: a launch cut off between its start and its
    /// reservation, a reservation that kept failing, a network re-created by hand.
    /// Without it such a guest gets no address (the network answers reserved hosts only).
    async fn restore_reservations(&self) -> Result<(), AppError> {
        let reserved = match self.deps.network.reserved_macs().await {
            Ok(Some(reserved)) => reserved,
            Ok(None) => return Ok(()),
            Err(e @ AppError::LibvirtUnavailable(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the DHCP reservations; checked at the next pass");
                return Ok(());
            }
        };
        let missing = |row: &InstanceRow| {
            row.task.is_none()
                && row.state != State::Terminated.as_str()
                && row.reserved_ip.is_some()
                && !reserved.iter().any(|mac| mac.eq_ignore_ascii_case(&row.mac_address))
        };
        let rows = self.deps.db.call(|c| rows::list(c, false)).await?;
        for row in rows.iter().filter(|r| missing(r)) {
            // Work in flight (a launch about to reserve) owns its row.
            let Some(ticket) = self.ticket_if_free(&row.id) else { continue };
            // Work holding the instance (a launch making its reservation late) is not
            // waited for: waiting with the ticket would keep the monitor off the row.
            let lock = self.lock(&row.id);
            let Ok(_guard) = lock.try_lock() else {
                self.want_recovery();
                ticket.done();
                continue;
            };
            let row = self.row(&row.id).await?;
            // Read again under the lock too: a launch's late reservation may have been
            // made while this pass waited for the lock.
            let still_missing = match self.deps.network.reserved_macs().await? {
                Some(now) => !now.iter().any(|mac| mac.eq_ignore_ascii_case(&row.mac_address)),
                None => false,
            };
            let Some(host) = Self::dhcp_host(&row).filter(|_| missing(&row) && still_missing) else {
                ticket.done();
                continue;
            };
            match self.deps.network.reserve(&host).await {
                Ok(()) => tracing::warn!(instance = %row.id, ip = %host.ip, "restored a missing DHCP reservation"),
                // The ticket, dropped undone, asks for another pass.
                Err(e @ AppError::LibvirtUnavailable(_)) => return Err(e),
                // Another host's entry holds the address: retrying would not change that.
                Err(e) => {
                    tracing::error!(instance = %row.id, error = %e, "could not restore a missing DHCP reservation")
                }
            }
            ticket.done();
        }
        Ok(())
    }
}

impl Inner {
    async fn recover(&self, row: &InstanceRow) -> Result<(), AppError> {
        let status = status_of(row);
        let domstate = self.deps.virsh.domstate_if_defined(&row.id).await?;
        let domain = Domain::from_domstate(domstate.as_deref());
        let decision = match (status.task, domstate.as_deref()) {
            // A launch that took a warm spare, cut off before its guest resumed: the
            // guest never ran (its seed may not be in), so the launch is undone.
            (Some(Task::Launching), Some("paused")) if row.launched_at.is_none() => Recovery::UndoLaunch,
            _ => decide(status, domain, row.launched_at.is_some()),
        };
        if decision != Recovery::Leave {
            tracing::warn!(instance = %row.id, %status, ?domain, ?decision, "settling work cut short by a restart or an outage");
        }
        let reason = |r: &str| Some(r.to_string());
        match decision {
            Recovery::Leave => {}
            Recovery::Finish(why) => {
                self.transition(&row.id, status, Event::Finished, why.map(str::to_string)).await?;
            }
            Recovery::Settle(state, why) => {
                self.transition(&row.id, status, Event::Settled(state), reason(why)).await?;
            }
            Recovery::ResumeLaunch => match self.deps.virsh.start(&row.id).await {
                Ok(()) => {
                    let why = "the service restarted during the launch; the launch was finished";
                    self.transition(&row.id, status, Event::Finished, reason(why)).await?;
                }
                Err(e) if matches!(e, crate::exec::virsh::VirshError::Unreachable { .. }) => return Err(e.into()),
                // The guest may have run before the restart: keep its disk; terminate removes it.
                Err(e) => {
                    let why = format!("the launch could not be finished after a restart: {e}; terminate it");
                    self.transition(&row.id, status, Event::Settled(State::Error), Some(why)).await?;
                }
            },
            Recovery::UndoLaunch => {
                self.fail_launch(row, "the service restarted before the instance was built").await;
            }
            Recovery::FinishTerminate => match self.finish_terminate(&row.id).await {
                Ok((event, why, release)) => {
                    self.transition_releasing(&row.id, status, event, why, release).await?;
                }
                Err(e) if matches!(e, AppError::LibvirtUnavailable(_)) => return Err(e),
                Err(e) => {
                    let why = format!("terminate failed: {e}; terminate again");
                    self.transition(&row.id, status, Event::Settled(State::Error), Some(why)).await?;
                }
            },
            Recovery::RetryCleanup => match self.remove_resources(row).await {
                Ok(()) => {
                    // Keep why the launch failed; drop what the cleanup had left.
                    let why = row.state_reason.as_deref().map(|r| r.split("; left behind:").next().unwrap_or(r));
                    self.transition_releasing(&row.id, status, Event::Finished, why.map(str::to_string), true).await?;
                    tracing::info!(instance = %row.id, "cleaned up what a failed launch had left");
                }
                Err(left) => {
                    tracing::warn!(instance = %row.id, error = %left, "cleanup still cannot finish");
                    if matches!(left.cause, AppError::LibvirtUnavailable(_)) {
                        return Err(left.cause);
                    }
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{ALL_STATES, ALL_TASKS};
    use super::*;

    // REQ-REL-001, REQ-INST-007, REQ-INST-012: every task × every domain state.
    #[test]
    fn the_recovery_table() {
        use Domain::*;
        use Recovery::*;
        use Task::*;
        let pending = |t| Status::busy(State::Pending, t);
        let cases: &[(Status, Domain, bool, Recovery)] = &[
            (pending(Launching), Up, false, Finish(Some("the service restarted during the launch; the instance runs"))),
            (pending(Launching), Off, false, ResumeLaunch),
            (pending(Launching), Missing, false, UndoLaunch),
            (
                pending(Starting),
                Off,
                true,
                Settle(State::Stopped, "the service restarted before the instance started; start it again"),
            ),
            (pending(Starting), Missing, true, Settle(State::Error, GONE)),
            (
                Status::busy(State::Stopping, Stopping),
                Up,
                true,
                Settle(State::Running, "the service restarted before the instance stopped; stop it again"),
            ),
            (Status::busy(State::Stopping, Stopping), Missing, true, Settle(State::Error, GONE)),
            (
                Status::busy(State::Running, Rebooting),
                Up,
                true,
                Finish(Some("the service restarted during the reboot")),
            ),
            (Status::busy(State::Running, Rebooting), Missing, true, Settle(State::Error, GONE)),
            (Status::busy(State::Running, Terminating), Missing, true, FinishTerminate),
            (Status::busy(State::Error, CleaningUp), Missing, false, RetryCleanup),
        ];
        for (status, domain, ever_ran, expected) in cases {
            assert_eq!(&decide(*status, *domain, *ever_ran), expected, "{status} with the domain {domain:?}");
        }
        assert!(matches!(decide(pending(Starting), Up, true), Finish(_)));
        assert!(matches!(decide(Status::busy(State::Stopping, Stopping), Off, true), Finish(_)));
        assert!(matches!(decide(Status::busy(State::Running, Rebooting), Off, true), Settle(State::Stopped, _)));
    }

    // REQ-STOR-004: only a launch that never ran is ever undone; every decision is a
    // move the lifecycle allows.
    #[test]
    fn nothing_that_ran_is_undone_and_every_decision_is_a_legal_move() {
        for state in ALL_STATES {
            for task in ALL_TASKS {
                for domain in [Domain::Missing, Domain::Up, Domain::Off] {
                    for ever_ran in [false, true] {
                        let status = Status::busy(state, task);
                        let decision = decide(status, domain, ever_ran);
                        if ever_ran || task != Task::Launching {
                            assert_ne!(decision, Recovery::UndoLaunch, "{status} {domain:?}");
                        }
                        let event = match decision {
                            Recovery::Finish(_)
                            | Recovery::ResumeLaunch
                            | Recovery::FinishTerminate
                            | Recovery::RetryCleanup => Some(Event::Finished),
                            Recovery::Settle(to, _) => Some(Event::Settled(to)),
                            Recovery::UndoLaunch => Some(Event::Settled(State::Error)),
                            Recovery::Leave => None,
                        };
                        // Only the task/state pairs the lifecycle can produce matter.
                        let reachable = matches!(
                            (state, task),
                            (State::Pending, Task::Launching | Task::Starting)
                                | (State::Stopping, Task::Stopping)
                                | (State::Running, Task::Rebooting)
                                | (State::Error, Task::CleaningUp)
                                | (_, Task::Terminating)
                        ) && state != State::Terminated;
                        if let (Some(event), true) = (event, reachable) {
                            assert!(
                                status.after(event).is_ok(),
                                "{status} {domain:?}: {decision:?} is not a legal move"
                            );
                        }
                    }
                }
            }
        }
        for state in ALL_STATES {
            assert_eq!(decide(Status::idle(state), Domain::Missing, true), Recovery::Leave);
        }
    }

    mod over_scripted_virsh {
        use std::time::Duration;

        use crate::error::AppError;
        use crate::exec::scripted::Scripted;
        use crate::instances::testbench::{ID, IP, LIBVIRT_DOWN, MAC, NETWORK_INFO, NETWORK_XML, instances_over};

        // REQ-REL-001
        #[tokio::test]
        async fn the_pass_settles_work_a_restart_cut_short_where_libvirt_shows_it() {
            let script = Scripted::default().ok(" domstate ", "shut off\n");
            let bench =
                instances_over(script, Duration::from_secs(1)).with_busy_instance("stopping", Some("stopping")).await;
            bench.instances.recover_interrupted().await.unwrap();
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.task), ("stopped", None));

            let script = Scripted::default().ok(" domstate ", "running\n");
            let bench =
                instances_over(script, Duration::from_secs(1)).with_busy_instance("pending", Some("starting")).await;
            bench.instances.recover_interrupted().await.unwrap();
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.task), ("running", None));
        }

        // REQ-REL-001, issue 17: a launch that took a warm spare and was cut off before
        // its guest resumed is undone, not taken for running: its guest never ran, and
        // its seed may not be in.
        #[tokio::test]
        async fn a_launch_cut_off_before_its_spare_resumed_is_undone() {
            let script = Scripted::default()
                .ok(" domstate ", "paused\n")
                .ok(" destroy ", "")
                .ok(" undefine ", "")
                .ok(" net-info ", NETWORK_INFO)
                .ok("net-dumpxml", NETWORK_XML)
                .ok("net-update", "");
            let bench =
                instances_over(script, Duration::from_secs(1)).with_busy_instance("pending", Some("launching")).await;
            bench.instances.recover_interrupted().await.unwrap();
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.task.as_deref()), ("error", None), "{row:?}");
            assert!(row.state_reason.unwrap().contains("restarted before the instance was built"));
            let calls = bench.script.calls();
            assert!(calls.iter().any(|c| c.contains(" destroy ")), "{calls:?}");
            assert!(!calls.iter().any(|c| c.contains(" resume ")), "{calls:?}");
        }

        // REQ-REL-001, REQ-REL-003
        #[tokio::test]
        async fn the_pass_without_libvirt_keeps_the_row_for_the_next_pass() {
            let script = Scripted::default().fail(" domstate ", LIBVIRT_DOWN);
            let bench =
                instances_over(script, Duration::from_secs(1)).with_busy_instance("stopping", Some("stopping")).await;
            let err = bench.instances.recover_interrupted().await.unwrap_err();
            assert!(matches!(err, AppError::LibvirtUnavailable(_)), "{err:?}");
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.task.as_deref()), ("stopping", Some("stopping")));
            assert!(bench.instances.recovery_wanted(), "the dropped ticket asks for another pass");
        }

        // REQ-NET-003: an instance whose launch was cut off between its start and its
        // reservation (or whose network was re-created) gets its reservation back; one
        // that has it costs nothing but the read.
        #[tokio::test]
        async fn the_pass_restores_a_missing_reservation_and_only_that() {
            let without = NETWORK_XML.replace(&format!("<host mac='{MAC}' name='{ID}' ip='{IP}'/>"), "");
            assert_ne!(without, NETWORK_XML);
            let script = Scripted::default().ok("net-dumpxml", &without).ok("net-update", "");
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            bench.instances.recover_interrupted().await.unwrap();
            let calls = bench.script.calls();
            let added: Vec<_> = calls.iter().filter(|c| c.contains("net-update")).collect();
            assert_eq!(added.len(), 1, "{calls:?}");
            assert!(added[0].contains("add-last") && added[0].contains(MAC) && added[0].contains(IP), "{added:?}");
            assert!(!bench.instances.recovery_wanted());

            let script = Scripted::default().ok("net-dumpxml", NETWORK_XML);
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("stopped").await;
            bench.instances.recover_interrupted().await.unwrap();
            assert_eq!(bench.script.count("net-update"), 0, "{:?}", bench.script.calls());
        }
    }
}
