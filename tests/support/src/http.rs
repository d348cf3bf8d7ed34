//! A small HTTP/1.1 server shared by the Supabase and Twilio doubles.
//!
//! It exists (instead of a ready-made server crate) because the doubles must misbehave in ways a
//! well-behaved server cannot: hang up after reading a request without answering (the "request
//! processed, reply lost" case), hand the raw socket to a WebSocket upgrade on the same port as
//! REST (as Supabase serves both under one URL), and cut every open connection at once (a server
//! restart). Invariants: one thread per connection, keep-alive honoured, requests bounded (64 KiB of
//! headers, 8 MiB of body), 127.0.0.1 only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;

/// One parsed request. Header names are lower-cased.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string, still percent-encoded.
    pub path: String,
    /// The raw query string (no leading `?`), still percent-encoded.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The peer, so doubles can tell connections apart.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query string decoded into ordered pairs (repeated keys kept).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_urlencoded(&self.query)
    }

    /// The body decoded as `application/x-www-form-urlencoded` pairs (repeated keys kept).
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        parse_urlencoded(&String::from_utf8_lossy(&self.body))
    }
}

/// A response the handler wants written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response with the given status.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(serde_json::to_vec(value).expect("a JSON value serialises"))
    }

    /// A JSON response from text that is already JSON (e.g. built by PostgreSQL).
    pub fn raw_json(status: u16, text: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(text.into())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What the handler did with a request.
pub enum Reply {
    /// Write this response; keep the connection if the client allows.
    Respond(Response),
    /// Close the connection without writing anything (the request may have had its effect).
    Hangup,
    /// The handler took over the socket (it holds a clone); the server forgets the connection.
    TakenOver,
}

/// The behaviour behind a server.
pub trait Handler: Send + Sync + 'static {
    /// Handle one request. `stream` is the connection, for handlers that take it over.
    fn handle(&self, req: Request, stream: &TcpStream) -> Reply;
}

/// A running server on 127.0.0.1. Stops (and cuts its connections) when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accepted: Arc<AtomicU64>,
}

impl HttpServer {
    /// Bind 127.0.0.1 on `port` (0 for any free port) and serve `handler`.
    pub fn start(port: u16, handler: Arc<dyn Handler>) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        {
            let stopping = stopping.clone();
            let conns = conns.clone();
            let accepted = accepted.clone();
            thread::Builder::new()
                .name(format!("http-accept-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let id = accepted.fetch_add(1, Ordering::SeqCst);
                        if let Ok(clone) = stream.try_clone() {
                            conns.lock().unwrap().insert(id, clone);
                        }
                        let handler = handler.clone();
                        let conns = conns.clone();
                        let _ = thread::Builder::new()
                            .name(format!("http-conn-{id}"))
                            .spawn(move || {
                                let taken = serve_connection(&stream, &*handler);
                                conns.lock().unwrap().remove(&id);
                                if !taken {
                                    let _ = stream.shutdown(Shutdown::Both);
                                }
                            });
                    }
                })?;
        }
        Ok(HttpServer {
            addr,
            stopping,
            conns,
            accepted,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many TCP connections were accepted so far (to check connection reuse).
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cut every HTTP connection currently open (not the taken-over ones).
    pub fn cut_connections(&self) {
        for (_, s) in self.conns.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stop accepting and cut every open connection.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        self.cut_connections();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serve requests on one connection until it closes. Returns true if the handler took it over.
fn serve_connection(stream: &TcpStream, handler: &dyn Handler) -> bool {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return false,
    };
    let Ok(read_half) = stream.try_clone() else {
        return false;
    };
    let mut reader = BufReader::new(read_half);
    loop {
        let req = match read_request(&mut reader, peer) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(status) => {
                let _ = write_response(stream, &Response::new(status), false);
                return false;
            }
        };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler.handle(req, stream) {
            Reply::Respond(resp) => {
                if write_response(stream, &resp, keep_alive).is_err() || !keep_alive {
                    return false;
                }
            }
            Reply::Hangup => return false,
            Reply::TakenOver => return true,
        }
    }
}

/// Read one request; `Ok(None)` on a clean end of stream, `Err(status)` on a bad request.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    peer: SocketAddr,
) -> Result<Option<Request>, u16> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match reader.read_until(b'\n', &mut head) {
            Ok(0) => {
                return if head.is_empty() { Ok(None) } else { Err(400) };
            }
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
        if head.len() > MAX_HEAD {
            return Err(431);
        }
        let line = &head[before..];
        if (line == b"\r\n" || line == b"\n") && before > 0 {
            break;
        }
        if (line == b"\r\n" || line == b"\n") && before == 0 {
            head.clear(); // tolerate stray blank lines between requests
        }
    }
    let mut header_buf = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut header_buf);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(400),
    }
    let method = parsed.method.unwrap_or("").to_string();
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.trim().parse::<usize>().map_err(|_| 400u16))
        .transpose()?
        .unwrap_or(0);
    if len > MAX_BODY {
        return Err(413);
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
        peer,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Write a response with `Content-Length` (no chunking).
pub fn write_response(
    mut stream: &TcpStream,
    resp: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if resp.status != 204 && resp.status != 101 {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Decode `a=1&b=%2B2&c=x+y` into pairs; `+` is a space, `%XX` a byte, invalid UTF-8 replaced.
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Percent-decode; `plus_is_space` for form encoding.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_encoding() {
        let pairs = parse_urlencoded("To=%2B15551234567&Body=hi+there&Body=%F0%9F%91%8D&x");
        assert_eq!(pairs[0], ("To".into(), "+15551234567".into()));
        assert_eq!(pairs[1], ("Body".into(), "hi there".into()));
        assert_eq!(pairs[2], ("Body".into(), "👍".into()));
        assert_eq!(pairs[3], ("x".into(), "".into()));
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%4", false), "%4");
    }

    #[test]
    fn encode_round_trips() {
        let s = "+1 555/ü&=";
        assert_eq!(percent_decode(&percent_encode(s), false), s);
    }
}
