//! Socket faults: drops, server disconnects, heartbeats, blackhole, dropped and duplicated
//! events, idle timeout.

use std::time::{Duration, Instant};

use serde_json::json;

use super::T;
use crate::supabase::testkit::{env_with, insert_message, queued_binding, seed, ws_open, WsEvent};
use crate::supabase::SupabaseConfig;

#[test]
fn socket_faults() {
    let e = env_with(SupabaseConfig {
        idle_timeout: Duration::from_millis(600),
        ..Default::default()
    });
    let s = seed(&e.pg);

    // Blackhole: heartbeats and events vanish; afterwards nothing is replayed.
    let mut c = ws_open(&e.sb);
    c.join("realtime:a", "1", queued_binding());
    c.recv(T);
    assert!(e.sb.wait_subscribed(1, T));
    e.sb.set_blackhole(true);
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"}));
    insert_message(&e.pg, &s, "lost", "outbound", Some("pending"));
    c.expect_silence(Duration::from_millis(800)); // longer than the idle timeout: not closed
    e.sb.set_blackhole(false);
    c.expect_silence(Duration::from_millis(200));
    // Heartbeat replies off: swallowed, but events still flow.
    e.sb.set_heartbeat_replies(false);
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"}));
    insert_message(&e.pg, &s, "seen", "outbound", Some("pending"));
    let ev = c.recv(T);
    assert_eq!(ev["payload"]["data"]["record"]["content"], "seen");
    e.sb.set_heartbeat_replies(true);
    // Dropped and duplicated events.
    e.sb.set_drop_events(true);
    insert_message(&e.pg, &s, "dropped", "outbound", Some("pending"));
    c.expect_silence(Duration::from_millis(300));
    e.sb.set_drop_events(false);
    e.sb.set_duplicate_events(true);
    insert_message(&e.pg, &s, "twice", "outbound", Some("pending"));
    assert_eq!(c.recv(T)["payload"]["data"]["record"]["content"], "twice");
    assert_eq!(c.recv(T)["payload"]["data"]["record"]["content"], "twice");
    e.sb.set_duplicate_events(false);
    // phx_error: ref = join_ref, the socket stays.
    e.sb.phx_error_all();
    assert_eq!(
        c.recv(T),
        json!({"topic": "realtime:a", "event": "phx_error", "payload": {}, "ref": "1"})
    );
    assert_eq!(e.sb.subscribed_channels(), 0);
    // Idle timeout: close 1000 after no inbound frame for idle_timeout.
    let t = Instant::now();
    match c.event(T) {
        WsEvent::Close(code) => assert_eq!(code, Some(1000)),
        other => panic!("expected close 1000, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(900));

    // Server disconnect: system ok on every topic, then close 1012.
    let mut c = ws_open(&e.sb);
    c.join("realtime:b", "1", queued_binding());
    c.recv(T);
    e.sb.realtime_server_disconnect();
    assert_eq!(
        c.recv(T),
        json!({"topic": "realtime:b", "event": "system", "ref": null,
               "payload": {"channel": "b", "extension": "system", "status": "ok", "message": "Server requested disconnect"}})
    );
    match c.event(T) {
        WsEvent::Close(code) => assert_eq!(code, Some(1012)),
        other => panic!("expected close 1012, got {other:?}"),
    }

    // Abrupt drop: the connection ends without a close frame.
    let mut c = ws_open(&e.sb);
    c.join("realtime:c", "1", queued_binding());
    c.recv(T);
    e.sb.realtime_drop_all();
    match c.event(T) {
        WsEvent::Gone => {}
        other => panic!("expected a dropped connection, got {other:?}"),
    }
    let deadline = Instant::now() + T;
    while e.sb.realtime_open_sockets() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.sb.realtime_open_sockets(), 0);
    assert_eq!(e.sb.realtime_connections(), 3);
}
