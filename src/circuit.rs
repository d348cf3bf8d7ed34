//! The gate every sender thread passes before claiming or sending: open when Twilio cannot take
//! any message (wrong credentials, wrong URL), so messages stay queued instead of each one being
//! burned into `failed`.
//!
//! States: closed (send freely) → open (nobody sends until `open_until`) → half-open (exactly
//! one thread probes with a real message; the others keep waiting) → closed on any answer that
//! shows the account works, or open again for twice as long. Delays follow [`Backoff`].

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// The shared gate.
#[derive(Clone)]
pub struct Circuit {
    inner: Arc<(Mutex<State>, Condvar)>,
    backoff: Backoff,
}

#[derive(Default)]
struct State {
    /// `Some` while open or half-open.
    open_until: Option<Instant>,
    /// How many times in a row the gate opened (drives the pause length).
    trips: u32,
    /// A probe is in flight (half-open).
    probing: bool,
}

/// What a thread got from [`Circuit::enter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// Go ahead.
    Closed,
    /// Go ahead as the single probe: report the outcome.
    Probe,
    /// Shutdown began while waiting.
    Shutdown,
}

impl Circuit {
    /// A closed gate whose pauses follow `backoff`.
    pub fn new(backoff: Backoff) -> Circuit {
        Circuit {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            backoff,
        }
    }

    /// Wait until sending is allowed (or shutdown).
    pub fn enter(&self, shutdown: &Shutdown) -> Pass {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if shutdown.is_triggered() {
                return Pass::Shutdown;
            }
            let now = Instant::now();
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

    /// Twilio answered in a way that shows the account works: close the gate.
    pub fn record_ok(&self) {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        if s.open_until.is_some() || s.probing {
            s.open_until = None;
            s.probing = false;
            s.trips = 0;
            cv.notify_all();
        }
    }

    /// Nothing can be sent for now: open (or re-open) the gate. Returns the pause length.
    pub fn trip(&self) -> Duration {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        let pause = self.backoff.delay(s.trips);
        s.trips = s.trips.saturating_add(1);
        s.open_until = Some(Instant::now() + pause);
        s.probing = false;
        cv.notify_all();
        pause
    }

    /// The probe ended without telling anything either way (e.g. shutdown): let another probe.
    pub fn abandon_probe(&self) {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.probing = false;
        cv.notify_all();
    }

    /// Whether the gate is open or half-open.
    pub fn is_open(&self) -> bool {
        self.inner
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open_until
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(ms: u64) -> Circuit {
        Circuit::new(Backoff::new(
            Duration::from_millis(ms),
            Duration::from_secs(5),
            false,
        ))
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
