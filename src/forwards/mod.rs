//! Port forwarding (issue 16): a port of the host, on the forward bind address
//! (127.0.0.1 unless `--forward-bind` says otherwise), relayed to a port of an instance.
//!
//! The database holds the forwards; this service holds one listener per forward, bound
//! for as long as the forward exists, and asks `Targets` at each connection where the
//! instance is, so stops, starts and address changes need nothing from the instance
//! service. Nothing in `instances` knows about forwards: terminating an instance deletes
//! its forwards in the database (a trigger, in the same write as the state), and the
//! upkeep pass here closes listeners whose forward is gone and retries ports that could
//! not be bound (after a restart, a port taken meanwhile by another process).

pub mod error;
pub mod listener;
pub mod relay;
pub mod targets;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use error::ForwardError;
use listener::{Destination, Listener, Relaying};
use targets::{Target, Targets};
use tokio::net::TcpListener;

use crate::db::Db;
use crate::db::forwards::{self as rows, ForwardRow, Recorded};
use crate::error::{AppError, InstanceError};

#[derive(Debug, Clone)]
pub struct ForwardsConfig {
    /// The address every forward listens on.
    pub bind_address: IpAddr,
    /// How often listeners are matched with the database and unbound ports retried.
    pub upkeep_interval: Duration,
    /// How long a connection waits for the guest to accept before it is closed.
    pub connect_timeout: Duration,
}

impl ForwardsConfig {
    pub fn new(bind_address: IpAddr) -> Self {
        ForwardsConfig {
            bind_address,
            upkeep_interval: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What to tell the user when forwards listen beyond this machine.
pub fn exposure_warning(bind_address: IpAddr) -> Option<String> {
    (!bind_address.is_loopback()).then(|| {
        format!(
            "port forwards listen on {bind_address}: every forwarded instance port can be reached, without \
             authentication, by anyone who can reach this address"
        )
    })
}

/// Whether forwards can listen on `bind_address` at all: said at start, rather than as
/// a failure of every forward made later.
pub fn check_bind_address(bind_address: IpAddr) -> Result<(), String> {
    std::net::TcpListener::bind((bind_address, 0))
        .map(drop)
        .map_err(|e| format!("port forwards cannot listen on {bind_address}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardState {
    /// Connections are relayed.
    Active,
    /// Connections are closed at once: the instance takes none now, or the port is not bound.
    Paused,
}

impl ForwardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardState::Active => "active",
            ForwardState::Paused => "paused",
        }
    }
}

/// A forward as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub instance_id: String,
    pub host_port: u16,
    pub instance_port: u16,
    pub bind_address: IpAddr,
    pub state: ForwardState,
    pub state_reason: Option<String>,
    pub created_at: String,
    /// Connections relayed now.
    pub connections: usize,
}

/// What a user asks for. Ports come as given, so that a wrong one is refused by name.
#[derive(Debug, Clone)]
pub struct NewForward {
    /// None: a free port, picked by the system.
    pub host_port: Option<i64>,
    pub instance_port: i64,
}

/// A forward's listener, or why it has none yet.
enum Binding {
    Bound(Listener),
    Unbound { reason: String },
}

struct Entry {
    instance_id: String,
    binding: Binding,
}

#[derive(Clone)]
pub struct Forwards {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    config: ForwardsConfig,
    relaying: Relaying,
    /// By host port. Held across every change, so a port is checked and taken at once.
    listeners: tokio::sync::Mutex<HashMap<u16, Entry>>,
}

fn port_number(value: i64, field: &str) -> Result<u16, ForwardError> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| ForwardError::InvalidPort(format!("{field} must be a port number from 1 to 65535, not {value}")))
}

/// How many times a port picked by the system is picked again when a forward waiting
/// to rebind owns it.
const PICK_ATTEMPTS: usize = 8;

impl Forwards {
    pub fn new(db: Db, targets: Arc<dyn Targets>, config: ForwardsConfig) -> Self {
        let relaying = Relaying { targets, connect_timeout: config.connect_timeout };
        Forwards { inner: Arc::new(Inner { db, config, relaying, listeners: Default::default() }) }
    }

    /// The service's forwards over the instances in `db`: those kept from the last run
    /// listen again (a port taken meanwhile is retried), and the upkeep runs.
    pub async fn open(db: Db, config: ForwardsConfig) -> Self {
        let forwards = Forwards::new(db.clone(), Arc::new(targets::InstanceTargets { db }), config);
        if let Err(err) = forwards.sync().await {
            tracing::error!(error = %err, "could not reopen the port forwards");
        }
        forwards.spawn_upkeep();
        forwards
    }

