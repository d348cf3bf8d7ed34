//! The Realtime double: the Phoenix WebSocket at `/realtime/v1/websocket` (reference §2–§6, §10)
//! fed by a row trigger that reports changes through LISTEN/NOTIFY.
//!
//! What it owns:
//! - the upgrade (key and `vsn` checks with the server's texts, handshake, refusal fault);
//! - one thread per socket that owns it: it reads with a short timeout, answers frames, fires
//!   timers (the delayed "Subscribed to PostgreSQL"), and drains an outbound queue that the
//!   change listener and the fault switches push into;
//! - the change trigger (`sms_double.notify_change`, installed idempotently on every table in
//!   `public`) and the listener thread that fans each change out to matching live channels.
//!
//! Invariants:
//! - V1 server frames carry exactly `topic`, `event`, `payload`, `ref`; malformed client frames are
//!   dropped silently;
//! - a channel receives changes only while *live* (after its "Subscribed to PostgreSQL" went out)
//!   and nothing is buffered for later: no replay, like the real server;
//! - a socket's frames are written only by its own thread, so replies, system messages and events
//!   leave in the order they were decided.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Map, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::schema::{ident, qualified, Table};
use super::{jwt_claims, looks_like_jwt, JwtProblem, Shared, SubscribeMode};
use crate::http::{Reply, Request, Response};

/// The NOTIFY channel the trigger reports on.
const NOTIFY_CHANNEL: &str = "sms_double_changes";
/// The trigger's name. AFTER triggers fire in name order; "00_" sorts before ordinary names, so a
/// change is reported before other AFTER triggers run nested statements (e.g. the schema's
/// `on_message_send` UPDATE), keeping the report order equal to the WAL order the real server sees.
const TRIGGER_NAME: &str = "00_sms_double_changes";
/// How long a socket thread blocks in a read before looking at its queue and timers: it bounds
/// the latency the double adds to every pushed frame (events wait in the queue for it).
const READ_TICK: Duration = Duration::from_millis(2);
/// The real server's per-socket channel limit (§7).
const MAX_CHANNELS: usize = 100;
/// The real server's `max_record_bytes` (§4.3).
const MAX_RECORD_BYTES: usize = 1_048_576;

// ---------------------------------------------------------------------------------------------
// State.

/// Realtime observation counters and fault switches, plus the open sockets.
pub(crate) struct RealtimeState {
    pub(crate) conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    next_generation: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) joins: AtomicU64,
    pub(crate) frames: Mutex<Vec<Value>>,
    pub(crate) heartbeat_replies: AtomicBool,
    pub(crate) blackhole: AtomicBool,
    pub(crate) drop_events: AtomicBool,
    pub(crate) duplicate_events: AtomicBool,
    pub(crate) oversized_events: AtomicBool,
    pub(crate) all_types: AtomicBool,
    pub(crate) refuse: Mutex<Option<(u16, String)>>,
    pub(crate) subscribe_mode: Mutex<SubscribeMode>,
    pub(crate) join_error: Mutex<Option<String>>,
    pub(crate) join_error_delay: Mutex<Duration>,
    /// The project's "Allow public access" is off: `private: false` joins are refused (§3.2).
    pub(crate) private_only: AtomicBool,
    /// Tables known to carry the change trigger.
    triggered: Mutex<HashSet<String>>,
}

impl Default for RealtimeState {
    fn default() -> Self {
        RealtimeState {
            conns: Mutex::default(),
            next_conn: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            joins: AtomicU64::new(0),
            frames: Mutex::default(),
            heartbeat_replies: AtomicBool::new(true),
            blackhole: AtomicBool::new(false),
            drop_events: AtomicBool::new(false),
            duplicate_events: AtomicBool::new(false),
            oversized_events: AtomicBool::new(false),
            all_types: AtomicBool::new(false),
            refuse: Mutex::default(),
            subscribe_mode: Mutex::default(),
            join_error: Mutex::default(),
            join_error_delay: Mutex::default(),
            private_only: AtomicBool::new(false),
            triggered: Mutex::default(),
        }
    }
}

/// Serializer version of a socket (§2.3).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vsn {
    V1,
    V2,
}

/// One open socket, shared between its thread, the listener and the fault switches.
pub(crate) struct Conn {
    vsn: Vsn,
    tx: Sender<Out>,
    /// A clone of the socket, to cut it abruptly from outside its thread.
    stream: TcpStream,
    /// Joined channels by topic.
    channels: Mutex<HashMap<String, Channel>>,
    /// The role of the connect-time token: what a join without its own `access_token` (or with
    /// an `sb_` one) is authorized as (§1.3).
    role: Option<String>,
}

/// Something for a socket's thread to send.
enum Out {
    Frame(ServerFrame),
    /// Send a close frame with this code (empty reason) and end the socket.
    Close(u16),
}

/// A frame the server sends; `join_ref` is used only by the V2 encoding (§2.3).
#[derive(Debug, Clone)]
struct ServerFrame {
    topic: String,
    event: String,
    payload: Value,
    reference: Value,
    join_ref: Value,
}

impl ServerFrame {
    fn encode(&self, vsn: Vsn) -> String {
        match vsn {
            Vsn::V1 => json!({
                "topic": self.topic, "event": self.event, "payload": self.payload, "ref": self.reference
            }),
            Vsn::V2 => json!([self.join_ref, self.reference, self.topic, self.event, self.payload]),
        }
        .to_string()
    }
}

/// A joined channel.
struct Channel {
    sub: String,
    join_ref: Value,
    bindings: Vec<Binding>,
    /// True once "Subscribed to PostgreSQL" was sent: only then are changes delivered.
    live: bool,
    /// Distinguishes this join from an earlier join of the same topic (for timers).
    generation: u64,
    /// The channel's access token, when the join carried a JWT.
    token: Option<String>,
}

/// One `postgres_changes` item of a join.
#[derive(Debug, Clone)]
struct Binding {
    id: u64,
    /// `INSERT`, `UPDATE`, `DELETE` or `*`.
    event: String,
    schema: String,
    table: String,
    conds: Vec<Cond>,
    /// The item's text for error messages.
    desc: String,
}

/// One filter condition `column=[not.]op.value`.
#[derive(Debug, Clone)]
struct Cond {
    column: String,
    negate: bool,
    op: CondOp,
}

#[derive(Debug, Clone)]
enum CondOp {
    Cmp(&'static str, String),
    In(Vec<String>),
    Is(String),
}

impl RealtimeState {
    fn snapshot(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().unwrap().values().cloned().collect()
    }

    pub(crate) fn live_channels(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|c| {
                c.channels
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|ch| ch.live)
                    .count()
            })
            .sum()
    }

    pub(crate) fn drop_all(&self) {
        for c in self.snapshot() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn server_disconnect(&self) {
        for c in self.snapshot() {
            let mut chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.drain() {
                let _ = c.tx.send(Out::Frame(system_frame(
                    &topic,
                    &ch,
                    "system",
                    "ok",
                    "Server requested disconnect",
                )));
            }
            let _ = c.tx.send(Out::Close(1012));
        }
    }

    pub(crate) fn phx_error_all(&self) {
        for c in self.snapshot() {
            let mut chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.drain() {
                let _ =
                    c.tx.send(Out::Frame(close_like_frame(&topic, &ch, "phx_error")));
            }
        }
    }

    pub(crate) fn expire_tokens(&self) {
        for c in self.snapshot() {
            let mut chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.drain() {
                let _ = c.tx.send(Out::Frame(system_frame(
                    &topic,
                    &ch,
                    "system",
                    "error",
                    "Token has expired 0 seconds ago",
                )));
                let _ =
                    c.tx.send(Out::Frame(close_like_frame(&topic, &ch, "phx_close")));
            }
        }
    }

    /// The change feed came back (PostgreSQL restarted): like the real server after a CDC restart
    /// (§3.4), every live channel gets a fresh "Subscribed to PostgreSQL".
    fn resubscribed(&self) {
        let mode = self.subscribe_mode.lock().unwrap().clone();
        if !matches!(mode, SubscribeMode::Ok | SubscribeMode::Twice) {
            return;
        }
        for c in self.snapshot() {
            let chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.iter().filter(|(_, ch)| ch.live) {
                let _ = c.tx.send(Out::Frame(subscribed_frame(topic, ch)));
            }
        }
    }
}

