//! A claim's lease and its fence: how long a claim lasts, and the token every later write of that
//! claim must match.
//!
//! # The stamp
//! With the seed's schema there is no column for a claim token, but while a row is `sending` its
//! `sent_at` is unused. A claim therefore writes `sent_at` = the moment its lease **expires**
//! (claimer's clock, microseconds, the sub-millisecond digits random so two claims of one row
//! never share a stamp). That one value is:
//! - **the fence**: every write that settles or gives back the claim (`sent`, `failed`, release,
//!   orphan recovery) is filtered on `status=eq.sending&sent_at=eq.<stamp>`; a retried, late or
//!   duplicated write cannot touch a row that has since been released and claimed again, because
//!   the new claim carries a new stamp;
//! - **the claim's age and length**, readable by any instance: a row is an orphan once its stamp is
//!   past its end by [`CLOCK_SKEW`] (and the settle window), whatever `SENDING_TIMEOUT_SECS` the *reading* instance runs with, so
//!   instances with different settings cannot break each other's leases.
//!
//! What an app reading the table sees: `sent_at` is `NULL` while `queued_for_send`, the lease's
//! end (a near-future time) while `sending`, the send time once `sent`, and `NULL` again on
//! `failed` or when a claim is given back.
//!
//! # The budget and renewal
//! A Twilio request (create or list page) may start only if it can end inside the lease: its
//! total timeout plus the bounded DNS resolution ([`Lease::can_start`]). The lease is short
//! (`SENDING_TIMEOUT_SECS`, 30 s by default) so that a crash strands a row for little longer than
//! that, and it is **renewed** while its sender still holds the row: a fenced write moves the stamp
//! to a new end ([`Lease::renewal`]), conditional on the old one. The sender renews whenever less
//! than [`renew_below`] is left, while it waits (pacer, circuit, backoff, settle window, a sibling
//! with the same text) and before each Twilio request, so the stamp readable by other instances is
//! never older than one renewal period. A renewal the fence refuses means the row is no longer
//! this claim's: the work stops.
//!
//! # Hand-over
//! At shutdown, a claim whose create is still in flight at the deadline is ended early: its stamp
//! is moved to *now* ([`Lease::ending_at`]), so a successor reconciles it once the settle window
//! has passed instead of after the rest of the lease.
//!
//! # Time
//! Time is an input: every method that depends on it takes the instant (and, to write a stamp,
//! the wall-clock time) it is asked at. The caller reads the clocks; tests pass made-up ones.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::timestamp;

/// How far apart two instances' clocks may be (NTP-synchronised hosts are within milliseconds;
/// this is the documented assumption the stamps rely on).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// One claim: its fence stamp and its deadline on this instance's monotonic clock.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `sent_at` as written by the claim (RFC 3339, microseconds, `Z`): the fence.
    stamp: String,
    /// When the lease ends, wall clock (what the stamp says).
    expires: SystemTime,
    /// When the lease ends, monotonic (what this instance obeys).
    deadline: Instant,
    /// When the claim was made, wall clock.
    claimed: SystemTime,
    /// The lease length.
    length: Duration,
}

impl Lease {
    /// A lease of `length` starting at `now` on the monotonic clock, which is `wall` on the wall
    /// clock (both read just before the claim request is sent, so the deadline is never later
    /// than the row's stamp says).
    pub fn start(length: Duration, now: Instant, wall: SystemTime) -> Lease {
        let expires = wall + length;
        // Random sub-millisecond digits: two claims of one row never share a stamp, even from
        // two hosts whose clocks agree to the millisecond.
        let expires = expires - Duration::from_nanos(u64::from(expires_sub_ms_nanos(expires)))
            + Duration::from_micros(fastrand::u64(0..1000));
        let deadline = now + expires.duration_since(wall).unwrap_or(length);
        Lease {
            stamp: stamp_text(expires),
            expires,
            deadline: deadline.min(now + length),
            claimed: wall,
            length,
        }
    }

    /// The next lease of this claim: the same length from `now` (`wall`), a new stamp, the same
    /// claim time. It applies once the fenced write moving the row's stamp to it succeeded.
    pub fn renewal(&self, now: Instant, wall: SystemTime) -> Lease {
        Lease {
            claimed: self.claimed,
            ..Lease::start(self.length, now, wall)
        }
    }

    /// A lease of this claim that ends at `now` (`wall`): what a hand-over writes.
    pub fn ending_at(&self, now: Instant, wall: SystemTime) -> Lease {
        Lease {
            claimed: self.claimed,
            ..Lease::start(Duration::ZERO, now, wall)
        }
    }

    /// The fence value (the row's `sent_at` while this claim holds it).
    pub fn stamp(&self) -> &str {
        &self.stamp
    }

    /// When the claim was made (this instance's wall clock).
    pub fn claimed_at(&self) -> SystemTime {
        self.claimed
    }

    /// The lease length this instance granted itself.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// When the lease ends (wall clock).
    pub fn expires(&self) -> SystemTime {
        self.expires
    }

    /// The monotonic deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether a request that may take up to `budget` can start at `now` and still end inside
    /// the lease.
    pub fn can_start(&self, budget: Duration, now: Instant) -> bool {
        now + budget <= self.deadline
    }

