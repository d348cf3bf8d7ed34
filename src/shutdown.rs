//! The shutdown signal passed to every part of the service (not a global flag).
//!
//! One [`Shutdown`] is created at start and cloned into each thread and task. Triggering it is
//! idempotent and wakes every waiter at once: blocking threads parked in [`Shutdown::sleep`]
//! (backoff between retries) and async tasks awaiting [`Shutdown::wait`] (the WebSocket reader).

use crate::sync::Locked;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A cloneable handle on the service-wide "stop taking new work" signal.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    /// Fast path for polling ("is it time to stop?") from hot loops.
    triggered: AtomicBool,
    /// Guards nothing but the condition; blocking sleepers wait on `wake`.
    lock: Mutex<()>,
    wake: Condvar,
    /// Closed on trigger: every async waiter's `recv` then returns at once.
    closer: Mutex<Option<smol::channel::Sender<()>>>,
    receiver: smol::channel::Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        let (tx, rx) = smol::channel::bounded(1);
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                closer: Mutex::new(Some(tx)),
                receiver: rx,
            }),
        }
    }

    /// Fire the signal (idempotent) and wake every waiter.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.locked();
        self.inner.wake.notify_all();
        drop(self.inner.closer.locked().take());
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Sleep up to `duration`; returns `false` if woken early by the signal (or already fired).
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self.inner.lock.locked();
        loop {
            if self.is_triggered() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .inner
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Resolve once the signal has fired.
    pub async fn wait(&self) {
        if self.is_triggered() {
            return;
        }
        let _ = self.inner.receiver.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_blocking_and_async_waiters() {
        let s = Shutdown::new();
        assert!(
            s.sleep(Duration::ZERO),
            "runs to completion when not triggered"
        );
        let sleeper = {
            let s = s.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (s.sleep(Duration::from_secs(30)), t.elapsed())
            })
        };
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || smol::block_on(s.wait()))
        };
        assert!(!s.is_triggered());
        // Whether the sleeper is parked already or starts after the trigger, it returns early.
        s.trigger();
        s.trigger();
        let (completed, took) = sleeper.join().unwrap();
        assert!(!completed);
        assert!(took < Duration::from_secs(5));
        waiter.join().unwrap();
        assert!(
            !s.sleep(Duration::from_secs(30)),
            "returns at once after the trigger"
        );
        smol::block_on(s.wait());
    }
}
