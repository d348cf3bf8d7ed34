//! Reads: filters, `select` with embedding, `order`, `limit`/`offset`, `Content-Range`.

use serde_json::{json, Value};

use crate::supabase::testkit::{env, insert_message, rest, seed};

#[test]
fn get_filters_order_limit_and_embedding() {
    let e = env();
    let s = seed(&e.pg);
    let a = insert_message(&e.pg, &s, "first", "outbound", Some("sent"));
    let b = insert_message(&e.pg, &s, "second", "outbound", Some("failed"));
    let c = insert_message(&e.pg, &s, "third", "inbound", None);
    let mut db = e.pg.client();
    for (id, secs) in [(&a, 1), (&b, 2), (&c, 3)] {
        db.execute(
            "UPDATE messages SET created_at = '2026-08-21T10:15:00.120+00'::timestamptz + make_interval(secs => $2::int) WHERE id = $1::text::uuid",
            &[id, &secs],
        )
        .unwrap();
    }
    db.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, conversation_id uuid REFERENCES conversations);
         INSERT INTO notes VALUES (1, NULL);",
    )
    .unwrap();

    let r = rest(
        &e.sb,
        "GET",
        "messages?select=id,content,created_at,conversation:conversations(phone_number)&direction=eq.outbound&order=created_at.desc&limit=1&offset=1",
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("Content-Range"), Some("1-1/*"));
    assert_eq!(
        r.json(),
        json!([{"id": a, "content": "first", "created_at": "2026-08-21T10:15:01.12+00:00",
                "conversation": {"phone_number": "+15551234567"}}])
    );
    // Key order follows `select`, as PostgREST renders it.
    assert!(r.body.starts_with("[{\"id\""), "{}", r.body);

    let r = rest(
        &e.sb,
        "GET",
        "messages?select=content&status=in.(sent,%22failed%22)&order=content.asc",
        &[],
        None,
    );
    assert_eq!(
        r.json(),
        json!([{"content": "first"}, {"content": "second"}])
    );
    let r = rest(
        &e.sb,
        "GET",
        "messages?select=content&status=is.null",
        &[],
        None,
    );
    assert_eq!(r.json(), json!([{"content": "third"}]));
    let r = rest(
        &e.sb,
        "GET",
        "messages?select=content&status=not.eq.sent&direction=eq.outbound",
        &[],
        None,
    );
    assert_eq!(r.json(), json!([{"content": "second"}]));
    let r = rest(
        &e.sb,
        "GET",
        "messages?select=content&created_at=gt.2026-08-21T10:15:02.5Z",
        &[],
        None,
    );
    assert_eq!(r.json(), json!([{"content": "third"}]));
    let r = rest(
        &e.sb,
        "GET",
        &format!("messages?id=eq.{c}&select=*"),
        &[],
        None,
    );
    let row = &r.json()[0];
    assert_eq!(row.as_object().unwrap().len(), 11, "{row}");
    assert_eq!(row["twilio_message_sid"], Value::Null);
    let r = rest(&e.sb, "GET", "messages?status=eq.nothing", &[], None);
    assert_eq!(
        (r.status, r.body.as_str(), r.header("Content-Range")),
        (200, "[]", Some("*/*"))
    );
    let r = rest(
        &e.sb,
        "GET",
        "messages?select=id&direction=eq.outbound",
        &[("Prefer", "count=exact")],
        None,
    );
    assert_eq!(r.header("Content-Range"), Some("0-1/2"));

    // One-to-many embed, and a many-to-one embed with no row.
    let r = rest(
        &e.sb,
        "GET",
        "conversations?select=phone_number,messages(content)&messages.order=x",
        &[],
        None,
    );
    assert_eq!(
        r.status, 400,
        "embedded filters are refused loudly: {}",
        r.body
    );
    let r = rest(
        &e.sb,
        "GET",
        "conversations?select=phone_number,messages(content)",
        &[],
        None,
    );
    assert_eq!(r.json()[0]["messages"].as_array().unwrap().len(), 3);
    let r = rest(&e.sb, "GET", "notes?select=id,conversations(id)", &[], None);
    assert_eq!(r.json(), json!([{"id": 1, "conversations": null}]));
}
