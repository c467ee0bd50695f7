//! Instances (REQ-INST-*): the service façade. Creation runs in the background after
//! the request is accepted; work on one instance is serialised by a per-instance lock;
//! every state change goes through the lifecycle (`state`) as a compare-and-set; the
//! monitor keeps state and IP current, and the recovery pass settles work that a
//! restart or a libvirt outage cut short (`recovery`).

pub mod console_facts;
pub mod create;
pub mod error;
pub mod events;
pub mod monitor;
pub mod recovery;
pub mod state;
pub mod status_check;
pub mod types;

pub(crate) mod actions;
mod cleanup;
pub mod run;
mod spares;
mod status_round;
pub mod tags;

pub use actions::StopMode;
#[cfg(test)]
pub(crate) mod testbench;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use state::{Event, State, Status, Task};
use status_check::StatusCheck;

use crate::config::Limits;
use crate::db::Db;
use crate::db::instances::{self as rows, InstanceRow, StatusWrite};
use crate::error::{AppError, InstanceError};
use crate::exec::qemu_img::QemuImg;
use crate::exec::virsh::Virsh;
use crate::ids::InstanceId;
use crate::images::Images;
use crate::keypairs::KeyPairs;
use crate::network::NetworkManager;
use crate::paths::Paths;
use crate::platform::{GuestPlatform, IsoTool};
use crate::render::DhcpHost;

/// An instance as the service reports it (REQ-INST-014).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub state: State,
    /// What the service is doing to it, if anything (`launching`, `stopping`, …).
    pub task: Option<Task>,
    pub state_reason: Option<String>,
    pub ip_address: Option<String>,
    pub mac_address: String,
    pub key_name: Option<String>,
    /// The key pair's public key as it was at launch, copied into the guest.
    pub public_key: Option<String>,
    pub image_id: String,
    pub image_name: String,
    pub login_user: String,
    pub created_at: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
    pub user_data: Option<String>,
    /// The reservation (the launch request) it came from.
    pub reservation_id: Option<String>,
    /// Refuses terminate until cleared.
    pub disable_api_termination: bool,
    /// Refuses stop until cleared.
    pub disable_api_stop: bool,
    /// Whether it can be used yet (issue 16: status checks).
    pub status_check: StatusCheck,
    /// The guest's SSH host public keys (OpenSSH lines), once known.
    pub host_keys: Vec<String>,
}

/// The lifecycle status stored in a row. A row the state machine cannot read (edited by
/// hand) shows as an idle error rather than failing the whole list.
pub fn status_of(row: &InstanceRow) -> Status {
    let state = row.state.parse().unwrap_or(State::Error);
    let task = row.task.as_deref().and_then(|t| t.parse().ok());
    Status { state, task }
}

impl Instance {
    pub fn from_row(row: InstanceRow, status_check: StatusCheck) -> Instance {
        let status = status_of(&row);
        Instance {
            state: status.state,
            task: status.task,
            id: row.id,
            name: row.name,
            instance_type: row.instance_type,
            vcpus: row.vcpus,
            memory_mib: row.memory_mib,
            disk_gib: row.disk_gib,
            state_reason: row.state_reason,
            ip_address: row.ip_address,
            mac_address: row.mac_address,
            key_name: row.key_name,
            public_key: row.public_key,
            image_id: row.image_id,
            image_name: row.image_name,
            login_user: row.login_user,
            created_at: row.created_at,
            launched_at: row.launched_at,
            terminated_at: row.terminated_at,
            user_data: row.user_data,
            reservation_id: row.reservation_id,
            disable_api_termination: row.disable_api_termination,
            disable_api_stop: row.disable_api_stop,
            status_check,
            host_keys: row.host_public_keys,
        }
    }
}

