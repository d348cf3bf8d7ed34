//! Realtime: the one WebSocket that tells us which messages are ready.
//!
//! [`run`] keeps a socket to `/realtime/v1/websocket` for the life of the service: connect,
//! `phx_join` the `postgres_changes` bindings (INSERT and UPDATE into `queued_for_send`), wait
//! for the ok reply (bindings checked) *and* the "Subscribed to PostgreSQL" system message, then
//! hand every matching row id to the [`WorkQueue`]. Every (re)subscription asks the catch-up
//! sweep to run, because Realtime never replays what happened while we were away. A heartbeat
//! goes out every interval; one still unanswered at the next tick means the link is dead. Any
//! ending other than shutdown leads to a reconnect after an exponential, jittered, capped
//! backoff, forever.
//!
//! The channel is public (`private: false`, as docs/supabase.md §1.3 recommends) until the server
//! refuses that with `PrivateOnly` (the project's "Allow public access" is off, docs/supabase.md §3.2 and §3.5):
//! then it is joined again at once as a private channel, which the service role is authorized
//! on (it bypasses RLS), and stays private for the life of the process.
//!
//! A `wss://` socket runs TLS on the connector the whole service shares ([`tls`]).
//!
//! [`probe`] (for `sms-sender check`) subscribes once and reports; a refusal that retrying would
//! not change (the upgrade answered 4xx, the server unreachable, the join or subscription refused
//! for a reason that is not transient) is its answer at once, with the server's reason.
//!
//! Invariants: this task never blocks a thread (sends happen on the sender threads); when the
//! queue is full it stops reading the socket until there is room, but keeps heartbeating; the
//! service key is put only into the connect URL, never into a log line; everything the server
//! says (a refused upgrade's body, join refusals, `system` messages, close reasons, undecodable
//! frames) and every error that may quote the URL goes through [`redact::scrub`] before it is
//! logged or kept as the reason (a proxy answering `Cannot GET …?apikey=<key>` quotes the key).

pub mod frame;
pub mod tls;

use std::pin::pin;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message};
use futures_lite::future::or;
use futures_lite::StreamExt;
use log::{debug, error, info, warn};
use smol::Timer;

use crate::backoff::Backoff;
use crate::config::{KeyKind, SupabaseConfig};
use crate::delivery::queue::{PushError, WorkQueue};
use crate::delivery::sweep::SweepTrigger;
use crate::message::MessageId;
use crate::ops::health::{Health, Link};
use crate::ops::liveness::{Liveness, Loop};
use crate::redact;
use crate::shutdown::Shutdown;
use frame::{Bindings, ServerFrame};

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
            reconnect: Backoff::new(Duration::from_secs(1), Duration::from_secs(30), true),
            connect_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(15),
            subscribe_timeout: Duration::from_secs(30),
        }
    }
}

/// What the Realtime task needs from the rest of the service.
pub struct Context {
    /// Where and how to connect.
    pub supabase: SupabaseConfig,
    /// Timing.
    pub timing: Timing,
    /// Connection state for `/health`.
    pub health: Health,
    /// Where ready message ids go.
    pub queue: WorkQueue,
    /// Asks the catch-up sweep to run.
    pub sweep: SweepTrigger,
    /// Stops the task.
    pub shutdown: Shutdown,
    /// Counts reconnects.
    pub metrics: std::sync::Arc<crate::ops::metrics::Metrics>,
    /// Beaten as the task turns (`/livez`): every wake of a session, every reconnect attempt,
    /// and every five seconds of a backoff.
    pub liveness: Liveness,
    /// The TLS connector the whole service shares (required for a `wss://` URL).
    pub tls: Option<std::sync::Arc<native_tls::TlsConnector>>,
}

/// The longest the task sleeps in one piece during a reconnect backoff, so that it beats.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// How one socket's life ended.
enum End {
    /// Shutdown was requested; the channel was left.
    Shutdown,
    /// Anything else: reconnect. `subscribed` tells whether the backoff may start over;
    /// `decisive` whether the server refused us in a way a retry soon would not change (what
    /// [`probe`] reports at once).
    Lost {
        reason: String,
        subscribed: bool,
        decisive: bool,
    },
}