    /// Forwards `request.host_port` (or a free port) to `request.instance_port` of the
    /// instance. A refusal binds and records nothing.
    pub async fn create(&self, instance_id: &str, request: NewForward) -> Result<Forward, AppError> {
        let id = crate::instances::parse_id(instance_id)?.to_string();
        let instance_port = port_number(request.instance_port, "instance_port")?;
        let host_port = request.host_port.map(|p| port_number(p, "host_port")).transpose()?;
        let mut listeners = self.inner.listeners.lock().await;
        self.live_instance(&id).await?;
        let socket = match host_port {
            Some(port) => {
                if let Some(entry) = listeners.get(&port) {
                    return Err(forwarded_already(port, &entry.instance_id));
                }
                listener::bind(self.inner.config.bind_address, port).await?
            }
            None => self.pick_port(&listeners).await?,
        };
        let row = ForwardRow {
            host_port: socket.local_addr()?.port(),
            instance_id: id.clone(),
            instance_port,
            created_at: crate::db::timestamp_now(),
        };
        let record = row.clone();
        match self.inner.db.call(move |c| rows::insert(c, &record)).await? {
            Recorded::Inserted => {}
            Recorded::NoSuchInstance => return Err(InstanceError::NotFound(id).into()),
            Recorded::InstanceTerminated => return Err(terminated(&id)),
            Recorded::HostPortTaken(other) => return Err(forwarded_already(other.host_port, &other.instance_id)),
        }
        let destination = Destination { instance_id: id.clone(), instance_port };
        let bound = listener::start(socket, destination, self.inner.relaying.clone())?;
        tracing::info!(instance = %id, host_port = row.host_port, instance_port, "port forward added");
        listeners.insert(row.host_port, Entry { instance_id: id, binding: Binding::Bound(bound) });
        drop(listeners);
        self.describe(row).await
    }

    /// A port the system picks, never one a forward waiting to rebind owns.
    async fn pick_port(&self, listeners: &HashMap<u16, Entry>) -> Result<TcpListener, AppError> {
        // Sockets are held until the end, so that the system does not pick them again.
        let mut owned_by_others = Vec::new();
        for _ in 0..PICK_ATTEMPTS {
            let socket = listener::bind(self.inner.config.bind_address, 0).await?;
            if !listeners.contains_key(&socket.local_addr()?.port()) {
                return Ok(socket);
            }
            owned_by_others.push(socket);
        }
        Err(AppError::internal(format!("no free port after {PICK_ATTEMPTS} picks by the system")))
    }

    /// Refuses an unknown (404) or terminated (409) instance.
    async fn live_instance(&self, id: &str) -> Result<(), AppError> {
        let key = id.to_string();
        let row = self.inner.db.call(move |c| crate::db::instances::get(c, &key)).await?;
        match row {
            None => Err(InstanceError::NotFound(id.to_string()).into()),
            Some(row) if row.state == "terminated" => Err(terminated(id)),
            Some(_) => Ok(()),
        }
    }

    /// Every forward, or one instance's (none for a terminated one: they ended with it).
    pub async fn list(&self, instance_id: Option<&str>) -> Result<Vec<Forward>, AppError> {
        let id = match instance_id {
            Some(id) => Some(self.existing_instance(id).await?),
            None => None,
        };
        let found = self.inner.db.call(move |c| rows::list(c, id.as_deref())).await?;
        let mut forwards = Vec::with_capacity(found.len());
        for row in found {
            forwards.push(self.describe(row).await?);
        }
        Ok(forwards)
    }

    async fn existing_instance(&self, id: &str) -> Result<String, AppError> {
        let id = crate::instances::parse_id(id)?.to_string();
        let key = id.clone();
        let exists = self.inner.db.call(move |c| crate::db::instances::id_exists(c, &key)).await?;
        if exists { Ok(id) } else { Err(InstanceError::NotFound(id).into()) }
    }

    /// Ends a forward: its port is closed and its relayed connections with it.
    pub async fn remove(&self, instance_id: &str, host_port: i64) -> Result<(), AppError> {
        let id = self.existing_instance(instance_id).await?;
        let port = port_number(host_port, "host_port")?;
        let mut listeners = self.inner.listeners.lock().await;
        let key = id.clone();
        if !self.inner.db.call(move |c| rows::delete(c, &key, port)).await? {
            return Err(ForwardError::NotFound(format!("instance {id} has no forward on host port {port}")).into());
        }
        let removed = listeners.remove(&port);
        drop(listeners);
        if let Some(Entry { binding: Binding::Bound(listener), .. }) = removed {
            listener.close().await;
        }
        tracing::info!(instance = %id, host_port = port, "port forward removed");
        Ok(())
    }

