//! The change feed: a row trigger (`sms_double.notify_change`) on every table in `public`
//! reports each change through NOTIFY; a listener thread (which also carries the broadcast
//! trigger's NOTIFYs to [`super::broadcast`]) turns it into a `postgres_changes`
//! payload (re-reading rows too large for NOTIFY, trimming oversized ones, §4.3) and queues it
//! on every live channel whose bindings match (§5). The listener reconnects after a PostgreSQL
//! restart, and live channels get a fresh "Subscribed to PostgreSQL".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Map, Value};

use super::super::schema::{ident, qualified};
use super::super::{Shared, SubscribeMode};
use super::bindings::cond_matches;
use super::broadcast;
use super::frame::{subscribed_frame, ServerFrame};
use super::{Out, RealtimeState};

/// The NOTIFY channel the trigger reports on.
const NOTIFY_CHANNEL: &str = "sms_double_changes";
/// The trigger's name. AFTER triggers fire in name order; "00_" sorts before ordinary names, so a
/// change is reported before other AFTER triggers run nested statements (e.g. the schema's
/// `on_message_send` UPDATE), keeping the report order equal to the WAL order the real server sees.
const TRIGGER_NAME: &str = "00_sms_double_changes";
/// The real server's `max_record_bytes` (§4.3).
const MAX_RECORD_BYTES: usize = 1_048_576;

impl RealtimeState {
    /// The change feed came back (PostgreSQL restarted): like the real server after a CDC restart
    /// (§3.4), every live channel gets a fresh "Subscribed to PostgreSQL".
    fn resubscribed(&self) {
        let mode = self.subscribe_mode.lock().unwrap().clone();
        if !matches!(mode, SubscribeMode::Ok | SubscribeMode::Twice) {
            return;
        }
        for c in self.snapshot() {
            let chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.iter().filter(|(_, ch)| ch.live) {
                let _ = c.tx.send(Out::Frame(subscribed_frame(topic, ch)));
            }
        }
    }
}

/// Install (idempotently) the notify function and a row trigger on every table in `public` that
/// lacks it. Serialised by an advisory lock, since two doubles may share one database.
pub(crate) fn install_change_triggers(
    client: &mut postgres::Client,
    shared: &Shared,
) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        r#"
SELECT pg_advisory_xact_lock(73570001);
CREATE SCHEMA IF NOT EXISTS sms_double;
CREATE SEQUENCE IF NOT EXISTS sms_double.change_seq;
CREATE OR REPLACE FUNCTION sms_double.notify_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  base jsonb;
  msg text;
BEGIN
  -- seq keeps payloads distinct: NOTIFY folds identical payloads within one transaction.
  base := jsonb_build_object(
    'seq', nextval('sms_double.change_seq'),
    'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
    'commit_timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'has_pk', TG_NARGS > 0);
  IF TG_OP <> 'INSERT' THEN
    IF (SELECT relreplident FROM pg_class WHERE oid = TG_RELID) = 'f' THEN
      base := base || jsonb_build_object('old_record', to_jsonb(OLD));
    ELSE
      base := base || jsonb_build_object('old_record',
        (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
           FROM jsonb_each(to_jsonb(OLD)) e WHERE e.key = ANY (TG_ARGV)));
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN
    msg := base::text;
  ELSE
    msg := (base || jsonb_build_object('record', to_jsonb(NEW)))::text;
    -- NOTIFY payloads must stay under 8000 bytes: send the key and let the double re-read.
    IF octet_length(msg) > 7900 THEN
      msg := (base || jsonb_build_object('record_pk',
        (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
           FROM jsonb_each(to_jsonb(NEW)) e WHERE e.key = ANY (TG_ARGV))))::text;
    END IF;
  END IF;
  PERFORM pg_notify('{NOTIFY_CHANNEL}', msg);
  RETURN NULL;
END
$fn$;
DO $do$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT c.relname,
           ARRAY(SELECT a.attname::text FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord) AS pk
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                        WHERE t.tgrelid = c.oid AND t.tgname = '{TRIGGER_NAME}')
  LOOP
    EXECUTE format(
      'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON public.%I '
      'FOR EACH ROW EXECUTE FUNCTION sms_double.notify_change(%s)',
      '{TRIGGER_NAME}', r.relname,
      (SELECT string_agg(quote_literal(x), ', ') FROM unnest(r.pk) AS x));
  END LOOP;
END
$do$;
"#
    ))?;
    let tables: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND t.tgname = $1",
            &[&TRIGGER_NAME],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit()?;
    shared.rt.triggered.lock().unwrap().extend(tables);
    Ok(())
}

/// Start the thread that LISTENs for changes and fans them out. It reconnects with backoff when
/// PostgreSQL goes away; changes made while it is disconnected are lost, as on the real server.
pub(crate) fn start_listener(shared: Arc<Shared>) {
    thread::Builder::new()
        .name("supabase-double-listen".into())
        .spawn(move || listen_loop(&shared))
        .expect("spawn the change listener thread");
}

