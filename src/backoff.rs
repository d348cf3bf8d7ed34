//! Exponential backoff: one small type with a minimum, a maximum and optional jitter, validated at
//! construction. It also clamps delays that come from outside (a server's `Retry-After`), so no
//! remote value can park a thread for an hour.

use std::time::Duration;

/// Whether delays are spread at random around their nominal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `min · 2^attempt` (capped): for pauses whose length is itself the signal.
    None,
    /// ±20 %: spreads the retries of many threads or instances so they do not arrive together.
    Spread,
}

/// Delays `min · 2^attempt`, capped at `max`, with or without jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// A backoff from `min` doubling up to `max` (`max` is raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration, jitter: Jitter) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            jitter,
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let base = self.min.saturating_mul(factor).min(self.max);
        if self.jitter == Jitter::None {
            return base;
        }
        // ±20 %: spreads reconnect storms of many instances without hiding the trend.
        let spread = fastrand::f64() * 0.4 + 0.8;
        base.mul_f64(spread).min(self.max)
    }

    /// A delay a server asked for, kept within `[0, max]`.
    pub fn clamp(&self, requested: Duration) -> Duration {
        requested.min(self.max)
    }

    /// The longest delay this backoff produces.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Jitter::None,
        );
        let got: Vec<u64> = (0..8).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            b.delay(500),
            Duration::from_secs(30),
            "no overflow on huge attempts"
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::new(
            Duration::from_millis(1000),
            Duration::from_secs(30),
            Jitter::Spread,
        );
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(
                d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400),
                "{d:?}"
            );
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "jitter must vary the delay");
        for _ in 0..50 {
            assert!(b.delay(10) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn clamps_remote_delays_and_fixes_bad_bounds() {
        let b = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
            Jitter::None,
        );
        assert_eq!(b.clamp(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(b.clamp(Duration::from_secs(2)), Duration::from_secs(2));
        let odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1), Jitter::None);
        assert_eq!(odd.max(), Duration::from_secs(5));
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1), Jitter::None);
        assert_eq!(zero.delay(0), Duration::from_millis(1));
    }
}
