//! End to end: the real `sms-sender` binary against a real PostgreSQL and the Supabase and
//! Twilio doubles, one instance at a time (several instances: multi_instance.rs). Each test builds its own world, so tests run in parallel and in any order.
//! Every test ends by checking the service log holds no secret and no message body.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{SubscribeMode, SupabaseConfig};
use sms_sender_doubles::twilio::{Fault, TwilioConfig};

const WAIT: Duration = Duration::from_secs(20);

/// Start the service against `stack` with extra variables; wait until it is subscribed.
fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&sms_sender_bin!(), extra)
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn happy_path_sends_exact_fields_and_records_sid() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let body = "Your table for 4 is ready — see you at 8 🍷";
    let id = stack.insert_outbound(&conv, body);

    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    let sent = stack.twilio.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, RECIPIENT);
    assert_eq!(sent[0].from.as_deref(), Some(FROM_NUMBER));
    assert_eq!(sent[0].body, body);
    assert_eq!(sent[0].messaging_service_sid, None);
    let row = stack.message(&id);
    assert_eq!(row.status.as_deref(), Some("sent"));
    assert_eq!(
        row.twilio_message_sid.as_deref(),
        Some(sent[0].sid.as_str())
    );
    assert!(row.sent_at.is_some(), "sent_at is recorded");

    // Three network calls for the message: claim and record over REST, one Twilio create.
    let rest: Vec<_> = stack
        .supabase
        .rest_requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.query.contains(&id))
        .collect();
    assert_eq!(rest.len(), 2, "claim + record: {rest:?}");
    assert_eq!(stack.twilio.create_requests(), 1);

    let (status, health) = svc.health().expect("health answers");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "sms-sender");
    assert_eq!(health["websocket"], "connected");
    assert!(health["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(svc.get("/nope").map(|r| r.0), Some(404));
    assert_clean_log(&svc, &stack, &[body]);
}

#[test]
fn messages_queued_before_start_are_caught_up() {
    let stack = Stack::start();
    let conv = stack.create_conversation(RECIPIENT);
    let bodies: Vec<String> = (0..25).map(|i| format!("early bird {i}")).collect();
    stack.insert_many(&conv, &bodies);
    assert_eq!(stack.status_counts(), counts(&[("queued_for_send", 25)]));

    let svc = start(&stack, &[]);
    assert!(
        stack.wait_status_count("sent", 25, WAIT),
        "log:\n{}",
        svc.log()
    );
    let got: HashSet<String> = stack
        .twilio
        .messages()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(got, bodies.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(stack.twilio.create_requests(), 25, "each sent once");
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    assert_clean_log(&svc, &stack, &refs);
}

#[test]
fn server_error_then_success_is_retried() {
    let stack = Stack::start();
    // A 5xx may have created the message: each retry first waits out the settle window.
    let svc = start(
        &stack,
        &[("RETRY_BACKOFF_MS", "50"), ("RECONCILE_SETTLE_MS", "500")],
    );
    stack.twilio.fail_next_creates(
        2,
        Fault::Error {
            status: 503,
            code: 20503,
            message: "Service Unavailable".into(),
            retry_after: None,
        },
    );
    let conv = stack.create_conversation(RECIPIENT);
    let id = stack.insert_outbound(&conv, "retry me");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    assert_eq!(stack.twilio.create_requests(), 3);
    assert_eq!(stack.twilio.messages().len(), 1);
    assert!(stack.message(&id).twilio_message_sid.is_some());
    let log = svc.log();
    assert!(
        log.contains("attempt 1/4 failed") && log.contains("HTTP 503"),
        "{log}"
    );
    assert!(log.contains("Twilio code 20503"), "{log}");
    assert_clean_log(&svc, &stack, &["retry me"]);
}

#[test]
fn too_many_requests_honours_retry_after() {
    let stack = Stack::start();
    let svc = start(&stack, &[("RETRY_BACKOFF_MS", "20")]);
    stack.twilio.fail_next_creates(
        1,
        Fault::TooManyRequests {
            retry_after: Some(2),
        },
    );
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "slow down");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    let creates: Vec<_> = stack
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0].status, Some(429));
    let gap = creates[1].at - creates[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 was not honoured ({gap:?})"
    );
    assert_clean_log(&svc, &stack, &["slow down"]);
}