/// Why connecting failed.
struct Failure {
    reason: String,
    /// The server is unreachable or refused the upgrade with a 4xx other than 429.
    decisive: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure {
            reason,
            decisive: false,
        }
    }
}

/// What one socket passes on to the next.
#[derive(Default)]
struct Memory {
    /// Message refs continue across sockets.
    refs: Refs,
    /// The project refused a public channel (`PrivateOnly`): join privately from now on.
    private: bool,
}

/// Keep the subscription alive until shutdown.
pub async fn run(ctx: Context) {
    keep_subscribed(&ctx, false).await;
}

/// The reconnect loop of [`run`]; with `stop_when_refused`, a decisive refusal ends it and is
/// returned (for [`probe`]).
async fn keep_subscribed(ctx: &Context, stop_when_refused: bool) -> Option<String> {
    let mut memory = Memory::default();
    let mut failures: u32 = 0;
    loop {
        ctx.liveness.beat(Loop::Realtime);
        debug_hold();
        ctx.health.set_link(Link::Connecting);
        match session(ctx, &mut memory).await {
            End::Shutdown => {
                ctx.health.set_link(Link::Disconnected);
                return None;
            }
            End::Lost {
                reason,
                subscribed,
                decisive,
            } => {
                // Scrubbed where the server's words come in; once more here, for any path that
                // quotes something else (bounded, one line, no key).
                let reason = redact::scrub(&reason);
                ctx.health.set_link(Link::Disconnected);
                ctx.health.set_realtime_error(&reason);
                if decisive && stop_when_refused {
                    return Some(reason);
                }
                ctx.metrics.reconnect();
                if subscribed {
                    failures = 0;
                }
                let delay = ctx.timing.reconnect.delay(failures);
                failures = failures.saturating_add(1);
                warn!(
                    "realtime disconnected: {reason}; reconnecting in {} ms",
                    delay.as_millis()
                );
                // In pieces, beating between them: a backoff is a live loop.
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
                        return None;
                    }
                    ctx.liveness.beat(Loop::Realtime);
                }
            }
        }
    }
}

/// Connect, join and wait for the subscription once, then leave (for `sms-sender check`).
/// Returns why it did not work: a decisive refusal as soon as it comes, else the last reason
/// once `limit` has passed. Builds a TLS connector of its own for a `wss://` URL (a one-off).
pub fn probe(
    supabase: &SupabaseConfig,
    heartbeat: Duration,
    limit: Duration,
) -> Result<(), String> {
    let tls = if supabase.realtime_url.starts_with("wss://") {
        Some(crate::http::tls_connector()?)
    } else {
        None
    };
    let health = Health::new();
    let shutdown = Shutdown::new();
    let mut timing = Timing::with_heartbeat(heartbeat);
    // As long as the REST clients wait to connect: a check should answer in seconds.
    timing.connect_timeout = Duration::from_secs(5);
    let ctx = Context {
        supabase: supabase.clone(),
        timing,
        health: health.clone(),
        queue: WorkQueue::new(1),
        sweep: SweepTrigger::default(),
        shutdown: shutdown.clone(),
        metrics: std::sync::Arc::default(),
        liveness: Liveness::new(limit),
        tls,
    };
    let watcher = {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while health.link() != Link::Connected
                && Instant::now() < deadline
                && !shutdown.is_triggered()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let subscribed = health.link() == Link::Connected;
            shutdown.trigger();
            subscribed
        })
    };
    let refused = smol::block_on(keep_subscribed(&ctx, true));
    shutdown.trigger();
    let subscribed = watcher.join().unwrap_or(false);
    if let Some(reason) = refused {
        return Err(reason);
    }
    if subscribed {
        return Ok(());
    }
    Err(match health.realtime_error() {
        Some(reason) => reason,
        None => format!("no subscription within {} s", limit.as_secs()),
    })
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

/// A byte stream the socket runs on: plain TCP (`ws://`) or TLS over TCP (`wss://`).
trait Io: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = async_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Host, port and TLS flag of a `ws://` or `wss://` URL we built ourselves from a checked base.
fn endpoint(url: &str) -> Result<(String, u16, bool), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(format!("not a WebSocket URL: {url}"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse().map_err(|_| format!("bad port in {authority}"))?,
        ),
        _ => (authority, default_port),
    };
    Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
}

