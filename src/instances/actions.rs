//! Start, stop, reboot, terminate. Each is admitted at once (state check and move as
//! one compare-and-set, after checking that libvirt answers) and finishes in the
//! background under the instance's lock. A refusal changes nothing.

use std::time::{Duration, Instant};

use super::recovery::Domain;
use super::state::{Action, Event, IncorrectState, Plan, State, Status, plan};
use super::{Inner, Instance, Instances, Ticket, parse_id, status_of};
use crate::error::{AppError, InstanceError};

fn incorrect(e: IncorrectState) -> AppError {
    InstanceError::IncorrectState(e).into()
}

/// How a stop treats the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// ACPI shutdown; forced off only after the stop timeout.
    Graceful,
    /// Powered off at once, like pulling the plug.
    PowerOff,
}

/// Terminate and stop are refused while the instance is protected against them.
fn refuse_if_protected(row: &crate::db::instances::InstanceRow, action: Action) -> Result<(), AppError> {
    let (protected, attribute) = match action {
        Action::Terminate => (row.disable_api_termination, "disableApiTermination"),
        Action::Stop => (row.disable_api_stop, "disableApiStop"),
        Action::Start | Action::Reboot => (false, ""),
    };
    if protected {
        return Err(InstanceError::OperationNotPermitted(format!(
            "instance {} may not be {}; clear its {attribute} attribute first",
            row.id,
            if action == Action::Terminate { "terminated" } else { "stopped" }
        ))
        .into());
    }
    Ok(())
}

/// How an action's work ends: the event, its reason, and whether the instance's
/// address is free (its DHCP reservation is gone).
pub(crate) type Ending = (Event, Option<String>, bool);

/// An admitted action: the status it moved the instance to, and its ticket.
struct Admitted {
    id: String,
    status: Status,
    ticket: Ticket,
}

impl Instances {
    /// Checks `action` against the state and what it needs (libvirt, for start the
    /// network and the data dir), then moves the state. None: nothing to do.
    async fn admit(&self, id: &str, action: Action) -> Result<Option<Admitted>, AppError> {
        let inner = self.inner();
        let id = parse_id(id)?.to_string();
        let row = inner.row(&id).await?;
        let from = status_of(&row);
        let Plan::Proceed(to) = plan(action, from).map_err(incorrect)? else { return Ok(None) };
        refuse_if_protected(&row, action)?;
        // REQ-REL-003: refuse with 503 while libvirt is down, before anything changes.
        inner.deps.virsh.version().await?;
        if action == Action::Start {
            inner.deps.network.check_usable().await?;
            inner.check_data_dir().await?;
        }
        let ticket = inner.ticket(&id);
        if inner.transition(&id, from, Event::Begin(action), None).await?.is_none() {
            ticket.done();
            let now = status_of(&inner.row(&id).await?);
            return Err(incorrect(IncorrectState { action, from: now }));
        }
        Ok(Some(Admitted { id, status: to, ticket }))
    }

