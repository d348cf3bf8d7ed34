//! The service's own HTTP port (`PORT`): `GET /health`, `GET /metrics`, and, when delivery
//! receipts are on, `POST /twilio/status`. Another method on those paths is 405 with `Allow`;
//! everything else is 404.
//!
//! A deliberately small HTTP/1.1 server on std sockets, because this port faces the network and
//! must stay up whatever arrives (`tiny_http` 0.12 aborts the whole process on a single request
//! declaring a huge `Content-Length` — it allocates the declared size to drain the body — and
//! bounds neither header size, header count nor time; see README).
//! Invariants: at most [`MAX_CONNECTIONS`] connections at once; one request per connection; the
//! head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] lines; the whole request (head and
//! body) must arrive within [`REQUEST_DEADLINE`] of the accept, whatever pace the bytes come at
//! (every read may wait only for the time left); only the callback route reads a body, at most
//! [`MAX_BODY`] bytes; handlers never wait on the network (receipts go to a worker), so a probe is
//! never stuck behind a database call. When every slot is taken, a new connection takes the slot
//! of the oldest one still sending its request (see `Slots`), so a flood of slow clients cannot
//! keep a `/health` probe out. It serves until the process exits, so probes see `shutting_down`.
//!
//! RFC 9112, whatever the route (see `check_head`): a request whose framing is unsound (two
//! `Content-Length` fields, even equal, or one that is not a run of digits) or whose `Host` is
//! wrong (none on HTTP/1.1, more than one on any version, or not a host) gets 400, before routing.

