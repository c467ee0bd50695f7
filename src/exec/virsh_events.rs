//! libvirt's domain lifecycle events, followed through one long-lived
//! `virsh event --loop --event lifecycle` child: a change made behind the service's back
//! is known when it happens instead of at the next poll, and an idle service spawns no
//! process to find out that nothing changed.

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{ExecError, ToolCommand};

/// One line of `virsh event`: `event 'lifecycle' for domain 'i-1a2b3c4d': Stopped Destroyed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    pub domain: String,
    /// libvirt's event, e.g. `Stopped`, `Started`, `Crashed`, `Undefined`.
    pub kind: String,
    /// Its detail, e.g. `Destroyed`, `Booted`, `Finished after guest request`.
    pub detail: String,
}

/// Reads one line of `virsh event` output; anything else (the final count, an error) is None.
pub fn parse_event_line(line: &str) -> Option<DomainEvent> {
    // `--timestamp` puts "DATE TIME: " first; the event itself starts at "event '".
    let line = &line[line.find("event '")?..];
    let rest = line.strip_prefix("event 'lifecycle' for domain '")?;
    let (domain, rest) = rest.split_once("': ")?;
    let (kind, detail) = rest.trim_end().split_once(' ').unwrap_or((rest.trim_end(), ""));
    (!domain.is_empty() && !kind.is_empty()).then(|| DomainEvent {
        domain: domain.to_string(),
        kind: kind.to_string(),
        detail: detail.to_string(),
    })
}

/// Events as they come; the channel closes when the child ends (libvirt went away, or
/// the child was killed). Dropping the feed kills the child.
pub struct EventFeed {
    pub events: mpsc::Receiver<DomainEvent>,
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
    let child = duct::cmd(&command.program, &command.args)
        .env("LC_ALL", "C")
        .stdin_null()
        .stderr_capture()
        .unchecked()
        .reader()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ExecError::NotFound { program: command.program.clone() }
            } else {
                ExecError::Spawn { command: shown.clone(), source }
            }
        })?;
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
fn read_events(child: &duct::ReaderHandle, sender: &mpsc::Sender<DomainEvent>, shown: &str) {
    tracing::debug!(command = %shown, "following libvirt events");
    for line in BufReader::new(child).lines() {
        let Ok(line) = line else { break };
        let Some(event) = parse_event_line(&line) else { continue };
        tracing::debug!(domain = %event.domain, kind = %event.kind, detail = %event.detail, "libvirt event");
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
            DomainEvent {
                domain: "i-0000beef".into(),
                kind: "Shutdown".into(),
                detail: "Finished after host request".into()
            }
        );
        assert_eq!((events[3].kind.as_str(), events[3].detail.as_str()), ("Stopped", "Destroyed"));
        let stamped = "2026-11-27 01:00:00.123+0000: event 'lifecycle' for domain 'web': Crashed Panicked";
        assert_eq!(parse_event_line(stamped).unwrap().kind, "Crashed");
        assert_eq!(parse_event_line("error: Disconnected from qemu:///system due to end of file"), None);
        assert_eq!(parse_event_line("event 'reboot' for domain 'i-0000beef'"), None);
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
        assert_eq!((first.domain.as_str(), first.kind.as_str()), ("i-1", "Stopped"));
        let second = feed.events.recv().await.unwrap();
        assert_eq!((second.domain.as_str(), second.kind.as_str()), ("i-2", "Started"));
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
