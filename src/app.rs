//! The running service: configuration, the services, and the background loop that
//! keeps libvirt's side (network, pool) in place across libvirt outages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::db::Db;
use crate::error::AppError;
use crate::exec::qemu_img::QemuImg;
use crate::exec::virsh::Virsh;
use crate::exec::virsh_events::{self, Subject};
use crate::forwards::{Forwards, ForwardsConfig};
use crate::health::{self, HealthSnapshot, Latest};
use crate::images::Images;
use crate::instances::{InstanceDeps, Instances, InstancesConfig};
use crate::keypairs::KeyPairs;
use crate::network::NetworkManager;
use crate::platform::{Accelerator, AcceleratorProbe, Host, VmnetProbe};
use crate::storage::StoragePool;

pub struct App {
    pub config: Config,
    pub host: Host,
    pub accelerator: Accelerator,
    pub accelerator_probe: AcceleratorProbe,
    pub virsh: Virsh,
    pub db: Db,
    pub network: NetworkManager,
    pub pool: StoragePool,
    pub key_pairs: KeyPairs,
    pub images: Images,
    pub instances: Instances,
    pub forwards: Forwards,
    /// Whether the instances left mid-action by an earlier run were settled.
    reconciled: AtomicBool,
    /// Whether the network and pool were last seen in place; the background loop
    /// recreates them when this is false.
    infrastructure_ready: AtomicBool,
    /// The user libvirt runs QEMU as, when it must be granted access to the data dir.
    qemu_user: Option<String>,
    /// The last health report: `/api/health` answers from it, so that browser tabs
    /// polling it cost no libvirt call (one probe per interval, see `keep_health`), and
    /// so does a launch's host check while it is fresh and good.
    health: Latest,
    /// Asks for a health snapshot now: a network or pool event, or libvirt went away.
    health_wake: Arc<tokio::sync::Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl App {
    /// Opens the data dir and database. Libvirt being down is not fatal: the service
    /// starts, answers 503 where libvirt is needed, and sets things up once it is back.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let paths = config.paths.clone();
        paths.ensure().map_err(|source| StartError::DataDir { path: paths.root().display().to_string(), source })?;
        let db = Db::open(&paths.database())?;
        let host = Host::detect();
        let accelerator_probe = crate::host::probe_accelerators(host).await;
        let accelerator = host.choose_accelerator(accelerator_probe, config.accelerator);
        tracing::info!(%accelerator, ?accelerator_probe, uri = %config.libvirt_uri, data_dir = %paths.root().display(), "starting");
        let virsh = Virsh::new(config.libvirt_uri.clone(), config.virsh_timeout);
        let emulator = host.emulator();
        let vmnet = VmnetProbe::read(config.vmnet_socket.as_deref(), &config.libvirt_uri);
        let platform = host.guest_platform(accelerator, emulator, host.network_mode(&vmnet));
        tracing::info!(network = platform.network.provider(), "guest networking");
        let iso_tool = crate::exec::iso::choose_tool(host.iso_tools(), |p| crate::platform::find_program(p).is_some());
        let qemu_img = QemuImg::new(config.tool_timeout);
        // libvirt's system daemon runs QEMU as its own user, which must reach the data dir.
        let qemu_user = crate::platform::is_system_uri(&config.libvirt_uri).then(|| host.system_qemu_user()).flatten();
        if let Some(user) = &qemu_user
            && let Some(problem) = crate::qemu_access::problem(paths.root(), user)
        {
            tracing::error!(%problem, fix = %problem.fix(), "launches are refused until the data dir is reachable");
        }
        let network =
            NetworkManager::new(virsh.clone(), config.network.clone(), paths.clone(), platform.network.clone());
        let key_pairs = KeyPairs::new(db.clone(), paths.clone());
        let images = Images::new(db.clone(), paths.clone(), host.arch, &config.images, qemu_img.clone());
        let health = Latest::default();
        let deps = InstanceDeps {
            db: db.clone(),
            paths: paths.clone(),
            virsh: virsh.clone(),
            qemu_img,
            images: images.clone(),
            key_pairs: key_pairs.clone(),
            network: network.clone(),
            platform,
            iso_tool,
            health: health.clone(),
        };
        let instances = Instances::new(deps, instances_config(&config, qemu_user.clone()));
        let forwards = Forwards::open(db.clone(), ForwardsConfig::new(config.forward_bind)).await;
        let app = Arc::new(App {
            network,
            pool: StoragePool::new(virsh.clone(), config.pool_name.clone(), paths.clone()),
            key_pairs,
            images,
            instances,
            forwards,
            reconciled: AtomicBool::new(false),
            config,
            host,
            accelerator,
            accelerator_probe,
            virsh,
            db,
            infrastructure_ready: AtomicBool::new(false),
            qemu_user,
            health,
            health_wake: Arc::default(),
        });
        app.settle_and_run_background().await;
        Ok(app)
    }

