//! Writes: the claim race, single-object requests and their rollback, POST.

use std::sync::{Arc, Barrier};

use serde_json::{json, Value};

use crate::supabase::testkit::{env, insert_message, rest, seed};

#[test]
fn claim_race_has_exactly_one_winner() {
    let e = Arc::new(env());
    let s = seed(&e.pg);
    for round in 0..4 {
        let id = insert_message(
            &e.pg,
            &s,
            &format!("race {round}"),
            "outbound",
            Some("pending"),
        );
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (e, barrier, id) = (e.clone(), barrier.clone(), id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = rest(
                        &e.sb,
                        "PATCH",
                        &format!("messages?id=eq.{id}&status=eq.queued_for_send&select=id,status"),
                        &[("Prefer", "return=representation")],
                        Some(r#"{"status":"sending"}"#),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert_eq!(
                        r.header("Preference-Applied"),
                        Some("return=representation")
                    );
                    r.json()
                })
            })
            .collect();
        let mut results: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        results.sort_by_key(|v| v.as_array().unwrap().len());
        assert_eq!(results[0], json!([]));
        assert_eq!(results[1], json!([{"id": id, "status": "sending"}]));
    }
}

#[test]
fn single_object_requests_406_and_roll_back() {
    let e = env();
    let s = seed(&e.pg);
    let a = insert_message(&e.pg, &s, "a", "outbound", Some("pending"));
    insert_message(&e.pg, &s, "b", "outbound", Some("pending"));
    let object = ("Accept", "application/vnd.pgrst.object+json");
    let r = rest(
        &e.sb,
        "PATCH",
        "messages?status=eq.queued_for_send",
        &[object, ("Prefer", "return=representation")],
        Some(r#"{"status":"sending"}"#),
    );
    assert_eq!(r.status, 406);
    assert_eq!(
        r.json(),
        json!({"code":"PGRST116","details":"The result contains 2 rows","hint":null,"message":"Cannot coerce the result to a single JSON object"})
    );
    let n: i64 =
        e.pg.client()
            .query_one(
                "SELECT count(*) FROM messages WHERE status = 'sending'",
                &[],
            )
            .unwrap()
            .get(0);
    assert_eq!(n, 0, "the 406 rolled the update back");
    let r = rest(&e.sb, "GET", "messages?status=eq.nope", &[object], None);
    assert_eq!(
        (r.status, r.json()["details"].clone()),
        (406, json!("The result contains 0 rows"))
    );
    let r = rest(
        &e.sb,
        "PATCH",
        &format!("messages?id=eq.{a}&select=status"),
        &[object, ("Prefer", "return=representation")],
        Some(r#"{"status":"sending"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.pgrst.object+json; charset=utf-8")
    );
    assert_eq!(r.json(), json!({"status": "sending"}));
    // Without return=representation: 204 and no body.
    let r = rest(
        &e.sb,
        "PATCH",
        &format!("messages?id=eq.{a}"),
        &[],
        Some(r#"{"status":"sent","sent_at":"2026-08-21T10:15:31Z"}"#),
    );
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let sent_at: String =
        e.pg.client()
            .query_one(
                "SELECT to_json(sent_at)::text FROM messages WHERE id = $1::text::uuid",
                &[&a],
            )
            .unwrap()
            .get(0);
    assert_eq!(sent_at, "\"2026-08-21T10:15:31+00:00\"");
}

#[test]
fn post_inserts_and_returns_rows() {
    let e = env();
    let s = seed(&e.pg);
    let body = json!({"conversation_id": s.conversation, "user_id": s.user, "role": "assistant",
                      "content": "hello", "direction": "outbound", "status": "draft"});
    let r = rest(
        &e.sb,
        "POST",
        "messages?select=content,status",
        &[("Prefer", "return=representation")],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json(), json!([{"content": "hello", "status": "draft"}]));
    let r = rest(
        &e.sb,
        "POST",
        "messages",
        &[],
        Some(&json!([body, body]).to_string()),
    );
    assert_eq!((r.status, r.body.as_str()), (201, ""));
    let n: i64 =
        e.pg.client()
            .query_one("SELECT count(*) FROM messages", &[])
            .unwrap()
            .get(0);
    assert_eq!(n, 3);
    let r = rest(
        &e.sb,
        "DELETE",
        "messages?content=eq.hello&select=content",
        &[("Prefer", "return=representation")],
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 3);
}
