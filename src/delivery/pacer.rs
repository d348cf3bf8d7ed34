//! `MAX_SENDS_PER_SECOND`: one pacer shared by every sender thread, so a 10DLC, toll-free or short
//! code sender stays within the throughput its carrier grants.
//!
//! A token bucket of depth one: each send takes the next free slot, slots are `1/rate` apart, and
//! a thread whose slot is in the future sleeps until it. Work waits in the queue; nothing is
//! dropped. Without a rate every call returns at once.
//!
//! Time is an input: [`Pacer::reserve`] decides, at a given instant, which slot a send gets;
//! only [`Pacer::wait_until`] reads the clock and sleeps until that slot.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// The shared pacer.
pub struct Pacer {
    /// Time between two sends; `None` for unlimited.
    interval: Option<Duration>,
    /// The earliest time the next send may start; `None` until the first slot is taken (free
    /// at once).
    next: Mutex<Option<Instant>>,
}

/// The slot [`Pacer::reserve`] gave a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The send may start at once.
    Now,
    /// The send may start at this instant (later than the one asked at).
    At(Instant),
    /// The next free slot is later than the caller may start; nothing was taken.
    TooLate,
}

impl Pacer {
    /// A pacer allowing `per_second` sends per second (`None`: unlimited).
    pub fn new(per_second: Option<f64>) -> Pacer {
        Pacer {
            interval: per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(None),
        }
    }

    /// At `now`, take the next free slot that starts no later than `latest` (a slot past it is
    /// not taken, so it stays free for others).
    pub fn reserve(&self, now: Instant, latest: Option<Instant>) -> Reserved {
        let Some(interval) = self.interval else {
            return Reserved::Now;
        };
        let mut next = self.next.locked();
        let slot = next.map_or(now, |n| n.max(now));
        if latest.is_some_and(|l| slot > l) {
            return Reserved::TooLate;
        }
        *next = Some(slot + interval);
        if slot <= now {
            Reserved::Now
        } else {
            Reserved::At(slot)
        }
    }

    /// Wait for a send slot; `false` if shutdown came first.
    pub fn wait(&self, shutdown: &Shutdown) -> bool {
        self.wait_until(shutdown, None) == Slot::Go
    }

    /// Wait for a send slot that starts no later than `latest` (see [`Pacer::reserve`]); waiting
    /// is never an attempt.
    pub fn wait_until(&self, shutdown: &Shutdown, latest: Option<Instant>) -> Slot {
        if self.interval.is_none() {
            return Slot::Go;
        }
        let now = Instant::now();
        match self.reserve(now, latest) {
            Reserved::Now => Slot::Go,
            Reserved::TooLate => Slot::TooLate,
            Reserved::At(slot) if shutdown.sleep(slot - now) => Slot::Go,
            Reserved::At(_) => Slot::Shutdown,
        }
    }
}

/// The outcome of waiting for a send slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Send now.
    Go,
    /// Shutdown came first.
    Shutdown,
    /// The next free slot is later than the caller may start.
    TooLate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unlimited_never_waits() {
        let p = Pacer::new(None);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(p.reserve(t0, Some(t0)), Reserved::Now);
        }
        assert!(p.wait(&Shutdown::new()));
    }

    #[test]
    fn slots_are_one_interval_apart() {
        let p = Pacer::new(Some(50.0)); // 20 ms apart
        let t0 = Instant::now();
        assert_eq!(p.reserve(t0, None), Reserved::Now, "the first slot is free");
        for k in 1..20 {
            assert_eq!(p.reserve(t0, None), Reserved::At(t0 + ms(20) * k));
        }
        // Once the time of the next slot has come, it is taken at once.
        assert_eq!(p.reserve(t0 + ms(400), None), Reserved::Now);
        assert_eq!(p.reserve(t0 + ms(405), None), Reserved::At(t0 + ms(420)));
        // A quiet spell does not bank slots: the bucket holds one.
        assert_eq!(p.reserve(t0 + ms(2000), None), Reserved::Now);
        assert_eq!(p.reserve(t0 + ms(2000), None), Reserved::At(t0 + ms(2020)));
    }

    #[test]
    fn slots_are_distinct_across_threads() {
        let p = std::sync::Arc::new(Pacer::new(Some(50.0)));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    (0..5)
                        .map(|_| match p.reserve(t0, None) {
                            Reserved::Now => t0,
                            Reserved::At(slot) => slot,
                            Reserved::TooLate => unreachable!("no deadline"),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut slots: Vec<Instant> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        slots.sort();
        let expected: Vec<Instant> = (0..20).map(|k| t0 + ms(20) * k).collect();
        assert_eq!(slots, expected, "20 sends at 50/s: one every 20 ms");
    }

    #[test]
    fn a_slot_past_the_deadline_is_not_taken() {
        let p = Pacer::new(Some(10.0)); // 100 ms apart
        let t0 = Instant::now();
        assert_eq!(p.reserve(t0, Some(t0)), Reserved::Now);
        assert_eq!(p.reserve(t0, Some(t0 + ms(99))), Reserved::TooLate);
        assert_eq!(
            p.reserve(t0, Some(t0 + ms(100))),
            Reserved::At(t0 + ms(100)),
            "the refused slot stayed free"
        );
    }

    #[test]
    fn shutdown_interrupts_the_wait() {
        let p = Pacer::new(Some(0.1)); // one send per 10 s
        let s = Shutdown::new();
        assert!(p.wait(&s), "the first slot is free");
        s.trigger();
        assert_eq!(p.wait_until(&s, None), Slot::Shutdown);
    }
}
