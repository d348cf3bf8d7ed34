//! Channels of a socket (§3): joins (topic, forced join errors, private-only projects, access
//! tokens, the channel limit, private-channel authorization), the join reply and the delayed
//! subscription outcome, leaves, and token refreshes (§6.3).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{json, Value};

use super::super::{jwt_claims, jwt_role, JwtProblem, SubscribeMode};
use super::bindings::{binding_id, check_binding, parse_binding, Binding};
use super::frame::{close_like_frame, subscribed_frame, system_frame, ClientFrame};
use super::presence::ChannelPresence;
use super::socket::{Closed, Socket, Timer, TimerKind};

/// The real server's per-socket channel limit (§7).
const MAX_CHANNELS: usize = 100;

/// A joined channel.
pub(super) struct Channel {
    pub(super) sub: String,
    pub(super) join_ref: Value,
    pub(super) bindings: Vec<Binding>,
    /// True once "Subscribed to PostgreSQL" was sent: only then are changes delivered.
    pub(super) live: bool,
    /// Distinguishes this join from an earlier join of the same topic (for timers).
    pub(super) generation: u64,
    /// The channel's access token, when the join carried a JWT.
    pub(super) token: Option<String>,
    /// Joined with `private: true` (RLS-authorized; sees private broadcasts and presence).
    pub(super) private: bool,
    pub(super) presence: ChannelPresence,
}

