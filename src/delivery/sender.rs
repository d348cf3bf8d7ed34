//! The sender threads: for each queued id, claim → check → send → record.
//!
//! Each sender thread ([`crate::delivery::pool`]) takes ids from the queue and runs [`Pipeline::process`].
//! The flow and its promises:
//! - **claim** first (atomic in the database), so no two instances send the same message; a lost
//!   claim is skipped silently. A claim is a *lease* of `SENDING_TIMEOUT_SECS` whose end is
//!   stamped on the row ([`crate::delivery::lease`]); every later write of the claim is fenced on that
//!   stamp, and no Twilio request (create or list) starts unless it can end inside the lease;
//! - **check** the row: a missing conversation or a number that is not E.164 fails the message
//!   without calling Twilio;
//! - one (recipient, text) pair at a time per instance ([`crate::delivery::in_flight`]), so Twilio's list
//!   can tell our messages apart;
//! - **send** with retries: the verdict of [`crate::delivery::retry::classify`] decides between another
//!   attempt after the backoff (honouring a clamped `Retry-After`), `failed` at once, or a pause
//!   of all sending (account problems) with the message given back. Waiting (circuit, pacer,
//!   backoff) is never an attempt;
//! - after an **ambiguous** failure (timeout, cut connection, 5xx: Twilio may have created the
//!   message) nothing is sent again until [`crate::delivery::reconcile`] has looked at Twilio's list after
//!   the settle window; a message found there is recorded, not re-sent;
//! - during a Twilio **outage** (the [`Circuit`] is open) attempts do not count against
//!   `MAX_RETRIES`: the message waits inside its lease, then is given back;
//! - **record** `sent` with the SID, retrying the database write until it applies: a message
//!   Twilio accepted is never sent again because the database was unavailable.
//!
//! Database faults never turn a message `failed`, and neither does Twilio's list failing. A
//! message given back goes to `queued_for_send` when it certainly was not sent; when it may have
//! been and Twilio cannot tell yet, it stays `sending` for orphan recovery ([`crate::delivery::orphans`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, trace, warn};

use crate::backoff::Backoff;
use crate::clock;
use crate::delivery::circuit::{Circuit, Pass};
use crate::delivery::concurrency::Limiter;
use crate::delivery::in_flight::InFlight;
use crate::delivery::lease::Lease;
use crate::delivery::pacer::{Pacer, Slot};
use crate::delivery::reconcile::{self, Found, Look, Question, CLOCK_SLACK};
use crate::delivery::retry::{classify, is_ambiguous, is_outage_signal, is_throttled, Verdict};
use crate::message::{ClaimedMessage, MessageId};
use crate::ops::metrics::{Metrics, Outcome};
use crate::phone;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Claim, Fence, Rest, RestError};
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
    /// The claim's lease.
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
}

/// How many times a release or `failed` write is tried before leaving the row to orphan
/// recovery (the write is fenced, so retrying it is always safe).
const PERSIST_ATTEMPTS: u32 = 12;
/// How many times a claim is tried; an unclaimed message just waits for the next sweep.
const CLAIM_ATTEMPTS: u32 = 3;
/// Pause between looks at Twilio's list while it cannot answer.
const LOOKUP_RETRY: Duration = Duration::from_secs(1);

/// One claimed message on its way: the row, where it goes, and the claim's lease.
struct Job<'a> {
    message: &'a ClaimedMessage,
    to: &'a str,
    lease: &'a Lease,
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

impl Pipeline {
    /// Take one message from `queued_for_send` to `sent` or `failed` (or give it back).
    /// `queued_at` is when this instance learned the message was ready.
    pub fn process(&self, id: MessageId, queued_at: Instant) {
        let pass = match self.circuit.enter(&self.shutdown) {
            Pass::Shutdown | Pass::Expired => return,
            p => p,
        };
        // The first send slot is taken before the claim, so the lease does not pay for the wait
        // (and a shutdown during it leaves the row untouched in the queue).
        if !self.pacer.wait(&self.shutdown) {
            self.abandon(pass);
            return;
        }
        let lease = Lease::start(self.sending_timeout);
        let Some(message) = self.claim(&id, &lease) else {
            self.abandon(pass);
            return;
        };
        let _held = self.in_flight.hold(&id);
        let to = match destination(&message) {
            Ok(to) => to,
            Err(reason) => {
                self.abandon(pass);
                warn!("message {id} failed without sending: {reason}");
                self.record_failed(&id, Fence::Stamp(lease.stamp()));
                return;
            }
        };
        trace!("message {id} body: {:?}", message.body);
        let mut job = Job {
            message: &message,
            to,
            lease: &lease,
            ambiguous_at: None,
        };
        let latest = lease.last_start(self.request_budget);
        let Some(_pair) =
            self.in_flight
                .lock_conversation(to, &message.body, latest, &self.shutdown)
        else {
            self.abandon(pass);
            return self.give_back(
                &mut job,
                "a message with the same text to the same number was in flight all along",
            );
        };
        self.deliver(&mut job, pass, queued_at);
    }

