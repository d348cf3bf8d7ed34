//! The sender threads: started on demand, up to `SENDER_THREADS`, each taking ids from the
//! [`WorkQueue`] and running [`Pipeline::process`].
//!
//! A few threads start with the service; another is started whenever a thread takes an id while
//! more are waiting and none is idle, so a burst gets as many blocking threads as it can use
//! (bounded), and a thread beyond the first few that has waited [`IDLE_EXIT`] for work ends, so a
//! quiet service keeps a handful (and gives their stacks' memory back). When the last of them
//! ends, the idle pooled REST and Twilio connections (TLS sessions, tens of KiB each) the burst
//! opened are closed too. Threads are cheap: 256 KiB of reserved stack, of which only the touched
//! pages count. How many of them may talk to Twilio at once is decided separately, by
//! [`crate::delivery::concurrency::Limiter`].
//!
//! Invariant: a thread ends only between ids, after its wait for one timed out — it holds no id
//! and no claim then, and the queue is untouched — so no message waits for, or is lost with, a
//! thread that ends; releasing connections never cuts a request short (see
//! [`crate::http::Agent`]).
//!
//! In scaled mode the queue also holds rows a batch claim took for other threads
//! ([`ClaimedWork`]). A thread takes them before ids, at shutdown too, and releases each with a
//! fenced write once shutdown began; every thread that stops at shutdown first releases the
//! claimed rows still waiting, so the last one to stop leaves none behind (only a sender thread
//! hands claimed rows on, and it stops after doing so).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::warn;

use crate::delivery::queue::{ClaimedWork, Popped, WorkQueue};
use crate::delivery::sender::{Pipeline, Siblings};
use crate::ops::liveness::{Liveness, Loop};
use crate::sync::Locked;

/// Threads started with the service (and kept while it is quiet).
const INITIAL_THREADS: usize = 4;
/// A thread beyond `INITIAL_THREADS` that waited this long for work ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// The running sender threads.
pub struct SenderPool {
    pipeline: Arc<Pipeline>,
    queue: WorkQueue,
    max: usize,
    /// Threads started so far (never decreases).
    started: AtomicUsize,
    /// Threads that have not ended.
    live: AtomicUsize,
    /// Signalled whenever a thread ends (for [`SenderPool::wait_finished`]).
    ended: (Mutex<()>, Condvar),
    /// Threads waiting for an id.
    idle: AtomicUsize,
    /// Beaten whenever a thread takes an id (`/livez`).
    liveness: Liveness,
}

impl SenderPool {
    /// Start the first threads; more follow on demand, up to `max`.
    pub fn start(
        max: usize,
        pipeline: Arc<Pipeline>,
        queue: WorkQueue,
        liveness: Liveness,
    ) -> std::io::Result<Arc<SenderPool>> {
        let pool = Arc::new(SenderPool {
            pipeline,
            queue,
            max: max.max(1),
            started: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            ended: (Mutex::new(()), Condvar::new()),
            idle: AtomicUsize::new(0),
            liveness,
        });
        for _ in 0..INITIAL_THREADS.min(pool.max) {
            pool.spawn_one(true)?;
        }
        Ok(pool)
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Wait until every thread has ended (after the queue was closed), at most until `deadline`;
    /// `false` if some were still working then.
    pub fn wait_finished(&self, deadline: Instant) -> bool {
        let (lock, cv) = &self.ended;
        let mut guard = lock.locked();
        loop {
            if self.live.load(Ordering::SeqCst) == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A thread ends: count it and wake [`SenderPool::wait_finished`].
    fn ended(&self) {
        let _guard = self.ended.0.locked();
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.ended.1.notify_all();
    }

    /// Start one more thread if the bound allows; a `permanent` one never retires (and so waits
    /// for work without a timer).
    fn spawn_one(self: &Arc<Self>, permanent: bool) -> std::io::Result<()> {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        if n >= self.max {
            self.started.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        let pool = self.clone();
        let spawned = crate::sync::spawn_named(format!("sender-{n}"), 256 * 1024, move || {
            pool.work(permanent)
        });
        if let Err(e) = spawned {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.started.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    fn work(self: Arc<Self>, permanent: bool) {
        loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let next = if permanent {
                self.queue.pop_blocking()
            } else {
                self.queue.pop_timeout(IDLE_EXIT)
            };
            self.idle.fetch_sub(1, Ordering::SeqCst);
            let (id, queued_at) = match next {
                Popped::Id(id, at) => {
                    self.liveness.beat(Loop::Senders);
                    (id, at)
                }
                Popped::Claimed(work) => {
                    self.liveness.beat(Loop::Senders);
                    self.claimed(work);
                    continue;
                }
                Popped::Closed => break,
                Popped::Idle => {
                    if self.retire() {
                        return;
                    }
                    continue;
                }
            };
            if self.pipeline.shutdown.is_triggered() {
                break; // the row is still queued_for_send: nothing to undo
            }
            self.grow();
            self.pipeline.process(id, queued_at, &*self);
        }
        self.release_claimed();
        self.ended();
    }

    /// Work on a row another thread's batch claimed (released instead once shutdown began),
    /// starting another thread first if more work waits and nobody is idle.
    fn claimed(self: &Arc<Self>, work: ClaimedWork) {
        if !self.pipeline.shutdown.is_triggered() {
            self.grow();
        }
        self.pipeline.process_claimed(work);
    }

    /// Start another thread when work waits, no thread is idle and the bound allows.
    fn grow(self: &Arc<Self>) {
        if !self.queue.is_empty()
            && self.idle.load(Ordering::SeqCst) == 0
            && self.started.load(Ordering::SeqCst) < self.max
        {
            if let Err(e) = self.spawn_one(false) {
                warn!("cannot start another sender thread: {e}");
            }
        }
    }

    /// At shutdown, before a thread stops: give back the claimed rows still waiting.
    fn release_claimed(&self) {
        while let Some(work) = self.queue.take_claimed() {
            self.pipeline.release_claimed(work);
        }
    }

    /// Whether this idle thread may end: only while more than [`INITIAL_THREADS`] are live.
    /// The last thread of a burst to end also lets the burst's pooled connections go.
    fn retire(&self) -> bool {
        let mut live = self.live.load(Ordering::SeqCst);
        while live > INITIAL_THREADS {
            match self
                .live
                .compare_exchange(live, live - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.started.fetch_sub(1, Ordering::SeqCst);
                    if live - 1 == INITIAL_THREADS {
                        self.release_connections();
                    }
                    return true;
                }
                Err(now) => live = now,
            }
        }
        false
    }

    /// Close the idle pooled connections of REST and Twilio: they were opened for the threads
    /// that just ended (one or two per thread), and ureq keeps them for good otherwise. Every
    /// thread that is left has been idle for [`IDLE_EXIT`] or is in a request, which keeps its
    /// connection to the end; the next requests open new ones.
    fn release_connections(&self) {
        self.pipeline.rest.release_idle_connections();
        self.pipeline.twilio.release_idle_connections();
    }
}

impl Siblings for SenderPool {
    fn idle_threads(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }
}
