//! Phoenix V1 frames (`vsn=1.0.0`, JSON objects) as Supabase Realtime speaks them: the few we
//! send (join, heartbeat, leave) and a typed view of those we receive.
//!
//! Decoding never panics and never trusts shape: anything unexpected becomes
//! [`ServerFrame::Other`] or a [`FrameError`]. A `postgres_changes` event is reduced at once to
//! what the pipeline needs (the row's id, status and direction); the rest of the record, including
//! the message body, is skipped by the parser and never kept.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The change types this service subscribes to, one `postgres_changes` binding each, in this
/// order: an UPDATE into `queued_for_send` (the schema's trigger queues `pending` rows that way),
/// and an INSERT of a row born `queued_for_send` (an app, or a requeue done as an INSERT), which
/// an UPDATE binding never sees (docs/supabase.md §5.1). Two items rather than one `*`: DELETEs of
/// queued rows would match `*` too, and each event then names the binding it matched.
pub const BINDING_EVENTS: [&str; 2] = ["INSERT", "UPDATE"];
/// Schema of the watched table.
pub const BINDING_SCHEMA: &str = "public";
/// The watched table.
pub const BINDING_TABLE: &str = "messages";
/// The row filter: only rows (new or just changed) in `queued_for_send`.
pub const BINDING_FILTER: &str = "status=eq.queued_for_send";

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable Realtime frame: {}", self.0)
    }
}

/// The parts of a changed row the pipeline looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangedRow {
    /// `record.id`, when present and a string.
    pub id: Option<String>,
    /// `record.status`, when present.
    pub status: Option<String>,
    /// `record.direction`, when present.
    pub direction: Option<String>,
}

/// A `postgres_changes` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Binding ids (from the join reply) this change matched.
    pub ids: Vec<u64>,
    /// `data.schema`.
    pub schema: String,
    /// `data.table`.
    pub table: String,
    /// `data.type`: `INSERT`, `UPDATE` or `DELETE`.
    pub kind: String,
    /// The new row (absent for DELETE).
    pub record: Option<ChangedRow>,
    /// `data.errors` was non-null (e.g. 413): do not trust `record` beyond its id.
    pub has_errors: bool,
}

/// A received frame, typed by its event.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// `phx_reply` to one of our pushes.
    Reply {
        /// The channel (or `phoenix` for heartbeats).
        topic: String,
        /// The echoed ref.
        reference: Option<String>,
        /// `ok` or `error`.
        status: String,
        /// `payload.response`.
        response: Value,
    },
    /// `system`: subscription results and server notices.
    System {
        /// The channel.
        topic: String,
        /// `postgres_changes` or `system`.
        extension: String,
        /// `ok` or `error`.
        status: String,
        /// Human-readable text (match on it; there is no code).
        message: String,
    },
    /// `postgres_changes`.
    Change {
        /// The channel.
        topic: String,
        /// The change.
        change: Change,
    },
    /// `phx_close`: the channel with this join ref is gone.
    Close {
        /// The channel.
        topic: String,
        /// The join ref of the closed channel.
        reference: Option<String>,
    },
    /// `phx_error`: the channel with this join ref crashed.
    Error {
        /// The channel.
        topic: String,
        /// The join ref of the crashed channel.
        reference: Option<String>,
    },
    /// `broadcast`: a Broadcast message on the channel (from the database: `realtime.send`).
    Broadcast {
        /// The channel.
        topic: String,
        /// The sender's event name (`payload.event`).
        event: String,
        /// `payload.payload.id`, when present and a string.
        id: Option<String>,
    },
    /// `presence_state`: every member of the channel, as (key, `phx_ref`) pairs.
    PresenceState {
        /// The channel.
        topic: String,
        /// One entry per meta.
        metas: Vec<(String, String)>,
    },
    /// `presence_diff`: members that joined and left since the last state or diff.
    PresenceDiff {
        /// The channel.
        topic: String,
        /// (key, `phx_ref`) of each meta that joined.
        joins: Vec<(String, String)>,
        /// (key, `phx_ref`) of each meta that left.
        leaves: Vec<(String, String)>,
    },
    /// Anything else (unknown events): ignored.
    Other {
        /// The channel.
        topic: String,
        /// The event name.
        event: String,
    },
}

