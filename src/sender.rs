//! The sender threads: for each queued id, claim → check → send → record.
//!
//! Each of `SENDER_THREADS` blocking threads takes ids from the [`WorkQueue`] and runs
//! [`Pipeline::process`]. The flow and its promises:
//! - **claim** first (atomic in the database), so no two instances send the same message; a lost
//!   claim is skipped silently. A claim is a *lease* of `SENDING_TIMEOUT_SECS`: no Twilio request
//!   is started that could end after it, so when orphan recovery takes over a row, nobody is still
//!   working on it;
//! - **check** the row: a missing conversation or a number that is not E.164 fails the message
//!   without calling Twilio;
//! - **send** with retries: the verdict of [`crate::retry::classify`] decides between another
//!   attempt after the backoff (honouring a clamped `Retry-After`), `failed` at once, or a pause
//!   of all sending (account problems) with the message given back;
//! - after an **ambiguous** failure (timeout, cut connection, 5xx: Twilio may have created the
//!   message) the next try first asks Twilio's list whether it exists, and records that SID
//!   instead of sending again;
//! - during a Twilio **outage** (the [`Circuit`] is open) attempts do not count against
//!   `MAX_RETRIES`: the message waits inside its lease, then is given back;
//! - **record** `sent` with the SID, retrying the database write alone if it fails: a message
//!   Twilio accepted is never sent again because the database was unavailable.
//!
//! Database faults never turn a message `failed`. A message given back goes to
//! `queued_for_send` when it certainly was not sent; when it may have been and Twilio cannot tell
//! right now, it stays `sending` for orphan recovery ([`crate::orphans`]) to settle.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, trace, warn};

use crate::backoff::Backoff;
use crate::circuit::{Circuit, Pass};
use crate::clock;
use crate::message::{ClaimedMessage, MessageId};
use crate::metrics::{Metrics, Outcome};
use crate::pacer::Pacer;
use crate::phone;
use crate::postgrest::{Claim, Rest, RestError};
use crate::queue::WorkQueue;
use crate::retry::{classify, is_ambiguous, is_outage_signal, Verdict};
use crate::shutdown::Shutdown;
use crate::twilio::{Found, SendError, Twilio};

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
    /// Upper bound of one HTTP request.
    pub http_timeout: Duration,
    /// The claim's lease.
    pub sending_timeout: Duration,
    /// Ids held by this instance right now.
    pub in_flight: InFlight,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `MAX_SENDS_PER_SECOND`.
    pub pacer: Pacer,
}

/// Ids this instance has claimed and not yet settled, so its own orphan recovery leaves them be.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<MessageId>>>);

impl InFlight {
    /// Whether `id` is being processed here.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn hold(&self, id: &MessageId) -> InFlightGuard<'_> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        InFlightGuard(self, id.clone())
    }
}

struct InFlightGuard<'a>(&'a InFlight, MessageId);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// A claim's time limits.
struct Lease {
    /// Earliest time Twilio may have created the message (with slack for clock differences).
    since: SystemTime,
    /// Last moment a Twilio request may start and still end inside the lease.
    last_start: Instant,
}

/// How many times a database write is tried before giving up and logging the loss.
const PERSIST_ATTEMPTS: u32 = 12;
/// How many times a claim is tried; an unclaimed message just waits for the next sweep.
const CLAIM_ATTEMPTS: u32 = 3;
/// Allowance for clocks (ours, Twilio's) disagreeing when matching a message's creation time.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// What one try produced.
enum Try {
    /// Twilio accepted a new message.
    Sent(String),
    /// A message from an earlier, ambiguous attempt was found: it was sent already.
    Found(Found),
    /// Nothing was accepted; `ambiguous` when Twilio may have created it anyway.
    Failed { error: SendError, ambiguous: bool },
}

/// Start `count` sender threads reading `queue`. They end when the queue is closed.
pub fn spawn(
    count: usize,
    pipeline: Arc<Pipeline>,
    queue: WorkQueue,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|n| {
            let pipeline = pipeline.clone();
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sender-{n}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    while let Some((id, queued_at)) = queue.pop_blocking() {
                        if pipeline.shutdown.is_triggered() {
                            break; // the row is still queued_for_send: nothing to undo
                        }
                        pipeline.process(id, queued_at);
                    }
                })
        })
        .collect()
}

