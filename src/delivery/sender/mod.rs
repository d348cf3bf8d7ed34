//! The sender threads: for each queued id, ticket → claim → check → send → record.
//!
//! Each sender thread ([`crate::delivery::pool`]) takes ids from the queue and runs
//! [`Pipeline::process`]. The flow and its promises:
//! - a [`Ticket`] first (the circuit's pass, a pacer slot, a concurrency permit), then the
//!   **claim** (atomic in the database), so a row is `sending` only while its create can start at
//!   once, and no two instances send the same message; a lost claim is skipped silently, a claim
//!   whose answer was lost is resolved by its stamp once REST answers;
//! - a claim is a short *lease* stamped on the row ([`crate::delivery::lease`]), **renewed** by a
//!   fenced write while this thread holds the row (waiting for a sibling, a ticket, a backoff, the
//!   settle window, Twilio's list); every write of the claim is fenced on the current stamp, and
//!   no Twilio request (create or list) starts unless it can end inside the lease;
//! - **check** the row: a missing conversation or a number that is not E.164 fails the message
//!   without calling Twilio;
//! - one (recipient, text) pair at a time per instance ([`crate::delivery::in_flight`]), held for
//!   as long as the row is this instance's, so Twilio's list can tell our messages apart;
//! - **send** with retries: the verdict of [`crate::delivery::retry::judge`] decides between
//!   another attempt after the backoff (honouring a clamped `Retry-After`), `failed` at once, or a
//!   pause of all sending (account problems) with the message given back. Waiting (circuit,
//!   pacer, backoff) is never an attempt;
//! - after an **ambiguous** failure (timeout, cut connection, 5xx: Twilio may have created the
//!   message) nothing is sent again until [`crate::delivery::reconcile`] has answered from
//!   Twilio's list after the settle window; the thread keeps the row until it has that answer (a
//!   message found there is recorded, not re-sent), or hands it over at shutdown
//!   ([`crate::delivery::handover`]);
//! - during a Twilio **outage** (the circuit is open) attempts do not count against
//!   `MAX_RETRIES`: the message waits, its lease renewed, until Twilio is back;
//! - **record** `sent` with the SID, retrying the database write until it applies: a message
//!   Twilio accepted is never sent again because the database was unavailable. A write PostgREST
//!   refuses for good (4xx) goes to [`crate::delivery::unrecorded`] after a few tries.
//!
//! Database faults never turn a message `failed`, and neither does Twilio's list failing. A
//! message given back goes to `queued_for_send` when it certainly was not sent.
//!
//! In scaled mode a wake-up for one of this instance's partitions claims in batch
//! (`batch`): the thread keeps the first row and hands the others, already claimed, to idle
//! sender threads, which take their own ticket within the lease and go on from the check.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, trace, warn};

use crate::backoff::{Backoff, Jitter};
use crate::delivery::circuit::Circuit;
use crate::delivery::concurrency::Limiter;
use crate::delivery::in_flight::{IdGuard, InFlight};
use crate::delivery::lease::{self, Lease};
use crate::delivery::pacer::Pacer;
use crate::delivery::partitions::Ownership;
use crate::delivery::queue::WorkQueue;
use crate::delivery::reconcile::Found;
use crate::delivery::retry::{self, Availability, Judgement, MaybeCreated, Transient};
use crate::delivery::ticket::{Gates, Ticket};
use crate::delivery::unrecorded::Unrecorded;
use crate::message::{ClaimedMessage, MessageId};
use crate::ops::metrics::Metrics;
use crate::phone;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Fence, Rest, MAX_BODY_CHARS};
use crate::twilio::client::{SendError, Twilio};

mod batch;
mod claim;
mod keep;
mod record;
mod settle;