/// The frame's fields, read in one pass. The server writes `event` before `payload` (Jason
/// encodes a small map's keys in sorted order), so the payload is usually decoded straight into
/// its type; a frame with the payload first keeps it raw and decodes it afterwards. (Reading
/// every payload as a `RawValue` first, then again, made each event cost two parses.)
struct Envelope<'a> {
    topic: String,
    event: String,
    payload: Payload<'a>,
    reference: Option<Value>,
}

/// A payload, decoded by event or kept raw until the event is known.
enum Payload<'a> {
    Missing,
    Raw(&'a RawValue),
    Reply(ReplyPayload),
    System(SystemPayload),
    Change(ChangePayload),
    Broadcast(BroadcastPayload),
    /// A Presence map, read entry by entry later (its keys are member keys, not fields).
    Presence(&'a RawValue),
    /// An event whose payload is not read.
    Skipped,
}

impl<'a> Payload<'a> {
    /// The payload of a frame whose event is `event`, from the stream.
    fn read<A: serde::de::MapAccess<'a>>(event: &str, map: &mut A) -> Result<Self, A::Error> {
        use serde::de::Error;
        let wrap = |e: A::Error| A::Error::custom(format!("{event} payload: {e}"));
        // `null` is no payload, as when it is kept raw.
        Ok(match event {
            "phx_reply" => map
                .next_value::<Option<_>>()
                .map_err(wrap)?
                .map(Payload::Reply),
            "system" => map
                .next_value::<Option<_>>()
                .map_err(wrap)?
                .map(Payload::System),
            "postgres_changes" => map
                .next_value::<Option<_>>()
                .map_err(wrap)?
                .map(Payload::Change),
            "broadcast" => map
                .next_value::<Option<_>>()
                .map_err(wrap)?
                .map(Payload::Broadcast),
            "presence_state" | "presence_diff" => map
                .next_value::<Option<&'a RawValue>>()
                .map_err(wrap)?
                .map(Payload::Presence),
            _ => {
                map.next_value::<serde::de::IgnoredAny>()?;
                Some(Payload::Skipped)
            }
        }
        .unwrap_or(Payload::Missing))
    }

    /// The payload of a frame whose event is `event`, decoded now if it was kept raw.
    fn typed<T: Deserialize<'a>>(
        self,
        event: &str,
        pick: fn(Payload<'a>) -> Option<T>,
    ) -> Result<T, FrameError> {
        match self {
            Payload::Missing => Err(FrameError(format!("{event} without payload"))),
            Payload::Raw(raw) => serde_json::from_str(raw.get())
                .map_err(|e| FrameError(format!("{event} payload: {e}"))),
            other => pick(other).ok_or_else(|| FrameError(format!("{event} payload: mixed up"))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Envelope<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fields<'a> {
            type Value = Envelope<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Phoenix frame object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let (mut topic, mut event) = (None::<String>, None::<String>);
                let (mut payload, mut reference) = (Payload::Missing, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "topic" => topic = Some(map.next_value()?),
                        "event" => event = Some(map.next_value()?),
                        "payload" => {
                            payload = match &event {
                                Some(event) => Payload::read(event, &mut map)?,
                                None => Payload::Raw(map.next_value()?),
                            }
                        }
                        "ref" => reference = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Envelope {
                    topic: topic.ok_or_else(|| A::Error::missing_field("topic"))?,
                    event: event.ok_or_else(|| A::Error::missing_field("event"))?,
                    // A `null` payload is no payload.
                    payload: match payload {
                        Payload::Raw(raw) if raw.get() == "null" => Payload::Missing,
                        other => other,
                    },
                    reference,
                })
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ReplyPayload {
    status: String,
    #[serde(default)]
    response: Value,
}

#[derive(Deserialize)]
struct SystemPayload {
    #[serde(default)]
    extension: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<Value>,
}

#[derive(Deserialize)]
struct ChangePayload {
    #[serde(default)]
    ids: Vec<Value>,
    data: ChangeData,
}

#[derive(Deserialize)]
struct ChangeData {
    #[serde(default)]
    schema: String,
    #[serde(default)]
    table: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    record: Option<RecordView>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct BroadcastPayload {
    #[serde(default)]
    event: String,
    #[serde(default)]
    payload: Option<BroadcastBody>,
}

/// Only the id of a broadcast's own payload is read.
#[derive(Deserialize)]
struct BroadcastBody {
    #[serde(default)]
    id: Option<Value>,
}

#[derive(Deserialize)]
struct DiffPayload<'a> {
    #[serde(default, borrow)]
    joins: Option<&'a RawValue>,
    #[serde(default, borrow)]
    leaves: Option<&'a RawValue>,
}

/// One member's entry in a Presence map; other fields of a meta are skipped unread.
#[derive(Deserialize)]
struct PresenceEntry {
    #[serde(default)]
    metas: Vec<PresenceMeta>,
}

#[derive(Deserialize)]
struct PresenceMeta {
    #[serde(default)]
    phx_ref: Option<Value>,
}

/// The (key, `phx_ref`) pairs of a Presence map `{key: {"metas": [{"phx_ref": …}, …]}}`. Each
/// entry is read on its own and one of another shape is skipped, so nothing a member put in its
/// meta can make the frame unreadable.
fn presence_metas(map: Option<&RawValue>) -> Vec<(String, String)> {
    let Some(entries) = map.and_then(|m| {
        serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(m.get()).ok()
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, entry) in entries {
        let Ok(entry) = serde_json::from_str::<PresenceEntry>(entry.get()) else {
            continue;
        };
        for meta in entry.metas {
            if let Some(r) = string_of(meta.phx_ref) {
                out.push((key.clone(), r));
            }
        }
    }
    out
}

/// Only these fields of the record are read; serde skips the rest (body included).
#[derive(Deserialize)]
struct RecordView {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    direction: Option<Value>,
}

fn ref_string(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn string_of(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Decode one text frame.
pub fn decode(text: &str) -> Result<ServerFrame, FrameError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| FrameError(format!("envelope: {e}")))?;
    let topic = env.topic;
    Ok(match env.event.as_str() {
        "phx_reply" => {
            let p = env.payload.typed("phx_reply", |p| match p {
                Payload::Reply(r) => Some(r),
                _ => None,
            })?;
            ServerFrame::Reply {
                topic,
                reference: ref_string(env.reference),
                status: p.status,
                response: p.response,
            }
        }
        "system" => {
            let p = env.payload.typed("system", |p| match p {
                Payload::System(s) => Some(s),
                _ => None,
            })?;
            let message = match p.message {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            ServerFrame::System {
                topic,
                extension: p.extension.unwrap_or_default(),
                status: p.status.unwrap_or_default(),
                message,
            }
        }
        "postgres_changes" => change(topic, env.payload)?,
        "broadcast" => broadcast(topic, env.payload)?,
        "presence_state" => presence_state(topic, env.payload)?,
        "presence_diff" => presence_diff(topic, env.payload)?,
        "phx_close" => ServerFrame::Close {
            topic,
            reference: ref_string(env.reference),
        },
        "phx_error" => ServerFrame::Error {
            topic,
            reference: ref_string(env.reference),
        },
        _ => ServerFrame::Other {
            topic,
            event: env.event,
        },
    })
}

/// A `postgres_changes` frame, reduced to what the pipeline reads.
fn change(topic: String, payload: Payload<'_>) -> Result<ServerFrame, FrameError> {
    let p = payload.typed("postgres_changes", |p| match p {
        Payload::Change(c) => Some(c),
        _ => None,
    })?;
    let record = p.data.record.map(|r| ChangedRow {
        id: string_of(r.id),
        status: string_of(r.status),
        direction: string_of(r.direction),
    });
    Ok(ServerFrame::Change {
        topic,
        change: Change {
            ids: p.ids.iter().filter_map(Value::as_u64).collect(),
            schema: p.data.schema,
            table: p.data.table,
            kind: p.data.kind,
            record,
            has_errors: p.data.errors.is_some_and(|e| !e.is_null()),
        },
    })
}

/// A `broadcast` frame: its event and the id of its payload.
fn broadcast(topic: String, payload: Payload<'_>) -> Result<ServerFrame, FrameError> {
    let p = payload.typed("broadcast", |p| match p {
        Payload::Broadcast(b) => Some(b),
        _ => None,
    })?;
    Ok(ServerFrame::Broadcast {
        topic,
        event: p.event,
        id: p.payload.and_then(|inner| string_of(inner.id)),
    })
}

/// A `presence_state` frame: every meta of every member.
fn presence_state(topic: String, payload: Payload<'_>) -> Result<ServerFrame, FrameError> {
    let state: &RawValue = payload.typed("presence_state", |p| match p {
        Payload::Presence(v) => Some(v),
        _ => None,
    })?;
    Ok(ServerFrame::PresenceState {
        topic,
        metas: presence_metas(Some(state)),
    })
}

/// A `presence_diff` frame: the metas that joined and left.
fn presence_diff(topic: String, payload: Payload<'_>) -> Result<ServerFrame, FrameError> {
    let raw: &RawValue = payload.typed("presence_diff", |p| match p {
        Payload::Presence(v) => Some(v),
        _ => None,
    })?;
    let diff: DiffPayload<'_> = serde_json::from_str(raw.get())
        .map_err(|e| FrameError(format!("presence_diff payload: {e}")))?;
    Ok(ServerFrame::PresenceDiff {
        topic,
        joins: presence_metas(diff.joins),
        leaves: presence_metas(diff.leaves),
    })
}

/// The `phx_join` for our bindings. `access_token` only for legacy JWT keys (docs/supabase.md §1.3);
/// `private` only on a project that refused a public channel (docs/supabase.md §3.2).
pub fn join(topic: &str, join_ref: &str, access_token: Option<&str>, private: bool) -> String {
    let bindings: Vec<Value> = BINDING_EVENTS
        .iter()
        .map(|event| {
            json!({
                "event": event,
                "schema": BINDING_SCHEMA,
                "table": BINDING_TABLE,
                "filter": BINDING_FILTER,
            })
        })
        .collect();
    let mut payload = json!({
        "config": {
            "broadcast": {"ack": false, "self": false},
            "presence": {"enabled": false, "key": ""},
            "postgres_changes": bindings,
            "private": private,
        }
    });
    if let Some(token) = access_token {
        payload["access_token"] = Value::String(token.to_string());
    }
    json!({"topic": topic, "event": "phx_join", "payload": payload, "ref": join_ref, "join_ref": join_ref})
        .to_string()
}

/// The `phx_join` of a private Broadcast channel (no Postgres Changes), with Presence enabled
/// under `presence_key` when given. `access_token` only for legacy JWT keys.
pub fn join_broadcast(
    topic: &str,
    join_ref: &str,
    access_token: Option<&str>,
    presence_key: Option<&str>,
) -> String {
    let mut payload = json!({
        "config": {
            "broadcast": {"ack": false, "self": false},
            "presence": {"enabled": presence_key.is_some(), "key": presence_key.unwrap_or("")},
            "postgres_changes": [],
            "private": true,
        }
    });
    if let Some(token) = access_token {
        payload["access_token"] = Value::String(token.to_string());
    }
    json!({"topic": topic, "event": "phx_join", "payload": payload, "ref": join_ref, "join_ref": join_ref})
        .to_string()
}

/// The Presence `track` of this instance on the channel joined with `join_ref`.
pub fn track(topic: &str, reference: &str, join_ref: &str, meta: &Value) -> String {
    json!({
        "topic": topic,
        "event": "presence",
        "payload": {"type": "presence", "event": "track", "payload": meta},
        "ref": reference,
        "join_ref": join_ref,
    })
    .to_string()
}

/// A heartbeat on the `phoenix` topic.
pub fn heartbeat(reference: &str) -> String {
    json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": reference}).to_string()
}

/// A `phx_leave` for the channel joined with `join_ref`.
pub fn leave(topic: &str, reference: &str, join_ref: &str) -> String {
    json!({"topic": topic, "event": "phx_leave", "payload": {}, "ref": reference, "join_ref": join_ref})
        .to_string()
}

/// The server's ids for our bindings, from the join reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bindings {
    /// The INSERT binding's id.
    pub insert: u64,
    /// The UPDATE binding's id.
    pub update: u64,
}

impl Bindings {
    /// Whether a change of type `kind` listing `ids` is for us: the binding of that very type is
    /// among the ids (realtime-js's rule; older servers send every type to every binding that
    /// matches table and filter, docs/supabase.md §5.2).
    pub fn matches(&self, kind: &str, ids: &[u64]) -> bool {
        match kind {
            "INSERT" => ids.contains(&self.insert),
            "UPDATE" => ids.contains(&self.update),
            _ => false,
        }
    }
}

/// Check an `ok` join reply's `response`: exactly our bindings echoed back in request order
/// (docs/supabase.md §3.3), each with an integer id. Returns the ids, or why the reply does not match (realtime-js
/// calls this a binding mismatch).
pub fn binding_ids(response: &Value) -> Result<Bindings, String> {
    let items = echoed_items(response)?;
    let [insert, update] = items else {
        return Err(format!(
            "expected {} postgres_changes bindings, got {}",
            BINDING_EVENTS.len(),
            items.len()
        ));
    };
    Ok(Bindings {
        insert: item_id(insert, BINDING_EVENTS[0])?,
        update: item_id(update, BINDING_EVENTS[1])?,
    })
}

/// The single-binding form of [`binding_ids`]: `response` echoes exactly one item, the UPDATE
/// binding. Kept for the decoder property tests, which exercise the per-item comparison both
/// share.
pub fn binding_id(response: &Value) -> Result<u64, String> {
    let items = echoed_items(response)?;
    let [item] = items else {
        return Err(format!(
            "expected 1 postgres_changes binding, got {}",
            items.len()
        ));
    };
    item_id(item, "UPDATE")
}

fn echoed_items(response: &Value) -> Result<&[Value], String> {
    response
        .get("postgres_changes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| "the reply has no postgres_changes list".to_string())
}

/// The id of one echoed item, if it is our binding for `event` (compared case-insensitively).
fn item_id(item: &Value, event: &str) -> Result<u64, String> {
    let field = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    if !field("event").eq_ignore_ascii_case(event)
        || field("schema") != BINDING_SCHEMA
        || field("table") != BINDING_TABLE
        || field("filter") != BINDING_FILTER
    {
        return Err(format!(
            "mismatch between server and client bindings: {item}"
        ));
    }
    item.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("binding without an integer id: {item}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_frame_matches_the_protocol() {
        let v: Value =
            serde_json::from_str(&join("realtime:sms-sender", "3", Some("jwt"), false)).unwrap();
        assert_eq!(v["topic"], "realtime:sms-sender");
        assert_eq!(v["event"], "phx_join");
        assert_eq!(v["ref"], "3");
        assert_eq!(v["join_ref"], "3");
        assert_eq!(v["payload"]["access_token"], "jwt");
        let items = v["payload"]["config"]["postgres_changes"]
            .as_array()
            .unwrap();
        assert_eq!(items.len(), 2);
        for (pc, event) in items.iter().zip(["INSERT", "UPDATE"]) {
            assert_eq!(pc["event"], event);
            assert_eq!(pc["schema"], "public");
            assert_eq!(pc["table"], "messages");
            assert_eq!(pc["filter"], "status=eq.queued_for_send");
        }
        assert_eq!(v["payload"]["config"]["private"], false);
        let v: Value = serde_json::from_str(&join("realtime:x", "1", None, true)).unwrap();
        assert!(v["payload"].get("access_token").is_none());
        assert_eq!(v["payload"]["config"]["private"], true);
    }

    #[test]
    fn heartbeat_and_leave() {
        let v: Value = serde_json::from_str(&heartbeat("7")).unwrap();
        assert_eq!(
            v,
            json!({"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"})
        );
        let v: Value = serde_json::from_str(&leave("realtime:x", "9", "1")).unwrap();
        assert_eq!(v["event"], "phx_leave");
        assert_eq!(v["join_ref"], "1");
    }

    #[test]
    fn decodes_the_reference_frames() {
        let reply = r#"{"topic":"realtime:sms-sender","event":"phx_reply","ref":"1",
          "payload":{"status":"ok","response":{"postgres_changes":[
          {"id":31339886,"event":"UPDATE","schema":"public","table":"messages","filter":"status=eq.queued_for_send"}]}}}"#;
        let ServerFrame::Reply {
            reference,
            status,
            response,
            ..
        } = decode(reply).unwrap()
        else {
            panic!()
        };
        assert_eq!(reference.as_deref(), Some("1"));
        assert_eq!(status, "ok");
        assert_eq!(binding_id(&response), Ok(31339886));

        let system = r#"{"topic":"realtime:sms-sender","event":"system","ref":null,
          "payload":{"channel":"sms-sender","extension":"postgres_changes","status":"ok","message":"Subscribed to PostgreSQL"}}"#;
        assert_eq!(
            decode(system).unwrap(),
            ServerFrame::System {
                topic: "realtime:sms-sender".into(),
                extension: "postgres_changes".into(),
                status: "ok".into(),
                message: "Subscribed to PostgreSQL".into()
            }
        );

        let change = r#"{"topic":"realtime:sms-sender","event":"postgres_changes","ref":null,
          "payload":{"ids":[31339886],"data":{"schema":"public","table":"messages","type":"UPDATE",
          "commit_timestamp":"2026-08-21T10:15:30.123Z","columns":[{"name":"id","type":"uuid"}],
          "record":{"id":"6f1c2e0a-0000-4000-8000-000000000001","status":"queued_for_send",
          "direction":"outbound","content":"secret body","attempts":0},
          "old_record":{"id":"6f1c2e0a-0000-4000-8000-000000000001"},"errors":null}}}"#;
        let ServerFrame::Change { change, .. } = decode(change).unwrap() else {
            panic!()
        };
        assert_eq!(change.ids, [31339886]);
        assert_eq!(change.kind, "UPDATE");
        assert!(!change.has_errors);
        let rec = change.record.unwrap();
        assert_eq!(
            rec.id.as_deref(),
            Some("6f1c2e0a-0000-4000-8000-000000000001")
        );
        assert_eq!(rec.status.as_deref(), Some("queued_for_send"));
        assert_eq!(rec.direction.as_deref(), Some("outbound"));

        let close = r#"{"topic":"realtime:x","event":"phx_close","ref":"1","payload":{}}"#;
        assert_eq!(
            decode(close).unwrap(),
            ServerFrame::Close {
                topic: "realtime:x".into(),
                reference: Some("1".into())
            }
        );
        let err = r#"{"topic":"realtime:x","event":"phx_error","ref":"4","payload":{"reason":"channel_crash"}}"#;
        assert!(
            matches!(decode(err).unwrap(), ServerFrame::Error { reference: Some(r), .. } if r == "4")
        );
    }

    #[test]
    fn oversized_change_with_errors_is_flagged() {
        let f = r#"{"topic":"t","event":"postgres_changes","ref":null,"payload":{"ids":[1],
          "data":{"schema":"public","table":"messages","type":"UPDATE","record":{"id":"x"},
          "errors":["Error 413: Payload Too Large"]}}}"#;
        let ServerFrame::Change { change, .. } = decode(f).unwrap() else {
            panic!()
        };
        assert!(change.has_errors);
    }

    #[test]
    fn both_bindings_are_checked_in_request_order() {
        let item = |id: u64, event: &str| json!({"id": id, "event": event, "schema": "public", "table": "messages", "filter": "status=eq.queued_for_send"});
        let ok = json!({"postgres_changes": [item(7, "INSERT"), item(9, "update")]});
        let b = binding_ids(&ok).unwrap();
        assert_eq!(
            b,
            Bindings {
                insert: 7,
                update: 9
            }
        );
        assert!(b.matches("INSERT", &[7]));
        assert!(
            b.matches("UPDATE", &[7, 9]),
            "older servers list every binding"
        );
        assert!(
            !b.matches("UPDATE", &[7]),
            "an UPDATE must name the UPDATE binding"
        );
        assert!(!b.matches("DELETE", &[7, 9]));
        let swapped = json!({"postgres_changes": [item(9, "UPDATE"), item(7, "INSERT")]});
        assert!(binding_ids(&swapped).unwrap_err().contains("mismatch"));
        let one = json!({"postgres_changes": [item(7, "INSERT")]});
        assert!(binding_ids(&one).is_err());
    }

    #[test]
    fn binding_checks() {
        let ok = json!({"postgres_changes":[{"id":5,"event":"update","schema":"public","table":"messages","filter":"status=eq.queued_for_send"}]});
        assert_eq!(
            binding_id(&ok),
            Ok(5),
            "event is compared case-insensitively"
        );
        let wrong = json!({"postgres_changes":[{"id":5,"event":"UPDATE","schema":"public","table":"other","filter":"status=eq.queued_for_send"}]});
        assert!(binding_id(&wrong).unwrap_err().contains("mismatch"));
        let string_id = json!({"postgres_changes":[{"id":"5","event":"UPDATE","schema":"public","table":"messages","filter":"status=eq.queued_for_send"}]});
        assert!(binding_id(&string_id).is_err());
        assert!(binding_id(&json!({"postgres_changes":[]})).is_err());
        assert!(binding_id(&json!({})).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "[]",
            "{}",
            "null",
            "{\"topic\":1}",
            "{\"topic\":\"t\",\"event\":\"phx_reply\"}",
            "{\"topic\":\"t\",\"event\":\"postgres_changes\",\"payload\":{\"data\":5}}",
            "\u{0}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let unknown = r#"{"topic":"t","event":"something_new","payload":{},"ref":null}"#;
        assert!(matches!(
            decode(unknown).unwrap(),
            ServerFrame::Other { .. }
        ));
    }

    #[test]
    fn broadcast_and_presence_frames_keep_only_what_scaled_mode_reads() {
        let broadcast = r#"{"topic":"realtime:sms-sender:p3","event":"broadcast","payload":{"event":"queued","meta":{"id":"m1"},"payload":{"id":"00000000-0000-4000-8000-000000000001","extra":[1,2]},"type":"broadcast"},"ref":null}"#;
        assert_eq!(
            decode(broadcast).unwrap(),
            ServerFrame::Broadcast {
                topic: "realtime:sms-sender:p3".into(),
                event: "queued".into(),
                id: Some("00000000-0000-4000-8000-000000000001".into()),
            }
        );
        let no_id = r#"{"topic":"t","event":"broadcast","payload":{"event":"queued","payload":{"id":7},"type":"broadcast"},"ref":null}"#;
        assert!(matches!(
            decode(no_id).unwrap(),
            ServerFrame::Broadcast { id: None, .. }
        ));
        let state = r#"{"topic":"m","event":"presence_state","payload":{"a":{"metas":[{"phx_ref":"F1","partitions":16},{"phx_ref":"F2"}]},"b":{"metas":[{"nope":1}]},"c":5},"ref":null}"#;
        assert_eq!(
            decode(state).unwrap(),
            ServerFrame::PresenceState {
                topic: "m".into(),
                metas: vec![("a".into(), "F1".into()), ("a".into(), "F2".into())],
            }
        );
        let diff = r#"{"topic":"m","event":"presence_diff","payload":{"joins":{"b":{"metas":[{"phx_ref":"F3"}]}},"leaves":{"a":{"metas":[{"phx_ref":"F1","phx_ref_prev":"F0"}]}}},"ref":null}"#;
        assert_eq!(
            decode(diff).unwrap(),
            ServerFrame::PresenceDiff {
                topic: "m".into(),
                joins: vec![("b".into(), "F3".into())],
                leaves: vec![("a".into(), "F1".into())],
            }
        );
    }

    #[test]
    fn the_payload_decodes_alike_before_and_after_the_event() {
        let payload = r#"{"ids":[7],"data":{"schema":"public","table":"messages","type":"UPDATE","record":{"id":"m1","status":"queued_for_send","direction":"outbound","content":"hi"},"errors":null}}"#;
        let event_first =
            format!(r#"{{"topic":"t","event":"postgres_changes","payload":{payload},"ref":null}}"#);
        let payload_first =
            format!(r#"{{"payload":{payload},"topic":"t","ref":null,"event":"postgres_changes"}}"#);
        let frame = decode(&event_first).unwrap();
        assert!(matches!(&frame, ServerFrame::Change { change, .. } if change.ids == [7]));
        assert_eq!(decode(&payload_first).unwrap(), frame);
        for text in [
            r#"{"topic":"t","event":"phx_reply","payload":null,"ref":"1"}"#,
            r#"{"payload":null,"topic":"t","event":"phx_reply","ref":"1"}"#,
        ] {
            assert!(
                decode(text)
                    .unwrap_err()
                    .0
                    .contains("phx_reply without payload"),
                "{text}"
            );
        }
        for text in [
            r#"{"topic":"t","event":"postgres_changes","payload":{"data":5}}"#,
            r#"{"payload":{"data":5},"topic":"t","event":"postgres_changes"}"#,
        ] {
            assert!(
                decode(text)
                    .unwrap_err()
                    .0
                    .contains("postgres_changes payload"),
                "{text}"
            );
        }
    }
}