impl Pipeline {
    /// Take one message from `queued_for_send` to `sent` or `failed` (or leave it queued).
    /// `queued_at` is when this instance learned the message was ready.
    pub fn process(&self, id: MessageId, queued_at: Instant) {
        let pass = match self.circuit.enter(&self.shutdown) {
            Pass::Shutdown | Pass::Expired => return,
            p => p,
        };
        let claimed = Instant::now();
        let Some(message) = self.claim(&id) else {
            if pass == Pass::Probe {
                self.circuit.abandon_probe();
            }
            return;
        };
        let _held = self.in_flight.hold(&id);
        let lease = Lease {
            since: SystemTime::now() - CLOCK_SLACK,
            last_start: claimed + self.sending_timeout.saturating_sub(self.http_timeout * 3),
        };
        let to = match check(&message) {
            Ok(to) => to,
            Err(reason) => {
                if pass == Pass::Probe {
                    self.circuit.abandon_probe();
                }
                warn!("message {id} failed without sending: {reason}");
                self.record_failed(&id);
                return;
            }
        };
        trace!("message {id} body: {:?}", message.body);
        self.deliver(&message, to, pass, &lease, queued_at);
    }

    /// The attempt loop for a claimed, checked message.
    fn deliver(
        &self,
        message: &ClaimedMessage,
        to: &str,
        mut pass: Pass,
        lease: &Lease,
        queued_at: Instant,
    ) {
        let id = &message.id;
        let attempts = self.max_retries + 1;
        let mut counted = 0u32;
        let mut maybe_sent = false;
        let mut first = true;
        loop {
            if !first {
                pass = self
                    .circuit
                    .enter_until(&self.shutdown, Some(lease.last_start));
            }
            first = false;
            if matches!(pass, Pass::Shutdown | Pass::Expired)
                || self.shutdown.is_triggered()
                || Instant::now() > lease.last_start
            {
                if pass == Pass::Probe {
                    self.circuit.abandon_probe();
                }
                let why = if self.shutdown.is_triggered() {
                    "shutdown"
                } else {
                    "its lease ran out"
                };
                return self.give_back(message, to, maybe_sent, lease, why);
            }
            let started = Instant::now();
            let outcome = self.try_once(message, to, maybe_sent, lease);
            let took = started.elapsed().as_millis();
            let (error, ambiguous) = match outcome {
                Try::Sent(sid) => {
                    self.circuit.record_ok();
                    self.metrics.send_latency(queued_at.elapsed());
                    info!(
                        "message {id} sent to {} as {sid} (attempt {}, {took} ms)",
                        phone::mask(to),
                        counted + 1
                    );
                    return self.record_sent(id, &sid, SystemTime::now());
                }
                Try::Found(found) => {
                    self.circuit.record_ok();
                    return self.adopt(id, &found);
                }
                Try::Failed { error, ambiguous } => (error, ambiguous),
            };
            maybe_sent |= ambiguous;
            warn!(
                "message {id} attempt {}/{attempts} failed after {took} ms: HTTP {}, Twilio code {}: {error}",
                counted + 1,
                error.http_status().map_or("-".to_string(), |s| s.to_string()),
                error.twilio_code().map_or("-".to_string(), |c| c.to_string()),
            );
            match classify(&error) {
                Verdict::Fail => {
                    self.circuit.record_ok(); // Twilio judged the message: it is up
                    error!("message {id} failed permanently: {error}");
                    self.record_failed(id);
                    return;
                }
                Verdict::Pause => {
                    let pause = self.circuit.trip();
                    error!(
                        "Twilio refused our account or URL ({error}); all sending pauses for {} s \
                         and message {id} goes back. Check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN \
                         and TWILIO_API_URL.",
                        pause.as_secs()
                    );
                    return self.give_back(
                        message,
                        to,
                        maybe_sent,
                        lease,
                        "Twilio refused the account",
                    );
                }
                Verdict::Retry { after } => {
                    let outage = if is_outage_signal(&error) {
                        self.circuit.record_outage(id)
                    } else {
                        if pass == Pass::Probe {
                            self.circuit.abandon_probe();
                        }
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
                        return self.exhausted(message, to, maybe_sent, lease, &error);
                    }
                    let delay = after.map_or_else(
                        || self.retry_backoff.delay(counted - 1),
                        |a| self.retry_backoff.clamp(a),
                    );
                    debug!("message {id} retrying in {} ms", delay.as_millis());
                    self.metrics.retry();
                    if !self.shutdown.sleep(delay) {
                        return self.give_back(message, to, maybe_sent, lease, "shutdown");
                    }
                }
            }
        }
    }

    /// One try: if an earlier attempt may have created the message, look for it first.
    fn try_once(&self, message: &ClaimedMessage, to: &str, maybe_sent: bool, lease: &Lease) -> Try {
        if maybe_sent {
            match self.lookup(message, to, lease) {
                Ok(Some(found)) => return Try::Found(found),
                Ok(None) => debug!("message {}: not created by the earlier attempt", message.id),
                Err(error) => {
                    return Try::Failed {
                        error,
                        ambiguous: true,
                    }
                }
            }
        }
        if !self.pacer.wait(&self.shutdown) {
            return Try::Failed {
                error: SendError::NotSent("shutdown while waiting for a send slot".into()),
                ambiguous: false,
            };
        }
        match self.twilio.send(to, &message.body) {
            Ok(accepted) => Try::Sent(accepted.sid),
            Err(error) => {
                let ambiguous = is_ambiguous(&error);
                Try::Failed { error, ambiguous }
            }
        }
    }

