//! The double's own tests, over real sockets, by concern: `create` (validation codes and
//! texts, stored resources), `list_and_fetch` (filters, paging, lifecycle, what reads show),
//! `faults` (injected failures, outages, holds), `routing` (auth, routes, latency, concurrency,
//! connections). This file holds the tiny HTTP client and the helpers they share.

use super::create::is_sid;
use super::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::UNIX_EPOCH;

mod create;
mod faults;
mod list_and_fetch;
mod routing;

// --------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client over std, so the tests exercise the real wire format.

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(d: &TwilioDouble) -> Client {
        let addr = d.url().trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(addr).expect("connect to the double");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn set_read_timeout(&self, t: Duration) {
        self.reader.get_ref().set_read_timeout(Some(t)).unwrap();
    }

    /// `Ok(None)` when the server closed the connection without answering.
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Option<Resp>> {
        let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.reader.get_mut().write_all(&bytes)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("a header line");
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Some(Resp {
            status,
            headers,
            body,
        }))
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn auth(d: &TwilioDouble) -> String {
    basic(&d.config().account_sid, &d.config().auth_token)
}

fn messages_path(d: &TwilioDouble) -> String {
    format!(
        "/2010-04-01/Accounts/{}/Messages.json",
        d.config().account_sid
    )
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", http::percent_encode(k), http::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POST a raw form body on a fresh connection; `None` = hung up.
fn post_raw(d: &TwilioDouble, body: &str) -> Option<Resp> {
    let a = auth(d);
    Client::connect(d)
        .request(
            "POST",
            &messages_path(d),
            &[
                ("Authorization", &a),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .expect("request")
}

fn create(d: &TwilioDouble, pairs: &[(&str, &str)]) -> Resp {
    post_raw(d, &encode_form(pairs)).expect("an answer")
}

fn get(d: &TwilioDouble, target: &str) -> Resp {
    let a = auth(d);
    Client::connect(d)
        .request("GET", target, &[("Authorization", &a)], b"")
        .expect("request")
        .expect("an answer")
}

fn assert_twilio_error(resp: &Resp, status: u16, code: u64) -> Value {
    let body = resp.json();
    assert_eq!(resp.status, status, "body: {body}");
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status);
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    body
}

const TO: &str = "+15551234567";
const FROM: &str = "+15557654321";

fn ok_form<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("To", TO), ("From", FROM), ("Body", "hello")];
    v.extend_from_slice(extra);
    v
}

fn is_hex_sid(s: &str, prefix: &str) -> bool {
    is_sid(s, prefix) && s[2..].bytes().all(|b| !b.is_ascii_uppercase())
}

fn message_path(d: &TwilioDouble, sid: &str) -> String {
    format!(
        "/2010-04-01/Accounts/{}/Messages/{sid}.json",
        d.config().account_sid
    )
}

fn sid_of(resp: &Resp) -> String {
    resp.json()["sid"].as_str().unwrap().to_string()
}

fn list_sids(d: &TwilioDouble, query: &str) -> Vec<String> {
    let page = get(d, &format!("{}?{query}", messages_path(d))).json();
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|m| m["sid"].as_str().unwrap().to_string())
        .collect()
}

fn stored(d: &TwilioDouble, sid: &str) -> StoredMessage {
    d.messages().into_iter().find(|m| m.sid == sid).unwrap()
}

/// (year, month, day) of `t` in GMT, from the date crate.
fn civil(t: SystemTime) -> (i32, u8, u8) {
    let date = time::OffsetDateTime::from(t).date();
    (date.year(), u8::from(date.month()), date.day())
}
