//! Broadcast from the database: `realtime.send` as the real function behaves, delivery only to
//! the channels of the message's topic and privacy, private-channel authorization, dropped
//! broadcasts, counters.

use std::time::Duration;

use serde_json::json;

use super::T;
use crate::supabase::make_test_jwt;
use crate::supabase::testkit::{env, scaled_config, ws_open, WsClient};

const P1: &str = "realtime:sms-sender:p1";

fn send(e: &crate::supabase::testkit::Env, payload: &str, topic: &str, private: bool) {
    e.pg.client()
        .execute(
            "SELECT realtime.send($1::text::jsonb, 'queued', $2, $3)",
            &[&payload, &topic, &private],
        )
        .unwrap();
}

fn joined(e: &crate::supabase::testkit::Env, topic: &str, private: bool) -> WsClient {
    let mut c = ws_open(&e.sb);
    let r = c.join_config(topic, "1", scaled_config(None, private), None);
    assert_eq!(r["payload"]["status"], "ok", "{r}");
    c
}

#[test]
fn database_broadcasts_reach_only_their_topic_and_privacy() {
    let e = env();
    let mut private_p1 = joined(&e, P1, true);
    let mut public_p1 = joined(&e, P1, false);
    let mut private_p2 = joined(&e, "realtime:sms-sender:p2", true);

    send(&e, r#"{"id": "row-1"}"#, "sms-sender:p1", true);
    let f = private_p1.recv(T);
    let meta_id: String =
        e.pg.client()
            .query_one("SELECT id::text FROM realtime.messages", &[])
            .unwrap()
            .get(0);
    assert_eq!(
        f,
        json!({"topic": P1, "event": "broadcast", "ref": null, "payload": {
            "type": "broadcast", "event": "queued", "payload": {"id": "row-1"}, "meta": {"id": meta_id}}})
    );
    public_p1.expect_silence(Duration::from_millis(200));
    private_p2.expect_silence(Duration::from_millis(50));

    // A public message reaches the public channel only; a payload without `id` gets the
    // message's id (migration 20251103001201).
    send(&e, r#"{"n": 1}"#, "sms-sender:p1", false);
    let f = public_p1.recv(T);
    assert_eq!(f["payload"]["payload"]["id"], f["payload"]["meta"]["id"]);
    assert_eq!(f["payload"]["payload"]["n"], 1);
    private_p1.expect_silence(Duration::from_millis(200));

    // Nothing is delivered from a rolled-back transaction.
    {
        let mut c = e.pg.client();
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT realtime.send('{}'::jsonb, 'queued', 'sms-sender:p1', true)",
            &[],
        )
        .unwrap();
        tx.rollback().unwrap();
    }
    private_p1.expect_silence(Duration::from_millis(200));
    // realtime.send swallows errors with a WARNING (a NULL topic violates NOT NULL).
    e.pg.client()
        .execute(
            "SELECT realtime.send('{}'::jsonb, 'queued', NULL, true)",
            &[],
        )
        .unwrap();
    private_p1.expect_silence(Duration::from_millis(200));

    // Each delivered frame counts once per client.
    let c = e.sb.counters();
    assert_eq!(c.realtime_sent.get("broadcast"), Some(&2));
    assert_eq!(c.realtime_received.get("phx_join"), Some(&3));
}

#[test]
fn private_joins_need_the_service_role() {
    let e = env();
    let mut c = ws_open(&e.sb);
    let anon = make_test_jwt(&json!({"role": "anon", "exp": 4102444800u64}));
    let r = c.join_config(P1, "1", scaled_config(None, true), Some(&anon));
    assert_eq!(
        r["payload"],
        json!({"status": "error", "response": {"reason":
            "Unauthorized: You do not have permissions to read from this Channel topic: sms-sender:p1"}})
    );
    // The same topic as the service role (the connect-time key) is authorized.
    let r = c.join_config(P1, "2", scaled_config(None, true), None);
    assert_eq!(r["payload"]["status"], "ok");
    send(&e, r#"{"id": "x"}"#, "sms-sender:p1", true);
    assert_eq!(c.recv(T)["event"], "broadcast");
}

#[test]
fn dropped_broadcasts_reach_nobody() {
    let e = env();
    let mut a = joined(&e, P1, true);
    let mut b = joined(&e, P1, true);
    let ids = |c: &mut WsClient| c.recv(T)["payload"]["payload"]["id"].clone();

    e.sb.drop_next_broadcasts(1);
    send(&e, r#"{"id": "lost"}"#, "sms-sender:p1", true);
    send(&e, r#"{"id": "kept"}"#, "sms-sender:p1", true);
    assert_eq!(ids(&mut a), json!("kept"));
    assert_eq!(ids(&mut b), json!("kept"));

    e.sb.set_broadcast_drop_topic("sms-sender:p1", true);
    send(&e, r#"{"id": "lost"}"#, "sms-sender:p1", true);
    a.expect_silence(Duration::from_millis(200));
    e.sb.set_broadcast_drop_topic("sms-sender:p1", false);

    e.sb.set_broadcast_drop_probability(1.0);
    send(&e, r#"{"id": "lost"}"#, "sms-sender:p1", true);
    a.expect_silence(Duration::from_millis(200));
    e.sb.set_broadcast_drop_probability(0.0);
    send(&e, r#"{"id": "again"}"#, "sms-sender:p1", true);
    assert_eq!(ids(&mut a), json!("again"));
    assert_eq!(ids(&mut b), json!("again"));
    b.expect_silence(Duration::from_millis(50));
    assert_eq!(
        e.sb.counters().realtime_sent.get("broadcast").copied(),
        Some(4)
    );
}