    /// Runs the work of an admitted action under the instance's lock; the work returns
    /// the event and reason that end it. A failure settles the instance as libvirt
    /// shows it, with the reason.
    async fn run_in_background<F, Fut>(&self, admitted: Admitted, action: Action, work: F) -> Result<Instance, AppError>
    where
        F: FnOnce(std::sync::Arc<Inner>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Ending, AppError>> + Send,
    {
        let inner = self.inner().clone();
        let Admitted { id, status, ticket } = admitted;
        let admitted_status = status;
        let task_id = id.clone();
        tokio::spawn(async move {
            let lock = inner.lock(&task_id);
            let _guard = lock.lock().await;
            let outcome = work(inner.clone(), task_id.clone()).await;
            let recorded = match outcome {
                Ok((event, reason, release)) => {
                    inner.transition_releasing(&task_id, status, event, reason, release).await
                }
                Err(err) => {
                    tracing::error!(instance = %task_id, action = action.as_str(), error = %err, "action failed");
                    if matches!(err, AppError::LibvirtUnavailable(_)) {
                        inner.want_recovery();
                    }
                    let settled = inner.state_after_failure(&task_id, action).await;
                    let reason = format!("{} failed: {err}", action.as_str());
                    inner.transition(&task_id, status, Event::Settled(settled), Some(reason)).await
                }
            };
            match recorded {
                Ok(_) => ticket.done(),
                // The ticket, dropped undone, asks for a recovery pass to settle the row.
                Err(e) => tracing::error!(instance = %task_id, error = %e, "could not record the end of the action"),
            }
        });
        // As admitted: the work may already have moved the row on (a quick terminate).
        let mut row = self.inner().row(&id).await?;
        row.state = admitted_status.state.as_str().to_string();
        row.task = admitted_status.task.map(|t| t.as_str().to_string());
        Ok(self.inner().describe(row))
    }

    async fn current(&self, id: &str) -> Result<Instance, AppError> {
        let id = parse_id(id)?.to_string();
        Ok(self.inner().describe(self.inner().row(&id).await?))
    }

    /// REQ-INST-009: stopped → pending (starting) → running.
    pub async fn start(&self, id: &str) -> Result<Instance, AppError> {
        let Some(admitted) = self.admit(id, Action::Start).await? else { return self.current(id).await };
        self.run_in_background(admitted, Action::Start, |inner, id| async move {
            crate::failpoint::pause("start.before-virsh").await;
            inner.deps.virsh.start(&id).await?;
            Ok((Event::Finished, None, false))
        })
        .await
    }

    /// REQ-INST-010: stopping, a graceful shutdown of the guest OS, stopped.
    pub async fn stop(&self, id: &str) -> Result<Instance, AppError> {
        self.stop_with(id, StopMode::Graceful).await
    }

    /// A stop that asks the guest first (and forces it off after the stop timeout), or
    /// that powers it off at once (EC2's `Force`).
    pub async fn stop_with(&self, id: &str, mode: StopMode) -> Result<Instance, AppError> {
        let Some(admitted) = self.admit(id, Action::Stop).await? else { return self.current(id).await };
        self.run_in_background(admitted, Action::Stop, move |inner, id| async move {
            crate::failpoint::pause("stop.before-shutdown").await;
            let grace = match mode {
                StopMode::Graceful => inner.config.stop_timeout,
                StopMode::PowerOff => Duration::ZERO,
            };
            let forced = inner.shut_down(&id, grace).await? && mode == StopMode::Graceful;
            let reason = forced.then(|| {
                format!(
                    "the guest did not shut down within {}s and was forced off",
                    inner.config.stop_timeout.as_secs()
                )
            });
            tracing::info!(instance = %id, forced, "stopped");
            Ok((Event::Finished, reason, false))
        })
        .await
    }

    /// REQ-INST-011: the same domain, disk, MAC and address after a restart of the guest.
    pub async fn reboot(&self, id: &str) -> Result<Instance, AppError> {
        let Some(admitted) = self.admit(id, Action::Reboot).await? else { return self.current(id).await };
        self.run_in_background(admitted, Action::Reboot, |inner, id| async move {
            crate::failpoint::pause("reboot.before-virsh").await;
            let forced = inner.restart_guest(&id).await?;
            let reason = forced.then(|| "the guest did not reboot on request and was reset".to_string());
            Ok((Event::Finished, reason, false))
        })
        .await
    }

    /// REQ-INST-012: shut the guest down (ACPI, then destroy after the grace period),
    /// delete disk, seed and domain, release the address, mark terminated. Terminating
    /// a terminated instance changes nothing.
    pub async fn terminate(&self, id: &str) -> Result<Instance, AppError> {
        let Some(admitted) = self.admit(id, Action::Terminate).await? else { return self.current(id).await };
        self.run_in_background(admitted, Action::Terminate, |inner, id| async move {
            crate::failpoint::pause("terminate.before-shutdown").await;
            inner.finish_terminate(&id).await
        })
        .await
    }
}

impl Inner {
    /// The rest of a terminate, also run by the recovery pass after a restart.
    pub(crate) async fn finish_terminate(&self, id: &str) -> Result<Ending, AppError> {
        let row = self.row(id).await?;
        if Domain::from_domstate(self.deps.virsh.domstate_if_defined(id).await?.as_deref()) == Domain::Up {
            let forced = self.shut_down(id, self.config.terminate_grace).await?;
            tracing::info!(instance = %id, forced, "guest shut down for terminate");
        }
        match self.remove_resources(&row).await {
            Ok(()) => {
                tracing::info!(instance = %id, "terminated");
                Ok((Event::Finished, None, true))
            }
            Err(left) => {
                let reason = format!("terminate failed: {left}; terminate again");
                Ok((Event::Settled(State::Error), Some(reason), left.reservation_released))
            }
        }
    }

    /// Where an instance is after its action failed: as libvirt shows it, or, when
    /// libvirt cannot tell, where it was before the action.
    async fn state_after_failure(&self, id: &str, action: Action) -> State {
        match self.deps.virsh.domstate_if_defined(id).await.map(|s| Domain::from_domstate(s.as_deref())) {
            Ok(Domain::Up) => State::Running,
            Ok(Domain::Off) => State::Stopped,
            Ok(Domain::Missing) => State::Error,
            Err(_) => match action {
                Action::Start => State::Stopped,
                Action::Stop | Action::Reboot => State::Running,
                Action::Terminate => State::Error,
            },
        }
    }

    /// ACPI shutdown, re-sent until libvirt reports the domain off (a request sent while
    /// the guest still boots is lost), destroyed after `grace`. Returns whether it had
    /// to be forced. A failure to force it off is an error, never "forced off".
    pub(crate) async fn shut_down(&self, id: &str, grace: Duration) -> Result<bool, AppError> {
        let deadline = Instant::now() + grace;
        let mut next_request = Instant::now();
        loop {
            // Off (shut off, crashed) or gone: nothing left to shut down.
            if Domain::from_domstate(self.deps.virsh.domstate_if_defined(id).await?.as_deref()) != Domain::Up {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                self.destroy_domain(id).await?;
                return Ok(true);
            }
            if Instant::now() >= next_request {
                if let Err(e) = self.deps.virsh.shutdown(id).await {
                    tracing::debug!(instance = %id, error = %e, "shutdown request not taken");
                }
                next_request = Instant::now() + Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// ACPI reboot, re-sent until libvirt reports the guest's reset, hard reset at the
    /// stop timeout. Returns whether it had to be forced.
    async fn restart_guest(&self, id: &str) -> Result<bool, AppError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        while Instant::now() < deadline {
            let watcher = {
                let virsh = self.deps.virsh.clone();
                let id = id.to_string();
                tokio::spawn(async move { virsh.wait_for_event(&id, "reboot", 10).await })
            };
            // Let the watcher subscribe before the request can be acted on.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = self.deps.virsh.reboot(id).await {
                tracing::debug!(instance = %id, error = %e, "reboot request not taken");
            }
            if watcher.await?? {
                return Ok(false);
            }
        }
        self.deps.virsh.reset(id).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
