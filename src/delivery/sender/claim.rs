//! The claim: one atomic, fenced write that makes the row this instance's (`sending`, stamped
//! with the lease). A claim whose answer was lost is resolved by reading the row's stamp, never
//! by claiming blind a second time.

use std::time::Duration;

use log::{debug, info, warn};

use super::{Pipeline, CLAIM_ATTEMPTS};
use crate::delivery::lease::Lease;
use crate::message::{ClaimedMessage, MessageId};
use crate::ops::metrics::Outcome;
use crate::supabase::rest::{Claim, Fence, RestError};

/// How a claim (single or batch) has fared so far: attempts made, and whether one of them may
/// have applied with its answer lost.
#[derive(Debug, Default)]
pub(super) struct ClaimTries {
    attempt: u32,
    /// An attempt may have applied: the rows must be read back, never claimed blind again.
    pub(super) uncertain: bool,
}

/// What follows a failed claim attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// The wait is over: try again.
    Again,
    /// No attempt applied and they are used up: the message waits for a later sweep (logged).
    LeftQueued,
    /// Shutdown began during the wait.
    Shutdown,
}

impl Pipeline {
    /// Log a failed claim attempt for `id` and wait before the next one. Transient failures are
    /// retried a few times while the claim certainly did not apply; once it may have applied,
    /// until REST answers.
    pub(super) fn claim_failed(
        &self,
        id: &MessageId,
        tries: &mut ClaimTries,
        error: &RestError,
    ) -> AfterFailure {
        tries.uncertain |= !matches!(error, RestError::Connect(_));
        warn!(
            "message {id}: claim attempt {} failed: {error}",
            tries.attempt + 1
        );
        tries.attempt = tries.attempt.saturating_add(1);
        if !tries.uncertain && tries.attempt >= CLAIM_ATTEMPTS {
            warn!("message {id} left queued (no claim applied); a later sweep will pick it up");
            return AfterFailure::LeftQueued;
        }
        let delay = self
            .persist_backoff
            .delay(tries.attempt - 1)
            .min(Duration::from_secs(5));
        if self.shutdown.sleep(delay) {
            AfterFailure::Again
        } else {
            AfterFailure::Shutdown
        }
    }

    /// Claim `id` under `lease`. `None`: not ours to send (or it failed without sending).
    /// Transient REST failures are retried a few times while the claim certainly did not apply
    /// (then the message waits for the next sweep); once it may have applied (an answer lost),
    /// the row is read back by its stamp until REST answers — recognised as ours, or claimed
    /// afresh, or at shutdown given back with a fenced write.
    pub(super) fn claim(&self, id: &MessageId, lease: &Lease) -> Option<ClaimedMessage> {
        let mut tries = ClaimTries::default();
        loop {
            let result = if tries.uncertain {
                match self.rest.claimed_by(id, lease.stamp()) {
                    Ok(Claim::Lost) => self.rest.claim(id, lease.stamp()),
                    other => other,
                }
            } else {
                self.rest.claim(id, lease.stamp())
            };
            match result {
                Ok(Claim::Won(m)) => {
                    if tries.uncertain {
                        info!("message {id}: the claim whose answer was lost is ours; sending");
                    }
                    return Some(m);
                }
                Ok(Claim::Lost) => {
                    self.metrics.message(Outcome::Skipped);
                    debug!("message {id} already claimed or no longer queued; skipped");
                    return None;
                }
                Ok(Claim::Malformed { id, reason }) => {
                    warn!("message {id} failed without sending: {reason}");
                    self.record_failed(&id, Fence::Stamp(lease.stamp()));
                    return None;
                }
                Err(e) => match self.claim_failed(id, &mut tries, &e) {
                    AfterFailure::Again => {}
                    AfterFailure::LeftQueued => return None,
                    AfterFailure::Shutdown => {
                        if tries.uncertain {
                            self.give_back_uncertain_claim(id, lease);
                        }
                        return None;
                    }
                },
            }
        }
    }

    /// Shutdown while a claim's answer was lost and REST has not said since whether it applied:
    /// give the row back if the claim holds it, and log what is true.
    pub(super) fn give_back_uncertain_claim(&self, id: &MessageId, lease: &Lease) {
        match self.rest.release(id, Fence::Stamp(lease.stamp())) {
            Ok(true) => info!(
                "message {id}: its claim had applied; released back to queued_for_send (shutdown)"
            ),
            Ok(false) => debug!("message {id}: its claim had not applied; left as it was"),
            Err(e) => warn!(
                "message {id}: cannot tell whether its claim applied ({e}); if it did, the row \
                 stays 'sending' until {} and orphan recovery then gives it back",
                lease.stamp()
            ),
        }
    }
}
