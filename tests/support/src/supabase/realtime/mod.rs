//! The Realtime double: the Phoenix WebSocket at `/realtime/v1/websocket` (docs/supabase.md §2–§6, §10)
//! fed by a row trigger that reports changes through LISTEN/NOTIFY.
//!
//! A socket's life runs through the files in this order:
//! - this file: the shared state (open sockets, counters, fault switches) and what every part
//!   hands a socket ([`Conn`], [`Out`]);
//! - [`upgrade`]: the upgrade — key and `vsn` checks with the server's texts, the handshake, the
//!   refusal fault — then the socket's own thread;
//! - [`socket`]: that thread: it reads with a short timeout, answers frames, fires timers (the
//!   delayed "Subscribed to PostgreSQL"), and drains an outbound queue that the change listener
//!   and the fault switches push into;
//! - [`frame`]: the Phoenix wire format, V1 objects and V2 arrays, client and server frames;
//! - [`channel`]: joins (topics, access tokens, private channels, the channel limit), leaves,
//!   token refreshes and the delayed subscription outcome;
//! - [`bindings`]: the `postgres_changes` items of a join, their filters, the subscription check
//!   against the database, and matching a changed row;
//! - [`changes`]: the change trigger (`sms_double.notify_change`, installed idempotently on every
//!   table in `public`) and the listener thread that fans each change out to live channels;
//! - [`broadcast`]: the project's `realtime` schema (`realtime.messages`, `realtime.send`) and
//!   Broadcast from the database, reported by a trigger on `realtime.messages` to the same
//!   listener and fanned out to the channels of the message's topic and privacy;
//! - [`presence`]: Presence — `track`/`untrack`, `presence_state` after a join,
//!   `presence_diff` to the topic's channels, members removed when their channel ends;
//! - [`faults`]: the server-side faults that end channels or sockets, and vanishing sockets.
//!
//! Invariants:
//! - V1 server frames carry exactly `topic`, `event`, `payload`, `ref`; malformed client frames are
//!   dropped silently;
//! - a channel receives changes only while *live* (after its "Subscribed to PostgreSQL" went out)
//!   and nothing is buffered for later: no replay, like the real server;
//! - a socket's frames are written only by its own thread, so replies, system messages and events
//!   leave in the order they were decided;
//! - every channel that ends goes through [`RealtimeState::channel_gone`], so Presence never
//!   keeps a member whose channel is gone.

mod bindings;
mod broadcast;
mod changes;
mod channel;
mod faults;
mod frame;
mod presence;
mod socket;
#[cfg(test)]
mod tests;
mod upgrade;

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{PresenceFault, SubscribeMode};
use channel::Channel;
use frame::{ServerFrame, Vsn};

pub(crate) use broadcast::{install_broadcast, BroadcastFaults};
pub(crate) use changes::{install_change_triggers, start_listener};
pub(crate) use upgrade::handle_upgrade;

/// Realtime observation counters and fault switches, plus the open sockets.
pub(crate) struct RealtimeState {
    pub(crate) conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    next_generation: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) joins: AtomicU64,
    pub(crate) frames: Mutex<Vec<Value>>,
    pub(crate) heartbeat_replies: AtomicBool,
    pub(crate) blackhole: AtomicBool,
    pub(crate) drop_events: AtomicBool,
    pub(crate) duplicate_events: AtomicBool,
    pub(crate) oversized_events: AtomicBool,
    pub(crate) all_types: AtomicBool,
    pub(crate) refuse: Mutex<Option<(u16, String)>>,
    pub(crate) subscribe_mode: Mutex<SubscribeMode>,
    pub(crate) join_error: Mutex<Option<String>>,
    pub(crate) join_error_delay: Mutex<Duration>,
    /// The project's "Allow public access" is off: `private: false` joins are refused (§3.2).
    pub(crate) private_only: AtomicBool,
    /// Tables known to carry the change trigger.
    triggered: Mutex<HashSet<String>>,
    /// The change listener is connected and LISTENing (changes and broadcasts flow).
    pub(crate) listening: AtomicBool,
    /// Presence members by topic.
    presence: Mutex<presence::Registry>,
    pub(crate) presence_fault: Mutex<Option<PresenceFault>>,
    pub(crate) broadcast_faults: BroadcastFaults,
}

impl Default for RealtimeState {
    fn default() -> Self {
        RealtimeState {
            conns: Mutex::default(),
            next_conn: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            joins: AtomicU64::new(0),
            frames: Mutex::default(),
            heartbeat_replies: AtomicBool::new(true),
            blackhole: AtomicBool::new(false),
            drop_events: AtomicBool::new(false),
            duplicate_events: AtomicBool::new(false),
            oversized_events: AtomicBool::new(false),
            all_types: AtomicBool::new(false),
            refuse: Mutex::default(),
            subscribe_mode: Mutex::default(),
            join_error: Mutex::default(),
            join_error_delay: Mutex::default(),
            private_only: AtomicBool::new(false),
            triggered: Mutex::default(),
            listening: AtomicBool::new(false),
            presence: Mutex::default(),
            presence_fault: Mutex::default(),
            broadcast_faults: BroadcastFaults::default(),
        }
    }
}

/// One open socket, shared between its thread, the listener and the fault switches.
pub(crate) struct Conn {
    /// The socket's number, unique per double.
    id: u64,
    /// The link is black-holed: nothing reaches the client, nothing from it reaches the server,
    /// and the server notices only when its idle timeout closes the socket.
    vanished: AtomicBool,
    vsn: Vsn,
    tx: Sender<Out>,
    /// A clone of the socket, to cut it abruptly from outside its thread.
    stream: TcpStream,
    /// Joined channels by topic.
    channels: Mutex<HashMap<String, Channel>>,
    /// The role of the connect-time token: what a join without its own `access_token` (or with
    /// an `sb_` one) is authorized as (§1.3).
    role: Option<String>,
}

/// Something for a socket's thread to send.
enum Out {
    Frame(ServerFrame),
    /// Send a close frame with this code (empty reason) and end the socket.
    Close(u16),
}

impl RealtimeState {
    fn snapshot(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().unwrap().values().cloned().collect()
    }

    pub(crate) fn live_channels(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|c| {
                c.channels
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|ch| ch.live)
                    .count()
            })
            .sum()
    }
}
