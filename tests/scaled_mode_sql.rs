//! Scaled mode's database side (`sql/migrations/002_scaled_mode.sql`, contract in
//! `docs/scaled-mode.md`) against a real PostgreSQL: the migration installs idempotently and
//! refuses a database without `realtime.send`; partitions spread random ids evenly; the wake
//! trigger broadcasts once per entry into `queued_for_send`, to the row's partition topic; the
//! batch claim takes exactly what the single claim would (outbound, queued, at most 1,600
//! characters), of the partitions asked, oldest first, at most `max_rows`, stamped, and two
//! concurrent claims never share a row (shown with a transaction held open, not with timing).
//! Last, the service's RPC calls ([`Rest::scaled_mode`], [`Rest::claim_batch`]) through the
//! Supabase double.
//!
//! Where the test database has no `realtime.send` (plain PostgreSQL), [`with_realtime`] installs
//! a stand-in with Supabase's signature that records each call as a row of `realtime.messages`
//! (topic, event, payload, private), as Supabase's own function does.

use std::sync::Arc;
use std::time::Duration;

use sms_sender::config::{KeyKind, Secret, SupabaseConfig as ServiceSupabase};
use sms_sender::http::Unobserved;
use sms_sender::message::{ClaimedMessage, MessageId};
use sms_sender::supabase::rest::{Claim, Rest, RestError};
use sms_sender::supabase::rpc::ScaledMode;
use sms_sender_doubles::pg::{self, Pg};
use sms_sender_doubles::supabase::{SupabaseConfig, SupabaseDouble};

/// The migration under test.
const MIGRATION: &str = include_str!("../sql/migrations/002_scaled_mode.sql");

/// The partition count the migration declares.
const PARTITIONS: u32 = 16;

/// Supabase's `realtime.send` signature, recording into `realtime.messages`; installed only where
/// the database has none (the Supabase double may provide its own).
const REALTIME_STAND_IN: &str = r#"
DO $install$
BEGIN
  IF to_regprocedure('realtime.send(jsonb, text, text, boolean)') IS NULL THEN
    CREATE SCHEMA IF NOT EXISTS realtime;
    CREATE TABLE IF NOT EXISTS realtime.messages (
      id uuid NOT NULL DEFAULT gen_random_uuid(),
      topic text NOT NULL,
      extension text NOT NULL,
      payload jsonb,
      event text,
      private boolean DEFAULT false,
      inserted_at timestamp NOT NULL DEFAULT now()
    );
    CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
    RETURNS void LANGUAGE plpgsql AS $send$
    BEGIN
      INSERT INTO realtime.messages (payload, event, topic, private, extension)
      VALUES (payload, event, topic, private, 'broadcast');
    END
    $send$;
  END IF;
END
$install$;
"#;

/// Rows of `sql` on connection `$client`, every column read as text (the SQL casts them).
macro_rules! texts {
    ($client:expr, $sql:expr) => {{
        let sql: &str = $sql;
        $client
            .query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    }};
}

/// The SQLSTATE of the error `sql` fails with on connection `$client` (panics if it succeeds).
macro_rules! sqlstate {
    ($client:expr, $sql:expr) => {{
        let sql: &str = $sql;
        match $client.query(sql, &[]) {
            Ok(_) => panic!("{sql} succeeded"),
            Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_default(),
        }
    }};
}

/// Rows of `sql` on a fresh connection, as text.
fn rows(pg: &Pg, sql: &str) -> Vec<Vec<Option<String>>> {
    texts!(pg.client(), sql)
}

/// The one value `sql` returns, as text.
fn value(pg: &Pg, sql: &str) -> String {
    let rows = rows(pg, sql);
    assert_eq!(rows.len(), 1, "{sql} returned {rows:?}");
    rows[0][0].clone().unwrap_or_default()
}

/// A database with sms-sender's schema and a `realtime.send`, without the migration.
fn with_realtime() -> Pg {
    let pg = Pg::start();
    pg.execute_batch(pg::schema_sql());
    pg.execute_batch(REALTIME_STAND_IN);
    pg
}

/// A database with the schema, `realtime.send` and the migration.
fn scaled() -> Pg {
    let pg = with_realtime();
    pg.execute_batch(MIGRATION);
    pg
}