fn listen_loop(shared: &Shared) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    while !shared.stopping.load(Ordering::SeqCst) {
        let client = postgres::Client::connect(
            &format!("{} connect_timeout=2", shared.conn_str),
            postgres::NoTls,
        )
        .and_then(|mut c| {
            c.batch_execute(&format!(
                "SET TimeZone TO 'UTC'; LISTEN {NOTIFY_CHANNEL}; LISTEN {}",
                broadcast::NOTIFY_CHANNEL
            ))?;
            Ok(c)
        });
        let mut client = match client {
            Ok(c) => c,
            Err(_) => {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        shared.rt.listening.store(true, Ordering::SeqCst);
        if connected_before {
            shared.rt.resubscribed();
        }
        connected_before = true;
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let next = client
                .notifications()
                .timeout_iter(Duration::from_millis(100))
                .next();
            match next {
                Ok(Some(n)) => {
                    let payload = n.payload().to_string();
                    if n.channel() == broadcast::NOTIFY_CHANNEL {
                        broadcast::handle_broadcast(shared, &mut client, &payload);
                    } else {
                        handle_change(shared, &mut client, &payload);
                    }
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(_) => break,
            }
        }
        shared.rt.listening.store(false, Ordering::SeqCst);
    }
}

/// Keep only fields whose JSON text is at most 64 bytes (§4.3).
fn trim_fields(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, field| field.to_string().len() <= 64);
    }
}

/// Turn one NOTIFY payload into a `postgres_changes` `data` object and fan it out.
fn handle_change(shared: &Shared, client: &mut postgres::Client, payload: &str) {
    let rt = &shared.rt;
    if rt.drop_events.load(Ordering::SeqCst) {
        return; // rate-limited changes are consumed and lost (§7)
    }
    let Ok(Value::Object(change)) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    let s = |k: &str| {
        change
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (schema, table_name, kind) = (s("schema"), s("table"), s("type"));
    let Ok(Some(table)) = shared.schema.get(client, &table_name) else {
        return;
    };
    let mut record = change.get("record").cloned();
    if let Some(pk) = change.get("record_pk") {
        // The change was too large for NOTIFY: read the row back by its key (skip if gone).
        let cond = table
            .pk
            .iter()
            .map(|c| format!("t.{0} = k.{0}", ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT to_jsonb(t)::text FROM {q} t, jsonb_populate_record(NULL::{q}, $1::text::jsonb) k WHERE {cond}",
            q = qualified(&table_name)
        );
        match client.query_opt(sql.as_str(), &[&pk.to_string()]) {
            Ok(Some(row)) => record = serde_json::from_str(&row.get::<_, String>(0)).ok(),
            _ => return,
        }
    }
    let old_record = change.get("old_record").cloned();
    let has_pk = change
        .get("has_pk")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let mut data = Map::new();
    data.insert("schema".into(), json!(schema));
    data.insert("table".into(), json!(table_name));
    data.insert("type".into(), json!(kind));
    if has_pk {
        data.insert(
            "commit_timestamp".into(),
            change
                .get("commit_timestamp")
                .cloned()
                .unwrap_or(Value::Null),
        );
        data.insert(
            "columns".into(),
            Value::Array(
                table
                    .columns
                    .iter()
                    .map(|c| json!({"name": c.name, "type": c.typname}))
                    .collect(),
            ),
        );
        if kind != "DELETE" {
            data.insert("record".into(), record.clone().unwrap_or_else(|| json!({})));
        }
        if kind != "INSERT" {
            data.insert(
                "old_record".into(),
                old_record.clone().unwrap_or_else(|| json!({})),
            );
        }
        data.insert("errors".into(), Value::Null);
        let too_big = Value::Object(data.clone()).to_string().len() > MAX_RECORD_BYTES;
        if too_big || rt.oversized_events.load(Ordering::SeqCst) {
            for k in ["record", "old_record"] {
                if let Some(v) = data.get_mut(k) {
                    trim_fields(v);
                }
            }
            data.insert("errors".into(), json!(["Error 413: Payload Too Large"]));
        }
    } else {
        // A table without a primary key (§4.3).
        data.insert("commit_timestamp".into(), Value::Null);
        data.insert("columns".into(), json!([]));
        if kind != "DELETE" {
            data.insert("record".into(), json!({}));
        }
        if kind != "INSERT" {
            data.insert("old_record".into(), json!({}));
        }
        data.insert(
            "errors".into(),
            json!(["Error 400: Bad Request, no primary key"]),
        );
    }
    let data = Value::Object(data);

    // Filters see the new row (the old one for DELETE), untrimmed.
    let match_row = if kind == "DELETE" { old_record } else { record }
        .and_then(|v| match v {
            Value::Object(o) => Some(o),
            _ => None,
        })
        .unwrap_or_default();
    let all_types = rt.all_types.load(Ordering::SeqCst);
    let copies = if rt.duplicate_events.load(Ordering::SeqCst) {
        2
    } else {
        1
    };
    for conn in rt.snapshot() {
        let chans = conn.channels.lock().unwrap();
        for (topic, ch) in chans.iter().filter(|(_, ch)| ch.live) {
            let ids: Vec<u64> = ch
                .bindings
                .iter()
                .filter(|b| {
                    (all_types || b.event == "*" || b.event == kind)
                        && (b.schema == "*" || b.schema == schema)
                        && (b.table == "*" || b.table == table_name)
                        && b.conds.iter().all(|c| cond_matches(c, &match_row, &table))
                })
                .map(|b| b.id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let frame = ServerFrame {
                topic: topic.clone(),
                event: "postgres_changes".into(),
                payload: json!({"ids": ids, "data": data}),
                reference: Value::Null,
                join_ref: Value::Null,
            };
            for _ in 0..copies {
                let _ = conn.tx.send(Out::Frame(frame.clone()));
            }
        }
    }
}
