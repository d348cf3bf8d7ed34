//! "Nothing stuck, back within seconds" on the Supabase side: the real `sms-sender` binary
//! against a real PostgreSQL and the Supabase and Twilio doubles, one world per test.
//!
//! Each test pins one way to get stuck: an id lost between the Realtime reader and the full
//! hand-off queue when the socket dies; a REST outage followed by a sweep interval's wait; rows
//! inserted already `queued_for_send`; a private-only Realtime project; an `sb_secret_` key with
//! a gateway that refuses it as a Bearer. (How long `check` takes on a wrong key: check_command.rs.)

use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{RestFault, SupabaseConfig};
use sms_sender_doubles::twilio::TwilioConfig;

/// `n` distinct bodies long enough to be scanned for in the log.
fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} message {i:03}")).collect()
}

/// One sender, a slow Twilio and a burst larger than the queue: the Realtime reader
/// waits to push an id into the full queue. A socket drop then ends that wait; the id must not
/// stay marked "waiting", or every later sweep and event skips it and it is never sent.
#[test]
fn queue_leak_an_id_abandoned_by_a_dropped_socket_is_still_sent() {
    let stack = Stack::start();
    stack.twilio.set_create_latency(Duration::from_millis(150));
    let svc = stack.start_service(
        &sms_sender_bin!(),
        &[
            ("SENDER_THREADS", "1"),
            ("REALTIME_HEARTBEAT_MS", "300"),
            ("SWEEP_INTERVAL_SECS", "2"),
        ],
    );
    let conv = stack.create_conversation(RECIPIENT);
    let ids = stack.insert_many(&conv, &bodies("burst", 30));
    // The queue holds 8: the reader is now waiting to push the 10th id or so.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        stack.twilio.messages().len() < 20,
        "the burst must still be queued when the socket drops"
    );
    stack.supabase.realtime_drop_all();
    let all_sent = stack.wait_status_count("sent", 30, Duration::from_secs(40));
    let stuck: Vec<_> = ids
        .iter()
        .filter(|id| stack.message(id).status.as_deref() != Some("sent"))
        .collect();
    assert!(
        all_sent,
        "stuck: {stuck:?}; counts {:?}; log:\n{}",
        stack.status_counts(),
        svc.log()
    );
    assert_eq!(stack.twilio.messages().len(), 30, "each sent exactly once");
}