async fn with_timeout<T, E: From<String>>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    or(fut, async {
        Timer::after(limit).await;
        Err(format!("timed out after {} ms", limit.as_millis()).into())
    })
    .await
}

/// Open the socket: TCP, TLS for `wss`, then the WebSocket upgrade with the key as `apikey`.
async fn connect(ctx: &Context) -> Result<Ws, Failure> {
    let unreachable = |reason: String| Failure {
        reason,
        decisive: true,
    };
    let (host, port, tls) = endpoint(&ctx.supabase.realtime_url).map_err(unreachable)?;
    let tcp = smol::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        let connector = ctx
            .tls
            .as_deref()
            .ok_or_else(|| unreachable(format!("no TLS connector for {host}")))?;
        let tls = tls::connect(connector, host.as_str(), tcp)
            .await
            .map_err(|e| unreachable(redact::scrub(&format!("TLS with {host} failed: {e}"))))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let url = format!(
        "{}?apikey={}&vsn=1.0.0",
        ctx.supabase.realtime_url,
        ctx.supabase.key.expose()
    );
    match async_tungstenite::client_async(url.as_str(), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let status = resp.status().as_u16();
            let reason = refusal_reason(&body);
            Err(Failure {
                reason: format!("upgrade refused with HTTP {status}: {reason}"),
                // A wrong key (401), a suspended project (403), a wrong URL (404): retrying
                // soon changes nothing. Limits (429) and server errors pass.
                decisive: (400..500).contains(&status) && status != 429,
            })
        }
        // The error may quote the URL, which carries the key.
        Err(e) => Err(redact::scrub(&format!("WebSocket handshake failed: {e}")).into()),
    }
}

/// What a refused upgrade's body says, scrubbed: its JSON `error` or `message` when it has one,
/// else the body itself (an HTML page, a proxy's `Cannot GET /realtime/v1/websocket?apikey=…`).
/// The whole body is scrubbed before anything is cut, so no part of a key is left at the cut.
fn refusal_reason(body: &str) -> String {
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(String::from)
        });
    redact::scrub(said.as_deref().unwrap_or(body))
}

/// Join refusals that say "try again later" (docs/supabase.md §3.5); any other refusal is a problem of
/// the key, the project or the request that a retry soon would meet again.
fn transient_join_refusal(reason: &str) -> bool {
    const TRANSIENT: [&str; 11] = [
        "InitializingProjectConnection",
        "UnableToConnectToProject",
        "IncreaseConnectionPool",
        "DatabaseLackOfConnections",
        "DatabaseConnectionRateLimitReached",
        "RealtimeRestarting",
        "TimeoutOnRpcCall",
        "ErrorOnRpcCall",
        "ConnectionRateLimitReached",
        "ClientJoinRateLimitReached",
        "Unknown Error on Channel",
    ];
    TRANSIENT.iter().any(|code| reason.starts_with(code))
}

/// The `PrivateOnly` join refusal (docs/supabase.md §3.5): the project accepts private channels only.
fn private_only_refusal(reason: &str) -> bool {
    reason.starts_with("PrivateOnly")
}

/// What woke the session loop.
enum Wake {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Tick,
    Stop,
}

/// Progress of our channel on this socket.
struct Channel {
    join_ref: String,
    /// The binding ids from the ok reply, once it came.
    bindings: Option<Bindings>,
    subscribed: bool,
    /// When the current wait (join reply, then subscription) gives up.
    deadline: Option<Instant>,
}

impl Channel {
    /// A join just sent with `join_ref`: its reply is due within the join timeout.
    fn joining(ctx: &Context, join_ref: String) -> Channel {
        Channel {
            join_ref,
            bindings: None,
            subscribed: false,
            deadline: Some(Instant::now() + ctx.timing.join_timeout),
        }
    }
}

/// Send a `phx_join` for our channel (public or private as `memory` says); its join ref.
async fn send_join(ctx: &Context, ws: &mut Ws, memory: &mut Memory) -> Result<String, String> {
    let access_token = match ctx.supabase.key_kind {
        KeyKind::LegacyJwt => Some(ctx.supabase.key.expose()),
        KeyKind::Secret => None,
    };
    let join_ref = memory.refs.next();
    ws.send(Message::text(frame::join(
        TOPIC,
        &join_ref,
        access_token,
        memory.private,
    )))
    .await
    .map_err(|e| redact::scrub(&format!("sending join failed: {e}")))?;
    debug!(
        "realtime joining {TOPIC} ({}) with ref {join_ref}",
        if memory.private { "private" } else { "public" }
    );
    Ok(join_ref)
}

