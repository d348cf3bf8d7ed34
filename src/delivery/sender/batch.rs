//! The batch claim of scaled mode (`docs/scaled-mode.md`): a sender thread holding its ticket
//! claims, in one request, as many rows of this instance's partitions as creates can start right
//! now ([`claim_count`]), keeps the first, and hands the others to idle sender threads through the
//! queue as [`ClaimedWork`].
//!
//! Invariants:
//! - a claimed row is never lost: each is held in [`crate::delivery::in_flight`] from the claim on
//!   (so a hand-over at shutdown finds it), then either worked on by this thread, handed on through
//!   the queue (whose close keeps it until a sender releases it), failed (malformed), or released
//!   with a fenced write;
//! - a row is `sending` only while its create can start at once: the batch is no larger than the
//!   idle threads with a free place among the creates in flight, and the ids waiting (one
//!   wake-up per row);
//! - wake-ups are conserved: a row claimed by a batch has its own wake-up answered (skipped when
//!   it is popped, no request), every other row keeps its own, and a full batch that did not take
//!   the woken row queues its wake-up again ([`wake_again`]), so no row waits for the sweeper;
//! - what a claimed message logs is what the single claim logs ([`super::claim`]).

use std::time::Instant;

use log::{debug, info, warn};

use super::claim::{AfterFailure, ClaimTries};
use super::Pipeline;
use crate::delivery::in_flight::IdGuard;
use crate::delivery::lease::Lease;
use crate::delivery::queue::ClaimedWork;
use crate::delivery::ticket::Ticket;
use crate::message::{ClaimedMessage, MessageId};
use crate::ops::metrics::Outcome;
use crate::supabase::rest::{Claim, Fence, RestError};

/// Rows per page when looking for the rows a batch claim whose answer was lost took.
const PAGE: usize = 100;

/// What the sender pool says about the threads besides the one claiming.
pub trait Siblings {
    /// Sender threads waiting for work right now.
    fn idle_threads(&self) -> usize;
}

/// How many more creates could start right now, seen by a thread that holds its own ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Ids waiting in the queue (wake-ups not yet taken).
    pub waiting_ids: usize,
    /// Free places among the creates in flight (the concurrency limiter's).
    pub free_permits: usize,
    /// Sender threads waiting for work.
    pub idle_threads: usize,
}

/// How many rows a batch claim asks for: the claiming thread's own, plus one per create that
/// could start right now — an idle thread with a free place — and for which a wake-up waits.
pub fn claim_count(room: Room) -> usize {
    1 + room
        .waiting_ids
        .min(room.free_permits)
        .min(room.idle_threads)
}

/// Whether the batch claim took the row of the wake-up that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnRow {
    /// The woken row is among those claimed.
    Claimed,
    /// It is not (claimed elsewhere, or left behind by an older row).
    Left,
}

/// Whether the woken row's wake-up is queued again after a batch that asked for `asked` rows and
/// got `got`. Every other row keeps its own wake-up (only the rows a batch claimed have theirs
/// answered), so only the woken row can be left without one: when the batch came back full
/// without it (older rows filled it). A batch that was not full took every claimable row, so a
/// woken row it did not take is not claimable here (taken elsewhere, or moved on).
pub fn wake_again(asked: usize, got: usize, own: OwnRow) -> bool {
    got >= asked && got > 0 && own == OwnRow::Left
}

impl Pipeline {
    /// The partitions a wake-up for `id` claims in batch: `None` in the default mode, for an id
    /// outside this instance's partitions (a sweep's or a wake-up from before a rebalance: claimed
    /// alone, by its id), or when this instance has no partition.
    pub(super) fn batch_partitions(&self, id: &MessageId) -> Option<Vec<u16>> {
        if !self.ownership.is_scaled() || !self.ownership.owns(id) {
            return None;
        }
        let partitions = self.ownership.to_claim();
        (!partitions.is_empty()).then_some(partitions)
    }

