//! Presence: `presence_state` after a join, `presence_diff` on track, update, untrack, leave
//! and socket close; a vanished member leaves only after the idle timeout; faults and the
//! client rate limit; private and public members kept apart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::T;
use crate::supabase::testkit::{env, env_with, scaled_config, ws_open, WsClient, WsEvent};
use crate::supabase::{PresenceFault, SupabaseConfig};

const M: &str = "realtime:sms-sender:members";

fn member(e: &crate::supabase::testkit::Env, key: &str) -> (WsClient, Value) {
    let mut c = ws_open(&e.sb);
    let r = c.join_config(M, "1", scaled_config(Some(key), true), None);
    assert_eq!(r["payload"]["status"], "ok", "{r}");
    let state = c.recv(T);
    assert_eq!(state["event"], "presence_state", "{state}");
    assert_eq!(state["ref"], Value::Null);
    (c, state["payload"].clone())
}

fn track(c: &mut WsClient, reference: &str, payload: Value) {
    c.presence(M, reference, "track", payload);
    let r = c.recv(T);
    assert_eq!(
        (r["event"].clone(), r["ref"].clone(), r["payload"].clone()),
        (
            json!("phx_reply"),
            json!(reference),
            json!({"status": "ok", "response": {}})
        )
    );
}

fn diff(c: &mut WsClient) -> Value {
    let f = c.recv(T);
    assert_eq!(f["event"], "presence_diff", "{f}");
    f["payload"].clone()
}

/// The metas of `key` in a state or in a diff's joins/leaves.
fn metas(v: &Value, key: &str) -> Vec<Value> {
    v[key]["metas"].as_array().cloned().unwrap_or_default()
}

#[test]
fn state_after_join_and_diffs_on_track_update_untrack_leave_and_close() {
    let e = env();
    let (mut a, state) = member(&e, "a");
    assert_eq!(state, json!({}));
    track(&mut a, "2", json!({"started": 1}));
    let d = diff(&mut a);
    assert_eq!(d["leaves"], json!({}));
    let a_meta = metas(&d["joins"], "a");
    assert_eq!(a_meta.len(), 1);
    assert_eq!(a_meta[0]["started"], 1);
    let a_ref = a_meta[0]["phx_ref"].as_str().unwrap().to_string();
    assert_eq!(
        a_ref.len(),
        16,
        "Phoenix refs are 12 bytes of URL-safe base64"
    );

    // A later joiner gets the current members, then sees itself and others come.
    let (mut b, state) = member(&e, "b");
    assert_eq!(
        state,
        json!({"a": {"metas": [{"started": 1, "phx_ref": a_ref}]}})
    );
    track(&mut b, "2", json!({}));
    for c in [&mut a, &mut b] {
        let d = diff(c);
        assert_eq!(metas(&d["joins"], "b").len(), 1);
    }
    // The same payload again changes nothing; a new payload is an update.
    track(&mut a, "3", json!({"started": 1}));
    b.expect_silence(Duration::from_millis(150));
    track(&mut a, "4", json!({"started": 2}));
    for c in [&mut a, &mut b] {
        let d = diff(c);
        let joined = metas(&d["joins"], "a");
        assert_eq!(joined[0]["phx_ref_prev"], json!(a_ref));
        assert_eq!(joined[0]["started"], 2);
        assert_eq!(metas(&d["leaves"], "a")[0]["phx_ref"], json!(a_ref));
    }
    // untrack: a leaves.
    a.presence(M, "5", "untrack", json!(null));
    assert_eq!(a.recv(T)["payload"]["status"], "ok");
    for c in [&mut a, &mut b] {
        let d = diff(c);
        assert_eq!(metas(&d["leaves"], "a").len(), 1);
        assert_eq!(d["joins"], json!({}));
    }
    // phx_leave: b's member leaves, seen by a.
    b.send(json!({"topic": M, "event": "phx_leave", "payload": {}, "ref": "6", "join_ref": "1"}));
    assert_eq!(metas(&diff(&mut a)["leaves"], "b").len(), 1);

    // A socket that closes: its members leave.
    let (mut c, _) = member(&e, "c");
    track(&mut c, "2", json!({}));
    diff(&mut c);
    assert_eq!(metas(&diff(&mut a)["joins"], "c").len(), 1);
    c.ws.close(None).unwrap();
    let _ = c.event(Duration::from_millis(200));
    assert_eq!(metas(&diff(&mut a)["leaves"], "c").len(), 1);

    // Private and public members are kept apart; a public channel sees diffs without
    // enabling presence.
    let mut public = ws_open(&e.sb);
    let r = public.join_config(M, "1", scaled_config(None, false), None);
    assert_eq!(r["payload"]["status"], "ok");
    track(&mut a, "7", json!({"again": true}));
    diff(&mut a);
    public.expect_silence(Duration::from_millis(150));
    public.presence(M, "2", "track", json!({}));
    assert_eq!(public.recv(T)["payload"]["status"], "ok");
    let d = diff(&mut public);
    assert_eq!(d["joins"].as_object().unwrap().len(), 1);
    a.expect_silence(Duration::from_millis(150));

    let c = e.sb.counters();
    assert!(c.realtime_sent["presence_diff"] >= 10);
    assert_eq!(c.realtime_sent["presence_state"], 3);
    assert!(c.realtime_received["presence"] >= 6);
}

