//! Permission to start one create now: the circuit's pass, a pacer slot and a concurrency permit,
//! taken in that order. A row is claimed only once its sender holds a ticket, so a crash strands
//! only the rows whose creates were really in flight.
//!
//! Invariant: a probe pass of the circuit is always answered. A ticket dropped without
//! [`Ticket::reported`] gives the probe back, so a half-open circuit never waits for a probe
//! that will not come.

use std::time::{Duration, Instant};

use crate::delivery::circuit::{Circuit, Pass};
use crate::delivery::concurrency::{Limiter, Permit};
use crate::delivery::pacer::{Pacer, Slot};
use crate::shutdown::Shutdown;

/// What a create needs in hand before it starts.
pub struct Ticket<'a> {
    circuit: &'a Circuit,
    /// This create is the circuit's single probe: its outcome must be reported.
    probe: bool,
    /// The place among the creates in flight; freed when the ticket drops.
    _permit: Permit<'a>,
}

/// Why no ticket was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTicket {
    /// Shutdown began while waiting.
    Shutdown,
    /// Not available by the caller's deadline.
    Late,
}

/// The gates a ticket passes, in order.
pub struct Gates<'a> {
    /// The pause gate (outages, account problems).
    pub circuit: &'a Circuit,
    /// `MAX_SENDS_PER_SECOND`.
    pub pacer: &'a Pacer,
    /// Creates in flight at once.
    pub limiter: &'a Limiter,
    /// Stop waiting.
    pub shutdown: &'a Shutdown,
}

/// Far enough to mean "no deadline" for the limiter, which takes an instant.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

impl<'a> Gates<'a> {
    /// Wait for a ticket, at most until `latest` (`None`: as long as it takes).
    pub fn ticket(&self, latest: Option<Instant>) -> Result<Ticket<'a>, NoTicket> {
        let probe = match self.circuit.enter_until(self.shutdown, latest) {
            Pass::Shutdown => return Err(NoTicket::Shutdown),
            Pass::Expired => return Err(NoTicket::Late),
            Pass::Probe => true,
            Pass::Closed => false,
        };
        let give_back = |why| {
            if probe {
                self.circuit.abandon_probe();
            }
            Err(why)
        };
        match self.pacer.wait_until(self.shutdown, latest) {
            Slot::Go => {}
            Slot::Shutdown => return give_back(NoTicket::Shutdown),
            Slot::TooLate => return give_back(NoTicket::Late),
        }
        let until = latest.unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        match self.limiter.acquire(self.shutdown, until) {
            Some(permit) => Ok(Ticket {
                circuit: self.circuit,
                probe,
                _permit: permit,
            }),
            None if self.shutdown.is_triggered() => give_back(NoTicket::Shutdown),
            None => give_back(NoTicket::Late),
        }
    }
}

impl Ticket<'_> {
    /// The create's outcome was reported to the circuit (`record_ok`, `trip`, `record_outage`):
    /// nothing to give back. Frees the concurrency place.
    pub fn reported(mut self) {
        self.probe = false;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.circuit.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;

    /// The gates' parts: a circuit whose pauses last 50 ms, no rate limit, `max` creates.
    struct Parts(Circuit, Pacer, Limiter, Shutdown);

    impl Parts {
        fn new(max: usize) -> Parts {
            let b = Backoff::new(Duration::from_millis(50), Duration::from_millis(50), false);
            Parts(
                Circuit::new(b, b),
                Pacer::new(None),
                Limiter::new(max),
                Shutdown::new(),
            )
        }

        fn gates(&self) -> Gates<'_> {
            Gates {
                circuit: &self.0,
                pacer: &self.1,
                limiter: &self.2,
                shutdown: &self.3,
            }
        }
    }

    #[test]
    fn a_dropped_probe_ticket_lets_the_next_thread_probe() {
        let parts = Parts::new(4);
        let (gates, c) = (parts.gates(), &parts.0);
        c.trip();
        std::thread::sleep(Duration::from_millis(60));
        let first = gates.ticket(None).expect("the probe");
        assert!(first.probe);
        drop(first);
        let second = gates.ticket(Some(Instant::now() + Duration::from_millis(100)));
        assert!(matches!(second, Ok(ref t) if t.probe), "probe given back");
        second.unwrap().reported();
    }

    #[test]
    fn tickets_are_bounded_by_the_limiter_and_the_deadline() {
        let parts = Parts::new(1);
        let (gates, c, l, s) = (parts.gates(), &parts.0, &parts.2, &parts.3);
        let held: Vec<Ticket<'_>> = (0..l.limit())
            .map(|_| gates.ticket(None).unwrap())
            .collect();
        let late = gates.ticket(Some(Instant::now() + Duration::from_millis(50)));
        assert_eq!(late.err(), Some(NoTicket::Late));
        drop(held);
        assert!(gates.ticket(Some(Instant::now())).is_ok());
        s.trigger();
        c.trip();
        assert_eq!(gates.ticket(None).err(), Some(NoTicket::Shutdown));
    }
}