/// One socket from connect to close.
async fn session(ctx: &Context, memory: &mut Memory) -> End {
    let lost = |reason: String, subscribed: bool| End::Lost {
        reason,
        subscribed,
        decisive: false,
    };
    let host = endpoint(&ctx.supabase.realtime_url)
        .map(|e| e.0)
        .unwrap_or_default();
    info!("realtime connecting to {host}");
    let connected = or(
        async { Some(with_timeout(ctx.timing.connect_timeout, connect(ctx)).await) },
        async {
            ctx.shutdown.wait().await;
            None
        },
    )
    .await;
    let mut ws = match connected {
        None => return End::Shutdown,
        Some(Ok(ws)) => ws,
        Some(Err(Failure { reason, decisive })) => {
            return End::Lost {
                reason,
                subscribed: false,
                decisive,
            }
        }
    };

    let mut chan = match send_join(ctx, &mut ws, memory).await {
        Ok(join_ref) => Channel::joining(ctx, join_ref),
        Err(e) => return lost(e, false),
    };

    let mut next_heartbeat = Instant::now() + ctx.timing.heartbeat;
    let mut pending_heartbeat: Option<String> = None;

    loop {
        ctx.liveness.beat(Loop::Realtime);
        debug_hold();
        let wake_at = chan
            .deadline
            .map_or(next_heartbeat, |d| d.min(next_heartbeat));
        let wake = or(
            or(async { Wake::Frame(ws.next().await) }, async {
                Timer::at(wake_at).await;
                Wake::Tick
            }),
            async {
                ctx.shutdown.wait().await;
                Wake::Stop
            },
        )
        .await;

        match wake {
            Wake::Stop => {
                let leave = frame::leave(TOPIC, &memory.refs.next(), &chan.join_ref);
                let _ = ws.send(Message::text(leave)).await;
                let _ = with_timeout(Duration::from_secs(1), async {
                    ws.close(None).await.map_err(|e| e.to_string())
                })
                .await;
                info!("realtime channel left for shutdown");
                return End::Shutdown;
            }
            Wake::Tick => {
                let now = Instant::now();
                if chan.deadline.is_some_and(|d| now >= d) {
                    let what = if chan.bindings.is_none() {
                        "no reply to the join"
                    } else {
                        "no \"Subscribed to PostgreSQL\" after the join"
                    };
                    return lost(format!("{what} within the time limit"), false);
                }
                if now >= next_heartbeat {
                    if pending_heartbeat.is_some() {
                        return lost(
                            "heartbeat not answered before the next one was due".into(),
                            chan.subscribed,
                        );
                    }
                    let r = memory.refs.next();
                    if let Err(e) = ws.send(Message::text(frame::heartbeat(&r))).await {
                        let why = redact::scrub(&format!("sending heartbeat failed: {e}"));
                        return lost(why, chan.subscribed);
                    }
                    pending_heartbeat = Some(r);
                    next_heartbeat = now + ctx.timing.heartbeat;
                }
            }
            Wake::Frame(None) => {
                return lost("socket closed by the server".into(), chan.subscribed)
            }
            Wake::Frame(Some(Err(e))) => {
                return lost(
                    redact::scrub(&format!("socket error: {e}")),
                    chan.subscribed,
                )
            }
            Wake::Frame(Some(Ok(Message::Close(close)))) => {
                let why = close
                    .map(|c| format!("close {} {}", u16::from(c.code), redact::scrub(&c.reason)))
                    .unwrap_or_else(|| "close without code".into());
                return lost(format!("server closed the socket ({why})"), chan.subscribed);
            }
            Wake::Frame(Some(Ok(Message::Text(text)))) => {
                let decoded = match frame::decode(&text) {
                    Ok(f) => f,
                    Err(e) => {
                        // The decoder's error quotes the frame.
                        warn!("{}", redact::scrub(&e.to_string()));
                        continue;
                    }
                };
                match handle_frame(ctx, decoded, &mut chan, &mut pending_heartbeat) {
                    Step::Continue => {}
                    Step::Lost(reason) => return lost(reason, chan.subscribed),
                    Step::Refused(reason) => {
                        return End::Lost {
                            reason,
                            subscribed: chan.subscribed,
                            decisive: true,
                        }
                    }
                    Step::JoinPrivate(reason) if !memory.private => {
                        memory.private = true;
                        info!(
                            "realtime public join refused ({reason}); joining {TOPIC} as a \
                             private channel from now on (the service role is authorized on it)"
                        );
                        chan = match send_join(ctx, &mut ws, memory).await {
                            Ok(join_ref) => Channel::joining(ctx, join_ref),
                            Err(e) => return lost(e, false),
                        };
                    }
                    Step::JoinPrivate(reason) => {
                        return End::Lost {
                            reason: format!("join refused: {reason} (to a private join)"),
                            subscribed: false,
                            decisive: true,
                        }
                    }
                    Step::Enqueue(id) => {
                        match push_keeping_heartbeat(
                            ctx,
                            &mut ws,
                            &mut memory.refs,
                            id,
                            &mut next_heartbeat,
                            &mut pending_heartbeat,
                        )
                        .await
                        {
                            Ok(()) => {}
                            Err(End::Shutdown) => return End::Shutdown,
                            Err(end) => return end,
                        }
                    }
                }
            }
            Wake::Frame(Some(Ok(_))) => {} // pings are answered by tungstenite; binary is unused
        }
    }
}

