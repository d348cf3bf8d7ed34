//! Hand-over at shutdown: a claim this instance cannot finish before it exits (a create still at
//! Twilio at the shutdown deadline, or a message that may have been sent while Twilio's list
//! cannot tell yet) is ended early, so that a successor settles it after the settle window rather
//! than after the rest of its lease.
//!
//! Ending a claim is a fenced write of a stamp that ends *now* ([`Lease::ending_at`]): the row
//! stays `sending` and keeps its message; any instance's orphan recovery takes it once that stamp
//! is past by the settle window, reconciles it with Twilio's list (which by then shows any create
//! that ended when this process did) and records it or gives it back. A write the fence refuses
//! means the claim was settled meanwhile. What is handed over is logged by id.

use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use crate::delivery::in_flight::InFlight;
use crate::delivery::lease::Lease;
use crate::message::MessageId;
use crate::ops::metrics::Metrics;
use crate::supabase::rest::{Rest, RestError};

/// End claim `lease` of row `id` now. `Ok(false)`: the claim no longer held the row.
pub fn end_now(rest: &Rest, id: &MessageId, lease: &Lease) -> Result<bool, RestError> {
    rest.restamp(
        id,
        lease.stamp(),
        lease.ending_at(Instant::now(), SystemTime::now()).stamp(),
    )
}

/// End every claim still held here (the sender threads did not finish by the deadline), trying
/// until `until`. Returns the ids handed over.
pub fn hand_over_all(
    in_flight: &InFlight,
    rest: &Rest,
    metrics: &Metrics,
    until: Instant,
) -> Vec<MessageId> {
    let mut handed = Vec::new();
    for (id, stamp) in in_flight.claims() {
        let now = Instant::now();
        if now >= until {
            warn!("shutdown: no time left to hand over message {id}; its lease ends at {stamp}");
            continue;
        }
        // A renewal may land between reading the stamp and this write: follow it once.
        let mut stamp = stamp;
        for _ in 0..2 {
            let ended = Lease::start(Duration::ZERO, now, SystemTime::now());
            match rest.restamp(&id, &stamp, ended.stamp()) {
                Ok(true) => {
                    metrics.handed_over();
                    handed.push(id.clone());
                    break;
                }
                Ok(false) => match in_flight.stamp_of(&id) {
                    Some(now) if now != stamp => stamp = now,
                    _ => break, // settled meanwhile
                },
                Err(e) => {
                    warn!(
                        "shutdown: cannot hand over message {id} ({e}); its lease ends at {stamp}, \
                         then orphan recovery settles it"
                    );
                    break;
                }
            }
        }
    }
    if !handed.is_empty() {
        let ids: Vec<String> = handed.iter().map(ToString::to_string).collect();
        info!(
            "shutdown: handed over {} claim(s) still in flight; a successor settles them after \
             the settle window: {}",
            handed.len(),
            ids.join(", ")
        );
    }
    handed
}
