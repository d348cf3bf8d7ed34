//! RPC: functions called at `/rest/v1/rpc/<fn>` with named arguments, typed by the
//! function's parameters; answers shaped by the return type; PGRST202; the PostgreSQL error
//! map; faults and counters applying to RPC like to tables.

use std::time::Duration;

use serde_json::json;

use crate::supabase::testkit::{env, http, insert_message, rest, seed};
use crate::supabase::{RestFault, RestRule};

const FUNCTIONS: &str = r#"
CREATE FUNCTION sms_sender_scaled_mode() RETURNS json LANGUAGE sql STABLE
  AS $$ SELECT json_build_object('partitions', 4) $$;
CREATE FUNCTION typed(ids int[], stamp timestamptz, n int DEFAULT 7) RETURNS json LANGUAGE sql
  AS $$ SELECT json_build_object('sum', (SELECT sum(x) FROM unnest(ids) x), 'stamp', stamp, 'n', n) $$;
CREATE FUNCTION queued(max_rows int) RETURNS SETOF messages LANGUAGE sql STABLE
  AS $$ SELECT * FROM messages WHERE status = 'queued_for_send' ORDER BY created_at LIMIT max_rows $$;
CREATE FUNCTION claim(max_rows int, stamp timestamptz)
  RETURNS TABLE(id uuid, content text) LANGUAGE sql
  AS $$ UPDATE messages m SET status = 'sending', sent_at = stamp
        WHERE m.id IN (SELECT q.id FROM messages q WHERE q.status = 'queued_for_send'
                       ORDER BY q.created_at LIMIT max_rows FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.content $$;
CREATE FUNCTION touch(x int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM x; END $$;
CREATE FUNCTION refuse() RETURNS int LANGUAGE plpgsql
  AS $$ BEGIN RAISE EXCEPTION 'no way' USING DETAIL = 'the detail', HINT = 'the hint'; END $$;
"#;

#[test]
fn rpc_calls_typed_functions_and_shapes_answers() {
    let e = env();
    e.pg.execute_batch(FUNCTIONS);
    let s = seed(&e.pg);
    let a = insert_message(&e.pg, &s, "first", "outbound", Some("pending"));
    let b = insert_message(&e.pg, &s, "second", "outbound", Some("pending"));

    // A function returning json answers that JSON; `{}` and an empty body both mean no args.
    for body in [Some("{}"), None] {
        let r = rest(&e.sb, "POST", "rpc/sms_sender_scaled_mode", &[], body);
        assert_eq!((r.status, r.json()), (200, json!({"partitions": 4})));
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
    }
    // Stable functions may be called with GET.
    let r = rest(&e.sb, "GET", "rpc/sms_sender_scaled_mode", &[], None);
    assert_eq!((r.status, r.json()), (200, json!({"partitions": 4})));

    // Named arguments typed by the parameters: a JSON array into int[], a string into
    // timestamptz (rendered in UTC), a default for the omitted one.
    let r = rest(
        &e.sb,
        "POST",
        "rpc/typed",
        &[],
        Some(r#"{"ids":[1,2,3],"stamp":"2026-08-21T12:00:00+02:00"}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"sum": 6, "stamp": "2026-08-21T10:00:00+00:00", "n": 7})
        )
    );
    // A value that does not cast is PostgreSQL's 22P02, answered 400.
    let r = rest(
        &e.sb,
        "POST",
        "rpc/typed",
        &[],
        Some(r#"{"ids":[1],"stamp":"2026-08-21T10:00:00Z","n":"abc"}"#),
    );
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("22P02")),
        "{}",
        r.body
    );
    // GET arguments are text cast to the parameter type; filters apply to a set's rows.
    let r = rest(
        &e.sb,
        "GET",
        "rpc/typed?ids=%7B4,5%7D&stamp=2026-08-21T10:00:00Z&n=1",
        &[],
        None,
    );
    assert_eq!(r.json()["sum"], 9, "{}", r.body);

    // A set of rows answers an array; select/filter/order/limit apply to the result.
    let r = rest(
        &e.sb,
        "GET",
        "rpc/queued?max_rows=10&select=content&order=content.desc",
        &[],
        None,
    );
    assert_eq!(
        r.json(),
        json!([{"content": "second"}, {"content": "first"}])
    );
    let r = rest(
        &e.sb,
        "GET",
        &format!("rpc/queued?max_rows=10&select=id&id=eq.{b}"),
        &[("Prefer", "count=exact")],
        None,
    );
    assert_eq!(r.json(), json!([{"id": b}]));
    assert_eq!(r.header("Content-Range"), Some("0-0/1"));
    // A volatile function called with GET runs read-only: 25006 answered 405, nothing changed.
    let r = rest(
        &e.sb,
        "GET",
        "rpc/claim?max_rows=1&stamp=2026-08-21T10:00:00Z",
        &[],
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (405, json!("25006")),
        "{}",
        r.body
    );
    // Single object wanted, two rows: 406 PGRST116, and the claim is rolled back.
    let queued = || -> i64 {
        e.pg.client()
            .query_one(
                "SELECT count(*) FROM messages WHERE status = 'queued_for_send'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let r = rest(
        &e.sb,
        "POST",
        "rpc/claim",
        &[("Accept", "application/vnd.pgrst.object+json")],
        Some(r#"{"max_rows":5,"stamp":"2026-08-21T10:00:00Z"}"#),
    );
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (406, json!("PGRST116"))
    );
    assert_eq!(queued(), 2);
    // POST claims: RETURNS TABLE answers objects of its columns.
    let r = rest(
        &e.sb,
        "POST",
        "rpc/claim",
        &[("Prefer", "return=representation")],
        Some(r#"{"max_rows":1,"stamp":"2026-08-21T10:00:00Z"}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!([{"id": a, "content": "first"}]))
    );
    assert_eq!(r.header("Preference-Applied"), None);
    let sent_at: String =
        e.pg.client()
            .query_one(
                "SELECT sent_at::text FROM messages WHERE id = $1::text::uuid",
                &[&a],
            )
            .unwrap()
            .get(0);
    assert_eq!(sent_at, "2026-08-21 10:00:00+00");
    // Exactly one row left: the single-object request answers it bare.
    let r = rest(
        &e.sb,
        "POST",
        "rpc/claim",
        &[("Accept", "application/vnd.pgrst.object+json")],
        Some(r#"{"max_rows":5,"stamp":"2026-08-21T10:00:00Z"}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"id": b, "content": "second"}))
    );
    assert_eq!(queued(), 0);
    // void: 204 without a body.
    let r = rest(&e.sb, "POST", "rpc/touch", &[], Some(r#"{"x":1}"#));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
}

#[test]
fn rpc_errors_match_postgrest() {
    let e = env();
    e.pg.execute_batch(FUNCTIONS);
    // Unknown function: 404 PGRST202 with PostgREST's texts (keys sorted).
    let r = rest(&e.sb, "POST", "rpc/nope", &[], Some(r#"{"b":1,"a":2}"#));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"code": "PGRST202", "details": "Searched for the function public.nope with parameters a, b or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
               "hint": null, "message": "Could not find the function public.nope(a, b) in the schema cache"})
    );
    assert_eq!(r.header("Proxy-Status"), Some("PostgREST; error=PGRST202"));
    let r = rest(&e.sb, "POST", "rpc/nope", &[], Some("{}"));
    assert_eq!(
        r.json()["message"],
        "Could not find the function public.nope without parameters in the schema cache"
    );
    // Known name, wrong arguments: still 404, with a hint naming the parameters.
    let r = rest(&e.sb, "POST", "rpc/typed", &[], Some(r#"{"ids":[1]}"#));
    assert_eq!(
        (r.status, r.json()["hint"].clone()),
        (
            404,
            json!("Perhaps you meant to call the function public.typed(ids, n, stamp)")
        )
    );
    // RAISE EXCEPTION: P0001 → 400 with message, details and hint.
    let r = rest(&e.sb, "POST", "rpc/refuse", &[], Some("{}"));
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"code": "P0001", "details": "the detail", "hint": "the hint", "message": "no way"})
        )
    );
    // Invalid JSON body: PGRST102; another method: PGRST101 405.
    let r = rest(&e.sb, "POST", "rpc/refuse", &[], Some("{nope"));
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("PGRST102"))
    );
    let r = rest(&e.sb, "PATCH", "rpc/refuse", &[], Some("{}"));
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (405, json!("Cannot use the PATCH method on RPC"))
    );
    // Keys are checked first, as for tables.
    let r = http(
        &e.sb,
        "POST",
        "/rest/v1/rpc/sms_sender_scaled_mode",
        &[],
        Some("{}"),
    )
    .unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn rpc_faults_and_counters() {
    let e = env();
    e.pg.execute_batch(FUNCTIONS);
    e.sb.rest_fail_next(1, RestFault::db_unavailable());
    let r = rest(&e.sb, "POST", "rpc/sms_sender_scaled_mode", &[], Some("{}"));
    assert_eq!(r.status, 503);
    // A rule for one function leaves other functions and tables alone.
    e.sb.add_rpc_rule(
        "typed",
        RestRule::body("POST", "ids")
            .delay(Duration::from_millis(50))
            .fault(RestFault::Hangup),
    );
    assert_eq!(
        rest(&e.sb, "POST", "rpc/sms_sender_scaled_mode", &[], Some("{}")).status,
        200
    );
    let key = e.sb.service_key();
    let bearer = format!("Bearer {key}");
    let headers = [("apikey", key.as_str()), ("Authorization", bearer.as_str())];
    let body = r#"{"ids":[1],"stamp":"2026-08-21T10:00:00Z"}"#;
    assert!(http(&e.sb, "POST", "/rest/v1/rpc/typed", &headers, Some(body)).is_none());
    assert_eq!(
        rest(&e.sb, "POST", "rpc/typed", &[], Some(body)).status,
        200
    );
    rest(&e.sb, "GET", "messages?select=id", &[], None);

    let c = e.sb.counters();
    assert_eq!(c.rpc_calls("sms_sender_scaled_mode"), 2);
    assert_eq!(c.rpc_calls("typed"), 2);
    assert_eq!(c.table_requests("GET", "messages"), 1);
    e.sb.reset_counters();
    assert_eq!(e.sb.counters().rpc_calls("typed"), 0);
}