/// The partition of `id`, computed here from the text form (last byte modulo P), independently
/// of the SQL.
fn partition_of(id: &str) -> u32 {
    u32::from_str_radix(&id[id.len() - 2..], 16).unwrap() % PARTITIONS
}

/// A user and a conversation with this phone number; returns the conversation id.
fn conversation(pg: &Pg, phone: &str) -> String {
    value(
        pg,
        &format!(
            "WITH u AS (INSERT INTO users DEFAULT VALUES RETURNING id) \
             INSERT INTO conversations (user_id, phone_number) SELECT id, '{phone}' FROM u \
             RETURNING id::text"
        ),
    )
}

/// Insert a message with these columns (SQL expressions) into `conversation`; returns its id.
fn insert(
    pg: &Pg,
    conversation: &str,
    direction: &str,
    status: &str,
    extra: &[(&str, &str)],
) -> String {
    let (mut cols, mut vals) = (String::new(), String::new());
    for (col, val) in extra {
        cols.push_str(&format!(", {col}"));
        vals.push_str(&format!(", {val}"));
    }
    value(
        pg,
        &format!(
            "INSERT INTO messages (conversation_id, user_id, role, content, direction, status{cols}) \
             SELECT c.id, c.user_id, 'assistant', 'hello', '{direction}', '{status}'{vals} \
             FROM conversations c WHERE c.id = '{conversation}' RETURNING id::text"
        ),
    )
}

/// The broadcasts `realtime.send` recorded so far: (topic, event, payload id, private).
fn broadcasts(pg: &Pg) -> Vec<(String, String, String, String)> {
    rows(
        pg,
        "SELECT topic, event, payload->>'id', private::text FROM realtime.messages \
         ORDER BY inserted_at, id",
    )
    .into_iter()
    .map(|r| {
        let mut r = r.into_iter().map(Option::unwrap_or_default);
        (
            r.next().unwrap(),
            r.next().unwrap(),
            r.next().unwrap(),
            r.next().unwrap(),
        )
    })
    .collect()
}

/// How many broadcasts name row `id`.
fn wakes(pg: &Pg, id: &str) -> usize {
    broadcasts(pg).iter().filter(|b| b.2 == id).count()
}

/// An id whose last byte is `last` (so its partition is `last % P`), unique by `n`.
fn id_in(n: u32, last: u8) -> String {
    format!("6f1c2e0a-0000-4000-8000-{n:010x}{last:02x}")
}

// ---------------------------------------------------------------------------------------------
// Installation.

#[test]
fn the_migration_installs_twice_and_declares_its_partitions() {
    let pg = with_realtime();
    pg.execute_batch(MIGRATION);
    pg.execute_batch(MIGRATION);
    assert_eq!(
        value(&pg, "SELECT sms_sender_scaled_mode()::text"),
        r#"{"partitions": 16}"#
    );
    assert_eq!(
        value(
            &pg,
            "SELECT count(*)::text FROM pg_trigger \
             WHERE tgname = 'sms_sender_wake' AND tgrelid = 'messages'::regclass"
        ),
        "1"
    );
    // The batch claim is not for everyone (Supabase's app roles are absent here, PUBLIC is not).
    assert_eq!(
        value(
            &pg,
            "SELECT has_function_privilege('public', \
             'sms_sender_claim(int[], int, timestamptz)', 'EXECUTE')::text"
        ),
        "false"
    );
    // Installed twice, a row still wakes once.
    let conv = conversation(&pg, "+15551234567");
    let id = insert(&pg, &conv, "outbound", "pending", &[]);
    assert_eq!(wakes(&pg, &id), 1);
}

#[test]
fn the_migration_refuses_a_database_without_realtime_send_and_changes_nothing() {
    let pg = Pg::start();
    pg.execute_batch(pg::schema_sql());
    let err = pg
        .client()
        .batch_execute(MIGRATION)
        .expect_err("installed without realtime.send");
    let message = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("realtime.send")),
        "{err:?}"
    );
    assert_eq!(
        value(
            &pg,
            "SELECT count(*)::text FROM pg_proc WHERE proname LIKE 'sms\\_sender\\_%'"
        ),
        "0"
    );
    assert_eq!(
        value(
            &pg,
            "SELECT count(*)::text FROM pg_trigger WHERE tgname = 'sms_sender_wake'"
        ),
        "0"
    );
    // Rows still queue as in the default mode.
    let conv = conversation(&pg, "+15551234567");
    let id = insert(&pg, &conv, "outbound", "pending", &[]);
    assert_eq!(
        value(
            &pg,
            &format!("SELECT status FROM messages WHERE id = '{id}'")
        ),
        "queued_for_send"
    );
}

