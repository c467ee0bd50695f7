//! Events, not ticks (issue 17): libvirt's lifecycle events wake the monitor the moment
//! a guest powers itself off, is destroyed by hand or crashes. While the event stream is
//! up, the monitor looks at libvirt only when an event came, every `safety_poll` as a
//! safety net, and for the DHCP leases of running guests that have no address yet; an
//! idle service spawns no process per tick. While it is down, every tick is a full look.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Inner, Instances};
use crate::exec::virsh_events;
use crate::ids::InstanceId;

/// What the next monitor tick looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Every domain's state and every lease: two virsh calls.
    Full,
    /// Only the leases, for running guests still without an address: one call.
    Leases,
    /// Nothing: no event came, no address is awaited, the safety poll is not due.
    Nothing,
}

/// What the monitor knows about libvirt's event stream.
#[derive(Debug, Default)]
pub struct Watch {
    /// The `virsh event` child is running: changes arrive as events.
    live: AtomicBool,
    /// A full look is due: the stream (re)started and events may have been missed
    /// before it, or the last look failed.
    dirty: AtomicBool,
    last_full: Mutex<Option<Instant>>,
    /// The state each domain's last event implies, not yet applied (see `implied_state`).
    pending: Mutex<HashMap<String, Option<&'static str>>>,
    wake: Notify,
}

/// The domain state a lifecycle event implies, as `virsh list` prints it (None: the
/// domain is gone), or nothing when the event says nothing about it (`Defined`, or the
/// `Shutdown` that precedes `Stopped`).
pub fn implied_state(kind: &str) -> Option<Option<&'static str>> {
    match kind {
        "Started" | "Resumed" => Some(Some("running")),
        "Suspended" => Some(Some("paused")),
        "Stopped" => Some(Some("shut off")),
        "Crashed" => Some(Some("crashed")),
        "PMSuspended" => Some(Some("pmsuspended")),
        "Undefined" => Some(None),
        _ => None,
    }
}

impl Watch {
    /// The next tick's look, and the start of a full one. `heard_of_ours`: an event
    /// implied a state of one of the service's instances, and a full look confirms it.
    pub fn plan(&self, safety_poll: Duration, awaiting_address: bool, heard_of_ours: bool) -> Look {
        let now = Instant::now();
        let mut last_full = self.last_full.lock().unwrap_or_else(|p| p.into_inner());
        let safety_due = last_full.is_none_or(|at| now.duration_since(at) >= safety_poll);
        let dirty = self.dirty.swap(false, Ordering::SeqCst);
        if !self.live.load(Ordering::SeqCst) || dirty || heard_of_ours || safety_due {
            *last_full = Some(now);
            return Look::Full;
        }
        if awaiting_address { Look::Leases } else { Look::Nothing }
    }

