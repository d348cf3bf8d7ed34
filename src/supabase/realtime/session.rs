//! One socket's life, from connect to close: join our channel, heartbeat, read frames, hand
//! ready ids to the sink, leave at shutdown.
//!
//! Invariants: a heartbeat goes out every interval, and one still unanswered at the next tick
//! means the link is dead — except while an id waits for room in the sink: the socket is not
//! read then, but heartbeats still go out on schedule and are not held against the link; every
//! error text that may quote the URL (which carries the key) is scrubbed before it is kept.

use std::fmt::Display;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message};
use futures_lite::future::or;
use futures_lite::StreamExt;
use log::{debug, info, warn};
use smol::Timer;

use super::connect::{connect, endpoint, with_timeout, Failure, Ws};
use super::scaled::{Act, Scaled, Setup};
use super::sink::{Event, Handoff};
use super::step::{step, Channel, Step};
use super::{debug_hold, frame, Context, End, Memory, Refs, Subscription, TOPIC};
use crate::config::KeyKind;
use crate::ops::liveness::Loop;
use crate::redact;

/// Writing a frame failed; the text is scrubbed (the error may quote the URL).
struct SendFailed(String);

impl SendFailed {
    fn new(what: &str, error: impl Display) -> SendFailed {
        SendFailed(redact::scrub(&format!("sending {what} failed: {error}")))
    }
}

impl Display for SendFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What we hold on the socket.
enum Sub {
    /// The Postgres Changes channel (default mode).
    Changes(Channel),
    /// The members and partition channels (scaled mode).
    Scaled(Box<Scaled>),
}

