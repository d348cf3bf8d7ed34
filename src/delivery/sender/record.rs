//! The sender's database writes after the claim: `sent` with the SID (retried until it applies,
//! never dropped), `failed`, and the release back to `queued_for_send`. Every write is fenced on
//! the claim's current stamp, so a row claimed again meanwhile is never touched.

use std::time::SystemTime;

use log::{debug, error, info, warn};

use super::{Job, Pipeline, PERSIST_ATTEMPTS, REFUSED_SENT_ATTEMPTS};
use crate::delivery::reconcile::Found;
use crate::delivery::unrecorded::Fact;
use crate::message::MessageId;
use crate::ops::metrics::Outcome;
use crate::supabase::rest::{Fence, RestError};
use crate::timestamp;

impl Pipeline {
    /// Put a message that certainly was not sent back to `queued_for_send`.
    pub(super) fn release(&self, job: &Job<'_>, why: &str) {
        let id = job.id();
        if self.persist(id, "release", || self.rest.release(id, job.fence())) {
            info!("message {id} released back to queued_for_send ({why})");
        }
    }

    /// Record a message Twilio turned out to have created after an ambiguous failure.
    pub(super) fn adopt(&self, job: &Job<'_>, found: &Found) {
        let id = job.id();
        if found.recorded {
            info!("message {id} is already recorded as {}", found.sid);
            return;
        }
        info!(
            "message {id} had been created by Twilio as {} despite the failed attempt; \
             recording it, not sending again",
            found.sid
        );
        self.record_sent(job, &found.sid, found.created);
    }

    /// Record `failed`.
    pub(super) fn record_failed(&self, id: &MessageId, fence: Fence<'_>) {
        if self.persist(id, "record failed", || self.rest.mark_failed(id, fence)) {
            self.metrics.message(Outcome::Failed);
        }
    }

    /// Record `sent` with the SID Twilio gave. A known SID is never dropped: the write is retried
    /// until it applies; one PostgREST refuses for good goes to [`Unrecorded`] after a few tries
    /// (this thread and the hold are freed). A write whose answer was lost is checked by reading
    /// the row back, so the log never claims a loss that did not happen.
    pub(super) fn record_sent(&self, job: &Job<'_>, sid: &str, at: SystemTime) {
        let id = job.id();
        let sent_at = timestamp::rfc3339_millis(at);
        let mut attempt = 0u32;
        let mut refused = 0u32;
        loop {
            match self.rest.mark_sent(id, job.fence(), sid, &sent_at) {
                Ok(true) => break,
                Ok(false) => {
                    // An earlier try applied and its answer was lost, or a delivery receipt
                    // (which names the row) recorded the SID first.
                    if self.records(id, sid) {
                        break;
                    }
                    if self.shutdown.is_triggered() {
                        error!(
                            "message {id} WAS SENT as {sid} after its claim was handed over at \
                             shutdown; the successor records it from Twilio's list"
                        );
                    } else {
                        error!(
                            "message {id} WAS SENT as {sid} but its row was claimed again \
                             meanwhile; it is not overwritten"
                        );
                    }
                    return;
                }
                Err(e) if is_refusal(&e) => {
                    refused += 1;
                    error!(
                        "message {id} was sent as {sid}; Supabase refuses to record it (attempt \
                         {refused}/{REFUSED_SENT_ATTEMPTS}): {e}"
                    );
                    if refused >= REFUSED_SENT_ATTEMPTS {
                        self.unrecorded.keep(Fact {
                            id: id.clone(),
                            sid: sid.to_string(),
                            sent_at,
                            stamp: job.lease.stamp().to_string(),
                        });
                        return;
                    }
                    std::thread::sleep(self.persist_backoff.delay(attempt));
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => {
                    error!(
                        "message {id} was sent as {sid}; recording it failed (attempt {}): {e}; \
                         retrying",
                        attempt + 1
                    );
                    std::thread::sleep(self.persist_backoff.delay(attempt));
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        self.metrics.message(Outcome::Sent);
    }

    /// Whether row `id` records `sid` (false when that cannot be read).
    pub(super) fn records(&self, id: &MessageId, sid: &str) -> bool {
        matches!(self.rest.recorded_sid(id), Ok(Some(s)) if s == sid)
    }

    /// Run a fenced database write until it succeeds (or attempts run out). `true` when written
    /// (the claim still held the row).
    pub(super) fn persist(
        &self,
        id: &MessageId,
        what: &str,
        write: impl Fn() -> Result<bool, RestError>,
    ) -> bool {
        for attempt in 0..PERSIST_ATTEMPTS {
            match write() {
                Ok(true) => return true,
                Ok(false) => {
                    debug!(
                        "message {id}: {what}: the claim no longer holds the row; left as it is"
                    );
                    return false;
                }
                Err(e) => {
                    warn!("message {id}: {what} attempt {} failed: {e}", attempt + 1);
                    // Not cut short by shutdown: finishing this write is part of finishing the
                    // in-flight work; the shutdown deadline bounds it.
                    std::thread::sleep(self.persist_backoff.delay(attempt));
                }
            }
        }
        warn!("message {id}: {what} did not apply; orphan recovery will settle the row");
        false
    }
}

/// Whether a REST error is PostgREST refusing the write for good (a 4xx other than a timeout
/// or rate limit): retrying at once will not change it.
fn is_refusal(error: &RestError) -> bool {
    matches!(error, RestError::Status { status, .. }
        if (400..500).contains(status) && *status != 408 && *status != 429)
}
