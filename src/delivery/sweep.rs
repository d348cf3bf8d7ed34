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
//!
//! Whether a sweep is due is decided by `due` from what the loop saw (a request, REST failing,
//! the time since the last sweep ended, this instance's role); only the loop reads the clock.
//!
//! In scaled mode (`docs/scaled-mode.md`) the periodic sweep runs only on the one sweeper
//! ([`Ownership::is_sweeper`]), which hands on the ids of its own partitions, and those of other
//! partitions only when they were queued at its previous sweep too (their wake-up was lost; they
//! are claimed by id). A sweep asked for by a (re)subscription, or made while REST is
//! failing, runs on every instance but hands on only the ids of partitions this instance owns.
//! In the default mode every instance is the sweeper and hands on everything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::backoff::Backoff;
use crate::delivery::partitions::Ownership;
use crate::delivery::queue::{PushError, Pushed, WorkQueue};
use crate::message::MessageId;
use crate::ops::liveness::{Liveness, Loop};
use crate::ops::metrics::{Metrics, Outcome};
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Rest, MAX_BODY_CHARS};
use crate::sync::Locked;

/// At most this many rows of other members are remembered from one sweep to the next.
const MAX_OTHERS_SEEN: usize = 100_000;

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
    /// Whether this instance runs the periodic sweep, and which ids it hands on (scaled mode).
    pub ownership: Ownership,
}

/// Whether this instance runs the periodic sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It does (the default mode; scaled mode as the first member or without a membership).
    Sweeper,
    /// Another instance does (scaled mode).
    Member,
}

/// Which of the ids a sweep finds it hands to the senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every one.
    All,
    /// Those of partitions this instance owns.
    Owned,
}

impl Role {
    fn of(ownership: &Ownership) -> Role {
        if ownership.is_sweeper() {
            Role::Sweeper
        } else {
            Role::Member
        }
    }

    /// What a sweep by this role hands on.
    fn scope(self) -> Scope {
        match self {
            Role::Sweeper => Scope::All,
            Role::Member => Scope::Owned,
        }
    }
}

/// What the sweeper loop saw after one wait for a request.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// A sweep was requested.
    requested: bool,
    /// Supabase REST is failing.
    rest_failing: bool,
    /// Time since the last sweep ended.
    since_last: Duration,
    /// Whether this instance runs the periodic sweep.
    role: Role,
}

/// Why a sweep runs now, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Not yet.
    No,
    /// Someone asked (a (re)subscription, startup).
    Requested,
    /// Supabase REST is failing and [`RECOVERY_PROBE`] has passed since the last sweep.
    Recovering,
    /// `SWEEP_INTERVAL_SECS` has passed since the last sweep (the sweeper only).
    Interval,
}

/// Whether a sweep is due after seeing `seen`, the sweeper sweeping at least every `interval`.
fn due(seen: Seen, interval: Duration) -> Due {
    if seen.requested {
        Due::Requested
    } else if seen.rest_failing && seen.since_last >= RECOVERY_PROBE {
        Due::Recovering
    } else if seen.since_last >= interval && seen.role == Role::Sweeper {
        Due::Interval
    } else {
        Due::No
    }
}

/// Start the sweeper thread.
pub fn spawn(sweeper: Sweeper) -> std::io::Result<JoinHandle<()>> {
    crate::sync::spawn_named("catch-up", 256 * 1024, move || {
        let mut last = Instant::now();
        let mut others_seen = HashSet::new();
        while !sweeper.shutdown.is_triggered() {
            sweeper.liveness.beat(Loop::Sweeper);
            let seen = Seen {
                requested: sweeper.trigger.take(Duration::from_millis(250)),
                rest_failing: sweeper.rest_failing.load(Ordering::Relaxed),
                since_last: Instant::now().saturating_duration_since(last),
                role: Role::of(&sweeper.ownership),
            };
            match due(seen, sweeper.interval) {
                Due::No => continue,
                Due::Recovering => debug!(
                    "Supabase REST failed since the last sweep; sweeping to re-offer what it dropped"
                ),
                Due::Requested | Due::Interval => {}
            }
            sweeper.sweep(seen.role.scope(), &mut others_seen);
            // Measured from the end: a sweep that waited out an outage counts as recent.
            last = Instant::now();
        }
    })
}