impl Sub {
    fn subscribed(&self) -> bool {
        match self {
            Sub::Changes(chan) => chan.subscribed,
            Sub::Scaled(scaled) => scaled.subscribed(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Sub::Changes(chan) => chan.deadline,
            Sub::Scaled(scaled) => scaled.deadline(),
        }
    }
}

/// The open socket, our channel(s) on it, and its heartbeat.
struct Link {
    ws: Ws,
    sub: Sub,
    next_heartbeat: Instant,
    /// The ref of the heartbeat sent and not answered yet.
    pending_heartbeat: Option<String>,
}

/// What woke the session loop.
enum Wake {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Tick,
    Stop,
}

/// The socket's life ended where `sub` stands: reconnect.
fn lost(reason: String, sub: &Sub) -> End {
    End::Lost {
        reason,
        subscribed: sub.subscribed(),
        decisive: false,
    }
}

/// Ended before our channel was subscribed: reconnect.
fn lost_early(reason: String) -> End {
    End::Lost {
        reason,
        subscribed: false,
        decisive: false,
    }
}

/// One socket from connect to close.
pub(super) async fn session(ctx: &Context, memory: &mut Memory) -> End {
    let mut ws = match open(ctx).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let (sub, first) = match &ctx.subscription {
        Subscription::Changes => match send_join(ctx, &mut ws, memory).await {
            Ok(join_ref) => (
                Sub::Changes(Channel::joining(join_ref, ctx.timing.join_timeout)),
                Vec::new(),
            ),
            Err(e) => return lost_early(e.to_string()),
        },
        Subscription::Partitions {
            partitions,
            me,
            observe_only,
        } => {
            let mut scaled = Scaled::new(Setup {
                me: me.clone(),
                partitions: *partitions,
                token: access_token(ctx).map(String::from),
                join_timeout: ctx.timing.join_timeout,
                observe_only: *observe_only,
            });
            let first = scaled.start(&mut memory.refs, Instant::now());
            (Sub::Scaled(Box::new(scaled)), first)
        }
    };
    let mut link = Link {
        ws,
        sub,
        next_heartbeat: Instant::now() + ctx.timing.heartbeat,
        pending_heartbeat: None,
    };
    if let ControlFlow::Break(end) = act(ctx, memory, &mut link, first).await {
        return end;
    }
    loop {
        ctx.liveness.beat(Loop::Realtime);
        debug_hold();
        let flow = match next_wake(ctx, &mut link).await {
            Wake::Stop => return leave(memory, &mut link).await,
            Wake::Tick => tick(ctx, memory, &mut link).await,
            Wake::Frame(message) => on_message(ctx, memory, &mut link, message).await,
        };
        if let ControlFlow::Break(end) = flow {
            return end;
        }
    }
}

/// Connect within the connect timeout, or stop for shutdown.
async fn open(ctx: &Context) -> Result<Ws, End> {
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
    match connected {
        None => Err(End::Shutdown),
        Some(Ok(ws)) => Ok(ws),
        Some(Err(Failure { reason, decisive })) => Err(End::Lost {
            reason,
            subscribed: false,
            decisive,
        }),
    }
}

/// Wait for a frame, the next deadline or heartbeat, or shutdown.
async fn next_wake(ctx: &Context, link: &mut Link) -> Wake {
    let wake_at = link
        .sub
        .deadline()
        .map_or(link.next_heartbeat, |d| d.min(link.next_heartbeat));
    let ws = &mut link.ws;
    or(
        or(async { Wake::Frame(ws.next().await) }, async {
            Timer::at(wake_at).await;
            Wake::Tick
        }),
        async {
            ctx.shutdown.wait().await;
            Wake::Stop
        },
    )
    .await
}

/// Leave our channel(s) and close the socket (within a second) for shutdown.
async fn leave(memory: &mut Memory, link: &mut Link) -> End {
    let leaves = match &link.sub {
        Sub::Changes(chan) => vec![frame::leave(TOPIC, &memory.refs.next(), &chan.join_ref)],
        Sub::Scaled(scaled) => scaled.leave_all(&mut memory.refs),
    };
    for leave in leaves {
        let _ = link.ws.send(Message::text(leave)).await;
    }
    let ws = &mut link.ws;
    or(
        async {
            let _ = ws.close(None).await;
        },
        async {
            Timer::after(Duration::from_secs(1)).await;
        },
    )
    .await;
    info!("realtime channel left for shutdown");
    End::Shutdown
}

/// A tick: give up a wait past its deadline, or send the heartbeat that is due.
async fn tick(ctx: &Context, memory: &mut Memory, link: &mut Link) -> ControlFlow<End> {
    let now = Instant::now();
    match &mut link.sub {
        Sub::Changes(chan) if chan.deadline.is_some_and(|d| now >= d) => {
            let what = if chan.bindings.is_none() {
                "no reply to the join"
            } else {
                "no \"Subscribed to PostgreSQL\" after the join"
            };
            return ControlFlow::Break(lost_early(format!("{what} within the time limit")));
        }
        Sub::Changes(_) => {}
        Sub::Scaled(scaled) => {
            let acts = scaled.tick(&mut memory.refs, now);
            act(ctx, memory, link, acts).await?;
        }
    }
    if now >= link.next_heartbeat {
        if link.pending_heartbeat.is_some() {
            let why = "heartbeat not answered before the next one was due".to_string();
            return ControlFlow::Break(lost(why, &link.sub));
        }
        match send_heartbeat(&mut link.ws, &mut memory.refs).await {
            Ok(r) => link.pending_heartbeat = Some(r),
            Err(e) => return ControlFlow::Break(lost(e.to_string(), &link.sub)),
        }
        link.next_heartbeat = now + ctx.timing.heartbeat;
    }
    ControlFlow::Continue(())
}

/// What the socket delivered: a frame to read, or the end of the socket.
async fn on_message(
    ctx: &Context,
    memory: &mut Memory,
    link: &mut Link,
    message: Option<Result<Message, tungstenite::Error>>,
) -> ControlFlow<End> {
    let why = match message {
        None => "socket closed by the server".to_string(),
        Some(Err(e)) => redact::scrub(&format!("socket error: {e}")),
        Some(Ok(Message::Close(close))) => {
            let why = close
                .map(|c| format!("close {} {}", u16::from(c.code), redact::scrub(&c.reason)))
                .unwrap_or_else(|| "close without code".into());
            format!("server closed the socket ({why})")
        }
        Some(Ok(Message::Text(text))) => return on_text(ctx, memory, link, &text).await,
        Some(Ok(_)) => return ControlFlow::Continue(()), // pings are answered by tungstenite; binary is unused
    };
    ControlFlow::Break(lost(why, &link.sub))
}

/// A text frame: decode it and take the step it asks for.
async fn on_text(
    ctx: &Context,
    memory: &mut Memory,
    link: &mut Link,
    text: &str,
) -> ControlFlow<End> {
    let decoded = match frame::decode(text) {
        Ok(f) => f,
        Err(e) => {
            // The decoder's error quotes the frame.
            warn!("{}", redact::scrub(&e.to_string()));
            return ControlFlow::Continue(());
        }
    };
    let chan = match &mut link.sub {
        Sub::Changes(chan) => chan,
        Sub::Scaled(scaled) => {
            if let frame::ServerFrame::Reply {
                topic, reference, ..
            } = &decoded
            {
                if topic == "phoenix" && reference.is_some() && *reference == link.pending_heartbeat
                {
                    link.pending_heartbeat = None;
                }
            }
            let acts = scaled.on_frame(decoded, &mut memory.refs, Instant::now());
            return act(ctx, memory, link, acts).await;
        }
    };
    let subscribe_timeout = ctx.timing.subscribe_timeout;
    match step(
        decoded,
        chan,
        &mut link.pending_heartbeat,
        subscribe_timeout,
    ) {
        Step::Continue => ControlFlow::Continue(()),
        Step::Subscribed => {
            ctx.sink.event(Event::Subscribed);
            ControlFlow::Continue(())
        }
        Step::Unnamed => {
            ctx.sink.event(Event::Unnamed);
            ControlFlow::Continue(())
        }
        Step::Enqueue(id) => hand_over(ctx, &mut memory.refs, link, id).await,
        Step::Lost(reason) => ControlFlow::Break(lost(reason, &link.sub)),
        Step::Refused(reason) => ControlFlow::Break(End::Lost {
            reason,
            subscribed: link.sub.subscribed(),
            decisive: true,
        }),
        Step::JoinPrivate(reason) => join_private(ctx, memory, link, reason).await,
    }
}

/// The project refused a public channel: join again as a private one, once per process.
async fn join_private(
    ctx: &Context,
    memory: &mut Memory,
    link: &mut Link,
    reason: String,
) -> ControlFlow<End> {
    if memory.private {
        return ControlFlow::Break(End::Lost {
            reason: format!("join refused: {reason} (to a private join)"),
            subscribed: false,
            decisive: true,
        });
    }
    memory.private = true;
    info!(
        "realtime public join refused ({reason}); joining {TOPIC} as a private channel from now \
         on (the service role is authorized on it)"
    );
    match send_join(ctx, &mut link.ws, memory).await {
        Ok(join_ref) => {
            link.sub = Sub::Changes(Channel::joining(join_ref, ctx.timing.join_timeout));
            ControlFlow::Continue(())
        }
        Err(e) => ControlFlow::Break(lost_early(e.to_string())),
    }
}

/// The join's `access_token`: only for legacy JWT keys (docs/supabase.md §1.3).
fn access_token(ctx: &Context) -> Option<&str> {
    match ctx.supabase.key_kind {
        KeyKind::LegacyJwt => Some(ctx.supabase.key.expose()),
        KeyKind::Secret => None,
    }
}

/// Do what scaled mode's channels ask, in order; breaks when the link is given up.
async fn act(
    ctx: &Context,
    memory: &mut Memory,
    link: &mut Link,
    acts: Vec<Act>,
) -> ControlFlow<End> {
    for a in acts {
        match a {
            Act::Send(text) => {
                if let Err(e) = link.ws.send(Message::text(text)).await {
                    let failed = SendFailed::new("a channel frame", e);
                    return ControlFlow::Break(lost(failed.to_string(), &link.sub));
                }
            }
            Act::Subscribed => ctx.sink.event(Event::Subscribed),
            Act::Assign(assignment) => ctx.sink.event(Event::Partitions(assignment.as_ref())),
            Act::Unnamed => ctx.sink.event(Event::Unnamed),
            Act::Enqueue(id) => hand_over(ctx, &mut memory.refs, link, id).await?,
            Act::Lost(reason) => return ControlFlow::Break(lost(reason, &link.sub)),
            Act::Refused(reason) => {
                return ControlFlow::Break(End::Lost {
                    reason: redact::scrub(&reason),
                    subscribed: link.sub.subscribed(),
                    decisive: true,
                })
            }
        }
    }
    ControlFlow::Continue(())
}

/// Send a `phx_join` for our channel (public or private as `memory` says); its join ref.
async fn send_join(ctx: &Context, ws: &mut Ws, memory: &mut Memory) -> Result<String, SendFailed> {
    let join_ref = memory.refs.next();
    ws.send(Message::text(frame::join(
        TOPIC,
        &join_ref,
        access_token(ctx),
        memory.private,
    )))
    .await
    .map_err(|e| SendFailed::new("join", e))?;
    debug!(
        "realtime joining {TOPIC} ({}) with ref {join_ref}",
        if memory.private { "private" } else { "public" }
    );
    Ok(join_ref)
}

/// Send a heartbeat; its ref.
async fn send_heartbeat(ws: &mut Ws, refs: &mut Refs) -> Result<String, SendFailed> {
    let r = refs.next();
    ws.send(Message::text(frame::heartbeat(&r)))
        .await
        .map_err(|e| SendFailed::new("heartbeat", e))?;
    Ok(r)
}

/// Hand `id` to the sink, waiting for room if needed, while still sending heartbeats on
/// schedule. While we wait we do not read the socket, so a missing heartbeat reply then is not
/// held against the link.
async fn hand_over(
    ctx: &Context,
    refs: &mut Refs,
    link: &mut Link,
    id: crate::message::MessageId,
) -> ControlFlow<End> {
    enum W {
        Handed(Handoff),
        Tick,
        Stop,
    }
    let mut handing = ctx.sink.ready(id);
    loop {
        let due = link.next_heartbeat;
        let w = or(
            or(async { W::Handed(handing.as_mut().await) }, async {
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
            W::Handed(Handoff::Taken) => return ControlFlow::Continue(()),
            W::Handed(Handoff::Closed) | W::Stop => return ControlFlow::Break(End::Shutdown),
            W::Tick => {
                ctx.liveness.beat(Loop::Realtime);
                if let Err(e) = send_heartbeat(&mut link.ws, refs).await {
                    return ControlFlow::Break(End::Lost {
                        reason: e.to_string(),
                        subscribed: true,
                        decisive: false,
                    });
                }
                link.pending_heartbeat = None;
                link.next_heartbeat = Instant::now() + ctx.timing.heartbeat;
            }
        }
    }
}
