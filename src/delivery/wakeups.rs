//! What Realtime's news does to the service: the [`RealtimeSink`] the wiring gives the Realtime
//! task.
//!
//! A ready id goes into the [`WorkQueue`] (waiting while it is full: the back-pressure the task
//! heartbeats through); a subscription, first or again, sets `/health` connected and asks the
//! catch-up sweep to run, as does a change whose id cannot be read; a lost socket sets `/health`
//! disconnected; a reconnect is counted. Invariant: every (re)subscription asks
//! for a sweep — Realtime never replays what happened while we were away.

use std::sync::Arc;

use crate::delivery::partitions::Ownership;
use crate::delivery::queue::{PushError, WorkQueue};
use crate::delivery::sweep::SweepTrigger;
use crate::message::MessageId;
use crate::ops::health::{Health, Link};
use crate::ops::metrics::Metrics;
use crate::supabase::realtime::sink::{Event, Handing, Handoff, RealtimeSink};

/// The service's [`RealtimeSink`].
pub struct Wakeups {
    /// The partitions this instance serves (scaled mode), as Presence assigns them.
    pub ownership: Ownership,
    /// Connection state for `/health`.
    pub health: Health,
    /// Where ready message ids go.
    pub queue: WorkQueue,
    /// Asks the catch-up sweep to run.
    pub sweep: SweepTrigger,
    /// Counts reconnects.
    pub metrics: Arc<Metrics>,
}

impl RealtimeSink for Wakeups {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Connecting => self.health.set_link(Link::Connecting),
            Event::Subscribed => {
                self.health.set_link(Link::Connected);
                self.sweep.request();
            }
            Event::Unnamed => self.sweep.request(),
            Event::Partitions(Some(assignment)) => self
                .ownership
                .set_members(assignment.mine.clone(), assignment.sweeper),
            Event::Partitions(None) => self.ownership.forget_members(),
            // The reason is logged by the task; `/health` shows only the state. Without the
            // link, its membership is stale: serve and sweep everything until it is back.
            Event::Lost { .. } | Event::Stopped => {
                self.health.set_link(Link::Disconnected);
                self.ownership.forget_members();
            }
            Event::Reconnecting => self.metrics.reconnect(),
        }
    }

    fn ready(&self, id: MessageId) -> Handing<'_> {
        Box::pin(async move {
            match self.queue.push(id).await {
                Ok(_) => Handoff::Taken,
                Err(PushError::Closed) => Handoff::Closed,
            }
        })
    }
}
