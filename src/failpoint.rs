//! Named pauses for the fault-injection tests (`tests/bench_faults.rs`).
//!
//! With `EC2LOCAL_FAILPOINT_DIR` set, `pause("start.before-virsh")` checks for a file of
//! that name in the directory. If it is there, the service appends a line to
//! `NAME.reached` (one per caller that reached it) and waits until the test removes `NAME`; in between, the test kills the service or stops
//! libvirt at a known step. Without the variable (every real run) a pause costs one
//! check of a `OnceLock`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub const DIR_VARIABLE: &str = "EC2LOCAL_FAILPOINT_DIR";

fn dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os(DIR_VARIABLE).map(PathBuf::from)).as_deref()
}

/// Waits here while the test holds the failpoint `name` armed.
pub async fn pause(name: &str) {
    let Some(dir) = dir() else { return };
    let armed = dir.join(name);
    if !armed.exists() {
        return;
    }
    tracing::warn!(failpoint = name, "paused at a failpoint");
    let reached = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.reached")));
    if let Ok(mut file) = reached {
        use std::io::Write;
        let _ = file.write_all(b"reached\n");
    }
    while armed.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(failpoint = name, "failpoint released");
}
