//! Keeps every instance's state and IP current (REQ-INST-013, REQ-NET-004). A full look
//! is two virsh calls whatever the number of instances; libvirt's events say when one is
//! due (`events`), so an idle service looks at nothing. Status checks run on a loop of
//! their own (issue 16). Work in flight owns its instance: the monitor looks only at
//! idle ones, and its changes are lifecycle events.

use std::collections::HashMap;
use std::sync::Arc;

use super::events::Look;
use super::state::State;
use super::{Inner, Instances, status_of};
use crate::db::instances::{self as rows, InstanceRow};

/// What to change on an instance after looking at libvirt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub state: Option<(State, Option<String>)>,
    /// Some(None) clears the address.
    pub ip: Option<Option<String>>,
}

/// Compares a row with what libvirt says (`domain`: its state, None when there is no
/// such domain; `lease_ip`: the DHCP lease of its MAC). Only idle, settled instances
/// are reconciled: an instance with a task belongs to the work that holds it.
pub fn reconcile(row: &InstanceRow, domain: Option<&str>, lease_ip: Option<&str>) -> Option<Change> {
    let status = status_of(row);
    if status.task.is_some() {
        return None;
    }
    let state = status.state;
    let mut change = Change::default();
    let running = matches!(domain, Some("running" | "paused" | "idle" | "in shutdown" | "blocked"));
    match (state, domain) {
        (State::Running | State::Stopped, None) => {
            let reason = format!(
                "the libvirt domain {} no longer exists; its disk is kept until the instance is terminated",
                row.id
            );
            change.state = Some((State::Error, Some(reason)));
        }
        (State::Running, Some(_)) if !running => {
            let reason = match domain {
                Some("crashed") => "the guest crashed",
                _ => "the guest was shut down from inside or outside ec2local",
            };
            change.state = Some((State::Stopped, Some(reason.to_string())));
        }
        (State::Stopped, Some(_)) if running => {
            change.state = Some((State::Running, Some("started outside ec2local".to_string())));
        }
        _ => {}
    }
    let ends_running = change.state.as_ref().map_or(state, |(s, _)| *s) == State::Running;
    let ip = if ends_running { lease_ip.map(str::to_string) } else { None };
    if matches!(state, State::Running | State::Stopped) && ip != row.ip_address {
        change.ip = Some(ip);
    }
    (change != Change::default()).then_some(change)
}

impl Instances {
    /// Starts the monitor loop and the event follower that wakes it.
    pub fn spawn_monitor(&self) {
        self.spawn_event_follower();
        let inner = Arc::downgrade(self.inner());
        tokio::spawn(async move {
            loop {
                let Some((interval, watch)) = inner.upgrade().map(|i| (i.config.monitor_interval, i.watch.clone()))
                else {
                    return;
                };
                watch.wait(interval).await;
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.monitor_step().await {
                    if matches!(e, crate::error::AppError::LibvirtUnavailable(_)) {
                        inner.want_recovery();
                    }
                    tracing::debug!(error = %e, "monitor tick skipped");
                }
            }
        });
        // Status checks on a loop of their own: a guest slow to answer its probe delays
        // no state refresh, and probing needs no libvirt, so it goes on while libvirt is away.
        let inner = Arc::downgrade(self.inner());
        tokio::spawn(async move {
            loop {
                let Some(interval) = inner.upgrade().map(|i| i.config.monitor_interval) else { return };
                tokio::time::sleep(interval).await;
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.check_statuses().await {
                    tracing::debug!(error = %e, "status checks skipped");
                }
            }
        });
    }
}

impl Inner {
    /// One tick: the look the watch says is due, often none.
    async fn monitor_step(&self) -> Result<(), crate::error::AppError> {
        let instances = self.deps.db.call(|c| rows::list(c, false)).await?;
        let pending = self.watch.take_pending();
        if instances.is_empty() {
            return Ok(());
        }
        let heard_of_ours = instances.iter().any(|row| pending.contains_key(&row.id));
        self.apply_events(&instances, pending).await?;
        let awaiting_address = instances.iter().any(|row| self.awaits_address(row));
        match self.watch.plan(self.config.safety_poll, awaiting_address, heard_of_ours) {
            Look::Full => {
                let looked = self.look_at_everything(instances).await;
                if looked.is_err() {
                    self.watch.full_look_failed();
                }
                looked
            }
            Look::Leases => self.look_at_leases(instances).await,
            Look::Nothing => Ok(()),
        }
    }