#[test]
fn permanent_error_fails_after_one_call() {
    let stack = Stack::start();
    let svc = start(&stack, &[("RETRY_BACKOFF_MS", "20")]);
    // The double answers this number with 21211, as Twilio's test credentials do.
    let conv = stack.create_conversation("+15005550001");
    let id = stack.insert_outbound(&conv, "never");
    assert!(
        stack.wait_status_count("failed", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stack.twilio.create_requests(),
        1,
        "no retry for a permanent error"
    );
    assert_eq!(stack.message(&id).twilio_message_sid, None);
    assert!(svc.log().contains("21211"));
    assert_clean_log(&svc, &stack, &["never"]);
}

#[test]
fn exhausted_retries_fail_after_max_retries_plus_one_calls() {
    let stack = Stack::start();
    let svc = start(
        &stack,
        &[
            ("RETRY_BACKOFF_MS", "20"),
            ("MAX_RETRIES", "2"),
            ("RECONCILE_SETTLE_MS", "500"),
        ],
    );
    stack.twilio.set_outage(Some(Fault::Error {
        status: 500,
        code: 20500,
        message: "Internal Server Error".into(),
        retry_after: None,
    }));
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "doomed");
    assert!(
        stack.wait_status_count("failed", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.twilio.create_requests(), 3);
    assert!(svc.log().contains("failed after 3 attempts"));
    assert_clean_log(&svc, &stack, &["doomed"]);
}

#[test]
fn bad_rows_fail_without_twilio_and_the_service_keeps_going() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    let bad_phone = stack.create_conversation("555-1234");
    let bad = stack.insert_outbound(&bad_phone, "to a bad number");
    // A message whose conversation does not exist: bypass the foreign key, then queue it.
    stack.sql(
        "SET session_replication_role = replica;
         INSERT INTO users (id) VALUES ('00000000-0000-4000-8000-00000000000a');
         INSERT INTO messages (id, conversation_id, user_id, role, content, direction, status)
         VALUES ('00000000-0000-4000-8000-0000000000bb', '00000000-0000-4000-8000-0000000000cc',
                 '00000000-0000-4000-8000-00000000000a', 'assistant', 'to nobody', 'outbound', 'pending');
         SET session_replication_role = origin;",
    );
    // A separate transaction: PostgreSQL re-checks the key of rows inserted in the same one.
    stack.sql("UPDATE messages SET status = 'queued_for_send' WHERE id = '00000000-0000-4000-8000-0000000000bb'");
    assert!(
        stack.wait_status_count("failed", 2, WAIT),
        "log:\n{}",
        svc.log()
    );
    assert_eq!(
        stack.twilio.create_requests(),
        0,
        "no Twilio call for bad rows"
    );
    assert_eq!(stack.message(&bad).status.as_deref(), Some("failed"));
    let log = svc.log();
    assert!(log.contains("not E.164"), "{log}");
    assert!(log.contains("conversation does not exist"), "{log}");

    let good = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&good, "still working");
    assert!(stack.wait_status_count("sent", 1, WAIT), "log:\n{log}");
    assert_clean_log(
        &svc,
        &stack,
        &["to a bad number", "to nobody", "still working"],
    );
}

#[test]
fn messages_written_while_the_socket_is_down_are_sent_after_reconnect() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let connections = stack.supabase.realtime_connections();
    stack
        .supabase
        .set_realtime_refuse(Some((503, "Error connecting to Realtime".into())));
    stack.supabase.realtime_drop_all();
    assert!(
        wait_until(WAIT, || svc
            .health()
            .is_some_and(|(_, h)| h["websocket"] != "connected")),
        "health must show the lost link"
    );
    let bodies: Vec<String> = (0..5).map(|i| format!("while away {i}")).collect();
    stack.insert_many(&conv, &bodies);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        stack.twilio.create_requests(),
        0,
        "nothing can arrive while the socket is down"
    );
    stack.supabase.set_realtime_refuse(None);
    assert!(
        stack.wait_status_count("sent", 5, WAIT),
        "log:\n{}",
        svc.log()
    );
    assert!(stack.supabase.realtime_connections() > connections);
    assert!(svc.wait_subscribed(WAIT));
    assert!(
        svc.log().contains("upgrade refused with HTTP 503"),
        "{}",
        svc.log()
    );
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    assert_clean_log(&svc, &stack, &refs);
}

#[test]
fn a_silent_socket_is_detected_by_heartbeat_and_replaced() {
    let stack = Stack::start();
    let svc = start(&stack, &[("REALTIME_HEARTBEAT_MS", "300")]);
    let before = stack.supabase.realtime_connections();
    stack.supabase.set_heartbeat_replies(false);
    assert!(
        wait_until(WAIT, || svc.log().contains("heartbeat not answered")),
        "log:\n{}",
        svc.log()
    );
    stack.supabase.set_heartbeat_replies(true);
    assert!(wait_until(WAIT, || stack.supabase.realtime_connections() > before));
    assert!(svc.wait_subscribed(WAIT));
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "after the silence");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    assert_clean_log(&svc, &stack, &["after the silence"]);
}

