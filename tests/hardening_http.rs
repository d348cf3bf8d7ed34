//! Hardening of the service's own HTTP port, served in process (no database needed): the request
//! deadline holds whatever pace the client sends at, a flood of trickling connections cannot keep
//! a `/health` probe out, and `HEAD` answers without a body. Everything connects to 127.0.0.1 and
//! every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sms_sender::backoff::Backoff;
use sms_sender::delivery::circuit::Circuit;
use sms_sender::delivery::queue::WorkQueue;
use sms_sender::ops::health::Health;
use sms_sender::ops::liveness::Liveness;
use sms_sender::ops::metrics::Metrics;
use sms_sender::ops::server::{self, Admin, MAX_CONNECTIONS, REQUEST_DEADLINE};
use sms_sender_doubles::harness::{free_port, http_get, wait_until};

/// Start the HTTP server on a free port, with no delivery receipts; returns the port.
fn start_server() -> u16 {
    let port = free_port();
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(2), false);
    server::serve(
        port,
        Admin {
            health: Health::new(),
            liveness: Liveness::new(Duration::from_secs(120)),
            metrics: Arc::new(Metrics::default()),
            queue: WorkQueue::new(8),
            circuit: Circuit::new(backoff, backoff),
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