// ---------------------------------------------------------------------------------------------
// Partitions.

#[test]
fn partitions_spread_random_ids_evenly_and_follow_the_last_byte() {
    let pg = scaled();
    let counts = rows(
        &pg,
        "SELECT p::text, count(*)::text FROM \
         (SELECT sms_sender_partition(gen_random_uuid()) AS p FROM generate_series(1, 10000)) s \
         GROUP BY s.p ORDER BY s.p",
    );
    assert_eq!(counts.len(), PARTITIONS as usize, "{counts:?}");
    let even = 10_000.0 / f64::from(PARTITIONS);
    for (k, row) in counts.iter().enumerate() {
        let p: u32 = row[0].as_deref().unwrap().parse().unwrap();
        let n: f64 = row[1].as_deref().unwrap().parse().unwrap();
        assert_eq!(p, k as u32, "{counts:?}");
        assert!(
            (n - even).abs() <= 0.3 * even,
            "partition {p} has {n} of 10000 ids (even: {even}): {counts:?}"
        );
    }
    for last in [0x00u8, 0x01, 0x0f, 0x10, 0x7f, 0xff] {
        let id = id_in(1, last);
        assert_eq!(
            value(&pg, &format!("SELECT sms_sender_partition('{id}')::text")),
            partition_of(&id).to_string(),
            "{id}"
        );
    }
    assert_eq!(
        rows(&pg, "SELECT sms_sender_partition(NULL)::text"),
        vec![vec![None]]
    );
}

// ---------------------------------------------------------------------------------------------
// The wake-up.

#[test]
fn a_row_wakes_its_partition_once_per_entry_into_the_queue() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");

    // A new outbound `pending` row: `on_message_send` moves it to `queued_for_send`; one wake.
    let id = insert(&pg, &conv, "outbound", "pending", &[]);
    assert_eq!(
        value(
            &pg,
            &format!("SELECT status FROM messages WHERE id = '{id}'")
        ),
        "queued_for_send"
    );
    assert_eq!(
        broadcasts(&pg),
        vec![(
            format!("sms-sender:p{}", partition_of(&id)),
            "queued".to_string(),
            id.clone(),
            "true".to_string()
        )]
    );

    // Staying queued (content edited, status rewritten to the same value): no wake.
    pg.execute_batch(&format!(
        "UPDATE messages SET content = 'edited' WHERE id = '{id}';
         UPDATE messages SET status = 'queued_for_send' WHERE id = '{id}';"
    ));
    assert_eq!(wakes(&pg, &id), 1);

    // Claimed, then given back by the service: one more.
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'sending', sent_at = now() WHERE id = '{id}';"
    ));
    assert_eq!(wakes(&pg, &id), 1);
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'queued_for_send', sent_at = NULL WHERE id = '{id}';"
    ));
    assert_eq!(wakes(&pg, &id), 2);

    // Sent, failed by a receipt, requeued by the app (`failed` → `queued_for_send`): one more.
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'sent', twilio_message_sid = 'SM1' WHERE id = '{id}';
         UPDATE messages SET status = 'failed' WHERE id = '{id}';"
    ));
    assert_eq!(wakes(&pg, &id), 2);
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'queued_for_send' WHERE id = '{id}';"
    ));
    assert_eq!(wakes(&pg, &id), 3);

    // Inserted queued (no `pending` step): one wake, to its own partition.
    let direct = insert(&pg, &conv, "outbound", "queued_for_send", &[]);
    assert_eq!(wakes(&pg, &direct), 1);
    assert!(broadcasts(&pg).contains(&(
        format!("sms-sender:p{}", partition_of(&direct)),
        "queued".to_string(),
        direct.clone(),
        "true".to_string()
    )));

    // Inbound rows never wake, whatever their status.
    let inbound_pending = insert(&pg, &conv, "inbound", "pending", &[]);
    let inbound_queued = insert(&pg, &conv, "inbound", "queued_for_send", &[]);
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'received' WHERE id = '{inbound_queued}';
         UPDATE messages SET status = 'queued_for_send' WHERE id = '{inbound_queued}';"
    ));
    assert_eq!(wakes(&pg, &inbound_pending), 0);
    assert_eq!(wakes(&pg, &inbound_queued), 0);
    assert_eq!(broadcasts(&pg).len(), 4, "{:?}", broadcasts(&pg));

    // Every topic is one of the P partition topics.
    let many: Vec<String> = (0..40)
        .map(|_| insert(&pg, &conv, "outbound", "pending", &[]))
        .collect();
    for id in &many {
        let topics: Vec<String> = broadcasts(&pg)
            .into_iter()
            .filter(|b| &b.2 == id)
            .map(|b| b.0)
            .collect();
        assert_eq!(topics, vec![format!("sms-sender:p{}", partition_of(id))]);
    }
}

