//! The receipts worker: applies verified delivery receipts (Twilio status callbacks, read and
//! checked in [`crate::twilio::receipts`]) to their rows.
//!
//! Updates are monotonic and idempotent: a row recording the SID moves only from `sending`/`sent`
//! to `delivered` (with `delivered_at`), `undelivered` or `failed`; a row that records no SID yet
//! (`sending`, or given back to `queued_for_send`) takes the SID and the receipt's status. A
//! duplicate, or a late `sent` after `delivered`, changes nothing.
//!
//! Receipts run on a worker thread fed by the [`Inbox`], so health probes never wait on the
//! database. One that cannot be applied yet (database failing) is kept, at most [`MAX_PENDING`]
//! of them for at most [`PENDING_FOR`], and retried; every receipt dropped after it was
//! acknowledged is logged with its SID and the reason.
//!
//! **Replays.** Twilio's signature has no timestamp, so a captured callback verifies forever and
//! can be posted any number of times. Three rules make that cost nothing:
//! - a (SID, status) pair taken within [`SEEN_FOR`] (at most [`MAX_SEEN`] pairs remembered) is
//!   answered 200 and not queued again ([`Offer::Duplicate`]); statuses no row shows are not
//!   queued at all;
//! - a callback without our parameter whose SID no row records is looked up once (one `PATCH`,
//!   one read) and dropped, counted, and logged through [`Rejections`] (one line per interval,
//!   with a count): every message created with receipts on names its row, so such a callback is
//!   an older message's, or a replay;
//! - receipts that name their row have a room of their own: those that do not wait in a separate
//!   room of [`UNNAMED_ROOM`] (beyond it they are refused with 503), and the worker applies
//!   named receipts first, so no flood can cost a receipt for a row we know.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use crate::message::Status;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Rest, RestError};
use crate::sync::Locked;
use crate::timestamp;
use crate::twilio::receipts::{
    InboxCounts, Offer, Receipt, ReceiptInbox, Rejections, MESSAGE_PARAM, REJECTION_LOG_INTERVAL,
    SEEN_FOR,
};

/// At most this many receipts wait to be applied.
pub const MAX_PENDING: usize = 10_000;
/// A receipt that could not be applied for this long is dropped (with a log line): as long as
/// its (SID, status) pair is remembered, so a receipt still waiting is never taken twice.
pub const PENDING_FOR: Duration = SEEN_FOR;

/// Whether a receipt can change a row: only these statuses are ever written, and a `sent`
/// callback that does not name its row says only what the row says already.
fn actionable(receipt: &Receipt) -> bool {
    match Status::from_receipt(&receipt.status) {
        Some(Status::Sent) => receipt.message.is_some(),
        Some(_) => true,
        None => false, // queued/sending/accepted/scheduled/read/…: nothing a row shows
    }
}

/// At most this many pairs are remembered (the oldest are forgotten first).
pub const MAX_SEEN: usize = 10_000;
/// Receipts that do not name their row (no [`MESSAGE_PARAM`]: messages created before it
/// existed, or a replay of such a callback) wait in a room of their own, at most this many, so
/// they can never take the room of a receipt that names its row.
pub const UNNAMED_ROOM: usize = 1_000;

/// The (SID, status) pairs taken recently: a set with insertion-time expiry and a size bound.
///
/// Pairs are kept as 64-bit keyed hashes (random keys per process), 24 bytes each: a false
/// "duplicate" needs a collision among at most [`MAX_SEEN`] live pairs (odds about 3·10⁻¹²),
/// and nobody can aim for one, since every pair comes from a verified callback.
struct Seen {
    hasher: std::collections::hash_map::RandomState,
    keys: HashSet<u64>,
    order: VecDeque<(Instant, u64)>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            hasher: Default::default(),
            keys: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn key(&self, receipt: &Receipt) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one((receipt.sid.as_str(), receipt.status.as_str()))
    }

    /// Forget pairs older than [`SEEN_FOR`], and the oldest beyond [`MAX_SEEN`].
    fn prune(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if self.order.len() <= MAX_SEEN && now.saturating_duration_since(at) < SEEN_FOR {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&key);
        }
    }

    fn contains(&mut self, receipt: &Receipt, now: Instant) -> bool {
        self.prune(now);
        self.keys.contains(&self.key(receipt))
    }

    fn insert(&mut self, receipt: &Receipt, now: Instant) {
        let key = self.key(receipt);
        if self.keys.insert(key) {
            self.order.push_back((now, key));
        }
        self.prune(now);
    }
}

