//! `MAX_SENDS_PER_SECOND`: one pacer shared by every sender thread, so a 10DLC, toll-free or short
//! code sender stays within the throughput its carrier grants.
//!
//! A token bucket of depth one: each send takes the next free slot, slots are `1/rate` apart, and
//! a thread whose slot is in the future sleeps until it. Work waits in the queue; nothing is
//! dropped. Without a rate every call returns at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// The shared pacer.
pub struct Pacer {
    /// Time between two sends; `None` for unlimited.
    interval: Option<Duration>,
    /// The earliest time the next send may start.
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer allowing `per_second` sends per second (`None`: unlimited).
    pub fn new(per_second: Option<f64>) -> Pacer {
        Pacer {
            interval: per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for a send slot; `false` if shutdown came first.
    pub fn wait(&self, shutdown: &Shutdown) -> bool {
        self.wait_until(shutdown, None) == Slot::Go
    }

    /// Wait for a send slot that starts no later than `latest` (a slot past it is not taken, so
    /// it stays free for others); waiting is never an attempt.
    pub fn wait_until(&self, shutdown: &Shutdown, latest: Option<Instant>) -> Slot {
        let Some(interval) = self.interval else {
            return Slot::Go;
        };
        let now = Instant::now();
        let slot = {
            let mut next = self.next.locked();
            let slot = (*next).max(now);
            if latest.is_some_and(|l| slot > l) {
                return Slot::TooLate;
            }
            *next = slot + interval;
            slot
        };
        if slot <= now || shutdown.sleep(slot - now) {
            Slot::Go
        } else {
            Slot::Shutdown
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

    #[test]
    fn unlimited_never_waits() {
        let p = Pacer::new(None);
        let s = Shutdown::new();
        let t = Instant::now();
        for _ in 0..1000 {
            assert!(p.wait(&s));
        }
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn slots_are_spaced_across_threads() {
        let p = std::sync::Arc::new(Pacer::new(Some(50.0)));
        let s = Shutdown::new();
        let start = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, s) = (p.clone(), s.clone());
                std::thread::spawn(move || {
                    (0..5)
                        .map(|_| {
                            p.wait(&s);
                            Instant::now()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut times: Vec<Instant> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        times.sort();
        // 20 sends at 50/s: the last starts no earlier than 19 intervals after the first.
        assert!(
            times[19] - start >= Duration::from_millis(19 * 20 - 5),
            "{:?}",
            times[19] - start
        );
    }

    #[test]
    fn shutdown_interrupts_the_wait() {
        let p = Pacer::new(Some(0.1)); // one send per 10 s
        let s = Shutdown::new();
        assert!(p.wait(&s), "the first slot is free");
        s.trigger();
        let t = Instant::now();
        assert!(!p.wait(&s));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
