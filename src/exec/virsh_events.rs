//! libvirt's lifecycle events, followed through long-lived `virsh event --loop`,
//! `virsh net-event --loop` and `virsh pool-event --loop` children: a change made behind
//! the service's back is known when it happens instead of at the next poll, and an idle
//! service spawns no process to find out that nothing changed.

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{ExecError, ToolCommand};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Domain,
    Network,
    Pool,
}

/// One lifecycle event, e.g. `event 'lifecycle' for domain 'i-1a2b3c4d': Stopped Destroyed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub subject: Subject,
    pub name: String,
    /// libvirt's event, e.g. `Stopped`, `Started`, `Crashed`, `Undefined`.
    pub kind: String,
    /// Its detail, e.g. `Destroyed`, `Booted`, `Finished after guest request`.
    pub detail: String,
}

/// Reads one line of `virsh event`, `net-event` or `pool-event` output; anything else
/// (the final count, an error) is None.
pub fn parse_event_line(line: &str) -> Option<LifecycleEvent> {
    // `--timestamp` puts "DATE TIME: " first; the event itself starts at "event '".
    let line = &line[line.find("event '")?..];
    let rest = line.strip_prefix("event 'lifecycle' for ")?;
    let (subject, rest) =
        [("domain ", Subject::Domain), ("network ", Subject::Network), ("storage pool ", Subject::Pool)]
            .into_iter()
            .find_map(|(prefix, subject)| rest.strip_prefix(prefix).map(|rest| (subject, rest)))?;
    // Domain names are quoted; network and pool names are not, in some versions.
    let (name, rest) = rest.split_once(": ")?;
    let name = name.trim_matches('\'');
    let rest = rest.trim_end();
    let (kind, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    (!name.is_empty() && !kind.is_empty()).then(|| LifecycleEvent {
        subject,
        name: name.to_string(),
        kind: kind.to_string(),
        detail: detail.to_string(),
    })
}

/// Events as they come; the channel closes when the child ends (libvirt went away, or
/// the child was killed). Dropping the feed kills the child.
pub struct EventFeed {
    pub events: mpsc::Receiver<LifecycleEvent>,
    child: Arc<duct::ReaderHandle>,
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// How many events may wait for the monitor before the reader waits for it: a burst
/// (ten guests stopping) fits, and a stuck monitor slows the child, not memory.
const QUEUE: usize = 256;

/// Starts `command` (a `virsh event --loop`) and reads its lines on a thread of its own.
pub fn follow(command: &ToolCommand) -> Result<EventFeed, ExecError> {
    let shown = command.to_string();
    let child = super::expression(command).reader().map_err(|source| super::spawn_error(command, source))?;
    let child = Arc::new(child);
    let (sender, events) = mpsc::channel(QUEUE);
    let reader = child.clone();
    std::thread::Builder::new()
        .name("virsh-events".into())
        .spawn(move || read_events(&reader, &sender, &shown))
        .map_err(|source| ExecError::Spawn { command: command.to_string(), source })?;
    Ok(EventFeed { events, child })
}

/// Forwards parsed lines until the child ends or nobody listens any more.
fn read_events(child: &duct::ReaderHandle, sender: &mpsc::Sender<LifecycleEvent>, shown: &str) {
    tracing::debug!(command = %shown, "following libvirt events");
    for line in BufReader::new(child).lines() {
        let Ok(line) = line else { break };
        let Some(event) = parse_event_line(&line) else { continue };
        tracing::debug!(subject = ?event.subject, name = %event.name, kind = %event.kind, detail = %event.detail, "libvirt event");
        if sender.blocking_send(event).is_err() {
            let _ = child.kill();
            return;
        }
    }
    let stderr = match child.try_wait() {
        Ok(Some(output)) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        _ => String::new(),
    };
    tracing::debug!(command = %shown, %stderr, "libvirt event stream ended");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_lifecycle_lines_as_virsh_prints_them() {
        // Recorded from libvirt 9.0 on the bench: define, start, destroy, undefine.
        let recorded = "event 'lifecycle' for domain 'i-0000beef': Defined Added
event 'lifecycle' for domain 'i-0000beef': Started Booted
event 'lifecycle' for domain 'i-0000beef': Shutdown Finished after host request
event 'lifecycle' for domain 'i-0000beef': Stopped Destroyed
event 'lifecycle' for domain 'i-0000beef': Undefined Removed
events received: 5
";
        let events: Vec<_> = recorded.lines().filter_map(parse_event_line).collect();
        assert_eq!(events.len(), 5);
        assert_eq!(
            events[2],
            LifecycleEvent {
                subject: Subject::Domain,
                name: "i-0000beef".into(),
                kind: "Shutdown".into(),
                detail: "Finished after host request".into()
            }
        );
        assert_eq!((events[3].kind.as_str(), events[3].detail.as_str()), ("Stopped", "Destroyed"));
        let stamped = "2026-11-27 01:00:00.123+0000: event 'lifecycle' for domain 'web': Crashed Panicked";
        assert_eq!(parse_event_line(stamped).unwrap().kind, "Crashed");
        assert_eq!(parse_event_line("error: Disconnected from qemu:///system due to end of file"), None);
        assert_eq!(parse_event_line("event 'reboot' for domain 'i-0000beef'"), None);
        let network = parse_event_line("event 'lifecycle' for network ec2-as-service: Stopped").unwrap();
        assert_eq!(
            (network.subject, network.name.as_str(), network.kind.as_str()),
            (Subject::Network, "ec2-as-service", "Stopped")
        );
        let pool = parse_event_line("event 'lifecycle' for storage pool '.ec2-as-service': Undefined").unwrap();
        assert_eq!((pool.subject, pool.name.as_str(), pool.detail.as_str()), (Subject::Pool, ".ec2-as-service", ""));
    }

    fn shell(script: &str) -> ToolCommand {
        ToolCommand::new("sh", Duration::from_secs(1)).args(["-c", script])
    }

    #[tokio::test]
    async fn events_arrive_as_printed_and_the_feed_closes_when_the_child_ends() {
        let mut feed = follow(&shell(
            "echo \"event 'lifecycle' for domain 'i-1': Stopped Destroyed\"; sleep 0.2; \
             echo noise; echo \"event 'lifecycle' for domain 'i-2': Started Booted\"; echo gone >&2; exit 1",
        ))
        .unwrap();
        let first = feed.events.recv().await.unwrap();
        assert_eq!((first.name.as_str(), first.kind.as_str()), ("i-1", "Stopped"));
        let second = feed.events.recv().await.unwrap();
        assert_eq!((second.name.as_str(), second.kind.as_str()), ("i-2", "Started"));
        let closed = tokio::time::timeout(Duration::from_secs(10), feed.events.recv()).await.unwrap();
        assert_eq!(closed, None, "the feed ends with its child");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn dropping_the_feed_kills_the_child() {
        let feed = follow(&shell("exec sleep 600")).unwrap();
        let pid = feed.child.pids()[0];
        drop(feed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.split_whitespace().nth(2) == Some("Z") {
                break; // killed, not yet reaped by the reader thread
            }
            assert!(std::time::Instant::now() < deadline, "the child outlived its feed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_as_not_found() {
        let err = follow(&ToolCommand::new("ec2local-no-such-virsh", Duration::from_secs(1))).err().unwrap();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err:?}");
    }
}
