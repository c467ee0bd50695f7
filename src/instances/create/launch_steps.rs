//! Where a launch's time goes (issue 17): a debug line per step as it ends, with its
//! `elapsed_ms`, and one summary line per launch naming every step, so that the log
//! (and `scripts/bench-launch-path`, which parses it) shows the cost of each step.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

/// The steps of one launch so far, from its host check on. Concurrent steps record
/// through a shared reference.
#[derive(Debug)]
pub(crate) struct LaunchSteps {
    started: Instant,
    steps: Mutex<Vec<(&'static str, f64)>>,
}

impl LaunchSteps {
    /// Starts the clock of a launch request (its host check is the first step).
    pub(crate) fn start() -> Self {
        Self { started: Instant::now(), steps: Mutex::default() }
    }

    /// The steps so far, for each instance of a request to go on from (the host check
    /// is made once for all of them).
    pub(crate) fn fork(&self) -> Self {
        Self { started: self.started, steps: Mutex::new(self.list()) }
    }

    fn list(&self) -> Vec<(&'static str, f64)> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `work` as the step `step` of `instance`'s launch ("" before it has an id),
    /// logs how long it took and keeps it for the summary.
    pub(crate) async fn time<T>(&self, instance: &str, step: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        let elapsed_ms = started.elapsed().as_micros() as f64 / 1000.0;
        tracing::debug!(instance, step, elapsed_ms, "launch step");
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).push((step, elapsed_ms));
        out
    }

    /// The summary line: wall time since the request's host check began, and each step.
    pub(crate) fn log_summary(&self, instance: &str, outcome: &str) {
        let total_ms = self.started.elapsed().as_micros() as f64 / 1000.0;
        tracing::debug!(instance, outcome, total_ms, steps = %self, "launch timed");
    }
}

/// `host_check=0.1 record=2.3 overlay=14.0 …` (milliseconds).
impl fmt::Display for LaunchSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.list().iter().map(|(step, ms)| format!("{step}={ms:.1}")).collect();
        f.write_str(&steps.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_step_is_kept_in_order_and_a_fork_goes_on_from_the_shared_ones() {
        let request = LaunchSteps::start();
        assert_eq!(request.time("", "host_check", async { 7 }).await, 7);
        let one = request.fork();
        one.time("i-1a2b3c4d", "record", async {}).await;
        let names: Vec<&str> = one.list().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["host_check", "record"]);
        assert_eq!(request.list().len(), 1, "a fork does not write back");
        let shown = one.to_string();
        assert!(shown.starts_with("host_check=") && shown.contains(" record="), "{shown}");
    }
}
