//! One forward's listener: bound while the forward exists (so its port stays reserved),
//! each accepted connection relayed on a task of its own to where the instance is at
//! that moment. Dropping the listener closes the port and every connection it relays.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::error::ForwardError;
use super::relay;
use super::targets::{Target, Targets};
use crate::error::{AppError, Failure};

/// Where a listener sends its connections.
#[derive(Debug, Clone)]
pub struct Destination {
    pub instance_id: String,
    pub instance_port: u16,
}

/// A bound forward: its accept loop, and how many connections it relays now.
pub struct Listener {
    accept_loop: Option<JoinHandle<()>>,
    connections: Arc<AtomicUsize>,
    /// Bumped to end every connection relayed now (the instance stopped under them).
    cut: tokio::sync::watch::Sender<u64>,
    pub port: u16,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The loop owns the socket and the relays' tasks: all of them end with it.
        if let Some(accept_loop) = &self.accept_loop {
            accept_loop.abort();
        }
    }
}

impl Listener {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Closes the port and its connections, and returns once the port is free again
    /// (a dropped listener frees it a moment later, on another thread).
    pub async fn close(mut self) {
        if let Some(accept_loop) = self.accept_loop.take() {
            accept_loop.abort();
            let _ = accept_loop.await;
        }
    }

    /// Ends the connections relayed now; the port stays bound for new ones. Without
    /// this, a connection to a guest that stopped under it would wait forever.
    pub fn cut_connections(&self) {
        if self.connections() > 0 {
            self.cut.send_modify(|generation| *generation += 1);
        }
    }
}

/// Binds `address:port` (port 0: one the system picks), with the refusals a client
/// can act on told apart from our own failures.
pub async fn bind(address: IpAddr, port: u16) -> Result<TcpListener, AppError> {
    let shown = if port == 0 { "a free port".to_string() } else { format!("port {port}") };
    TcpListener::bind(SocketAddr::new(address, port)).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => {
            ForwardError::PortInUse(format!("host {shown} on {address} is already in use by another process")).into()
        }
        std::io::ErrorKind::PermissionDenied => ForwardError::PortNotPermitted(format!(
            "this service may not listen on {shown} of {address}: ports below 1024 need root \
             (or CAP_NET_BIND_SERVICE); choose a port from 1024 up"
        ))
        .into(),
        _ => AppError::Failed(Failure::File { doing: format!("listening on {shown} of {address}"), source }),
    })
}

/// Settings every listener shares.
#[derive(Clone)]
pub struct Relaying {
    pub targets: Arc<dyn Targets>,
    pub connect_timeout: Duration,
}

/// Starts relaying what `socket` accepts to `destination`.
pub fn start(socket: TcpListener, destination: Destination, relaying: Relaying) -> Result<Listener, AppError> {
    let port = socket.local_addr()?.port();
    let connections = Arc::new(AtomicUsize::new(0));
    let (cut, cut_seen) = tokio::sync::watch::channel(0);
    let relays = Relays { relaying, open: connections.clone(), cut: cut_seen };
    let accept_loop = tokio::spawn(accept_loop(socket, destination, relays));
    Ok(Listener { accept_loop: Some(accept_loop), connections, cut, port })
}

/// What each relayed connection shares with its listener.
#[derive(Clone)]
struct Relays {
    relaying: Relaying,
    open: Arc<AtomicUsize>,
    cut: tokio::sync::watch::Receiver<u64>,
}

async fn accept_loop(socket: TcpListener, destination: Destination, relays_of: Relays) {
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((client, _)) => {
                    relays.spawn(serve(client, destination.clone(), relays_of.clone()));
                }
                Err(err) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(port = destination.instance_port, error = %err, "forward could not accept");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

/// Counts a relayed connection while it lasts.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn enter(count: &Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::SeqCst);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One client: relayed when the instance takes connections now, else closed at once.
async fn serve(client: TcpStream, destination: Destination, relays: Relays) {
    let Relays { relaying, open, mut cut } = relays;
    cut.mark_unchanged();
    let Destination { instance_id, instance_port } = destination;
    let ip = match relaying.targets.locate(&instance_id).await {
        Ok(Target::Reachable(ip)) => ip,
        Ok(Target::Paused(why)) => {
            tracing::debug!(instance = %instance_id, why, "forwarded connection closed: the instance takes none now");
            return;
        }
        Ok(Target::Gone) => return,
        Err(err) => {
            tracing::warn!(instance = %instance_id, error = %err, "forwarded connection closed: no target");
            return;
        }
    };
    let target = SocketAddr::new(ip, instance_port);
    let guest = match relay::connect(target, relaying.connect_timeout).await {
        Ok(guest) => guest,
        Err(err) => {
            tracing::debug!(instance = %instance_id, %target, error = %err, "forwarded connection refused by the guest");
            return;
        }
    };
    let _open = Open::enter(&open);
    tokio::select! {
        relayed = relay::relay(client, guest) => if let Err(err) = relayed {
            tracing::debug!(instance = %instance_id, %target, error = %err, "forwarded connection ended with an error");
        },
        _ = cut.changed() => {
            tracing::debug!(instance = %instance_id, %target, "forwarded connection cut: the instance stopped");
        }
    }
}
