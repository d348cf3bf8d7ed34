//! Realtime: the one WebSocket that tells us which messages are ready.
//!
//! [`run`] keeps a socket to `/realtime/v1/websocket` for the life of the service: connect,
//! `phx_join` the `postgres_changes` bindings (INSERT and UPDATE into `queued_for_send`), wait
//! for the ok reply (bindings checked) *and* the "Subscribed to PostgreSQL" system message, then
//! hand every matching row id to the [`RealtimeSink`] ([`sink`]). Every (re)subscription is told
//! to the sink, which asks the catch-up sweep to run, because Realtime never replays what
//! happened while we were away. A heartbeat goes out every interval; one still unanswered at the
//! next tick means the link is dead. Any ending other than shutdown leads to a reconnect after an
//! exponential, jittered, capped backoff, forever.
//!
//! The channel is public (`private: false`, as docs/supabase.md §1.3 recommends) until the server
//! refuses that with `PrivateOnly` (the project's "Allow public access" is off, docs/supabase.md §3.2 and §3.5):
//! then it is joined again at once as a private channel, which the service role is authorized
//! on (it bypasses RLS), and stays private for the life of the process.
//!
//! The parts: `connect` opens the socket (a `wss://` one runs TLS on the connector the whole
//! service shares, [`tls`]); `session` runs one socket's life; `step` decides what each frame
//! ([`frame`]) means; [`probe()`] (for `sms-sender check`) subscribes once and reports; a
//! refusal that retrying would not change (the upgrade answered 4xx, the server unreachable, the
//! join or subscription refused for a reason that is not transient) is its answer at once, with
//! the server's reason.
//!
//! Invariants: this task never blocks a thread (sends happen on the sender threads); when the
//! sink has no room it stops reading the socket until there is, but keeps heartbeating; the
//! service key is put only into the connect URL, never into a log line; everything the server
//! says (a refused upgrade's body, join refusals, `system` messages, close reasons, undecodable
//! frames) and every error that may quote the URL goes through [`redact::scrub`] before it is
//! logged or kept as the reason (a proxy answering `Cannot GET …?apikey=<key>` quotes the key).

mod connect;
pub mod frame;
pub mod membership;
mod probe;
mod scaled;
mod session;
pub mod sink;
mod step;
pub mod tls;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use log::warn;
use smol::Timer;

use crate::backoff::{Backoff, Jitter};
use crate::config::SupabaseConfig;
use crate::ops::liveness::{Liveness, Loop};
use crate::redact;
use crate::shutdown::Shutdown;
pub use probe::{probe, ProbeError};
use sink::{Event, RealtimeSink};

/// The channel topic (the subtopic is only a name; the binding does the filtering).
pub const TOPIC: &str = "realtime:sms-sender";

/// Timing of the Realtime link.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Heartbeat period (25 s, as realtime-js; the server drops sockets idle for 60 s).
    pub heartbeat: Duration,
    /// Reconnect delays (1 s doubling to 30 s, jittered).
    pub reconnect: Backoff,
    /// Limit for TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Limit for the join reply (the server delays join errors by 5 s).
    pub join_timeout: Duration,
    /// Limit from join reply to "Subscribed to PostgreSQL" (cold tenants take several seconds).
    pub subscribe_timeout: Duration,
}

impl Timing {
    /// Production timing with the given heartbeat period.
    pub fn with_heartbeat(heartbeat: Duration) -> Timing {
        Timing {
            heartbeat,
            reconnect: Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                Jitter::Spread,
            ),
            connect_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(15),
            subscribe_timeout: Duration::from_secs(30),
        }
    }
}

/// What the task subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Postgres Changes of rows entering `queued_for_send` (the default mode).
    Changes,
    /// Scaled mode (docs/scaled-mode.md): this instance's Presence on the members channel and
    /// the Broadcast channels of the partitions it serves.
    Partitions {
        /// P, from the database.
        partitions: u16,
        /// This instance's Presence key (random per process).
        me: String,
        /// Only look (`check`): join every partition channel, never the membership.
        observe_only: bool,
    },
}