// ---------------------------------------------------------------------------------------------
// The batch claim.

/// Claim rows with SQL; returns (id, content, sid, conversation) as text, in the order returned.
fn claim(pg: &Pg, partitions: &str, max_rows: u32, stamp: &str) -> Vec<Vec<Option<String>>> {
    rows(
        pg,
        &format!(
            "SELECT id::text, content, twilio_message_sid, conversation::text \
             FROM sms_sender_claim({partitions}, {max_rows}, '{stamp}')"
        ),
    )
}

fn ids(claimed: &[Vec<Option<String>>]) -> Vec<String> {
    claimed.iter().map(|r| r[0].clone().unwrap()).collect()
}

fn status_and_stamp(pg: &Pg, id: &str) -> (String, Option<String>) {
    let r = rows(
        pg,
        &format!("SELECT status, sent_at::text FROM messages WHERE id = '{id}'"),
    );
    (r[0][0].clone().unwrap(), r[0][1].clone())
}

const STAMP: &str = "2030-01-01 00:00:00.123456+00";

#[test]
fn the_claim_takes_the_oldest_rows_of_the_partitions_asked() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");
    // Partition k gets rows k·10 + 0..3, created in reverse order of their number (so the
    // oldest first is not insertion order).
    let mut by_partition: Vec<Vec<String>> = Vec::new();
    for k in 0..4u8 {
        let mut ids = Vec::new();
        for n in 0..3u32 {
            let id = id_in(u32::from(k) * 10 + n, k + 16 * (n as u8 + 1));
            assert_eq!(partition_of(&id), u32::from(k));
            let age = format!("now() - interval '{} minutes'", 100 - n * 10 - u32::from(k));
            ids.push(insert(
                &pg,
                &conv,
                "outbound",
                "queued_for_send",
                &[("id", &format!("'{id}'")), ("created_at", &age)],
            ));
        }
        by_partition.push(ids);
    }
    // Partitions 1 and 2, two rows: the oldest of the six (n = 0: 99 and 98 minutes old).
    let got = claim(&pg, "ARRAY[1, 2]", 2, STAMP);
    assert_eq!(
        ids(&got),
        vec![by_partition[1][0].clone(), by_partition[2][0].clone()]
    );
    for id in ids(&got) {
        assert_eq!(
            status_and_stamp(&pg, &id),
            ("sending".into(), Some(STAMP.into()))
        );
    }
    assert_eq!(
        got[0][1..],
        [
            Some("hello".to_string()),
            None,
            Some(r#"{"phone_number" : "+15551234567"}"#.to_string())
        ]
    );
    // The rest of partitions 1 and 2, then nothing more there; other partitions untouched.
    let rest = claim(&pg, "ARRAY[2, 1]", 1000, STAMP);
    assert_eq!(
        ids(&rest),
        vec![
            by_partition[1][1].clone(),
            by_partition[2][1].clone(),
            by_partition[1][2].clone(),
            by_partition[2][2].clone(),
        ]
    );
    assert!(claim(&pg, "ARRAY[1, 2]", 10, STAMP).is_empty());
    for k in [0, 3] {
        for id in &by_partition[k] {
            assert_eq!(status_and_stamp(&pg, id), ("queued_for_send".into(), None));
        }
    }
    // An empty list means every partition (the sweeper), as does NULL; partitions that do not
    // exist match nothing.
    assert!(claim(&pg, "ARRAY[16, -1]", 10, STAMP).is_empty());
    assert_eq!(
        ids(&claim(&pg, "'{}'::int[]", 4, STAMP)),
        vec![
            by_partition[0][0].clone(),
            by_partition[3][0].clone(),
            by_partition[0][1].clone(),
            by_partition[3][1].clone(),
        ]
    );
    assert_eq!(
        ids(&claim(&pg, "NULL", 10, STAMP)),
        vec![by_partition[0][2].clone(), by_partition[3][2].clone()]
    );
    assert_eq!(
        value(
            &pg,
            "SELECT count(*)::text FROM messages WHERE status = 'queued_for_send'"
        ),
        "0"
    );
}

