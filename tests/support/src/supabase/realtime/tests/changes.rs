//! `postgres_changes`: joins that go live, event shape and filters, bad bindings, the feed
//! across a PostgreSQL restart, large rows and V2 sockets.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::T;
use crate::supabase::testkit::{
    env, env_with, insert_message, queued_binding, seed, ws_connect, ws_open,
};
use crate::supabase::SupabaseConfig;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn join_subscribe_and_one_update_event_per_queued_insert() {
    let e = env_with(SupabaseConfig {
        subscribe_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let s = seed(&e.pg);
    let mut c = ws_open(&e.sb);
    let reply = c.join("realtime:sms-sender", "1", queued_binding());
    assert_eq!(
        keys(&reply),
        ["event", "payload", "ref", "topic"],
        "V1 frames never carry join_ref"
    );
    assert_eq!(reply["event"], "phx_reply");
    assert_eq!(reply["ref"], "1");
    assert_eq!(reply["payload"]["status"], "ok");
    let item = &reply["payload"]["response"]["postgres_changes"][0];
    let id = item["id"].as_u64().expect("integer id");
    assert!(id < 134_217_728);
    let mut without_id = item.clone();
    without_id.as_object_mut().unwrap().remove("id");
    assert_eq!(without_id, queued_binding()[0], "the item is echoed back");
    assert_eq!(e.sb.realtime_joins(), 1);

    // Committed before "Subscribed to PostgreSQL": never delivered (no replay).
    insert_message(&e.pg, &s, "too early", "outbound", Some("pending"));
    let system = c.recv(T);
    assert_eq!(
        system,
        json!({"topic": "realtime:sms-sender", "event": "system", "ref": null,
               "payload": {"channel": "sms-sender", "extension": "postgres_changes", "status": "ok",
                           "message": "Subscribed to PostgreSQL"}})
    );
    assert!(e.sb.wait_subscribed(1, T));
    c.expect_silence(Duration::from_millis(300));

    let t = Instant::now();
    let msg = insert_message(&e.pg, &s, "hello", "outbound", Some("pending"));
    let ev = c.recv(T);
    eprintln!("insert → postgres_changes in {:?}", t.elapsed());
    assert_eq!(keys(&ev), ["event", "payload", "ref", "topic"]);
    assert_eq!(
        (ev["event"].clone(), ev["ref"].clone()),
        (json!("postgres_changes"), Value::Null)
    );
    assert_eq!(ev["payload"]["ids"], json!([id]));
    let data = &ev["payload"]["data"];
    assert_eq!(
        keys(data),
        [
            "columns",
            "commit_timestamp",
            "errors",
            "old_record",
            "record",
            "schema",
            "table",
            "type"
        ]
    );
    assert_eq!(
        (
            data["schema"].as_str(),
            data["table"].as_str(),
            data["type"].as_str()
        ),
        (Some("public"), Some("messages"), Some("UPDATE"))
    );
    assert_eq!(data["errors"], Value::Null);
    assert_eq!(data["record"]["id"], json!(msg));
    assert_eq!(data["record"]["status"], "queued_for_send");
    assert_eq!(data["record"]["content"], "hello");
    assert_eq!(
        data["old_record"],
        json!({"id": msg}),
        "old_record is the primary key only"
    );
    let created = data["record"]["created_at"].as_str().unwrap();
    assert!(
        created.ends_with("+00:00") && created.contains('T'),
        "{created}"
    );
    let ts = data["commit_timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == ".",
        "{ts}"
    );
    let columns = data["columns"].as_array().unwrap();
    assert_eq!(columns[0], json!({"name": "id", "type": "uuid"}));
    assert_eq!(columns[3], json!({"name": "role", "type": "varchar"}));
    assert_eq!(columns.len(), 11);
    // Exactly one: the INSERT does not match an UPDATE binding, nor does the claim below.
    c.expect_silence(Duration::from_millis(300));
    e.pg.client()
        .execute(
            "UPDATE messages SET status = 'sending' WHERE id = $1::text::uuid",
            &[&msg],
        )
        .unwrap();
    c.expect_silence(Duration::from_millis(300));

    // Heartbeats are answered with the same ref.
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "7"}));
    assert_eq!(
        c.recv(T),
        json!({"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "7"})
    );
    assert_eq!(e.sb.frames_received().last().unwrap()["event"], "heartbeat");
}

#[test]
fn bad_bindings_join_ok_then_system_error_and_no_events() {
    let e = env();
    let s = seed(&e.pg);
    let mut c = ws_open(&e.sb);
    let cases = [
        ("status=foo.bar", "messages", "Error parsing `filter` params: [\"foo\", \"bar\"]"),
        ("nope=eq.x", "messages", "invalid column for filter nope"),
        ("id=eq.abc", "messages", "invalid input syntax for type uuid: \\\"abc\\\""),
        ("status=eq.queued_for_send", "nope", "Unable to subscribe to changes with given parameters. Please check Realtime is enabled"),
    ];
    for (i, (filter, table, text)) in cases.iter().enumerate() {
        let topic = format!("realtime:bad{i}");
        let r = c.join(
            &topic,
            &i.to_string(),
            json!([{"event": "*", "schema": "public", "table": table, "filter": filter}]),
        );
        assert_eq!(r["payload"]["status"], "ok", "{r}");
        let sys = c.recv(T);
        assert_eq!(sys["event"], "system");
        assert_eq!(sys["payload"]["status"], "error");
        let message = sys["payload"]["message"].as_str().unwrap();
        assert!(message.contains(&text.replace("\\\"", "\"")), "{message}");
    }
    assert_eq!(e.sb.subscribed_channels(), 0);
    insert_message(&e.pg, &s, "x", "outbound", Some("pending"));
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn feed_survives_a_postgres_restart() {
    let e = env();
    let s = seed(&e.pg);
    let mut c = ws_open(&e.sb);
    c.join(
        "realtime:r",
        "1",
        json!([{"event": "*", "schema": "public", "table": "messages"}]),
    );
    assert_eq!(c.recv(T)["payload"]["message"], "Subscribed to PostgreSQL");
    e.pg.restart();
    // Like a CDC restart: a fresh "Subscribed to PostgreSQL" once the feed is back.
    let again = c.recv(Duration::from_secs(10));
    assert_eq!(again["payload"]["message"], "Subscribed to PostgreSQL");
    insert_message(&e.pg, &s, "after restart", "outbound", Some("draft"));
    let ev = c.recv(T);
    let data = &ev["payload"]["data"];
    assert_eq!(data["type"], "INSERT");
    assert!(
        data.get("old_record").is_none(),
        "INSERT frames have no old_record key"
    );
    assert_eq!(data["record"]["content"], "after restart");
    e.pg.client().execute("DELETE FROM messages", &[]).unwrap();
    let ev = c.recv(T);
    let data = &ev["payload"]["data"];
    assert_eq!(data["type"], "DELETE");
    assert!(
        data.get("record").is_none(),
        "DELETE frames have no record key"
    );
    assert!(data["old_record"]["id"].is_string());
}

#[test]
fn large_rows_and_v2_sockets() {
    let e = env();
    let s = seed(&e.pg);
    let key = e.sb.service_key();
    let mut c = ws_connect(&e.sb, &format!("apikey={key}&vsn=2.0.0")).unwrap();
    c.send(json!(["1", "1", "realtime:v2", "phx_join",
                  {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "messages"}]}}]));
    let reply = c.recv(T);
    assert_eq!(reply[0], "1");
    assert_eq!(reply[3], "phx_reply");
    assert_eq!(reply[4]["status"], "ok");
    let sys = c.recv(T);
    assert_eq!(
        (sys[0].clone(), sys[1].clone(), sys[3].clone()),
        (json!("1"), Value::Null, json!("system"))
    );
    // Over NOTIFY's 8000-byte limit: the double re-reads the row.
    let big = "x".repeat(20_000);
    insert_message(&e.pg, &s, &big, "outbound", Some("draft"));
    let ev = c.recv(T);
    assert_eq!(
        (ev[0].clone(), ev[3].clone()),
        (Value::Null, json!("postgres_changes"))
    );
    assert_eq!(
        ev[4]["data"]["record"]["content"].as_str().map(str::len),
        Some(20_000)
    );
    // Oversized switch: long fields removed, 413 error.
    e.sb.set_oversized_events(true);
    insert_message(&e.pg, &s, &big, "outbound", Some("draft"));
    let data = c.recv(T)[4]["data"].clone();
    assert_eq!(data["errors"], json!(["Error 413: Payload Too Large"]));
    assert!(data["record"].get("content").is_none());
    assert!(data["record"]["id"].is_string());
    // V1 object frames on a V2 socket are dropped silently.
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"}));
    c.expect_silence(Duration::from_millis(200));
}
