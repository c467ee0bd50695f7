//! The forwards service over a real database and real sockets on 127.0.0.1, with a
//! fake in place of "where is the instance".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::relay::tests::{echo_server, echo_server_at, round_trip};
use super::targets::{Target, Targets};
use super::*;
use crate::db::forwards::tests::instance;
use crate::db::instances::StatusWrite;

/// Where the test says each instance is.
#[derive(Default)]
struct FakeTargets(Mutex<HashMap<String, Target>>);

impl FakeTargets {
    fn set(&self, id: &str, target: Target) {
        self.0.lock().unwrap().insert(id.to_string(), target);
    }
}

impl Targets for FakeTargets {
    fn locate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Target, AppError>> {
        let target = self.0.lock().unwrap().get(instance_id).cloned().unwrap_or(Target::Gone);
        Box::pin(async move { Ok(target) })
    }
}

const RUNNING: &str = "i-0000000a";
const STOPPED: &str = "i-0000000b";
const TERMINATED: &str = "i-0000000c";

struct Bench {
    _tmp: tempfile::TempDir,
    db: Db,
    targets: Arc<FakeTargets>,
    forwards: Forwards,
}

async fn bench() -> Bench {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("ec2local.db")).unwrap();
    db.call(|c| {
        for (n, (id, state)) in
            [(RUNNING, "running"), (STOPPED, "stopped"), (TERMINATED, "terminated")].iter().enumerate()
        {
            crate::db::instances::insert(c, &instance(id, state, n as u8))?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let targets = Arc::new(FakeTargets::default());
    targets.set(STOPPED, Target::Paused(format!("instance {STOPPED} is stopped")));
    let forwards = service(&db, &targets, Duration::from_secs(60));
    Bench { _tmp: tmp, db, targets, forwards }
}

fn service(db: &Db, targets: &Arc<FakeTargets>, upkeep_interval: Duration) -> Forwards {
    let mut config = ForwardsConfig::new(Ipv4Addr::LOCALHOST.into());
    config.upkeep_interval = upkeep_interval;
    config.connect_timeout = Duration::from_secs(2);
    Forwards::new(db.clone(), targets.clone(), config)
}

fn local(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

fn to(instance_port: u16) -> NewForward {
    NewForward { host_port: None, instance_port: instance_port.into() }
}

/// Whether a new connection to the port is closed without a byte.
async fn closed_at_once(port: u16) -> bool {
    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(local(port)).is_ok()
}

/// A connection relayed through `port`, proven by an echo.
async fn relayed_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut echoed = [0u8; 1];
    stream.read_exact(&mut echoed).await.unwrap();
    stream
}

async fn only_forward(forwards: &Forwards, id: &str) -> Forward {
    let mut listed = forwards.list(Some(id)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    listed.remove(0)
}

#[tokio::test]
async fn connections_go_where_the_instance_is_when_they_arrive() {
    let b = bench().await;
    let guest = echo_server().await;
    b.targets.set(RUNNING, Target::Reachable(guest.ip()));
    let forward = b.forwards.create(RUNNING, to(guest.port())).await.unwrap();
    assert_eq!((forward.state, forward.state_reason.as_deref()), (ForwardState::Active, None));
    assert_eq!(forward.bind_address, IpAddr::from(Ipv4Addr::LOCALHOST));
    assert_eq!((forward.instance_id.as_str(), forward.instance_port), (RUNNING, guest.port()));
    let port = forward.host_port;
    assert_ne!(port, 0, "a free port was picked");
    assert_eq!(round_trip(local(port), b"hello".to_vec()).await, b"hello");

    // An open relayed connection is counted while it lasts.
    let held = relayed_connection(port).await;
    assert_eq!(only_forward(&b.forwards, RUNNING).await.connections, 1);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while only_forward(&b.forwards, RUNNING).await.connections != 0 {
        assert!(Instant::now() < deadline, "the closed connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopped: the port stays bound, connections are closed at once.
    b.targets.set(RUNNING, Target::Paused(format!("instance {RUNNING} is stopped")));
    assert!(closed_at_once(port).await);
    let paused = only_forward(&b.forwards, RUNNING).await;
    assert_eq!(paused.state, ForwardState::Paused);
    assert_eq!(paused.state_reason, Some(format!("instance {RUNNING} is stopped")));

    // Running again at another address: followed without touching the forward.
    let moved = echo_server_at((Ipv4Addr::new(127, 0, 0, 2), guest.port()).into()).await;
    b.targets.set(RUNNING, Target::Reachable(moved.ip()));
    assert_eq!(round_trip(local(port), b"moved".to_vec()).await, b"moved");
    assert_eq!(only_forward(&b.forwards, RUNNING).await.state, ForwardState::Active);
}

// A connection open when its instance stops is cut by the next upkeep, not left
// waiting on a guest that is gone; the port stays bound for when it runs again.
#[tokio::test]
async fn connections_open_when_the_instance_stops_are_cut() {
    let b = bench().await;
    let guest = echo_server().await;
    b.targets.set(RUNNING, Target::Reachable(guest.ip()));
    let port = b.forwards.create(RUNNING, to(guest.port())).await.unwrap().host_port;
    let mut held = relayed_connection(port).await;
    b.forwards.sync().await.unwrap();
    assert_eq!(only_forward(&b.forwards, RUNNING).await.connections, 1, "a running instance's connection is kept");
    b.targets.set(RUNNING, Target::Paused(format!("instance {RUNNING} is stopped")));
    b.forwards.sync().await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the connection outlived its instance's stop: {read:?}");
    assert!(!port_is_free(port), "the port stays reserved");
    b.targets.set(RUNNING, Target::Reachable(guest.ip()));
    assert_eq!(round_trip(local(port), b"again".to_vec()).await, b"again");
}

#[tokio::test]
async fn a_guest_that_refuses_closes_the_client_promptly() {
    let b = bench().await;
    let closed = std::net::TcpListener::bind(local(0)).unwrap().local_addr().unwrap();
    b.targets.set(RUNNING, Target::Reachable(closed.ip()));
    let forward = b.forwards.create(RUNNING, to(closed.port())).await.unwrap();
    assert!(closed_at_once(forward.host_port).await);
}

#[tokio::test]
async fn refusals_are_typed_and_change_nothing() {
    let b = bench().await;
    let refusal = |id: &'static str, host_port: Option<i64>, instance_port: i64| {
        let forwards = b.forwards.clone();
        async move { forwards.create(id, NewForward { host_port, instance_port }).await.unwrap_err() }
    };
    for (id, host_port, instance_port, code) in [
        ("i-nothex", None, 80, "InvalidInstanceID.Malformed"),
        ("i-0000000f", None, 80, "InvalidInstanceID.NotFound"),
        (TERMINATED, None, 80, "IncorrectInstanceState"),
        (RUNNING, None, 0, "InvalidParameterValue"),
        (RUNNING, None, 65536, "InvalidParameterValue"),
        (RUNNING, Some(0), 80, "InvalidParameterValue"),
        (RUNNING, Some(-1), 80, "InvalidParameterValue"),
        (RUNNING, Some(70000), 80, "InvalidParameterValue"),
    ] {
        let err = refusal(id, host_port, instance_port).await;
        assert_eq!(err.code(), code, "{id} {host_port:?} {instance_port}: {err}");
    }
    let err = refusal(RUNNING, None, 0).await;
    assert_eq!(err.to_string(), "instance_port must be a port number from 1 to 65535, not 0");
    assert!(refusal(TERMINATED, None, 80).await.to_string().contains("terminated"));

    // A host port another process listens on.
    let other = std::net::TcpListener::bind(local(0)).unwrap();
    let taken = other.local_addr().unwrap().port();
    let err = refusal(RUNNING, Some(taken.into()), 80).await;
    assert_eq!(err.code(), "PortInUse");
    assert!(err.to_string().contains(&format!("port {taken}")) && err.to_string().contains("another process"), "{err}");
    assert!(b.forwards.list(None).await.unwrap().is_empty(), "a refusal recorded a forward");

    // A host port another forward holds; the same instance port twice is fine.
    let first = b.forwards.create(RUNNING, to(80)).await.unwrap();
    let err = refusal(STOPPED, Some(first.host_port.into()), 22).await;
    assert_eq!(err.code(), "PortInUse");
    assert!(err.to_string().contains(&format!("forwarded to instance {RUNNING}")), "{err}");
    let second = b.forwards.create(RUNNING, to(80)).await.unwrap();
    assert_ne!(second.host_port, first.host_port);
    let all = b.forwards.list(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(b.forwards.list(Some(STOPPED)).await.unwrap().is_empty());
    assert!(b.forwards.list(Some(TERMINATED)).await.unwrap().is_empty());
    assert_eq!(b.forwards.list(Some("i-0000000f")).await.unwrap_err().code(), "InvalidInstanceID.NotFound");
}

#[tokio::test]
async fn a_forward_of_a_stopped_instance_is_paused_with_the_reason() {
    let b = bench().await;
    let forward = b.forwards.create(STOPPED, NewForward { host_port: None, instance_port: 22 }).await.unwrap();
    assert_eq!(forward.state, ForwardState::Paused);
    assert_eq!(forward.state_reason, Some(format!("instance {STOPPED} is stopped")));
    assert!(closed_at_once(forward.host_port).await);
}

#[tokio::test]
async fn removing_a_forward_closes_its_port_and_its_connections() {
    let b = bench().await;
    let guest = echo_server().await;
    b.targets.set(RUNNING, Target::Reachable(guest.ip()));
    let port = b.forwards.create(RUNNING, to(guest.port())).await.unwrap().host_port;
    let kept = b.forwards.create(RUNNING, to(guest.port())).await.unwrap().host_port;
    let mut held = relayed_connection(port).await;

    assert_eq!(b.forwards.remove(STOPPED, port.into()).await.unwrap_err().code(), "ForwardNotFound");
    b.forwards.remove(RUNNING, port.into()).await.unwrap();
    // Free when the answer comes, so that a script can forward it again at once.
    assert!(port_is_free(port), "the port was still bound after remove returned");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the relayed connection outlived its forward: {read:?}");

    let err = b.forwards.remove(RUNNING, port.into()).await.unwrap_err();
    assert_eq!(err.code(), "ForwardNotFound");
    assert_eq!(err.to_string(), format!("instance {RUNNING} has no forward on host port {port}"));
    assert_eq!(b.forwards.remove("i-0000000f", port.into()).await.unwrap_err().code(), "InvalidInstanceID.NotFound");
    assert_eq!(b.forwards.remove(RUNNING, 0).await.unwrap_err().code(), "InvalidParameterValue");
    let left: Vec<u16> = b.forwards.list(None).await.unwrap().iter().map(|f| f.host_port).collect();
    assert_eq!(left, [kept]);
}

#[tokio::test]
async fn a_restart_reopens_the_forwards_and_retries_a_port_taken_meanwhile() {
    let b = bench().await;
    let guest = echo_server().await;
    b.targets.set(RUNNING, Target::Reachable(guest.ip()));
    let free = b.forwards.create(RUNNING, to(guest.port())).await.unwrap().host_port;
    let taken = b.forwards.create(RUNNING, to(guest.port())).await.unwrap().host_port;
    drop(b.forwards);
    eventually("the old service's ports to be released", || port_is_free(free) && port_is_free(taken)).await;
    let squatter = std::net::TcpListener::bind(local(taken)).unwrap();

    let restarted = service(&b.db, &b.targets, Duration::from_secs(60));
    restarted.sync().await.unwrap();
    assert_eq!(round_trip(local(free), b"back".to_vec()).await, b"back");
    let listed = restarted.list(None).await.unwrap();
    let waiting = listed.iter().find(|f| f.host_port == taken).unwrap();
    assert_eq!(waiting.state, ForwardState::Paused);
    let reason = waiting.state_reason.clone().unwrap();
    assert!(reason.contains(&format!("port {taken}")) && reason.contains("in use"), "{reason}");
    assert!(reason.contains("retried every 60s"), "{reason}");
    let err = restarted.create(STOPPED, NewForward { host_port: Some(taken.into()), instance_port: 22 }).await;
    assert_eq!(err.unwrap_err().code(), "PortInUse", "a forward waiting for its port still owns it");

    drop(squatter);
    restarted.sync().await.unwrap();
    assert_eq!(round_trip(local(taken), b"retried".to_vec()).await, b"retried");
    let listed = restarted.list(None).await.unwrap();
    assert!(listed.iter().all(|f| f.state == ForwardState::Active), "{listed:?}");
}

#[tokio::test]
async fn a_terminated_instances_forwards_end_and_the_upkeep_closes_their_ports() {
    let b = bench().await;
    let forwards = service(&b.db, &b.targets, Duration::from_millis(50));
    forwards.spawn_upkeep();
    let port = forwards.create(RUNNING, to(80)).await.unwrap().host_port;
    let other = forwards.create(STOPPED, to(22)).await.unwrap().host_port;
    b.db.call(|c| {
        let terminate = StatusWrite {
            from_state: "running",
            to_state: "terminated",
            terminated_at: Some("now"),
            ..Default::default()
        };
        crate::db::instances::write_status(c, RUNNING, &terminate)
    })
    .await
    .unwrap();
    assert!(forwards.list(Some(RUNNING)).await.unwrap().is_empty(), "the forward outlived its instance");
    eventually("the upkeep to close the port", || port_is_free(port)).await;
    assert!(!port_is_free(other), "another instance's forward was closed");
}

#[test]
fn listening_beyond_loopback_is_warned_about() {
    assert_eq!(exposure_warning(Ipv4Addr::LOCALHOST.into()), None);
    assert_eq!(exposure_warning("::1".parse().unwrap()), None);
    let warning = exposure_warning(Ipv4Addr::UNSPECIFIED.into()).unwrap();
    assert!(warning.contains("0.0.0.0") && warning.contains("without authentication"), "{warning}");
}

#[test]
fn an_address_this_host_lacks_is_refused_up_front() {
    assert!(check_bind_address(Ipv4Addr::LOCALHOST.into()).is_ok());
    // TEST-NET-1 (RFC 5737) is on no interface here: binding it fails, nothing is sent.
    let err = check_bind_address(Ipv4Addr::new(192, 0, 2, 1).into()).unwrap_err();
    assert!(err.contains("cannot listen on 192.0.2.1"), "{err}");
}
