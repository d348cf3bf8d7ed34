//! The double against the scaled-mode migration (`sql/migrations/002_scaled_mode.sql`,
//! contract in `docs/scaled-mode.md`): detection over RPC, the private wake-up broadcast on the
//! row's partition topic, and the batch claim over RPC.

use std::time::Duration;

use serde_json::json;

use super::T;
use crate::supabase::testkit::{env, insert_message, rest, scaled_config, seed, ws_open};

fn migration() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/migrations/002_scaled_mode.sql"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn migration_wakes_the_partition_and_claims_over_rpc() {
    let e = env();
    // Without the migration: PGRST202, the default mode.
    let r = rest(&e.sb, "POST", "rpc/sms_sender_scaled_mode", &[], Some("{}"));
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("PGRST202"))
    );
    e.pg.execute_batch(&migration());
    let r = rest(&e.sb, "POST", "rpc/sms_sender_scaled_mode", &[], Some("{}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let partitions = r.json()["partitions"].as_u64().expect("partitions");

    let mut c = ws_open(&e.sb);
    for k in 0..partitions {
        let topic = format!("realtime:sms-sender:p{k}");
        let reply = c.join_config(&topic, &k.to_string(), scaled_config(None, true), None);
        assert_eq!(reply["payload"]["status"], "ok", "{reply}");
    }
    let s = seed(&e.pg);
    let id = insert_message(&e.pg, &s, "hello", "outbound", Some("pending"));
    let k: i32 =
        e.pg.client()
            .query_one("SELECT public.sms_sender_partition($1::text::uuid)", &[&id])
            .unwrap()
            .get(0);
    let f = c.recv(T);
    assert_eq!(f["topic"], format!("realtime:sms-sender:p{k}"));
    assert_eq!(f["event"], "broadcast");
    assert_eq!(f["payload"]["event"], "queued");
    assert_eq!(f["payload"]["payload"], json!({"id": id}));
    assert!(f["payload"]["meta"]["id"].is_string());
    c.expect_silence(Duration::from_millis(200));

    let other = (k + 1) % partitions as i32;
    let body = |parts: &[i32]| {
        json!({"partitions": parts, "max_rows": 10, "stamp": "2026-08-21T10:00:00Z"}).to_string()
    };
    let r = rest(
        &e.sb,
        "POST",
        "rpc/sms_sender_claim",
        &[],
        Some(&body(&[other])),
    );
    assert_eq!((r.status, r.json()), (200, json!([])), "{}", r.body);
    let r = rest(
        &e.sb,
        "POST",
        "rpc/sms_sender_claim",
        &[],
        Some(&body(&[k])),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!([{"id": id, "content": "hello", "twilio_message_sid": null,
                   "conversation": {"phone_number": "+15551234567"}}])
        ),
        "{}",
        r.body
    );
    // A bad bound is the function's own error, rendered like PostgREST (22023 → 400).
    let r = rest(
        &e.sb,
        "POST",
        "rpc/sms_sender_claim",
        &[],
        Some(r#"{"partitions":[],"max_rows":0,"stamp":"2026-08-21T10:00:00Z"}"#),
    );
    assert_eq!((r.status, r.json()["code"].clone()), (400, json!("22023")));
    assert_eq!(e.sb.counters().rpc_calls("sms_sender_claim"), 3);
}
