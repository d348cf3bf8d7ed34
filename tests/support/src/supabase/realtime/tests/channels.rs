//! Channels: leave and re-join, topic errors, private-only projects, subscribe modes and
//! join errors.

use std::time::Duration;

use serde_json::{json, Value};

use super::T;
use crate::supabase::testkit::{env, queued_binding, ws_open, WsEvent};
use crate::supabase::{make_test_jwt, SubscribeMode};

#[test]
fn leave_rejoin_and_topic_errors() {
    let e = env();
    let mut c = ws_open(&e.sb);
    assert_eq!(
        c.join("realtime:a", "1", queued_binding())["payload"]["status"],
        "ok"
    );
    assert_eq!(c.recv(T)["event"], "system");
    // Re-join: the new reply first, then phx_close carrying the OLD join_ref.
    let reply = c.join("realtime:a", "2", queued_binding());
    assert_eq!(
        (reply["event"].clone(), reply["ref"].clone()),
        (json!("phx_reply"), json!("2"))
    );
    assert_eq!(
        c.recv(T),
        json!({"topic": "realtime:a", "event": "phx_close", "payload": {}, "ref": "1"})
    );
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    assert!(e.sb.wait_subscribed(1, T));
    c.send(json!({"topic": "realtime:a", "event": "phx_leave", "payload": {}, "ref": "3", "join_ref": "2"}));
    assert_eq!(
        c.recv(T),
        json!({"topic": "realtime:a", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "3"})
    );
    assert_eq!(
        c.recv(T),
        json!({"topic": "realtime:a", "event": "phx_close", "payload": {}, "ref": "2"})
    );
    assert_eq!(e.sb.subscribed_channels(), 0);

    let r = c.join("other", "4", json!([]));
    assert_eq!(
        r["payload"],
        json!({"status": "error", "response": {"reason": "unmatched topic"}})
    );
    let r = c.join("realtime:", "5", json!([]));
    assert_eq!(
        r["payload"]["response"]["reason"],
        "TopicNameRequired: You must provide a topic name"
    );
    c.send(json!({"topic": "realtime:zzz", "event": "broadcast", "payload": {}, "ref": "6"}));
    assert_eq!(
        c.recv(T)["payload"]["response"]["reason"],
        "unmatched topic"
    );
    // Malformed frames (missing `ref`, not JSON) are dropped silently; the socket stays.
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}}));
    c.ws.send(tungstenite::Message::Text("nope".into()))
        .unwrap();
    c.expect_silence(Duration::from_millis(200));
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": null}));
    assert_eq!(c.recv(T)["ref"], Value::Null);
    // No postgres_changes: ok reply with an empty list and no system message.
    let r = c.join("realtime:empty", "8", json!([]));
    assert_eq!(r["payload"]["response"], json!({"postgres_changes": []}));
    c.expect_silence(Duration::from_millis(200));
    // access_token gets no reply, ever.
    c.send(json!({"topic": "realtime:empty", "event": "access_token", "payload": {"access_token": e.sb.service_key()}, "ref": "9"}));
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn private_only_projects_refuse_public_joins_and_authorize_service_role() {
    let e = env();
    e.sb.set_private_only(true);
    let mut c = ws_open(&e.sb);
    let join = |c: &mut crate::supabase::testkit::WsClient,
                r: &str,
                private: Value,
                token: Option<String>| {
        // One topic per join: a re-join would interleave the old channel's phx_close.
        let mut payload =
            json!({"config": {"postgres_changes": queued_binding(), "private": private}});
        if let Some(t) = token {
            payload["access_token"] = json!(t);
        }
        c.send(json!({"topic": format!("realtime:p{r}"), "event": "phx_join", "ref": r, "join_ref": r, "payload": payload}));
        c.recv(T)
    };
    let refused = join(&mut c, "1", json!(false), None);
    assert_eq!(
        refused["payload"],
        json!({"status": "error", "response": {"reason": "PrivateOnly: This project only allows private channels"}})
    );
    assert_eq!(
        join(&mut c, "2", json!(false), None)["payload"]["status"],
        "error"
    );
    let ok = join(&mut c, "3", json!(true), None);
    assert_eq!(ok["payload"]["status"], "ok", "{ok}");
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    assert_eq!(
        join(&mut c, "4", json!("true"), None)["payload"]["status"],
        "ok"
    );
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    // A private join as anon (no policy modelled) is unauthorized.
    let anon = make_test_jwt(&json!({"role": "anon", "exp": 4102444800u64}));
    let r = join(&mut c, "5", json!(true), Some(anon));
    assert_eq!(
        r["payload"]["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: p5"
    );
    // Turning the setting off is a tenant config change: 1012 for every socket (§6.5).
    e.sb.set_private_only(false);
    let code = loop {
        match c.event(T) {
            WsEvent::Text(_) => continue, // "Server requested disconnect"
            WsEvent::Close(code) => break code,
            other => panic!("expected close 1012, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1012));
    let mut c = ws_open(&e.sb);
    assert_eq!(
        c.join("realtime:q", "1", queued_binding())["payload"]["status"],
        "ok"
    );
}

#[test]
fn subscribe_modes_and_join_errors() {
    let e = env();
    let mut c = ws_open(&e.sb);
    e.sb.set_join_error(Some(
        "RealtimeRestarting: Realtime is restarting, please standby".into(),
    ));
    let r = c.join("realtime:x", "1", queued_binding());
    assert_eq!(
        r["payload"],
        json!({"status": "error", "response": {"reason": "RealtimeRestarting: Realtime is restarting, please standby"}})
    );
    e.sb.set_join_error(None);
    e.sb.set_subscribe_status(SubscribeMode::Never);
    assert_eq!(
        c.join("realtime:x", "2", queued_binding())["payload"]["status"],
        "ok"
    );
    c.expect_silence(Duration::from_millis(300));
    assert_eq!(e.sb.subscribed_channels(), 0);
    e.sb.set_subscribe_status(SubscribeMode::Error(
        "{:error, \"Too many database timeouts\"}".into(),
    ));
    assert_eq!(
        c.join("realtime:y", "3", queued_binding())["payload"]["status"],
        "ok"
    );
    let sys = c.recv(T);
    assert_eq!(
        (
            sys["payload"]["status"].clone(),
            sys["payload"]["message"].clone()
        ),
        (
            json!("error"),
            json!("{:error, \"Too many database timeouts\"}")
        )
    );
    e.sb.set_subscribe_status(SubscribeMode::Twice);
    assert_eq!(
        c.join("realtime:z", "4", queued_binding())["payload"]["status"],
        "ok"
    );
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    assert_eq!(e.sb.subscribed_channels(), 1);
}