impl Sweeper {
    /// Fail the queued rows whose content cannot be an SMS (absent, or over the limit), without
    /// reading them; logged one by one.
    fn fail_unsendable(&self) {
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
    }

    /// Fail the queued rows that cannot be SMS (their bodies are never read), then page through
    /// every queued outbound row once, handing on those in `scope`; retries a failing page until
    /// shutdown.
    fn sweep(&self, scope: Scope, others_seen: &mut HashSet<MessageId>) {
        let mut after: Option<MessageId> = None;
        let (mut found, mut queued, mut failures) = (0usize, 0usize, 0u32);
        let mut others_now = HashSet::new();
        let mut unsendable_failed = false;
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
            if after.is_none() && !unsendable_failed {
                // An empty queue has nothing to fail or hand on: one read is the whole sweep,
                // which is what a quiet service pays each interval. Otherwise the rows that
                // cannot be SMS are failed first, and the queue is read again from its start.
                if page.is_empty() {
                    debug!("catch-up found no queued messages");
                    return;
                }
                self.fail_unsendable();
                unsendable_failed = true;
                continue;
            }
            let full = page.len() == self.page_size;
            found += page.len();
            for id in page {
                after = Some(id.clone());
                if !self.ownership.owns(&id) {
                    // Another member's row: its owner was woken for it. Only the sweeper takes
                    // it, and only once it was queued at the previous sweep too (its wake-up was
                    // lost), so a sweep in a burst does not race the owners for fresh rows.
                    let stale = others_seen.contains(&id);
                    if others_now.len() < MAX_OTHERS_SEEN {
                        others_now.insert(id.clone());
                    }
                    if scope == Scope::Owned || !stale {
                        continue;
                    }
                }
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
        *others_seen = others_now;
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
        assert!(!t.take(Duration::ZERO));
        t.request();
        t.request();
        assert!(t.take(Duration::ZERO));
        assert!(
            !t.take(Duration::ZERO),
            "two requests before a take are one sweep"
        );
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.take(Duration::from_secs(60)))
        };
        t.request();
        assert!(
            waiter.join().unwrap(),
            "taken whether it came before or during the wait"
        );
    }

    fn seen(requested: bool, rest_failing: bool, since_last_ms: u64) -> Seen {
        Seen {
            requested,
            rest_failing,
            since_last: Duration::from_millis(since_last_ms),
            role: Role::Sweeper,
        }
    }

    #[test]
    fn only_the_sweeper_sweeps_on_the_interval() {
        let interval = Duration::from_secs(60);
        let member = |requested, rest_failing, ms| Seen {
            role: Role::Member,
            ..seen(requested, rest_failing, ms)
        };
        assert_eq!(due(member(false, false, 600_000), interval), Due::No);
        assert_eq!(
            due(member(true, false, 0), interval),
            Due::Requested,
            "a (re)subscription's sweep runs everywhere"
        );
        assert_eq!(due(member(false, true, 1_000), interval), Due::Recovering);
        assert_eq!(Role::Member.scope(), Scope::Owned);
        assert_eq!(Role::Sweeper.scope(), Scope::All);
        let scaled = Ownership::scaled(4);
        assert_eq!(Role::of(&scaled), Role::Sweeper, "without a membership");
        scaled.set_members(vec![1], false);
        assert_eq!(Role::of(&scaled), Role::Member);
        assert_eq!(Role::of(&Ownership::default_mode()), Role::Sweeper);
    }

    #[test]
    fn a_sweep_is_due_on_request_on_recovery_and_on_the_interval() {
        let interval = Duration::from_secs(60);
        assert_eq!(due(seen(false, false, 0), interval), Due::No);
        assert_eq!(due(seen(true, false, 0), interval), Due::Requested);
        assert_eq!(due(seen(true, true, 5_000), interval), Due::Requested);
        assert_eq!(due(seen(false, false, 59_999), interval), Due::No);
        assert_eq!(due(seen(false, false, 60_000), interval), Due::Interval);
        // While REST fails: at most every RECOVERY_PROBE, whatever the interval.
        assert_eq!(due(seen(false, true, 999), interval), Due::No);
        assert_eq!(due(seen(false, true, 1_000), interval), Due::Recovering);
        assert_eq!(due(seen(false, true, 60_000), interval), Due::Recovering);
    }
}