    /// What libvirt's events said, applied before any virsh call: a change shows as soon
    /// as its event came, however slow virsh is. A running guest keeps its address;
    /// the full look that follows confirms both.
    async fn apply_events(
        &self,
        instances: &[InstanceRow],
        implied: HashMap<String, Option<&'static str>>,
    ) -> Result<(), crate::error::AppError> {
        for row in instances.iter().filter(|row| !self.has_ticket(&row.id)) {
            let Some(domain) = implied.get(&row.id) else { continue };
            if let Some(change) = reconcile(row, *domain, row.ip_address.as_deref()) {
                tracing::warn!(instance = %row.id, from = %row.state, domain = domain.unwrap_or("gone"), "state changed behind ec2local's back (libvirt event)");
                self.apply(row, change).await?;
            }
        }
        Ok(())
    }

    /// An idle running instance whose guest has not taken its DHCP lease yet.
    fn awaits_address(&self, row: &InstanceRow) -> bool {
        let status = status_of(row);
        status.task.is_none() && status.state == State::Running && row.ip_address.is_none() && !self.has_ticket(&row.id)
    }

    /// Only the leases, for running guests without an address: their domains are
    /// running as far as the service knows, or an event would have said otherwise.
    async fn look_at_leases(&self, instances: Vec<InstanceRow>) -> Result<(), crate::error::AppError> {
        let leases: HashMap<String, String> =
            self.deps.network.leases().await?.into_iter().map(|l| (l.mac, l.ip)).collect();
        for row in instances.into_iter().filter(|row| self.awaits_address(row)) {
            if let Some(change) = reconcile(&row, Some("running"), leases.get(&row.mac_address).map(String::as_str)) {
                self.apply(&row, change).await?;
            }
        }
        Ok(())
    }

    /// A full look, whatever the watch says.
    #[cfg(test)]
    pub(crate) async fn monitor_tick(&self) -> Result<(), crate::error::AppError> {
        let instances = self.deps.db.call(|c| rows::list(c, false)).await?;
        self.look_at_everything(instances).await
    }

