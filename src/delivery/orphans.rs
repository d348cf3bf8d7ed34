//! Orphan recovery: rows left in `sending` by an instance that died (SIGKILL, OOM, host loss),
//! or by one that could not settle a message because Twilio could not say whether it was sent.
//!
//! At start, every `ORPHAN_CHECK_SECS`, and as soon as a claim it has seen is due, one thread
//! pages through `sending` rows. A row is an orphan once its claim is over for everyone: its stamp
//! (`sent_at`, the lease end written by the claim and moved by each renewal or a hand-over, see
//! [`crate::delivery::lease`]) is past by the clock allowance and the settle window, whatever
//! lease *this* instance uses. The next check is scheduled for the earliest moment a seen claim
//! becomes due, so a crashed instance's rows are settled a settle window after their short lease
//! ends, not a whole interval later. A row in `sending` without a readable stamp (claimed by an older
//! version, or set by hand) is aged by observation instead: how long this instance has seen it
//! with that same stamp, which is never longer than the truth, against this instance's lease.
//!
//! Each orphan is reconciled with Twilio's list ([`crate::delivery::reconcile`], created since the row was
//! created, the settle window long past; the SID a previous attempt recorded on a requeued row is
//! never taken for this claim's): found → `sent` with that SID; not found → back to
//! `queued_for_send` for a normal send; cannot tell → left for the next round. Every write is
//! fenced on the stamp that was read, so a row claimed again meanwhile is never touched.
//!
//! In scaled mode only the one sweeper ([`Ownership::is_sweeper`]) checks; the others look again
//! every `ROLE_POLL` whether they have become it (the default mode and an instance without a
//! membership always are).

use std::collections::{HashMap, HashSet};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use crate::delivery::in_flight::InFlight;
use crate::delivery::lease::{self, CLOCK_SKEW};
use crate::delivery::partitions::Ownership;
use crate::delivery::reconcile::{self, Look, Question, Window, CLOCK_SLACK};
use crate::delivery::sender::destination;
use crate::delivery::unrecorded::Unrecorded;
use crate::message::MessageId;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Claim, Fence, Rest, SendingRow};
use crate::timestamp;
use crate::twilio::client::Twilio;

/// Rows per page when listing `sending` rows.
const PAGE: usize = 100;
/// At most this many rows are tracked by observation; more wait a round.
const MAX_TRACKED: usize = 100_000;

/// The orphan checker's dependencies.
pub struct OrphanCheck {
    /// REST reads and writes.
    pub rest: Rest,
    /// Twilio lookups.
    pub twilio: Twilio,
    /// This instance's own claims, never orphans.
    pub in_flight: InFlight,
    /// This instance's lease, for rows without a stamp.
    pub sending_timeout: Duration,
    /// The settle window of reconciliation.
    pub settle: Duration,
    /// Time between checks.
    pub interval: Duration,
    /// Stop.
    pub shutdown: Shutdown,
    /// Counts recovered orphans.
    pub metrics: std::sync::Arc<crate::ops::metrics::Metrics>,
    /// Sends of this instance whose `sent` write waits (their SIDs are their rows').
    pub unrecorded: Unrecorded,
    /// Whether this instance is the one that checks (scaled mode).
    pub ownership: Ownership,
}

/// The soonest a scheduled check runs after the previous one.
const MIN_GAP: Duration = Duration::from_secs(1);
/// How often an instance that is not the sweeper looks whether it has become it.
const ROLE_POLL: Duration = Duration::from_secs(1);

/// Start the orphan checker thread.
pub fn spawn(check: OrphanCheck) -> std::io::Result<JoinHandle<()>> {
    crate::sync::spawn_named("orphans", 256 * 1024, move || check.run())
}

/// A claim as orphan recovery sees it: the row and the stamp it carried when read.
type Seen = (MessageId, Option<String>);

