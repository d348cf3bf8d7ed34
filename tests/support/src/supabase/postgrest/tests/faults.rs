//! Injected REST faults, rules, latency and a database outage.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::supabase::testkit::{env, http, insert_message, rest, seed};
use crate::supabase::RestFault;

#[test]
fn faults_latency_and_database_outage() {
    let e = env();
    let s = seed(&e.pg);
    let id = insert_message(&e.pg, &s, "x", "outbound", Some("pending"));
    e.sb.rest_fail_next(1, RestFault::db_unavailable());
    let r = rest(&e.sb, "GET", "messages", &[], None);
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (503, json!("PGRST001"))
    );
    assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 200);

    e.sb.rest_fail_next(1, RestFault::NonJson { status: 502 });
    let r = rest(&e.sb, "GET", "messages", &[], None);
    assert_eq!(
        (r.status, r.header("Content-Type")),
        (502, Some("text/html"))
    );

    e.sb.rest_fail_next(1, RestFault::Hangup);
    let key = e.sb.service_key();
    let auth = format!("Bearer {key}");
    let patch = format!("/rest/v1/messages?id=eq.{id}");
    let headers = [("apikey", key.as_str()), ("Authorization", auth.as_str())];
    assert!(http(
        &e.sb,
        "PATCH",
        &patch,
        &headers,
        Some(r#"{"content":"hung"}"#)
    )
    .is_none());
    e.sb.rest_fail_next(1, RestFault::HangupAfterApply);
    assert!(http(
        &e.sb,
        "PATCH",
        &patch,
        &headers,
        Some(r#"{"content":"applied"}"#)
    )
    .is_none());
    let content: String =
        e.pg.client()
            .query_one("SELECT content FROM messages", &[])
            .unwrap()
            .get(0);
    assert_eq!(
        content, "applied",
        "Hangup did not apply, HangupAfterApply did"
    );
    let records = e.sb.rest_requests();
    let last = records.last().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("PATCH", None));
    assert_eq!(last.body, r#"{"content":"applied"}"#);
    assert_eq!(records[0].status, Some(503));

    e.sb.set_rest_outage(Some(RestFault::Status {
        status: 504,
        code: "PGRST003".into(),
        message: "Timed out".into(),
    }));
    assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 504);
    assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 504);
    e.sb.set_rest_outage(None);

    e.sb.set_rest_latency(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    e.sb.set_rest_latency(Duration::ZERO);

    // PostgreSQL down: 503 like PostgREST; back up: served again on fresh connections.
    e.pg.stop();
    let r = rest(&e.sb, "GET", "messages", &[], None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        matches!(r.json()["code"].as_str(), Some("PGRST000" | "PGRST001")),
        "{}",
        r.body
    );
    e.pg.start_again();
    let r = rest(&e.sb, "GET", "messages?select=content", &[], None);
    assert_eq!((r.status, r.json()), (200, json!([{"content": "applied"}])));
}