    /// Every domain's state and every lease, reconciled with every idle row.
    async fn look_at_everything(&self, instances: Vec<InstanceRow>) -> Result<(), crate::error::AppError> {
        let (domains, leases) = tokio::join!(self.deps.virsh.list_all(), self.deps.network.leases());
        let domains: HashMap<String, String> = domains?.into_iter().collect();
        let leases: HashMap<String, String> = leases?.into_iter().map(|l| (l.mac, l.ip)).collect();
        for row in instances {
            if self.has_ticket(&row.id) {
                continue;
            }
            let Some(change) = reconcile(
                &row,
                domains.get(&row.id).map(String::as_str),
                leases.get(&row.mac_address).map(String::as_str),
            ) else {
                continue;
            };
            if let Some((state, reason)) = &change.state {
                tracing::warn!(instance = %row.id, from = %row.state, to = %state, reason = reason.as_deref().unwrap_or(""), "state changed behind ec2local's back");
            }
            self.apply(&row, change).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, ip: Option<&str>) -> InstanceRow {
        InstanceRow {
            id: "i-0000abcd".into(),
            name: String::new(),
            instance_type: "t2.nano".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 8,
            image_id: "ami-1".into(),
            image_name: "img".into(),
            login_user: "ubuntu".into(),
            key_name: None,
            public_key: None,
            user_data: None,
            state: state.into(),
            state_reason: None,
            mac_address: "52:54:00:00:ab:cd".into(),
            reserved_ip: Some("192.168.100.10".into()),
            ip_address: ip.map(str::to_string),
            created_at: "t".into(),
            launched_at: None,
            terminated_at: None,
            task: None,
            reservation_id: None,
            disable_api_termination: false,
            disable_api_stop: false,
            reachable_at: None,
            host_public_keys: Vec::new(),
            host_key: None,
        }
    }

    // REQ-INST-013, REQ-NET-004
    #[test]
    fn a_running_instance_takes_its_lease_address() {
        let change = reconcile(&row("running", None), Some("running"), Some("192.168.100.10")).unwrap();
        assert_eq!(change, Change { state: None, ip: Some(Some("192.168.100.10".into())) });
        assert_eq!(reconcile(&row("running", Some("192.168.100.10")), Some("running"), Some("192.168.100.10")), None);
    }

    #[test]
    fn a_guest_shut_down_behind_our_back_becomes_stopped_without_address() {
        let change = reconcile(&row("running", Some("192.168.100.10")), Some("shut off"), None).unwrap();
        assert_eq!(change.state.as_ref().unwrap().0, State::Stopped);
        assert_eq!(change.ip, Some(None));
        let crashed = reconcile(&row("running", None), Some("crashed"), None).unwrap();
        assert_eq!(crashed.state.unwrap().1.as_deref(), Some("the guest crashed"));
    }

    #[test]
    fn a_vanished_domain_is_an_error_and_a_started_one_runs() {
        let gone = reconcile(&row("stopped", None), None, None).unwrap();
        assert_eq!(gone.state.unwrap().0, State::Error);
        let started = reconcile(&row("stopped", None), Some("running"), Some("192.168.100.10")).unwrap();
        assert_eq!(started.state.unwrap().0, State::Running);
        assert_eq!(started.ip, Some(Some("192.168.100.10".into())));
    }

    // REQ-INST-013: every stored state × every state virsh reports (None: no such
    // domain), for an idle row; the expected new state, or None for no change.
    #[test]
    fn the_reconciliation_table() {
        use State::*;
        const DOMAINS: [Option<&str>; 9] = [
            None,
            Some("running"),
            Some("idle"),
            Some("paused"),
            Some("in shutdown"),
            Some("shut off"),
            Some("crashed"),
            Some("pmsuspended"),
            Some("no state"),
        ];
        let table: [(State, [Option<State>; 9]); 6] = [
            (Pending, [None; 9]),
            (
                Running,
                [Some(Error), None, None, None, None, Some(Stopped), Some(Stopped), Some(Stopped), Some(Stopped)],
            ),
            (Stopping, [None; 9]),
            (
                Stopped,
                [Some(Error), Some(Running), Some(Running), Some(Running), Some(Running), None, None, None, None],
            ),
            (Error, [None; 9]),
            (Terminated, [None; 9]),
        ];
        assert_eq!(table.map(|(s, _)| s), crate::instances::state::ALL_STATES, "a state is missing from the table");
        for (stored, expected) in table {
            for (domain, want) in DOMAINS.iter().zip(expected) {
                let change = reconcile(&row(stored.as_str(), None), *domain, Some("192.168.100.10"));
                let got = change.as_ref().and_then(|c| c.state.as_ref()).map(|(s, _)| *s);
                assert_eq!(got, want, "{stored} with the domain {domain:?}");
                // The address follows: a lease only for what ends running, never for the rest.
                let ends_running = want.unwrap_or(stored) == Running;
                let ip = change.and_then(|c| c.ip);
                match stored {
                    Running | Stopped if ends_running => assert_eq!(ip, Some(Some("192.168.100.10".into()))),
                    _ => assert_eq!(ip, None, "{stored} with the domain {domain:?}"),
                }
            }
        }
    }

    #[test]
    fn work_in_flight_and_final_states_are_left_to_their_owners() {
        for state in ["pending", "stopping", "error", "terminated"] {
            assert_eq!(reconcile(&row(state, None), Some("shut off"), None), None, "{state}");
            assert_eq!(reconcile(&row(state, None), None, None), None, "{state}");
        }
        for task in ["rebooting", "terminating"] {
            let mut busy = row("running", None);
            busy.task = Some(task.into());
            assert_eq!(reconcile(&busy, Some("shut off"), None), None, "{task}");
            assert_eq!(reconcile(&busy, None, None), None, "{task}");
        }
    }

    mod over_scripted_virsh {
        use std::time::Duration;

        use crate::error::AppError;
        use crate::exec::scripted::Scripted;
        use crate::instances::testbench::{ID, IP, LIBVIRT_DOWN, instances_over};

        const LIST_HEADER: &str = " Id   Name         State\n-----------------------------\n";

        // REQ-INST-015
        #[tokio::test]
        async fn a_tick_takes_what_libvirt_shows_for_idle_instances() {
            let list = format!("{LIST_HEADER} -    {ID}   shut off\n");
            let script = Scripted::default().ok(" list --all", &list).ok(" net-dhcp-leases ", "");
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            bench.instances.inner().monitor_tick().await.unwrap();
            let row = bench.row().await;
            assert_eq!(row.state, "stopped");
            assert_eq!(row.state_reason.as_deref(), Some("the guest was shut down from inside or outside ec2local"));
            assert_eq!(row.ip_address, None);

            // A running guest's lease becomes its address.
            let list = format!("{LIST_HEADER} 3    {ID}   running\n");
            let leases = format!(" 2026-11-26 20:00:00   52:54:1a:2b:3c:4d   ipv4   {IP}/24   {ID}   -\n");
            let script = Scripted::default().ok(" list --all", &list).ok(" net-dhcp-leases ", &leases);
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            bench
                .instances
                .inner()
                .deps
                .db
                .call(|c| crate::db::instances::set_ip_if_idle(c, ID, "running", None))
                .await
                .unwrap();
            bench.instances.inner().monitor_tick().await.unwrap();
            assert_eq!(bench.row().await.ip_address.as_deref(), Some(IP));
        }

        // Issue 17: with libvirt's events followed, an idle tick runs no virsh at all, a
        // running guest without an address costs one lease lookup, and an event about
        // one of the service's own domains a full look.
        #[tokio::test]
        async fn with_events_followed_an_idle_tick_spawns_nothing() {
            let list = format!("{LIST_HEADER} 3    {ID}   running\n");
            let leases = format!(" 2026-11-26 20:00:00   52:54:1a:2b:3c:4d   ipv4   {IP}/24   {ID}   -\n");
            let script = Scripted::default().ok(" list --all", &list).ok(" net-dhcp-leases ", &leases);
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            let inner = bench.instances.inner();
            let counts = || (bench.script.count(" list --all"), bench.script.count(" net-dhcp-leases "));
            inner.watch.connected();
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 1), "the stream's start is caught up with a full look");
            inner.monitor_step().await.unwrap();
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 1), "nothing changed, nothing spawned");

            inner.deps.db.call(|c| crate::db::instances::set_ip_if_idle(c, ID, "running", None)).await.unwrap();
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 2), "only the leases, for the guest without an address");
            assert_eq!(bench.row().await.ip_address.as_deref(), Some(IP));
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 2));

            // A domain named like ours but not in this service's database: another
            // service's on the same libvirt, or the user's own.
            inner.watch.domain_event("i-0000f00d", "Stopped");
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 2), "an event about a domain not ours asks for no look");
            // The Shutdown that comes just before a Stopped implies nothing: no look
            // that could find the change before its event.
            inner.watch.domain_event(ID, "Shutdown");
            inner.watch.domain_event(ID, "Defined");
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (1, 2), "an event that implies no state asks for no look");
            inner.watch.domain_event(ID, "Resumed");
            inner.monitor_step().await.unwrap();
            assert_eq!(counts(), (2, 3), "an event about ours asks for a full look");
        }

        // REQ-INST-013, issue 17: what an event says shows before any virsh call
        // (here virsh answers nothing), and the address stays with a running guest.
        #[tokio::test]
        async fn an_event_is_applied_without_asking_virsh() {
            let script = Scripted::default().fail(" list --all", LIBVIRT_DOWN).fail(" net-dhcp-leases ", LIBVIRT_DOWN);
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            let inner = bench.instances.inner();
            inner.watch.connected();
            inner.watch.domain_event(ID, "Suspended");
            let _ = inner.monitor_step().await;
            let row = bench.row().await;
            assert_eq!(
                (row.state.as_str(), row.ip_address.as_deref()),
                ("running", Some(IP)),
                "paused is still running"
            );
            inner.watch.domain_event(ID, "Stopped");
            assert!(inner.monitor_step().await.is_err(), "the confirming look finds libvirt away");
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.ip_address), ("stopped", None));
            inner.watch.domain_event(ID, "Started");
            let _ = inner.monitor_step().await;
            assert_eq!(bench.row().await.state, "running");
        }

        // REQ-REL-003
        #[tokio::test]
        async fn a_tick_without_libvirt_changes_nothing_and_asks_for_recovery_later() {
            let script = Scripted::default().fail(" list --all", LIBVIRT_DOWN).ok(" net-dhcp-leases ", "");
            let bench = instances_over(script, Duration::from_secs(1)).with_instance("running").await;
            let err = bench.instances.inner().monitor_tick().await.unwrap_err();
            assert!(matches!(err, AppError::LibvirtUnavailable(_)), "{err:?}");
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.ip_address.as_deref()), ("running", Some(IP)));
        }

        // REQ-INST-015
        #[tokio::test]
        async fn a_tick_leaves_instances_with_work_in_flight_alone() {
            let list = format!("{LIST_HEADER} -    {ID}   shut off\n");
            let script = Scripted::default().ok(" list --all", &list).ok(" net-dhcp-leases ", "");
            let bench =
                instances_over(script, Duration::from_secs(1)).with_busy_instance("pending", Some("starting")).await;
            bench.instances.inner().monitor_tick().await.unwrap();
            let row = bench.row().await;
            assert_eq!((row.state.as_str(), row.task.as_deref()), ("pending", Some("starting")));
        }
    }
}