/// What the Realtime task needs from the rest of the service.
pub struct Context {
    /// What to subscribe to.
    pub subscription: Subscription,
    /// Where and how to connect.
    pub supabase: SupabaseConfig,
    /// Timing.
    pub timing: Timing,
    /// Where what the task sees goes: the link's state, sweep requests, ready message ids.
    pub sink: Arc<dyn RealtimeSink>,
    /// Stops the task.
    pub shutdown: Shutdown,
    /// Beaten as the task turns (`/livez`): every wake of a session, every reconnect attempt,
    /// and every five seconds of a backoff.
    pub liveness: Liveness,
    /// The TLS connector the whole service shares (required for a `wss://` URL).
    pub tls: Option<Arc<native_tls::TlsConnector>>,
}

/// The longest the task sleeps in one piece during a reconnect backoff, so that it beats.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// How one socket's life ended.
enum End {
    /// Shutdown was requested; the channel was left.
    Shutdown,
    /// Anything else: reconnect. `subscribed` tells whether the backoff may start over;
    /// `decisive` whether the server refused us in a way a retry soon would not change (what
    /// [`probe()`] reports at once).
    Lost {
        reason: String,
        subscribed: bool,
        decisive: bool,
    },
}

/// What a decisive refusal does to the reconnect loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnRefusal {
    /// Back off and reconnect, as after any loss (the service).
    Reconnect,
    /// End the loop with the refusal as its answer (the probe).
    Stop,
}

/// What one socket passes on to the next.
#[derive(Default)]
struct Memory {
    /// Message refs continue across sockets.
    refs: Refs,
    /// The project refused a public channel (`PrivateOnly`): join privately from now on.
    private: bool,
}

/// Message refs: increasing decimal strings, shared by all pushes on all sockets.
#[derive(Default)]
struct Refs(u64);

impl Refs {
    fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

/// Keep the subscription alive until shutdown.
pub async fn run(ctx: Context) {
    keep_subscribed(&ctx, OnRefusal::Reconnect).await;
}

/// The reconnect loop of [`run`]; with [`OnRefusal::Stop`], a decisive refusal ends it and is
/// returned (for [`probe()`]).
async fn keep_subscribed(ctx: &Context, on_refusal: OnRefusal) -> Option<String> {
    let mut memory = Memory::default();
    let mut failures: u32 = 0;
    loop {
        ctx.liveness.beat(Loop::Realtime);
        debug_hold();
        ctx.sink.event(Event::Connecting);
        let (reason, subscribed, decisive) = match session::session(ctx, &mut memory).await {
            End::Shutdown => {
                ctx.sink.event(Event::Stopped);
                return None;
            }
            End::Lost {
                reason,
                subscribed,
                decisive,
            } => (reason, subscribed, decisive),
        };
        // Scrubbed where the server's words come in; once more here, for any path that
        // quotes something else (bounded, one line, no key).
        let reason = redact::scrub(&reason);
        ctx.sink.event(Event::Lost { reason: &reason });
        if decisive && on_refusal == OnRefusal::Stop {
            return Some(reason);
        }
        ctx.sink.event(Event::Reconnecting);
        if subscribed {
            failures = 0;
        }
        let delay = ctx.timing.reconnect.delay(failures);
        failures = failures.saturating_add(1);
        warn!(
            "realtime disconnected: {reason}; reconnecting in {} ms",
            delay.as_millis()
        );
        if back_off(ctx, delay).await.is_break() {
            return None;
        }
    }
}

/// Wait `delay` before the next attempt, in pieces, beating between them (a backoff is a live
/// loop); breaks at shutdown.
async fn back_off(ctx: &Context, delay: Duration) -> ControlFlow<()> {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        let piece = until
            .saturating_duration_since(Instant::now())
            .min(BEAT_EVERY);
        let stop = or(
            async {
                Timer::after(piece).await;
                false
            },
            async {
                ctx.shutdown.wait().await;
                true
            },
        );
        if stop.await {
            return ControlFlow::Break(());
        }
        ctx.liveness.beat(Loop::Realtime);
    }
    ControlFlow::Continue(())
}

/// In debug builds only: while the file named by `SMS_SENDER_DEBUG_HOLD_REALTIME` exists, block
/// this task's thread — a wedged task, for the liveness test. Release builds have no such hook.
#[cfg(debug_assertions)]
fn debug_hold() {
    static HOLD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let hold =
        HOLD.get_or_init(|| std::env::var_os("SMS_SENDER_DEBUG_HOLD_REALTIME").map(Into::into));
    if let Some(path) = hold {
        while path.exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(not(debug_assertions))]
fn debug_hold() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_increase() {
        let mut r = Refs::default();
        assert_eq!(r.next(), "1");
        assert_eq!(r.next(), "2");
    }
}