/// A 4 s REST outage makes every claim fail; the messages queued meanwhile
/// must go out within seconds of REST answering again, not at the next periodic sweep (60 s).
#[test]
fn rest_blip_messages_queued_during_it_go_out_within_seconds_of_recovery() {
    let stack = Stack::start();
    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    let conv = stack.create_conversation(RECIPIENT);
    stack
        .supabase
        .set_rest_outage(Some(RestFault::db_unavailable()));
    stack.insert_many(&conv, &bodies("blip", 10));
    std::thread::sleep(Duration::from_secs(4));
    stack.supabase.set_rest_outage(None);
    let recovered = Instant::now();
    let sent = stack.wait_status_count("sent", 10, Duration::from_secs(20));
    assert!(
        sent,
        "{:?} 20 s after recovery (sweep interval 60 s); log:\n{}",
        stack.status_counts(),
        svc.log()
    );
    let took = recovered.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// A row inserted already `queued_for_send` produces an INSERT event and no
/// UPDATE: the subscription must see both, so it goes out at once, not at the next sweep.
#[test]
fn insert_straight_into_queued_for_send_is_sent_through_realtime() {
    let stack = Stack::start();
    let svc = stack.start_service(&sms_sender_bin!(), &[("SWEEP_INTERVAL_SECS", "3600")]);
    let join = stack
        .supabase
        .frames_received()
        .into_iter()
        .find(|f| f["event"] == "phx_join")
        .expect("a join was sent");
    let events: Vec<_> = join["payload"]["config"]["postgres_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        events.iter().any(|e| e == "INSERT" || e == "*")
            && events.iter().any(|e| e == "UPDATE" || e == "*"),
        "{join}"
    );
    let conv = stack.create_conversation(RECIPIENT);
    stack.sql(&format!(
        "INSERT INTO messages (conversation_id, user_id, role, content, direction, status) \
         SELECT c.id, c.user_id, 'assistant', 'born queued', 'outbound', 'queued_for_send' \
         FROM conversations c WHERE c.id = '{conv}'"
    ));
    assert!(
        stack.wait_status_count("sent", 1, Duration::from_secs(10)),
        "{:?}; log:\n{}",
        stack.status_counts(),
        svc.log()
    );
    // The ordinary path (an UPDATE to queued_for_send) still works, once per message.
    stack.insert_outbound(&conv, "born pending");
    assert!(stack.wait_status_count("sent", 2, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.twilio.messages().len(), 2);
}

/// A project with "Allow public access" off refuses `private: false` joins
/// (after the server's 5 s join-error delay); the service must subscribe there with no setting
/// and deliver through Realtime (a one-hour sweep interval leaves Realtime as the only way).
#[test]
fn private_only_project_subscribes_and_delivers_through_realtime() {
    let stack = Stack::start();
    stack.supabase.set_private_only(true);
    stack.supabase.set_join_error_delay(Duration::from_secs(5));
    let svc = stack.start_service(&sms_sender_bin!(), &[("SWEEP_INTERVAL_SECS", "3600")]);
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "table for two at eight");
    assert!(
        stack.wait_status_count("sent", 1, Duration::from_secs(10)),
        "{:?}; log:\n{}",
        stack.status_counts(),
        svc.log()
    );
    let joins: Vec<_> = stack
        .supabase
        .frames_received()
        .into_iter()
        .filter(|f| f["event"] == "phx_join")
        .collect();
    assert_eq!(
        joins.last().unwrap()["payload"]["config"]["private"],
        true,
        "{joins:?}"
    );
    assert!(svc.log().contains("PrivateOnly"), "{}", svc.log());

    // A reconnect goes straight to a private join: no second 5 s refusal.
    let before = joins.len();
    stack.supabase.realtime_drop_all();
    assert!(wait_until(Duration::from_secs(15), || stack
        .supabase
        .realtime_joins()
        >= 2
        && svc
            .health()
            .is_some_and(|(_, v)| v["websocket"] == "connected")));
    let joins: Vec<_> = stack
        .supabase
        .frames_received()
        .into_iter()
        .filter(|f| f["event"] == "phx_join")
        .skip(before)
        .collect();
    assert!(
        joins
            .iter()
            .all(|j| j["payload"]["config"]["private"] == true),
        "{joins:?}"
    );
    stack.insert_outbound(&conv, "see you tomorrow at nine");
    assert!(stack.wait_status_count("sent", 2, Duration::from_secs(10)));
}

/// With an `sb_secret_` key the double refuses any Bearer that is not a JWT
/// (as the API-keys guide says Supabase does); the core path still works end to end: subscribe,
/// claim, send with the exact fields, record `sent` with the SID.
#[test]
fn secret_key_core_path_against_a_gateway_refusing_non_jwt_bearers() {
    let key = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";
    let stack = Stack::start_with(
        SupabaseConfig {
            service_key: key.into(),
            ..Default::default()
        },
        TwilioConfig::default(),
    );
    // The double refuses the key as a Bearer, even byte-identical to `apikey`.
    let refused = raw_get(
        stack.supabase.port(),
        "/rest/v1/messages?select=id&limit=1",
        &[("apikey", key), ("Authorization", &format!("Bearer {key}"))],
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("PGRST301"), "{refused}");
    stack.supabase.clear_rest_requests();

    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let body = "secret-key path ✓";
    let id = stack.insert_outbound(&conv, body);
    assert!(
        stack.wait_status_count("sent", 1, Duration::from_secs(20)),
        "{:?}; log:\n{}",
        stack.status_counts(),
        svc.log()
    );
    let sent = stack.twilio.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].to.as_str(),
            sent[0].from.as_deref(),
            sent[0].body.as_str()
        ),
        (RECIPIENT, Some(FROM_NUMBER), body)
    );
    let row = stack.message(&id);
    assert_eq!(
        row.twilio_message_sid.as_deref(),
        Some(sent[0].sid.as_str())
    );
    let requests = stack.supabase.rest_requests();
    assert!(!requests.is_empty());
    for r in &requests {
        // The start asks whether scaled mode is installed; without it PostgREST answers 404.
        let detection = r.path.ends_with("/rpc/sms_sender_scaled_mode");
        assert!(
            r.status.is_some_and(|s| s < 400 || (detection && s == 404)),
            "{r:?}"
        );
        assert!(
            r.header("authorization").is_none(),
            "an sb_secret_ key is sent as apikey only: {r:?}"
        );
        assert_eq!(r.header("apikey"), Some(key));
    }
}

/// A raw HTTP/1.1 GET with headers; the whole response as text.
fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
