//! The sender threads: for each queued id, claim → check → send → record.
//!
//! Each of `SENDER_THREADS` blocking threads takes ids from the [`WorkQueue`] and runs
//! [`Pipeline::process`]. The flow and its promises:
//! - **claim** first (atomic in the database), so no two instances send the same message; a lost
//!   claim is skipped silently;
//! - **check** the row: a missing conversation or a number that is not E.164 fails the message
//!   without calling Twilio;
//! - **send** with retries: the verdict of [`crate::retry::classify`] decides between another
//!   attempt after the backoff (honouring a clamped `Retry-After`), `failed` at once, or a pause
//!   of all sending (account problems) with the message given back;
//! - **record** `sent` with the SID, retrying the database write alone if it fails: a message
//!   Twilio accepted is never sent again because the database was unavailable.
//!
//! Database faults never turn a message `failed`. On shutdown a claimed message that has not
//! been handed to Twilio yet is released back to `queued_for_send`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, trace, warn};

use crate::backoff::Backoff;
use crate::circuit::{Circuit, Pass};
use crate::clock;
use crate::message::{ClaimedMessage, MessageId};
use crate::phone;
use crate::postgrest::{Claim, Rest, RestError};
use crate::queue::WorkQueue;
use crate::retry::{classify, Verdict};
use crate::shutdown::Shutdown;
use crate::twilio::Twilio;

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
}

/// How many times a database write is tried before giving up and logging the loss.
const PERSIST_ATTEMPTS: u32 = 12;
/// How many times a claim is tried; an unclaimed message just waits for the next sweep.
const CLAIM_ATTEMPTS: u32 = 3;

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
                    while let Some(id) = queue.pop_blocking() {
                        if pipeline.shutdown.is_triggered() {
                            break; // the row is still queued_for_send: nothing to undo
                        }
                        pipeline.process(id);
                    }
                })
        })
        .collect()
}

impl Pipeline {
    /// Take one message from `queued_for_send` to `sent` or `failed` (or leave it queued).
    pub fn process(&self, id: MessageId) {
        let mut pass = match self.circuit.enter(&self.shutdown) {
            Pass::Shutdown => return,
            p => p,
        };
        let message = match self.claim(&id) {
            Some(m) => m,
            None => {
                if pass == Pass::Probe {
                    self.circuit.abandon_probe();
                }
                return;
            }
        };
        let to = match check(&message) {
            Ok(to) => to,
            Err(reason) => {
                if pass == Pass::Probe {
                    self.circuit.abandon_probe();
                }
                warn!("message {id} failed without sending: {reason}");
                self.persist(&id, "record failed", || self.rest.mark_failed(&id));
                return;
            }
        };
        trace!("message {id} body: {:?}", message.body);

        let attempts = self.max_retries + 1;
        for attempt in 1..=attempts {
            if attempt > 1 {
                pass = match self.circuit.enter(&self.shutdown) {
                    Pass::Shutdown => return self.release(&id),
                    p => p,
                };
            }
            if self.shutdown.is_triggered() {
                if pass == Pass::Probe {
                    self.circuit.abandon_probe();
                }
                return self.release(&id);
            }
            let started = Instant::now();
            let result = self.twilio.send(to, &message.body);
            let took = started.elapsed().as_millis();
            let error = match result {
                Ok(accepted) => {
                    self.circuit.record_ok();
                    info!(
                        "message {id} sent to {} as {} (attempt {attempt}, {took} ms)",
                        phone::mask(to),
                        accepted.sid
                    );
                    let sent_at = clock::rfc3339_millis(SystemTime::now());
                    let sid = accepted.sid;
                    let recorded = self.persist(&id, "record sent", || {
                        self.rest.mark_sent(&id, &sid, &sent_at)
                    });
                    if !recorded {
                        error!(
                            "message {id} WAS SENT as {sid} but could not be recorded; \
                             it stays 'sending' (set status='sent', twilio_message_sid='{sid}')"
                        );
                    }
                    return;
                }
                Err(e) => e,
            };
            warn!(
                "message {id} attempt {attempt}/{attempts} failed after {took} ms: HTTP {}, Twilio code {}: {error}",
                error.http_status().map_or("-".to_string(), |s| s.to_string()),
                error.twilio_code().map_or("-".to_string(), |c| c.to_string()),
            );
            match classify(&error) {
                Verdict::Fail => {
                    self.circuit.record_ok(); // Twilio judged the message: the account works
                    error!("message {id} failed permanently: {error}");
                    self.persist(&id, "record failed", || self.rest.mark_failed(&id));
                    return;
                }
                Verdict::Pause => {
                    let pause = self.circuit.trip();
                    error!(
                        "Twilio refused our account or URL ({error}); message {id} goes back to \
                         the queue and all sending pauses for {} s. Check TWILIO_ACCOUNT_SID, \
                         TWILIO_AUTH_TOKEN and TWILIO_API_URL.",
                        pause.as_secs()
                    );
                    return self.release(&id);
                }
                Verdict::Retry { after } => {
                    if pass == Pass::Probe {
                        self.circuit.abandon_probe();
                    }
                    if attempt == attempts {
                        error!("message {id} failed after {attempts} attempts: {error}");
                        self.persist(&id, "record failed", || self.rest.mark_failed(&id));
                        return;
                    }
                    let delay = after.map_or_else(
                        || self.retry_backoff.delay(attempt - 1),
                        |a| self.retry_backoff.clamp(a),
                    );
                    debug!("message {id} retrying in {} ms", delay.as_millis());
                    if !self.shutdown.sleep(delay) {
                        return self.release(&id);
                    }
                }
            }
        }
    }

    /// Claim `id`, retrying transient REST failures a few times. `None`: not ours to send.
    fn claim(&self, id: &MessageId) -> Option<ClaimedMessage> {
        for attempt in 0..CLAIM_ATTEMPTS {
            match self.rest.claim(id) {
                Ok(Claim::Won(m)) => return Some(m),
                Ok(Claim::Lost) => {
                    debug!("message {id} already claimed or no longer queued; skipped");
                    return None;
                }
                Ok(Claim::Malformed { id, reason }) => {
                    warn!("message {id} failed without sending: {reason}");
                    self.persist(&id, "record failed", || self.rest.mark_failed(&id));
                    return None;
                }
                Err(e) => {
                    warn!("message {id}: claim attempt {} failed: {e}", attempt + 1);
                    if attempt + 1 == CLAIM_ATTEMPTS
                        || !self.shutdown.sleep(self.persist_backoff.delay(attempt))
                    {
                        warn!("message {id} left queued; the next sweep will pick it up");
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Give a claimed, unsent message back to the queue.
    fn release(&self, id: &MessageId) {
        if self.persist(id, "release", || self.rest.release(id)) {
            info!("message {id} released back to queued_for_send");
        }
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
                    warn!("message {id}: {what}: the row was no longer 'sending'; left as it is");
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
fn check(message: &ClaimedMessage) -> Result<&str, String> {
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