impl OrphanCheck {
    fn run(&self) {
        let mut first_seen: HashMap<Seen, Instant> = HashMap::new();
        loop {
            let wait = if self.ownership.is_sweeper() {
                let due = self.check_once(&mut first_seen);
                next_check(self.interval, due, SystemTime::now())
            } else {
                // What was observed is stale by the time this instance checks again.
                first_seen.clear();
                ROLE_POLL
            };
            if !self.shutdown.sleep(wait) {
                return;
            }
        }
    }

    /// One pass over the `sending` rows. Returns when the earliest claim seen but not yet over
    /// becomes due (wall clock), if any.
    fn check_once(&self, first_seen: &mut HashMap<Seen, Instant>) -> Option<SystemTime> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut due: Option<SystemTime> = None;
        let mut seen = HashSet::new();
        let mut after: Option<MessageId> = None;
        let (mut orphans, mut recovered) = (0, 0);
        loop {
            let page = match self.rest.sending_page(after.as_ref(), PAGE) {
                Ok(page) => page,
                Err(e) => {
                    warn!("orphan recovery: cannot list 'sending' rows: {e}; next round");
                    return due;
                }
            };
            let full = page.len() == PAGE;
            for row in page {
                after = Some(row.id.clone());
                if self.shutdown.is_triggered() {
                    return due;
                }
                if self.in_flight.contains(&row.id) {
                    continue;
                }
                let key: Seen = (row.id.clone(), row.stamp.clone());
                seen.insert(key.clone());
                let observed = if first_seen.len() < MAX_TRACKED || first_seen.contains_key(&key) {
                    Some(now - *first_seen.entry(key).or_insert(now))
                } else {
                    None
                };
                let fence = match judge_row(row.stamp.as_deref(), observed, wall, &self.rules()) {
                    RowVerdict::Live { due: None } => continue,
                    RowVerdict::Live { due: Some(at) } => {
                        due = Some(due.map_or(at, |d| d.min(at)));
                        continue;
                    }
                    RowVerdict::UnreadableStamp => {
                        orphans += 1;
                        warn!("orphan {}: unreadable claim stamp; left as it is", row.id);
                        continue;
                    }
                    RowVerdict::Orphan { stamp } => stamp,
                };
                orphans += 1;
                let fence = fence.as_deref().map_or(Fence::Unstamped, Fence::Stamp);
                if self.recover(&row, fence) {
                    recovered += 1;
                    self.metrics.orphan_recovered();
                }
            }
            if !full {
                break;
            }
        }
        first_seen.retain(|key, _| seen.contains(key));
        if orphans > 0 {
            info!("orphan recovery: {recovered} of {orphans} orphaned message(s) settled");
        } else {
            debug!(
                "orphan recovery: no orphans among {} 'sending' row(s)",
                seen.len()
            );
        }
        due
    }

    fn rules(&self) -> Rules {
        Rules {
            settle: self.settle,
            sending_timeout: self.sending_timeout,
        }
    }

    /// Settle one orphan; `true` when its row was updated.
    fn recover(&self, row: &SendingRow, fence: Fence<'_>) -> bool {
        let id = &row.id;
        let message = match self.rest.sending_message(id, fence) {
            Ok(Claim::Won(message)) => message,
            Ok(Claim::Lost) => {
                // Settled meanwhile (the fenced write below then changes nothing), or a body that
                // cannot be an SMS, which was never sent: fail it.
                return self.fail(
                    id,
                    fence,
                    "its content is absent or over Twilio's 1,600-character limit",
                );
            }
            Ok(Claim::Malformed { reason, .. }) => return self.fail(id, fence, &reason),
            Err(e) => {
                warn!("orphan {id}: cannot read it ({e}); next round");
                return false;
            }
        };
        let Ok(to) = destination(&message) else {
            // Not sendable: the normal path fails it with the reason.
            return self.release(id, fence, "it cannot be sent as it is");
        };
        let Some(_pair) = self.in_flight.try_lock_conversation(to, &message.body) else {
            debug!("orphan {id}: the same text to the same number is in flight here; next round");
            return false;
        };
        let since = row
            .created_at
            .as_deref()
            .and_then(timestamp::parse_rfc3339)
            .map_or(std::time::UNIX_EPOCH, |t| {
                timestamp::saturating_sub(t, CLOCK_SLACK)
            });
        let question = Question {
            id,
            to,
            body: &message.body,
            since,
            window: Window::Passed,
            previous_sid: message.previous_sid.as_deref(),
            unrecorded: &self.unrecorded,
        };
        let look = reconcile::look(&self.twilio, &self.rest, &question, &|| {
            !self.shutdown.is_triggered()
        });
        self.apply(id, fence, look)
    }

    /// Act on what Twilio's list said about an orphan; `true` when its row was updated.
    fn apply(&self, id: &MessageId, fence: Fence<'_>, look: Look) -> bool {
        match look {
            Look::Found(found) => {
                let at = timestamp::rfc3339_millis(found.created);
                match self.rest.mark_sent(id, fence, &found.sid, &at) {
                    Ok(updated) => {
                        if updated {
                            info!(
                                "orphan {id} had been sent as {}; recorded 'sent'",
                                found.sid
                            );
                        }
                        updated
                    }
                    Err(e) => {
                        warn!(
                            "orphan {id}: sent as {} but recording failed ({e}); next round",
                            found.sid
                        );
                        false
                    }
                }
            }
            Look::NotFound => self.release(id, fence, "Twilio has no such message"),
            Look::NotYet => false,
            Look::Unknown(reason) => {
                warn!("orphan {id}: cannot tell whether it was sent ({reason}); next round");
                false
            }
        }
    }

    fn fail(&self, id: &MessageId, fence: Fence<'_>, why: &str) -> bool {
        match self.rest.mark_failed(id, fence) {
            Ok(true) => {
                warn!("orphan {id} failed without sending: {why}");
                true
            }
            Ok(false) => false,
            Err(e) => {
                warn!("orphan {id}: recording 'failed' failed ({e}); next round");
                false
            }
        }
    }

    fn release(&self, id: &MessageId, fence: Fence<'_>, why: &str) -> bool {
        match self.rest.release(id, fence) {
            Ok(updated) => {
                if updated {
                    info!("orphan {id} put back to queued_for_send ({why})");
                }
                updated
            }
            Err(e) => {
                warn!("orphan {id}: release failed ({e}); next round");
                false
            }
        }
    }
}

