//! Start, stop, reboot, terminate. Each answers at once after the state check and
//! finishes in the background under the instance's lock.

use std::time::{Duration, Instant};

use super::state::{Action, Plan, State, plan};
use super::{Inner, Instance, Instances, parse_id};
use crate::db::instances as rows;
use crate::db::timestamp_now;
use crate::error::AppError;

fn incorrect(e: super::state::IncorrectState) -> AppError {
    AppError::Conflict { code: "IncorrectInstanceState", message: e.to_string() }
}

impl Instances {
    /// Checks `action` against the state and, for start and stop, moves the state at
    /// once (atomically, so two requests cannot both pass).
    async fn admit(&self, id: &str, action: Action) -> Result<(String, Plan), AppError> {
        let id = parse_id(id)?.to_string();
        let row = self.inner().row(&id).await?;
        let state: State = row.state.parse().unwrap_or(State::Error);
        let decision = plan(action, state).map_err(incorrect)?;
        let transition = match action {
            Action::Start => Some((State::Stopped, State::Pending)),
            Action::Stop => Some((State::Running, State::Stopping)),
            _ => None,
        };
        if let Some((from, to)) = transition {
            let key = id.clone();
            let moved =
                self.inner().db.call(move |c| rows::compare_and_set_state(c, &key, from.as_str(), to.as_str())).await?;
            if !moved {
                let now: State = self.inner().row(&id).await?.state.parse().unwrap_or(State::Error);
                return Err(incorrect(super::state::IncorrectState { action, state: now }));
            }
        }
        Ok((id, decision))
    }

    async fn run_in_background<F, Fut>(&self, id: String, action: Action, work: F) -> Result<Instance, AppError>
    where
        F: FnOnce(std::sync::Arc<Inner>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), AppError>> + Send,
    {
        let inner = self.inner().clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let lock = inner.lock(&task_id);
            let _guard = lock.lock().await;
            if let Err(err) = work(inner.clone(), task_id.clone()).await {
                tracing::error!(instance = %task_id, action = action.as_str(), error = %err, "action failed");
                let reason = format!("{} failed: {err}", action.as_str());
                let key = task_id.clone();
                let recorded = inner.db.call(move |c| {
                    let state = rows::get(c, &key)?.map(|r| r.state).unwrap_or_default();
                    // A failed stop leaves a running guest; a failed start a stopped one.
                    let state = match state.as_str() {
                        "stopping" => "running",
                        "pending" => "stopped",
                        other => other,
                    }
                    .to_string();
                    rows::set_state(c, &key, &state, Some(&reason))
                });
                if let Err(e) = recorded.await {
                    tracing::error!(instance = %task_id, error = %e, "could not record the failed action");
                }
            }
        });
        Ok(Instance::from_row(self.inner().row(&id).await?))
    }

    /// REQ-INST-009: stopped → pending → running.
    pub async fn start(&self, id: &str) -> Result<Instance, AppError> {
        let (id, _) = self.admit(id, Action::Start).await?;
        self.run_in_background(id, Action::Start, |inner, id| async move {
            inner.virsh.start(&id).await?;
            let at = timestamp_now();
            inner.db.call(move |c| rows::set_launched(c, &id, &at)).await?;
            Ok(())
        })
        .await
    }

    /// REQ-INST-010: stopping, a graceful shutdown of the guest OS, stopped.
    pub async fn stop(&self, id: &str) -> Result<Instance, AppError> {
        let (id, _) = self.admit(id, Action::Stop).await?;
        self.run_in_background(id, Action::Stop, |inner, id| async move {
            let forced = inner.shut_down(&id).await?;
            let reason = forced.then(|| {
                format!(
                    "the guest did not shut down within {}s and was forced off",
                    inner.config.stop_timeout.as_secs()
                )
            });
            let key = id.clone();
            inner
                .db
                .call(move |c| {
                    rows::set_state(c, &key, State::Stopped.as_str(), reason.as_deref())?;
                    rows::set_ip(c, &key, None)
                })
                .await?;
            tracing::info!(instance = %id, forced, "stopped");
            Ok(())
        })
        .await
    }

    /// REQ-INST-011: the same domain, disk, MAC and address after a restart of the guest.
    pub async fn reboot(&self, id: &str) -> Result<Instance, AppError> {
        let (id, _) = self.admit(id, Action::Reboot).await?;
        self.run_in_background(id, Action::Reboot, |inner, id| async move {
            let forced = inner.restart_guest(&id).await?;
            let reason = forced.then(|| "the guest did not reboot on request and was reset".to_string());
            inner.set_state(&id, State::Running, reason).await
        })
        .await
    }

    /// REQ-INST-012: stop, delete disk and seed and domain, release the address, mark
    /// terminated. Terminating a terminated instance changes nothing.
    pub async fn terminate(&self, id: &str) -> Result<Instance, AppError> {
        let (id, decision) = self.admit(id, Action::Terminate).await?;
        if decision == Plan::AlreadyDone {
            return Ok(Instance::from_row(self.inner().row(&id).await?));
        }
        self.run_in_background(id, Action::Terminate, |inner, id| async move {
            let row = inner.row(&id).await?;
            inner.remove_resources(&row).await?;
            let at = timestamp_now();
            let key = id.clone();
            inner.db.call(move |c| rows::set_terminated(c, &key, &at)).await?;
            tracing::info!(instance = %id, "terminated");
            Ok(())
        })
        .await
    }
}

impl Inner {
    /// ACPI shutdown, re-sent until libvirt reports the domain off (a request sent while
    /// the guest still boots is lost), forced off at the stop timeout. Returns whether
    /// it had to be forced.
    async fn shut_down(&self, id: &str) -> Result<bool, AppError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        let mut next_request = Instant::now();
        loop {
            if self.virsh.domstate(id).await? == "shut off" {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                let _ = self.virsh.destroy(id).await;
                return Ok(true);
            }
            if Instant::now() >= next_request {
                if let Err(e) = self.virsh.shutdown(id).await {
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
                let virsh = self.virsh.clone();
                let id = id.to_string();
                tokio::spawn(async move { virsh.wait_for_event(&id, "reboot", 10).await })
            };
            // Let the watcher subscribe before the request can be acted on.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = self.virsh.reboot(id).await {
                tracing::debug!(instance = %id, error = %e, "reboot request not taken");
            }
            if watcher.await.map_err(|e| AppError::Internal(e.to_string()))?? {
                return Ok(false);
            }
        }
        self.virsh.reset(id).await?;
        Ok(true)
    }
}
