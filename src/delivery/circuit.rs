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
pub enum Pass<'a> {
    /// Go ahead.
    Closed,
    /// Go ahead as the single probe: report the outcome.
    Probe(ProbePass<'a>),
    /// Shutdown began while waiting.
    Shutdown,
    /// The deadline passed while the gate stayed open.
    Expired,
}

/// The half-open circuit's single probe. Its outcome is reported to the circuit
/// ([`Circuit::record_ok`], [`Circuit::trip`], [`Circuit::record_outage`]) and then
/// [`ProbePass::reported`]; dropped unreported (shutdown, no slot in time, an early return), it
/// gives the probe back so another thread can probe. So a half-open circuit never waits for a
/// probe that will not come, whichever way its holder leaves.
pub struct ProbePass<'a> {
    circuit: &'a Circuit,
    armed: bool,
}

impl ProbePass<'_> {
    /// The probe's outcome was reported to the circuit: nothing to give back.
    pub fn reported(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbePass<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.circuit.abandon_probe();
        }
    }
}

/// What the state allows a thread arriving at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Closed: go.
    Go,
    /// Half-open and nobody probes: this thread is the probe.
    Probe,
    /// Open (or a probe is out): wait at most this long, then ask again.
    Wait(Duration),
    /// Still open at the caller's deadline.
    Expired,
}

impl State {
    /// Who may pass at `now`; a thread told [`Admit::Probe`] is the probe from then on.
    fn admit(&mut self, now: Instant, deadline: Option<Instant>) -> Admit {
        let Some(until) = self.open_until else {
            return Admit::Go;
        };
        if deadline.is_some_and(|d| now >= d) {
            return Admit::Expired;
        }
        if now < until {
            return Admit::Wait(until - now);
        }
        if self.probing {
            // Until the probe's outcome (or its giving back) wakes the waiters.
            return Admit::Wait(RECHECK);
        }
        self.probing = true;
        Admit::Probe
    }

    /// Twilio answered in a way that shows it works. Returns whether the gate was open.
    fn record_ok(&mut self) -> bool {
        self.outage_failures = 0;
        self.first_failed = None;
        self.several_messages = false;
        let was_open = self.open_until.is_some() || self.probing;
        if was_open {
            self.open_until = None;
            self.probing = false;
            self.trips = 0;
        }
        was_open
    }

    /// Open (or re-open) the gate at `now` for the next pause of `backoff`; returns it.
    fn open(&mut self, now: Instant, backoff: &Backoff) -> Duration {
        let pause = backoff.delay(self.trips);
        self.trips = self.trips.saturating_add(1);
        self.open_until = Some(now + pause);
        self.probing = false;
        pause
    }

    /// Count an outage failure of `message` at `now`; the pause when the gate is (now) open.
    fn record_outage(
        &mut self,
        message: &MessageId,
        now: Instant,
        backoff: &Backoff,
    ) -> Option<Duration> {
        if self.probing || self.open_until.is_some() {
            // A failed probe (or a straggler while open): stay open, for longer.
            return Some(self.open(now, backoff));
        }
        self.outage_failures = self.outage_failures.saturating_add(1);
        match &self.first_failed {
            None => self.first_failed = Some(message.clone()),
            Some(first) if first != message => self.several_messages = true,
            Some(_) => {}
        }
        (self.outage_failures >= OUTAGE_THRESHOLD && self.several_messages)
            .then(|| self.open(now, backoff))
    }
}