/// Everything a sender thread needs; shared by all of them.
pub struct Pipeline {
    /// Supabase REST.
    pub rest: Rest,
    /// Twilio Messages API.
    pub twilio: Twilio,
    /// The pause gate shared by all threads.
    pub circuit: Circuit,
    /// Stop taking new work.
    pub shutdown: Shutdown,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay between send attempts (doubling), also the clamp for `Retry-After`.
    pub retry_backoff: Backoff,
    /// Delay between attempts of a database write.
    pub persist_backoff: Backoff,
    /// The longest one Twilio request can take from the moment it starts: the HTTP timeout plus
    /// the bounded DNS resolution. A request starts only if this much of the lease is left.
    pub request_budget: Duration,
    /// The claim's lease (renewed while held).
    pub sending_timeout: Duration,
    /// How long after an ambiguous attempt Twilio's list is trusted to show the message.
    pub settle: Duration,
    /// What this instance holds right now.
    pub in_flight: InFlight,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `MAX_SENDS_PER_SECOND`.
    pub pacer: Pacer,
    /// How many creates may be in flight at once (learned from Twilio's 429s).
    pub limiter: Limiter,
    /// Sends whose `sent` write the database refuses, kept and retried.
    pub unrecorded: Unrecorded,
    /// The queue the threads take work from (a batch claim hands its other rows on through it).
    pub queue: WorkQueue,
    /// Which partitions this instance claims (scaled mode).
    pub ownership: Ownership,
}

pub use batch::{claim_count, wake_again, OwnRow, Room, Siblings};

/// How many times a release or `failed` write is tried before leaving the row to orphan
/// recovery (the write is fenced, so retrying it is always safe).
const PERSIST_ATTEMPTS: u32 = 12;
/// How many times a claim that certainly did not apply is tried; the message then waits for
/// the next sweep.
const CLAIM_ATTEMPTS: u32 = 3;
/// How many times a `sent` write PostgREST refuses (4xx) is tried before the fact is kept in
/// [`Unrecorded`] and the thread moves on.
const REFUSED_SENT_ATTEMPTS: u32 = 4;
/// How many times a renewal is tried before the lease is treated as unrenewable for now.
const RENEW_ATTEMPTS: u32 = 3;
/// One claimed message on its way: the row, where it goes, the claim's lease and its hold.
struct Job<'a> {
    message: &'a ClaimedMessage,
    to: &'a str,
    /// The current lease (renewals replace it).
    lease: Lease,
    /// This instance's hold on the id, which knows the current stamp.
    held: IdGuard,
    /// When the last attempt that may have created the message ended, if that is unresolved.
    ambiguous_at: Option<Instant>,
}

impl Job<'_> {
    fn id(&self) -> &MessageId {
        &self.message.id
    }

    fn fence(&self) -> Fence<'_> {
        Fence::Stamp(self.lease.stamp())
    }
}

/// Why the work on a claim stops before it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Shutdown began.
    Shutdown,
    /// The fence refused a renewal: the row is no longer this claim's.
    Lost,
    /// The lease could not be renewed (REST failing) and has too little left for a request.
    Lapsed,
}

impl Stop {
    fn why(self) -> &'static str {
        match self {
            Stop::Shutdown => "shutdown",
            Stop::Lost => "its claim no longer holds the row",
            Stop::Lapsed => "its lease could not be renewed",
        }
    }
}

/// The answer about an ambiguous attempt.
enum Settled {
    /// Twilio has it: record it.
    Found(Found),
    /// Twilio certainly did not create it: sending may go on.
    NotCreated,
    /// The work stopped (handed over at shutdown, or the claim was lost); all is logged.
    Stopped,
}

/// How far a message has come through its attempts.
#[derive(Debug, Default)]
struct Tries {
    /// Creates Twilio answered with a retryable failure (counted against `MAX_RETRIES`).
    counted: u32,
    /// Refusals for the account's concurrency limit in a row (never counted).
    throttled: u32,
}

