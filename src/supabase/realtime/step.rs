//! What each server frame means for our channel: the decisions of the session, without I/O.
//!
//! [`Channel`] is the progress of our join on one socket; [`step`] reads one decoded frame,
//! advances the channel and answers with the [`Step`] the session takes (read on, hand over an
//! id, tell that the subscription is live, rejoin privately, reconnect). Invariants: only frames
//! for our topic and our current join ref count (a stale close from an earlier join changes
//! nothing); a change is trusted only once our bindings are known or the subscription is live,
//! and only for the bindings' events on `public.messages` into `queued_for_send`; every text the
//! server sent is scrubbed ([`redact::scrub`]) before it is logged or kept as a reason.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::frame::{self, Bindings, Change, ServerFrame};
use super::TOPIC;
use crate::message::MessageId;
use crate::redact;

/// Progress of our channel on this socket.
pub(super) struct Channel {
    pub(super) join_ref: String,
    /// The binding ids from the ok reply, once it came.
    pub(super) bindings: Option<Bindings>,
    pub(super) subscribed: bool,
    /// When the current wait (join reply, then subscription) gives up.
    pub(super) deadline: Option<Instant>,
}

impl Channel {
    /// A join just sent with `join_ref`: its reply is due within `join_timeout`.
    pub(super) fn joining(join_ref: String, join_timeout: Duration) -> Channel {
        Channel {
            join_ref,
            bindings: None,
            subscribed: false,
            deadline: Some(Instant::now() + join_timeout),
        }
    }
}

/// What a frame asks the session to do.
pub(super) enum Step {
    Continue,
    /// The subscription is live (first or again): tell it, which asks for a catch-up.
    Subscribed,
    /// A change without a usable id: ask for a catch-up.
    Unnamed,
    Enqueue(MessageId),
    /// Reconnect (after the backoff).
    Lost(String),
    /// Reconnect, but the server refused us for a reason a retry soon would meet again.
    Refused(String),
    /// The project refused a public channel (the server's reason): join again as a private one.
    JoinPrivate(String),
}

/// Read one frame: advance `chan`, clear the answered heartbeat, say what to do.
/// `subscribe_timeout` is how long the subscription may take after the join reply.
pub(super) fn step(
    frame: ServerFrame,
    chan: &mut Channel,
    pending_heartbeat: &mut Option<String>,
    subscribe_timeout: Duration,
) -> Step {
    match frame {
        ServerFrame::Reply {
            topic,
            reference,
            status,
            response,
        } => {
            if topic == "phoenix" {
                if reference.is_some() && reference == *pending_heartbeat {
                    *pending_heartbeat = None;
                }
                return Step::Continue;
            }
            if topic != TOPIC || reference.as_deref() != Some(chan.join_ref.as_str()) {
                return Step::Continue;
            }
            join_reply(&status, &response, chan, subscribe_timeout)
        }
        ServerFrame::System {
            topic,
            extension,
            status,
            message,
        } if topic == TOPIC => system(&extension, &status, &message, chan),
        ServerFrame::Change { topic, change } if topic == TOPIC => change_step(change, chan),
        ServerFrame::Close { topic, reference } | ServerFrame::Error { topic, reference }
            if topic == TOPIC && reference.as_deref().is_none_or(|r| r == chan.join_ref) =>
        {
            Step::Lost("the server closed our channel".into())
        }
        // Other topics, stale closes from an earlier join, presence, broadcast.
        ServerFrame::Broadcast { .. }
        | ServerFrame::PresenceState { .. }
        | ServerFrame::PresenceDiff { .. }
        | ServerFrame::System { .. }
        | ServerFrame::Change { .. }
        | ServerFrame::Close { .. }
        | ServerFrame::Error { .. }
        | ServerFrame::Other { .. } => Step::Continue,
    }
}

/// The reply to our join: refused (and how), or ok with the bindings to wait on.
fn join_reply(
    status: &str,
    response: &serde_json::Value,
    chan: &mut Channel,
    subscribe_timeout: Duration,
) -> Step {
    if status != "ok" {
        return join_refused(response);
    }
    match frame::binding_ids(response) {
        Ok(ids) => {
            chan.bindings = Some(ids);
            chan.deadline = Some(Instant::now() + subscribe_timeout);
            debug!(
                "realtime join ok (binding ids {} and {}); waiting for the subscription",
                ids.insert, ids.update
            );
            Step::Continue
        }
        Err(why) => {
            // The reason quotes the server's binding.
            let why = redact::scrub(&why);
            error!("realtime join reply rejected: {why}");
            Step::Lost(why)
        }
    }
}