    fn abandon(&self, pass: Pass) {
        if pass == Pass::Probe {
            self.circuit.abandon_probe();
        }
    }

    /// The attempt loop for a claimed, checked message. Waiting (circuit, pacer, backoff,
    /// settle window) is never an attempt; only a create Twilio answered with a retryable
    /// failure counts against `MAX_RETRIES`.
    fn deliver(&self, job: &mut Job<'_>, mut pass: Pass, queued_at: Instant) {
        let id = job.id().clone();
        let attempts = self.max_retries + 1;
        let latest = job.lease.last_start(self.request_budget);
        let mut counted = 0u32;
        let mut throttled = 0u32;
        let mut first = true;
        let mut slot_taken = true; // by process(), before the claim
        loop {
            if !first {
                pass = self.circuit.enter_until(&self.shutdown, Some(latest));
            }
            first = false;
            if matches!(pass, Pass::Shutdown | Pass::Expired) || self.shutdown.is_triggered() {
                self.abandon(pass);
                return self.give_back(job, self.why_stopping());
            }
            // An earlier attempt may have created the message: settle that before anything else.
            if job.ambiguous_at.is_some() {
                match self.reconcile(job, true) {
                    Look::Found(found) => {
                        self.circuit.record_ok();
                        return self.adopt(job, &found);
                    }
                    Look::NotFound => {
                        debug!("message {id}: Twilio did not create it on the earlier attempt");
                        job.ambiguous_at = None;
                    }
                    Look::NotYet | Look::Unknown(_) => {
                        // reconcile() waited as long as the lease and shutdown allow.
                        self.abandon(pass);
                        return self.give_back(job, self.why_stopping());
                    }
                }
            }
            let slot = if std::mem::take(&mut slot_taken) {
                Slot::Go
            } else {
                self.pacer.wait_until(&self.shutdown, Some(latest))
            };
            match slot {
                Slot::Go => {}
                Slot::Shutdown => {
                    self.abandon(pass);
                    return self.give_back(job, "shutdown");
                }
                Slot::TooLate => {
                    self.abandon(pass);
                    return self.give_back(job, "no send slot inside its lease");
                }
            }
            let Some(permit) = self.limiter.acquire(&self.shutdown, latest) else {
                self.abandon(pass);
                return self.give_back(job, self.why_stopping());
            };
            if !job.lease.can_start(self.request_budget) {
                self.abandon(pass);
                return self.give_back(job, "its lease ran out");
            }
            let started = Instant::now();
            let outcome = self.twilio.send(job.to, &job.message.body, &id);
            drop(permit);
            let took = started.elapsed().as_millis();
            let error = match outcome {
                Ok(accepted) => {
                    self.limiter.on_success(started.elapsed());
                    self.metrics.set_concurrency_limit(self.limiter.limit());
                    self.circuit.record_ok();
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
                self.limiter.on_throttled();
                self.metrics.throttled();
                self.metrics.set_concurrency_limit(self.limiter.limit());
                self.abandon(pass);
                let delay = match &error {
                    crate::twilio::client::SendError::Rejected {
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
                if !self.shutdown.sleep(delay) {
                    return self.give_back(job, "shutdown");
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
                    error!("message {id} failed permanently: {error}");
                    return self.record_failed(&id, job.fence());
                }
                Verdict::Pause => {
                    let pause = self.circuit.trip();
                    error!(
                        "Twilio refused our account or URL ({error}); all sending pauses for {} s \
                         and message {id} goes back. Check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN \
                         and TWILIO_API_URL.",
                        pause.as_secs()
                    );
                    return self.give_back(job, "Twilio refused the account");
                }
                Verdict::Retry { after } => {
                    let outage = if is_outage_signal(&error) {
                        self.circuit.record_outage(&id)
                    } else {
                        self.abandon(pass);
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
                    if !self.shutdown.sleep(delay) {
                        return self.give_back(job, "shutdown");
                    }
                }
            }
        }
    }

    fn why_stopping(&self) -> &'static str {
        if self.shutdown.is_triggered() {
            "shutdown"
        } else {
            "its lease ran out"
        }
    }

    /// Ask Twilio whether an ambiguous attempt created the message. With `wait`, a "none" is
    /// looked at again once the settle window has passed, as long as the lease (and shutdown)
    /// allow; without, one look is made. Errors are retried while the lease allows.
    fn reconcile(&self, job: &Job<'_>, wait: bool) -> Look {
        let Some(ambiguous_at) = job.ambiguous_at else {
            return Look::NotFound;
        };
        let settled_at = ambiguous_at + self.settle;
        let since = clock::saturating_sub(job.lease.claimed_at(), CLOCK_SLACK);
        let budget = self.request_budget;
        loop {
            // A delivery receipt (which names the row) may have recorded the SID meanwhile.
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
                since,
                settled: Instant::now() >= settled_at,
            };
            let look = reconcile::look(&self.twilio, &self.rest, &question, &|| {
                job.lease.can_start(budget)
            });
            let pause = match &look {
                Look::Found(_) | Look::NotFound => return look,
                Look::NotYet => settled_at.saturating_duration_since(Instant::now()),
                Look::Unknown(reason) => {
                    warn!(
                        "message {}: cannot tell yet whether it was sent: {reason}",
                        job.id()
                    );
                    LOOKUP_RETRY
                }
            };
            // Another look must fit: after the pause, one list request, then possibly the create.
            let room = pause + budget * 2;
            if !wait || self.shutdown.is_triggered() || !job.lease.can_start(room) {
                return look;
            }
            if !self.shutdown.sleep(pause) {
                return look;
            }
        }
    }

    /// Retries are used up.
    fn exhausted(&self, job: &mut Job<'_>, error: &SendError) {
        let id = job.id().clone();
        let attempts = self.max_retries + 1;
        if job.ambiguous_at.is_some() {
            match self.reconcile(job, true) {
                Look::Found(found) => return self.adopt(job, &found),
                Look::NotFound => {}
                Look::NotYet | Look::Unknown(_) => {
                    error!(
                        "message {id} failed {attempts} times and Twilio cannot say yet whether \
                         one attempt went through; leaving it 'sending' for orphan recovery"
                    );
                    return;
                }
            }
        }
        error!("message {id} failed after {attempts} attempts: {error}");
        self.record_failed(&id, job.fence());
    }

    /// Hand a claimed message back: to the queue when it certainly was not sent; when it may
    /// have been, only after Twilio's list says no (past the settle window) — otherwise it stays
    /// `sending` under its stamp, for orphan recovery once the lease is over.
    fn give_back(&self, job: &mut Job<'_>, why: &str) {
        let id = job.id().clone();
        if job.ambiguous_at.is_some() {
            match self.reconcile(job, false) {
                Look::Found(found) => return self.adopt(job, &found),
                Look::NotFound => {}
                Look::NotYet | Look::Unknown(_) => {
                    warn!(
                        "message {id} ({why}) may have been sent and Twilio cannot tell yet; \
                         leaving it 'sending' for orphan recovery"
                    );
                    return;
                }
            }
        }
        let fence = job.fence();
        if self.persist(&id, "release", || self.rest.release(&id, fence)) {
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
    /// until it applies (a process stopped meanwhile leaves the row to orphan recovery, which
    /// finds the SID in Twilio's list). A write whose answer was lost is checked by reading the
    /// row back, so the log never claims a loss that did not happen.
    fn record_sent(&self, job: &Job<'_>, sid: &str, at: SystemTime) {
        let id = job.id();
        let sent_at = clock::rfc3339_millis(at);
        let mut attempt = 0u32;
        loop {
            match self.rest.mark_sent(id, job.fence(), sid, &sent_at) {
                Ok(true) => break,
                Ok(false) => {
                    // An earlier try applied and its answer was lost, or a delivery receipt
                    // (which names the row) recorded the SID first.
                    if self.records(id, sid) {
                        break;
                    }
                    error!(
                        "message {id} WAS SENT as {sid} but its row was claimed again meanwhile; \
                         it is not overwritten"
                    );
                    return;
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

    /// Claim `id` under `lease`, retrying transient REST failures a few times. `None`: not ours
    /// to send. A claim whose answer was lost is recognised by its stamp.
    fn claim(&self, id: &MessageId, lease: &Lease) -> Option<ClaimedMessage> {
        let mut uncertain = false;
        for attempt in 0..CLAIM_ATTEMPTS {
            let result = if uncertain {
                match self.rest.claimed_by(id, lease.stamp()) {
                    Ok(Claim::Lost) => self.rest.claim(id, lease.stamp()),
                    other => other,
                }
            } else {
                self.rest.claim(id, lease.stamp())
            };
            match result {
                Ok(Claim::Won(m)) => return Some(m),
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
                    if attempt + 1 == CLAIM_ATTEMPTS
                        || !self.shutdown.sleep(self.persist_backoff.delay(attempt))
                    {
                        warn!("message {id} left queued; a later sweep will pick it up");
                        return None;
                    }
                }
            }
        }
        None
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
        assert!(!e.contains("555-123"), "the number is masked: {e}");
    }
}
