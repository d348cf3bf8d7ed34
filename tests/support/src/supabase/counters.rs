//! Traffic counters of the Supabase double, for the benchmark and for tests that measure cost:
//! Realtime frames written to and read from clients, by event name, and PostgREST requests by
//! kind (a table and method, or a function called over RPC).
//!
//! Invariant: a Realtime frame is counted once per client it reached (a broadcast fanned out to
//! three sockets counts three), at the moment it is written to that client's socket, so frames
//! dropped by faults (blackhole, vanished sockets, dropped broadcasts) are not counted; a REST
//! request is counted on arrival, whatever the answer (faults included).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// What a PostgREST request was for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RestKind {
    /// `<method> /rest/v1/<table>`.
    Table { method: String, table: String },
    /// `POST|GET /rest/v1/rpc/<function>`.
    Rpc { function: String },
    /// Anything else under `/rest/v1/` (the root document).
    Other { method: String },
}

impl RestKind {
    /// Classify a request by its method and (still percent-encoded) path.
    pub(crate) fn of(method: &str, path: &str) -> RestKind {
        let name = crate::http::percent_decode(path.strip_prefix("/rest/v1/").unwrap_or(""), false);
        if let Some(function) = name.strip_prefix("rpc/") {
            RestKind::Rpc {
                function: function.to_string(),
            }
        } else if name.is_empty() {
            RestKind::Other {
                method: method.to_string(),
            }
        } else {
            RestKind::Table {
                method: method.to_string(),
                table: name,
            }
        }
    }
}

/// The Supabase event names Supabase bills as Realtime messages when delivered to a client.
pub const BILLED_SENT_EVENTS: [&str; 4] = [
    "broadcast",
    "presence_state",
    "presence_diff",
    "postgres_changes",
];

/// A snapshot of the counters (see [`crate::supabase::SupabaseDouble::counters`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupabaseCounters {
    /// Frames written to clients, by `event` (`broadcast`, `presence_diff`, `phx_reply`…).
    pub realtime_sent: BTreeMap<String, u64>,
    /// Well-formed frames read from clients, by `event` (`heartbeat`, `presence`, `phx_join`…).
    pub realtime_received: BTreeMap<String, u64>,
    /// REST requests by kind.
    pub rest: BTreeMap<RestKind, u64>,
}

impl SupabaseCounters {
    /// Messages delivered to clients that Supabase bills: broadcast, presence and
    /// postgres_changes frames, one per receiving client.
    pub fn realtime_billed_sent(&self) -> u64 {
        BILLED_SENT_EVENTS
            .iter()
            .map(|e| self.realtime_sent.get(*e).copied().unwrap_or(0))
            .sum()
    }

    /// Every frame received from clients except heartbeats.
    pub fn realtime_received_without_heartbeats(&self) -> u64 {
        self.realtime_received
            .iter()
            .filter(|(e, _)| e.as_str() != "heartbeat")
            .map(|(_, n)| n)
            .sum()
    }

    /// REST calls of one function over RPC.
    pub fn rpc_calls(&self, function: &str) -> u64 {
        self.rest
            .get(&RestKind::Rpc {
                function: function.to_string(),
            })
            .copied()
            .unwrap_or(0)
    }

    /// REST requests with this method on this table.
    pub fn table_requests(&self, method: &str, table: &str) -> u64 {
        self.rest
            .get(&RestKind::Table {
                method: method.to_string(),
                table: table.to_string(),
            })
            .copied()
            .unwrap_or(0)
    }
}

/// The live counters, shared by the socket threads and the REST handler.
#[derive(Default)]
pub(crate) struct Counters {
    realtime_sent: Mutex<BTreeMap<String, u64>>,
    realtime_received: Mutex<BTreeMap<String, u64>>,
    rest: Mutex<BTreeMap<RestKind, u64>>,
}

impl Counters {
    pub(crate) fn sent(&self, event: &str) {
        *self
            .realtime_sent
            .lock()
            .unwrap()
            .entry(event.to_string())
            .or_default() += 1;
    }

    pub(crate) fn received(&self, event: &str) {
        *self
            .realtime_received
            .lock()
            .unwrap()
            .entry(event.to_string())
            .or_default() += 1;
    }

    pub(crate) fn rest(&self, kind: RestKind) {
        *self.rest.lock().unwrap().entry(kind).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> SupabaseCounters {
        SupabaseCounters {
            realtime_sent: self.realtime_sent.lock().unwrap().clone(),
            realtime_received: self.realtime_received.lock().unwrap().clone(),
            rest: self.rest.lock().unwrap().clone(),
        }
    }

    pub(crate) fn reset(&self) {
        self.realtime_sent.lock().unwrap().clear();
        self.realtime_received.lock().unwrap().clear();
        self.rest.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_billing() {
        assert_eq!(
            RestKind::of("POST", "/rest/v1/rpc/sms_sender_claim"),
            RestKind::Rpc {
                function: "sms_sender_claim".into()
            }
        );
        assert_eq!(
            RestKind::of("PATCH", "/rest/v1/messages"),
            RestKind::Table {
                method: "PATCH".into(),
                table: "messages".into()
            }
        );
        let c = Counters::default();
        c.sent("broadcast");
        c.sent("broadcast");
        c.sent("phx_reply");
        c.sent("presence_diff");
        c.received("heartbeat");
        c.received("presence");
        c.rest(RestKind::of("POST", "/rest/v1/rpc/f"));
        let s = c.snapshot();
        assert_eq!(s.realtime_billed_sent(), 3);
        assert_eq!(s.realtime_received_without_heartbeats(), 1);
        assert_eq!(s.rpc_calls("f"), 1);
        c.reset();
        assert_eq!(c.snapshot(), SupabaseCounters::default());
    }
}