fn system_frame(
    topic: &str,
    ch: &Channel,
    extension: &str,
    status: &str,
    message: &str,
) -> ServerFrame {
    ServerFrame {
        topic: topic.to_string(),
        event: "system".into(),
        payload: json!({"channel": ch.sub, "extension": extension, "status": status, "message": message}),
        reference: Value::Null,
        join_ref: ch.join_ref.clone(),
    }
}

fn subscribed_frame(topic: &str, ch: &Channel) -> ServerFrame {
    system_frame(
        topic,
        ch,
        "postgres_changes",
        "ok",
        "Subscribed to PostgreSQL",
    )
}

/// `phx_close` / `phx_error`: `ref` is the channel's join_ref (§2.3).
fn close_like_frame(topic: &str, ch: &Channel, event: &str) -> ServerFrame {
    ServerFrame {
        topic: topic.to_string(),
        event: event.into(),
        payload: json!({}),
        reference: ch.join_ref.clone(),
        join_ref: ch.join_ref.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Upgrade.

fn error_json(status: u16, text: &str) -> Reply {
    Reply::Respond(Response::json(status, &json!({"error": text})))
}

/// Handle `GET /realtime/v1/websocket`: checks, handshake, then hand the socket to its thread.
pub(crate) fn handle_upgrade(shared: &Arc<Shared>, req: Request, stream: &TcpStream) -> Reply {
    let rt = &shared.rt;
    if shared.stopping.load(Ordering::SeqCst) {
        return Reply::Hangup;
    }
    if let Some((status, text)) = rt.refuse.lock().unwrap().clone() {
        return error_json(status, &text);
    }
    let query = req.query_pairs();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Phoenix negotiates the serializer before the socket's connect callback runs.
    let vsn = match param("vsn").as_deref() {
        None | Some("1.0.0") => Vsn::V1,
        Some("2.0.0") => Vsn::V2,
        Some(_) => return Reply::Respond(Response::new(403)),
    };
    let is_upgrade = req.method == "GET"
        && req
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.header("sec-websocket-key").filter(|_| is_upgrade) else {
        return Reply::Respond(Response::new(400).body("Bad Request: not a WebSocket upgrade"));
    };
    if req.header("sec-websocket-version") != Some("13") {
        return Reply::Respond(
            Response::new(426)
                .header("Sec-WebSocket-Version", "13")
                .body("Upgrade Required"),
        );
    }
    // Realtime reads the x-api-key header first, then the apikey param (§1.3).
    let Some(token) = req
        .header("x-api-key")
        .map(str::to_string)
        .or_else(|| param("apikey"))
    else {
        return error_json(401, "API key is missing");
    };
    let service = &shared.config.service_key;
    if token != *service {
        if token.starts_with("sb_") {
            // A wrong new-style key is stopped by the gateway, in its own shape.
            return Reply::Respond(Response::json(
                401,
                &json!({"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}),
            ));
        }
        return if looks_like_jwt(&token) {
            error_json(401, "Failed to validate JWT signature")
        } else {
            error_json(401, "The token provided is not a valid JWT")
        };
    }
    if !service.starts_with("sb_") {
        match jwt_claims(&token) {
            Ok(_) => {}
            Err(JwtProblem::NotJwt { .. }) => {
                return error_json(401, "The token provided is not a valid JWT")
            }
            Err(JwtProblem::MissingClaims) => {
                return error_json(401, "Fields `role` and `exp` are required in JWT")
            }
            Err(JwtProblem::Expired(_)) => return error_json(401, "Token has expired"),
        }
    }

    // The gateway turns an `sb_secret_` key into a service_role JWT (§1.3, inferred).
    let role = if token.starts_with("sb_secret_") {
        Some("service_role".to_string())
    } else if token.starts_with("sb_") {
        Some("anon".to_string())
    } else {
        jwt_role(&token)
    };

    let (Ok(mut write_half), Ok(sock), Ok(cut)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return Reply::Hangup;
    };
    let _ = sock.set_read_timeout(Some(READ_TICK));
    // A client that stops reading must not wedge the socket's thread forever.
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = sock.set_nodelay(true);
    let (tx, rx) = mpsc::channel();
    let conn = Arc::new(Conn {
        vsn,
        tx,
        stream: cut,
        channels: Mutex::default(),
        role,
    });
    // Registered and counted before the 101 goes out, so an observer that saw the upgrade
    // succeed also sees it in the counters.
    let id = rt.next_conn.fetch_add(1, Ordering::SeqCst);
    rt.conns.lock().unwrap().insert(id, conn.clone());
    rt.connections.fetch_add(1, Ordering::SeqCst);
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if write_half
        .write_all(head.as_bytes())
        .and_then(|_| write_half.flush())
        .is_err()
    {
        rt.conns.lock().unwrap().remove(&id);
        return Reply::Hangup;
    }
    // Cowboy's inbound frame limit is 5,000,000 bytes (§2.1).
    let config = WebSocketConfig {
        max_message_size: Some(5_000_000),
        max_frame_size: Some(5_000_000),
        ..WebSocketConfig::default()
    };
    let ws = WebSocket::from_raw_socket(sock, Role::Server, Some(config));
    let shared = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("realtime-socket-{id}"))
        .spawn(move || {
            let mut s = Socket {
                shared: shared.clone(),
                conn: conn.clone(),
                ws,
                rx,
                timers: Vec::new(),
            };
            s.run();
            shared.rt.conns.lock().unwrap().remove(&id);
            let _ = conn.stream.shutdown(Shutdown::Both);
        });
    if spawned.is_err() {
        rt.conns.lock().unwrap().remove(&id);
        return Reply::Hangup;
    }
    Reply::TakenOver
}

// ---------------------------------------------------------------------------------------------
// One socket.

/// A frame as the client sent it.
struct ClientFrame {
    topic: String,
    event: String,
    payload: Value,
    reference: Value,
    join_ref: Value,
}

impl ClientFrame {
    /// V1: an object with `topic`, `event`, `payload`, `ref` all present; V2: a 5-array.
    fn decode(vsn: Vsn, v: &Value) -> Option<ClientFrame> {
        match vsn {
            Vsn::V1 => {
                let o = v.as_object()?;
                Some(ClientFrame {
                    topic: o.get("topic")?.as_str()?.to_string(),
                    event: o.get("event")?.as_str()?.to_string(),
                    payload: o.get("payload")?.clone(),
                    reference: o.get("ref")?.clone(),
                    join_ref: o.get("join_ref").cloned().unwrap_or(Value::Null),
                })
            }
            Vsn::V2 => {
                let a = v.as_array().filter(|a| a.len() == 5)?;
                Some(ClientFrame {
                    join_ref: a[0].clone(),
                    reference: a[1].clone(),
                    topic: a[2].as_str()?.to_string(),
                    event: a[3].as_str()?.to_string(),
                    payload: a[4].clone(),
                })
            }
        }
    }

    fn reply(&self, status: &str, response: Value) -> ServerFrame {
        ServerFrame {
            topic: self.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({"status": status, "response": response}),
            reference: self.reference.clone(),
            join_ref: self.join_ref.clone(),
        }
    }
}

enum TimerKind {
    /// Send this frame (a delayed join error).
    Frame(ServerFrame),
    /// The subscription outcome of a join is due.
    Subscribe {
        topic: String,
        generation: u64,
        problem: Option<String>,
        repeat: bool,
    },
}

struct Timer {
    at: Instant,
    kind: TimerKind,
}

/// The socket's thread state.
struct Socket {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    ws: WebSocket<TcpStream>,
    rx: Receiver<Out>,
    timers: Vec<Timer>,
}

/// Why the socket loop ends.
struct Closed;

impl Socket {
    fn run(&mut self) {
        let mut last_inbound = Instant::now();
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let blackhole = self.shared.rt.blackhole.load(Ordering::SeqCst);
            if self.drain_queue(blackhole).is_err() {
                return;
            }
            if !blackhole && self.fire_timers().is_err() {
                return;
            }
            if blackhole {
                // The idle clock stands still while blackholed, so lifting the switch does not
                // immediately time out a socket that kept sending.
                last_inbound = Instant::now();
            } else if last_inbound.elapsed() >= self.shared.config.idle_timeout {
                // Phoenix's transport timeout: close 1000 with an empty reason (§6.1).
                self.close(1000);
                return;
            }
            match self.ws.read() {
                Ok(msg) => {
                    last_inbound = Instant::now();
                    match msg {
                        Message::Text(text) if self.on_text(&text).is_err() => return,
                        Message::Text(_) => {}
                        Message::Close(_) => {
                            // tungstenite queued the close reply; flush it and finish.
                            let _ = self.ws.flush();
                            return;
                        }
                        // Pings are answered by tungstenite; binary frames are only for
                        // broadcast features (§2.3), which this double does not offer.
                        _ => {}
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !blackhole {
                        let _ = self.ws.flush();
                    }
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    self.close(1009);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn send(&mut self, frame: &ServerFrame) -> Result<(), Closed> {
        if self.shared.rt.blackhole.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.ws
            .send(Message::Text(frame.encode(self.conn.vsn)))
            .map_err(|_| Closed)
    }

    /// Send a close frame, wait briefly for the client's answer, and give up the socket.
    fn close(&mut self, code: u16) {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }));
        let _ = self.ws.flush();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }

    fn drain_queue(&mut self, blackhole: bool) -> Result<(), Closed> {
        loop {
            match self.rx.try_recv() {
                Ok(Out::Frame(f)) => {
                    if !blackhole {
                        self.send(&f)?;
                    }
                }
                Ok(Out::Close(code)) => {
                    self.close(code);
                    return Err(Closed);
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(Closed),
            }
        }
    }

    fn fire_timers(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        let (due, rest): (Vec<Timer>, Vec<Timer>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|t| t.at <= now);
        self.timers = rest;
        for t in due {
            match t.kind {
                TimerKind::Frame(f) => self.send(&f)?,
                TimerKind::Subscribe {
                    topic,
                    generation,
                    problem,
                    repeat,
                } => self.subscribe_due(&topic, generation, problem, repeat)?,
            }
        }
        Ok(())
    }

    /// The delayed outcome of a join: "Subscribed to PostgreSQL", an error, or nothing (§3.4).
    fn subscribe_due(
        &mut self,
        topic: &str,
        generation: u64,
        problem: Option<String>,
        repeat: bool,
    ) -> Result<(), Closed> {
        let frame = {
            let chans = self.conn.channels.lock().unwrap();
            let Some(ch) = chans.get(topic).filter(|ch| ch.generation == generation) else {
                return Ok(()); // left or re-joined meanwhile
            };
            if let Some(p) = &problem {
                Some((
                    system_frame(topic, ch, "postgres_changes", "error", p),
                    false,
                ))
            } else if repeat {
                Some((subscribed_frame(topic, ch), false))
            } else {
                match self.shared.rt.subscribe_mode.lock().unwrap().clone() {
                    SubscribeMode::Ok => Some((subscribed_frame(topic, ch), true)),
                    SubscribeMode::Twice => {
                        self.timers.push(Timer {
                            at: Instant::now() + self.shared.config.subscribe_delay,
                            kind: TimerKind::Subscribe {
                                topic: topic.to_string(),
                                generation,
                                problem: None,
                                repeat: true,
                            },
                        });
                        Some((subscribed_frame(topic, ch), true))
                    }
                    SubscribeMode::Error(m) => Some((
                        system_frame(topic, ch, "postgres_changes", "error", &m),
                        false,
                    )),
                    SubscribeMode::Never => None,
                }
            }
        };
        if let Some((frame, goes_live)) = frame {
            self.send(&frame)?;
            // Live only after the message is on the wire: events queued from now on follow it.
            if goes_live {
                if let Some(ch) = self.conn.channels.lock().unwrap().get_mut(topic) {
                    if ch.generation == generation {
                        ch.live = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        self.shared.rt.frames.lock().unwrap().push(
            parsed
                .clone()
                .unwrap_or_else(|| Value::String(text.to_string())),
        );
        if self.shared.rt.blackhole.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Malformed frames are dropped silently, with no reply and no close (§2.3).
        let Some(frame) = parsed.and_then(|v| ClientFrame::decode(self.conn.vsn, &v)) else {
            return Ok(());
        };
        match frame.event.as_str() {
            "heartbeat" if frame.topic == "phoenix" => {
                if self.shared.rt.heartbeat_replies.load(Ordering::SeqCst) {
                    self.send(&frame.reply("ok", json!({})))?;
                }
                Ok(())
            }
            "phx_join" => self.on_join(frame),
            "phx_leave" => {
                let removed = self.conn.channels.lock().unwrap().remove(&frame.topic);
                self.send(&frame.reply("ok", json!({})))?;
                if let Some(ch) = removed {
                    self.send(&close_like_frame(&frame.topic, &ch, "phx_close"))?;
                }
                Ok(())
            }
            _ if !self
                .conn
                .channels
                .lock()
                .unwrap()
                .contains_key(&frame.topic) =>
            {
                self.send(&frame.reply("error", json!({"reason": "unmatched topic"})))
            }
            "access_token" => self.on_access_token(frame),
            // broadcast/presence and anything else on a joined topic: not modelled, no reply.
            _ => Ok(()),
        }
    }

    fn join_error(&mut self, frame: &ClientFrame, reason: &str) -> Result<(), Closed> {
        let reply = frame.reply("error", json!({"reason": reason}));
        let delay = *self.shared.rt.join_error_delay.lock().unwrap();
        if delay.is_zero() {
            self.send(&reply)
        } else {
            self.timers.push(Timer {
                at: Instant::now() + delay,
                kind: TimerKind::Frame(reply),
            });
            Ok(())
        }
    }

    fn on_join(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        // Without a join_ref the join's own ref identifies the join.
        let join_ref = if frame.join_ref.is_null() {
            frame.reference.clone()
        } else {
            frame.join_ref.clone()
        };
        let Some(sub) = frame.topic.strip_prefix("realtime:").map(str::to_string) else {
            return self.send(&frame.reply("error", json!({"reason": "unmatched topic"})));
        };
        if sub.is_empty() {
            return self.join_error(&frame, "TopicNameRequired: You must provide a topic name");
        }
        let forced = self.shared.rt.join_error.lock().unwrap().clone();
        if let Some(reason) = forced {
            return self.join_error(&frame, &reason);
        }
        // The server checks "private only" first, before the token (`only_private?`, §3.2).
        let private = join_is_private(&frame.payload);
        if !private && self.shared.rt.private_only.load(Ordering::SeqCst) {
            return self.join_error(
                &frame,
                "PrivateOnly: This project only allows private channels",
            );
        }
        let token = frame
            .payload
            .get("access_token")
            .or_else(|| frame.payload.get("user_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.starts_with("sb_"))
            .map(str::to_string);
        if let Some(t) = &token {
            let reason = match jwt_claims(t) {
                Ok(_) => None,
                Err(JwtProblem::NotJwt { .. }) => {
                    Some("MalformedJWT: The token provided is not a valid JWT".to_string())
                }
                Err(JwtProblem::MissingClaims) => {
                    Some("InvalidJWTToken: Fields `role` and `exp` are required in JWT".to_string())
                }
                Err(JwtProblem::Expired(n)) => Some(format!(
                    "InvalidJWTToken: Token has expired {n} seconds ago"
                )),
            };
            if let Some(r) = reason {
                return self.join_error(&frame, &r);
            }
        }
        {
            let chans = self.conn.channels.lock().unwrap();
            if chans.len() >= MAX_CHANNELS && !chans.contains_key(&frame.topic) {
                drop(chans);
                return self.join_error(&frame, "ChannelRateLimitReached: Too many channels");
            }
        }
        // A private join reads the channel's RLS policies on `realtime.messages` as the token's
        // role. The double models no policy: only service_role (BYPASSRLS) is authorized (§3.2).
        if private {
            let role = token
                .as_deref()
                .and_then(jwt_role)
                .or(self.conn.role.clone());
            if role.as_deref() != Some("service_role") {
                return self.join_error(
                    &frame,
                    &format!(
                        "Unauthorized: You do not have permissions to read from this Channel topic: {sub}"
                    ),
                );
            }
        }
        let items: Vec<Value> = frame
            .payload
            .get("config")
            .and_then(|c| c.get("postgres_changes"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|v| !v.is_null()).cloned().collect())
            .unwrap_or_default();
        let mut echoed = Vec::new();
        let mut bindings = Vec::new();
        let mut problem = None;
        for item in &items {
            let id = binding_id(item);
            let mut echo = item.clone();
            if let Some(o) = echo.as_object_mut() {
                o.insert("id".into(), json!(id));
            }
            echoed.push(echo);
            match parse_binding(item, id) {
                Ok(b) => bindings.push(b),
                Err(p) => {
                    problem.get_or_insert(p);
                }
            }
        }
        if problem.is_none() {
            problem = bindings.iter().find_map(|b| check_binding(&self.shared, b));
        }
        let generation = self
            .shared
            .rt
            .next_generation
            .fetch_add(1, Ordering::SeqCst);
        let old = self.conn.channels.lock().unwrap().insert(
            frame.topic.clone(),
            Channel {
                sub,
                join_ref,
                bindings,
                live: false,
                generation,
                token,
            },
        );
        // Counted before the send so an observer that saw the reply also sees the count.
        self.shared.rt.joins.fetch_add(1, Ordering::SeqCst);
        self.send(&frame.reply("ok", json!({"postgres_changes": echoed})))?;
        // The old join's close reaches the wire after the new join's reply (§3.5).
        if let Some(old) = old {
            self.send(&close_like_frame(&frame.topic, &old, "phx_close"))?;
        }
        if !items.is_empty() {
            self.timers.push(Timer {
                at: Instant::now() + self.shared.config.subscribe_delay,
                kind: TimerKind::Subscribe {
                    topic: frame.topic.clone(),
                    generation,
                    problem,
                    repeat: false,
                },
            });
        }
        Ok(())
    }

    /// Token refresh: never a reply; a bad token ends the channel (§6.3).
    fn on_access_token(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        let Some(token) = frame.payload.get("access_token").and_then(Value::as_str) else {
            return Ok(());
        };
        let mut chans = self.conn.channels.lock().unwrap();
        let Some(ch) = chans.get_mut(&frame.topic) else {
            return Ok(());
        };
        if token.starts_with("sb_") || ch.token.as_deref() == Some(token) {
            return Ok(());
        }
        let message = match jwt_claims(token) {
            Ok(_) => {
                ch.token = Some(token.to_string());
                return Ok(());
            }
            Err(JwtProblem::NotJwt { .. }) => "The token provided is not a valid JWT".to_string(),
            Err(JwtProblem::MissingClaims) => {
                "Fields `role` and `exp` are required in JWT".to_string()
            }
            Err(JwtProblem::Expired(n)) => format!("Token has expired {n} seconds ago"),
        };
        let ch = chans.remove(&frame.topic).expect("present above");
        drop(chans);
        self.send(&system_frame(
            &frame.topic,
            &ch,
            "system",
            "error",
            &message,
        ))?;
        self.send(&close_like_frame(&frame.topic, &ch, "phx_close"))
    }
}

/// `config.private` of a join: a boolean, or the strings "true"/"false" (§3.2); absent = false.
fn join_is_private(payload: &Value) -> bool {
    match payload.get("config").and_then(|c| c.get("private")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// The `role` claim of a JWT that passes Realtime's checks.
fn jwt_role(token: &str) -> Option<String> {
    jwt_claims(token)
        .ok()?
        .get("role")
        .and_then(Value::as_str)
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Bindings and filters.

/// A stable id for a `postgres_changes` item in 0..2^27 (the real server uses `phash2`, §3.3):
/// FNV-1a over the item's canonical JSON (serde_json sorts object keys).
fn binding_id(item: &Value) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in item.to_string().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h % 134_217_728
}

fn parse_binding(item: &Value, id: u64) -> Result<Binding, String> {
    let no_params = || {
        format!(
            "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {item}"
        )
    };
    let o = item.as_object().ok_or_else(no_params)?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let event = match s("event").map(|e| e.to_ascii_uppercase()).as_deref() {
        Some(e @ ("INSERT" | "UPDATE" | "DELETE")) => e.to_string(),
        _ => "*".to_string(),
    };
    let (schema, table) = match (s("schema"), s("table")) {
        (None, None) => return Err(no_params()),
        (schema, table) => (
            schema.unwrap_or_else(|| "public".into()),
            table.unwrap_or_else(|| "*".into()),
        ),
    };
    let filter = s("filter").unwrap_or_default();
    let conds = parse_rt_filter(&filter)?;
    let filters = conds
        .iter()
        .map(|c| {
            let (op, value) = match &c.op {
                CondOp::Cmp(op, v) => (rt_op_name(op), v.clone()),
                CondOp::In(vs) => ("in", format!("({})", vs.join(","))),
                CondOp::Is(v) => ("is", v.clone()),
            };
            format!("{{\"{}\", \"{op}\", \"{value}\", {}}}", c.column, c.negate)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let desc = format!(
        "event: {}, schema: {schema}, table: {table}, filters: [{filters}]",
        s("event").unwrap_or_else(|| "*".into())
    );
    Ok(Binding {
        id,
        event,
        schema,
        table,
        conds,
        desc,
    })
}

fn rt_op_name(op: &str) -> &'static str {
    match op {
        "=" => "eq",
        "<>" => "neq",
        "<" => "lt",
        "<=" => "lte",
        ">" => "gt",
        _ => "gte",
    }
}

/// Split on commas that are outside parentheses and double quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quoted) = (0i32, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Parse a Realtime filter (§5.4): `col=[not.]op.value`, several joined by commas (AND).
fn parse_rt_filter(filter: &str) -> Result<Vec<Cond>, String> {
    if filter.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |parts: Vec<&str>| format!("Error parsing `filter` params: {parts:?}");
    let mut conds = Vec::new();
    for part in split_top_level(filter) {
        let Some((column, rest)) = part.split_once('=') else {
            return Err(bad(vec![part.as_str()]));
        };
        let (negate, rest) = match rest.strip_prefix("not.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let Some((op, value)) = rest.split_once('.') else {
            return Err(bad(vec![rest]));
        };
        let op = match op {
            "eq" => CondOp::Cmp("=", value.to_string()),
            "neq" => CondOp::Cmp("<>", value.to_string()),
            "lt" => CondOp::Cmp("<", value.to_string()),
            "lte" => CondOp::Cmp("<=", value.to_string()),
            "gt" => CondOp::Cmp(">", value.to_string()),
            "gte" => CondOp::Cmp(">=", value.to_string()),
            "in" => {
                let inner = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| bad(vec![op, value]))?;
                let list: Vec<String> = split_top_level(inner)
                    .into_iter()
                    .map(|v| v.trim().trim_matches('"').to_string())
                    .collect();
                if list.len() > 100 {
                    return Err(bad(vec![op, value]));
                }
                CondOp::In(list)
            }
            "is" if matches!(value, "null" | "true" | "false" | "unknown") => {
                CondOp::Is(value.to_string())
            }
            _ => return Err(bad(vec![op, value])),
        };
        conds.push(Cond {
            column: column.trim().to_string(),
            negate,
            op,
        });
    }
    Ok(conds)
}

/// Check a binding against the database like the server's subscription check (§3.4): the table
/// must exist, filter columns must exist and values must cast to the column type. Installs the
/// change trigger on a table created after the double started. Returns the system error text.
fn check_binding(shared: &Shared, b: &Binding) -> Option<String> {
    let unable = || {
        format!(
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled \
             for the given connect parameters: [{}, select: nil]",
            b.desc
        )
    };
    let exception = |e: String| {
        format!(
            "Unable to subscribe to changes with given parameters. An exception happened so please \
             check your connect parameters: [{}]. Exception: {e}",
            b.desc
        )
    };
    if b.schema != "public" && b.schema != "*" {
        return Some(unable());
    }
    if b.table == "*" {
        return None;
    }
    let mut client = match shared.pool.get() {
        Ok(c) => c,
        Err(e) => return Some(format!("{{:error, \"{e}\"}}")),
    };
    let table = match shared.schema.get(&mut client, &b.table) {
        Ok(Some(t)) => t,
        Ok(None) => return Some(unable()),
        Err(e) => return Some(format!("{{:error, \"{e}\"}}")),
    };
    for c in &b.conds {
        let Some(col) = table.column(&c.column) else {
            return Some(exception(format!(
                "ERROR P0001 (raise_exception) invalid column for filter {}",
                c.column
            )));
        };
        let values: Vec<&String> = match &c.op {
            CondOp::Cmp(_, v) => vec![v],
            CondOp::In(vs) => vs.iter().collect(),
            CondOp::Is(_) => vec![],
        };
        for v in values {
            let sql = format!("SELECT $1::text::{}", col.sql_type);
            if let Err(e) = client.execute(sql.as_str(), &[v]) {
                if let Some(db) = e.as_db_error() {
                    return Some(exception(format!(
                        "ERROR {} ({}) {}",
                        db.code().code(),
                        condition_name(db.code().code()),
                        db.message()
                    )));
                }
            }
        }
    }
    if !shared.rt.triggered.lock().unwrap().contains(&b.table) {
        let _ = install_change_triggers(&mut client, shared);
    }
    None
}

fn condition_name(code: &str) -> &'static str {
    match code {
        "22P02" => "invalid_text_representation",
        "22007" => "invalid_datetime_format",
        "22003" => "numeric_value_out_of_range",
        _ => "error",
    }
}

/// The text form a filter compares against (`"x"` → `x`, numbers and booleans as written).
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn values_equal(a: &str, b: &str, typname: &str) -> bool {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if !matches!(typname, "text" | "varchar" | "bpchar") {
            return x == y;
        }
    }
    match typname {
        "uuid" => a.eq_ignore_ascii_case(b),
        "bool" => {
            let norm = |s: &str| {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "t" | "yes" | "on" | "1"
                )
            };
            norm(a) == norm(b)
        }
        _ => a == b,
    }
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// Evaluate one condition against a row (a missing or NULL value never matches a comparison).
fn cond_matches(c: &Cond, row: &Map<String, Value>, table: &Table) -> bool {
    let Some(v) = row.get(&c.column) else {
        return false;
    };
    let typname = table
        .column(&c.column)
        .map(|col| col.typname.as_str())
        .unwrap_or("text");
    let result = match &c.op {
        CondOp::Is(what) => match what.as_str() {
            "null" => v.is_null(),
            "true" => v == &Value::Bool(true),
            "false" => v == &Value::Bool(false),
            _ => v.is_null(),
        },
        _ if v.is_null() => return false,
        CondOp::Cmp(op, want) => {
            let have = value_text(v);
            match *op {
                "=" => values_equal(&have, want, typname),
                "<>" => !values_equal(&have, want, typname),
                "<" => compare(&have, want).is_lt(),
                "<=" => compare(&have, want).is_le(),
                ">" => compare(&have, want).is_gt(),
                _ => compare(&have, want).is_ge(),
            }
        }
        CondOp::In(list) => {
            let have = value_text(v);
            list.iter().any(|w| values_equal(&have, w, typname))
        }
    };
    result != c.negate
}

// ---------------------------------------------------------------------------------------------
// The change feed.

/// Install (idempotently) the notify function and a row trigger on every table in `public` that
/// lacks it. Serialised by an advisory lock, since two doubles may share one database.
pub(crate) fn install_change_triggers(
    client: &mut postgres::Client,
    shared: &Shared,
) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        r#"
SELECT pg_advisory_xact_lock(73570001);
CREATE SCHEMA IF NOT EXISTS sms_double;
CREATE SEQUENCE IF NOT EXISTS sms_double.change_seq;
CREATE OR REPLACE FUNCTION sms_double.notify_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  base jsonb;
  msg text;
BEGIN
  -- seq keeps payloads distinct: NOTIFY folds identical payloads within one transaction.
  base := jsonb_build_object(
    'seq', nextval('sms_double.change_seq'),
    'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
    'commit_timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'has_pk', TG_NARGS > 0);
  IF TG_OP <> 'INSERT' THEN
    IF (SELECT relreplident FROM pg_class WHERE oid = TG_RELID) = 'f' THEN
      base := base || jsonb_build_object('old_record', to_jsonb(OLD));
    ELSE
      base := base || jsonb_build_object('old_record',
        (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
           FROM jsonb_each(to_jsonb(OLD)) e WHERE e.key = ANY (TG_ARGV)));
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN
    msg := base::text;
  ELSE
    msg := (base || jsonb_build_object('record', to_jsonb(NEW)))::text;
    -- NOTIFY payloads must stay under 8000 bytes: send the key and let the double re-read.
    IF octet_length(msg) > 7900 THEN
      msg := (base || jsonb_build_object('record_pk',
        (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
           FROM jsonb_each(to_jsonb(NEW)) e WHERE e.key = ANY (TG_ARGV))))::text;
    END IF;
  END IF;
  PERFORM pg_notify('{NOTIFY_CHANNEL}', msg);
  RETURN NULL;
END
$fn$;
DO $do$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT c.relname,
           ARRAY(SELECT a.attname::text FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord) AS pk
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                        WHERE t.tgrelid = c.oid AND t.tgname = '{TRIGGER_NAME}')
  LOOP
    EXECUTE format(
      'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON public.%I '
      'FOR EACH ROW EXECUTE FUNCTION sms_double.notify_change(%s)',
      '{TRIGGER_NAME}', r.relname,
      (SELECT string_agg(quote_literal(x), ', ') FROM unnest(r.pk) AS x));
  END LOOP;
END
$do$;
"#
    ))?;
    let tables: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND t.tgname = $1",
            &[&TRIGGER_NAME],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit()?;
    shared.rt.triggered.lock().unwrap().extend(tables);
    Ok(())
}

/// Start the thread that LISTENs for changes and fans them out. It reconnects with backoff when
/// PostgreSQL goes away; changes made while it is disconnected are lost, as on the real server.
pub(crate) fn start_listener(shared: Arc<Shared>) {
    thread::Builder::new()
        .name("supabase-double-listen".into())
        .spawn(move || listen_loop(&shared))
        .expect("spawn the change listener thread");
}

fn listen_loop(shared: &Shared) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    while !shared.stopping.load(Ordering::SeqCst) {
        let client = postgres::Client::connect(
            &format!("{} connect_timeout=2", shared.conn_str),
            postgres::NoTls,
        )
        .and_then(|mut c| {
            c.batch_execute(&format!("SET TimeZone TO 'UTC'; LISTEN {NOTIFY_CHANNEL}"))?;
            Ok(c)
        });
        let mut client = match client {
            Ok(c) => c,
            Err(_) => {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if connected_before {
            shared.rt.resubscribed();
        }
        connected_before = true;
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let next = client
                .notifications()
                .timeout_iter(Duration::from_millis(100))
                .next();
            match next {
                Ok(Some(n)) => {
                    let payload = n.payload().to_string();
                    handle_change(shared, &mut client, &payload);
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

/// Keep only fields whose JSON text is at most 64 bytes (§4.3).
fn trim_fields(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, field| field.to_string().len() <= 64);
    }
}

/// Turn one NOTIFY payload into a `postgres_changes` `data` object and fan it out.
fn handle_change(shared: &Shared, client: &mut postgres::Client, payload: &str) {
    let rt = &shared.rt;
    if rt.drop_events.load(Ordering::SeqCst) {
        return; // rate-limited changes are consumed and lost (§7)
    }
    let Ok(Value::Object(change)) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    let s = |k: &str| {
        change
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (schema, table_name, kind) = (s("schema"), s("table"), s("type"));
    let Ok(Some(table)) = shared.schema.get(client, &table_name) else {
        return;
    };
    let mut record = change.get("record").cloned();
    if let Some(pk) = change.get("record_pk") {
        // The change was too large for NOTIFY: read the row back by its key (skip if gone).
        let cond = table
            .pk
            .iter()
            .map(|c| format!("t.{0} = k.{0}", ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT to_jsonb(t)::text FROM {q} t, jsonb_populate_record(NULL::{q}, $1::text::jsonb) k WHERE {cond}",
            q = qualified(&table_name)
        );
        match client.query_opt(sql.as_str(), &[&pk.to_string()]) {
            Ok(Some(row)) => record = serde_json::from_str(&row.get::<_, String>(0)).ok(),
            _ => return,
        }
    }
    let old_record = change.get("old_record").cloned();
    let has_pk = change
        .get("has_pk")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let mut data = Map::new();
    data.insert("schema".into(), json!(schema));
    data.insert("table".into(), json!(table_name));
    data.insert("type".into(), json!(kind));
    if has_pk {
        data.insert(
            "commit_timestamp".into(),
            change
                .get("commit_timestamp")
                .cloned()
                .unwrap_or(Value::Null),
        );
        data.insert(
            "columns".into(),
            Value::Array(
                table
                    .columns
                    .iter()
                    .map(|c| json!({"name": c.name, "type": c.typname}))
                    .collect(),
            ),
        );
        if kind != "DELETE" {
            data.insert("record".into(), record.clone().unwrap_or_else(|| json!({})));
        }
        if kind != "INSERT" {
            data.insert(
                "old_record".into(),
                old_record.clone().unwrap_or_else(|| json!({})),
            );
        }
        data.insert("errors".into(), Value::Null);
        let too_big = Value::Object(data.clone()).to_string().len() > MAX_RECORD_BYTES;
        if too_big || rt.oversized_events.load(Ordering::SeqCst) {
            for k in ["record", "old_record"] {
                if let Some(v) = data.get_mut(k) {
                    trim_fields(v);
                }
            }
            data.insert("errors".into(), json!(["Error 413: Payload Too Large"]));
        }
    } else {
        // A table without a primary key (§4.3).
        data.insert("commit_timestamp".into(), Value::Null);
        data.insert("columns".into(), json!([]));
        if kind != "DELETE" {
            data.insert("record".into(), json!({}));
        }
        if kind != "INSERT" {
            data.insert("old_record".into(), json!({}));
        }
        data.insert(
            "errors".into(),
            json!(["Error 400: Bad Request, no primary key"]),
        );
    }
    let data = Value::Object(data);

    // Filters see the new row (the old one for DELETE), untrimmed.
    let match_row = if kind == "DELETE" { old_record } else { record }
        .and_then(|v| match v {
            Value::Object(o) => Some(o),
            _ => None,
        })
        .unwrap_or_default();
    let all_types = rt.all_types.load(Ordering::SeqCst);
    let copies = if rt.duplicate_events.load(Ordering::SeqCst) {
        2
    } else {
        1
    };
    for conn in rt.snapshot() {
        let chans = conn.channels.lock().unwrap();
        for (topic, ch) in chans.iter().filter(|(_, ch)| ch.live) {
            let ids: Vec<u64> = ch
                .bindings
                .iter()
                .filter(|b| {
                    (all_types || b.event == "*" || b.event == kind)
                        && (b.schema == "*" || b.schema == schema)
                        && (b.table == "*" || b.table == table_name)
                        && b.conds.iter().all(|c| cond_matches(c, &match_row, &table))
                })
                .map(|b| b.id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let frame = ServerFrame {
                topic: topic.clone(),
                event: "postgres_changes".into(),
                payload: json!({"ids": ids, "data": data}),
                reference: Value::Null,
                join_ref: Value::Null,
            };
            for _ in 0..copies {
                let _ = conn.tx.send(Out::Frame(frame.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::super::testkit::{
        env, env_with, insert_message, queued_binding, seed, ws_connect, ws_open, WsEvent,
    };
    use super::super::{make_test_jwt, SubscribeMode, SupabaseConfig};

    const T: Duration = Duration::from_secs(5);

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn handshake_errors_use_the_server_texts() {
        let e = env();
        assert_eq!(
            ws_connect(&e.sb, "vsn=1.0.0").err(),
            Some((401, r#"{"error":"API key is missing"}"#.into()))
        );
        let other = make_test_jwt(&json!({"role": "service_role", "exp": 4102444800u64, "x": 1}));
        assert_eq!(
            ws_connect(&e.sb, &format!("apikey={other}")).err(),
            Some((
                401,
                r#"{"error":"Failed to validate JWT signature"}"#.into()
            ))
        );
        assert_eq!(
            ws_connect(&e.sb, "apikey=potato").err(),
            Some((
                401,
                r#"{"error":"The token provided is not a valid JWT"}"#.into()
            ))
        );
        let key = e.sb.service_key();
        assert_eq!(
            ws_connect(&e.sb, &format!("apikey={key}&vsn=3.0.0")).err(),
            Some((403, String::new()))
        );
        e.sb.set_realtime_refuse(Some((503, "Realtime is restarting".into())));
        assert_eq!(
            ws_connect(&e.sb, &format!("apikey={key}")).err(),
            Some((503, r#"{"error":"Realtime is restarting"}"#.into()))
        );
        e.sb.set_realtime_refuse(None);
        // No vsn means 1.0.0.
        assert!(ws_connect(&e.sb, &format!("apikey={key}")).is_ok());
        assert_eq!(e.sb.realtime_connections(), 1);

        // A configured key that is expired or lacks claims is refused with the §2.2 texts.
        let expired = make_test_jwt(&json!({"role": "service_role", "exp": 1000}));
        let e2 = env_with(SupabaseConfig {
            service_key: expired.clone(),
            ..Default::default()
        });
        assert_eq!(
            ws_connect(&e2.sb, &format!("apikey={expired}")).err(),
            Some((401, r#"{"error":"Token has expired"}"#.into()))
        );
    }

    #[test]
    fn join_subscribe_and_one_update_event_per_queued_insert() {
        let e = env_with(SupabaseConfig {
            subscribe_delay: Duration::from_millis(300),
            ..Default::default()
        });
        let s = seed(&e.pg);
        let mut c = ws_open(&e.sb);
        let reply = c.join("realtime:sms-sender", "1", queued_binding());
        assert_eq!(
            keys(&reply),
            ["event", "payload", "ref", "topic"],
            "V1 frames never carry join_ref"
        );
        assert_eq!(reply["event"], "phx_reply");
        assert_eq!(reply["ref"], "1");
        assert_eq!(reply["payload"]["status"], "ok");
        let item = &reply["payload"]["response"]["postgres_changes"][0];
        let id = item["id"].as_u64().expect("integer id");
        assert!(id < 134_217_728);
        let mut without_id = item.clone();
        without_id.as_object_mut().unwrap().remove("id");
        assert_eq!(without_id, queued_binding()[0], "the item is echoed back");
        assert_eq!(e.sb.realtime_joins(), 1);

        // Committed before "Subscribed to PostgreSQL": never delivered (no replay).
        insert_message(&e.pg, &s, "too early", "outbound", Some("pending"));
        let system = c.recv(T);
        assert_eq!(
            system,
            json!({"topic": "realtime:sms-sender", "event": "system", "ref": null,
                   "payload": {"channel": "sms-sender", "extension": "postgres_changes", "status": "ok",
                               "message": "Subscribed to PostgreSQL"}})
        );
        assert!(e.sb.wait_subscribed(1, T));
        c.expect_silence(Duration::from_millis(300));

        let t = Instant::now();
        let msg = insert_message(&e.pg, &s, "hello", "outbound", Some("pending"));
        let ev = c.recv(T);
        eprintln!("insert → postgres_changes in {:?}", t.elapsed());
        assert_eq!(keys(&ev), ["event", "payload", "ref", "topic"]);
        assert_eq!(
            (ev["event"].clone(), ev["ref"].clone()),
            (json!("postgres_changes"), Value::Null)
        );
        assert_eq!(ev["payload"]["ids"], json!([id]));
        let data = &ev["payload"]["data"];
        assert_eq!(
            keys(data),
            [
                "columns",
                "commit_timestamp",
                "errors",
                "old_record",
                "record",
                "schema",
                "table",
                "type"
            ]
        );
        assert_eq!(
            (
                data["schema"].as_str(),
                data["table"].as_str(),
                data["type"].as_str()
            ),
            (Some("public"), Some("messages"), Some("UPDATE"))
        );
        assert_eq!(data["errors"], Value::Null);
        assert_eq!(data["record"]["id"], json!(msg));
        assert_eq!(data["record"]["status"], "queued_for_send");
        assert_eq!(data["record"]["content"], "hello");
        assert_eq!(
            data["old_record"],
            json!({"id": msg}),
            "old_record is the primary key only"
        );
        let created = data["record"]["created_at"].as_str().unwrap();
        assert!(
            created.ends_with("+00:00") && created.contains('T'),
            "{created}"
        );
        let ts = data["commit_timestamp"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == ".",
            "{ts}"
        );
        let columns = data["columns"].as_array().unwrap();
        assert_eq!(columns[0], json!({"name": "id", "type": "uuid"}));
        assert_eq!(columns[3], json!({"name": "role", "type": "varchar"}));
        assert_eq!(columns.len(), 11);
        // Exactly one: the INSERT does not match an UPDATE binding, nor does the claim below.
        c.expect_silence(Duration::from_millis(300));
        e.pg.client()
            .execute(
                "UPDATE messages SET status = 'sending' WHERE id = $1::text::uuid",
                &[&msg],
            )
            .unwrap();
        c.expect_silence(Duration::from_millis(300));

        // Heartbeats are answered with the same ref.
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "7"}));
        assert_eq!(
            c.recv(T),
            json!({"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "7"})
        );
        assert_eq!(e.sb.frames_received().last().unwrap()["event"], "heartbeat");
    }

    #[test]
    fn leave_rejoin_and_topic_errors() {
        let e = env();
        let mut c = ws_open(&e.sb);
        assert_eq!(
            c.join("realtime:a", "1", queued_binding())["payload"]["status"],
            "ok"
        );
        assert_eq!(c.recv(T)["event"], "system");
        // Re-join: the new reply first, then phx_close carrying the OLD join_ref.
        let reply = c.join("realtime:a", "2", queued_binding());
        assert_eq!(
            (reply["event"].clone(), reply["ref"].clone()),
            (json!("phx_reply"), json!("2"))
        );
        assert_eq!(
            c.recv(T),
            json!({"topic": "realtime:a", "event": "phx_close", "payload": {}, "ref": "1"})
        );
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        assert!(e.sb.wait_subscribed(1, T));
        c.send(json!({"topic": "realtime:a", "event": "phx_leave", "payload": {}, "ref": "3", "join_ref": "2"}));
        assert_eq!(
            c.recv(T),
            json!({"topic": "realtime:a", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "3"})
        );
        assert_eq!(
            c.recv(T),
            json!({"topic": "realtime:a", "event": "phx_close", "payload": {}, "ref": "2"})
        );
        assert_eq!(e.sb.subscribed_channels(), 0);

        let r = c.join("other", "4", json!([]));
        assert_eq!(
            r["payload"],
            json!({"status": "error", "response": {"reason": "unmatched topic"}})
        );
        let r = c.join("realtime:", "5", json!([]));
        assert_eq!(
            r["payload"]["response"]["reason"],
            "TopicNameRequired: You must provide a topic name"
        );
        c.send(json!({"topic": "realtime:zzz", "event": "broadcast", "payload": {}, "ref": "6"}));
        assert_eq!(
            c.recv(T)["payload"]["response"]["reason"],
            "unmatched topic"
        );
        // Malformed frames (missing `ref`, not JSON) are dropped silently; the socket stays.
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}}));
        c.ws.send(tungstenite::Message::Text("nope".into()))
            .unwrap();
        c.expect_silence(Duration::from_millis(200));
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": null}));
        assert_eq!(c.recv(T)["ref"], Value::Null);
        // No postgres_changes: ok reply with an empty list and no system message.
        let r = c.join("realtime:empty", "8", json!([]));
        assert_eq!(r["payload"]["response"], json!({"postgres_changes": []}));
        c.expect_silence(Duration::from_millis(200));
        // access_token gets no reply, ever.
        c.send(json!({"topic": "realtime:empty", "event": "access_token", "payload": {"access_token": e.sb.service_key()}, "ref": "9"}));
        c.expect_silence(Duration::from_millis(200));
    }

    #[test]
    fn bad_bindings_join_ok_then_system_error_and_no_events() {
        let e = env();
        let s = seed(&e.pg);
        let mut c = ws_open(&e.sb);
        let cases = [
            ("status=foo.bar", "messages", "Error parsing `filter` params: [\"foo\", \"bar\"]"),
            ("nope=eq.x", "messages", "invalid column for filter nope"),
            ("id=eq.abc", "messages", "invalid input syntax for type uuid: \\\"abc\\\""),
            ("status=eq.queued_for_send", "nope", "Unable to subscribe to changes with given parameters. Please check Realtime is enabled"),
        ];
        for (i, (filter, table, text)) in cases.iter().enumerate() {
            let topic = format!("realtime:bad{i}");
            let r = c.join(
                &topic,
                &i.to_string(),
                json!([{"event": "*", "schema": "public", "table": table, "filter": filter}]),
            );
            assert_eq!(r["payload"]["status"], "ok", "{r}");
            let sys = c.recv(T);
            assert_eq!(sys["event"], "system");
            assert_eq!(sys["payload"]["status"], "error");
            let message = sys["payload"]["message"].as_str().unwrap();
            assert!(message.contains(&text.replace("\\\"", "\"")), "{message}");
        }
        assert_eq!(e.sb.subscribed_channels(), 0);
        insert_message(&e.pg, &s, "x", "outbound", Some("pending"));
        c.expect_silence(Duration::from_millis(300));
    }

    #[test]
    fn private_only_projects_refuse_public_joins_and_authorize_service_role() {
        let e = env();
        e.sb.set_private_only(true);
        let mut c = ws_open(&e.sb);
        let join = |c: &mut super::super::testkit::WsClient,
                    r: &str,
                    private: Value,
                    token: Option<String>| {
            // One topic per join: a re-join would interleave the old channel's phx_close.
            let mut payload =
                json!({"config": {"postgres_changes": queued_binding(), "private": private}});
            if let Some(t) = token {
                payload["access_token"] = json!(t);
            }
            c.send(json!({"topic": format!("realtime:p{r}"), "event": "phx_join", "ref": r, "join_ref": r, "payload": payload}));
            c.recv(T)
        };
        let refused = join(&mut c, "1", json!(false), None);
        assert_eq!(
            refused["payload"],
            json!({"status": "error", "response": {"reason": "PrivateOnly: This project only allows private channels"}})
        );
        assert_eq!(
            join(&mut c, "2", json!(false), None)["payload"]["status"],
            "error"
        );
        let ok = join(&mut c, "3", json!(true), None);
        assert_eq!(ok["payload"]["status"], "ok", "{ok}");
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        assert_eq!(
            join(&mut c, "4", json!("true"), None)["payload"]["status"],
            "ok"
        );
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        // A private join as anon (no policy modelled) is unauthorized.
        let anon = make_test_jwt(&json!({"role": "anon", "exp": 4102444800u64}));
        let r = join(&mut c, "5", json!(true), Some(anon));
        assert_eq!(
            r["payload"]["response"]["reason"],
            "Unauthorized: You do not have permissions to read from this Channel topic: p5"
        );
        // Turning the setting off is a tenant config change: 1012 for every socket (§6.5).
        e.sb.set_private_only(false);
        let code = loop {
            match c.event(T) {
                WsEvent::Text(_) => continue, // "Server requested disconnect"
                WsEvent::Close(code) => break code,
                other => panic!("expected close 1012, got {other:?}"),
            }
        };
        assert_eq!(code, Some(1012));
        let mut c = ws_open(&e.sb);
        assert_eq!(
            c.join("realtime:q", "1", queued_binding())["payload"]["status"],
            "ok"
        );
    }

    #[test]
    fn subscribe_modes_and_join_errors() {
        let e = env();
        let mut c = ws_open(&e.sb);
        e.sb.set_join_error(Some(
            "RealtimeRestarting: Realtime is restarting, please standby".into(),
        ));
        let r = c.join("realtime:x", "1", queued_binding());
        assert_eq!(
            r["payload"],
            json!({"status": "error", "response": {"reason": "RealtimeRestarting: Realtime is restarting, please standby"}})
        );
        e.sb.set_join_error(None);
        e.sb.set_subscribe_status(SubscribeMode::Never);
        assert_eq!(
            c.join("realtime:x", "2", queued_binding())["payload"]["status"],
            "ok"
        );
        c.expect_silence(Duration::from_millis(300));
        assert_eq!(e.sb.subscribed_channels(), 0);
        e.sb.set_subscribe_status(SubscribeMode::Error(
            "{:error, \"Too many database timeouts\"}".into(),
        ));
        assert_eq!(
            c.join("realtime:y", "3", queued_binding())["payload"]["status"],
            "ok"
        );
        let sys = c.recv(T);
        assert_eq!(
            (
                sys["payload"]["status"].clone(),
                sys["payload"]["message"].clone()
            ),
            (
                json!("error"),
                json!("{:error, \"Too many database timeouts\"}")
            )
        );
        e.sb.set_subscribe_status(SubscribeMode::Twice);
        assert_eq!(
            c.join("realtime:z", "4", queued_binding())["payload"]["status"],
            "ok"
        );
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        assert_eq!(e.sb.subscribed_channels(), 1);
    }

    #[test]
    fn socket_faults() {
        let e = env_with(SupabaseConfig {
            idle_timeout: Duration::from_millis(600),
            ..Default::default()
        });
        let s = seed(&e.pg);

        // Blackhole: heartbeats and events vanish; afterwards nothing is replayed.
        let mut c = ws_open(&e.sb);
        c.join("realtime:a", "1", queued_binding());
        c.recv(T);
        assert!(e.sb.wait_subscribed(1, T));
        e.sb.set_blackhole(true);
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"}));
        insert_message(&e.pg, &s, "lost", "outbound", Some("pending"));
        c.expect_silence(Duration::from_millis(800)); // longer than the idle timeout: not closed
        e.sb.set_blackhole(false);
        c.expect_silence(Duration::from_millis(200));
        // Heartbeat replies off: swallowed, but events still flow.
        e.sb.set_heartbeat_replies(false);
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"}));
        insert_message(&e.pg, &s, "seen", "outbound", Some("pending"));
        let ev = c.recv(T);
        assert_eq!(ev["payload"]["data"]["record"]["content"], "seen");
        e.sb.set_heartbeat_replies(true);
        // Dropped and duplicated events.
        e.sb.set_drop_events(true);
        insert_message(&e.pg, &s, "dropped", "outbound", Some("pending"));
        c.expect_silence(Duration::from_millis(300));
        e.sb.set_drop_events(false);
        e.sb.set_duplicate_events(true);
        insert_message(&e.pg, &s, "twice", "outbound", Some("pending"));
        assert_eq!(c.recv(T)["payload"]["data"]["record"]["content"], "twice");
        assert_eq!(c.recv(T)["payload"]["data"]["record"]["content"], "twice");
        e.sb.set_duplicate_events(false);
        // phx_error: ref = join_ref, the socket stays.
        e.sb.phx_error_all();
        assert_eq!(
            c.recv(T),
            json!({"topic": "realtime:a", "event": "phx_error", "payload": {}, "ref": "1"})
        );
        assert_eq!(e.sb.subscribed_channels(), 0);
        // Idle timeout: close 1000 after no inbound frame for idle_timeout.
        let t = Instant::now();
        match c.event(T) {
            WsEvent::Close(code) => assert_eq!(code, Some(1000)),
            other => panic!("expected close 1000, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_millis(900));

        // Server disconnect: system ok on every topic, then close 1012.
        let mut c = ws_open(&e.sb);
        c.join("realtime:b", "1", queued_binding());
        c.recv(T);
        e.sb.realtime_server_disconnect();
        assert_eq!(
            c.recv(T),
            json!({"topic": "realtime:b", "event": "system", "ref": null,
                   "payload": {"channel": "b", "extension": "system", "status": "ok", "message": "Server requested disconnect"}})
        );
        match c.event(T) {
            WsEvent::Close(code) => assert_eq!(code, Some(1012)),
            other => panic!("expected close 1012, got {other:?}"),
        }

        // Abrupt drop: the connection ends without a close frame.
        let mut c = ws_open(&e.sb);
        c.join("realtime:c", "1", queued_binding());
        c.recv(T);
        e.sb.realtime_drop_all();
        match c.event(T) {
            WsEvent::Gone => {}
            other => panic!("expected a dropped connection, got {other:?}"),
        }
        let deadline = Instant::now() + T;
        while e.sb.realtime_open_sockets() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(e.sb.realtime_open_sockets(), 0);
        assert_eq!(e.sb.realtime_connections(), 3);
    }

    #[test]
    fn feed_survives_a_postgres_restart() {
        let e = env();
        let s = seed(&e.pg);
        let mut c = ws_open(&e.sb);
        c.join(
            "realtime:r",
            "1",
            json!([{"event": "*", "schema": "public", "table": "messages"}]),
        );
        assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
        e.pg.restart();
        // Like a CDC restart: a fresh "Subscribed to PostgreSQL" once the feed is back.
        let again = c.recv(Duration::from_secs(10));
        assert_eq!(again["payload"]["message"], "Subscribed to PostgreSQL");
        insert_message(&e.pg, &s, "after restart", "outbound", Some("draft"));
        let ev = c.recv(T);
        let data = &ev["payload"]["data"];
        assert_eq!(data["type"], "INSERT");
        assert!(
            data.get("old_record").is_none(),
            "INSERT frames have no old_record key"
        );
        assert_eq!(data["record"]["content"], "after restart");
        e.pg.client().execute("DELETE FROM messages", &[]).unwrap();
        let ev = c.recv(T);
        let data = &ev["payload"]["data"];
        assert_eq!(data["type"], "DELETE");
        assert!(
            data.get("record").is_none(),
            "DELETE frames have no record key"
        );
        assert!(data["old_record"]["id"].is_string());
    }

    #[test]
    fn large_rows_and_v2_sockets() {
        let e = env();
        let s = seed(&e.pg);
        let key = e.sb.service_key();
        let mut c = ws_connect(&e.sb, &format!("apikey={key}&vsn=2.0.0")).unwrap();
        c.send(json!(["1", "1", "realtime:v2", "phx_join",
                      {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "messages"}]}}]));
        let reply = c.recv(T);
        assert_eq!(reply[0], "1");
        assert_eq!(reply[3], "phx_reply");
        assert_eq!(reply[4]["status"], "ok");
        let sys = c.recv(T);
        assert_eq!(
            (sys[0].clone(), sys[1].clone(), sys[3].clone()),
            (json!("1"), Value::Null, json!("system"))
        );
        // Over NOTIFY's 8000-byte limit: the double re-reads the row.
        let big = "x".repeat(20_000);
        insert_message(&e.pg, &s, &big, "outbound", Some("draft"));
        let ev = c.recv(T);
        assert_eq!(
            (ev[0].clone(), ev[3].clone()),
            (Value::Null, json!("postgres_changes"))
        );
        assert_eq!(
            ev[4]["data"]["record"]["content"].as_str().map(str::len),
            Some(20_000)
        );
        // Oversized switch: long fields removed, 413 error.
        e.sb.set_oversized_events(true);
        insert_message(&e.pg, &s, &big, "outbound", Some("draft"));
        let data = c.recv(T)[4]["data"].clone();
        assert_eq!(data["errors"], json!(["Error 413: Payload Too Large"]));
        assert!(data["record"].get("content").is_none());
        assert!(data["record"]["id"].is_string());
        // V1 object frames on a V2 socket are dropped silently.
        c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"}));
        c.expect_silence(Duration::from_millis(200));
    }
}