use std::io::{Read, Write};
use std::net::{Shutdown as SocketShutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Secret;
use crate::ops::health::{Health, Link};
use crate::ops::liveness::{Liveness, QueueState};
use crate::ops::metrics::{Gauges, Metrics};
use crate::sync::Locked;
use crate::twilio::receipts::{self, InboxCounts, Offer, ReceiptInbox, Rejections};

/// Largest callback body read (Twilio's are well under 2 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines.
pub const MAX_HEADERS: usize = 64;
/// Connections served at once; a new one beyond takes the slot of the oldest still being read.
pub const MAX_CONNECTIONS: usize = 128;
/// Connection threads alive at once, counting those evicted and not yet finished; beyond it new
/// connections are closed at accept (an evicted thread ends as soon as it is scheduled, so this
/// is only reached by a flood faster than the threads can be scheduled).
const MAX_THREADS: usize = 2 * MAX_CONNECTIONS;
/// Time allowed to send a whole request (head and body), counted from the accept.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Time allowed to write a response (it fits in the socket buffer: only a client that stopped
/// reading makes this wait).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivery-receipt settings.
pub struct Receipts {
    /// The public URL Twilio signs (`STATUS_CALLBACK_URL`).
    pub url: String,
    /// The signing key.
    pub auth_token: Secret,
    /// Where verified receipts go (the worker that applies them).
    pub inbox: Arc<dyn ReceiptInbox>,
}

/// What the endpoints read of the work in progress, read-only: the queue for `/livez` and the
/// queue-depth gauge, the circuit for its gauge.
pub trait WorkGauges: Send + Sync {
    /// The ready ids waiting for a sender thread.
    fn queue(&self) -> QueueState;
    /// Whether sending is paused (an outage or an account problem).
    fn circuit_open(&self) -> bool;
}

/// What the endpoints read.
pub struct Admin {
    /// The connection state (`/health`).
    pub health: Health,
    /// Whether the service's own loops turn (`/livez`).
    pub liveness: Liveness,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The queue and the circuit, for `/livez` and their gauges.
    pub work: Box<dyn WorkGauges>,
    /// Present when `STATUS_CALLBACK_URL` is set.
    pub receipts: Option<Receipts>,
}

/// A parsed request.
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string (after `?`), empty when there is none.
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The one `Content-Length`, checked at parse time (`u64::MAX` for a run of digits too long
    /// for it); `None` when absent.
    pub content_length: Option<u64>,
    /// The body (read only where a route needs it).
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
pub struct Response {
    status: u16,
    content_type: &'static str,
    /// The `Allow` header (every 405 carries one: RFC 9110 §15.5.6).
    allow: Option<&'static str>,
    body: String,
}

fn json(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "application/json",
        allow: None,
        body: body.into(),
    }
}

/// 405 for a path served only with the `allow`ed methods.
fn method_not_allowed(allow: &'static str) -> Response {
    Response {
        allow: Some(allow),
        ..json(405, r#"{"error":"method not allowed"}"#)
    }
}

/// The connections being served, in the order they were accepted.
///
/// Invariant: at most [`MAX_CONNECTIONS`] entries. When full, [`Slots::admit`] cuts the oldest
/// connection that is still sending its request: an honest client sends its whole request in
/// one round trip, so the oldest unfinished one is the one most likely to be trickling bytes to
/// hold a slot. A probe then waits for no deadline: it takes a slot at once and keeps it for as
/// long as it takes 128 newer connections to arrive, which is far longer than a probe needs.
#[derive(Default)]
struct Slots {
    state: Mutex<SlotState>,
    /// Connection threads alive, evicted ones included (bounded by [`MAX_THREADS`]).
    threads: AtomicUsize,
}

#[derive(Default)]
struct SlotState {
    next_id: u64,
    open: Vec<Slot>,
}

struct Slot {
    id: u64,
    /// Shared with the connection's thread, so that eviction can shut the socket down and wake
    /// the read it is blocked in.
    stream: Arc<TcpStream>,
    /// Still reading the request (only such connections are evicted: one whose request is in
    /// is answered within the write timeout).
    reading: bool,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.locked()
    }

    /// A slot for `stream`, evicting the oldest connection still sending its request when all
    /// are taken; `None` when none can be freed (the caller closes the connection).
    fn admit(&self, stream: &Arc<TcpStream>) -> Option<u64> {
        let mut state = self.lock();
        if state.open.len() >= MAX_CONNECTIONS {
            let oldest = state.open.iter().position(|slot| slot.reading)?;
            let evicted = state.open.remove(oldest);
            let _ = evicted.stream.shutdown(SocketShutdown::Both);
        }
        state.next_id += 1;
        let id = state.next_id;
        state.open.push(Slot {
            id,
            stream: stream.clone(),
            reading: true,
        });
        Some(id)
    }

    /// The request of connection `id` is in: it may no longer be evicted.
    fn request_read(&self, id: u64) {
        if let Some(slot) = self.lock().open.iter_mut().find(|slot| slot.id == id) {
            slot.reading = false;
        }
    }

    /// Connection `id` is finished (it may have been evicted already).
    fn release(&self, id: u64) {
        self.lock().open.retain(|slot| slot.id != id);
    }
}

/// What every connection of one listener shares.
struct Shared {
    admin: Admin,
    slots: Slots,
    /// Forged callbacks, logged one line per interval.
    rejections: Rejections,
    /// Repeated callbacks (replays, or Twilio's own repeats), logged one line per interval.
    repeats: Rejections,
}

/// Start serving on `0.0.0.0:port` in a thread of its own.
pub fn serve(port: u16, admin: Admin) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    let shared = Arc::new(Shared {
        admin,
        slots: Slots::default(),
        rejections: Rejections::new(receipts::REJECTION_LOG_INTERVAL),
        repeats: Rejections::new(receipts::REJECTION_LOG_INTERVAL),
    });
    crate::sync::spawn_named("http", 128 * 1024, move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            accept(Arc::new(stream), &shared);
        }
    })?;
    Ok(())
}

/// Give `stream` a slot and a thread, or close it.
fn accept(stream: Arc<TcpStream>, shared: &Arc<Shared>) {
    let started = Instant::now();
    if shared.slots.threads.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
        shared.slots.threads.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(SocketShutdown::Both);
        return;
    }
    let Some(id) = shared.slots.admit(&stream) else {
        shared.slots.threads.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(SocketShutdown::Both);
        return;
    };
    let conn_shared = shared.clone();
    let conn_stream = stream.clone();
    let spawned = crate::sync::spawn_named("http-conn", 128 * 1024, move || {
        let deadline = started + REQUEST_DEADLINE;
        serve_connection(&conn_stream, deadline, id, &conn_shared);
        conn_shared.slots.release(id);
        conn_shared.slots.threads.fetch_sub(1, Ordering::SeqCst);
    });
    if spawned.is_err() {
        // Never started: free its slot.
        shared.slots.release(id);
        shared.slots.threads.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(SocketShutdown::Both);
    }
}