    /// The last moment a request taking up to `budget` may start.
    pub fn last_start(&self, budget: Duration) -> Instant {
        self.deadline.checked_sub(budget).unwrap_or(self.deadline)
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

/// Renew a lease once less than this is left: one request's `budget` and a quarter more, so that
/// a request can start at once after any wait, and a renewal (a REST write) has room to land.
pub fn renew_below(budget: Duration) -> Duration {
    budget + budget / 4
}

fn expires_sub_ms_nanos(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        % 1_000_000
}

/// `2026-12-02T05:44:53.123456Z`: the form written and filtered on. PostgreSQL keeps microseconds,
/// so the value read back compares equal.
pub fn stamp_text(t: SystemTime) -> String {
    timestamp::rfc3339_micros(t)
}

/// When a claim whose stamp says it expires at `expires` becomes over for everyone (see
/// [`is_expired`]).
pub fn due_at(expires: SystemTime, settle: Duration) -> SystemTime {
    expires + CLOCK_SKEW.max(settle)
}

/// Whether a claim whose stamp says it expires at `expires` is over for everyone, at wall time
/// `now`: past its end by the clock allowance and by `settle` (so that any ambiguous create it made
/// ended at least a settle window ago, and a "not found" in Twilio's list means something).
pub fn is_expired(expires: SystemTime, now: SystemTime, settle: Duration) -> bool {
    match now.duration_since(expires) {
        Ok(past) => past >= CLOCK_SKEW.max(settle),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-08-24T05:01:45Z, a wall-clock time to start leases at.
    fn wall0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_692_853_305)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn stamps_are_microsecond_rfc3339_and_distinct() {
        let t = UNIX_EPOCH + Duration::from_micros(1_692_853_305_042_017);
        assert_eq!(stamp_text(t), "2023-08-24T05:01:45.042017Z");
        let (t0, w0) = (Instant::now(), wall0());
        let a = Lease::start(secs(60), t0, w0);
        assert_eq!(a.stamp().len(), 27);
        assert!(
            a.stamp().starts_with("2023-08-24T05:02:45.000"),
            "the end of the lease, to the millisecond: {}",
            a.stamp()
        );
        assert!(a.stamp().ends_with('Z'));
        // Random sub-millisecond digits: two leases started at the same instant collide only by
        // a 1-in-1000 chance per pair; of six, at least five differ.
        let distinct = (0..6)
            .map(|_| Lease::start(secs(60), t0, w0).stamp().to_string())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() >= 5, "{distinct:?}");
        let parsed = timestamp::parse_rfc3339(a.stamp()).unwrap();
        assert_eq!(stamp_text(parsed), a.stamp(), "round-trips exactly");
        assert_eq!(parsed, a.expires());
    }

    #[test]
    fn deadline_never_later_than_the_stamp() {
        let t0 = Instant::now();
        // A wall time with sub-millisecond digits: the stamp's random ones may end it earlier
        // or later than `length` after the start.
        let w0 = wall0() + Duration::from_micros(700);
        for _ in 0..50 {
            let lease = Lease::start(secs(10), t0, w0);
            let wall_left = lease.expires().duration_since(w0).unwrap();
            assert!(lease.remaining(t0) <= wall_left);
            assert!(lease.remaining(t0) <= secs(10));
            assert!(lease.remaining(t0) > secs(10) - Duration::from_millis(1));
        }
        let lease = Lease::start(secs(10), t0, w0);
        assert_eq!(lease.remaining(t0 + secs(11)), Duration::ZERO);
        assert!(lease.deadline() <= t0 + secs(10));
        assert!(lease.can_start(secs(9), t0));
        assert!(!lease.can_start(secs(11), t0));
        assert!(!lease.can_start(secs(1), t0 + secs(9) + Duration::from_millis(1)));
        assert_eq!(lease.last_start(secs(4)), lease.deadline() - secs(4));
    }

    #[test]
    fn renewals_keep_the_claim_time_and_change_the_stamp() {
        let (t0, w0) = (Instant::now(), wall0());
        let lease = Lease::start(secs(30), t0, w0);
        let later = Duration::from_millis(3);
        let next = lease.renewal(t0 + later, w0 + later);
        assert_eq!(next.claimed_at(), lease.claimed_at());
        assert_eq!(next.claimed_at(), w0);
        assert_eq!(next.length(), lease.length());
        assert_ne!(next.stamp(), lease.stamp());
        assert!(next.expires() > lease.expires());
        assert!(next.deadline() > lease.deadline());
        let ended = lease.ending_at(t0 + later, w0 + later);
        assert_eq!(ended.claimed_at(), lease.claimed_at());
        // Only the random sub-millisecond digits separate its end from the hand-over's time.
        let off_by = match ended.expires().duration_since(w0 + later) {
            Ok(after) => after,
            Err(before) => before.duration(),
        };
        assert!(off_by < Duration::from_millis(1), "{off_by:?}");
        assert!(!ended.can_start(Duration::from_millis(1), t0 + later));
    }

    #[test]
    fn renewal_threshold_sits_between_the_budget_and_the_shortest_lease() {
        // The defaults: 15 s requests, 5 s to connect. A lease shorter than the threshold would
        // be renewed continuously; config refuses one below 1.5 × the budget.
        let budget = secs(20);
        let shortest = crate::config::shortest_lease_secs(secs(15));
        assert_eq!(renew_below(budget), secs(25));
        assert!(budget < renew_below(budget));
        assert!(renew_below(budget) < secs(shortest));
    }

    #[test]
    fn expiry_waits_for_skew_and_settle() {
        let end = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let settle = Duration::from_secs(10);
        assert!(!is_expired(end, end - Duration::from_secs(1), settle));
        assert!(!is_expired(end, end + Duration::from_secs(9), settle));
        assert!(is_expired(end, end + Duration::from_secs(10), settle));
        assert!(!is_expired(
            end,
            end + Duration::from_secs(4),
            Duration::ZERO
        ));
        assert!(is_expired(end, end + CLOCK_SKEW, Duration::ZERO));
        assert!(is_expired(end, due_at(end, settle), settle));
        assert!(!is_expired(
            end,
            due_at(end, settle) - Duration::from_millis(1),
            settle
        ));
    }
}
