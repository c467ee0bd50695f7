//! Late reservations, and the removal of reservations, wait for the launches still on
//! their way to their start. A live `net-update` holds libvirt's
//! network lock through a reload of the firewall rules, and every `virsh start` on the
//! network needs that lock to plug its interface in: measured on the bench, ten starts
//! take 3.6 s alone and 9.6 s beside ten reservations. A guest asks for its address
//! seconds after its start at the earliest, and asks again until it is answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

#[derive(Default)]
pub(crate) struct StartGate {
    starting: AtomicUsize,
    idle: Notify,
    /// One update at a time: libvirt runs them one after the other anyway, and a start
    /// that comes between two of them waits for one reload only.
    updating: Mutex<()>,
}

/// A launch on its way to its start; the gate opens when the last one is dropped.
pub(crate) struct Starting<'a>(&'a StartGate);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if self.0.starting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl StartGate {
    pub(crate) fn starting(&self) -> Starting<'_> {
        self.starting.fetch_add(1, Ordering::SeqCst);
        Starting(self)
    }

    /// Runs `update` (a reservation or its removal) once no launch is on its way to its
    /// start, or after `patience` (a steady stream of launches must not keep a guest
    /// without an address), one update at a time.
    pub(crate) async fn after_starts<T>(&self, patience: Duration, update: impl Future<Output = T>) -> T {
        let _ = tokio::time::timeout(patience, async {
            loop {
                let idle = self.idle.notified();
                if self.starting.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        let _one = self.updating.lock().await;
        update.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[tokio::test]
    async fn a_reservation_waits_for_the_starts_in_flight_and_no_longer_than_its_patience() {
        let patience = Duration::from_secs(3);
        let gate = Arc::new(StartGate::default());
        let began = Instant::now();
        assert_eq!(gate.after_starts(patience, async { 1 }).await, 1);
        assert!(began.elapsed() < patience / 2, "nothing starting: at once");

        let start = gate.starting();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.after_starts(patience, async { Instant::now() }).await }
        });
        tokio::time::sleep(patience / 3).await;
        assert!(!waiting.is_finished(), "held back while a start is in flight");
        let opened = Instant::now();
        drop(start);
        assert!(waiting.await.unwrap() - opened < patience / 3, "let through when the start ends");

        let _endless = gate.starting();
        let began = Instant::now();
        let ran = gate.after_starts(patience, async { Instant::now() }).await;
        assert!(ran - began >= patience, "patience runs out");
    }
}
