//! Operating the service: `/metrics` (checked with Prometheus' own Python parser), the `check`
//! command, `MAX_SENDS_PER_SECOND`, delivery receipts with signed callbacks, and hardening of the
//! HTTP port and of TLS (a private CA: refused by default, accepted through `SSL_CERT_FILE`).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::tls::TestCa;
use sms_sender_doubles::twilio::{post_form, twilio_signature, Fault};

const WAIT: Duration = Duration::from_secs(20);

fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&sms_sender_bin!(), extra)
}

/// Start the service with delivery receipts on: the service, its port, its `STATUS_CALLBACK_URL`.
fn start_with_receipts(stack: &Stack, extra: &[(&str, &str)]) -> (Service, u16, String) {
    stack.start_service_with_receipts(&sms_sender_bin!(), extra)
}

/// Parse a Prometheus text page with `prometheus_client`'s parser (an independent
/// implementation): returns `name{labels} value` lines, sorted, as the parser understood them.
fn parse_prometheus(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out.append(f"{family.type} {s.name}{{{labels}}} {s.value}")
print("\n".join(sorted(out)))
"#;
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (make test installs python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sample(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no sample {prefix}:\n{}", samples.join("\n")));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn metrics_parse_with_prometheus_own_parser_and_survive_reconnects() {
    let stack = Stack::start();
    let svc = start(&stack, &[("RETRY_BACKOFF_MS", "20")]);
    stack
        .twilio
        .fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "one");
    stack.insert_outbound(&conv, "two");
    let bad = stack.create_conversation("+15005550001"); // the double answers 21211
    stack.insert_outbound(&bad, "three");
    assert!(stack.wait_status_count("sent", 2, WAIT));
    assert!(stack.wait_status_count("failed", 1, WAIT));

    // Counted when the row is written: the answer to that write can trail the row by a moment.
    let counted = |text: &str| {
        let m = parse_prometheus(text);
        sample(&m, "sms_sender_messages_total{outcome=\"sent\"}") == 2.0
            && sample(&m, "sms_sender_messages_total{outcome=\"failed\"}") == 1.0
    };
    assert!(wait_until(WAIT, || svc
        .get("/metrics")
        .is_some_and(|(_, t)| counted(&t))));
    let (status, text) = svc.get("/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    let m = parse_prometheus(&text);
    assert_eq!(
        sample(&m, "sms_sender_messages_total{outcome=\"sent\"}"),
        2.0
    );
    assert_eq!(
        sample(&m, "sms_sender_messages_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "sms_sender_twilio_requests_total{status=\"201\"}"),
        2.0
    );
    assert_eq!(
        sample(&m, "sms_sender_twilio_requests_total{status=\"429\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "sms_sender_twilio_requests_total{status=\"400\"}"),
        1.0
    );
    // The 429 is Twilio's concurrency limit: a retry (counted), though not a failed attempt
    // against MAX_RETRIES.
    assert_eq!(sample(&m, "sms_sender_retries_total{}"), 1.0);
    assert_eq!(sample(&m, "sms_sender_twilio_throttled_total{}"), 1.0);
    assert_eq!(sample(&m, "sms_sender_realtime_connected{}"), 1.0);
    assert_eq!(sample(&m, "sms_sender_queue_depth{}"), 0.0);
    assert_eq!(sample(&m, "sms_sender_send_latency_seconds_count{}"), 2.0);
    assert_eq!(
        sample(&m, "sms_sender_send_latency_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    let version = format!(
        "sms_sender_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&m, &version), 1.0);
    assert!(m
        .iter()
        .any(|l| l.starts_with("histogram sms_sender_send_latency_seconds_bucket")));
    assert!(m
        .iter()
        .any(|l| l.starts_with("counter sms_sender_messages_total")));

    stack.supabase.realtime_drop_all();
    assert!(wait_until(WAIT, || {
        let (_, t) = svc.get("/metrics").unwrap();
        t.contains("sms_sender_realtime_reconnects_total 1")
    }));
    assert!(svc.wait_subscribed(WAIT));
    let m = parse_prometheus(&svc.get("/metrics").unwrap().1);
    assert_eq!(
        sample(&m, "sms_sender_messages_total{outcome=\"sent\"}"),
        2.0,
        "counters survive"
    );
    assert_eq!(sample(&m, "sms_sender_realtime_connected{}"), 1.0);
}

#[test]
fn the_rate_limit_spaces_sends_and_drops_nothing() {
    let stack = Stack::start();
    let svc = start(
        &stack,
        &[("MAX_SENDS_PER_SECOND", "5"), ("SENDER_THREADS", "8")],
    );
    let conv = stack.create_conversation(RECIPIENT);
    let bodies: Vec<String> = (0..15).map(|i| format!("paced {i}")).collect();
    stack.insert_many(&conv, &bodies);
    assert!(
        stack.wait_status_count("sent", 15, Duration::from_secs(30)),
        "{}",
        svc.log()
    );
    let mut times: Vec<Instant> = stack
        .twilio
        .messages()
        .iter()
        .map(|m| m.received_at)
        .collect();
    times.sort();
    let span = times[14] - times[0];
    assert!(
        span >= Duration::from_millis(2700),
        "15 sends at 5/s take ≥ 2.8 s, took {span:?}"
    );
    for (i, t) in times.iter().enumerate() {
        let within_a_second = times[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(
            within_a_second <= 6,
            "{within_a_second} sends within one second"
        );
    }
}

#[test]
fn delivery_receipts_are_verified_and_applied_once_in_order() {
    let stack = Stack::start();
    let (svc, _, url) = start_with_receipts(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let a = stack.insert_outbound(&conv, "will be delivered");
    let b = stack.insert_outbound(&conv, "will bounce");
    assert!(stack.wait_status_count("sent", 2, WAIT));
    let sid = |id: &str| stack.message(id).twilio_message_sid.unwrap();
    let (sid_a, sid_b) = (sid(&a), sid(&b));
    // Each create names its row in the callback URL (Twilio signs it whole).
    for (id, body) in [(&a, "will be delivered"), (&b, "will bounce")] {
        let m = stack
            .twilio
            .messages()
            .into_iter()
            .find(|m| m.requested_body == body)
            .unwrap();
        assert_eq!(
            m.status_callback,
            Some(format!("{url}?sms_sender_message={id}"))
        );
    }

    assert_eq!(
        stack.twilio.send_status_callback(&sid_a, "sent", None),
        Some(200)
    );
    assert_eq!(
        stack.twilio.send_status_callback(&sid_a, "delivered", None),
        Some(200)
    );
    assert!(wait_until(WAIT, || stack.message(&a).status.as_deref()
        == Some("delivered")));
    let delivered_at: Option<String> = stack.db(|c| {
        Ok(c.query_one(
            "SELECT delivered_at::text FROM messages WHERE id = $1::text::uuid",
            &[&a],
        )?
        .get(0))
    });
    assert!(delivered_at.is_some());
    // Duplicates and late, out-of-order callbacks change nothing.
    assert_eq!(
        stack.twilio.send_status_callback(&sid_a, "delivered", None),
        Some(200)
    );
    assert_eq!(
        stack.twilio.send_status_callback(&sid_a, "sent", None),
        Some(200)
    );
    assert_eq!(
        stack
            .twilio
            .send_status_callback(&sid_a, "undelivered", Some(30003)),
        Some(200)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.message(&a).status.as_deref(), Some("delivered"));

    assert_eq!(
        stack
            .twilio
            .send_status_callback(&sid_b, "undelivered", Some(30003)),
        Some(200)
    );
    assert!(wait_until(WAIT, || stack.message(&b).status.as_deref()
        == Some("undelivered")));
    assert!(
        wait_until(WAIT, || svc.log().contains("30003")),
        "{}",
        svc.log()
    );

    // Forged or tampered callbacks are refused and change nothing.
    let params = vec![
        ("MessageSid".to_string(), sid_b.clone()),
        ("MessageStatus".to_string(), "delivered".to_string()),
    ];
    assert_eq!(post_form(&url, &params, None), Some(403));
    assert_eq!(
        post_form(&url, &params, Some("bm90IGEgc2lnbmF0dXJl")),
        Some(403)
    );
    let wrong_key = twilio_signature("another-token", &url, &params);
    assert_eq!(post_form(&url, &params, Some(&wrong_key)), Some(403));
    let right = twilio_signature(&stack.twilio.config().auth_token, &url, &params);
    let mut tampered = params.clone();
    tampered[1].1 = "failed".into();
    assert_eq!(post_form(&url, &tampered, Some(&right)), Some(403));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(stack.message(&b).status.as_deref(), Some("undelivered"));
    let (_, metrics) = svc.get("/metrics").unwrap();
    assert!(
        metrics.contains("sms_sender_status_callbacks_total{result=\"rejected\"} 4"),
        "{metrics}"
    );
}

#[test]
fn tls_is_verified_refused_for_an_unknown_ca_and_accepted_with_ssl_cert_file() {
    let stack = Stack::start();
    let dir = TempDir::new("sms-tls");
    let TestCa { ca, cert, key } = TestCa::create(&dir.0, "sms-sender test CA").unwrap();
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-www")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", port)
    )
    .is_ok()));
    let tls_url = format!("https://127.0.0.1:{port}");

    let run_check = |extra: Vec<(String, String)>| {
        let mut env = stack.service_env();
        env.retain(|(k, _)| k != "TWILIO_API_URL");
        env.push(("TWILIO_API_URL".into(), tls_url.clone()));
        env.extend(extra);
        let out = Command::new(sms_sender_bin!())
            .arg("check")
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = run_check(vec![(
        "SSL_CERT_FILE".into(),
        "/etc/ssl/certs/ca-certificates.crt".into(),
    )]);
    let line = refused
        .lines()
        .find(|l| l.contains("Twilio credentials"))
        .unwrap()
        .to_string();
    assert!(
        line.starts_with('✗') && line.to_lowercase().contains("certificate"),
        "{refused}"
    );

    let trusted = run_check(vec![("SSL_CERT_FILE".into(), ca.display().to_string())]);
    let line = trusted
        .lines()
        .find(|l| l.contains("Twilio credentials"))
        .unwrap()
        .to_string();
    assert!(
        !line.to_lowercase().contains("certificate"),
        "the private CA was trusted: {trusted}"
    );
    assert!(
        line.contains("HTTP") || line.contains("unreadable"),
        "TLS worked, then s_server's page was not JSON: {line}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Twilio can call back before the service's `sent` write has landed (here held for 3 s): the
/// receipt names its row, so it is applied at once and the row ends `delivered` with the SID; the
/// late `sent` write then finds the row recorded and says nothing false.
#[test]
fn a_receipt_that_arrives_before_the_sent_write_is_applied() {
    let stack = Stack::start();
    let (svc, _, _) = start_with_receipts(&stack, &[]);
    stack.supabase.add_rest_rule(
        sms_sender_doubles::supabase::RestRule::body("PATCH", "\"status\":\"sent\"")
            .delay(Duration::from_secs(3)),
    );
    let conv = stack.create_conversation(RECIPIENT);
    let id = stack.insert_outbound(&conv, "receipt overtakes the write");
    assert!(stack.twilio.wait_for_messages(1, WAIT));
    let sid = stack.twilio.messages()[0].sid.clone();
    assert_eq!(stack.message(&id).status.as_deref(), Some("sending"));
    assert_eq!(
        stack.twilio.send_status_callback(&sid, "delivered", None),
        Some(200)
    );
    assert!(
        wait_until(WAIT, || stack.message(&id).status.as_deref()
            == Some("delivered")),
        "{:?}\n{}",
        stack.message(&id),
        svc.log()
    );
    std::thread::sleep(Duration::from_secs(4)); // the held write lands, and changes nothing
    let row = stack.message(&id);
    assert_eq!(row.status.as_deref(), Some("delivered"));
    assert_eq!(row.twilio_message_sid.as_deref(), Some(sid.as_str()));
    assert!(!svc.log().contains("WAS SENT"), "{}", svc.log());
}

/// A create whose answer was lost, on a Twilio whose list lags: the `sent` callback links the
/// row to its SID before any lookup could, and nothing is sent twice.
#[test]
fn a_receipt_links_a_message_whose_create_answer_was_lost() {
    let stack = Stack::start();
    stack.twilio.set_visibility_lag(Duration::from_secs(30));
    let (svc, _, _) = start_with_receipts(&stack, &[("RECONCILE_SETTLE_MS", "5000")]);
    stack.twilio.fail_next_creates(1, Fault::HangupAfterCreate);
    let conv = stack.create_conversation(RECIPIENT);
    let id = stack.insert_outbound(&conv, "answer lost, receipt arrives");
    assert!(stack.twilio.wait_for_messages(1, WAIT));
    let sid = stack.twilio.messages()[0].sid.clone();
    assert_eq!(
        stack.twilio.send_status_callback(&sid, "sent", None),
        Some(200)
    );
    assert!(
        wait_until(WAIT, || stack.message(&id).twilio_message_sid.as_deref()
            == Some(sid.as_str())),
        "{:?}\n{}",
        stack.message(&id),
        svc.log()
    );
    assert!(wait_until(WAIT, || stack.message(&id).status.as_deref()
        == Some("sent")));
    // Past the settle window the list still shows nothing (it lags 30 s): the row, not the
    // list, says the message exists, and it is not sent again.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(stack.twilio.create_requests(), 1, "{}", svc.log());
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
}

/// A receipt acknowledged while the database is down is kept and retried, not dropped after a few
/// failed writes; one still unapplied at shutdown is named in the log with the reason.
#[test]
fn acknowledged_receipts_survive_a_database_outage_and_are_reported_at_shutdown() {
    let stack = Stack::start();
    let (mut svc, _, _) = start_with_receipts(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let a = stack.insert_outbound(&conv, "delivered after the outage");
    let b = stack.insert_outbound(&conv, "delivered during shutdown");
    assert!(stack.wait_status_count("sent", 2, WAIT));
    let sid = |id: &str| stack.message(id).twilio_message_sid.unwrap();
    let (sid_a, sid_b) = (sid(&a), sid(&b));

    stack.supabase.set_rest_outage(Some(
        sms_sender_doubles::supabase::RestFault::db_unavailable(),
    ));
    assert_eq!(
        stack.twilio.send_status_callback(&sid_a, "delivered", None),
        Some(200)
    );
    // Several writes of the receipt fail before the database comes back.
    let failed_writes = |stack: &Stack| {
        stack
            .supabase
            .rest_requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .filter(|r| {
                [sid_a.as_str(), a.as_str()]
                    .iter()
                    .any(|x| r.query.contains(x) || r.body.contains(x))
            })
            .count()
    };
    let before = failed_writes(&stack);
    assert!(
        wait_until(Duration::from_secs(30), || failed_writes(&stack)
            >= before + 3),
        "the receipt's write was not retried during the outage:\n{}",
        svc.log()
    );
    stack.supabase.set_rest_outage(None);
    assert!(
        wait_until(Duration::from_secs(30), || stack
            .message(&a)
            .status
            .as_deref()
            == Some("delivered")),
        "{}",
        svc.log()
    );

    stack.supabase.set_rest_outage(Some(
        sms_sender_doubles::supabase::RestFault::db_unavailable(),
    ));
    assert_eq!(
        stack.twilio.send_status_callback(&sid_b, "delivered", None),
        Some(200)
    );
    std::thread::sleep(Duration::from_secs(1));
    svc.terminate();
    assert!(svc.wait_exit(Duration::from_secs(15)).is_some());
    let log = svc.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&sid_b) && l.contains("dropped") && l.contains("database")),
        "the dropped receipt is named with the reason:\n{log}"
    );
}