fn serve_connection(stream: &TcpStream, deadline: Instant, id: u64, shared: &Shared) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (response, head_only) = match read_request(stream, deadline) {
        Ok(mut request) => {
            let response = route(&mut request, stream, deadline, shared);
            (response, request.method == "HEAD")
        }
        Err(status) => (
            json(status, format!("{{\"error\":\"bad request ({status})\"}}")),
            false,
        ),
    };
    shared.slots.request_read(id);
    let _ = write_response(stream, &response, head_only);
    let _ = stream.shutdown(SocketShutdown::Both);
}

/// The socket as a reader whose every read may wait only for the time left before the request's
/// deadline, so the deadline holds however slowly (or byte by byte) the request arrives.
struct Timed<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// Read the request line and headers within the limits; an error is the status to answer.
///
/// The head is read into one buffer of [`MAX_HEAD`] bytes and handed to `httparse` once a blank
/// line ends it (or once more lines than [`MAX_HEADERS`] allow have arrived), so each request is
/// parsed a bounded number of times however its bytes are split. Statuses: 408 when the deadline
/// passes first, 431 when the head does not fit (too long, too many lines, or cut short), 400
/// when it is not HTTP/1.x with an origin-form target and UTF-8 header values, and (RFC 9112,
/// whatever the route) when its framing or `Host` is not sound: see [`check_head`].
fn read_request(stream: &TcpStream, deadline: Instant) -> Result<Request, u16> {
    let mut timed = Timed { stream, deadline };
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    // Where the current line starts, and the non-empty lines seen so far (stray CRLFs before
    // the request are tolerated and not counted).
    let mut line_start = 0;
    let mut lines = 0;
    let head_len = loop {
        if len == buf.len() {
            return Err(431);
        }
        let n = match timed.read(&mut buf[len..]) {
            Ok(0) => {
                return Err(if lines == 0 && line_start == len {
                    400
                } else {
                    431
                })
            }
            Ok(n) => n,
            Err(_) => return Err(408),
        };
        let mut ended = false;
        for i in len..len + n {
            if buf[i] == b'\n' {
                if matches!(&buf[line_start..i], b"" | b"\r") {
                    ended |= lines > 0;
                } else {
                    lines += 1;
                }
                line_start = i + 1;
            }
        }
        len += n;
        if !ended && lines <= MAX_HEADERS + 1 {
            continue;
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut slots).parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => break head_len,
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
    };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut slots);
    head.parse(&buf[..head_len]).map_err(|_| 400u16)?;
    let (Some(method), Some(target)) = (head.method, head.path) else {
        return Err(400);
    };
    if !target.starts_with('/') {
        return Err(400);
    }
    let mut headers = Vec::with_capacity(head.headers.len());
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| 400u16)?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let content_length = check_head(head.version == Some(1), head.headers)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        content_length,
        // Whatever arrived beyond the head belongs to the body; keep it.
        body: buf[head_len..len].to_vec(),
    })
}

/// The RFC 9112 checks of a parsed head, made for every request whatever its route (so framing
/// is judged the same way wherever it is read); returns the `Content-Length`, or the status.
///
/// - `Content-Length` (RFC 9112 §6.3, RFC 9110 §8.6): at most one field, whose value (blanks around it
///   are OWS) is one run of ASCII digits: `+5`, `-1`, `5x`, `0x10`, an empty value, or a list
///   (`5, 5`) are 400, and so are two fields, even identical ones (RFC 9110 allows folding
///   identical values into one; no client of ours sends two, and refusing them leaves no
///   framing for a proxy in front and this server to read differently).
/// - `Host` (RFC 9112 §3.2): exactly one on HTTP/1.1, never more than one on any version, and its value
///   made of the characters of a URI host and port (an empty value is allowed: RFC 9110 §7.2).
fn check_head(http11: bool, headers: &[httparse::Header<'_>]) -> Result<Option<u64>, u16> {
    /// The value without the OWS (spaces and tabs only) around it.
    fn trim(value: &[u8]) -> &[u8] {
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
        let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
        &value[start..end]
    }
    let mut content_length = None;
    let mut hosts = 0;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = trim(header.value);
            if content_length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit)
            {
                return Err(400);
            }
            // Digits only: the sum cannot fail but can overflow, and a length past u64 is as
            // much "too large" as any past MAX_BODY.
            let length = value.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            let value = trim(header.value);
            let host_char =
                |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b);
            if hosts > 1 || !value.iter().all(host_char) {
                return Err(400);
            }
        }
    }
    if http11 && hosts != 1 {
        return Err(400);
    }
    Ok(content_length)
}

