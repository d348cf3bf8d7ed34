//! What operators see of the HTTP clients: the [`Observer`]s the wiring gives them.
//!
//! [`DatabaseStatus`] turns what Supabase REST requests came to into the `database` field of
//! `/health`; [`TwilioRequests`] counts Twilio requests by status on `/metrics`. Invariant: the
//! last REST request decides the flag — failing while Supabase is unreachable, cut off or
//! answering 5xx, cleared by any other answer — and every Twilio request is counted once, by the
//! status it got (none when it got no answer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::http::{Exchange, Observer};
use crate::ops::metrics::Metrics;

/// Keeps the flag [`crate::ops::health::Health::database_status`] shares up to date.
pub struct DatabaseStatus(pub Arc<AtomicBool>);

/// Whether an exchange with Supabase REST says the database is failing.
fn database_failing(exchange: Exchange) -> bool {
    match exchange {
        Exchange::Answered(status) => status >= 500,
        Exchange::Interrupted(_) | Exchange::Unanswered => true,
    }
}

impl Observer for DatabaseStatus {
    fn exchanged(&self, exchange: Exchange) {
        self.0.store(database_failing(exchange), Ordering::Relaxed);
    }
}

/// Counts Twilio requests by status in the service's [`Metrics`].
pub struct TwilioRequests(pub Arc<Metrics>);

impl Observer for TwilioRequests {
    fn exchanged(&self, exchange: Exchange) {
        self.0.twilio_request(match exchange {
            Exchange::Answered(status) | Exchange::Interrupted(status) => Some(status),
            Exchange::Unanswered => None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_fails_on_5xx_and_on_no_full_answer() {
        assert!(!database_failing(Exchange::Answered(200)));
        assert!(!database_failing(Exchange::Answered(409)));
        assert!(database_failing(Exchange::Answered(503)));
        assert!(database_failing(Exchange::Interrupted(200)));
        assert!(database_failing(Exchange::Unanswered));
    }
}