impl Pipeline {
    fn gates(&self) -> Gates<'_> {
        Gates {
            circuit: &self.circuit,
            pacer: &self.pacer,
            limiter: &self.limiter,
            shutdown: &self.shutdown,
        }
    }

    /// Renew once less than this is left.
    fn renew_below(&self) -> Duration {
        lease::renew_below(self.request_budget)
    }

    /// Take one message from `queued_for_send` to `sent` or `failed` (or give it back).
    /// `queued_at` is when this instance learned the message was ready; `siblings` tells how many
    /// other threads could start a create now (for a batch claim in scaled mode).
    pub fn process(&self, id: MessageId, queued_at: Instant, siblings: &dyn Siblings) {
        if self.ownership.is_scaled() && self.queue.was_answered(&id) {
            debug!("message {id}: a batch claim here took it already; wake-up skipped");
            return;
        }
        // Everything the first create needs is in hand before the claim, so the lease does not
        // pay for the wait, a shutdown during it leaves the row untouched in the queue, and a
        // crash strands only rows whose creates were really in flight.
        let Ok(ticket) = self.gates().ticket(None) else {
            return;
        };
        let lease = Lease::start(self.sending_timeout, Instant::now(), SystemTime::now());
        if let Some(partitions) = self.batch_partitions(&id) {
            let n = claim_count(Room {
                waiting_ids: self.queue.waiting_ids(),
                free_permits: self.limiter.free(),
                idle_threads: siblings.idle_threads(),
            });
            // One row at a time is the woken row itself: claimed by its id, it answers exactly
            // its wake-up, where a batch of one could take an older row and leave it waiting.
            if n > 1 {
                return self.claim_in_batch(&id, queued_at, ticket, lease, &partitions, n);
            }
        }
        let Some(held) = self.in_flight.hold(&id, lease.stamp()) else {
            debug!("message {id} is being processed here already; skipped");
            return;
        };
        let Some(message) = self.claim(&id, &lease) else {
            return;
        };
        self.go_on(&message, lease, held, Some(ticket), queued_at);
    }

    /// From a claim on (this thread's, or a batch's handed over): check the row, take the ticket
    /// if it is not in hand (within the lease), the (recipient, text) pair, and deliver.
    fn go_on(
        &self,
        message: &ClaimedMessage,
        lease: Lease,
        held: IdGuard,
        ticket: Option<Ticket<'_>>,
        queued_at: Instant,
    ) {
        let id = &message.id;
        let to = match destination(message) {
            Ok(to) => to,
            Err(reason) => {
                drop(ticket);
                warn!("message {id} failed without sending: {reason}");
                self.record_failed(id, Fence::Stamp(lease.stamp()));
                return;
            }
        };
        trace!("message {id} body: {:?}", message.body);
        let mut job = Job {
            message,
            to,
            lease,
            held,
            ambiguous_at: None,
        };
        let ticket = match ticket {
            Some(ticket) => ticket,
            None => match self.ticket_within_lease(&mut job) {
                Ok(ticket) => ticket,
                Err(stop) => return self.give_back(&mut job, stop),
            },
        };
        let (_pair, ticket) = match self.in_flight.try_lock_conversation(to, &message.body) {
            Some(pair) => (pair, Some(ticket)),
            None => {
                // A sibling with the same text to the same number is this instance's: wait for
                // it without keeping a place among the creates in flight.
                drop(ticket);
                match self.wait_for_pair(&mut job) {
                    Ok(pair) => (pair, None),
                    Err(stop) => return self.give_back(&mut job, stop),
                }
            }
        };
        self.deliver(&mut job, ticket, queued_at);
    }

    /// The attempt loop for a claimed, checked message. Waiting (circuit, pacer, backoff,
    /// settle window) is never an attempt; only a create Twilio answered with a retryable
    /// failure counts against `MAX_RETRIES`.
    fn deliver(&self, job: &mut Job<'_>, mut first: Option<Ticket<'_>>, queued_at: Instant) {
        let mut tries = Tries::default();
        while self
            .attempt(job, first.take(), &mut tries, queued_at)
            .is_continue()
        {}
    }

    /// One attempt: settle an earlier ambiguous one, take a ticket within the lease, send, and
    /// act on the answer. `Break`: the message is settled or given back (all logged).
    fn attempt(
        &self,
        job: &mut Job<'_>,
        first: Option<Ticket<'_>>,
        tries: &mut Tries,
        queued_at: Instant,
    ) -> ControlFlow<()> {
        if self.shutdown.is_triggered() {
            self.give_back(job, Stop::Shutdown);
            return Break(());
        }
        // An earlier attempt may have created the message: settle that before anything else.
        if let Break(found) = self.settle_earlier(job) {
            if let Some(found) = found {
                self.circuit.record_ok();
                self.adopt(job, &found);
            }
            return Break(());
        }
        let ticket = match self.ready(job, first) {
            Ok(ticket) => ticket,
            Err(stop) => {
                self.give_back(job, stop);
                return Break(());
            }
        };
        let started = Instant::now();
        match self.twilio.send(job.to, &job.message.body, job.id()) {
            Ok(accepted) => {
                self.limiter.on_success(started.elapsed(), Instant::now());
                self.metrics.set_concurrency_limit(self.limiter.limit());
                self.circuit.record_ok();
                ticket.reported();
                self.metrics.send_latency(queued_at.elapsed());
                info!(
                    "message {} sent to {} as {} (attempt {}, {} ms)",
                    job.id(),
                    phone::mask(job.to),
                    accepted.sid,
                    tries.counted + 1,
                    started.elapsed().as_millis()
                );
                self.record_sent(job, &accepted.sid, SystemTime::now());
                Break(())
            }
            Err(error) => self.after_failure(job, ticket, &error, started, tries),
        }
    }

    /// The ticket for this attempt (the first one was taken before the claim), with the lease
    /// renewed and long enough for a whole request.
    fn ready<'p>(
        &'p self,
        job: &mut Job<'_>,
        first: Option<Ticket<'p>>,
    ) -> Result<Ticket<'p>, Stop> {
        let ticket = match first {
            Some(ticket) => ticket,
            None => self.ticket_within_lease(job)?,
        };
        self.keep(job)?;
        if !job.lease.can_start(self.request_budget, Instant::now()) {
            return Err(Stop::Lapsed);
        }
        Ok(ticket)
    }

    /// Act on a failed create as [`retry::judge`] says.
    fn after_failure(
        &self,
        job: &mut Job<'_>,
        ticket: Ticket<'_>,
        error: &SendError,
        started: Instant,
        tries: &mut Tries,
    ) -> ControlFlow<()> {
        let judgement = retry::judge(error);
        let id = job.id().clone();
        if let Judgement::Throttled { retry_after } = judgement {
            drop(ticket);
            return self.throttled(job, retry_after, tries);
        }
        if let Judgement::Transient(Transient {
            maybe_created: MaybeCreated::Yes,
            ..
        }) = judgement
        {
            job.ambiguous_at = Some(Instant::now());
        }
        warn!(
            "message {id} attempt {}/{} failed after {} ms: {error}",
            tries.counted + 1,
            self.max_retries + 1,
            started.elapsed().as_millis()
        );
        match judgement {
            Judgement::Permanent => {
                self.circuit.record_ok(); // Twilio judged the message: it is up
                ticket.reported();
                error!("message {id} failed permanently: {error}");
                self.record_failed(&id, job.fence());
                Break(())
            }
            Judgement::AccountRefused => {
                let pause = self.circuit.trip();
                ticket.reported();
                error!(
                    "Twilio refused our account or URL ({error}); all sending pauses for {} s \
                     and message {id} goes back. Check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN \
                     and TWILIO_API_URL.",
                    pause.as_secs()
                );
                self.release(job, "Twilio refused the account");
                Break(())
            }
            Judgement::Transient(transient) => self.transient(job, ticket, error, transient, tries),
            Judgement::Throttled { .. } => Continue(()), // answered above
        }
    }

    /// Twilio's concurrency limit: never processed, so retried; not a failure of this message
    /// (not counted against `MAX_RETRIES`), but fewer creates go in parallel.
    fn throttled(
        &self,
        job: &mut Job<'_>,
        retry_after: Option<Duration>,
        tries: &mut Tries,
    ) -> ControlFlow<()> {
        self.limiter.on_throttled(Instant::now());
        self.metrics.throttled();
        self.metrics.retry();
        self.metrics.set_concurrency_limit(self.limiter.limit());
        let delay = match retry_after {
            Some(after) => self.retry_backoff.clamp(after),
            None => throttle_delay(tries.throttled),
        };
        tries.throttled = tries.throttled.saturating_add(1);
        debug!(
            "message {}: Twilio is at its concurrency limit; again in {} ms",
            job.id(),
            delay.as_millis()
        );
        self.wait_or_give_back(job, delay)
    }

    /// A retryable failure: during an outage the message waits without using an attempt;
    /// otherwise it counts, and the next attempt comes after the backoff.
    fn transient(
        &self,
        job: &mut Job<'_>,
        ticket: Ticket<'_>,
        error: &SendError,
        transient: Transient,
        tries: &mut Tries,
    ) -> ControlFlow<()> {
        let outage = match transient.availability {
            Availability::OutageSignal => {
                let outage = self.circuit.record_outage(job.id());
                ticket.reported();
                outage
            }
            Availability::Answered => {
                drop(ticket);
                None
            }
        };
        if let Some(pause) = outage {
            // Twilio is down for everyone: this attempt does not count.
            warn!(
                "Twilio looks down; sending pauses for {} ms (message {} waits)",
                pause.as_millis(),
                job.id()
            );
            return Continue(());
        }
        tries.counted += 1;
        if tries.counted > self.max_retries {
            self.exhausted(job, error);
            return Break(());
        }
        let delay = transient.after.map_or_else(
            || self.retry_backoff.delay(tries.counted - 1),
            |after| self.retry_backoff.clamp(after),
        );
        debug!("message {} retrying in {} ms", job.id(), delay.as_millis());
        self.metrics.retry();
        self.wait_or_give_back(job, delay)
    }

    /// Wait `delay` keeping the claim; `Break` when the work stopped meanwhile (given back).
    fn wait_or_give_back(&self, job: &mut Job<'_>, delay: Duration) -> ControlFlow<()> {
        match self.pause(job, delay) {
            Ok(()) => Continue(()),
            Err(stop) => {
                self.give_back(job, stop);
                Break(())
            }
        }
    }

    /// Retries are used up: `failed`, unless the last attempts may have created it.
    fn exhausted(&self, job: &mut Job<'_>, error: &SendError) {
        if let Break(found) = self.settle_earlier(job) {
            if let Some(found) = found {
                self.adopt(job, &found);
            }
            return;
        }
        error!(
            "message {} failed after {} attempts: {error}",
            job.id(),
            self.max_retries + 1
        );
        self.record_failed(job.id(), job.fence());
    }

    /// Stop working on a claimed message: settle an unresolved ambiguous attempt first (a
    /// shutdown hands it over), then give the row back when it certainly was not sent.
    fn give_back(&self, job: &mut Job<'_>, stop: Stop) {
        if stop == Stop::Lost {
            return;
        }
        if let Break(found) = self.settle_earlier(job) {
            if let Some(found) = found {
                self.adopt(job, &found);
            }
            return;
        }
        self.release(job, stop.why());
    }
}