impl Socket {
    /// The delayed outcome of a join: "Subscribed to PostgreSQL", an error, or nothing (§3.4).
    pub(super) fn subscribe_due(
        &mut self,
        topic: &str,
        generation: u64,
        problem: Option<String>,
        repeat: bool,
    ) -> Result<(), Closed> {
        let frame = {
            let chans = self.conn.channels.lock().unwrap();
            let Some(ch) = chans.get(topic).filter(|ch| ch.generation == generation) else {
                return Ok(()); // left or re-joined meanwhile
            };
            if let Some(p) = &problem {
                Some((
                    system_frame(topic, ch, "postgres_changes", "error", p),
                    false,
                ))
            } else if repeat {
                Some((subscribed_frame(topic, ch), false))
            } else {
                match self.shared.rt.subscribe_mode.lock().unwrap().clone() {
                    SubscribeMode::Ok => Some((subscribed_frame(topic, ch), true)),
                    SubscribeMode::Twice => {
                        self.timers.push(Timer {
                            at: Instant::now() + self.shared.config.subscribe_delay,
                            kind: TimerKind::Subscribe {
                                topic: topic.to_string(),
                                generation,
                                problem: None,
                                repeat: true,
                            },
                        });
                        Some((subscribed_frame(topic, ch), true))
                    }
                    SubscribeMode::Error(m) => Some((
                        system_frame(topic, ch, "postgres_changes", "error", &m),
                        false,
                    )),
                    SubscribeMode::Never => None,
                }
            }
        };
        if let Some((frame, goes_live)) = frame {
            self.send(&frame)?;
            // Live only after the message is on the wire: events queued from now on follow it.
            if goes_live {
                if let Some(ch) = self.conn.channels.lock().unwrap().get_mut(topic) {
                    if ch.generation == generation {
                        ch.live = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuse a join with `phx_reply` `status:"error"` `{reason}`, after the join-error delay.
    pub(super) fn join_error(&mut self, frame: &ClientFrame, reason: &str) -> Result<(), Closed> {
        let reply = frame.reply("error", json!({"reason": reason}));
        let delay = *self.shared.rt.join_error_delay.lock().unwrap();
        if delay.is_zero() {
            self.send(&reply)
        } else {
            self.timers.push(Timer {
                at: Instant::now() + delay,
                kind: TimerKind::Frame(reply),
            });
            Ok(())
        }
    }

    /// `phx_join` (§3): the checks in the server's order, the reply echoing the bindings with
    /// their ids, and the subscription outcome scheduled after the subscribe delay.
    pub(super) fn on_join(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        // Without a join_ref the join's own ref identifies the join.
        let join_ref = if frame.join_ref.is_null() {
            frame.reference.clone()
        } else {
            frame.join_ref.clone()
        };
        let Some(sub) = frame.topic.strip_prefix("realtime:").map(str::to_string) else {
            return self.send(&frame.reply("error", json!({"reason": "unmatched topic"})));
        };
        if sub.is_empty() {
            return self.join_error(&frame, "TopicNameRequired: You must provide a topic name");
        }
        let forced = self.shared.rt.join_error.lock().unwrap().clone();
        if let Some(reason) = forced {
            return self.join_error(&frame, &reason);
        }
        // The server checks "private only" first, before the token (`only_private?`, §3.2).
        let private = join_is_private(&frame.payload);
        if !private && self.shared.rt.private_only.load(Ordering::SeqCst) {
            return self.join_error(
                &frame,
                "PrivateOnly: This project only allows private channels",
            );
        }
        let token = frame
            .payload
            .get("access_token")
            .or_else(|| frame.payload.get("user_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.starts_with("sb_"))
            .map(str::to_string);
        if let Some(t) = &token {
            let reason = match jwt_claims(t) {
                Ok(_) => None,
                Err(JwtProblem::NotJwt { .. }) => {
                    Some("MalformedJWT: The token provided is not a valid JWT".to_string())
                }
                Err(JwtProblem::MissingClaims) => {
                    Some("InvalidJWTToken: Fields `role` and `exp` are required in JWT".to_string())
                }
                Err(JwtProblem::Expired(n)) => Some(format!(
                    "InvalidJWTToken: Token has expired {n} seconds ago"
                )),
            };
            if let Some(r) = reason {
                return self.join_error(&frame, &r);
            }
        }
        {
            let chans = self.conn.channels.lock().unwrap();
            if chans.len() >= MAX_CHANNELS && !chans.contains_key(&frame.topic) {
                drop(chans);
                return self.join_error(&frame, "ChannelRateLimitReached: Too many channels");
            }
        }
        // A private join reads the channel's RLS policies on `realtime.messages` as the token's
        // role. The double models no policy: only service_role (BYPASSRLS) is authorized (§3.2).
        if private {
            let role = token
                .as_deref()
                .and_then(jwt_role)
                .or(self.conn.role.clone());
            if role.as_deref() != Some("service_role") {
                return self.join_error(
                    &frame,
                    &format!(
                        "Unauthorized: You do not have permissions to read from this Channel topic: {sub}"
                    ),
                );
            }
        }
        let items: Vec<Value> = frame
            .payload
            .get("config")
            .and_then(|c| c.get("postgres_changes"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|v| !v.is_null()).cloned().collect())
            .unwrap_or_default();
        let mut echoed = Vec::new();
        let mut bindings = Vec::new();
        let mut problem = None;
        for item in &items {
            let id = binding_id(item);
            let mut echo = item.clone();
            if let Some(o) = echo.as_object_mut() {
                o.insert("id".into(), json!(id));
            }
            echoed.push(echo);
            match parse_binding(item, id) {
                Ok(b) => bindings.push(b),
                Err(p) => {
                    problem.get_or_insert(p);
                }
            }
        }
        if problem.is_none() {
            problem = bindings.iter().find_map(|b| check_binding(&self.shared, b));
        }
        let generation = self
            .shared
            .rt
            .next_generation
            .fetch_add(1, Ordering::SeqCst);
        let presence = ChannelPresence::from_join(&frame.payload, private);
        let presence_enabled = presence.enabled;
        let old = self.conn.channels.lock().unwrap().insert(
            frame.topic.clone(),
            Channel {
                sub,
                join_ref,
                bindings,
                live: false,
                generation,
                token,
                private,
                presence,
            },
        );
        // The replaced channel's process ends: its presence member leaves.
        if let Some(old) = &old {
            self.shared.rt.channel_gone(self.conn.id, &frame.topic, old);
        }
        // Counted before the send so an observer that saw the reply also sees the count.
        self.shared.rt.joins.fetch_add(1, Ordering::SeqCst);
        self.send(&frame.reply("ok", json!({"postgres_changes": echoed})))?;
        // The old join's close reaches the wire after the new join's reply (§3.5).
        if let Some(old) = old {
            self.send(&close_like_frame(&frame.topic, &old, "phx_close"))?;
        }
        // The server's `:sync_presence`, handled right after the join (§12.3).
        if presence_enabled {
            self.sync_presence(&frame.topic)?;
        }
        if !items.is_empty() {
            self.timers.push(Timer {
                at: Instant::now() + self.shared.config.subscribe_delay,
                kind: TimerKind::Subscribe {
                    topic: frame.topic.clone(),
                    generation,
                    problem,
                    repeat: false,
                },
            });
        }
        Ok(())
    }

    /// Token refresh: never a reply; a bad token ends the channel (§6.3).
    pub(super) fn on_access_token(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        let Some(token) = frame.payload.get("access_token").and_then(Value::as_str) else {
            return Ok(());
        };
        let mut chans = self.conn.channels.lock().unwrap();
        let Some(ch) = chans.get_mut(&frame.topic) else {
            return Ok(());
        };
        if token.starts_with("sb_") || ch.token.as_deref() == Some(token) {
            return Ok(());
        }
        let message = match jwt_claims(token) {
            Ok(_) => {
                ch.token = Some(token.to_string());
                return Ok(());
            }
            Err(JwtProblem::NotJwt { .. }) => "The token provided is not a valid JWT".to_string(),
            Err(JwtProblem::MissingClaims) => {
                "Fields `role` and `exp` are required in JWT".to_string()
            }
            Err(JwtProblem::Expired(n)) => format!("Token has expired {n} seconds ago"),
        };
        let ch = chans.remove(&frame.topic).expect("present above");
        drop(chans);
        self.shared.rt.channel_gone(self.conn.id, &frame.topic, &ch);
        self.send(&system_frame(
            &frame.topic,
            &ch,
            "system",
            "error",
            &message,
        ))?;
        self.send(&close_like_frame(&frame.topic, &ch, "phx_close"))
    }
}

/// `config.private` of a join: a boolean, or the strings "true"/"false" (§3.2); absent = false.
fn join_is_private(payload: &Value) -> bool {
    match payload.get("config").and_then(|c| c.get("private")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}
