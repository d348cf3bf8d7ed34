//! Keeping a claim alive while its sender waits (for a sibling with the same text, a ticket, a
//! backoff, the settle window): the lease is renewed by a fenced write before it runs low, so a
//! row is never `sending` under a lease that ended while this thread still holds it.

use std::time::{Duration, Instant, SystemTime};

use log::{trace, warn};

use super::{Job, Pipeline, Stop, RENEW_ATTEMPTS};
use crate::delivery::in_flight::ConversationGuard;
use crate::delivery::ticket::{NoTicket, Ticket};
use crate::supabase::rest::RestError;

impl Pipeline {
    /// Wait for the (recipient, text) pair, renewing the lease meanwhile.
    pub(super) fn wait_for_pair(&self, job: &mut Job<'_>) -> Result<ConversationGuard, Stop> {
        loop {
            let until = job.lease.last_start(self.renew_below());
            if let Some(pair) =
                self.in_flight
                    .lock_conversation(job.to, &job.message.body, until, &self.shutdown)
            {
                return Ok(pair);
            }
            if self.shutdown.is_triggered() {
                return Err(Stop::Shutdown);
            }
            self.keep(job)?;
        }
    }

    /// A ticket for the next attempt of a claimed message, renewing the lease while waiting.
    pub(super) fn ticket_within_lease<'p>(&'p self, job: &mut Job<'_>) -> Result<Ticket<'p>, Stop> {
        loop {
            let latest = job.lease.last_start(self.renew_below());
            match self.gates().ticket(Some(latest)) {
                Ok(ticket) => return Ok(ticket),
                Err(NoTicket::Shutdown) => return Err(Stop::Shutdown),
                Err(NoTicket::Late) => self.keep(job)?,
            }
        }
    }

    /// Wait `delay`, renewing the lease whenever it runs low.
    pub(super) fn pause(&self, job: &mut Job<'_>, delay: Duration) -> Result<(), Stop> {
        let end = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let renew_at = job.lease.last_start(self.renew_below());
            let wake = end.min(renew_at.max(now + Duration::from_millis(10)));
            if !self.shutdown.sleep(wake - now) {
                return Err(Stop::Shutdown);
            }
            self.keep(job)?;
        }
    }

    /// Renew the lease if it runs low. `Err(Lost)`: the row is not this claim's any more;
    /// `Err(Lapsed)`: REST cannot renew it and too little is left for a request.
    pub(super) fn keep(&self, job: &mut Job<'_>) -> Result<(), Stop> {
        if job.lease.remaining(Instant::now()) >= self.renew_below() {
            return Ok(());
        }
        match self.renew(job) {
            Ok(()) => Ok(()),
            Err(Stop::Lapsed) if job.lease.can_start(self.request_budget, Instant::now()) => Ok(()),
            Err(stop) => Err(stop),
        }
    }

    /// Move the claim to a new lease with a fenced write. A write whose answer was lost is
    /// checked by reading the row's stamp.
    pub(super) fn renew(&self, job: &mut Job<'_>) -> Result<(), Stop> {
        let id = job.id().clone();
        for attempt in 0..RENEW_ATTEMPTS {
            let next = job.lease.renewal(Instant::now(), SystemTime::now());
            let result = match self.rest.restamp(&id, job.lease.stamp(), next.stamp()) {
                Err(RestError::Transport(e)) => {
                    // Maybe applied: the row tells.
                    match self.rest.holds(&id, next.stamp()) {
                        Ok(true) => Ok(true),
                        Ok(false) => self.rest.holds(&id, job.lease.stamp()).and_then(|old| {
                            if old {
                                Err(RestError::Transport(e))
                            } else {
                                Ok(false)
                            }
                        }),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match result {
                Ok(true) => {
                    job.held.restamp(next.stamp());
                    job.lease = next;
                    self.metrics.lease_renewed();
                    trace!("message {id}: lease renewed to {}", job.lease.stamp());
                    return Ok(());
                }
                Ok(false) => {
                    warn!(
                        "message {id}: its claim no longer holds the row (settled or taken by \
                         another instance); this instance lets it go"
                    );
                    return Err(Stop::Lost);
                }
                Err(e) => {
                    warn!(
                        "message {id}: lease renewal attempt {} failed: {e}",
                        attempt + 1
                    );
                    if !self.shutdown.sleep(self.persist_backoff.delay(attempt)) {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
        Err(Stop::Lapsed)
    }
}
