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
//! - **send** with retries: the verdict of [`crate::delivery::retry::classify`] decides between
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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, trace, warn};

use crate::backoff::Backoff;
use crate::clock;
use crate::delivery::circuit::Circuit;
use crate::delivery::concurrency::Limiter;
use crate::delivery::handover;
use crate::delivery::in_flight::{IdGuard, InFlight};
use crate::delivery::lease::{self, Lease};
use crate::delivery::pacer::Pacer;
use crate::delivery::reconcile::{self, Found, Look, Question, CLOCK_SLACK};
use crate::delivery::retry::{classify, is_ambiguous, is_outage_signal, is_throttled, Verdict};
use crate::delivery::ticket::{Gates, NoTicket, Ticket};
use crate::delivery::unrecorded::{Fact, Unrecorded};
use crate::message::{ClaimedMessage, MessageId};
use crate::ops::metrics::{Metrics, Outcome};
use crate::phone;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Claim, Fence, Rest, RestError, MAX_BODY_CHARS};
use crate::twilio::client::{SendError, Twilio};

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
}

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
/// Pause between looks at Twilio's list while it cannot answer: 1 s doubling to 30 s.
fn lookup_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30), true)
}

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
    /// `queued_at` is when this instance learned the message was ready.
    pub fn process(&self, id: MessageId, queued_at: Instant) {
        // Everything the first create needs is in hand before the claim, so the lease does not
        // pay for the wait, a shutdown during it leaves the row untouched in the queue, and a
        // crash strands only rows whose creates were really in flight.
        let Ok(ticket) = self.gates().ticket(None) else {
            return;
        };
        let lease = Lease::start(self.sending_timeout);
        let Some(held) = self.in_flight.hold(&id, lease.stamp()) else {
            debug!("message {id} is being processed here already; skipped");
            return;
        };
        let Some(message) = self.claim(&id, &lease) else {
            return;
        };
        let to = match destination(&message) {
            Ok(to) => to,
            Err(reason) => {
                drop(ticket);
                warn!("message {id} failed without sending: {reason}");
                self.record_failed(&id, Fence::Stamp(lease.stamp()));
                return;
            }
        };
        trace!("message {id} body: {:?}", message.body);
        let mut job = Job {
            message: &message,
            to,
            lease,
            held,
            ambiguous_at: None,
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

    /// Wait for the (recipient, text) pair, renewing the lease meanwhile.
    fn wait_for_pair(
        &self,
        job: &mut Job<'_>,
    ) -> Result<crate::delivery::in_flight::ConversationGuard, Stop> {
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

    /// The attempt loop for a claimed, checked message. Waiting (circuit, pacer, backoff,
    /// settle window) is never an attempt; only a create Twilio answered with a retryable
    /// failure counts against `MAX_RETRIES`.
    fn deliver(&self, job: &mut Job<'_>, mut first: Option<Ticket<'_>>, queued_at: Instant) {
        let id = job.id().clone();
        let attempts = self.max_retries + 1;
        let mut counted = 0u32;
        let mut throttled = 0u32;
        loop {
            if self.shutdown.is_triggered() {
                return self.give_back(job, Stop::Shutdown);
            }
            // An earlier attempt may have created the message: settle that before anything else.
            if job.ambiguous_at.is_some() {
                match self.settle(job) {
                    Settled::Found(found) => {
                        self.circuit.record_ok();
                        return self.adopt(job, &found);
                    }
                    Settled::NotCreated => {
                        debug!("message {id}: Twilio did not create it on the earlier attempt");
                        job.ambiguous_at = None;
                    }
                    Settled::Stopped => return,
                }
            }
            let ticket = match first.take() {
                Some(ticket) => ticket,
                None => match self.ticket_within_lease(job) {
                    Ok(ticket) => ticket,
                    Err(stop) => return self.give_back(job, stop),
                },
            };
            if let Err(stop) = self.keep(job) {
                drop(ticket);
                return self.give_back(job, stop);
            }
            if !job.lease.can_start(self.request_budget) {
                drop(ticket);
                return self.give_back(job, Stop::Lapsed);
            }
            let started = Instant::now();
            let outcome = self.twilio.send(job.to, &job.message.body, &id);
            let took = started.elapsed().as_millis();
            let error = match outcome {
                Ok(accepted) => {
                    self.limiter.on_success(started.elapsed());
                    self.metrics.set_concurrency_limit(self.limiter.limit());
                    self.circuit.record_ok();
                    ticket.reported();
                    self.metrics.send_latency(queued_at.elapsed());
                    info!(
                        "message {id} sent to {} as {} (attempt {}, {took} ms)",
                        phone::mask(job.to),
                        accepted.sid,
                        counted + 1
                    );
                    return self.record_sent(job, &accepted.sid, SystemTime::now());
                }
                Err(error) => error,
            };
            if is_throttled(&error) {
                // Twilio's concurrency limit: never processed, so retried; not a failure of this
                // message (not counted against MAX_RETRIES), but fewer creates go in parallel.
                drop(ticket);
                self.limiter.on_throttled();
                self.metrics.throttled();
                self.metrics.retry();
                self.metrics.set_concurrency_limit(self.limiter.limit());
                let delay = match &error {
                    SendError::Rejected {
                        retry_after: Some(after),
                        ..
                    } => self.retry_backoff.clamp(*after),
                    _ => throttle_delay(throttled),
                };
                throttled = throttled.saturating_add(1);
                debug!(
                    "message {id}: Twilio is at its concurrency limit; again in {} ms",
                    delay.as_millis()
                );
                if let Err(stop) = self.pause(job, delay) {
                    return self.give_back(job, stop);
                }
                continue;
            }
            if is_ambiguous(&error) {
                job.ambiguous_at = Some(Instant::now());
            }
            warn!(
                "message {id} attempt {}/{attempts} failed after {took} ms: {error}",
                counted + 1,
            );
            match classify(&error) {
                Verdict::Fail => {
                    self.circuit.record_ok(); // Twilio judged the message: it is up
                    ticket.reported();
                    error!("message {id} failed permanently: {error}");
                    return self.record_failed(&id, job.fence());
                }
                Verdict::Pause => {
                    let pause = self.circuit.trip();
                    ticket.reported();
                    error!(
                        "Twilio refused our account or URL ({error}); all sending pauses for {} s \
                         and message {id} goes back. Check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN \
                         and TWILIO_API_URL.",
                        pause.as_secs()
                    );
                    return self.release(job, "Twilio refused the account");
                }
                Verdict::Retry { after } => {
                    let outage = if is_outage_signal(&error) {
                        let outage = self.circuit.record_outage(&id);
                        ticket.reported();
                        outage
                    } else {
                        drop(ticket);
                        None
                    };
                    if let Some(pause) = outage {
                        // Twilio is down for everyone: this attempt does not count.
                        warn!(
                            "Twilio looks down; sending pauses for {} ms (message {id} waits)",
                            pause.as_millis()
                        );
                        continue;
                    }
                    counted += 1;
                    if counted >= attempts {
                        return self.exhausted(job, &error);
                    }
                    let delay = after.map_or_else(
                        || self.retry_backoff.delay(counted - 1),
                        |a| self.retry_backoff.clamp(a),
                    );
                    debug!("message {id} retrying in {} ms", delay.as_millis());
                    self.metrics.retry();
                    if let Err(stop) = self.pause(job, delay) {
                        return self.give_back(job, stop);
                    }
                }
            }
        }
    }

    /// A ticket for the next attempt of a claimed message, renewing the lease while waiting.
    fn ticket_within_lease<'p>(&'p self, job: &mut Job<'_>) -> Result<Ticket<'p>, Stop> {
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
    fn pause(&self, job: &mut Job<'_>, delay: Duration) -> Result<(), Stop> {
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
    fn keep(&self, job: &mut Job<'_>) -> Result<(), Stop> {
        if job.lease.remaining() >= self.renew_below() {
            return Ok(());
        }
        match self.renew(job) {
            Ok(()) => Ok(()),
            Err(Stop::Lapsed) if job.lease.can_start(self.request_budget) => Ok(()),
            Err(stop) => Err(stop),
        }
    }

    /// Move the claim to a new lease with a fenced write. A write whose answer was lost is
    /// checked by reading the row's stamp.
    fn renew(&self, job: &mut Job<'_>) -> Result<(), Stop> {
        let id = job.id().clone();
        for attempt in 0..RENEW_ATTEMPTS {
            let next = job.lease.renewal();
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

    /// Settle an ambiguous attempt: look at Twilio's list until it answers — renewing the lease
    /// and keeping the row and its (recipient, text) hold meanwhile — or shutdown (hand-over).
    fn settle(&self, job: &mut Job<'_>) -> Settled {
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
            let pause = match self.look(job, Instant::now() >= settled_at) {
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
    fn look(&self, job: &Job<'_>, settled: bool) -> Look {
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
            since: clock::saturating_sub(job.lease.claimed_at(), CLOCK_SLACK),
            settled,
            previous_sid: job.message.previous_sid.as_deref(),
            unrecorded: &self.unrecorded,
        };
        let budget = self.request_budget;
        reconcile::look(&self.twilio, &self.rest, &question, &|| {
            job.lease.can_start(budget)
        })
    }

    /// Shutdown with an ambiguous attempt unresolved: one last look if the lease allows, then end
    /// the claim now so that a successor settles it after the settle window.
    fn hand_over(&self, job: &mut Job<'_>) -> Settled {
        let id = job.id().clone();
        if let Some(at) = job.ambiguous_at {
            if at.elapsed() >= self.settle && job.lease.can_start(self.request_budget) {
                match self.look(job, true) {
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

    /// Retries are used up.
    fn exhausted(&self, job: &mut Job<'_>, error: &SendError) {
        let id = job.id().clone();
        let attempts = self.max_retries + 1;
        if job.ambiguous_at.is_some() {
            match self.settle(job) {
                Settled::Found(found) => return self.adopt(job, &found),
                Settled::NotCreated => {}
                Settled::Stopped => return,
            }
        }
        error!("message {id} failed after {attempts} attempts: {error}");
        self.record_failed(&id, job.fence());
    }

    /// Stop working on a claimed message: settle an unresolved ambiguous attempt first (a
    /// shutdown hands it over), then give the row back when it certainly was not sent.
    fn give_back(&self, job: &mut Job<'_>, stop: Stop) {
        if stop == Stop::Lost {
            return;
        }
        if job.ambiguous_at.is_some() {
            match self.settle(job) {
                Settled::Found(found) => return self.adopt(job, &found),
                Settled::NotCreated => {}
                Settled::Stopped => return,
            }
        }
        self.release(job, stop.why());
    }

    /// Put a message that certainly was not sent back to `queued_for_send`.
    fn release(&self, job: &Job<'_>, why: &str) {
        let id = job.id();
        if self.persist(id, "release", || self.rest.release(id, job.fence())) {
            info!("message {id} released back to queued_for_send ({why})");
        }
    }

    /// Record a message Twilio turned out to have created after an ambiguous failure.
    fn adopt(&self, job: &Job<'_>, found: &Found) {
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
    fn record_failed(&self, id: &MessageId, fence: Fence<'_>) {
        if self.persist(id, "record failed", || self.rest.mark_failed(id, fence)) {
            self.metrics.message(Outcome::Failed);
        }
    }

    /// Record `sent` with the SID Twilio gave. A known SID is never dropped: the write is retried
    /// until it applies; one PostgREST refuses for good goes to [`Unrecorded`] after a few tries
    /// (this thread and the hold are freed). A write whose answer was lost is checked by reading
    /// the row back, so the log never claims a loss that did not happen.
    fn record_sent(&self, job: &Job<'_>, sid: &str, at: SystemTime) {
        let id = job.id();
        let sent_at = clock::rfc3339_millis(at);
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
    fn records(&self, id: &MessageId, sid: &str) -> bool {
        matches!(self.rest.recorded_sid(id), Ok(Some(s)) if s == sid)
    }

    /// Claim `id` under `lease`. `None`: not ours to send (or it failed without sending).
    /// Transient REST failures are retried a few times while the claim certainly did not apply
    /// (then the message waits for the next sweep); once it may have applied (an answer lost),
    /// the row is read back by its stamp until REST answers — recognised as ours, or claimed
    /// afresh, or at shutdown given back with a fenced write.
    fn claim(&self, id: &MessageId, lease: &Lease) -> Option<ClaimedMessage> {
        let mut uncertain = false;
        let mut attempt = 0u32;
        loop {
            let result = if uncertain {
                match self.rest.claimed_by(id, lease.stamp()) {
                    Ok(Claim::Lost) => self.rest.claim(id, lease.stamp()),
                    other => other,
                }
            } else {
                self.rest.claim(id, lease.stamp())
            };
            match result {
                Ok(Claim::Won(m)) => {
                    if uncertain {
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
                Err(e) => {
                    uncertain |= !matches!(e, RestError::Connect(_));
                    warn!("message {id}: claim attempt {} failed: {e}", attempt + 1);
                    attempt = attempt.saturating_add(1);
                    if !uncertain && attempt >= CLAIM_ATTEMPTS {
                        warn!("message {id} left queued (no claim applied); a later sweep will pick it up");
                        return None;
                    }
                    let delay = self
                        .persist_backoff
                        .delay(attempt - 1)
                        .min(Duration::from_secs(5));
                    if !self.shutdown.sleep(delay) {
                        if uncertain {
                            self.give_back_uncertain_claim(id, lease);
                        }
                        return None;
                    }
                }
            }
        }
    }

    /// Shutdown while a claim's answer was lost and REST has not said since whether it applied:
    /// give the row back if the claim holds it, and log what is true.
    fn give_back_uncertain_claim(&self, id: &MessageId, lease: &Lease) {
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

    /// Run a fenced database write until it succeeds (or attempts run out). `true` when written
    /// (the claim still held the row).
    fn persist(
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
    Backoff::new(Duration::from_millis(500), Duration::from_secs(10), true)
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
