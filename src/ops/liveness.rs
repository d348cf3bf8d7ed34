//! Liveness (`GET /livez`): whether the service's own loops are turning — not whether Supabase
//! or Twilio are up. A restart fixes a wedged loop (a deadlock, a blocked executor); it never
//! fixes an outage of a dependency, so this endpoint must not fail for one (`/health` reports
//! those, for humans, readiness and the startup probe).
//!
//! Each loop beats as it turns, and the check allows each a silence of at most the window
//! (`LIVENESS_WINDOW_SECS`):
//! - **Realtime**: the task beats on every frame, heartbeat, reconnect attempt and at least every
//!   few seconds of a backoff, whether or not Supabase answers. It may wait for room in the
//!   queue while the senders are busy: with the queue full its silence is not a wedge;
//! - **sweeper**: beats every time it wakes (several times a second when idle), and between pages
//!   and retries; the same exemption for a full queue;
//! - **senders**: a sender beats whenever it takes an id; silence only counts while ids wait in
//!   the queue (an idle pool is alive).
//!
//! Invariant: `/livez` fails only for a loop that should have turned within the window and did
//! not; the window is never shorter than one HTTP request and two heartbeats (config enforces it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loop whose turning is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// The Realtime task (WebSocket reader, heartbeats, reconnects).
    Realtime,
    /// The catch-up sweeper.
    Sweeper,
    /// The sender threads taking ids from the queue.
    Senders,
}

impl Loop {
    const ALL: [Loop; 3] = [Loop::Realtime, Loop::Sweeper, Loop::Senders];

    /// Its name in the `/livez` answer.
    pub fn name(self) -> &'static str {
        match self {
            Loop::Realtime => "realtime",
            Loop::Sweeper => "sweeper",
            Loop::Senders => "senders",
        }
    }
}

/// Shared by the loops (which beat) and the HTTP thread (which checks); cheap to clone.
#[derive(Clone)]
pub struct Liveness(Arc<Beats>);

struct Beats {
    start: Instant,
    /// Milliseconds since `start` of each loop's last beat, indexed like [`Loop::ALL`].
    last: [AtomicU64; 3],
    window: Duration,
}

/// What the queue looks like when the check runs (silences are judged against it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Ids waiting for a sender.
    pub waiting: usize,
    /// No room for another id (producers wait, legitimately).
    pub full: bool,
}

/// The answer of `GET /livez`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// 200 or 503.
    pub http_status: u16,
    /// The JSON body: `{"status":"alive"|"stalled","stalled":[…],"silent_ms":{…}}`.
    pub body: String,
}

impl Liveness {
    /// Every loop counts as having beaten now; a silence longer than `window` is a wedge.
    pub fn new(window: Duration) -> Liveness {
        Liveness(Arc::new(Beats {
            start: Instant::now(),
            last: Default::default(),
            window,
        }))
    }

    fn index(l: Loop) -> usize {
        Loop::ALL.iter().position(|&x| x == l).unwrap_or(0)
    }

    /// `l` turned.
    pub fn beat(&self, l: Loop) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last[Self::index(l)].fetch_max(ms, Ordering::Relaxed);
    }

    /// How long `l` has been silent at `now`.
    pub fn silent_for(&self, l: Loop, now: Instant) -> Duration {
        let last = Duration::from_millis(self.0.last[Self::index(l)].load(Ordering::Relaxed));
        now.saturating_duration_since(self.0.start + last)
    }

    /// The loops stalled at `now` given the queue's state.
    pub fn stalled(&self, queue: QueueState, now: Instant) -> Vec<Loop> {
        Loop::ALL
            .into_iter()
            .filter(|&l| {
                let excused = match l {
                    Loop::Realtime | Loop::Sweeper => queue.full,
                    Loop::Senders => queue.waiting == 0,
                };
                !excused && self.silent_for(l, now) > self.0.window
            })
            .collect()
    }

    /// The `/livez` answer now.
    pub fn verdict(&self, queue: QueueState) -> Verdict {
        let now = Instant::now();
        let stalled = self.stalled(queue, now);
        let silent: serde_json::Map<String, serde_json::Value> = Loop::ALL
            .into_iter()
            .map(|l| {
                let ms = self.silent_for(l, now).as_millis() as u64;
                (l.name().to_string(), ms.into())
            })
            .collect();
        let body = serde_json::json!({
            "status": if stalled.is_empty() { "alive" } else { "stalled" },
            "stalled": stalled.iter().map(|l| l.name()).collect::<Vec<_>>(),
            "silent_ms": silent,
            "window_ms": self.0.window.as_millis() as u64,
        });
        Verdict {
            http_status: if stalled.is_empty() { 200 } else { 503 },
            body: body.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_where_a_loop_should_have_turned() {
        let live = Liveness::new(Duration::from_millis(50));
        let idle = QueueState::default();
        let later = Instant::now() + Duration::from_millis(200);
        assert!(live.stalled(idle, Instant::now()).is_empty());
        // 200 ms of silence: Realtime and the sweeper are stalled; idle senders are not.
        assert_eq!(
            live.stalled(idle, later),
            vec![Loop::Realtime, Loop::Sweeper]
        );
        // A full queue excuses producers waiting for room, and makes silent senders stalled.
        let full = QueueState {
            waiting: 8,
            full: true,
        };
        assert_eq!(live.stalled(full, later), vec![Loop::Senders]);
        std::thread::sleep(Duration::from_millis(60));
        live.beat(Loop::Realtime);
        live.beat(Loop::Sweeper);
        let v = live.verdict(idle);
        assert_eq!(v.http_status, 200, "{}", v.body);
        let body: serde_json::Value = serde_json::from_str(&v.body).unwrap();
        assert_eq!(body["status"], "alive");
        std::thread::sleep(Duration::from_millis(60));
        let v = live.verdict(idle);
        assert_eq!(v.http_status, 503);
        let body: serde_json::Value = serde_json::from_str(&v.body).unwrap();
        assert_eq!(body["stalled"], serde_json::json!(["realtime", "sweeper"]));
    }
}
