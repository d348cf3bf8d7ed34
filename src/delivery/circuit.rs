//! The gate every sender thread passes before claiming or sending: open when Twilio cannot take
//! any message, so messages stay queued instead of each one being burned into `failed`.
//!
//! Two things open it: an account problem (wrong credentials or URL: [`Circuit::trip`]), and an
//! outage ([`Circuit::record_outage`]): [`OUTAGE_THRESHOLD`] outage failures in a row (5xx,
//! connection errors, timeouts) spread over at least two messages — one message failing alone
//! is that message's problem and goes through its own retries.
//!
//! States: closed (send freely) → open (nobody sends until `open_until`) → half-open (exactly
//! one thread probes with a real request; the others keep waiting) → closed on any answer that
//! shows Twilio works, or open again for twice as long. Pauses follow a [`Backoff`] per cause.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::message::MessageId;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// Outage failures in a row (over at least two messages) that open the gate.
pub const OUTAGE_THRESHOLD: u32 = 5;

/// The shared gate.
#[derive(Clone)]
pub struct Circuit {
    inner: Arc<(Mutex<State>, Condvar)>,
    /// Pauses after account problems (an operator must act: long).
    account: Backoff,
    /// Pauses after outages (Twilio comes back by itself: short).
    outage: Backoff,
}

#[derive(Default)]
struct State {
    /// `Some` while open or half-open.
    open_until: Option<Instant>,
    /// How many times in a row the gate opened (drives the pause length).
    trips: u32,
    /// A probe is in flight (half-open).
    probing: bool,
    /// Outage failures since the last sign of life.
    outage_failures: u32,
    /// The first message of that run, to tell one bad message from an outage.
    first_failed: Option<MessageId>,
    /// Whether the run spans more than one message.
    several_messages: bool,
}

/// What a thread got from [`Circuit::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Go ahead.
    Closed,
    /// Go ahead as the single probe: report the outcome.
    Probe,
    /// Shutdown began while waiting.
    Shutdown,
    /// The deadline passed while the gate stayed open.
    Expired,
}

impl Circuit {
    /// A closed gate; pauses follow `account` or `outage` depending on the cause.
    pub fn new(account: Backoff, outage: Backoff) -> Circuit {
        Circuit {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            account,
            outage,
        }
    }

    /// Wait until sending is allowed (or shutdown).
    pub fn enter(&self, shutdown: &Shutdown) -> Pass {
        self.enter_until(shutdown, None)
    }

    /// Wait until sending is allowed, shutdown, or `deadline`.
    pub fn enter_until(&self, shutdown: &Shutdown, deadline: Option<Instant>) -> Pass {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        loop {
            if shutdown.is_triggered() {
                return Pass::Shutdown;
            }
            let now = Instant::now();
            if s.open_until.is_some() && deadline.is_some_and(|d| now >= d) {
                return Pass::Expired;
            }
            match s.open_until {
                None => return Pass::Closed,
                Some(until) if now >= until && !s.probing => {
                    s.probing = true;
                    return Pass::Probe;
                }
                Some(until) => {
                    // Re-check shutdown at least every 200 ms; wake early on state changes.
                    let wait = until
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1));
                    s = cv
                        .wait_timeout(s, wait.min(Duration::from_millis(200)))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Twilio answered in a way that shows it works: close the gate.
    pub fn record_ok(&self) {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        s.outage_failures = 0;
        s.first_failed = None;
        s.several_messages = false;
        if s.open_until.is_some() || s.probing {
            s.open_until = None;
            s.probing = false;
            s.trips = 0;
            cv.notify_all();
        }
    }

    /// Our account or configuration is refused: open (or re-open) the gate. Returns the pause.
    pub fn trip(&self) -> Duration {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        let pause = Self::open(&mut s, &self.account);
        cv.notify_all();
        pause
    }

    fn open(s: &mut State, backoff: &Backoff) -> Duration {
        let pause = backoff.delay(s.trips);
        s.trips = s.trips.saturating_add(1);
        s.open_until = Some(Instant::now() + pause);
        s.probing = false;
        pause
    }

    /// Count an outage failure of `message`. Returns the pause when the gate is (now) open,
    /// `None` while it stays closed.
    pub fn record_outage(&self, message: &MessageId) -> Option<Duration> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        if s.probing || s.open_until.is_some() {
            // A failed probe (or a straggler while open): stay open, for longer.
            let pause = Self::open(&mut s, &self.outage);
            cv.notify_all();
            return Some(pause);
        }
        s.outage_failures = s.outage_failures.saturating_add(1);
        match &s.first_failed {
            None => s.first_failed = Some(message.clone()),
            Some(first) if first != message => s.several_messages = true,
            Some(_) => {}
        }
        if s.outage_failures >= OUTAGE_THRESHOLD && s.several_messages {
            let pause = Self::open(&mut s, &self.outage);
            cv.notify_all();
            return Some(pause);
        }
        None
    }

    /// The probe ended without telling anything either way (e.g. shutdown): let another probe.
    pub fn abandon_probe(&self) {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        s.probing = false;
        cv.notify_all();
    }

    /// Whether the gate is open or half-open.
    pub fn is_open(&self) -> bool {
        self.inner.0.locked().open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(ms: u64) -> Circuit {
        let b = Backoff::new(Duration::from_millis(ms), Duration::from_secs(5), false);
        Circuit::new(b, b)
    }

    fn id(n: u32) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).unwrap()
    }

