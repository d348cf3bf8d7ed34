//! Test helpers for the Supabase double's own tests: a PostgreSQL with the sms-sender schema and a
//! double on it, row seeding, a minimal HTTP client and a tungstenite WebSocket client.
//!
//! Invariant: [`Env`] drops the double before the database (field order), so the double's
//! connections go away before PostgreSQL is shut down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::{SupabaseConfig, SupabaseDouble};
use crate::pg::{schema_sql, Pg};

/// A double on a fresh database with the schema applied.
pub(crate) struct Env {
    pub sb: SupabaseDouble,
    pub pg: Pg,
}

pub(crate) fn env() -> Env {
    env_with(SupabaseConfig::default())
}

pub(crate) fn env_with(config: SupabaseConfig) -> Env {
    let pg = Pg::start();
    pg.execute_batch(schema_sql());
    let sb = SupabaseDouble::start(&pg, config);
    Env { sb, pg }
}

/// Ids of a seeded user and conversation.
pub(crate) struct Seed {
    pub user: String,
    pub conversation: String,
}

pub(crate) fn seed(pg: &Pg) -> Seed {
    let mut c = pg.client();
    let user: String = c
        .query_one("INSERT INTO users DEFAULT VALUES RETURNING id::text", &[])
        .unwrap()
        .get(0);
    let conversation: String = c
        .query_one(
            "INSERT INTO conversations (user_id, phone_number) VALUES ($1::text::uuid, '+15551234567') RETURNING id::text",
            &[&user],
        )
        .unwrap()
        .get(0);
    Seed { user, conversation }
}

/// Insert a message and return its id.
pub(crate) fn insert_message(
    pg: &Pg,
    seed: &Seed,
    content: &str,
    direction: &str,
    status: Option<&str>,
) -> String {
    pg.client()
        .query_one(
            "INSERT INTO messages (conversation_id, user_id, role, content, direction, status) \
             VALUES ($1::text::uuid, $2::text::uuid, 'assistant', $3, $4, $5) RETURNING id::text",
            &[
                &seed.conversation,
                &seed.user,
                &content,
                &direction,
                &status,
            ],
        )
        .unwrap()
        .get(0)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`); `None` when the server hung up.
pub(crate) fn http(
    sb: &SupabaseDouble,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<HttpResp> {
    let mut s = TcpStream::connect(("127.0.0.1", sb.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "PATCH" || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(HttpResp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A REST request with the service key as `apikey` and Bearer (what sms-sender sends).
pub(crate) fn rest(
    sb: &SupabaseDouble,
    method: &str,
    pq: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResp {
    let key = sb.service_key();
    let bearer = format!("Bearer {key}");
    let mut headers = vec![("apikey", key.as_str()), ("Authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    http(sb, method, &format!("/rest/v1/{pq}"), &headers, body).expect("an answer")
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub(crate) enum WsEvent {
    Text(Value),
    Close(Option<u16>),
    /// The TCP connection ended without a close frame.
    Gone,
    Timeout,
}

/// A tungstenite client for the Realtime endpoint.
pub(crate) struct WsClient {
    pub ws: WebSocket<TcpStream>,
}

/// Connect with this query string; on a refused upgrade, the status and body.
pub(crate) fn ws_connect(sb: &SupabaseDouble, query: &str) -> Result<WsClient, (u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", sb.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/realtime/v1/websocket?{query}", sb.port());
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, _)) => {
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            Ok(WsClient { ws })
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or(&[])).into_owned(),
        )),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// Connect with the service key and vsn=1.0.0.
pub(crate) fn ws_open(sb: &SupabaseDouble) -> WsClient {
    ws_connect(sb, &format!("apikey={}&vsn=1.0.0", sb.service_key())).expect("upgrade accepted")
}

impl WsClient {
    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string())).unwrap();
    }

    pub fn event(&mut self, timeout: Duration) -> WsEvent {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return WsEvent::Text(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(f)) => return WsEvent::Close(f.map(|f| u16::from(f.code))),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return WsEvent::Timeout;
                    }
                }
                Err(_) => return WsEvent::Gone,
            }
        }
    }

    /// The next text frame within `timeout`, or panic.
    pub fn recv(&mut self, timeout: Duration) -> Value {
        match self.event(timeout) {
            WsEvent::Text(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Assert that no text frame arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.event(d) {
            WsEvent::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Join `topic` with one UPDATE binding on messages filtered by `filter`; returns the reply.
    pub fn join(&mut self, topic: &str, reference: &str, items: Value) -> Value {
        self.send(json!({
            "topic": topic, "event": "phx_join", "ref": reference, "join_ref": reference,
            "payload": {"config": {"broadcast": {"ack": false, "self": false},
                                   "presence": {"enabled": false, "key": ""},
                                   "postgres_changes": items, "private": false}}
        }));
        self.recv(Duration::from_secs(5))
    }
}

impl WsClient {
    /// Join `topic` with this `config` (and `access_token` if given); returns the reply.
    pub fn join_config(
        &mut self,
        topic: &str,
        reference: &str,
        config: Value,
        access_token: Option<&str>,
    ) -> Value {
        let mut payload = json!({"config": config});
        if let Some(t) = access_token {
            payload["access_token"] = json!(t);
        }
        self.send(json!({
            "topic": topic, "event": "phx_join", "ref": reference, "join_ref": reference,
            "payload": payload
        }));
        self.recv(Duration::from_secs(5))
    }

    /// Send a `presence` event (`track` with `payload`, or `untrack`) on a joined topic.
    pub fn presence(&mut self, topic: &str, reference: &str, event: &str, payload: Value) {
        self.send(json!({
            "topic": topic, "event": "presence", "ref": reference,
            "payload": {"type": "presence", "event": event, "payload": payload}
        }));
    }
}

/// A join config as sms-sender's scaled mode sends it: no postgres_changes, broadcast without
/// ack or self, presence as given, private as given.
pub(crate) fn scaled_config(presence: Option<&str>, private: bool) -> Value {
    json!({
        "broadcast": {"ack": false, "self": false},
        "presence": match presence {
            Some(key) => json!({"enabled": true, "key": key}),
            None => json!({"enabled": false}),
        },
        "private": private
    })
}

/// The binding sms-sender uses.
pub(crate) fn queued_binding() -> Value {
    json!([{"event": "UPDATE", "schema": "public", "table": "messages", "filter": "status=eq.queued_for_send"}])
}