    /// Claim up to `n` rows in batch for the wake-up `id`, holding `ticket`, under `lease`; keep
    /// the first row and hand the others on.
    pub(super) fn claim_in_batch(
        &self,
        id: &MessageId,
        queued_at: Instant,
        ticket: Ticket<'_>,
        lease: Lease,
        partitions: &[u16],
        n: usize,
    ) {
        let Some(claims) = self.claim_rows(id, partitions, n, &lease) else {
            return;
        };
        if claims.is_empty() {
            self.metrics.message(Outcome::Skipped);
            debug!("message {id} already claimed or no longer queued; skipped");
            return;
        }
        let returned = claims.len();
        let mut mine: Option<(ClaimedMessage, IdGuard)> = None;
        let mut malformed = Vec::new();
        let mut own = OwnRow::Left;
        for claim in claims {
            match claim {
                Claim::Won(message) => {
                    let Some(held) = self.in_flight.hold(&message.id, lease.stamp()) else {
                        self.release_unheld(&message.id, &lease);
                        continue;
                    };
                    if &message.id == id {
                        own = OwnRow::Claimed;
                    } else {
                        // Its own wake-up, if one waits or comes, is answered by this claim.
                        self.queue.answer(&message.id);
                    }
                    if mine.is_none() {
                        mine = Some((message, held));
                    } else {
                        self.queue.push_claimed(ClaimedWork {
                            message,
                            lease: lease.clone(),
                            held,
                            queued_at,
                        });
                    }
                }
                Claim::Malformed { id, reason } => malformed.push((id, reason)),
                Claim::Lost => {}
            }
        }
        if own == OwnRow::Left && self.in_flight.contains(id) {
            own = OwnRow::Claimed; // another thread here has it
        }
        if wake_again(n, returned, own) {
            self.queue.push_again(id.clone());
        }
        for (id, reason) in malformed {
            warn!("message {id} failed without sending: {reason}");
            self.record_failed(&id, Fence::Stamp(lease.stamp()));
        }
        if let Some((message, held)) = mine {
            self.go_on(&message, lease, held, Some(ticket), queued_at);
        }
    }

    /// A row the queue handed over, claimed by another thread's batch: on as after a claim of
    /// its own (its ticket taken within the lease), or released at shutdown.
    pub(crate) fn process_claimed(&self, work: ClaimedWork) {
        if self.shutdown.is_triggered() {
            return self.release_claimed(work);
        }
        let ClaimedWork {
            message,
            lease,
            held,
            queued_at,
        } = work;
        self.go_on(&message, lease, held, None, queued_at);
    }

    /// Give back a claimed row no sender will work on (shutdown) with a fenced write.
    pub(crate) fn release_claimed(&self, work: ClaimedWork) {
        let id = &work.message.id;
        let fence = Fence::Stamp(work.lease.stamp());
        if self.persist(id, "release", || self.rest.release(id, fence)) {
            info!("message {id} released back to queued_for_send (shutdown)");
        }
    }

    /// A claimed row another thread here holds already (under an earlier claim of its own that
    /// did not apply): this claim gives it back for any instance to take.
    fn release_unheld(&self, id: &MessageId, lease: &Lease) {
        debug!("message {id} is being processed here already; its batch claim gives it back");
        self.persist(id, "release", || {
            self.rest.release(id, Fence::Stamp(lease.stamp()))
        });
    }