/// How long a waiting thread sleeps at most before it looks at shutdown again (state changes
/// wake it at once).
const RECHECK: Duration = Duration::from_millis(200);

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
    pub fn enter(&self, shutdown: &Shutdown) -> Pass<'_> {
        self.enter_until(shutdown, None)
    }

    /// Wait until sending is allowed, shutdown, or `deadline`.
    pub fn enter_until(&self, shutdown: &Shutdown, deadline: Option<Instant>) -> Pass<'_> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.locked();
        loop {
            if shutdown.is_triggered() {
                return Pass::Shutdown;
            }
            match s.admit(Instant::now(), deadline) {
                Admit::Go => return Pass::Closed,
                Admit::Probe => {
                    return Pass::Probe(ProbePass {
                        circuit: self,
                        armed: true,
                    })
                }
                Admit::Expired => return Pass::Expired,
                Admit::Wait(wait) => {
                    let wait = wait.clamp(Duration::from_millis(1), RECHECK);
                    s = cv
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Twilio answered in a way that shows it works: close the gate.
    pub fn record_ok(&self) {
        let (lock, cv) = &*self.inner;
        if lock.locked().record_ok() {
            cv.notify_all();
        }
    }

    /// Our account or configuration is refused: open (or re-open) the gate. Returns the pause.
    pub fn trip(&self) -> Duration {
        let (lock, cv) = &*self.inner;
        let pause = lock.locked().open(Instant::now(), &self.account);
        cv.notify_all();
        pause
    }

    /// Count an outage failure of `message`. Returns the pause when the gate is (now) open,
    /// `None` while it stays closed.
    pub fn record_outage(&self, message: &MessageId) -> Option<Duration> {
        let (lock, cv) = &*self.inner;
        let pause = lock
            .locked()
            .record_outage(message, Instant::now(), &self.outage);
        if pause.is_some() {
            cv.notify_all();
        }
        pause
    }

    /// The probe ended without telling anything either way: let another probe.
    fn abandon_probe(&self) {
        let (lock, cv) = &*self.inner;
        lock.locked().probing = false;
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
    use crate::backoff::Jitter;

    fn backoff(ms: u64) -> Backoff {
        Backoff::new(
            Duration::from_millis(ms),
            Duration::from_secs(5),
            Jitter::None,
        )
    }

    fn id(n: u32) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_message_failing_alone_never_opens_it() {
        let (mut s, t0, b) = (State::default(), Instant::now(), backoff(50));
        for _ in 0..20 {
            assert_eq!(s.record_outage(&id(1), t0, &b), None);
        }
        assert_eq!(s.admit(t0, None), Admit::Go);
    }

    #[test]
    fn an_outage_over_several_messages_opens_it_and_a_success_closes_it() {
        let (mut s, t0, b) = (State::default(), Instant::now(), backoff(50));
        for n in 1..OUTAGE_THRESHOLD {
            assert_eq!(s.record_outage(&id(n), t0, &b), None, "failure {n}");
        }
        assert_eq!(s.record_outage(&id(9), t0, &b), Some(ms(50)));
        assert_eq!(s.admit(t0 + ms(10), None), Admit::Wait(ms(40)));
        assert_eq!(s.admit(t0 + ms(10), Some(t0 + ms(10))), Admit::Expired);
        assert_eq!(s.admit(t0 + ms(50), None), Admit::Probe);
        assert_eq!(
            s.record_outage(&id(9), t0 + ms(60), &b),
            Some(ms(100)),
            "failed probe: longer"
        );
        assert_eq!(s.admit(t0 + ms(159), None), Admit::Wait(ms(1)));
        assert_eq!(s.admit(t0 + ms(160), None), Admit::Probe);
        assert!(s.record_ok(), "the probe's success closes the gate");
        assert_eq!(s.admit(t0 + ms(161), None), Admit::Go);
        for n in 1..OUTAGE_THRESHOLD {
            assert_eq!(
                s.record_outage(&id(n), t0 + ms(170), &b),
                None,
                "the count restarted after the success"
            );
        }
    }

    #[test]
    fn open_admits_exactly_one_probe_at_a_time() {
        let (mut s, t0, b) = (State::default(), Instant::now(), backoff(150));
        assert_eq!(s.open(t0, &b), ms(150));
        assert_eq!(s.admit(t0 + ms(149), None), Admit::Wait(ms(1)));
        assert_eq!(s.admit(t0 + ms(150), None), Admit::Probe);
        assert_eq!(
            s.admit(t0 + ms(151), None),
            Admit::Wait(RECHECK),
            "a second thread waits while the probe runs"
        );
        s.probing = false; // the probe was given back
        assert_eq!(s.admit(t0 + ms(152), None), Admit::Probe);
    }

    #[test]
    fn each_trip_in_a_row_doubles_the_pause() {
        let (mut s, t0, b) = (State::default(), Instant::now(), backoff(100));
        assert_eq!(s.open(t0, &b), ms(100));
        assert_eq!(s.open(t0, &b), ms(200));
        assert!(s.record_ok());
        assert_eq!(s.open(t0, &b), ms(100), "a success resets the run");
    }

    #[test]
    fn a_probe_pass_dropped_unreported_lets_another_thread_probe() {
        let c = Circuit::new(backoff(1), backoff(1));
        let shutdown = Shutdown::new();
        c.trip();
        let Pass::Probe(probe) = c.enter(&shutdown) else {
            panic!("expected the probe")
        };
        drop(probe);
        let Pass::Probe(probe) = c.enter(&shutdown) else {
            panic!("the probe was given back")
        };
        c.record_ok();
        probe.reported();
        assert!(matches!(c.enter(&shutdown), Pass::Closed));
    }

    #[test]
    fn shutdown_releases_waiters() {
        let c = Circuit::new(backoff(60_000), backoff(60_000));
        c.trip();
        let s = Shutdown::new();
        let waiter = {
            let (c, s) = (c.clone(), s.clone());
            std::thread::spawn(move || matches!(c.enter(&s), Pass::Shutdown))
        };
        s.trigger();
        assert!(waiter.join().unwrap());
    }
}
