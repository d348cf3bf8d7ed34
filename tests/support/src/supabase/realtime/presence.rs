//! Presence (docs/supabase.md §12.3), as `RealtimeWeb.RealtimeChannel.PresenceHandler` and
//! Phoenix's tracker (`Phoenix.Tracker.Shard`) behave on one node: the `presence` client
//! event (`track`, `untrack`), `presence_state` after a join with presence enabled, and
//! `presence_diff` `{joins, leaves}` to every channel of the topic when a member tracks,
//! changes its payload, untracks, leaves, or its socket ends.
//!
//! Invariants:
//! - a presence topic is a sub-topic *and* a privacy: private and public channels of the same
//!   name never see each other's members (the server keys them on different tenant topics);
//! - one entry per channel: its key is the join's `presence.key` (a random UUID when empty) and
//!   its meta is the tracked payload plus `phx_ref` (and `phx_ref_prev` after an update), refs
//!   made like `Phoenix.Tracker.Shard.random_ref/0`;
//! - every entry of a channel is removed, with a `leaves` diff, whenever the channel ends for any
//!   reason; a vanished socket's channels end only when its idle timeout closes it;
//! - a private channel receives diffs only once presence was enabled on it (at join or by a
//!   track); a public one receives them always (the dispatcher's `presence_read?` gate);
//! - a channel may send at most [`CLIENT_MAX_CALLS`] presence events per
//!   [`CLIENT_WINDOW`]; one more shuts the channel down (the server's client rate limit).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::super::PresenceFault;
use super::channel::Channel;
use super::frame::{close_like_frame, system_frame, ClientFrame, ServerFrame};
use super::socket::{Closed, Socket};
use super::{Conn, Out, RealtimeState};

/// `CLIENT_PRESENCE_MAX_CALLS` default (supabase/realtime `config/runtime.exs`).
const CLIENT_MAX_CALLS: u32 = 5;
/// `CLIENT_PRESENCE_WINDOW_MS` default.
const CLIENT_WINDOW: Duration = Duration::from_millis(30_000);

/// A presence topic: the sub-topic and the channel's privacy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PresenceTopic {
    pub(super) sub: String,
    pub(super) private: bool,
}

/// Presence settings and state of one joined channel.
#[derive(Debug, Clone)]
pub(super) struct ChannelPresence {
    /// Presence enabled at join, or by a track since.
    pub(super) enabled: bool,
    pub(super) key: String,
    /// Whether this channel receives `presence_diff`.
    pub(super) read: bool,
    /// The payload last tracked, while tracked.
    pub(super) tracked: Option<Map<String, Value>>,
    /// Start of the client rate-limit window and presence events counted in it.
    window: Option<(Instant, u32)>,
}