#[test]
fn sigterm_mid_burst_exits_zero_and_leaves_nothing_sending() {
    let stack = Stack::start();
    stack.twilio.set_latency(Duration::from_millis(150));
    let mut svc = start(&stack, &[("SENDER_THREADS", "4")]);
    let conv = stack.create_conversation(RECIPIENT);
    let bodies: Vec<String> = (0..100).map(|i| format!("burst {i}")).collect();
    stack.insert_many(&conv, &bodies);
    assert!(wait_until(WAIT, || stack.twilio.messages().len() >= 8));
    svc.terminate();
    let t = Instant::now();
    let status = svc
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert_eq!(status.code(), Some(0), "log:\n{}", svc.log());
    assert!(t.elapsed() < Duration::from_secs(9));
    let c = stack.status_counts();
    assert_eq!(
        c.get("sending"),
        None,
        "nothing left claimed: {c:?}\n{}",
        svc.log()
    );
    let sent = c.get("sent").copied().unwrap_or(0);
    assert_eq!(
        sent + c.get("queued_for_send").copied().unwrap_or(0),
        100,
        "{c:?}"
    );
    assert_eq!(
        stack.twilio.messages().len() as i64,
        sent,
        "every Twilio create is recorded"
    );
    assert!(svc.log().contains("SIGTERM received"));
    assert_clean_log(&svc, &stack, &[]);

    // What the first instance left queued, a new one sends.
    let svc2 = start(&stack, &[]);
    assert!(
        stack.wait_status_count("sent", 100, Duration::from_secs(60)),
        "{:?}",
        stack.status_counts()
    );
    assert_eq!(stack.twilio.messages().len(), 100);
    assert_clean_log(&svc2, &stack, &[]);
}

#[test]
fn bad_twilio_credentials_pause_instead_of_failing_messages() {
    let stack = Stack::start();
    let svc = start(&stack, &[("TWILIO_AUTH_TOKEN", "wrong-token")]);
    let conv = stack.create_conversation(RECIPIENT);
    let id = stack.insert_outbound(&conv, "keep me");
    assert!(
        wait_until(WAIT, || svc.log().contains("TWILIO_AUTH_TOKEN")),
        "{}",
        svc.log()
    );
    assert!(wait_until(WAIT, || stack.message(&id).status.as_deref()
        == Some("queued_for_send")));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stack.message(&id).status.as_deref(),
        Some("queued_for_send"),
        "not failed, not stuck"
    );
    assert!(svc.log().contains("20003"));
    let log = svc.log();
    assert!(!log.contains("wrong-token"));
    assert_clean_log(&svc, &stack, &["keep me"]);
}

#[test]
fn messaging_service_and_secret_key() {
    let mg = format!("MG{}", "0123456789abcdef".repeat(2));
    let stack = Stack::start_with(
        SupabaseConfig {
            service_key: "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz".into(),
            ..Default::default()
        },
        TwilioConfig {
            messaging_services: vec![mg.clone()],
            ..Default::default()
        },
    );
    let svc = start(
        &stack,
        &[
            ("TWILIO_PHONE_NUMBER", ""),
            ("TWILIO_MESSAGING_SERVICE_SID", &mg),
        ],
    );
    let join = stack
        .supabase
        .frames_received()
        .into_iter()
        .find(|f| f["event"] == "phx_join")
        .expect("a join was sent");
    assert!(
        join["payload"].get("access_token").is_none(),
        "sb_ keys are not join tokens"
    );
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "via service");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    let m = &stack.twilio.messages()[0];
    assert_eq!(m.messaging_service_sid.as_deref(), Some(mg.as_str()));
    assert_eq!(m.from, None);
    assert_clean_log(&svc, &stack, &["via service"]);
}

#[test]
fn join_and_subscription_errors_are_logged_with_the_servers_reason() {
    let stack = Stack::start();
    stack
        .supabase
        .set_join_error(Some("ChannelRateLimitReached: Too many channels".into()));
    let svc = Service::start(&sms_sender_bin!(), stack.service_env());
    assert!(
        wait_until(WAIT, || svc
            .log()
            .contains("ChannelRateLimitReached: Too many channels")),
        "{}",
        svc.log()
    );
    stack.supabase.set_join_error(None);
    stack.supabase.set_subscribe_status(SubscribeMode::Error(
        "Unable to subscribe to changes with given parameters".into(),
    ));
    assert!(
        wait_until(Duration::from_secs(40), || svc
            .log()
            .contains("subscription failed: Unable to subscribe")),
        "{}",
        svc.log()
    );
    stack.supabase.set_subscribe_status(SubscribeMode::Ok);
    assert!(
        svc.wait_subscribed(Duration::from_secs(40)),
        "{}",
        svc.log()
    );
    assert_clean_log(&svc, &stack, &[]);
}