/// A join refused with `response`: rejoin privately, retry, or report the refusal.
fn join_refused(response: &serde_json::Value) -> Step {
    let reason = redact::scrub(
        &response
            .get("reason")
            .and_then(|r| r.as_str())
            .map(String::from)
            .unwrap_or_else(|| response.to_string()),
    );
    if private_only_refusal(&reason) {
        return Step::JoinPrivate(reason);
    }
    error!("realtime join refused: {reason}");
    let transient = transient_join_refusal(&reason);
    let reason = format!("join refused: {reason}");
    if transient {
        Step::Lost(reason)
    } else {
        Step::Refused(reason)
    }
}

/// A `system` message on our topic: the subscription's state, or a notice.
fn system(extension: &str, status: &str, message: &str, chan: &mut Channel) -> Step {
    let message = redact::scrub(message);
    match (extension, status) {
        ("postgres_changes", "ok") => {
            if !chan.subscribed {
                info!(
                    "realtime subscribed to INSERT and UPDATE into queued_for_send on \
                     public.messages ({message})"
                );
            } else {
                info!("realtime subscription re-established by the server ({message})");
            }
            chan.subscribed = true;
            chan.deadline = None;
            Step::Subscribed
        }
        ("postgres_changes", _) => {
            error!(
                "realtime subscription failed: {message} (is `messages` in the \
                 supabase_realtime publication, and does the key have access?)"
            );
            Step::Refused(format!("subscription failed: {message}"))
        }
        (_, "error") => {
            warn!("realtime server notice on {TOPIC}: {message}");
            Step::Continue
        }
        _ => {
            info!("realtime server notice: {message}");
            Step::Continue
        }
    }
}

/// A `postgres_changes` event on our topic: the id to hand over, if it is one of ours.
fn change_step(change: Change, chan: &Channel) -> Step {
    if !chan.subscribed && chan.bindings.is_none() {
        return Step::Continue;
    }
    if let Some(bindings) = chan.bindings {
        if !bindings.matches(&change.kind, &change.ids) {
            return Step::Continue; // older servers send every type that matched
        }
    }
    if !frame::BINDING_EVENTS.contains(&change.kind.as_str())
        || change.schema != frame::BINDING_SCHEMA
        || change.table != frame::BINDING_TABLE
    {
        return Step::Continue;
    }
    let Some(row) = change.record else {
        return Step::Continue;
    };
    let Some(id) = row.id.as_deref().and_then(MessageId::parse) else {
        warn!("realtime change without a usable id; asking for a sweep");
        return Step::Unnamed;
    };
    // With `errors` set the record is trimmed: trust only the id; the claim re-checks.
    if !change.has_errors
        && (row.status.as_deref() != Some("queued_for_send")
            || row.direction.as_deref().is_some_and(|d| d != "outbound"))
    {
        return Step::Continue;
    }
    Step::Enqueue(id)
}

/// Join refusals that say "try again later" (docs/supabase.md §3.5); any other refusal is a problem of
/// the key, the project or the request that a retry soon would meet again.
fn transient_join_refusal(reason: &str) -> bool {
    const TRANSIENT: [&str; 11] = [
        "InitializingProjectConnection",
        "UnableToConnectToProject",
        "IncreaseConnectionPool",
        "DatabaseLackOfConnections",
        "DatabaseConnectionRateLimitReached",
        "RealtimeRestarting",
        "TimeoutOnRpcCall",
        "ErrorOnRpcCall",
        "ConnectionRateLimitReached",
        "ClientJoinRateLimitReached",
        "Unknown Error on Channel",
    ];
    TRANSIENT.iter().any(|code| reason.starts_with(code))
}

/// The `PrivateOnly` join refusal (docs/supabase.md §3.5): the project accepts private channels only.
fn private_only_refusal(reason: &str) -> bool {
    reason.starts_with("PrivateOnly")
}