impl ChannelPresence {
    /// From a join's `config.presence` (`enabled` a boolean or "true"/"false"; `key` any
    /// non-empty value, else a random UUID) and the channel's privacy.
    pub(super) fn from_join(payload: &Value, private: bool) -> ChannelPresence {
        let presence = payload.get("config").and_then(|c| c.get("presence"));
        let enabled = match presence.and_then(|p| p.get("enabled")) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let key = match presence.and_then(|p| p.get("key")) {
            None | Some(Value::Null) => random_uuid(),
            Some(Value::String(s)) if s.is_empty() => random_uuid(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        ChannelPresence {
            enabled,
            key,
            read: !private || enabled,
            tracked: None,
            window: None,
        }
    }

    /// Count one presence event against the client rate limit; false when over it.
    fn admit(&mut self, now: Instant) -> bool {
        match self.window {
            Some((start, n)) if now <= start + CLIENT_WINDOW => {
                if n >= CLIENT_MAX_CALLS {
                    return false;
                }
                self.window = Some((start, n + 1));
            }
            _ => self.window = Some((now, 1)),
        }
        true
    }
}

/// A UUID-shaped random key (the server uses `UUID.uuid1()`).
fn random_uuid() -> String {
    let h = |n: usize| {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap())
            .collect::<String>()
    };
    format!("{}-{}-1{}-{}-{}", h(8), h(4), h(3), h(4), h(12))
}

/// `Phoenix.Tracker.Shard.random_ref/0`: 12 bytes (time, node/pid hash, unique integer),
/// URL-safe base64.
fn random_ref() -> String {
    let mut bytes = [0u8; 12];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    fastrand::fill(&mut bytes[8..]);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// One tracked member.
struct Entry {
    conn: u64,
    /// The channel's topic (`realtime:<sub>`); with `conn` it identifies the channel.
    topic: String,
    key: String,
    meta: Map<String, Value>,
}

/// A presence change: members that joined and left, `(key, meta)`.
#[derive(Default)]
pub(super) struct Diff {
    joins: Vec<(String, Map<String, Value>)>,
    leaves: Vec<(String, Map<String, Value>)>,
}

/// Every tracked member, by presence topic.
#[derive(Default)]
pub(crate) struct Registry {
    topics: HashMap<PresenceTopic, Vec<Entry>>,
}

/// `Phoenix.Presence.group/1`: `{key: {"metas": [meta…]}}`.
fn group(list: &[(String, Map<String, Value>)]) -> Value {
    let mut out = Map::new();
    for (key, meta) in list {
        let slot = out
            .entry(key.clone())
            .or_insert_with(|| json!({"metas": []}));
        slot["metas"]
            .as_array_mut()
            .expect("metas is an array")
            .push(Value::Object(meta.clone()));
    }
    Value::Object(out)
}

impl Registry {
    /// Track (or update) the channel's member with `payload`.
    fn track(
        &mut self,
        pt: &PresenceTopic,
        conn: u64,
        topic: &str,
        key: &str,
        payload: &Map<String, Value>,
    ) -> Diff {
        let entries = self.topics.entry(pt.clone()).or_default();
        let mut meta = payload.clone();
        meta.insert("phx_ref".into(), json!(random_ref()));
        let mut diff = Diff::default();
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.conn == conn && e.topic == topic)
        {
            if let Some(prev) = e.meta.get("phx_ref").cloned() {
                meta.insert("phx_ref_prev".into(), prev);
            }
            diff.leaves.push((e.key.clone(), e.meta.clone()));
            e.meta = meta.clone();
        } else {
            entries.push(Entry {
                conn,
                topic: topic.to_string(),
                key: key.to_string(),
                meta: meta.clone(),
            });
        }
        diff.joins.push((key.to_string(), meta));
        diff
    }

    /// Remove the channel's member, if tracked.
    fn untrack(&mut self, pt: &PresenceTopic, conn: u64, topic: &str) -> Option<Diff> {
        let entries = self.topics.get_mut(pt)?;
        let at = entries
            .iter()
            .position(|e| e.conn == conn && e.topic == topic)?;
        let e = entries.remove(at);
        if entries.is_empty() {
            self.topics.remove(pt);
        }
        Some(Diff {
            joins: Vec::new(),
            leaves: vec![(e.key, e.meta)],
        })
    }

    /// The `presence_state` payload of a topic.
    fn state(&self, pt: &PresenceTopic) -> Value {
        let list: Vec<(String, Map<String, Value>)> = self
            .topics
            .get(pt)
            .map(|es| es.iter().map(|e| (e.key.clone(), e.meta.clone())).collect())
            .unwrap_or_default();
        group(&list)
    }

    /// Presence keys tracked by a socket.
    pub(super) fn keys_of(&self, conn: u64) -> Vec<String> {
        self.topics
            .values()
            .flatten()
            .filter(|e| e.conn == conn)
            .map(|e| e.key.clone())
            .collect()
    }
}

impl RealtimeState {
    /// Queue a `presence_diff` on every channel of the presence topic that may read presence.
    fn fan_out_diff(&self, pt: &PresenceTopic, diff: &Diff) {
        let payload = json!({"joins": group(&diff.joins), "leaves": group(&diff.leaves)});
        for conn in self.snapshot() {
            let chans = conn.channels.lock().unwrap();
            for (topic, _) in chans
                .iter()
                .filter(|(_, ch)| ch.sub == pt.sub && ch.private == pt.private && ch.presence.read)
            {
                let _ = conn.tx.send(Out::Frame(ServerFrame {
                    topic: topic.clone(),
                    event: "presence_diff".into(),
                    payload: payload.clone(),
                    reference: Value::Null,
                    join_ref: Value::Null,
                }));
            }
        }
    }

    /// A channel ended (left, re-joined, shut down, its socket closed): its member leaves.
    /// Must be called without holding any socket's channel lock.
    pub(super) fn channel_gone(&self, conn: u64, topic: &str, ch: &Channel) {
        let pt = PresenceTopic {
            sub: ch.sub.clone(),
            private: ch.private,
        };
        let diff = self.presence.lock().unwrap().untrack(&pt, conn, topic);
        if let Some(diff) = diff {
            self.fan_out_diff(&pt, &diff);
        }
    }

    /// A socket ended: every channel it had ends.
    pub(super) fn conn_gone(&self, conn: &Conn) {
        let chans: Vec<(String, Channel)> = conn.channels.lock().unwrap().drain().collect();
        for (topic, ch) in chans {
            self.channel_gone(conn.id, &topic, &ch);
        }
    }
}

impl Socket {
    /// End a channel from the server side: `system` error with `message`, then `phx_close`
    /// (the server's `shutdown_response`, docs/supabase.md §6.4).
    pub(super) fn shutdown_channel(&mut self, topic: &str, message: &str) -> Result<(), Closed> {
        let Some(ch) = self.conn.channels.lock().unwrap().remove(topic) else {
            return Ok(());
        };
        self.shared.rt.channel_gone(self.conn.id, topic, &ch);
        self.send(&system_frame(topic, &ch, "system", "error", message))?;
        self.send(&close_like_frame(topic, &ch, "phx_close"))
    }