#[test]
fn bad_configuration_exits_2_naming_the_variable_without_secrets() {
    let stack = Stack::start();
    let secret_token = "tok-VERY-SECRET-123";
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("SUPABASE_URL", None, "SUPABASE_URL: is required"),
        ("SUPABASE_URL", Some("supabase.co"), "SUPABASE_URL: "),
        (
            "SUPABASE_SERVICE_KEY",
            Some("not-a-key"),
            "SUPABASE_SERVICE_KEY: ",
        ),
        ("TWILIO_ACCOUNT_SID", Some("ACnope"), "TWILIO_ACCOUNT_SID: "),
        ("TWILIO_AUTH_TOKEN", None, "TWILIO_AUTH_TOKEN: is required"),
        (
            "TWILIO_PHONE_NUMBER",
            Some("555-1234"),
            "TWILIO_PHONE_NUMBER: \"555-1234\" is not E.164",
        ),
        (
            "TWILIO_MESSAGING_SERVICE_SID",
            Some("MG1"),
            "TWILIO_MESSAGING_SERVICE_SID: ",
        ),
        ("PORT", Some("http"), "PORT: "),
        ("SENDER_THREADS", Some("0"), "SENDER_THREADS: "),
        ("MAX_RETRIES", Some("many"), "MAX_RETRIES: "),
        ("RETRY_BACKOFF_MS", Some("-5"), "RETRY_BACKOFF_MS: "),
        ("LOG_FORMAT", Some("yaml"), "LOG_FORMAT: "),
    ];
    for (var, value, expected) in cases {
        let mut env = stack.service_env();
        env.retain(|(k, _)| k != "TWILIO_AUTH_TOKEN");
        env.push(("TWILIO_AUTH_TOKEN".into(), secret_token.into()));
        env.retain(|(k, _)| k != var);
        if let Some(v) = value {
            env.push((var.to_string(), v.to_string()));
        }
        let t = Instant::now();
        let out = std::process::Command::new(sms_sender_bin!())
            .env_clear()
            .envs(env.clone())
            .output()
            .expect("run binary");
        assert!(t.elapsed() < Duration::from_secs(5), "{var}: exits at once");
        assert_eq!(out.status.code(), Some(2), "{var}={value:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{var}: one line: {stderr}");
        assert!(stderr.contains(expected), "{var}={value:?}: {stderr}");
        assert!(!stderr.contains(secret_token), "{var}: secret printed");
        for (k, v) in &env {
            if k == "SUPABASE_SERVICE_KEY" || k == "TWILIO_ACCOUNT_SID" {
                assert!(!stderr.contains(v.as_str()), "{k} printed: {stderr}");
            }
        }
    }
    assert!(
        stack.supabase.rest_requests().is_empty(),
        "no network use before validation"
    );
    assert_eq!(stack.supabase.realtime_connections(), 0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let stack = Stack::start();
    let svc = start(&stack, &[("LOG_FORMAT", "json")]);
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "json please");
    assert!(stack.wait_status_count("sent", 1, WAIT));
    assert!(wait_until(WAIT, || svc.log().contains(" sent to ")));
    let log = svc.log();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["severity"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    assert_clean_log(&svc, &stack, &["json please"]);
}

#[test]
fn no_secret_reaches_the_log_at_any_level() {
    let stack = Stack::start();
    let svc = start(
        &stack,
        &[
            ("RUST_LOG", "trace"),
            ("HTTP_TIMEOUT_MS", "300"),
            ("RETRY_BACKOFF_MS", "20"),
        ],
    );
    // Exercise the error paths too: a cut connection, a timeout, a REST failure.
    stack.twilio.fail_next_creates(1, Fault::HangupBeforeCreate);
    stack
        .twilio
        .fail_next_creates(1, Fault::DelayAfterCreate(Duration::from_millis(800)));
    stack
        .supabase
        .rest_fail_next(1, sms_sender_doubles::supabase::RestFault::db_unavailable());
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "trace me");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "log:\n{}",
        svc.log()
    );
    let log = svc.log();
    assert!(log.contains("TRACE"), "trace level was on");
    assert!(
        log.contains("trace me"),
        "bodies appear at trace level only"
    );
    for (k, v) in stack.service_env() {
        if [
            "SUPABASE_SERVICE_KEY",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_ACCOUNT_SID",
        ]
        .contains(&k.as_str())
        {
            assert!(!log.contains(v.as_str()), "{k} leaked at trace level");
        }
    }
}