    /// The forward of `row` with its state now.
    async fn describe(&self, row: ForwardRow) -> Result<Forward, AppError> {
        let (unbound, connections) = match self.inner.listeners.lock().await.get(&row.host_port) {
            Some(Entry { binding: Binding::Bound(listener), .. }) => (None, listener.connections()),
            Some(Entry { binding: Binding::Unbound { reason }, .. }) => (Some(reason.clone()), 0),
            // Recorded by another path and not seen by the upkeep yet.
            None => (Some(format!("host port {} is not bound yet", row.host_port)), 0),
        };
        let reason = match unbound {
            Some(reason) => Some(reason),
            None => match self.inner.relaying.targets.locate(&row.instance_id).await? {
                Target::Reachable(_) => None,
                Target::Paused(why) => Some(why),
                Target::Gone => Some(format!("instance {} is terminated", row.instance_id)),
            },
        };
        Ok(Forward {
            instance_id: row.instance_id,
            host_port: row.host_port,
            instance_port: row.instance_port,
            bind_address: self.inner.config.bind_address,
            state: if reason.is_none() { ForwardState::Active } else { ForwardState::Paused },
            state_reason: reason,
            created_at: row.created_at,
            connections,
        })
    }

    /// Matches the listeners with the database: closes those whose forward is gone
    /// (removed, or its instance terminated), cuts the connections of those whose
    /// instance stopped, and binds those not bound yet. Run at start, then by the upkeep
    /// loop.
    pub async fn sync(&self) -> Result<(), AppError> {
        let mut listeners = self.inner.listeners.lock().await;
        let wanted = self.inner.db.call(|c| rows::list(c, None)).await?;
        listeners.retain(|port, entry| {
            let kept = wanted.iter().any(|row| row.host_port == *port && row.instance_id == entry.instance_id);
            if !kept {
                tracing::info!(instance = %entry.instance_id, host_port = port, "port forward closed: it ended");
            }
            kept
        });
        for row in wanted {
            let previous = match listeners.get(&row.host_port) {
                Some(Entry { binding: Binding::Bound(listener), .. }) => {
                    if !matches!(self.inner.relaying.targets.locate(&row.instance_id).await?, Target::Reachable(_)) {
                        listener.cut_connections();
                    }
                    continue;
                }
                Some(Entry { binding: Binding::Unbound { reason }, .. }) => Some(reason.clone()),
                None => None,
            };
            let binding = self.rebind(&row, previous.as_deref()).await;
            listeners.insert(row.host_port, Entry { instance_id: row.instance_id, binding });
        }
        Ok(())
    }

    /// Binds a recorded forward again; says so in the log only when that changes.
    async fn rebind(&self, row: &ForwardRow, previous: Option<&str>) -> Binding {
        let destination = Destination { instance_id: row.instance_id.clone(), instance_port: row.instance_port };
        let bound = match listener::bind(self.inner.config.bind_address, row.host_port).await {
            Ok(socket) => listener::start(socket, destination, self.inner.relaying.clone()),
            Err(err) => Err(err),
        };
        match bound {
            Ok(listener) => {
                tracing::info!(instance = %row.instance_id, host_port = row.host_port, "port forward listening");
                Binding::Bound(listener)
            }
            Err(err) => {
                let reason = format!("{err}; retried every {}s", self.inner.config.upkeep_interval.as_secs().max(1));
                if previous != Some(reason.as_str()) {
                    tracing::warn!(instance = %row.instance_id, host_port = row.host_port, %reason, "port forward not listening");
                }
                Binding::Unbound { reason }
            }
        }
    }

    /// Runs `sync` every upkeep interval for as long as the service lives.
    pub fn spawn_upkeep(&self) {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(interval) = inner.upgrade().map(|i| i.config.upkeep_interval) else { return };
                tokio::time::sleep(interval).await;
                let Some(inner) = inner.upgrade() else { return };
                if let Err(err) = (Forwards { inner }).sync().await {
                    tracing::debug!(error = %err, "port forward upkeep skipped");
                }
            }
        });
    }
}

fn forwarded_already(host_port: u16, instance_id: &str) -> AppError {
    ForwardError::PortInUse(format!("host port {host_port} is already forwarded to instance {instance_id}")).into()
}

fn terminated(id: &str) -> AppError {
    ForwardError::InstanceTerminated(format!("instance {id} is terminated: its ports cannot be forwarded")).into()
}

#[cfg(test)]
mod tests;
