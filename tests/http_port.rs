//! The service's own HTTP port (`/health`, `/livez`, `/metrics`, `POST /twilio/status`) holds
//! up against whatever a client sends: malformed framing is refused per RFC 9112, slow and
//! trickling clients are cut at the request deadline, floods cannot keep a probe out, oversized
//! requests get their status without being read, and `HEAD` answers without a body.
//!
//! `served_in_process` runs the server alone, in this process (no database); the other modules
//! speak raw TCP to the real binary (`SMS_SENDER_BIN` selects another build). Every connection
//! is to 127.0.0.1 and every wait is bounded.

mod served_in_process {
    //! Hardening of the service's own HTTP port, served in process (no database needed): the
    //! request deadline holds whatever pace the client sends at, a flood of trickling connections
    //! cannot keep a `/health` probe out, and `HEAD` answers without a body. Everything connects to
    //! 127.0.0.1 and every wait is bounded.

    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sms_sender::backoff::{Backoff, Jitter};
    use sms_sender::delivery::circuit::Circuit;
    use sms_sender::delivery::gauges::DeliveryGauges;
    use sms_sender::delivery::queue::WorkQueue;
    use sms_sender::ops::health::Health;
    use sms_sender::ops::liveness::Liveness;
    use sms_sender::ops::metrics::Metrics;
    use sms_sender::ops::server::{self, Admin, MAX_CONNECTIONS, REQUEST_DEADLINE};
    use sms_sender_doubles::harness::{free_port, http_get, wait_until};

    /// Start the HTTP server on a free port, with no delivery receipts; returns the port.
    fn start_server() -> u16 {
        let port = free_port();
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(2), Jitter::None);
        server::serve(
            port,
            Admin {
                health: Health::new(),
                liveness: Liveness::new(Duration::from_secs(120)),
                metrics: Arc::new(Metrics::default()),
                work: Box::new(DeliveryGauges {
                    queue: WorkQueue::new(8),
                    circuit: Circuit::new(backoff, backoff),
                }),
                receipts: None,
            },
        )
        .expect("bind the HTTP port");
        assert!(wait_until(Duration::from_secs(5), || http_get(
            port, "/health"
        )
        .is_some()));
        port
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The start of a request whose last header never ends; each call to `trickle` adds one byte.
    const SLOW_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

    #[test]
    fn a_trickling_client_is_cut_at_the_deadline_whatever_its_pace() {
        let port = start_server();
        let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).unwrap();
        s.write_all(SLOW_HEAD).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let started = Instant::now();
        let limit = REQUEST_DEADLINE + Duration::from_secs(6);
        let mut answer = Vec::new();
        // One byte every 400 ms: far faster than any per-line timeout, far slower than a request.
        let cut = loop {
            if started.elapsed() > limit {
                break None;
            }
            if s.write_all(b"a").is_err() {
                break Some(started.elapsed());
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break Some(started.elapsed()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break Some(started.elapsed()),
            }
        };
        let cut = cut.unwrap_or_else(|| {
            panic!("a client sending a byte every 400 ms still held its connection after {limit:?}")
        });
        assert!(
            cut >= REQUEST_DEADLINE - Duration::from_secs(1),
            "cut after {cut:?}, before the deadline"
        );
        assert!(
            cut <= REQUEST_DEADLINE + Duration::from_secs(2),
            "cut only after {cut:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
            "{answer}"
        );
    }