/// A receipt waiting to be applied.
struct Pending {
    receipt: Receipt,
    since: Instant,
    next_try: Instant,
    tries: u32,
}

impl Pending {
    fn new(receipt: Receipt, now: Instant) -> Pending {
        Pending {
            receipt,
            since: now,
            next_try: now,
            tries: 0,
        }
    }
}

/// Everything acknowledged and not applied yet, in two rooms, and the pairs seen.
///
/// Invariants: `named` holds only receipts naming their row, at most [`MAX_PENDING`] (when full,
/// the oldest is dropped, with a log line, for the new one); `unnamed` the others, at most
/// [`UNNAMED_ROOM`] (when full, new ones are refused); a pair is in `seen` only if a receipt
/// with it was queued. The worker takes named receipts first.
struct Queue {
    named: VecDeque<Pending>,
    unnamed: VecDeque<Pending>,
    seen: Seen,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            named: VecDeque::new(),
            unnamed: VecDeque::new(),
            seen: Seen::new(),
        }
    }

    fn offer(&mut self, receipt: Receipt, now: Instant) -> Offer {
        if !actionable(&receipt) {
            return Offer::Ignored;
        }
        if self.seen.contains(&receipt, now) {
            return Offer::Duplicate;
        }
        if receipt.message.is_some() {
            if self.named.len() >= MAX_PENDING {
                let oldest = (0..self.named.len())
                    .min_by_key(|&i| self.named[i].since)
                    .and_then(|i| self.named.remove(i));
                if let Some(oldest) = oldest {
                    warn!(
                        "delivery receipt for {} ({}) dropped: {MAX_PENDING} receipts already \
                         wait to be applied",
                        oldest.receipt.sid, oldest.receipt.status
                    );
                }
            }
            self.seen.insert(&receipt, now);
            self.named.push_back(Pending::new(receipt, now));
        } else {
            if self.unnamed.len() >= UNNAMED_ROOM {
                return Offer::Full;
            }
            self.seen.insert(&receipt, now);
            self.unnamed.push_back(Pending::new(receipt, now));
        }
        Offer::Queued
    }

    /// The first receipt due at `now`, named ones first.
    fn take_due(&mut self, now: Instant) -> Option<Pending> {
        for room in [&mut self.named, &mut self.unnamed] {
            if let Some(i) = room.iter().position(|p| p.next_try <= now) {
                return room.remove(i);
            }
        }
        None
    }

    /// Put back a receipt to try again later.
    fn put_back(&mut self, pending: Pending) {
        if pending.receipt.message.is_some() {
            self.named.push_back(pending);
        } else {
            self.unnamed.push_back(pending);
        }
    }

    /// When the next receipt is due, if any waits.
    fn next_due(&self) -> Option<Instant> {
        self.named
            .iter()
            .chain(self.unnamed.iter())
            .map(|p| p.next_try)
            .min()
    }

    fn len(&self) -> usize {
        self.named.len() + self.unnamed.len()
    }
}

/// What the HTTP handlers and the worker share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a receipt is queued.
    arrived: Condvar,
    /// Verified callbacks answered without queueing: the pair was taken within [`SEEN_FOR`].
    duplicates: AtomicU64,
    /// Receipts without our parameter whose SID no row records: dropped after one lookup.
    unmatched: AtomicU64,
    /// Verified callbacks refused for want of room (answered 503).
    refused: AtomicU64,
}