/// What a user asks for at launch (REQ-INST-004).
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    pub instance_type: String,
    pub image: String,
    pub name: Option<String>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct InstancesConfig {
    pub limits: Limits,
    /// How long a guest gets to shut down before it is forced off.
    pub stop_timeout: Duration,
    /// How long a terminated guest gets to shut down before it is destroyed.
    pub terminate_grace: Duration,
    /// How often the monitor ticks: a full look while libvirt's events are not
    /// followed, else only leases of guests without an address (see `events`).
    pub monitor_interval: Duration,
    /// How often a full look is taken even though no event asked for one.
    pub safety_poll: Duration,
    /// How many warm spares to keep (`spares`).
    pub warm_spares: usize,
    pub tool_timeout: Duration,
    /// The user libvirt runs QEMU as, when it is not the service's own (system daemon):
    /// it must reach the data dir before a launch or start is accepted.
    pub qemu_user: Option<String>,
    /// How long a run (launch, start, reboot) has for SSH to answer before it is impaired.
    pub status_timeout: Duration,
    /// The port status checks probe on guests (sshd's).
    pub guest_ssh_port: u16,
    /// The oldest health snapshot a launch trusts instead of asking libvirt.
    pub health_max_age: Duration,
}

#[derive(Clone)]
pub struct Instances {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub deps: InstanceDeps,
    pub config: InstancesConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Work this process has accepted and not finished, per instance. A row with a task
    /// but no ticket here was left by an earlier run, and is the recovery pass's.
    tickets: Arc<Mutex<HashMap<String, usize>>>,
    /// Set when work failed because libvirt was unreachable or left a cleanup behind:
    /// the supervisor runs the recovery pass once libvirt answers again.
    recovery_wanted: Arc<AtomicBool>,
    checks: status_round::Checks,
    /// libvirt's event stream, as the monitor sees it.
    watch: Arc<events::Watch>,
    /// Starts in flight, which late DHCP reservations wait for.
    starts: create::StartGate,
    /// What the warm spares are kept of.
    spares: Arc<spares::Wanted>,
}

/// Proof that this process owns work on an instance; released on drop. A ticket
/// dropped before its work said `done` (the request was dropped after the state was
/// written, or the end of the work could not be written) asks for a recovery pass, so
/// the row never keeps a task that nobody owns.
pub(crate) struct Ticket {
    tickets: Arc<Mutex<HashMap<String, usize>>>,
    recovery_wanted: Arc<AtomicBool>,
    id: String,
    done: bool,
}

impl Ticket {
    /// The work ended and its end is recorded.
    pub(crate) fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.recovery_wanted.store(true, Ordering::SeqCst);
        }
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = tickets.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                tickets.remove(&self.id);
            }
        }
    }
}

pub(crate) fn not_found(id: &str) -> AppError {
    InstanceError::NotFound(id.to_string()).into()
}

pub(crate) fn parse_id(id: &str) -> Result<InstanceId, AppError> {
    id.parse().map_err(|e: crate::ids::InvalidInstanceId| InstanceError::MalformedId(e.to_string()).into())
}

/// What instances are built with: the services and tools they drive.
pub struct InstanceDeps {
    pub db: Db,
    pub paths: Paths,
    pub virsh: Virsh,
    pub qemu_img: QemuImg,
    pub images: Images,
    pub key_pairs: KeyPairs,
    pub network: NetworkManager,
    pub platform: GuestPlatform,
    /// The ISO tool for cloud-init seeds; None when none is installed (launches fail).
    pub iso_tool: Option<IsoTool>,
    /// The service's last health snapshot (the host check of a launch reads it).
    pub health: crate::health::Latest,
}

