//! Broadcast from the database (docs/supabase.md §12.2): the `realtime` schema of a project
//! (`realtime.messages`, `realtime.send`, see `realtime_schema.sql`), a row trigger the double
//! owns on `realtime.messages` that reports each insert through NOTIFY, and the fan-out of each
//! inserted message to the channels joined to its topic with the same privacy, as
//! `Realtime.Tenants.ReplicationConnection` and `RealtimeWeb.Socket.UserBroadcast` do.
//!
//! Invariants:
//! - only committed inserts are delivered (NOTIFY fires at commit, like logical replication);
//! - a message reaches a channel iff the channel's sub-topic equals the message's `topic` and
//!   its `private` flag equals the message's (the real server keys the two on different tenant
//!   topics); it is delivered to every such channel, joined or re-joined since, without waiting
//!   for any `postgres_changes` subscription;
//! - a row missing `event`, `topic`, `private` or a JSON `payload` is not delivered (the real
//!   server logs `UnableToBroadcastChanges` and drops it);
//! - the drop faults are decided once per message, before the fan-out: a dropped message
//!   reaches nobody.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::super::Shared;
use super::frame::ServerFrame;
use super::Out;

/// The NOTIFY channel the broadcast trigger reports on.
pub(super) const NOTIFY_CHANNEL: &str = "sms_double_broadcasts";
/// The trigger's name on `realtime.messages`.
const TRIGGER_NAME: &str = "00_sms_double_broadcasts";

/// The `realtime` schema of a Supabase project (idempotent SQL).
pub(crate) const REALTIME_SCHEMA_SQL: &str = include_str!("realtime_schema.sql");

/// Switches that lose database broadcasts (see the `SupabaseDouble` fault methods).
#[derive(Default)]
pub(crate) struct BroadcastFaults {
    drop_next: AtomicU64,
    /// Probability in [0, 1] that a message is lost.
    drop_probability: Mutex<f64>,
    /// Sub-topics (without `realtime:`) whose messages are all lost.
    drop_topics: Mutex<HashSet<String>>,
}

impl BroadcastFaults {
    pub(crate) fn drop_next(&self, n: u64) {
        self.drop_next.fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn set_drop_probability(&self, p: f64) {
        *self.drop_probability.lock().unwrap() = p.clamp(0.0, 1.0);
    }

    pub(crate) fn set_drop_topic(&self, topic: &str, drop: bool) {
        let mut topics = self.drop_topics.lock().unwrap();
        if drop {
            topics.insert(topic.to_string());
        } else {
            topics.remove(topic);
        }
    }

    /// Whether the message on `topic` is lost (consumes one "drop next" when it applies).
    fn should_drop(&self, topic: &str) -> bool {
        if self.drop_topics.lock().unwrap().contains(topic) {
            return true;
        }
        if self
            .drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return true;
        }
        let p = *self.drop_probability.lock().unwrap();
        p > 0.0 && fastrand::f64() < p
    }
}

/// Install (idempotently) the `realtime` schema and the double's NOTIFY trigger on
/// `realtime.messages`. Serialised by the same advisory lock as the change triggers.
pub(crate) fn install_broadcast(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(73570001)")?;
    tx.batch_execute(REALTIME_SCHEMA_SQL)?;
    tx.batch_execute(&format!(
        r#"
CREATE SCHEMA IF NOT EXISTS sms_double;
CREATE SEQUENCE IF NOT EXISTS sms_double.change_seq;
CREATE OR REPLACE FUNCTION sms_double.notify_broadcast() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  msg text;
BEGIN
  -- seq keeps payloads distinct: NOTIFY folds identical payloads within one transaction.
  msg := jsonb_build_object(
    'seq', nextval('sms_double.change_seq'), 'id', NEW.id, 'topic', NEW.topic,
    'event', NEW.event, 'private', NEW.private, 'payload', NEW.payload,
    'binary', NEW.binary_payload IS NOT NULL)::text;
  -- NOTIFY payloads must stay under 8000 bytes: send the key and let the double re-read.
  IF octet_length(msg) > 7900 THEN
    msg := jsonb_build_object('seq', nextval('sms_double.change_seq'), 'id', NEW.id,
                              'reread', true)::text;
  END IF;
  PERFORM pg_notify('{NOTIFY_CHANNEL}', msg);
  RETURN NULL;
END
$fn$;
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger
                  WHERE tgrelid = 'realtime.messages'::regclass AND tgname = '{TRIGGER_NAME}') THEN
    CREATE TRIGGER "{TRIGGER_NAME}" AFTER INSERT ON realtime.messages
      FOR EACH ROW EXECUTE FUNCTION sms_double.notify_broadcast();
  END IF;
END
$do$;
"#
    ))?;
    tx.commit()
}

/// One inserted `realtime.messages` row, as the replication connection decodes it.
struct Message {
    id: String,
    topic: String,
    event: String,
    private: bool,
    /// The JSON payload as text (sent as is, like `Jason.Fragment`).
    payload: Value,
}

/// The message from a NOTIFY payload (re-reading rows too large for NOTIFY); `None` when a
/// field the server requires is missing or the payload is binary.
fn decode(client: &mut postgres::Client, notify: &str) -> Option<Message> {
    let mut v: Value = serde_json::from_str(notify).ok()?;
    if v.get("reread").is_some() {
        let id = v.get("id")?.as_str()?.to_string();
        let row = client
            .query_opt(
                "SELECT jsonb_build_object('id', id, 'topic', topic, 'event', event, \
                   'private', private, 'payload', payload, \
                   'binary', binary_payload IS NOT NULL)::text \
                 FROM realtime.messages WHERE id = $1::text::uuid",
                &[&id],
            )
            .ok()??;
        v = serde_json::from_str(&row.get::<_, String>(0)).ok()?;
    }
    if v.get("binary").and_then(Value::as_bool) == Some(true) {
        // V1 sockets cannot carry binary payloads; V2 binary frames are not modelled.
        return None;
    }
    let payload = v.get("payload").filter(|p| !p.is_null())?.clone();
    Some(Message {
        id: v.get("id")?.as_str()?.to_string(),
        topic: v.get("topic")?.as_str()?.to_string(),
        event: v.get("event")?.as_str()?.to_string(),
        private: v.get("private")?.as_bool()?,
        payload,
    })
}

/// Deliver one NOTIFY from the broadcast trigger to every matching channel.
pub(super) fn handle_broadcast(shared: &Shared, client: &mut postgres::Client, notify: &str) {
    let rt = &shared.rt;
    let Some(m) = decode(client, notify) else {
        return;
    };
    if rt.broadcast_faults.should_drop(&m.topic) {
        return;
    }
    let payload = json!({
        "type": "broadcast",
        "event": m.event,
        "payload": m.payload,
        "meta": {"id": m.id},
    });
    for conn in rt.snapshot() {
        let chans = conn.channels.lock().unwrap();
        for (topic, _) in chans
            .iter()
            .filter(|(_, ch)| ch.sub == m.topic && ch.private == m.private)
        {
            let _ = conn.tx.send(Out::Frame(ServerFrame {
                topic: topic.clone(),
                event: "broadcast".into(),
                payload: payload.clone(),
                reference: Value::Null,
                join_ref: Value::Null,
            }));
        }
    }
}