/// Read the body announced by `Content-Length` (at most [`MAX_BODY`]); an error is the status.
fn read_body(request: &mut Request, stream: &TcpStream, deadline: Instant) -> Result<(), u16> {
    if request.header("transfer-encoding").is_some() {
        return Err(411);
    }
    let Some(length) = request.content_length else {
        return Err(411);
    };
    if length > MAX_BODY as u64 {
        return Err(413);
    }
    let length = length as usize;
    let timed = Timed { stream, deadline };
    let mut reader = timed.take((length.saturating_sub(request.body.len())) as u64);
    while request.body.len() < length {
        let mut chunk = [0u8; 4096];
        match reader.read(&mut chunk) {
            Ok(0) => return Err(400),
            Ok(n) => request.body.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(408),
        }
    }
    request.body.truncate(length);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Write `response`; for `HEAD`, only its head (with the length the body would have).
fn write_response(
    mut stream: &TcpStream,
    response: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let allow = response
        .allow
        .map(|methods| format!("Allow: {methods}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(response.body.as_bytes())?;
    }
    stream.flush()
}

fn route(
    request: &mut Request,
    stream: &TcpStream,
    deadline: Instant,
    shared: &Shared,
) -> Response {
    let admin = &shared.admin;
    match (request.method.as_str(), request.path.as_str()) {
        ("GET" | "HEAD", "/health") => {
            let report = admin.health.report_at(Instant::now());
            json(report.http_status, Health::body(&report, SystemTime::now()))
        }
        ("GET" | "HEAD", "/livez") => {
            let verdict = admin.liveness.verdict(admin.work.queue());
            json(verdict.http_status, verdict.body)
        }
        ("GET" | "HEAD", "/metrics") => {
            let report = admin.health.report_at(Instant::now());
            let mut text = admin.metrics.render(Gauges {
                realtime_connected: report.link == Link::Connected,
                queue_depth: admin.work.queue().waiting,
                circuit_open: admin.work.circuit_open(),
                database_ok: report.database_ok,
            });
            let counts = admin
                .receipts
                .as_ref()
                .map_or_else(InboxCounts::default, |r| r.inbox.counts());
            receipts::render_metrics(counts, &mut text);
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                allow: None,
                body: text,
            }
        }
        ("POST", "/twilio/status") if admin.receipts.is_some() => {
            if let Err(status) = read_body(request, stream, deadline) {
                return json(status, format!("{{\"error\":\"bad request ({status})\"}}"));
            }
            let receipts = admin.receipts.as_ref().expect("checked by the guard");
            status_callback(request, receipts, &admin.metrics, shared)
        }
        (_, "/health" | "/livez" | "/metrics") => method_not_allowed("GET, HEAD"),
        (_, "/twilio/status") if admin.receipts.is_some() => method_not_allowed("POST"),
        _ => json(404, r#"{"error":"not found"}"#),
    }
}

fn status_callback(
    request: &Request,
    receipts: &Receipts,
    metrics: &Metrics,
    shared: &Shared,
) -> Response {
    let params = parse_form(&request.body);
    // Twilio signs the URL it was given: ours with the message's id, or (older messages) the
    // configured one as it is.
    let message = receipts::message_param(&request.query);
    let url = match &message {
        Some(id) => receipts::url_for(&receipts.url, id),
        None => receipts.url.clone(),
    };
    let verified = request
        .header("x-twilio-signature")
        .is_some_and(|signature| {
            receipts::verify(receipts.auth_token.expose(), &url, &params, signature)
        });
    if !verified {
        metrics.callback(false);
        if let Some(count) = shared.rejections.record(Instant::now()) {
            log::warn!(
                "{count} status callback(s) with a missing or wrong X-Twilio-Signature rejected \
                 (at most one such line per {} s)",
                receipts::REJECTION_LOG_INTERVAL.as_secs()
            );
        }
        return json(403, r#"{"error":"invalid signature"}"#);
    }
    metrics.callback(true);
    // Verified: it may still be a replay (the signature has no timestamp). The inbox answers
    // repeats without queueing them and keeps room for receipts that name their row; only a
    // receipt it has no room for is refused.
    let offer = receipts::parse(&params).map_or(Offer::Ignored, |mut r| {
        r.message = message;
        receipts.inbox.offer(r)
    });
    if offer == Offer::Duplicate {
        if let Some(count) = shared.repeats.record(Instant::now()) {
            log::info!(
                "{count} repeated status callback(s) answered without applying them again (same \
                 SID and status within {} s; at most one such line per {} s)",
                receipts::SEEN_FOR.as_secs(),
                receipts::REJECTION_LOG_INTERVAL.as_secs()
            );
        }
    }
    match offer {
        Offer::Queued | Offer::Duplicate | Offer::Ignored => Response {
            status: 200,
            content_type: "text/plain",
            allow: None,
            body: String::new(),
        },
        Offer::Full => json(503, r#"{"error":"busy"}"#),
    }
}

/// Decode `application/x-www-form-urlencoded` (`+` is a space; bad escapes kept literally;
/// invalid UTF-8 replaced), with `form_urlencoded`. Empty pairs are skipped, a pair without `=`
/// has an empty value; `%+9` is a bad escape like any other (`+` is never a sign): `% 9`.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_head` over `lines` (`Name: value`), as HTTP/1.1 or 1.0.
    fn head(http11: bool, lines: &[&str]) -> Result<Option<u64>, u16> {
        let headers: Vec<httparse::Header<'_>> = lines
            .iter()
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                httparse::Header {
                    name,
                    value: value.as_bytes(),
                }
            })
            .collect();
        check_head(http11, &headers)
    }

    #[test]
    fn content_length_is_one_run_of_digits() {
        assert_eq!(head(true, &["Host: x"]), Ok(None));
        assert_eq!(head(true, &["Host: x", "Content-Length: 0"]), Ok(Some(0)));
        assert_eq!(
            head(true, &["Host: x", "content-length:\t 0042 "]),
            Ok(Some(42))
        );
        assert_eq!(
            head(
                true,
                &["Host: x", "Content-Length: 99999999999999999999999"]
            ),
            Ok(Some(u64::MAX)),
            "too long for u64 is too large, not malformed"
        );
        for bad in [
            "+5", "-1", " 5x", "5x", "0x10", "5 5", "5,5", "5, 5", "", " ", "5.0", "\u{ff15}",
            "\u{a0}5",
        ] {
            let line = format!("Content-Length:{bad}");
            assert_eq!(head(true, &["Host: x", &line]), Err(400), "{bad:?}");
        }
        for pair in [["5", "6"], ["5", "5"], ["0", "5"]] {
            let (a, b) = (
                format!("Content-Length: {}", pair[0]),
                format!("content-length: {}", pair[1]),
            );
            assert_eq!(head(true, &["Host: x", &a, &b]), Err(400), "{pair:?}");
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        assert_eq!(head(true, &[]), Err(400));
        assert_eq!(head(false, &[]), Ok(None), "HTTP/1.0 may omit it");
        assert_eq!(head(true, &["Host: a", "Host: a"]), Err(400));
        assert_eq!(head(false, &["Host: a", "HOST: b"]), Err(400));
        for good in [
            "",
            "a.example",
            "a.example:8080",
            "[::1]:80",
            "127.0.0.1",
            "xn--bcher-kva.example",
        ] {
            let line = format!("Host: {good}");
            assert_eq!(head(true, &[&line]), Ok(None), "{good:?}");
        }
        for bad in ["a b", "a/b", "a@b", "a\"b", "a\\b", "\u{e9}.example"] {
            let line = format!("Host: {bad}");
            assert_eq!(head(true, &[&line]), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn form_decoding() {
        let p = parse_form(b"To=%2B15551234567&Body=hi+there&E=100%&x");
        assert_eq!(p[0], ("To".into(), "+15551234567".into()));
        assert_eq!(p[1], ("Body".into(), "hi there".into()));
        assert_eq!(p[2], ("E".into(), "100%".into()));
        assert_eq!(p[3], ("x".into(), "".into()));
        assert!(parse_form(b"").is_empty());
        let _ = parse_form(&[0xff, b'%', b'%', b'=', b'%']);
    }
}
