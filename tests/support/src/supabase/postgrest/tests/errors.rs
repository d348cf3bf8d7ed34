//! Error bodies as PostgREST renders them (codes, texts, statuses).

use serde_json::{json, Value};

use crate::supabase::testkit::{env, http, rest};

#[test]
fn error_bodies_match_postgrest() {
    let e = env();
    let expect = |r: crate::supabase::testkit::HttpResp, status: u16, body: Value| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.json(), body);
    };
    expect(
        rest(&e.sb, "GET", "messages?id=eq.abc", &[], None),
        400,
        json!({"code":"22P02","details":null,"hint":null,"message":"invalid input syntax for type uuid: \"abc\""}),
    );
    expect(
        rest(&e.sb, "GET", "nope", &[], None),
        404,
        json!({"code":"PGRST205","details":null,"hint":null,"message":"Could not find the table 'public.nope' in the schema cache"}),
    );
    expect(
        rest(&e.sb, "GET", "messages?x=eq.1", &[], None),
        400,
        json!({"code":"42703","details":null,"hint":null,"message":"column messages.x does not exist"}),
    );
    expect(
        rest(&e.sb, "GET", "messages?select=id,bogus", &[], None),
        400,
        json!({"code":"42703","details":null,"hint":null,"message":"column messages.bogus does not exist"}),
    );
    expect(
        rest(&e.sb, "GET", "messages?status=queued", &[], None),
        400,
        json!({"code":"PGRST100","details":"unexpected \"q\" expecting \"not\" or operator (eq, gt, ...)","hint":null,
               "message":"\"failed to parse filter (queued)\" (line 1, column 1)"}),
    );
    expect(
        rest(
            &e.sb,
            "PATCH",
            "messages?id=eq.6f1c2e0a-0000-4000-8000-000000000000",
            &[],
            Some(r#"{"x":1}"#),
        ),
        400,
        json!({"code":"PGRST204","details":null,"hint":null,"message":"Could not find the 'x' column of 'messages' in the schema cache"}),
    );
    expect(
        rest(
            &e.sb,
            "PATCH",
            "messages",
            &[],
            Some(r#"{"status":"sent"}"#),
        ),
        400,
        json!({"code":"21000","details":null,"hint":null,"message":"UPDATE requires a WHERE clause"}),
    );
    expect(
        rest(
            &e.sb,
            "PATCH",
            "messages?id=eq.6f1c2e0a-0000-4000-8000-000000000000",
            &[],
            Some("{not json"),
        ),
        400,
        json!({"code":"PGRST102","details":null,"hint":null,"message":"Empty or invalid json"}),
    );
    expect(
        rest(
            &e.sb,
            "POST",
            "messages",
            &[],
            Some(
                r#"{"conversation_id":"6f1c2e0a-0000-4000-8000-000000000000","user_id":"6f1c2e0a-0000-4000-8000-000000000000","role":"a","content":"c","direction":"outbound"}"#,
            ),
        ),
        409,
        json!({"code":"23503","details":"Key (conversation_id)=(6f1c2e0a-0000-4000-8000-000000000000) is not present in table \"conversations\".","hint":null,
               "message":"insert or update on table \"messages\" violates foreign key constraint \"messages_conversation_id_fkey\""}),
    );
    // Gateway shapes: no `code`.
    let r = http(&e.sb, "GET", "/rest/v1/messages", &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"message":"No API key found in request","hint":"No `apikey` request header or url param was found."})
    );
    let r = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[("apikey", "wrong")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API key."})
    );
    // A legacy key without Bearer is the anon role.
    let key = e.sb.service_key();
    let r = http(&e.sb, "GET", "/rest/v1/messages", &[("apikey", &key)], None).unwrap();
    assert_eq!((r.status, r.json()["code"].clone()), (401, json!("42501")));
    assert_eq!(r.json()["message"], "permission denied for table messages");
    let r = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[("apikey", &key), ("Authorization", "Bearer potato")],
        None,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (401, json!("PGRST301"))
    );
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(
            "Bearer error=\"invalid_token\", error_description=\"Expected 3 parts in JWT; got 1\""
        )
    );
    // ?apikey= works like the header.
    let r = http(
        &e.sb,
        "GET",
        &format!("/rest/v1/messages?apikey={key}"),
        &[("Authorization", &format!("Bearer {key}"))],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
}
