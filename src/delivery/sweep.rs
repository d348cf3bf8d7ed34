//! The catch-up sweep: Realtime does not replay what changed while we were not subscribed, so
//! after every (re)subscription we page through the queued outbound rows over REST and hand them
//! to the senders too. It also runs every `SWEEP_INTERVAL_SECS`, which catches events the server
//! dropped on a socket that still looks healthy, and keeps messages moving while Realtime is down.
//!
//! It also sweeps while Supabase REST is failing (the shared flag `/health` reports), at most every
//! [`RECOVERY_PROBE`]: a claim that failed during an outage drops its id, and the first sweep
//! that gets through once REST answers again re-offers every such id, within seconds of the
//! recovery whatever `SWEEP_INTERVAL_SECS` is. While REST is down that sweep is also the probe
//! that notices the recovery (its page reads retry with a short, capped backoff).
//!
//! One thread runs sweeps on request. Requests made while a sweep runs are coalesced into one
//! more sweep afterwards. Pages are small and fetched only when the queue has taken the previous
//! one, so a backlog of any size costs constant memory. Overlap with live events is harmless:
//! the queue drops ids already waiting and the claim settles the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::backoff::Backoff;
use crate::delivery::queue::{PushError, Pushed, WorkQueue};
use crate::message::MessageId;
use crate::ops::liveness::{Liveness, Loop};
use crate::ops::metrics::{Metrics, Outcome};
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Rest, MAX_BODY_CHARS};
use crate::sync::Locked;

/// The least time between two sweeps made because Supabase REST was failing.
pub const RECOVERY_PROBE: Duration = Duration::from_secs(1);

/// Asks the sweeper to run (cheap, callable from async code: it never blocks for long).
#[derive(Clone, Default)]
pub struct SweepTrigger {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl SweepTrigger {
    /// Request a sweep.
    pub fn request(&self) {
        let (lock, cv) = &*self.inner;
        *lock.locked() = true;
        cv.notify_all();
    }

    /// Wait up to `timeout` for a request; consumes it.
    fn take(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let guard = lock.locked();
        let (mut requested, _) = cv
            .wait_timeout_while(guard, timeout, |requested| !*requested)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *requested)
    }
}

/// The sweep's dependencies.
pub struct Sweeper {
    /// REST reads.
    pub rest: Rest,
    /// Where found ids go.
    pub queue: WorkQueue,
    /// Sweep requests.
    pub trigger: SweepTrigger,
    /// Stop.
    pub shutdown: Shutdown,
    /// Rows per REST page.
    pub page_size: usize,
    /// Delay between attempts when a page read fails.
    pub backoff: Backoff,
    /// Sweep at least this often, requested or not.
    pub interval: Duration,
    /// Set while Supabase REST is failing (shared with the REST client, reported by `/health`):
    /// claims fail and their ids are dropped, so the sweeper sweeps until it is clear again.
    pub rest_failing: Arc<AtomicBool>,
    /// Counts the rows failed because they cannot be SMS.
    pub metrics: Arc<Metrics>,
    /// Beaten as the sweeper turns (`/livez`).
    pub liveness: Liveness,
}

/// Start the sweeper thread.
pub fn spawn(sweeper: Sweeper) -> std::io::Result<JoinHandle<()>> {
    crate::sync::spawn_named("catch-up", 256 * 1024, move || {
        let mut last = Instant::now();
        while !sweeper.shutdown.is_triggered() {
            sweeper.liveness.beat(Loop::Sweeper);
            let requested = sweeper.trigger.take(Duration::from_millis(250));
            let recovering =
                sweeper.rest_failing.load(Ordering::Relaxed) && last.elapsed() >= RECOVERY_PROBE;
            if recovering && !requested {
                debug!("Supabase REST failed since the last sweep; sweeping to re-offer what it dropped");
            }
            if requested || recovering || last.elapsed() >= sweeper.interval {
                sweeper.sweep();
                // Measured from the end: a sweep that waited out an outage counts as recent.
                last = Instant::now();
            }
        }
    })
}

impl Sweeper {
    /// Fail the queued rows that cannot be SMS (their bodies are never read), then page through
    /// every queued outbound row once; retries a failing page until shutdown.
    fn sweep(&self) {
        match self.rest.fail_unsendable() {
            Ok(ids) => {
                for id in &ids {
                    warn!(
                        "message {id} failed without sending: its content is absent or over \
                         Twilio's {MAX_BODY_CHARS}-character limit"
                    );
                }
                for _ in &ids {
                    self.metrics.message(Outcome::Failed);
                }
            }
            Err(e) => warn!("catch-up: cannot fail unsendable rows now: {e}; next round"),
        }
        let mut after: Option<MessageId> = None;
        let (mut found, mut queued, mut failures) = (0usize, 0usize, 0u32);
        loop {
            self.liveness.beat(Loop::Sweeper);
            let page = match self.rest.queued_page(after.as_ref(), self.page_size) {
                Ok(page) => page,
                Err(e) => {
                    let delay = self.backoff.delay(failures);
                    failures += 1;
                    warn!(
                        "catch-up read failed: {e}; retrying in {} ms",
                        delay.as_millis()
                    );
                    if !self.shutdown.sleep(delay) {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            let full = page.len() == self.page_size;
            found += page.len();
            for id in page {
                after = Some(id.clone());
                match self.queue.push_blocking(id) {
                    Ok(Pushed::Queued) => queued += 1,
                    Ok(Pushed::AlreadyWaiting) => {}
                    Err(PushError::Closed) => return,
                }
            }
            if !full {
                break;
            }
        }
        if found > 0 {
            info!("catch-up found {found} queued message(s); {queued} handed to the senders");
        } else {
            debug!("catch-up found no queued messages");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_coalesce_and_are_consumed() {
        let t = SweepTrigger::default();
        assert!(!t.take(Duration::from_millis(10)));
        t.request();
        t.request();
        assert!(t.take(Duration::from_millis(10)));
        assert!(
            !t.take(Duration::from_millis(10)),
            "two requests before a take are one sweep"
        );
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.take(Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(30));
        t.request();
        assert!(waiter.join().unwrap());
    }
}