    /// Keeps `count` connections trickling a never-ending header, one byte per connection per
    /// `pace`, reconnecting whichever the server closes, until `stop`.
    fn trickle_flood(port: u16, count: usize, pace: Duration, stop: Arc<AtomicBool>) {
        let connect = || {
            let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).ok()?;
            s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
            s.write_all(SLOW_HEAD).ok()?;
            Some(s)
        };
        let mut conns: Vec<Option<TcpStream>> = (0..count).map(|_| connect()).collect();
        while !stop.load(Ordering::SeqCst) {
            for slot in conns.iter_mut() {
                let alive = slot.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
                if !alive {
                    *slot = connect();
                }
            }
            std::thread::sleep(pace);
        }
    }

    #[test]
    fn a_flood_of_trickling_connections_cannot_keep_health_probes_out() {
        let port = start_server();
        let stop = Arc::new(AtomicBool::new(false));
        // 200 connections (the server serves MAX_CONNECTIONS = 128 at once), from 4 threads.
        const { assert!(200 > MAX_CONNECTIONS) };
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || trickle_flood(port, 50, Duration::from_secs(1), stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));

        // Probe as a platform does, past the point where every trickler would have been cut by the
        // deadline, and check every probe is answered (each bounded: 0.5 s connect, 2 s read).
        let started = Instant::now();
        let mut failed = Vec::new();
        let mut probes = 0;
        while started.elapsed() < REQUEST_DEADLINE + Duration::from_secs(4) {
            let at = started.elapsed();
            let t = Instant::now();
            let answer = http_get(port, "/health");
            if answer.as_ref().map(|(status, _)| *status) != Some(200) {
                failed.push(format!("{at:.1?}: {answer:?} after {:.1?}", t.elapsed()));
            }
            probes += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::SeqCst);
        for t in flood {
            t.join().unwrap();
        }
        assert!(
            failed.is_empty(),
            "{} of {probes} probes failed during the flood:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert_eq!(http_get(port, "/health").map(|r| r.0), Some(200));
    }

    /// The raw answer to `request`, read to the end (bounded).
    fn exchange(port: u16, request: &str) -> String {
        let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    }

    #[test]
    fn head_answers_the_headers_of_get_without_a_body() {
        let port = start_server();
        for path in ["/health", "/metrics"] {
            let get = exchange(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let head = exchange(port, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
            let (head_head, head_body) = head.split_once("\r\n\r\n").unwrap();
            assert!(!get_body.is_empty(), "{get}");
            assert_eq!(head_body, "", "HEAD {path} sent a body:\n{head}");
            assert!(head_head.starts_with("HTTP/1.1 200 "), "{head}");
            let length = |h: &str| {
                h.lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(str::to_string)
            };
            assert!(length(head_head).is_some(), "{head}");
            if path == "/health" {
                // Same length as GET's body (the metrics page may grow between the two requests).
                assert_eq!(length(head_head), length(get_head));
            }
        }
        let not_found = exchange(port, "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
        assert!(not_found.ends_with("\r\n\r\n"), "{not_found}");
    }
}

mod rfc_9112 {
    //! RFC 9112 conformance of the service's own HTTP port, spoken over raw TCP to the real binary
    //! (`SMS_SENDER_BIN` selects another build, to show these tests failing against it): message
    //! framing (`Content-Length` must be one run of digits, and one value: two fields are refused
    //! even when identical), `Host` (exactly one on HTTP/1.1, never two), and `Allow` on every 405.
    //! Each malformed request is tried on `GET /health` (a route that reads no body) and on `POST
    //! /twilio/status` (the one that does): framing errors are refused before routing.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use sms_sender_doubles::prelude::*;

    /// The service with delivery receipts on (so `POST /twilio/status` exists), and its port.
    fn start() -> (Stack, Service, u16) {
        let stack = Stack::start();
        let (svc, port, _) = stack.start_service_with_receipts(&sms_sender_bin!(), &[]);
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
}

mod under_abuse {
    //! Garbage, half-sent requests held open, requests past every limit and a flood of probes, all
    //! at once on the real binary: every probe answered, and a message still goes out.

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use sms_sender_doubles::prelude::*;

    #[test]
    fn the_http_port_survives_garbage_slow_clients_and_floods() {
        let stack = Stack::start();
        let (svc, port, _) = stack.start_service_with_receipts(&sms_sender_bin!(), &[]);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut rng = fastrand::Rng::with_seed(3);

        // Garbage: random bytes, broken request lines, binary headers.
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let junk: Vec<u8> = (0..rng.usize(1..2048)).map(|_| rng.u8(..)).collect();
                let _ = s.write_all(&junk);
            }
        }
        // Slow clients: half a request, then silence, held open.
        let slow: Vec<TcpStream> = (0..20)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").ok()?;
                Some(s)
            })
            .collect();
        // Requests past the limits get their status without being read further.
        let status_of = |request: &[u8]| -> String {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let _ = s.write_all(request);
            let mut head = [0u8; 12];
            let _ = s.read_exact(&mut head);
            String::from_utf8_lossy(&head[9..12]).into_owned()
        };
        assert_eq!(
            status_of(
                b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
            ),
            "413"
        );
        // A declared length is never allocated up front: an absurd one on a bodiless route is ignored.
        assert_eq!(
            status_of(
                b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n"
            ),
            "200"
        );
        let long_header = format!(
            "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(status_of(long_header.as_bytes()), "431");
        let many_headers = format!("GET /health HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200));
        assert_eq!(status_of(many_headers.as_bytes()), "431");
        assert_eq!(
            status_of(
                b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            "411"
        );
        assert_eq!(
            status_of(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
            "400"
        );
        let t = Instant::now();
        assert_eq!(
            status_of(b"GET /health HTTP/1.1\r\nHost: x\r\n"),
            "408",
            "an unfinished head times out"
        );
        assert!(t.elapsed() < Duration::from_secs(12));

        // A flood of well-formed probes from many threads: every one answered.
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| http_get(port, "/health").is_some_and(|(s, _)| s == 200))
                        .count()
                })
            })
            .collect();
        let answered: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(answered, 400);
        assert_eq!(svc.get("/health").map(|r| r.0), Some(200));
        drop(slow);

        // Still working end to end.
        let conv = stack.create_conversation(RECIPIENT);
        stack.insert_outbound(&conv, "after the storm");
        assert!(
            stack.wait_status_count("sent", 1, Duration::from_secs(20)),
            "{}",
            svc.log()
        );
    }
}