    /// After an ok join with presence enabled: `presence_state` with the topic's members.
    pub(super) fn sync_presence(&mut self, topic: &str) -> Result<(), Closed> {
        let fault = self.shared.rt.presence_fault.lock().unwrap().clone();
        let pt = {
            let chans = self.conn.channels.lock().unwrap();
            let Some(ch) = chans.get(topic).filter(|ch| ch.presence.enabled) else {
                return Ok(());
            };
            PresenceTopic {
                sub: ch.sub.clone(),
                private: ch.private,
            }
        };
        match fault {
            Some(PresenceFault::Ignore) => Ok(()),
            Some(PresenceFault::RateLimited) => {
                self.shutdown_channel(topic, "Too many presence messages per second")
            }
            Some(PresenceFault::TrackError) | None => {
                let state = self.shared.rt.presence.lock().unwrap().state(&pt);
                self.send(&ServerFrame {
                    topic: topic.to_string(),
                    event: "presence_state".into(),
                    payload: state,
                    reference: Value::Null,
                    join_ref: Value::Null,
                })
            }
        }
    }

    /// The `presence` client event on a joined channel (`track` / `untrack`).
    pub(super) fn on_presence(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        let Some(event) = frame.payload.get("event").and_then(Value::as_str) else {
            // A presence message without an event is accepted and does nothing.
            return self.send(&frame.reply("ok", json!({})));
        };
        let event = event.to_ascii_lowercase();
        let admitted = {
            let mut chans = self.conn.channels.lock().unwrap();
            let Some(ch) = chans.get_mut(&frame.topic) else {
                return Ok(());
            };
            ch.presence.admit(Instant::now())
        };
        if !admitted {
            return self.shutdown_channel(&frame.topic, "Client presence rate limit exceeded");
        }
        let fault = self.shared.rt.presence_fault.lock().unwrap().clone();
        match (fault, event.as_str()) {
            (Some(PresenceFault::Ignore), _) => return Ok(()),
            (Some(PresenceFault::RateLimited), _) => {
                return self.shutdown_channel(&frame.topic, "Too many presence messages per second")
            }
            (Some(PresenceFault::TrackError), "track") => {
                return self.send(&frame.reply("error", json!({})))
            }
            _ => {}
        }
        match event.as_str() {
            "track" => self.track(&frame),
            "untrack" => {
                let (pt, was_tracked) = {
                    let mut chans = self.conn.channels.lock().unwrap();
                    let Some(ch) = chans.get_mut(&frame.topic) else {
                        return Ok(());
                    };
                    let pt = PresenceTopic {
                        sub: ch.sub.clone(),
                        private: ch.private,
                    };
                    (pt, ch.presence.tracked.take().is_some())
                };
                self.send(&frame.reply("ok", json!({})))?;
                if was_tracked {
                    let diff = self.shared.rt.presence.lock().unwrap().untrack(
                        &pt,
                        self.conn.id,
                        &frame.topic,
                    );
                    if let Some(diff) = diff {
                        self.shared.rt.fan_out_diff(&pt, &diff);
                    }
                }
                Ok(())
            }
            // An unknown presence event: `{:reply, :error, socket}`.
            _ => self.send(&frame.reply("error", json!({}))),
        }
    }

    fn track(&mut self, frame: &ClientFrame) -> Result<(), Closed> {
        let payload = frame
            .payload
            .get("payload")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let Value::Object(payload) = payload else {
            return self.send(&frame.reply(
                "error",
                json!({"reason": "Presence track payload must be a map"}),
            ));
        };
        let (pt, key) = {
            let mut chans = self.conn.channels.lock().unwrap();
            let Some(ch) = chans.get_mut(&frame.topic) else {
                return Ok(());
            };
            // A track enables presence on the channel, and authorizes reading it.
            ch.presence.enabled = true;
            ch.presence.read = true;
            if ch.presence.tracked.as_ref() == Some(&payload) {
                drop(chans);
                return self.send(&frame.reply("ok", json!({})));
            }
            ch.presence.tracked = Some(payload.clone());
            (
                PresenceTopic {
                    sub: ch.sub.clone(),
                    private: ch.private,
                },
                ch.presence.key.clone(),
            )
        };
        let diff = self.shared.rt.presence.lock().unwrap().track(
            &pt,
            self.conn.id,
            &frame.topic,
            &key,
            &payload,
        );
        self.send(&frame.reply("ok", json!({})))?;
        self.shared.rt.fan_out_diff(&pt, &diff);
        Ok(())
    }
}