    /// A full look failed (libvirt away): the next tick tries again.
    pub fn full_look_failed(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// An event about a domain named like the service's: what it implies is applied at
    /// once if the domain is one of the service's own, and a full look confirms it.
    /// Only the monitor knows which domains are its own: another service's on the same
    /// libvirt, or a user's own named like ours, must not cost it a look. An event that
    /// implies no state (`Shutdown`, which comes just before `Stopped`; `Defined`) does
    /// not wake it: a look between the two would find the change before its event.
    pub fn domain_event(&self, domain: &str, kind: &str) {
        if let Some(state) = implied_state(kind) {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(domain.to_string(), state);
            self.wake.notify_one();
        }
    }

    /// Something changed: look now.
    #[cfg(test)]
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The domain states events implied since the last call.
    pub fn take_pending(&self) -> HashMap<String, Option<&'static str>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The stream is up; what happened before it started is caught by a full look at
    /// the next regular tick, once the child has connected.
    pub(super) fn connected(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.live.store(true, Ordering::SeqCst);
    }

    fn lost(&self) {
        self.live.store(false, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Sleeps for `interval`, or less if an event wakes the monitor.
    pub async fn wait(&self, interval: Duration) {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = self.wake.notified() => {
                // The events of one change come together (Shutdown, Stopped, Undefined):
                // one look for the burst.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Instances {
    /// Follows libvirt's lifecycle events for as long as the service lives, starting the
    /// child again when it ends (libvirt restarted or went away).
    pub(super) fn spawn_event_follower(&self) {
        let inner = Arc::downgrade(self.inner());
        tokio::spawn(async move {
            let mut retry = None;
            loop {
                let Some(strong) = inner.upgrade() else { return };
                let command = strong.deps.virsh.lifecycle_events();
                let watch = strong.watch.clone();
                let (first_retry, last_retry) = (strong.config.monitor_interval, strong.config.safety_poll);
                drop(strong);
                let started = Instant::now();
                match virsh_events::follow(&command) {
                    Ok(feed) => follow_feed(&inner, &watch, feed).await,
                    Err(e) => tracing::debug!(error = %e, "cannot follow libvirt events; polling"),
                }
                // A child that fails at once (libvirt away) is tried again ever more
                // slowly, up to the safety poll; the monitor polls meanwhile.
                let wait = next_retry(retry, started.elapsed(), first_retry, last_retry);
                retry = Some(wait);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

/// How long to wait before following again, after a stream that lasted `lasted`.
fn next_retry(previous: Option<Duration>, lasted: Duration, first: Duration, last: Duration) -> Duration {
    match previous {
        Some(previous) if lasted < first => (previous * 2).min(last.max(first)),
        _ => first,
    }
}

async fn follow_feed(inner: &Weak<Inner>, watch: &Watch, mut feed: virsh_events::EventFeed) {
    watch.connected();
    while let Some(event) = feed.events.recv().await {
        if inner.strong_count() == 0 {
            return;
        }
        // Only ec2local's own domains concern the monitor.
        if event.subject == virsh_events::Subject::Domain && event.name.parse::<InstanceId>().is_ok() {
            watch.domain_event(&event.name, &event.kind);
        }
    }
    watch.lost();
    tracing::info!("libvirt's event stream ended; polling every tick until it is back");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFETY: Duration = Duration::from_secs(30);

    #[test]
    fn without_the_event_stream_every_tick_is_a_full_look() {
        let watch = Watch::default();
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full);
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full);
    }

    #[test]
    fn with_the_stream_an_idle_tick_looks_at_nothing_and_an_event_at_everything() {
        let watch = Watch::default();
        watch.connected();
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full, "events before the stream started are caught up");
        assert_eq!(watch.plan(SAFETY, false, false), Look::Nothing);
        assert_eq!(watch.plan(SAFETY, true, false), Look::Leases, "a running guest still waits for its address");
        watch.changed();
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full);
        assert_eq!(watch.plan(SAFETY, false, false), Look::Nothing);
        watch.full_look_failed();
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full, "a failed look is tried again");
        watch.lost();
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full);
    }

    #[test]
    fn events_imply_domain_states_and_the_last_one_wins() {
        let watch = Watch::default();
        watch.connected();
        watch.domain_event("i-1a2b3c4d", "Stopped");
        watch.domain_event("i-1a2b3c4d", "Started");
        watch.domain_event("i-0000beef", "Undefined");
        watch.domain_event("i-0000cafe", "Defined");
        let pending = watch.take_pending();
        assert_eq!(pending.get("i-1a2b3c4d"), Some(&Some("running")));
        assert_eq!(pending.get("i-0000beef"), Some(&None));
        assert_eq!(pending.get("i-0000cafe"), None, "a definition says nothing about the state");
        assert!(watch.take_pending().is_empty());
        assert_eq!(watch.plan(SAFETY, false, false), Look::Full, "the stream's start is caught up");
        assert_eq!(watch.plan(SAFETY, false, false), Look::Nothing, "events alone ask for no look");
        assert_eq!(watch.plan(SAFETY, false, true), Look::Full, "events about the service's own do");
        for (kind, state) in [("Crashed", Some("crashed")), ("Suspended", Some("paused")), ("Resumed", Some("running"))]
        {
            assert_eq!(implied_state(kind), Some(state), "{kind}");
        }
        assert_eq!(implied_state("Shutdown"), None);
    }

    #[test]
    fn the_safety_poll_looks_at_everything_when_due() {
        let watch = Watch::default();
        watch.connected();
        assert_eq!(watch.plan(Duration::ZERO, false, false), Look::Full);
        assert_eq!(watch.plan(Duration::ZERO, false, false), Look::Full);
        assert_eq!(watch.plan(SAFETY, false, false), Look::Nothing);
    }

    #[test]
    fn a_stream_that_fails_at_once_is_retried_ever_more_slowly() {
        let (first, last) = (Duration::from_secs(2), Duration::from_secs(30));
        let quick = Duration::from_millis(10);
        let mut retry = None;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = next_retry(retry, quick, first, last);
            waits.push(wait.as_secs());
            retry = Some(wait);
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        assert_eq!(next_retry(retry, Duration::from_secs(600), first, last), first, "a stream that lived starts over");
    }

    #[tokio::test]
    async fn an_event_wakes_the_monitor_before_its_interval() {
        let watch = Arc::new(Watch::default());
        let waiter = watch.clone();
        let woken = tokio::spawn(async move { waiter.wait(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        watch.domain_event("i-1a2b3c4d", "Stopped");
        tokio::time::timeout(Duration::from_secs(60), woken).await.expect("an hour's sleep cut short").unwrap();
    }
}
