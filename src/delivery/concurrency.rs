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
//!
//! Time is an input: the decisions ([`Limiter::on_success`], [`Limiter::on_throttled`]) take the
//! instant they happen at, so they are tested with made-up instants; only [`Limiter::acquire`],
//! which blocks, reads the clock.

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
/// The shortest burst: refusals closer together than this are one cut, whatever the round trip.
const MIN_BURST: Duration = Duration::from_millis(10);
/// A waiter re-checks shutdown at least this often.
const RECHECK: Duration = Duration::from_millis(100);

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

/// Whether a change of the state may let a waiting thread in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Wake one waiter.
    One,
    /// Nobody to wake.
    Nobody,
}

impl State {
    /// Whether one more create may start now.
    fn admits(&self) -> bool {
        (self.in_flight as f64) < self.whole_limit()
    }

    fn whole_limit(&self) -> f64 {
        self.limit.floor().max(1.0)
    }

    fn wake(&self) -> Wake {
        if self.waiting > 0 {
            Wake::One
        } else {
            Wake::Nobody
        }
    }

    /// A create succeeded at `now` after `took`: grow, unless a cut is less than [`HOLD`] old.
    fn succeeded(&mut self, took: Duration, now: Instant, max: usize) -> Wake {
        self.rtt = (self.rtt * 4 + took) / 5;
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < HOLD)
        {
            return Wake::Nobody;
        }
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.limit
        };
        self.limit = (self.limit + step).min(max as f64);
        self.wake()
    }

    /// A create was refused at `now`: cut, unless the last cut is less than a round trip old
    /// (the same burst).
    fn throttled(&mut self, now: Instant) {
        let burst = self.rtt.max(MIN_BURST);
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < burst)
        {
            return;
        }
        self.last_cut = Some(now);
        self.slow_start = false;
        self.limit = (self.limit * BACKOFF_FACTOR).max(1.0);
    }
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
        let wake = state.wake();
        drop(state);
        self.0.notify(wake);
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

    fn notify(&self, wake: Wake) {
        if wake == Wake::One {
            self.freed.notify_one();
        }
    }

    /// Wait for a place, until `latest` (`None`: as long as it takes) or shutdown (`None` then).
    /// Waiting is not an attempt.
    pub fn acquire(&self, shutdown: &Shutdown, latest: Option<Instant>) -> Option<Permit<'_>> {
        let mut state = self.lock();
        loop {
            if state.admits() {
                state.in_flight += 1;
                return Some(Permit(self));
            }
            if shutdown.is_triggered() {
                return None;
            }
            let wait = match latest {
                Some(latest) => {
                    let now = Instant::now();
                    if now >= latest {
                        return None;
                    }
                    (latest - now).min(RECHECK)
                }
                None => RECHECK,
            };
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    /// Twilio took a create without complaint, at `now` after `took`: grow.
    pub fn on_success(&self, took: Duration, now: Instant) {
        let mut state = self.lock();
        let wake = state.succeeded(took, now, self.max);
        drop(state);
        self.notify(wake);
    }

    /// Twilio refused a create for concurrency (429 / 20429) at `now`: shrink (once per round
    /// trip).
    pub fn on_throttled(&self, now: Instant) {
        self.lock().throttled(now);
    }

    /// The current limit (whole creates), for `/metrics` and logs.
    pub fn limit(&self) -> usize {
        self.lock().whole_limit() as usize
    }

    /// How many more creates may start right now (the limit less the places taken); read-only,
    /// a snapshot that may be stale as soon as it is returned.
    pub fn free(&self) -> usize {
        let state = self.lock();
        (state.whole_limit() as usize).saturating_sub(state.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_fast_until_refused_then_slowly_and_shrinks_on_refusal() {
        let t0 = Instant::now();
        let l = Limiter::new(100);
        assert_eq!(l.limit(), 16);
        for _ in 0..20 {
            l.on_success(RTT, t0);
        }
        assert_eq!(l.limit(), 36, "slow start: +1 per success");
        l.on_throttled(t0);
        assert_eq!(l.limit(), 28); // 36 × 0.8 = 28.8
        l.on_throttled(t0 + RTT - ms(1)); // within one round trip: the same burst
        l.on_success(RTT, t0 + HOLD - ms(1)); // and no growth during the hold
        assert_eq!(l.limit(), 28);
        for _ in 0..7 {
            l.on_success(RTT, t0 + HOLD);
        }
        assert_eq!(l.limit(), 29, "then about one per round trip");
        for _ in 0..10_000 {
            l.on_success(RTT, t0 + HOLD);
        }
        assert_eq!(l.limit(), 100, "never above the maximum");
        assert_eq!(Limiter::new(4).limit(), 4, "never above SENDER_THREADS");
    }

    #[test]
    fn a_refusal_a_round_trip_after_the_last_cut_is_a_new_burst() {
        let t0 = Instant::now();
        let l = Limiter::new(100);
        l.on_throttled(t0);
        assert_eq!(l.limit(), 12); // 16 × 0.8 = 12.8
        l.on_throttled(t0 + RTT);
        assert_eq!(l.limit(), 10); // 12.8 × 0.8 = 10.24
                                   // The round trip follows the successes: at 10 ms, refusals 20 ms apart are two bursts.
        for _ in 0..40 {
            l.on_success(ms(10), t0 + RTT);
        }
        l.on_throttled(t0 + RTT + ms(20));
        assert_eq!(l.limit(), 8); // 10.24 × 0.8 = 8.19
    }

    #[test]
    fn permits_are_bounded_and_returned() {
        let t0 = Instant::now();
        let l = Limiter::new(2);
        let s = Shutdown::new();
        // A deadline already past: take a place if one is free, never wait.
        assert_eq!(l.free(), 2);
        let a = l.acquire(&s, Some(t0)).unwrap();
        assert_eq!(l.free(), 1);
        let b = l.acquire(&s, Some(t0)).unwrap();
        assert!(
            l.acquire(&s, Some(t0)).is_none(),
            "the limit (2) is reached"
        );
        assert_eq!(l.free(), 0);
        drop(a);
        let c = l.acquire(&s, Some(t0));
        assert!(c.is_some());
        s.trigger();
        assert!(
            l.acquire(&s, None).is_none(),
            "no deadline: shutdown ends the wait"
        );
        drop((b, c));
        for i in 0..10 {
            l.on_throttled(t0 + (RTT + ms(10)) * i);
        }
        assert_eq!(l.limit(), 1, "never below one");
        assert!(l.acquire(&s, Some(t0)).is_some());
    }

    #[test]
    fn a_returned_permit_wakes_a_waiter() {
        let l = std::sync::Arc::new(Limiter::new(1));
        let s = Shutdown::new();
        let held = l.acquire(&s, None).unwrap();
        let waiter = {
            let (l, s) = (l.clone(), s.clone());
            std::thread::spawn(move || l.acquire(&s, None).is_some())
        };
        // Until the waiter is parked, not a fixed time.
        while l.lock().waiting == 0 {
            std::thread::yield_now();
        }
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
