//! RFC 9112 conformance of the service's own HTTP port, spoken over raw TCP to the real binary
//! (`SMS_SENDER_BIN` selects another build, to show these tests failing against it):
//! message framing (`Content-Length` must be one run of digits, and one value: two fields are
//! refused even when identical), `Host` (exactly one on HTTP/1.1, never two), and `Allow` on
//! every 405. Each malformed request is tried on `GET /health` (a route that reads no body) and
//! on `POST /twilio/status` (the one that does): framing errors are refused before routing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sms_sender_doubles::harness::{binary_under_test, Service, Stack};

/// The service with delivery receipts on (so `POST /twilio/status` exists), and its port.
fn start() -> (Stack, Service, u16) {
    let stack = Stack::start();
    let binary = binary_under_test(env!("CARGO_BIN_EXE_sms-sender"));
    let (svc, port, _) = stack.start_service_with_receipts(Path::new(&binary), &[]);
    (stack, svc, port)
}

/// The raw answer to `request`, read to the end (bounded).
fn exchange(port: u16, request: &[u8]) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// The status code of an answer (0 when there was none).
fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Cases whose answer was not the one expected, reported together at the end of a test (so a
/// failing run shows every wrong answer, not only the first).
#[derive(Default)]
struct Wrong(Vec<String>);

impl Wrong {
    fn check(&mut self, what: &str, answer: &str, expected: u16) {
        let got = status(answer);
        if got != expected {
            let first = answer.lines().next().unwrap_or("(no answer)");
            self.0
                .push(format!("{what}: expected {expected}, got {first}"));
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} wrong answer(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The values of header `name` in an answer's head.
fn header_values(answer: &str, name: &str) -> Vec<String> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A form body as Twilio would post it (the signature is missing: a well-framed request with
/// it gets 403, so 400 can only come from the framing).
const BODY: &str = "MessageSid=SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&MessageStatus=delivered";

/// `GET /health` and `POST /twilio/status` carrying `headers` (each `Name: value\r\n`), with the
/// callback's body after the head.
fn requests_with(headers: &str) -> [(String, Vec<u8>); 2] {
    [
        (
            "GET /health".to_string(),
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").into_bytes(),
        ),
        (
            "POST /twilio/status".to_string(),
            format!(
                "POST /twilio/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n{headers}\r\n{BODY}"
            )
            .into_bytes(),
        ),
    ]
}

#[test]
fn two_different_content_lengths_are_refused() {
    let (_stack, _svc, port) = start();
    let len = BODY.len();
    let mut wrong = Wrong::default();
    // One valid length is served: leading zeros and surrounding blanks are allowed (the value
    // is 1*DIGIT, the blanks are OWS); the unsigned callback then fails only its signature.
    for (request, expected) in [
        ("GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(), 200),
        (
            format!(
                "POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length:   000{len} \r\n\r\n{BODY}"
            ),
            403,
        ),
    ] {
        let answer = exchange(port, request.as_bytes());
        wrong.check(&format!("{request:?}"), &answer, expected);
    }
    for headers in [
        format!("Content-Length: {len}\r\nContent-Length: {}\r\n", len + 1),
        format!("Content-Length: {}\r\nContent-Length: {len}\r\n", len - 1),
        format!("Content-Length: {len}\r\nContent-Length: 0\r\n"),
        // A list in one field is two values too.
        format!("Content-Length: {len}, 0\r\n"),
        // Identical duplicates are refused as well (RFC 9110 §8.6 allows accepting them; a
        // port facing the network takes the strict reading: no client of ours sends them).
        format!("Content-Length: {len}\r\nContent-Length: {len}\r\n"),
        format!("Content-Length: {len}, {len}\r\n"),
    ] {
        for (what, request) in requests_with(&headers) {
            let answer = exchange(port, &request);
            wrong.check(&format!("{what} with {headers:?}"), &answer, 400);
        }
    }
    wrong.assert_none();
}

#[test]
fn a_signed_or_non_digit_content_length_is_refused() {
    let (_stack, _svc, port) = start();
    let mut wrong = Wrong::default();
    for value in [
        "+5", "-1", " 5x", "5x", "0x10", "5 5", "5.0", "1e3", "", "\u{ff15}", "+0",
    ] {
        let headers = format!("Content-Length: {value}\r\n");
        for (what, request) in requests_with(&headers) {
            let answer = exchange(port, &request);
            wrong.check(
                &format!("{what} with Content-Length {value:?}"),
                &answer,
                400,
            );
        }
    }
    wrong.assert_none();
}

#[test]
fn http_1_1_needs_exactly_one_host() {
    let (_stack, _svc, port) = start();
    let len = BODY.len();
    let mut wrong = Wrong::default();
    for (what, request) in [
        ("HTTP/1.0 without Host", "GET /health HTTP/1.0\r\n\r\n"),
        (
            "an empty Host (RFC 9110 §7.2)",
            "GET /health HTTP/1.1\r\nHost:\r\n\r\n",
        ),
        (
            "a Host with a port",
            "GET /health HTTP/1.1\r\nhost: [::1]:8080\r\n\r\n",
        ),
        (
            "a name and port",
            "GET /health HTTP/1.1\r\nHost: sms-sender.example.run.app:443\r\n\r\n",
        ),
    ] {
        let answer = exchange(port, request.as_bytes());
        wrong.check(what, &answer, 200);
    }
    let cases: Vec<(&str, String)> = vec![
        ("GET, HTTP/1.1, no Host", "GET /health HTTP/1.1\r\n\r\n".into()),
        (
            "GET, HTTP/1.1, two Hosts",
            "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        (
            "GET, HTTP/1.1, two identical Hosts",
            "GET /health HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n".into(),
        ),
        (
            "GET, HTTP/1.0, two Hosts (refused whatever the version)",
            "GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        (
            "GET, HTTP/1.1, a Host that is no host",
            "GET /health HTTP/1.1\r\nHost: a b/c\r\n\r\n".into(),
        ),
        (
            "POST, HTTP/1.1, no Host",
            format!("POST /twilio/status HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{BODY}"),
        ),
        (
            "POST, HTTP/1.1, two Hosts",
            format!(
                "POST /twilio/status HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: {len}\r\n\r\n{BODY}"
            ),
        ),
        (
            "unknown path, HTTP/1.1, no Host (refused before routing)",
            "HEAD /nope HTTP/1.1\r\n\r\n".into(),
        ),
    ];
    for (what, request) in cases {
        let answer = exchange(port, request.as_bytes());
        wrong.check(what, &answer, 400);
    }
    wrong.assert_none();
}

#[test]
fn every_405_says_what_is_allowed() {
    let (_stack, _svc, port) = start();
    let len = BODY.len();
    let mut wrong = Wrong::default();
    for (request, allowed) in [
        (
            format!("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n{BODY}"),
            "GET, HEAD",
        ),
        (
            "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "GET, HEAD",
        ),
        (
            "PUT /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(),
            "GET, HEAD",
        ),
        (
            "GET /twilio/status HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "POST",
        ),
        (
            "HEAD /twilio/status HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "POST",
        ),
    ] {
        let answer = exchange(port, request.as_bytes());
        let line = request.lines().next().unwrap();
        wrong.check(line, &answer, 405);
        let allow = header_values(&answer, "allow");
        if allow != [allowed] {
            // RFC 9110 §15.5.6: a 405 MUST carry Allow.
            wrong
                .0
                .push(format!("{line}: Allow {allow:?}, expected [{allowed:?}]"));
        }
    }
    wrong.assert_none();
}