#[test]
fn the_claim_takes_what_the_single_claim_takes_and_keeps_the_previous_sid() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");
    let requeued = insert(
        &pg,
        &conv,
        "outbound",
        "queued_for_send",
        &[("twilio_message_sid", "'SMprevious'")],
    );
    let not_queued: Vec<(String, &str)> = ["pending", "sending", "sent", "failed", "delivered"]
        .into_iter()
        .map(|status| {
            // `pending` outbound rows are queued at once by `on_message_send`: set it after.
            let id = insert(&pg, &conv, "outbound", "sent", &[]);
            pg.execute_batch(&format!(
                "UPDATE messages SET status = '{status}' WHERE id = '{id}'"
            ));
            (id, status)
        })
        .collect();
    let inbound = insert(&pg, &conv, "inbound", "queued_for_send", &[]);
    // Lengths in characters, not bytes: 'é' is two bytes, '😀' four (and two UTF-16 units).
    let mut by_length = Vec::new();
    for (text, claimable) in [
        ("repeat('a', 1600)", true),
        ("repeat('a', 1601)", false),
        ("repeat('é', 1600)", true),
        ("repeat('é', 1601)", false),
        ("repeat('😀', 1600)", true),
        ("repeat('😀', 1601)", false),
        ("''", true),
    ] {
        let id = insert(&pg, &conv, "outbound", "queued_for_send", &[]);
        pg.execute_batch(&format!(
            "UPDATE messages SET content = {text} WHERE id = '{id}'"
        ));
        by_length.push((id, claimable));
    }
    // What the single claim's filter (`content=not.like.` 1,601 × `_` then `*`) takes, the batch
    // claim takes, and nothing else.
    let like_claimable: Vec<String> = rows(
        &pg,
        "SELECT id::text FROM messages WHERE status = 'queued_for_send' \
         AND direction = 'outbound' AND content NOT LIKE repeat('_', 1601) || '%' ORDER BY id",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    let got = claim(&pg, "'{}'", 1000, STAMP);
    let mut claimed = ids(&got);
    claimed.sort();
    assert_eq!(claimed, like_claimable);
    let mut expected: Vec<String> = by_length
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id.clone())
        .chain([requeued.clone()])
        .collect();
    expected.sort();
    assert_eq!(claimed, expected);
    for (id, claimable) in &by_length {
        let want = if *claimable {
            "sending"
        } else {
            "queued_for_send"
        };
        assert_eq!(status_and_stamp(&pg, id).0, want, "{id}");
    }
    for (id, status) in not_queued.iter().chain([&(inbound, "queued_for_send")]) {
        assert_eq!(
            status_and_stamp(&pg, id),
            (status.to_string(), None),
            "{id}"
        );
    }
    // The previous attempt's SID is returned and kept.
    let row = got
        .iter()
        .find(|r| r[0].as_deref() == Some(&requeued))
        .unwrap();
    assert_eq!(row[2].as_deref(), Some("SMprevious"));
    assert_eq!(
        value(
            &pg,
            &format!("SELECT twilio_message_sid FROM messages WHERE id = '{requeued}'")
        ),
        "SMprevious"
    );
    // The claim's own update wakes nobody.
    assert_eq!(wakes(&pg, &requeued), 1);
}

