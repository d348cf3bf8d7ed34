//! Orphan recovery: rows left in `sending` by an instance that died (SIGKILL, OOM, host loss),
//! or by one that could not settle a message because Twilio could not say whether it was sent.
//!
//! At start and every `ORPHAN_CHECK_SECS` one thread pages through `sending` rows. A row is an
//! orphan once its claim is older than `SENDING_TIMEOUT_SECS` (the lease: a live sender never
//! starts a Twilio request that could outlast it). The claim's age comes from `claimed_at` when
//! the optional migration (`sql/migrations/001_claimed_at.sql`) is installed — detected at start —
//! and otherwise from how long this instance has seen the row in `sending`, which can only be
//! shorter than the true age, so a row is never taken too early (only later, after a restart).
//!
//! Each orphan is reconciled with Twilio's list (same recipient and sender, exact body, created
//! since the row was created or claimed, not already recorded on another row): found → `sent`
//! with that SID; not found → back to `queued_for_send` for a normal send. When Twilio cannot be
//! asked, the row is left for the next round: an orphan is never sent blindly.

use std::collections::{HashMap, HashSet};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};

use crate::clock;
use crate::message::MessageId;
use crate::postgrest::{Rest, SendingRow};
use crate::sender::{check, InFlight};
use crate::shutdown::Shutdown;
use crate::twilio::Twilio;

/// Rows per page when listing `sending` rows.
const PAGE: usize = 100;
/// Allowance for clocks disagreeing when matching a message's creation time.
const CLOCK_SLACK: Duration = Duration::from_secs(60);
/// At most this many rows are tracked by observation (no `claimed_at`); more wait a round.
const MAX_TRACKED: usize = 100_000;

/// The orphan checker's dependencies.
pub struct OrphanCheck {
    /// REST reads and writes.
    pub rest: Rest,
    /// Twilio lookups.
    pub twilio: Twilio,
    /// This instance's own claims, never orphans.
    pub in_flight: InFlight,
    /// The lease.
    pub sending_timeout: Duration,
    /// Time between checks.
    pub interval: Duration,
    /// Stop.
    pub shutdown: Shutdown,
    /// Counts recovered orphans.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Start the orphan checker thread.
pub fn spawn(check: OrphanCheck) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("orphans".into())
        .stack_size(256 * 1024)
        .spawn(move || check.run())
}

impl OrphanCheck {
    fn run(&self) {
        let mut claimed_at_column: Option<bool> = None;
        let mut first_seen: HashMap<MessageId, Instant> = HashMap::new();
        loop {
            if claimed_at_column.is_none() {
                match self.rest.has_column("claimed_at") {
                    Ok(present) => {
                        info!(
                            "orphan recovery: {}",
                            if present {
                                "messages.claimed_at found; claim ages are exact"
                            } else {
                                "no messages.claimed_at column (optional migration); claim ages are observed"
                            }
                        );
                        claimed_at_column = Some(present);
                    }
                    Err(e) => warn!("orphan recovery: cannot inspect the messages table yet: {e}"),
                }
            }
            if let Some(with_claimed_at) = claimed_at_column {
                self.check_once(with_claimed_at, &mut first_seen);
            }
            if !self.shutdown.sleep(self.interval) {
                return;
            }
        }
    }

    /// One pass over the `sending` rows.
    fn check_once(&self, with_claimed_at: bool, first_seen: &mut HashMap<MessageId, Instant>) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut seen = HashSet::new();
        let mut after: Option<MessageId> = None;
        let (mut orphans, mut recovered) = (0, 0);
        loop {
            let page = match self
                .rest
                .sending_page(after.as_ref(), PAGE, with_claimed_at)
            {
                Ok(page) => page,
                Err(e) => {
                    warn!("orphan recovery: cannot list 'sending' rows: {e}; next round");
                    return;
                }
            };
            let full = page.len() == PAGE;
            for row in page {
                after = Some(row.id.clone());
                if self.shutdown.is_triggered() {
                    return;
                }
                seen.insert(row.id.clone());
                if self.in_flight.contains(&row.id) {
                    continue;
                }
                let claimed = row.claimed_at.as_deref().and_then(clock::parse_rfc3339);
                let age = match claimed {
                    Some(at) => wall.duration_since(at).unwrap_or_default(),
                    None if first_seen.len() < MAX_TRACKED || first_seen.contains_key(&row.id) => {
                        now - *first_seen.entry(row.id.clone()).or_insert(now)
                    }
                    None => Duration::ZERO,
                };
                if age < self.sending_timeout {
                    continue;
                }
                orphans += 1;
                if self.recover(&row, claimed) {
                    recovered += 1;
                    self.metrics.orphan_recovered();
                    first_seen.remove(&row.id);
                }
            }
            if !full {
                break;
            }
        }
        first_seen.retain(|id, _| seen.contains(id));
        if orphans > 0 {
            info!("orphan recovery: {recovered} of {orphans} orphaned message(s) settled");
        } else {
            debug!(
                "orphan recovery: no orphans among {} 'sending' row(s)",
                seen.len()
            );
        }
    }

    /// Settle one orphan; `true` when its row was updated.
    fn recover(&self, row: &SendingRow, claimed: Option<SystemTime>) -> bool {
        let id = &row.id;
        let Ok(to) = check(&row.message) else {
            // Not sendable: the normal path fails it with the reason.
            return self.release(id, "it cannot be sent as it is");
        };
        let since = claimed
            .or_else(|| row.created_at.as_deref().and_then(clock::parse_rfc3339))
            .unwrap_or(UNIX_EPOCH)
            .checked_sub(CLOCK_SLACK)
            .unwrap_or(UNIX_EPOCH);
        let candidates = match self.twilio.find_sent(to, &row.message.body, since) {
            Ok(c) => c,
            Err(e) => {
                warn!("orphan {id}: Twilio cannot say whether it was sent ({e}); next round");
                return false;
            }
        };
        for found in candidates {
            match self.rest.sid_owner(&found.sid) {
                Ok(Some(owner)) if &owner != id => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(
                        "orphan {id}: cannot check who owns {} ({e}); next round",
                        found.sid
                    );
                    return false;
                }
            }
            let at = clock::rfc3339_millis(found.created);
            return match self.rest.mark_sent(id, &found.sid, &at) {
                Ok(updated) => {
                    info!(
                        "orphan {id} had been sent as {}; recorded 'sent'",
                        found.sid
                    );
                    updated
                }
                Err(e) => {
                    warn!(
                        "orphan {id}: sent as {} but recording failed ({e}); next round",
                        found.sid
                    );
                    false
                }
            };
        }
        self.release(id, "Twilio has no such message")
    }

    fn release(&self, id: &MessageId, why: &str) -> bool {
        match self.rest.release(id) {
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
