//! Settling an ambiguous attempt (timeout, cut connection, 5xx: Twilio may have created the
//! message): nothing is sent again until Twilio's list has answered after the settle window; the
//! thread keeps the row and its (recipient, text) hold until then, or hands the claim over at
//! shutdown so a successor settles it.

use std::ops::ControlFlow::{self, Break, Continue};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use super::{Job, Pipeline, Settled, Stop};
use crate::backoff::{Backoff, Jitter};
use crate::delivery::handover;
use crate::delivery::reconcile::{self, Found, Look, Question, Window, CLOCK_SLACK};
use crate::timestamp;

/// Pause between looks at Twilio's list while it cannot answer: 1 s doubling to 30 s.
fn lookup_backoff() -> Backoff {
    Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Jitter::Spread,
    )
}

impl Pipeline {
    /// Settle an unresolved ambiguous attempt, if any. `Continue`: nothing was created (or no
    /// attempt was ambiguous), the work goes on. `Break(Some(found))`: Twilio has it, to be
    /// adopted; `Break(None)`: the work stopped (handed over or the claim lost; all logged).
    pub(super) fn settle_earlier(&self, job: &mut Job<'_>) -> ControlFlow<Option<Found>> {
        if job.ambiguous_at.is_none() {
            return Continue(());
        }
        match self.settle(job) {
            Settled::Found(found) => Break(Some(found)),
            Settled::NotCreated => {
                debug!(
                    "message {}: Twilio did not create it on the earlier attempt",
                    job.id()
                );
                job.ambiguous_at = None;
                Continue(())
            }
            Settled::Stopped => Break(None),
        }
    }

    /// Settle an ambiguous attempt: look at Twilio's list until it answers — renewing the lease
    /// and keeping the row and its (recipient, text) hold meanwhile — or shutdown (hand-over).
    pub(super) fn settle(&self, job: &mut Job<'_>) -> Settled {
        let Some(ambiguous_at) = job.ambiguous_at else {
            return Settled::NotCreated;
        };
        let settled_at = ambiguous_at + self.settle;
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_triggered() {
                return self.hand_over(job);
            }
            match self.keep(job) {
                Ok(()) => {}
                Err(Stop::Shutdown) => continue,
                Err(Stop::Lost) => return Settled::Stopped,
                Err(Stop::Lapsed) => {
                    // No Twilio request without a lease; the renewal is tried again shortly.
                    failures = failures.saturating_add(1);
                    if self.shutdown.sleep(lookup_backoff().delay(failures - 1)) {
                        continue;
                    }
                    return self.hand_over(job);
                }
            }
            let window = if Instant::now() >= settled_at {
                Window::Passed
            } else {
                Window::Open
            };
            let pause = match self.look(job, window) {
                Look::Found(found) => return Settled::Found(found),
                Look::NotFound => return Settled::NotCreated,
                Look::NotYet => settled_at.saturating_duration_since(Instant::now()),
                Look::Unknown(reason) => {
                    failures = failures.saturating_add(1);
                    warn!(
                        "message {}: cannot tell yet whether it was sent: {reason}; keeping it",
                        job.id()
                    );
                    lookup_backoff().delay(failures - 1)
                }
            };
            match self.pause(job, pause) {
                Ok(()) | Err(Stop::Shutdown) | Err(Stop::Lapsed) => {}
                Err(Stop::Lost) => return Settled::Stopped,
            }
        }
    }

    /// One look at whether the ambiguous attempt created the message.
    pub(super) fn look(&self, job: &Job<'_>, window: Window) -> Look {
        // A delivery receipt (which names the row) may have recorded the SID meanwhile. (A
        // previous attempt's SID is never read here: `recorded_sid` skips `sending` rows.)
        if let Ok(Some(sid)) = self.rest.recorded_sid(job.id()) {
            return Look::Found(Found {
                sid,
                created: SystemTime::now(),
                recorded: true,
            });
        }
        let question = Question {
            id: job.id(),
            to: job.to,
            body: &job.message.body,
            since: timestamp::saturating_sub(job.lease.claimed_at(), CLOCK_SLACK),
            window,
            previous_sid: job.message.previous_sid.as_deref(),
            unrecorded: &self.unrecorded,
        };
        let budget = self.request_budget;
        reconcile::look(&self.twilio, &self.rest, &question, &|| {
            job.lease.can_start(budget, Instant::now())
        })
    }

    /// Shutdown with an ambiguous attempt unresolved: one last look if the lease allows, then end
    /// the claim now so that a successor settles it after the settle window.
    pub(super) fn hand_over(&self, job: &mut Job<'_>) -> Settled {
        let id = job.id().clone();
        if let Some(at) = job.ambiguous_at {
            if at.elapsed() >= self.settle
                && job.lease.can_start(self.request_budget, Instant::now())
            {
                match self.look(job, Window::Passed) {
                    Look::Found(found) => return Settled::Found(found),
                    Look::NotFound => {
                        job.ambiguous_at = None;
                        self.release(job, "shutdown");
                        return Settled::Stopped;
                    }
                    Look::NotYet | Look::Unknown(_) => {}
                }
            }
        }
        match handover::end_now(&self.rest, &id, &job.lease) {
            Ok(true) => {
                self.metrics.handed_over();
                info!(
                    "message {id} may have been sent and Twilio cannot tell yet; handed over \
                     at shutdown (a successor settles it after the settle window)"
                );
            }
            Ok(false) => debug!("message {id}: settled meanwhile; nothing to hand over"),
            Err(e) => warn!(
                "message {id} may have been sent; it could not be handed over ({e}): it stays \
                 'sending' until its lease ends at {}, then orphan recovery settles it",
                job.lease.stamp()
            ),
        }
        Settled::Stopped
    }
}
