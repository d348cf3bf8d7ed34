//! What the Realtime task tells the rest of the service: the [`RealtimeSink`] it emits what it
//! sees into — the link's state, the need for a catch-up sweep, and every ready message id.
//!
//! Realtime knows nothing of who listens (the queue, the sweep, `/health`, `/metrics` are the
//! wiring's business). Invariant: [`RealtimeSink::ready`] is the one place the task may wait —
//! back-pressure from a full queue — and the task keeps heartbeating while it waits; every other
//! call returns at once.

use std::future::Future;
use std::pin::Pin;

use super::membership::Assignment;
use crate::message::MessageId;

/// Something the Realtime task saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A socket is being opened (or the channel joined, or the subscription awaited).
    Connecting,
    /// The subscription is live (join ok and "Subscribed to PostgreSQL", first or again): what
    /// happened while it was not must be caught up, since Realtime never replays.
    Subscribed,
    /// A change came whose row id could not be read: a catch-up is the only way to find it.
    Unnamed,
    /// The socket's life ended for `reason` (scrubbed, one line); a reconnect may follow.
    Lost {
        /// Why, as logged.
        reason: &'a str,
    },
    /// Scaled mode: the partitions this instance serves now, from the members' Presence
    /// (`None`: no membership is known, serve every partition and sweep).
    Partitions(Option<&'a Assignment>),
    /// A reconnect is about to be waited for (after [`Event::Lost`]).
    Reconnecting,
    /// The channel was left for shutdown; the task ends.
    Stopped,
}

/// What became of a ready id handed over with [`RealtimeSink::ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Taken (or already waiting): read on.
    Taken,
    /// Nobody takes ids any more (shutdown): the task ends.
    Closed,
}

/// A handoff in progress; dropping it before it completes withdraws the id.
pub type Handing<'a> = Pin<Box<dyn Future<Output = Handoff> + 'a>>;

/// Where the Realtime task emits what it sees.
pub trait RealtimeSink {
    /// Something happened on the link.
    fn event(&self, event: Event<'_>);
    /// Row `id` is ready to send. The future completes once it is taken, waiting while there is
    /// no room; the task races it against its heartbeat and shutdown.
    fn ready(&self, id: MessageId) -> Handing<'_>;
}