    /// What a start does once the services exist: tidy what an earlier run left, put
    /// libvirt's side in place (or leave it to the supervisor), take the first health
    /// snapshot, and start the background loops.
    async fn settle_and_run_background(self: &Arc<Self>) {
        self.images.remove_import_leftovers();
        if let Err(err) = self.images.sync_catalog().await {
            tracing::error!(error = %err, "could not record the image catalog");
        }
        if let Err(err) = self.ensure_infrastructure().await {
            tracing::warn!(error = %err, "libvirt is not ready yet; will retry in the background");
        }
        self.refresh_health().await;
        tokio::spawn(supervise(Arc::downgrade(self)));
        tokio::spawn(keep_health(Arc::downgrade(self)));
        tokio::spawn(follow_infrastructure(Arc::downgrade(self), Subject::Network));
        tokio::spawn(follow_infrastructure(Arc::downgrade(self), Subject::Pool));
        self.instances.spawn_monitor();
        self.instances.spawn_spare_keeper();
    }

    /// Creates/starts the network and the storage pool if needed (idempotent).
    pub async fn ensure_infrastructure(&self) -> Result<(), AppError> {
        let (network, pool) = tokio::join!(self.network.ensure(), self.pool.ensure());
        let (network, pool) = (network?, pool?);
        let ready = network.active && network.conflict.is_none() && pool.active && pool.conflict.is_none();
        let was_ready = self.infrastructure_ready.swap(ready, Ordering::SeqCst);
        if ready && !was_ready {
            // The leases of guests gone before this run, kept out of the next launches'
            // addresses (see `NetworkManager::first_free_address`).
            if let Err(e) = self.network.leases().await {
                tracing::warn!(error = %e, "could not read the DHCP leases");
            }
        }
        // Work an earlier run left, or work an outage cut short, is settled once libvirt
        // and what instances need from it are back; so are the DHCP reservations of a
        // network that was gone or stopped (re-created, it has none).
        if ready && (!was_ready || !self.reconciled.load(Ordering::SeqCst) || self.instances.recovery_wanted()) {
            self.instances.recover_interrupted().await?;
            self.reconciled.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Probes libvirt, the network, the pool and the data dir now, and keeps the
    /// report as the snapshot `health()` answers from.
    pub async fn refresh_health(&self) -> Arc<HealthSnapshot> {
        let unreachable_before = self.virsh.unreachable_count();
        let mut report =
            health::check(&self.virsh, &self.network, &self.pool, self.accelerator, self.accelerator_probe).await;
        if let Some(user) = self.qemu_user.clone() {
            let root = self.config.paths.root().to_path_buf();
            report.data_dir_problem =
                tokio::task::spawn_blocking(move || crate::qemu_access::problem(&root, &user)).await.ok().flatten();
        }
        if !report.is_healthy() {
            self.infrastructure_ready.store(false, Ordering::SeqCst);
        }
        let snapshot = Arc::new(HealthSnapshot::new(report, unreachable_before));
        self.health.set(snapshot.clone());
        snapshot
    }

    /// The last health snapshot: at most `libvirt_recheck_interval` old, or while
    /// libvirt's events are followed and all is well, `safety_poll_interval`.
    pub async fn health(&self) -> Arc<HealthSnapshot> {
        match self.health.get() {
            Some(snapshot) => snapshot,
            None => self.refresh_health().await,
        }
    }
}

/// Takes a health snapshot every `libvirt_recheck_interval`, for as long as the service
/// lives. While all is well and libvirt's events are followed, a change shows as an
/// event, so the probe runs only when one comes and every `safety_poll_interval`.
async fn keep_health(app: std::sync::Weak<App>) {
    loop {
        let Some((interval, wake)) = app.upgrade().map(|a| (a.health_interval(), a.health_wake.clone())) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
        let Some(app) = app.upgrade() else { return };
        app.refresh_health().await;
    }
}

impl App {
    fn last_health_ok(&self) -> bool {
        self.health.get().is_some_and(|s| s.report.is_healthy())
    }

    fn health_interval(&self) -> std::time::Duration {
        if self.last_health_ok() && self.instances.events_live() {
            self.config.safety_poll_interval
        } else {
            self.config.libvirt_recheck_interval
        }
    }
}

/// Follows the lifecycle events of ec2local's network or storage pool (destroyed or
/// stopped by hand) and asks for a health snapshot when one comes, or when the stream
/// ends because libvirt went away.
async fn follow_infrastructure(app: std::sync::Weak<App>, subject: Subject) {
    loop {
        let Some(strong) = app.upgrade() else { return };
        let (command, name) = match subject {
            Subject::Pool => (strong.virsh.pool_events(), strong.config.pool_name.clone()),
            _ => (strong.virsh.network_events(), strong.config.network.name.clone()),
        };
        let (wake, retry) = (strong.health_wake.clone(), strong.config.libvirt_recheck_interval);
        // While libvirt does not answer, a child would only fail: wait for health to
        // say it is back (the recheck goes on meanwhile).
        if !strong.last_health_ok() {
            drop(strong);
            tokio::time::sleep(retry).await;
            continue;
        }
        drop(strong);
        if let Ok(mut feed) = virsh_events::follow(&command) {
            while let Some(event) = feed.events.recv().await {
                if event.name == name {
                    wake.notify_one();
                }
            }
            // The end is news only when health says all is well; otherwise the
            // snapshot is already taken every recheck interval.
            if app.upgrade().is_some_and(|a| a.last_health_ok()) {
                wake.notify_one();
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Re-checks libvirt periodically while the infrastructure is not known to be ready,
/// so a libvirt restart is recovered from without restarting the service (REQ-REL-003).
async fn supervise(app: std::sync::Weak<App>) {
    loop {
        let Some(interval) = app.upgrade().map(|a| a.config.libvirt_recheck_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(app) = app.upgrade() else { return };
        if app.infrastructure_ready.load(Ordering::SeqCst) {
            // Work that ended without recording its end, or that libvirt cut short.
            if app.instances.recovery_wanted()
                && let Err(err) = app.instances.recover_interrupted().await
            {
                tracing::debug!(error = %err, "interrupted work not settled yet");
            }
            continue;
        }
        match app.ensure_infrastructure().await {
            Ok(()) if app.infrastructure_ready.load(Ordering::SeqCst) => {
                tracing::info!("libvirt network and storage pool are in place");
                // Health says so now, not at its next snapshot.
                app.refresh_health().await;
            }
            Ok(()) => {}
            Err(err) => tracing::debug!(error = %err, "libvirt still not ready"),
        }
    }
}

/// What the instances are built with, from the service's configuration.
fn instances_config(config: &Config, qemu_user: Option<String>) -> InstancesConfig {
    InstancesConfig {
        limits: config.limits,
        stop_timeout: config.stop_timeout,
        terminate_grace: config.terminate_grace,
        monitor_interval: config.monitor_interval,
        safety_poll: config.safety_poll_interval,
        warm_spares: config.warm_spares,
        tool_timeout: config.tool_timeout,
        qemu_user,
        status_timeout: config.status_timeout,
        guest_ssh_port: 22,
        // A snapshot is retaken every recheck interval; twice that means its loop is stuck.
        // While events are followed and all is well, a snapshot is renewed when
        // something changes and at least every safety poll.
        health_max_age: config.safety_poll_interval.max(config.libvirt_recheck_interval) * 2,
    }
}
