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
//! # The budget
//! A Twilio request (create or list page) may start only if it can end inside the lease: its
//! total timeout plus the bounded DNS resolution ([`Lease::can_start`]). Waiting (pacer, circuit,
//! backoff, settle window) spends lease time, so each request checks again right before it starts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::clock;

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
    /// A lease of `length` starting now (taken just before the claim request is sent, so the
    /// deadline is never later than the row's stamp says).
    pub fn start(length: Duration) -> Lease {
        let (now, wall) = (Instant::now(), SystemTime::now());
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

    /// Whether a request that may take up to `budget` can start now and still end inside the lease.
    pub fn can_start(&self, budget: Duration) -> bool {
        Instant::now() + budget <= self.deadline
    }

    /// The last moment a request taking up to `budget` may start.
    pub fn last_start(&self, budget: Duration) -> Instant {
        self.deadline.checked_sub(budget).unwrap_or(self.deadline)
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
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
    clock::rfc3339_micros(t)
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

    #[test]
    fn stamps_are_microsecond_rfc3339_and_distinct() {
        let t = UNIX_EPOCH + Duration::from_micros(1_692_853_305_042_017);
        assert_eq!(stamp_text(t), "2023-08-24T05:01:45.042017Z");
        let a = Lease::start(Duration::from_secs(60));
        let b = Lease::start(Duration::from_secs(60));
        assert_eq!(a.stamp().len(), 27);
        assert!(a.stamp().ends_with('Z'));
        // Random sub-millisecond digits: equal only by a 1-in-1000 chance per pair; 5 pairs.
        let distinct = (0..5)
            .map(|_| Lease::start(Duration::from_secs(60)).stamp().to_string())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() >= 4 || a.stamp() != b.stamp());
        let parsed = clock::parse_rfc3339(a.stamp()).unwrap();
        assert_eq!(stamp_text(parsed), a.stamp(), "round-trips exactly");
    }

    #[test]
    fn deadline_never_later_than_the_stamp() {
        let lease = Lease::start(Duration::from_secs(10));
        let wall_left = lease.expires().duration_since(SystemTime::now()).unwrap();
        assert!(lease.remaining() <= wall_left + Duration::from_millis(5));
        assert!(lease.can_start(Duration::from_secs(9)));
        assert!(!lease.can_start(Duration::from_secs(11)));
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
    }
}