/// What a frame asks the session to do.
enum Step {
    Continue,
    Enqueue(MessageId),
    /// Reconnect (after the backoff).
    Lost(String),
    /// Reconnect, but the server refused us for a reason a retry soon would meet again.
    Refused(String),
    /// The project refused a public channel (the server's reason): join again as a private one.
    JoinPrivate(String),
}

fn handle_frame(
    ctx: &Context,
    frame: ServerFrame,
    chan: &mut Channel,
    pending_heartbeat: &mut Option<String>,
) -> Step {
    match frame {
        ServerFrame::Reply {
            topic,
            reference,
            status,
            response,
        } => {
            if topic == "phoenix" {
                if reference.is_some() && reference == *pending_heartbeat {
                    *pending_heartbeat = None;
                }
                return Step::Continue;
            }
            if topic != TOPIC || reference.as_deref() != Some(chan.join_ref.as_str()) {
                return Step::Continue;
            }
            if status != "ok" {
                let reason = redact::scrub(
                    &response
                        .get("reason")
                        .and_then(|r| r.as_str())
                        .map(String::from)
                        .unwrap_or_else(|| response.to_string()),
                );
                if private_only_refusal(&reason) {
                    return Step::JoinPrivate(reason);
                }
                error!("realtime join refused: {reason}");
                let transient = transient_join_refusal(&reason);
                let reason = format!("join refused: {reason}");
                return if transient {
                    Step::Lost(reason)
                } else {
                    Step::Refused(reason)
                };
            }
            match frame::binding_ids(&response) {
                Ok(ids) => {
                    chan.bindings = Some(ids);
                    chan.deadline = Some(Instant::now() + ctx.timing.subscribe_timeout);
                    debug!(
                        "realtime join ok (binding ids {} and {}); waiting for the subscription",
                        ids.insert, ids.update
                    );
                    Step::Continue
                }
                Err(why) => {
                    // The reason quotes the server's binding.
                    let why = redact::scrub(&why);
                    error!("realtime join reply rejected: {why}");
                    Step::Lost(why)
                }
            }
        }
        ServerFrame::System {
            topic,
            extension,
            status,
            message,
        } => {
            if topic != TOPIC {
                return Step::Continue;
            }
            let message = redact::scrub(&message);
            match (extension.as_str(), status.as_str()) {
                ("postgres_changes", "ok") => {
                    if !chan.subscribed {
                        info!(
                            "realtime subscribed to INSERT and UPDATE into queued_for_send on \
                             public.messages ({message})"
                        );
                    } else {
                        info!("realtime subscription re-established by the server ({message})");
                    }
                    chan.subscribed = true;
                    chan.deadline = None;
                    ctx.health.set_link(Link::Connected);
                    ctx.sweep.request();
                    Step::Continue
                }
                ("postgres_changes", _) => {
                    error!(
                        "realtime subscription failed: {message} (is `messages` in the \
                         supabase_realtime publication, and does the key have access?)"
                    );
                    Step::Refused(format!("subscription failed: {message}"))
                }
                (_, "error") => {
                    warn!("realtime server notice on {TOPIC}: {message}");
                    Step::Continue
                }
                _ => {
                    info!("realtime server notice: {message}");
                    Step::Continue
                }
            }
        }
        ServerFrame::Change { topic, change } => {
            if topic != TOPIC || !chan.subscribed && chan.bindings.is_none() {
                return Step::Continue;
            }
            if let Some(bindings) = chan.bindings {
                if !bindings.matches(&change.kind, &change.ids) {
                    return Step::Continue; // older servers send every type that matched
                }
            }
            if !frame::BINDING_EVENTS.contains(&change.kind.as_str())
                || change.schema != frame::BINDING_SCHEMA
                || change.table != frame::BINDING_TABLE
            {
                return Step::Continue;
            }
            let Some(row) = change.record else {
                return Step::Continue;
            };
            let Some(id) = row.id.as_deref().and_then(MessageId::parse) else {
                warn!("realtime change without a usable id; asking for a sweep");
                ctx.sweep.request();
                return Step::Continue;
            };
            // With `errors` set the record is trimmed: trust only the id; the claim re-checks.
            if !change.has_errors
                && (row.status.as_deref() != Some("queued_for_send")
                    || row.direction.as_deref().is_some_and(|d| d != "outbound"))
            {
                return Step::Continue;
            }
            Step::Enqueue(id)
        }
        ServerFrame::Close { topic, reference } | ServerFrame::Error { topic, reference }
            if topic == TOPIC && reference.as_deref().map_or(true, |r| r == chan.join_ref) =>
        {
            Step::Lost("the server closed our channel".into())
        }
        ServerFrame::Close { .. } | ServerFrame::Error { .. } | ServerFrame::Other { .. } => {
            Step::Continue // stale closes from an earlier join, presence, broadcast
        }
    }
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

/// Queue `id`, waiting for room if needed, while still sending heartbeats on schedule. While we
/// wait we do not read the socket, so a missing heartbeat reply then is not held against the link.
async fn push_keeping_heartbeat(
    ctx: &Context,
    ws: &mut Ws,
    refs: &mut Refs,
    id: MessageId,
    next_heartbeat: &mut Instant,
    pending_heartbeat: &mut Option<String>,
) -> Result<(), End> {
    let mut push = pin!(ctx.queue.push(id));
    loop {
        enum W {
            Pushed(Result<crate::delivery::queue::Pushed, PushError>),
            Tick,
            Stop,
        }
        let due = *next_heartbeat;
        let w = or(
            or(async { W::Pushed(push.as_mut().await) }, async {
                Timer::at(due).await;
                W::Tick
            }),
            async {
                ctx.shutdown.wait().await;
                W::Stop
            },
        )
        .await;
        match w {
            W::Pushed(Ok(_)) => return Ok(()),
            W::Pushed(Err(PushError::Closed)) | W::Stop => return Err(End::Shutdown),
            W::Tick => {
                ctx.liveness.beat(Loop::Realtime);
                let r = refs.next();
                if let Err(e) = ws.send(Message::text(frame::heartbeat(&r))).await {
                    return Err(End::Lost {
                        reason: redact::scrub(&format!("sending heartbeat failed: {e}")),
                        subscribed: true,
                        decisive: false,
                    });
                }
                *pending_heartbeat = None;
                *next_heartbeat = Instant::now() + ctx.timing.heartbeat;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("wss://abc.supabase.co/realtime/v1/websocket").unwrap(),
            ("abc.supabase.co".into(), 443, true)
        );
        assert_eq!(
            endpoint("ws://127.0.0.1:54321/realtime/v1/websocket").unwrap(),
            ("127.0.0.1".into(), 54321, false)
        );
        assert!(endpoint("http://x").is_err());
    }

    #[test]
    fn refs_increase() {
        let mut r = Refs::default();
        assert_eq!(r.next(), "1");
        assert_eq!(r.next(), "2");
    }
}