impl Instances {
    pub fn new(deps: InstanceDeps, config: InstancesConfig) -> Self {
        Instances {
            inner: Arc::new(Inner {
                deps,
                config,
                locks: Mutex::new(HashMap::new()),
                tickets: Arc::default(),
                recovery_wanted: Arc::default(),
                checks: Default::default(),
                watch: Arc::default(),
                starts: Default::default(),
                spares: Default::default(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub async fn list(&self, include_terminated: bool) -> Result<Vec<Instance>, AppError> {
        let rows = self.inner.deps.db.call(move |c| rows::list(c, include_terminated)).await?;
        Ok(rows.into_iter().map(|row| self.inner.describe(row)).collect())
    }

    /// One instance, with its state and IP read from libvirt now (REQ-INST-015).
    pub async fn get(&self, id: &str) -> Result<Instance, AppError> {
        let id = parse_id(id)?.to_string();
        let row = self.inner.row(&id).await?;
        let status = status_of(&row);
        // Work in flight owns the state; settled instances are compared with libvirt.
        if status.task.is_none() && matches!(status.state, State::Running | State::Stopped) {
            let domain = self.inner.deps.virsh.domstate_if_defined(&id).await?;
            // The address is the monitor's to find (it polls leases while a running
            // instance has none): a lease lookup here would wait for libvirt's network
            // lock, which a reservation holds through a firewall reload.
            if let Some(change) = monitor::reconcile(&row, domain.as_deref(), row.ip_address.as_deref()) {
                self.inner.apply(&row, change).await?;
                return Ok(self.inner.describe(self.inner.row(&id).await?));
            }
        }
        Ok(self.inner.describe(row))
    }

    /// The guest's serial console, like EC2 GetConsoleOutput (the last 64 KiB).
    pub async fn console_output(&self, id: &str) -> Result<String, AppError> {
        let instance_id = parse_id(id)?;
        self.inner.row(&instance_id.to_string()).await?;
        self.inner.console_tail(&instance_id).await
    }

    /// Whether libvirt's domain events are being followed (see `events`).
    pub fn events_live(&self) -> bool {
        self.inner.watch.is_live()
    }

    /// Whether the supervisor should run the recovery pass (see `Inner::recovery_wanted`).
    pub fn recovery_wanted(&self) -> bool {
        self.inner.recovery_wanted.load(Ordering::SeqCst)
    }
}

/// How much of the console `console_output` returns, like EC2's GetConsoleOutput.
const CONSOLE_TAIL_BYTES: u64 = 64 * 1024;

/// The last `max` bytes of a file, reading only those; empty when there is no file.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut tail = Vec::with_capacity(len.min(max) as usize);
    file.take(max).read_to_end(&mut tail)?;
    Ok(tail)
}

impl Inner {
    /// The instance as reported, with its status check.
    pub(crate) fn describe(&self, row: InstanceRow) -> Instance {
        let status_check = self.checks.view(&row);
        Instance::from_row(row, status_check)
    }

    /// The last 64 KiB of the guest's serial console.
    pub(crate) async fn console_tail(&self, id: &InstanceId) -> Result<String, AppError> {
        let path = self.deps.paths.instance_console_log(id);
        let tail = tokio::task::spawn_blocking(move || read_tail(&path, CONSOLE_TAIL_BYTES)).await??;
        Ok(String::from_utf8_lossy(&tail).into_owned())
    }

    pub(crate) fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().clone()
    }

    pub(crate) async fn row(&self, id: &str) -> Result<InstanceRow, AppError> {
        let key = id.to_string();
        self.deps.db.call(move |c| rows::get(c, &key)).await?.ok_or_else(|| not_found(id))
    }

    /// Registers work on `id` by this process (see `tickets`).
    pub(crate) fn ticket(&self, id: &str) -> Ticket {
        *self.tickets.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default() += 1;
        self.new_ticket(id)
    }

    fn new_ticket(&self, id: &str) -> Ticket {
        Ticket {
            tickets: self.tickets.clone(),
            recovery_wanted: self.recovery_wanted.clone(),
            id: id.to_string(),
            done: false,
        }
    }

    /// A ticket only if no work of this process holds the instance.
    pub(crate) fn ticket_if_free(&self, id: &str) -> Option<Ticket> {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if tickets.contains_key(id) {
            return None;
        }
        tickets.insert(id.to_string(), 1);
        drop(tickets);
        Some(self.new_ticket(id))
    }

    pub(crate) fn has_ticket(&self, id: &str) -> bool {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    pub(crate) fn want_recovery(&self) {
        self.recovery_wanted.store(true, Ordering::SeqCst);
    }

    /// Moves an instance by `event` from `from`: the one way every state is written.
    /// Returns the new status, or None when the row is no longer in `from` (a terminate
    /// overtook the work, or another request won the race): nothing was written then.
    pub(crate) async fn transition(
        &self,
        id: &str,
        from: Status,
        event: Event,
        reason: Option<String>,
    ) -> Result<Option<Status>, AppError> {
        self.transition_releasing(id, from, event, reason, false).await
    }

    /// `transition`, and the row's address is freed with it when `release_address`
    /// (its DHCP reservation is gone), in the same write.
    pub(crate) async fn transition_releasing(
        &self,
        id: &str,
        from: Status,
        event: Event,
        reason: Option<String>,
        release_address: bool,
    ) -> Result<Option<Status>, AppError> {
        let to = from.after(event).map_err(InstanceError::from)?;
        let now = crate::db::timestamp_now();
        let started = to == Status::idle(State::Running) && matches!(from.task, Some(Task::Launching | Task::Starting));
        let key = id.to_string();
        let logged_reason = reason.clone().unwrap_or_default();
        let applied = self
            .deps
            .db
            .call(move |c| {
                rows::write_status(
                    c,
                    &key,
                    &StatusWrite {
                        from_state: from.state.as_str(),
                        from_task: from.task.map(Task::as_str),
                        to_state: to.state.as_str(),
                        to_task: to.task.map(Task::as_str),
                        reason: reason.as_deref(),
                        launched_at: started.then_some(now.as_str()),
                        terminated_at: (to.state == State::Terminated).then_some(now.as_str()),
                        clear_ip: matches!(to.state, State::Stopped | State::Error | State::Terminated),
                        release_address,
                    },
                )
            })
            .await?;
        if applied {
            self.checks.restart(id, chrono::Utc::now());
            tracing::info!(instance = %id, %from, %to, reason = %logged_reason, "state changed");
            Ok(Some(to))
        } else {
            tracing::info!(instance = %id, %from, ?event, "state change not applied: the instance moved on");
            Ok(None)
        }
    }

    pub(crate) async fn apply(&self, row: &InstanceRow, change: monitor::Change) -> Result<(), AppError> {
        if let Some((state, reason)) = change.state {
            self.transition(&row.id, status_of(row), Event::Observed(state), reason).await?;
        }
        if let Some(ip) = change.ip {
            // Only while the row is as the monitor saw it: a terminate that finished in
            // between must not get an address back.
            let (key, seen) = (row.id.clone(), row.state.clone());
            self.deps.db.call(move |c| rows::set_ip_if_idle(c, &key, &seen, ip.as_deref())).await?;
        }
        Ok(())
    }

    pub(crate) fn dhcp_host(row: &InstanceRow) -> Option<DhcpHost> {
        row.reserved_ip.as_ref().map(|ip| DhcpHost {
            mac: row.mac_address.clone(),
            name: row.id.clone(),
            ip: ip.clone(),
        })
    }

    pub(crate) fn instance_id(row: &InstanceRow) -> Result<InstanceId, AppError> {
        row.id
            .parse()
            .map_err(|e: crate::ids::InvalidInstanceId| AppError::internal(format!("a stored instance id: {e}")))
    }

    /// Refuses, before anything changes, when QEMU could not reach the instance files.
    pub(crate) async fn check_data_dir(&self) -> Result<(), AppError> {
        let Some(qemu_user) = self.config.qemu_user.clone() else { return Ok(()) };
        let root = self.deps.paths.root().to_path_buf();
        let problem = tokio::task::spawn_blocking(move || crate::qemu_access::problem(&root, &qemu_user)).await?;
        match problem {
            None => Ok(()),
            Some(p) => Err(AppError::DataDirUnreachable(format!("{p}; fix: {}", p.fix()))),
        }
    }
}

/// Runs blocking file work (writes, fsync, removing multi-GB trees) off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, AppError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_dropped_before_its_work_is_done_asks_for_recovery() {
        let tickets: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let wanted: Arc<AtomicBool> = Arc::default();
        let ticket = |id: &str| {
            *tickets.lock().unwrap().entry(id.to_string()).or_default() += 1;
            Ticket { tickets: tickets.clone(), recovery_wanted: wanted.clone(), id: id.into(), done: false }
        };
        let (a, b) = (ticket("i-0000000a"), ticket("i-0000000a"));
        assert_eq!(tickets.lock().unwrap()["i-0000000a"], 2, "work queued on one instance is counted");
        a.done();
        assert!(!wanted.load(Ordering::SeqCst), "finished work asks for nothing");
        assert!(tickets.lock().unwrap().contains_key("i-0000000a"), "the queued work still owns it");
        drop(b);
        assert!(wanted.load(Ordering::SeqCst), "work that never recorded its end asks for a recovery pass");
        assert!(tickets.lock().unwrap().is_empty());
    }

    #[test]
    fn the_console_tail_reads_only_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("console.log");
        assert!(read_tail(&path, 10).unwrap().is_empty(), "no file yet");
        std::fs::write(&path, b"0123456789abcdef").unwrap();
        assert_eq!(read_tail(&path, 6).unwrap(), b"abcdef");
        assert_eq!(read_tail(&path, 100).unwrap(), b"0123456789abcdef");
    }
}