/// What decides when a claim is over.
struct Rules {
    /// The settle window of reconciliation.
    settle: Duration,
    /// This instance's lease, for rows without a readable stamp.
    sending_timeout: Duration,
}

/// What one `sending` row (not held here) is to orphan recovery at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowVerdict {
    /// Its claim is not over; `due` is when it will be, when its stamp tells.
    Live {
        /// When the claim is over for everyone (wall clock).
        due: Option<SystemTime>,
    },
    /// Its claim is over for everyone: settle it, fenced on `stamp` (`None`: the row has none).
    Orphan {
        /// The stamp to fence on, written as the claim writes it.
        stamp: Option<String>,
    },
    /// Over by observation, but its stamp cannot be read, so no write can be fenced on it.
    UnreadableStamp,
}

/// The verdict on a row from its stamp as read, how long this instance has seen it with that
/// stamp (`None`: not tracked, the table is full), and the wall clock. A readable stamp is the
/// lease end: over once past by the clock allowance and the settle window. A row without one is
/// aged by observation, never longer than the truth, against this instance's lease.
fn judge_row(
    stamp: Option<&str>,
    observed: Option<Duration>,
    wall: SystemTime,
    rules: &Rules,
) -> RowVerdict {
    if let Some(end) = stamp.and_then(timestamp::parse_rfc3339) {
        return if lease::is_expired(end, wall, rules.settle) {
            RowVerdict::Orphan {
                stamp: Some(lease::stamp_text(end)),
            }
        } else {
            RowVerdict::Live {
                due: Some(lease::due_at(end, rules.settle)),
            }
        };
    }
    let over =
        observed.is_some_and(|age| age >= rules.sending_timeout + CLOCK_SKEW.max(rules.settle));
    match (over, stamp) {
        (false, _) => RowVerdict::Live { due: None },
        (true, None) => RowVerdict::Orphan { stamp: None },
        (true, Some(_)) => RowVerdict::UnreadableStamp,
    }
}