    /// Ask Twilio whether it holds this message already (one not recorded on another row).
    fn lookup(
        &self,
        message: &ClaimedMessage,
        to: &str,
        lease: &Lease,
    ) -> Result<Option<Found>, SendError> {
        let candidates = self.twilio.find_sent(to, &message.body, lease.since)?;
        for found in candidates {
            match self.rest.sid_owner(&found.sid) {
                Ok(Some(owner)) if owner != message.id => continue, // an earlier identical SMS
                Ok(_) => return Ok(Some(found)),
                // Cannot tell whether it is ours: safer to count it as ours than to send twice.
                Err(_) => return Ok(Some(found)),
            }
        }
        Ok(None)
    }

    /// Retries are used up.
    fn exhausted(
        &self,
        message: &ClaimedMessage,
        to: &str,
        maybe_sent: bool,
        lease: &Lease,
        error: &SendError,
    ) {
        let id = &message.id;
        let attempts = self.max_retries + 1;
        if maybe_sent {
            match self.lookup(message, to, lease) {
                Ok(Some(found)) => return self.adopt(id, &found),
                Ok(None) => {}
                Err(e) => {
                    error!(
                        "message {id} failed {attempts} times and Twilio cannot say whether one \
                         attempt went through ({e}); leaving it 'sending' for orphan recovery"
                    );
                    return;
                }
            }
        }
        error!("message {id} failed after {attempts} attempts: {error}");
        self.record_failed(id);
    }

    /// Hand a claimed message back: to the queue when it certainly was not sent; otherwise after
    /// asking Twilio, or, when Twilio cannot answer, to orphan recovery (left `sending`).
    fn give_back(
        &self,
        message: &ClaimedMessage,
        to: &str,
        maybe_sent: bool,
        lease: &Lease,
        why: &str,
    ) {
        let id = &message.id;
        if maybe_sent {
            match self.lookup(message, to, lease) {
                Ok(Some(found)) => return self.adopt(id, &found),
                Ok(None) => {}
                Err(e) => {
                    warn!(
                        "message {id} ({why}) may have been sent and Twilio cannot tell now ({e}); \
                         leaving it 'sending' for orphan recovery"
                    );
                    return;
                }
            }
        }
        if self.persist(id, "release", || self.rest.release(id)) {
            info!("message {id} released back to queued_for_send ({why})");
        }
    }

    /// Record a message Twilio turned out to have created after an ambiguous failure.
    fn adopt(&self, id: &MessageId, found: &Found) {
        info!(
            "message {id} had been created by Twilio as {} despite the failed attempt; \
             recording it, not sending again",
            found.sid
        );
        self.record_sent(id, &found.sid, found.created);
    }

    /// Record `failed`.
    fn record_failed(&self, id: &MessageId) {
        self.metrics.message(Outcome::Failed);
        self.persist(id, "record failed", || self.rest.mark_failed(id));
    }

    fn record_sent(&self, id: &MessageId, sid: &str, at: SystemTime) {
        self.metrics.message(Outcome::Sent);
        let sent_at = clock::rfc3339_millis(at);
        if !self.persist(id, "record sent", || self.rest.mark_sent(id, sid, &sent_at)) {
            error!(
                "message {id} WAS SENT as {sid} but could not be recorded; orphan recovery will \
                 record it (or set status='sent', twilio_message_sid='{sid}')"
            );
        }
    }

    /// Claim `id`, retrying transient REST failures a few times. `None`: not ours to send.
    fn claim(&self, id: &MessageId) -> Option<ClaimedMessage> {
        for attempt in 0..CLAIM_ATTEMPTS {
            match self.rest.claim(id) {
                Ok(Claim::Won(m)) => return Some(m),
                Ok(Claim::Lost) => {
                    self.metrics.message(Outcome::Skipped);
                    debug!("message {id} already claimed or no longer queued; skipped");
                    return None;
                }
                Ok(Claim::Malformed { id, reason }) => {
                    warn!("message {id} failed without sending: {reason}");
                    self.record_failed(&id);
                    return None;
                }
                Err(e) => {
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

    /// Run a database write until it succeeds (or attempts run out). `true` when written and the
    /// row was still ours.
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
                    warn!("message {id}: {what}: the row was no longer ours; left as it is");
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
        false
    }
}

/// Whether a claimed message can be sent; returns the destination number.
pub(crate) fn check(message: &ClaimedMessage) -> Result<&str, String> {
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
        assert_eq!(check(&msg(Some("+15551234567"))), Ok("+15551234567"));
        assert!(check(&msg(None)).unwrap_err().contains("does not exist"));
        let e = check(&msg(Some("555-123-4567"))).unwrap_err();
        assert!(e.contains("not E.164"));
        assert!(!e.contains("555-123"), "the number is masked: {e}");
    }
}