#[test]
fn the_claim_returns_a_null_conversation_for_a_missing_one() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");
    pg.execute_batch("ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey");
    let orphan = insert(&pg, &conv, "outbound", "queued_for_send", &[]);
    pg.execute_batch(&format!(
        "UPDATE messages SET conversation_id = gen_random_uuid() WHERE id = '{orphan}'"
    ));
    let got = claim(&pg, "'{}'", 10, STAMP);
    assert_eq!(
        got,
        vec![vec![Some(orphan), Some("hello".into()), None, None]]
    );
}

#[test]
fn the_claim_refuses_a_bad_bound_or_stamp_and_changes_nothing() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");
    insert(&pg, &conv, "outbound", "queued_for_send", &[]);
    let mut c = pg.client();
    for call in [
        format!("sms_sender_claim('{{}}', 0, '{STAMP}')"),
        format!("sms_sender_claim('{{}}', -5, '{STAMP}')"),
        format!("sms_sender_claim('{{}}', 1001, '{STAMP}')"),
        format!("sms_sender_claim('{{}}', NULL, '{STAMP}')"),
        "sms_sender_claim('{}', 10, NULL)".to_string(),
    ] {
        assert_eq!(
            sqlstate!(c, &format!("SELECT * FROM {call}")),
            "22023",
            "{call}"
        );
    }
    assert_eq!(
        value(
            &pg,
            "SELECT count(*)::text FROM messages WHERE status = 'queued_for_send'"
        ),
        "1"
    );
}

#[test]
fn concurrent_claims_never_return_the_same_row() {
    let pg = scaled();
    let conv = conversation(&pg, "+15551234567");
    let all: Vec<String> = (0..6u32)
        .map(|n| {
            let age = format!("now() - interval '{} minutes'", 60 - n);
            insert(
                &pg,
                &conv,
                "outbound",
                "queued_for_send",
                &[("created_at", &age)],
            )
        })
        .collect();
    let stamp_a = "2030-01-01 00:00:01+00";
    let stamp_b = "2030-01-01 00:00:02+00";
    let mut a = pg.client();
    let mut b = pg.client();
    // A statement that waited on A's locks would fail here instead of hanging the test.
    b.batch_execute("SET statement_timeout = '5s'").unwrap();

    // A claims the two oldest and holds its transaction open.
    a.batch_execute("BEGIN").unwrap();
    let got_a = texts!(
        a,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 2, '{stamp_a}')")
    );
    assert_eq!(ids(&got_a), all[..2].to_vec());
    // B, meanwhile, asks for everything: it skips A's locked rows and gets the rest at once.
    let got_b = texts!(
        b,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 10, '{stamp_b}')")
    );
    assert_eq!(ids(&got_b), all[2..].to_vec());
    // A second B claim while A still holds: nothing left to take, and no wait.
    let again = texts!(
        b,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 10, '{stamp_b}')")
    );
    assert!(again.is_empty(), "{again:?}");
    a.batch_execute("COMMIT").unwrap();
    for id in &all[..2] {
        assert_eq!(
            status_and_stamp(&pg, id),
            ("sending".into(), Some(stamp_a.into()))
        );
    }
    for id in &all[2..] {
        assert_eq!(
            status_and_stamp(&pg, id),
            ("sending".into(), Some(stamp_b.into()))
        );
    }

    // A claim that rolls back gives its rows back: the next claim takes them.
    pg.execute_batch(&format!(
        "UPDATE messages SET status = 'queued_for_send', sent_at = NULL WHERE id IN ('{}', '{}')",
        all[0], all[1]
    ));
    a.batch_execute("BEGIN").unwrap();
    let held = texts!(
        a,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 10, '{stamp_a}')")
    );
    assert_eq!(ids(&held), all[..2].to_vec());
    let blocked = texts!(
        b,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 10, '{stamp_b}')")
    );
    assert!(blocked.is_empty(), "{blocked:?}");
    a.batch_execute("ROLLBACK").unwrap();
    let after = texts!(
        b,
        &format!("SELECT id::text FROM sms_sender_claim('{{}}', 10, '{stamp_b}')")
    );
    assert_eq!(ids(&after), all[..2].to_vec());
}

// ---------------------------------------------------------------------------------------------
// The service's calls, through the Supabase double's PostgREST.

