//! Permission to start one create now: the circuit's pass, a pacer slot and a concurrency permit,
//! taken in that order. A row is claimed only once its sender holds a ticket, so a crash strands
//! only the rows whose creates were really in flight.
//!
//! Invariant: a probe pass of the circuit is always answered. A ticket dropped without
//! [`Ticket::reported`] gives the probe back, so a half-open circuit never waits for a probe
//! that will not come.

use std::time::Instant;

use crate::delivery::circuit::{Circuit, Pass, ProbePass};
use crate::delivery::concurrency::{Limiter, Permit};
use crate::delivery::pacer::{Pacer, Slot};
use crate::shutdown::Shutdown;

/// What a create needs in hand before it starts.
pub struct Ticket<'a> {
    /// When this create is the circuit's single probe: its outcome must be reported.
    probe: Option<ProbePass<'a>>,
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

impl<'a> Gates<'a> {
    /// Wait for a ticket, at most until `latest` (`None`: as long as it takes).
    pub fn ticket(&self, latest: Option<Instant>) -> Result<Ticket<'a>, NoTicket> {
        // A probe pass not handed on in a ticket gives itself back when dropped.
        let probe = match self.circuit.enter_until(self.shutdown, latest) {
            Pass::Shutdown => return Err(NoTicket::Shutdown),
            Pass::Expired => return Err(NoTicket::Late),
            Pass::Probe(pass) => Some(pass),
            Pass::Closed => None,
        };
        match self.pacer.wait_until(self.shutdown, latest) {
            Slot::Go => {}
            Slot::Shutdown => return Err(NoTicket::Shutdown),
            Slot::TooLate => return Err(NoTicket::Late),
        }
        match self.limiter.acquire(self.shutdown, latest) {
            Some(permit) => Ok(Ticket {
                probe,
                _permit: permit,
            }),
            None if self.shutdown.is_triggered() => Err(NoTicket::Shutdown),
            None => Err(NoTicket::Late),
        }
    }
}

impl Ticket<'_> {
    /// The create's outcome was reported to the circuit (`record_ok`, `trip`, `record_outage`):
    /// nothing to give back. Frees the concurrency place.
    pub fn reported(self) {
        if let Some(probe) = self.probe {
            probe.reported();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{Backoff, Jitter};
    use std::time::Duration;

    /// The gates' parts: a circuit whose pauses last 1 ms (the shortest), no rate limit, `max`
    /// creates.
    struct Parts(Circuit, Pacer, Limiter, Shutdown);

    impl Parts {
        fn new(max: usize) -> Parts {
            let b = Backoff::new(Duration::ZERO, Duration::ZERO, Jitter::None);
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
        // The circuit's own wait: its pause is 1 ms.
        let first = gates.ticket(None).expect("the probe");
        assert!(first.probe.is_some());
        drop(first);
        let second = gates.ticket(None);
        assert!(
            matches!(second, Ok(ref t) if t.probe.is_some()),
            "probe given back"
        );
        second.unwrap().reported();
    }

    #[test]
    fn tickets_are_bounded_by_the_limiter_and_the_deadline() {
        let parts = Parts::new(1);
        let (gates, c, l, s) = (parts.gates(), &parts.0, &parts.2, &parts.3);
        let held: Vec<Ticket<'_>> = (0..l.limit())
            .map(|_| gates.ticket(None).unwrap())
            .collect();
        // A deadline already past: no wait for the limiter.
        let late = gates.ticket(Some(Instant::now()));
        assert_eq!(late.err(), Some(NoTicket::Late));
        drop(held);
        assert!(gates.ticket(Some(Instant::now())).is_ok());
        s.trigger();
        c.trip();
        assert_eq!(gates.ticket(None).err(), Some(NoTicket::Shutdown));
    }
}