    /// Claim up to `n` rows of `partitions` under `lease`, woken by `id`. `None`: nothing claimed
    /// (given up, or shutdown). Transient failures are retried as the single claim retries them;
    /// once the claim may have applied (an answer lost), the rows under this lease's stamp are
    /// looked up until REST answers — found, or claimed afresh, or at shutdown given back.
    fn claim_rows(
        &self,
        id: &MessageId,
        partitions: &[u16],
        n: usize,
        lease: &Lease,
    ) -> Option<Vec<Claim>> {
        let mut tries = ClaimTries::default();
        loop {
            let result = if tries.uncertain {
                match self.claimed_under(lease) {
                    Ok(claims) if claims.is_empty() => {
                        self.rest.claim_batch(partitions, n, lease.stamp())
                    }
                    Ok(claims) => {
                        for claim in &claims {
                            if let Claim::Won(message) = claim {
                                info!(
                                    "message {}: the claim whose answer was lost is ours; sending",
                                    message.id
                                );
                            }
                        }
                        Ok(claims)
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.rest.claim_batch(partitions, n, lease.stamp())
            };
            match result {
                Ok(claims) => return Some(claims),
                Err(e) => match self.claim_failed(id, &mut tries, &e) {
                    AfterFailure::Again => {}
                    AfterFailure::LeftQueued => return None,
                    AfterFailure::Shutdown => {
                        if tries.uncertain {
                            self.give_back_uncertain_batch(lease);
                        }
                        return None;
                    }
                },
            }
        }
    }

    /// The rows `sending` under `lease`'s stamp (a batch claim whose answer was lost), read as a
    /// claim reads them. The stamp is unique to this claim, so they are exactly the batch's.
    fn claimed_under(&self, lease: &Lease) -> Result<Vec<Claim>, RestError> {
        let mut claims = Vec::new();
        let mut after: Option<MessageId> = None;
        loop {
            let page = self.rest.sending_page(after.as_ref(), PAGE)?;
            let full = page.len() == PAGE;
            for row in page {
                after = Some(row.id.clone());
                if row.stamp.as_deref() == Some(lease.stamp()) {
                    match self.rest.claimed_by(&row.id, lease.stamp())? {
                        Claim::Lost => {}
                        claim => claims.push(claim),
                    }
                }
            }
            if !full {
                return Ok(claims);
            }
        }
    }

    /// Shutdown while a batch claim's answer was lost: give back the rows it took, if it applied,
    /// and log what is true.
    fn give_back_uncertain_batch(&self, lease: &Lease) {
        match self.claimed_under(lease) {
            Ok(claims) => {
                if claims.is_empty() {
                    debug!("the batch claim under {} had not applied", lease.stamp());
                }
                for claim in claims {
                    if let Claim::Won(ClaimedMessage { id, .. }) | Claim::Malformed { id, .. } =
                        claim
                    {
                        self.give_back_uncertain_claim(&id, lease);
                    }
                }
            }
            Err(e) => warn!(
                "cannot tell whether the batch claim under {stamp} applied ({e}); if it did, its \
                 rows stay 'sending' until {stamp} and orphan recovery then gives them back",
                stamp = lease.stamp()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(waiting_ids: usize, free_permits: usize, idle_threads: usize) -> usize {
        claim_count(Room {
            waiting_ids,
            free_permits,
            idle_threads,
        })
    }

    #[test]
    fn a_batch_is_the_own_row_plus_what_could_start_now() {
        assert_eq!(room(0, 10, 10), 1, "one wake-up: one row");
        assert_eq!(room(5, 10, 10), 6);
        assert_eq!(room(50, 3, 10), 4, "bounded by the free places in flight");
        assert_eq!(room(50, 10, 2), 3, "bounded by the idle threads");
        assert_eq!(room(50, 0, 10), 1, "no free place: this thread's own only");
        assert_eq!(room(50, 10, 0), 1, "nobody idle: this thread's own only");
        assert_eq!(room(0, 0, 0), 1);
        assert_eq!(room(usize::MAX, usize::MAX, 7), 8, "no overflow");
    }

    #[test]
    fn only_a_full_batch_without_the_woken_row_wakes_it_again() {
        assert!(
            wake_again(4, 4, OwnRow::Left),
            "older rows filled it: the woken row may be left without a wake-up"
        );
        assert!(
            !wake_again(4, 4, OwnRow::Claimed),
            "the other rows keep their own wake-ups"
        );
        assert!(
            !wake_again(4, 3, OwnRow::Left),
            "not full: the woken row is not claimable here"
        );
        assert!(!wake_again(4, 0, OwnRow::Left));
        assert!(!wake_again(1, 1, OwnRow::Claimed));
    }
}