/// A REST client of the service on the double.
fn rest_on(double: &SupabaseDouble) -> Rest {
    let config = ServiceSupabase {
        rest_url: format!("{}/rest/v1", double.url()),
        realtime_url: format!(
            "{}/realtime/v1/websocket",
            double.url().replacen("http", "ws", 1)
        ),
        key: Secret::new(double.service_key()),
        key_kind: KeyKind::LegacyJwt,
    };
    Rest::new(
        &config,
        2,
        Duration::from_secs(2),
        Duration::from_secs(10),
        None,
        Arc::new(Unobserved),
    )
}

#[test]
fn without_the_migration_the_service_sees_the_default_mode() {
    let pg = Pg::start();
    pg.execute_batch(pg::schema_sql());
    let double = SupabaseDouble::start(&pg, SupabaseConfig::default());
    assert_eq!(rest_on(&double).scaled_mode(), Ok(None));
}

#[test]
fn the_service_detects_scaled_mode_and_claims_batches_through_postgrest() {
    let pg = Pg::start();
    pg.execute_batch(pg::schema_sql());
    let double = SupabaseDouble::start(&pg, SupabaseConfig::default());
    pg.execute_batch(REALTIME_STAND_IN);
    pg.execute_batch(MIGRATION);
    let rest = rest_on(&double);
    assert_eq!(
        rest.scaled_mode(),
        Ok(Some(ScaledMode {
            partitions: PARTITIONS as u16
        }))
    );

    let conv = conversation(&pg, "+15551234567");
    let row = |n: u32, last: u8, minutes: u32, extra: &[(&str, &str)]| {
        let id = id_in(n, last);
        let age = format!("now() - interval '{minutes} minutes'");
        let mut cols = vec![("id", format!("'{id}'")), ("created_at", age)];
        cols.extend(extra.iter().map(|(c, v)| (*c, v.to_string())));
        let cols: Vec<(&str, &str)> = cols.iter().map(|(c, v)| (*c, v.as_str())).collect();
        insert(&pg, &conv, "outbound", "queued_for_send", &cols)
    };
    let newer = row(1, 0x01, 5, &[]);
    let older = row(2, 0x11, 9, &[("twilio_message_sid", "'SMprevious'")]);
    let too_long = row(3, 0x21, 20, &[]);
    pg.execute_batch(&format!(
        "UPDATE messages SET content = repeat('a', 1601) WHERE id = '{too_long}'"
    ));
    let other = row(4, 0x02, 1, &[]);

    let stamp = "2030-01-01T00:00:00.5Z";
    let claims = rest.claim_batch(&[1], 10, stamp).unwrap();
    let won = |id: &str, sid: Option<&str>| {
        Claim::Won(ClaimedMessage {
            id: MessageId::parse(id).unwrap(),
            body: "hello".into(),
            phone_number: Some("+15551234567".into()),
            previous_sid: sid.map(String::from),
        })
    };
    assert_eq!(
        claims,
        vec![won(&older, Some("SMprevious")), won(&newer, None)]
    );
    // Stamped so that the single claim's fences hold: every later write is unchanged.
    for id in [&older, &newer] {
        assert_eq!(
            rest.holds(&MessageId::parse(id).unwrap(), stamp),
            Ok(true),
            "{id}"
        );
    }
    assert_eq!(status_and_stamp(&pg, &too_long).0, "queued_for_send");
    assert_eq!(status_and_stamp(&pg, &other).0, "queued_for_send");

    // Every partition (the sweeper): the one left that can be an SMS.
    assert_eq!(
        rest.claim_batch(&[], 1_000_000, stamp),
        Ok(vec![won(&other, None)])
    );
    // Nothing asked, nothing requested.
    let before = double.rest_requests().len();
    assert_eq!(rest.claim_batch(&[0, 1, 2], 0, stamp), Ok(vec![]));
    assert_eq!(double.rest_requests().len(), before);
    // A stamp PostgreSQL cannot read is the database's error, and claims nothing.
    assert!(matches!(
        rest.claim_batch(&[], 10, "not a time"),
        Err(RestError::Status { status: 400, .. })
    ));
    assert_eq!(status_and_stamp(&pg, &too_long).0, "queued_for_send");
}
