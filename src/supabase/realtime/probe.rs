//! `sms-sender check`'s Realtime probe: connect, join and wait for the subscription once, then
//! leave, reporting why it did not work.
//!
//! Invariant: a decisive refusal (one a retry soon would meet again) is the answer as soon as
//! it comes; otherwise the probe retries as the service would until its limit, and answers with
//! the last reason. Ready ids that arrive meanwhile are dropped: the probe sends nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sink::{Event, Handing, Handoff, RealtimeSink};
use super::{keep_subscribed, Context, OnRefusal, Subscription, Timing};
use crate::config::SupabaseConfig;
use crate::message::MessageId;
use crate::ops::liveness::Liveness;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// Why the probe did not subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// No TLS connector for a `wss://` URL.
    Tls(String),
    /// The server refused us in a way a retry soon would not change.
    Refused(String),
    /// Not subscribed within the limit; why the last attempt ended.
    Lost(String),
    /// Not subscribed within the limit, and no attempt ended.
    NoSubscription(Duration),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Tls(why) | ProbeError::Refused(why) | ProbeError::Lost(why) => {
                f.write_str(why)
            }
            ProbeError::NoSubscription(limit) => {
                write!(f, "no subscription within {} s", limit.as_secs())
            }
        }
    }
}

impl std::error::Error for ProbeError {}

/// What the probe keeps of what the task saw: whether it is subscribed now, and why the last
/// socket ended.
#[derive(Default)]
struct Seen {
    subscribed: AtomicBool,
    last_loss: Mutex<Option<String>>,
}

impl RealtimeSink for Seen {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Subscribed => self.subscribed.store(true, Ordering::SeqCst),
            Event::Connecting | Event::Stopped => self.subscribed.store(false, Ordering::SeqCst),
            Event::Lost { reason } => {
                self.subscribed.store(false, Ordering::SeqCst);
                *self.last_loss.locked() = Some(reason.to_string());
            }
            Event::Unnamed | Event::Reconnecting | Event::Partitions(_) => {}
        }
    }

    fn ready(&self, _: MessageId) -> Handing<'_> {
        Box::pin(std::future::ready(Handoff::Taken))
    }
}

/// Connect, join and wait for the subscription once, then leave (for `sms-sender check`).
/// Returns why it did not work: a decisive refusal as soon as it comes, else the last reason
/// once `limit` has passed. Builds a TLS connector of its own for a `wss://` URL (a one-off).
pub fn probe(
    subscription: Subscription,
    supabase: &SupabaseConfig,
    heartbeat: Duration,
    limit: Duration,
) -> Result<(), ProbeError> {
    let tls = if supabase.realtime_url.starts_with("wss://") {
        Some(crate::http::tls_connector().map_err(ProbeError::Tls)?)
    } else {
        None
    };
    let seen = Arc::new(Seen::default());
    let shutdown = Shutdown::new();
    let mut timing = Timing::with_heartbeat(heartbeat);
    // As long as the REST clients wait to connect: a check should answer in seconds.
    timing.connect_timeout = Duration::from_secs(5);
    let ctx = Context {
        subscription,
        supabase: supabase.clone(),
        timing,
        sink: seen.clone(),
        shutdown: shutdown.clone(),
        liveness: Liveness::new(limit),
        tls,
    };
    let watcher = watch(seen.clone(), shutdown.clone(), limit);
    let refused = smol::block_on(keep_subscribed(&ctx, OnRefusal::Stop));
    shutdown.trigger();
    let subscribed = watcher.join().unwrap_or(false);
    if let Some(reason) = refused {
        return Err(ProbeError::Refused(reason));
    }
    if subscribed {
        return Ok(());
    }
    let last_loss = seen.last_loss.locked().clone();
    Err(last_loss.map_or(ProbeError::NoSubscription(limit), ProbeError::Lost))
}

/// A thread that ends the probe (through `shutdown`) once subscribed or after `limit`; it
/// answers whether the subscription came.
fn watch(seen: Arc<Seen>, shutdown: Shutdown, limit: Duration) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while !seen.subscribed.load(Ordering::SeqCst)
            && Instant::now() < deadline
            && !shutdown.is_triggered()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let subscribed = seen.subscribed.load(Ordering::SeqCst);
        shutdown.trigger();
        subscribed
    })
}