/// The wait after the `n`th refusal for concurrency in a row: full jitter over 100 ms · 2ⁿ,
/// capped at 3 s, as twilio-node's `autoRetry` does.
fn throttle_delay(n: u32) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << n.min(5))
        .min(Duration::from_secs(3));
    Duration::from_millis(fastrand::u64(0..=cap.as_millis() as u64))
}

/// Whether a claimed message can be sent; returns the destination number.
pub(crate) fn destination(message: &ClaimedMessage) -> Result<&str, String> {
    let Some(number) = message.phone_number.as_deref() else {
        return Err("its conversation does not exist".into());
    };
    if !phone::is_e164(number) {
        return Err(format!(
            "conversation phone number {} is not E.164 (+ and 8–15 digits)",
            phone::mask(number)
        ));
    }
    // Twilio counts UTF-16 units (a character outside the BMP is two) and refuses more (21617).
    let units = message.body.encode_utf16().count();
    if units > MAX_BODY_CHARS {
        return Err(format!(
            "its content is {units} characters (UTF-16 units), over Twilio's {MAX_BODY_CHARS}"
        ));
    }
    Ok(number)
}

/// Default backoff between database write attempts: 0.5 s doubling to 10 s.
pub fn persist_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(10),
        Jitter::Spread,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(phone: Option<&str>) -> ClaimedMessage {
        ClaimedMessage {
            id: MessageId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            body: "hello".into(),
            phone_number: phone.map(String::from),
            previous_sid: None,
        }
    }

    #[test]
    fn checks_before_sending() {
        assert_eq!(destination(&msg(Some("+15551234567"))), Ok("+15551234567"));
        assert!(destination(&msg(None))
            .unwrap_err()
            .contains("does not exist"));
        let e = destination(&msg(Some("555-123-4567"))).unwrap_err();
        assert!(e.contains("not E.164"));
        let mut long = msg(Some("+15551234567"));
        long.body = "é".repeat(1600);
        assert!(destination(&long).is_ok(), "1,600 characters fit");
        long.body = "😀".repeat(801);
        let e = destination(&long).unwrap_err();
        assert!(e.contains("1602") && e.contains("1600"), "{e}");
        assert!(!e.contains("555-123"), "the number is masked: {e}");
    }
}