#[test]
fn a_vanished_member_leaves_only_after_the_idle_timeout() {
    let idle = Duration::from_millis(1500);
    let e = env_with(SupabaseConfig {
        idle_timeout: idle,
        ..Default::default()
    });
    let (mut watcher, _) = member(&e, "watcher");
    let (mut gone, _) = member(&e, "gone");
    track(&mut gone, "2", json!({}));
    diff(&mut gone);
    diff(&mut watcher);
    assert_eq!(e.sb.realtime_vanish_presence_key("gone"), 1);
    let vanished_at = Instant::now();
    assert!(e.sb.realtime_sockets().iter().any(|s| s.vanished));
    // The vanished client's heartbeat goes unanswered, and even its close is lost.
    gone.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"}));
    gone.expect_silence(Duration::from_millis(200));
    drop(gone);
    // The watcher keeps the connection alive meanwhile and sees nothing for a while.
    let mut left = None;
    while vanished_at.elapsed() < idle * 3 {
        watcher.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "h"}));
        match watcher.event(Duration::from_millis(100)) {
            WsEvent::Text(f) if f["event"] == "presence_diff" => {
                left = Some((vanished_at.elapsed(), f["payload"].clone()));
                break;
            }
            WsEvent::Text(_) | WsEvent::Timeout => {}
            other => panic!("watcher lost: {other:?}"),
        }
    }
    let (after, d) = left.expect("the vanished member leaves eventually");
    assert!(
        after >= idle - Duration::from_millis(300),
        "left after {after:?}"
    );
    assert_eq!(metas(&d["leaves"], "gone").len(), 1);
}

#[test]
fn presence_faults_and_client_rate_limit() {
    let e = env();
    // Ignore: no presence_state, no reply, no diff.
    e.sb.set_presence_fault(Some(PresenceFault::Ignore));
    let mut a = ws_open(&e.sb);
    let r = a.join_config(M, "1", scaled_config(Some("a"), true), None);
    assert_eq!(r["payload"]["status"], "ok");
    a.presence(M, "2", "track", json!({}));
    a.expect_silence(Duration::from_millis(200));
    // TrackError: track answered error {}.
    e.sb.set_presence_fault(Some(PresenceFault::TrackError));
    a.presence(M, "3", "track", json!({}));
    assert_eq!(
        a.recv(T)["payload"],
        json!({"status": "error", "response": {}})
    );
    // RateLimited: a presence join is shut down right after its reply.
    e.sb.set_presence_fault(Some(PresenceFault::RateLimited));
    let mut b = ws_open(&e.sb);
    let r = b.join_config(M, "1", scaled_config(Some("b"), true), None);
    assert_eq!(r["payload"]["status"], "ok");
    assert_eq!(
        b.recv(T),
        json!({"topic": M, "event": "system", "ref": null, "payload": {"channel": "sms-sender:members",
               "extension": "system", "status": "error", "message": "Too many presence messages per second"}})
    );
    assert_eq!(
        b.recv(T),
        json!({"topic": M, "event": "phx_close", "ref": "1", "payload": {}})
    );
    e.sb.set_presence_fault(None);

    // The client rate limit: the 6th presence event within 30 s ends the channel.
    let (mut c, _) = member(&e, "c");
    track(&mut c, "2", json!({"n": 1}));
    diff(&mut c);
    for (i, n) in (3..7).enumerate() {
        track(&mut c, &n.to_string(), json!({"n": i + 2}));
        diff(&mut c);
    }
    c.presence(M, "9", "track", json!({"n": 9}));
    let sys = c.recv(T);
    assert_eq!(
        sys["payload"]["message"],
        "Client presence rate limit exceeded"
    );
    assert_eq!(c.recv(T)["event"], "phx_close");
    // Its member left with the channel.
    assert!(e
        .sb
        .realtime_sockets()
        .iter()
        .all(|s| !s.presence_keys.contains(&"c".to_string())));
}
