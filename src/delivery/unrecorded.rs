//! Sends Twilio accepted whose `sent` write cannot apply: PostgREST refuses it with a 4xx that
//! retrying at once will not change (a trigger raising, a check constraint, a revoked key, row
//! security). The fact (row, SID) must not be lost, and must not pin a sender thread either.
//!
//! The sender retries such a write a few times, then hands the fact here: it is logged at ERROR
//! with the row and the SID, counted in `/metrics` (`sms_sender_unrecorded_sends`), and retried in
//! the background until it applies, the row turns out to be settled otherwise, or the process
//! ends (then every fact left is logged at ERROR again). The list is bounded; a fact that does not
//! fit is only logged — orphan recovery can still find that SMS in Twilio's list.
//!
//! While a fact waits here, reconciliation treats its SID as that row's ([`Unrecorded::owner_of`]),
//! so no sibling with the same recipient and text can adopt the SMS.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{error, info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::message::MessageId;
use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Fence, Rest, RestError};
use crate::sync::Locked;

/// At most this many facts are kept.
pub const CAPACITY: usize = 1000;

/// A message Twilio accepted whose row does not say so yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// The row.
    pub id: MessageId,
    /// Twilio's SID for it.
    pub sid: String,
    /// The `sent_at` to record.
    pub sent_at: String,
    /// The claim's stamp when the sender let go (the fence of the retried write).
    pub stamp: String,
}

/// The waiting facts, shared by the senders, reconciliation and the retry thread.
#[derive(Clone)]
pub struct Unrecorded {
    facts: Arc<Mutex<Vec<Fact>>>,
    metrics: Arc<Metrics>,
}

impl Unrecorded {
    /// An empty list reporting its length to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Unrecorded {
        Unrecorded {
            facts: Arc::default(),
            metrics,
        }
    }

    /// Keep `fact` for the background retry; `false` when the list is full (logged).
    pub fn keep(&self, fact: Fact) -> bool {
        let mut facts = self.facts.locked();
        if facts.len() >= CAPACITY {
            error!(
                "message {} WAS SENT as {} and its 'sent' write cannot apply; {CAPACITY} such \
                 messages are waiting already, so this one is not retried here (orphan recovery \
                 can still record it from Twilio's list)",
                fact.id, fact.sid
            );
            return false;
        }
        error!(
            "message {} WAS SENT as {} but Supabase refuses to record it; kept in memory and \
             retried in the background (see sms_sender_unrecorded_sends)",
            fact.id, fact.sid
        );
        facts.push(fact);
        self.metrics.set_unrecorded(facts.len());
        true
    }

    /// The row whose message has SID `sid`, if it is waiting here.
    pub fn owner_of(&self, sid: &str) -> Option<MessageId> {
        self.facts
            .locked()
            .iter()
            .find(|f| f.sid == sid)
            .map(|f| f.id.clone())
    }

    /// How many facts wait.
    pub fn len(&self) -> usize {
        self.facts.locked().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Try every waiting fact once; returns how many are left.
    pub fn retry(&self, rest: &Rest) -> usize {
        let waiting = self.facts.locked().clone();
        let mut done = Vec::new();
        for fact in &waiting {
            match record(rest, fact) {
                Ok(()) => done.push(fact.sid.clone()),
                Err(e) => warn!(
                    "message {} (sent as {}): recording it still fails: {e}",
                    fact.id, fact.sid
                ),
            }
        }
        let mut facts = self.facts.locked();
        facts.retain(|f| !done.contains(&f.sid));
        self.metrics.set_unrecorded(facts.len());
        facts.len()
    }

    /// Log every fact still waiting (the process is ending).
    pub fn report(&self) {
        for fact in self.facts.locked().iter() {
            error!(
                "shutdown: message {} WAS SENT as {} and its row still does not say so; orphan \
                 recovery records it from Twilio's list once the database accepts the write",
                fact.id, fact.sid
            );
        }
    }
}

/// Write one fact: `Ok` when the row records the SID now, or is settled otherwise.
fn record(rest: &Rest, fact: &Fact) -> Result<(), RestError> {
    if rest.mark_sent(
        &fact.id,
        Fence::Stamp(&fact.stamp),
        &fact.sid,
        &fact.sent_at,
    )? {
        info!(
            "message {} recorded 'sent' as {} at last",
            fact.id, fact.sid
        );
        return Ok(());
    }
    match rest.recorded_sid(&fact.id)? {
        Some(sid) if sid == fact.sid => {
            info!(
                "message {} is recorded as {} (by another path)",
                fact.id, fact.sid
            );
        }
        other => error!(
            "message {} WAS SENT as {} but its row was settled otherwise meanwhile ({}); it is \
             not overwritten",
            fact.id,
            fact.sid,
            other.map_or("no SID".to_string(), |s| format!("records {s}"))
        ),
    }
    Ok(())
}

/// Start the thread that retries waiting facts: every few seconds while there are some.
pub fn spawn(
    unrecorded: Unrecorded,
    rest: Rest,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let backoff = Backoff::new(
        Duration::from_secs(2),
        Duration::from_secs(60),
        Jitter::Spread,
    );
    crate::sync::spawn_named("unrecorded", 128 * 1024, move || {
        let mut round = 0u32;
        loop {
            let pause = if unrecorded.is_empty() {
                round = 0;
                Duration::from_secs(5)
            } else {
                round = round.saturating_add(1);
                backoff.delay(round - 1)
            };
            if !shutdown.sleep(pause) {
                return;
            }
            if !unrecorded.is_empty() {
                unrecorded.retry(&rest);
            }
        }
    })
}
