//! How many Twilio creates may be in flight at once: an adaptive limit shared by all sender
//! threads (TCP-style slow start, then additive increase / multiplicative decrease).
//!
//! Twilio limits each account's *concurrent* API requests and answers `429` / `20429` beyond the
//! limit ("never processed; always safe to retry"); the limit is not published and differs per
//! account (docs/twilio.md §5.1). So the limit is learned: it starts at
//! [`INITIAL`], doubles per round trip while Twilio keeps up (+1 per success), and after the first
//! refusal grows by about one per round trip (+1/limit per success). A refusal cuts it by
//! [`BACKOFF_FACTOR`], at most once per round trip (creates already in flight when it was cut are
//! refused with it: one burst), and growth then waits [`HOLD`], so the limit settles just under
//! the account's instead of probing it every round trip. It never exceeds `SENDER_THREADS` nor
//! falls below 1. The round trip is a moving average of the duration of successful creates.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// Creates allowed in flight before anything is known.
pub const INITIAL: f64 = 16.0;
/// A refusal multiplies the limit by this.
pub const BACKOFF_FACTOR: f64 = 0.8;
/// After a cut the limit does not grow for this long.
pub const HOLD: Duration = Duration::from_millis(500);
/// The round trip assumed before any create was timed.
const INITIAL_RTT: Duration = Duration::from_millis(100);

struct State {
    limit: f64,
    in_flight: usize,
    slow_start: bool,
    last_cut: Option<Instant>,
    /// Moving average of a successful create's duration.
    rtt: Duration,
    /// Threads waiting for a place: only then is a notification sent (a `Condvar` notification
    /// is a system call even when nobody waits, and there are two per create).
    waiting: usize,
}

/// The shared limit.
pub struct Limiter {
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// One create's place in flight; returned on drop.
pub struct Permit<'a>(&'a Limiter);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.0.freed.notify_one();
        }
    }
}

impl Limiter {
    /// A limiter allowing at most `max` creates at once.
    pub fn new(max: usize) -> Limiter {
        let max = max.max(1);
        Limiter {
            max,
            state: Mutex::new(State {
                limit: INITIAL.min(max as f64),
                in_flight: 0,
                slow_start: true,
                last_cut: None,
                rtt: INITIAL_RTT,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Wait for a place, until `latest` or shutdown (`None` then). Waiting is not an attempt.
    pub fn acquire(&self, shutdown: &Shutdown, latest: Instant) -> Option<Permit<'_>> {
        let mut state = self.lock();
        loop {
            if (state.in_flight as f64) < state.limit.floor().max(1.0) {
                state.in_flight += 1;
                return Some(Permit(self));
            }
            let now = Instant::now();
            if now >= latest || shutdown.is_triggered() {
                return None;
            }
            let wait = (latest - now).min(Duration::from_millis(100));
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    /// Twilio took a create without complaint (in `took`): grow.
    pub fn on_success(&self, took: Duration) {
        let mut state = self.lock();
        state.rtt = (state.rtt * 4 + took) / 5;
        if state.last_cut.is_some_and(|t| t.elapsed() < HOLD) {
            return;
        }
        let step = if state.slow_start {
            1.0
        } else {
            1.0 / state.limit
        };
        state.limit = (state.limit + step).min(self.max as f64);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    /// Twilio refused a create for concurrency (429 / 20429): shrink (once per round trip).
    pub fn on_throttled(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let burst = state.rtt.max(Duration::from_millis(10));
        if state
            .last_cut
            .is_some_and(|t| now.duration_since(t) < burst)
        {
            return;
        }
        state.last_cut = Some(now);
        state.slow_start = false;
        state.limit = (state.limit * BACKOFF_FACTOR).max(1.0);
    }

    /// The current limit (whole creates), for `/metrics` and logs.
    pub fn limit(&self) -> usize {
        self.lock().limit.floor().max(1.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(100);

    #[test]
    fn grows_fast_until_refused_then_slowly_and_shrinks_on_refusal() {
        let l = Limiter::new(100);
        assert_eq!(l.limit(), 16);
        for _ in 0..20 {
            l.on_success(RTT);
        }
        assert_eq!(l.limit(), 36, "slow start: +1 per success");
        l.on_throttled();
        assert_eq!(l.limit(), 28); // 36 × 0.8 = 28.8
        l.on_throttled(); // within one round trip: the same burst
        l.on_success(RTT); // and no growth during the hold
        assert_eq!(l.limit(), 28);
        std::thread::sleep(HOLD);
        for _ in 0..7 {
            l.on_success(RTT);
        }
        assert_eq!(l.limit(), 29, "then about one per round trip");
        for _ in 0..10_000 {
            l.on_success(RTT);
        }
        assert_eq!(l.limit(), 100, "never above the maximum");
        assert_eq!(Limiter::new(4).limit(), 4, "never above SENDER_THREADS");
    }

    #[test]
    fn permits_are_bounded_and_returned() {
        let l = Limiter::new(2);
        let s = Shutdown::new();
        let soon = || Instant::now() + Duration::from_millis(50);
        let a = l.acquire(&s, soon()).unwrap();
        let b = l.acquire(&s, soon()).unwrap();
        assert!(l.acquire(&s, soon()).is_none(), "the limit (2) is reached");
        drop(a);
        let c = l.acquire(&s, soon());
        assert!(c.is_some());
        drop((b, c));
        for _ in 0..10 {
            l.on_throttled();
            std::thread::sleep(RTT + Duration::from_millis(10));
        }
        assert_eq!(l.limit(), 1, "never below one");
        assert!(l.acquire(&s, soon()).is_some());
    }
}