/// How long to wait before the next check: the interval, or less when a claim seen in the last
/// one becomes due sooner (a moment after it is due, and never sooner than [`MIN_GAP`]).
fn next_check(interval: Duration, due: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(due) = due else {
        return interval;
    };
    let until = due.duration_since(now).unwrap_or_default() + Duration::from_millis(200);
    until.clamp(MIN_GAP, interval.max(MIN_GAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_check_comes_when_a_seen_claim_is_due() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(next_check(minute, None, now), minute);
        let soon = now + Duration::from_secs(12);
        assert_eq!(
            next_check(minute, Some(soon), now),
            Duration::from_millis(12_200)
        );
        assert_eq!(next_check(minute, Some(now + minute * 5), now), minute);
        assert_eq!(
            next_check(minute, Some(now - Duration::from_secs(3)), now),
            MIN_GAP,
            "overdue: soon, but not in a busy loop"
        );
    }
    #[test]
    fn every_row_verdict() {
        let (rules, wall) = (test_rules(), test_wall());
        for (what, stamp, observed, expected) in row_cases() {
            let stamp = stamp.as_deref();
            assert_eq!(judge_row(stamp, observed, wall, &rules), expected, "{what}");
        }
    }

    fn test_rules() -> Rules {
        Rules {
            settle: Duration::from_secs(30),
            sending_timeout: Duration::from_secs(60),
        }
    }

    fn test_wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// One case per verdict: what it is about, the stamp as read, how long it was observed,
    /// the verdict.
    fn row_cases() -> Vec<(&'static str, Option<String>, Option<Duration>, RowVerdict)> {
        let (rules, wall) = (test_rules(), test_wall());
        let at = |offset: i64| {
            let t = if offset >= 0 {
                wall + Duration::from_secs(offset as u64)
            } else {
                wall - Duration::from_secs((-offset) as u64)
            };
            lease::stamp_text(t)
        };
        let (ended_long_ago, ended_just_now, running) = (at(-36), at(-10), at(20));
        let unstamped_over = rules.sending_timeout + rules.settle;
        vec![
            (
                "stamp past by the clock allowance and the settle window: orphan, fenced on it",
                Some(ended_long_ago.clone()),
                None,
                RowVerdict::Orphan {
                    stamp: Some(ended_long_ago.clone()),
                },
            ),
            (
                "a lease that ended inside the settle window: due later",
                Some(ended_just_now.clone()),
                Some(Duration::from_secs(3600)),
                RowVerdict::Live {
                    due: Some(lease::due_at(
                        timestamp::parse_rfc3339(&ended_just_now).unwrap(),
                        rules.settle,
                    )),
                },
            ),
            (
                "a running lease: due when it ends plus the allowances",
                Some(running.clone()),
                None,
                RowVerdict::Live {
                    due: Some(lease::due_at(
                        timestamp::parse_rfc3339(&running).unwrap(),
                        rules.settle,
                    )),
                },
            ),
            (
                "no stamp, seen for a lease and the settle window: orphan, fenced on no stamp",
                None,
                Some(unstamped_over),
                RowVerdict::Orphan { stamp: None },
            ),
            (
                "no stamp, seen for less: not yet",
                None,
                Some(unstamped_over - Duration::from_secs(1)),
                RowVerdict::Live { due: None },
            ),
            (
                "no stamp and not tracked (the table is full): waits a round",
                None,
                None,
                RowVerdict::Live { due: None },
            ),
            (
                "an unreadable stamp aged by observation: over, but no write can be fenced",
                Some("yesterday".into()),
                Some(unstamped_over),
                RowVerdict::UnreadableStamp,
            ),
            (
                "an unreadable stamp seen briefly: not yet",
                Some("yesterday".into()),
                Some(Duration::from_secs(1)),
                RowVerdict::Live { due: None },
            ),
        ]
    }
}