    #[test]
    fn one_message_failing_alone_never_opens_it() {
        let c = circuit(50);
        for _ in 0..20 {
            assert_eq!(c.record_outage(&id(1)), None);
        }
        assert!(!c.is_open());
    }

    #[test]
    fn an_outage_over_several_messages_opens_it_and_a_success_closes_it() {
        let c = circuit(50);
        for n in 1..OUTAGE_THRESHOLD {
            assert_eq!(c.record_outage(&id(n)), None, "failure {n}");
        }
        assert_eq!(c.record_outage(&id(9)), Some(Duration::from_millis(50)));
        assert!(c.is_open());
        let s = Shutdown::new();
        assert_eq!(c.enter(&s), Pass::Probe);
        assert_eq!(
            c.record_outage(&id(9)),
            Some(Duration::from_millis(100)),
            "failed probe: longer"
        );
        assert_eq!(
            c.enter_until(&s, Some(Instant::now() + Duration::from_millis(20))),
            Pass::Expired
        );
        assert_eq!(c.enter(&s), Pass::Probe);
        c.record_ok();
        assert!(!c.is_open());
        assert_eq!(c.enter(&s), Pass::Closed);
        for n in 1..OUTAGE_THRESHOLD {
            assert_eq!(
                c.record_outage(&id(n)),
                None,
                "the count restarted after the success"
            );
        }
    }

    #[test]
    fn closed_lets_everyone_through() {
        let c = circuit(50);
        assert_eq!(c.enter(&Shutdown::new()), Pass::Closed);
        assert!(!c.is_open());
    }

    #[test]
    fn open_blocks_then_admits_exactly_one_probe() {
        let c = circuit(150);
        let s = Shutdown::new();
        assert_eq!(c.trip(), Duration::from_millis(150));
        let t = Instant::now();
        assert_eq!(c.enter(&s), Pass::Probe);
        assert!(
            t.elapsed() >= Duration::from_millis(140),
            "waited for the pause"
        );
        let other = {
            let (c, s) = (c.clone(), s.clone());
            std::thread::spawn(move || c.enter(&s))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !other.is_finished(),
            "a second thread waits while the probe runs"
        );
        c.record_ok();
        assert_eq!(other.join().unwrap(), Pass::Closed);
    }

    #[test]
    fn failed_probes_double_the_pause_and_shutdown_releases_waiters() {
        let c = circuit(100);
        assert_eq!(c.trip(), Duration::from_millis(100));
        assert_eq!(c.trip(), Duration::from_millis(200));
        let s = Shutdown::new();
        let waiter = {
            let (c, s) = (c.clone(), s.clone());
            std::thread::spawn(move || c.enter(&s))
        };
        s.trigger();
        assert_eq!(waiter.join().unwrap(), Pass::Shutdown);
    }
}
