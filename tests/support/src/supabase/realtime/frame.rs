//! The Phoenix wire format (§2.3): V1 frames are objects `{topic, event, payload, ref}`, V2
//! frames are arrays `[join_ref, ref, topic, event, payload]`; the frames the server builds
//! (replies, `system` messages, `phx_close` / `phx_error`).

use serde_json::{json, Value};

use super::channel::Channel;

/// Serializer version of a socket (§2.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Vsn {
    V1,
    V2,
}

/// A frame the server sends; `join_ref` is used only by the V2 encoding (§2.3).
#[derive(Debug, Clone)]
pub(super) struct ServerFrame {
    pub(super) topic: String,
    pub(super) event: String,
    pub(super) payload: Value,
    pub(super) reference: Value,
    pub(super) join_ref: Value,
}

impl ServerFrame {
    /// The frame's text in the socket's serializer version.
    pub(super) fn encode(&self, vsn: Vsn) -> String {
        match vsn {
            Vsn::V1 => json!({
                "topic": self.topic, "event": self.event, "payload": self.payload, "ref": self.reference
            }),
            Vsn::V2 => json!([self.join_ref, self.reference, self.topic, self.event, self.payload]),
        }
        .to_string()
    }
}

/// A frame as the client sent it.
pub(super) struct ClientFrame {
    pub(super) topic: String,
    pub(super) event: String,
    pub(super) payload: Value,
    pub(super) reference: Value,
    pub(super) join_ref: Value,
}

impl ClientFrame {
    /// V1: an object with `topic`, `event`, `payload`, `ref` all present; V2: a 5-array.
    pub(super) fn decode(vsn: Vsn, v: &Value) -> Option<ClientFrame> {
        match vsn {
            Vsn::V1 => {
                let o = v.as_object()?;
                Some(ClientFrame {
                    topic: o.get("topic")?.as_str()?.to_string(),
                    event: o.get("event")?.as_str()?.to_string(),
                    payload: o.get("payload")?.clone(),
                    reference: o.get("ref")?.clone(),
                    join_ref: o.get("join_ref").cloned().unwrap_or(Value::Null),
                })
            }
            Vsn::V2 => {
                let a = v.as_array().filter(|a| a.len() == 5)?;
                Some(ClientFrame {
                    join_ref: a[0].clone(),
                    reference: a[1].clone(),
                    topic: a[2].as_str()?.to_string(),
                    event: a[3].as_str()?.to_string(),
                    payload: a[4].clone(),
                })
            }
        }
    }

    /// A `phx_reply` to this frame with `{status, response}`.
    pub(super) fn reply(&self, status: &str, response: Value) -> ServerFrame {
        ServerFrame {
            topic: self.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({"status": status, "response": response}),
            reference: self.reference.clone(),
            join_ref: self.join_ref.clone(),
        }
    }
}

/// A `system` message on a channel (`extension`, `status`, `message`).
pub(super) fn system_frame(
    topic: &str,
    ch: &Channel,
    extension: &str,
    status: &str,
    message: &str,
) -> ServerFrame {
    ServerFrame {
        topic: topic.to_string(),
        event: "system".into(),
        payload: json!({"channel": ch.sub, "extension": extension, "status": status, "message": message}),
        reference: Value::Null,
        join_ref: ch.join_ref.clone(),
    }
}

/// The "Subscribed to PostgreSQL" system message that makes a channel live (§3.4).
pub(super) fn subscribed_frame(topic: &str, ch: &Channel) -> ServerFrame {
    system_frame(
        topic,
        ch,
        "postgres_changes",
        "ok",
        "Subscribed to PostgreSQL",
    )
}

/// `phx_close` / `phx_error`: `ref` is the channel's join_ref (§2.3).
pub(super) fn close_like_frame(topic: &str, ch: &Channel, event: &str) -> ServerFrame {
    ServerFrame {
        topic: topic.to_string(),
        event: event.into(),
        payload: json!({}),
        reference: ch.join_ref.clone(),
        join_ref: ch.join_ref.clone(),
    }
}
