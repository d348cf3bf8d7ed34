//! The double's shared state: everything mutable behind one lock (poison-tolerant), the
//! condition variables that wake waiters, the fault plans, and the hold that parks validated
//! creates until a test lets them through.

use super::{Fault, RecordedRequest, StoredMessage, TwilioConfig, MAX_HOLD};
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Mutable state behind one lock; every critical section is short and never sleeps.
#[derive(Default)]
pub(super) struct State {
    pub(super) messages: Vec<StoredMessage>,
    /// sid → position in `messages`, so fetch and uniqueness checks stay O(1) in long benchmarks.
    pub(super) by_sid: HashMap<String, usize>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) create_requests: usize,
    /// Faults for creates (`fail_next_creates`, `set_outage`).
    pub(super) create_faults: FaultPlan,
    /// Faults for lists (`fail_next_lists`, `set_list_outage`).
    pub(super) list_faults: FaultPlan,
    pub(super) latency: Duration,
    pub(super) create_latency: Duration,
    pub(super) send_delay: Duration,
    pub(super) visibility_lag: Duration,
    pub(super) trial: bool,
    pub(super) redact_bodies: bool,
    /// Whether validated creates wait before storing ([`TwilioDouble::hold_creates`](super::TwilioDouble::hold_creates)).
    pub(super) hold_creates: bool,
    /// Creates waiting now.
    pub(super) held: usize,
    /// Waiting creates told to proceed that have not woken yet (never more than `held`).
    pub(super) releases: usize,
    /// Account-level limit of concurrent API requests ([`TwilioDouble::set_concurrency_limit`](super::TwilioDouble::set_concurrency_limit)).
    pub(super) concurrency_limit: Option<usize>,
    /// API requests being handled now.
    pub(super) in_progress: usize,
    /// The most that were ever in progress at once.
    pub(super) peak_in_progress: usize,
    /// Requests answered 429 / 20429 for exceeding the limit.
    pub(super) too_many: usize,
}

pub(super) struct Shared {
    pub(super) config: TwilioConfig,
    pub(super) state: Mutex<State>,
    /// Signalled whenever a message is stored (for `wait_for_messages`).
    pub(super) stored: Condvar,
    /// Signalled whenever the hold changes: a create starts waiting, is released, or the hold
    /// ends (for held creates and `wait_for_held_creates`).
    pub(super) hold_changed: Condvar,
}

impl Shared {
    /// Lock, tolerating poison: a panicking test thread must not turn every later call into a
    /// second, misleading panic.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait on `condvar` until `deadline` (tolerating poison like [`Shared::lock`]).
    pub(super) fn wait_until<'a>(
        &self,
        condvar: &Condvar,
        state: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match condvar.wait_timeout(state, timeout) {
            Ok((guard, _)) => guard,
            Err(p) => p.into_inner().0,
        }
    }

    /// If creates are held, wait (the lock released while waiting) until this one is let
    /// through, the hold ends, or [`MAX_HOLD`] passes.
    pub(super) fn wait_while_held(&self) {
        let deadline = Instant::now() + MAX_HOLD;
        let mut state = self.lock();
        if !state.hold_creates {
            return;
        }
        state.held += 1;
        self.hold_changed.notify_all();
        while state.hold_creates && Instant::now() < deadline {
            if state.releases > 0 {
                state.releases -= 1;
                break;
            }
            state = self.wait_until(&self.hold_changed, state, deadline);
        }
        state.held -= 1;
        // A release meant for a create that timed out instead must not let a later one through.
        state.releases = state.releases.min(state.held);
        drop(state);
        self.hold_changed.notify_all();
    }

    /// End any hold and wake every held create.
    pub(super) fn end_hold(&self) {
        let mut state = self.lock();
        state.hold_creates = false;
        state.releases = 0;
        drop(state);
        self.hold_changed.notify_all();
    }
}

/// Faults to inject into one kind of request: the queued ones first, then the outage, if any.
#[derive(Default)]
pub(super) struct FaultPlan {
    queued: VecDeque<Fault>,
    /// While set, every request of the kind gets this fault once the queue is empty.
    pub(super) outage: Option<Fault>,
}

impl FaultPlan {
    /// Queue `fault` for the next `n` requests.
    pub(super) fn queue(&mut self, n: usize, fault: Fault) {
        // (A loop rather than `repeat_n`, which is newer than the project's MSRV.)
        for _ in 0..n {
            self.queued.push_back(fault.clone());
        }
    }

    /// The fault the next request gets, consuming a queued one.
    pub(super) fn next(&mut self) -> Option<Fault> {
        self.queued.pop_front().or_else(|| self.outage.clone())
    }
}