/// Where verified receipts go; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::new()),
                arrived: Condvar::new(),
                duplicates: AtomicU64::new(0),
                unmatched: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }
}

impl ReceiptInbox for Inbox {
    /// Hand over a verified receipt (never waits on the network). Only [`Offer::Full`] should
    /// be answered with an error (503).
    fn offer(&self, receipt: Receipt) -> Offer {
        let offer = self.shared.queue.locked().offer(receipt, Instant::now());
        match offer {
            Offer::Queued => self.shared.arrived.notify_one(),
            Offer::Duplicate => {
                self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Offer::Full => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            Offer::Ignored => {}
        }
        offer
    }

    fn counts(&self) -> InboxCounts {
        let s = &self.shared;
        InboxCounts {
            duplicates: s.duplicates.load(Ordering::Relaxed),
            unmatched: s.unmatched.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            waiting: s.queue.locked().len(),
        }
    }
}

/// Start the worker that applies receipts; returns its inbox.
pub fn spawn(rest: Rest, shutdown: Shutdown) -> std::io::Result<(Inbox, JoinHandle<()>)> {
    let inbox = Inbox::new();
    let shared = inbox.shared.clone();
    let handle = crate::sync::spawn_named("receipts", 256 * 1024, move || {
        work(&shared, &rest, &shutdown)
    })?;
    Ok((inbox, handle))
}

/// What one try to apply a receipt did.
enum Applied {
    /// The row changed.
    Done,
    /// Nothing to change (duplicate, out of order, not ours).
    Nothing,
    /// No row records this SID (only for receipts that do not name their row).
    NotYet,
    /// The database failed.
    Failed(RestError),
}

/// Take the next due receipt, waiting for one (woken at least every second, so shutdown is
/// seen); `None` at shutdown.
fn next_due(shared: &Shared, shutdown: &Shutdown) -> Option<Pending> {
    let mut queue = shared.queue.locked();
    loop {
        if shutdown.is_triggered() {
            return None;
        }
        let now = Instant::now();
        if let Some(pending) = queue.take_due(now) {
            return Some(pending);
        }
        let wait = queue
            .next_due()
            .map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_secs(1));
        queue = match shared.arrived.wait_timeout(queue, wait) {
            Ok((queue, _)) => queue,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

fn work(shared: &Shared, rest: &Rest, shutdown: &Shutdown) {
    // Receipts without our parameter whose SID no row records: one line per interval.
    let unmatched_log = Rejections::new(REJECTION_LOG_INTERVAL);
    while let Some(mut p) = next_due(shared, shutdown) {
        let outcome = apply(rest, &p.receipt);
        let now = Instant::now();
        let reason = match outcome {
            Applied::Done | Applied::Nothing => continue,
            Applied::NotYet => {
                // Looked up once and dropped: every receipt of ours names its row, so this is
                // an older message's (recorded long ago, or never by us) or a replay; retrying
                // it would let a replayed callback cost a read and a write every few seconds.
                shared.unmatched.fetch_add(1, Ordering::Relaxed);
                if let Some(count) = unmatched_log.record(now) {
                    warn!(
                        "{count} delivery receipt(s) without {MESSAGE_PARAM} dropped: no row \
                         records their SID (latest: {} {}; at most one such line per {} s)",
                        p.receipt.sid,
                        p.receipt.status,
                        REJECTION_LOG_INTERVAL.as_secs()
                    );
                }
                continue;
            }
            Applied::Failed(e) => {
                warn!(
                    "delivery receipt for {}: update failed ({e}); will retry",
                    p.receipt.sid
                );
                format!("the database kept failing ({e})")
            }
        };
        if now.duration_since(p.since) >= PENDING_FOR {
            warn!(
                "delivery receipt for {} ({}) dropped after {} s: {reason}",
                p.receipt.sid,
                p.receipt.status,
                PENDING_FOR.as_secs()
            );
            continue;
        }
        p.tries += 1;
        p.next_try = now + Duration::from_millis(500 << p.tries.min(6));
        shared.queue.locked().put_back(p);
    }
    let queue = shared.queue.locked();
    if queue.len() > 0 {
        let sids: Vec<&str> = queue
            .named
            .iter()
            .chain(queue.unnamed.iter())
            .take(20)
            .map(|p| p.receipt.sid.as_str())
            .collect();
        warn!(
            "shutdown: {} acknowledged delivery receipt(s) not applied and dropped (database \
             failing, or not reached before shutdown): {}{}",
            queue.len(),
            sids.join(", "),
            if queue.len() > sids.len() {
                ", …"
            } else {
                ""
            }
        );
    }
}

/// Apply one receipt to its row.
fn apply(rest: &Rest, receipt: &Receipt) -> Applied {
    let now = SystemTime::now();
    let Some(new_status) = Status::from_receipt(&receipt.status) else {
        return Applied::Nothing; // queued/sending/accepted/…: nothing a row shows
    };
    let delivered_at = (new_status == Status::Delivered).then(|| timestamp::rfc3339_millis(now));
    if matches!(new_status, Status::Undelivered | Status::Failed) {
        warn!(
            "delivery receipt: {} is {new_status} (Twilio error code {})",
            receipt.sid,
            receipt.error_code.as_deref().unwrap_or("-")
        );
    }
    let result = match &receipt.message {
        Some(id) => rest.apply_receipt_to(
            id,
            &receipt.sid,
            new_status,
            delivered_at.as_deref(),
            &timestamp::rfc3339_millis(now),
        ),
        None if new_status == Status::Sent => return Applied::Nothing, // the row says so already
        None => rest.apply_receipt(&receipt.sid, new_status, delivered_at.as_deref()),
    };
    match result {
        Ok(true) => {
            info!("delivery receipt: {} → {new_status}", receipt.sid);
            Applied::Done
        }
        Ok(false) if receipt.message.is_some() => Applied::Nothing,
        Ok(false) => match rest.sid_owner(&receipt.sid) {
            Ok(Some(_)) => Applied::Nothing, // recorded, and already past this status
            Ok(None) => Applied::NotYet,
            Err(e) => Applied::Failed(e),
        },
        Err(e) => Applied::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    fn receipt(sid: &str, status: &str, named: bool) -> Receipt {
        Receipt {
            sid: sid.to_string(),
            status: status.to_string(),
            error_code: None,
            message: named
                .then(|| MessageId::parse("6f1c2e0a-0000-4000-8000-000000000001").unwrap()),
        }
    }

    fn sid(n: usize) -> String {
        format!("SM{n:032}")
    }

    #[test]
    fn a_repeated_pair_is_answered_without_queueing_until_it_expires() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let r = receipt(&sid(1), "delivered", true);
        assert_eq!(q.offer(r.clone(), t0), Offer::Queued);
        for s in 1..100 {
            assert_eq!(
                q.offer(r.clone(), t0 + Duration::from_millis(s)),
                Offer::Duplicate
            );
        }
        assert_eq!(q.len(), 1, "duplicates never take room");
        // Another status of the same message is news.
        assert_eq!(q.offer(receipt(&sid(1), "sent", true), t0), Offer::Queued);
        // Still a duplicate after it was applied (taken out of the queue).
        assert!(q.take_due(t0).is_some());
        assert_eq!(q.offer(r.clone(), t0 + SEEN_FOR / 2), Offer::Duplicate);
        // Forgotten after SEEN_FOR: queued again (and applying it again changes nothing).
        assert_eq!(q.offer(r, t0 + SEEN_FOR), Offer::Queued);
    }

    #[test]
    fn statuses_no_row_shows_are_not_queued() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        for status in ["queued", "accepted", "sending", "scheduled", "read", ""] {
            assert_eq!(q.offer(receipt(&sid(1), status, true), t0), Offer::Ignored);
        }
        assert_eq!(
            q.offer(receipt(&sid(1), "sent", false), t0),
            Offer::Ignored,
            "an unnamed `sent` says what the row says already"
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_seen_set_is_bounded() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        for n in 0..MAX_SEEN + 500 {
            assert_eq!(
                q.offer(receipt(&sid(n), "delivered", true), t0),
                Offer::Queued
            );
            q.take_due(t0);
        }
        assert_eq!(q.seen.order.len(), MAX_SEEN);
        assert_eq!(q.seen.keys.len(), MAX_SEEN);
        // The oldest were forgotten, the newest are remembered.
        assert_eq!(
            q.offer(receipt(&sid(0), "delivered", true), t0),
            Offer::Queued
        );
        assert_eq!(
            q.offer(receipt(&sid(MAX_SEEN + 499), "delivered", true), t0),
            Offer::Duplicate
        );
    }

    #[test]
    fn receipts_naming_their_row_keep_their_room_and_go_first() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        for n in 0..UNNAMED_ROOM {
            assert_eq!(
                q.offer(receipt(&sid(n), "delivered", false), t0),
                Offer::Queued
            );
        }
        assert_eq!(
            q.offer(receipt(&sid(UNNAMED_ROOM), "delivered", false), t0),
            Offer::Full,
            "the unnamed room is full"
        );
        assert_eq!(
            q.offer(receipt(&sid(UNNAMED_ROOM), "delivered", false), t0),
            Offer::Full,
            "a refused receipt is not remembered: offered again, it is refused again, not \
             taken for a duplicate"
        );
        let named = receipt(&sid(UNNAMED_ROOM + 1), "delivered", true);
        assert_eq!(q.offer(named.clone(), t0), Offer::Queued);
        assert_eq!(
            q.take_due(t0).map(|p| p.receipt),
            Some(named),
            "named first"
        );
        assert!(q.take_due(t0).is_some_and(|p| p.receipt.message.is_none()));
        // Once there is room again, unnamed receipts are taken again.
        assert_eq!(
            q.offer(receipt(&sid(UNNAMED_ROOM), "delivered", false), t0),
            Offer::Queued
        );
    }

    #[test]
    fn a_full_named_room_drops_its_oldest_for_the_new_one() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        for n in 0..MAX_PENDING {
            let at = t0 + Duration::from_millis(n as u64);
            assert_eq!(
                q.offer(receipt(&sid(n), "delivered", true), at),
                Offer::Queued
            );
        }
        let at = t0 + Duration::from_secs(60);
        let newest = receipt(&sid(MAX_PENDING), "delivered", true);
        assert_eq!(q.offer(newest.clone(), at), Offer::Queued);
        assert_eq!(q.named.len(), MAX_PENDING);
        assert!(
            q.named.iter().all(|p| p.receipt.sid != sid(0)),
            "the oldest went"
        );
        assert!(q.named.iter().any(|p| p.receipt == newest));
    }

    #[test]
    fn receipts_wait_for_their_next_try() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.offer(receipt(&sid(1), "delivered", true), t0);
        let mut p = q.take_due(t0).unwrap();
        p.next_try = t0 + Duration::from_secs(1);
        q.put_back(p);
        assert!(q.take_due(t0).is_none());
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(q.take_due(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn the_inbox_counts_what_it_did() {
        let inbox = Inbox::new();
        let r = receipt(&sid(1), "delivered", false);
        assert_eq!(inbox.offer(r.clone()), Offer::Queued);
        assert_eq!(inbox.offer(r), Offer::Duplicate);
        assert_eq!(
            inbox.counts(),
            InboxCounts {
                duplicates: 1,
                unmatched: 0,
                refused: 0,
                waiting: 1,
            }
        );
    }
}
