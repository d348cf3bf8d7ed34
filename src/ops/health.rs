//! The health endpoint Cloud Run probes, and the connection state it reports.
//!
//! [`Health`] is shared state written from what the Realtime task reports and read by the HTTP
//! thread ([`crate::ops::server`]): `healthy` while subscribed or within [`GRACE`] of losing (or
//! first seeking) the subscription, `unhealthy` after that so the platform restarts us, and
//! `shutting_down` once shutdown began. It also carries whether Supabase REST is answering.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::sync::Locked;
use crate::timestamp;

/// How long the service may be without a subscription before it reports itself unhealthy.
pub const GRACE: Duration = Duration::from_secs(60);

/// The WebSocket state shown in the health response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Subscribed (join ok and "Subscribed to PostgreSQL" received).
    Connected,
    /// Connecting, joining, or waiting for the subscription.
    Connecting,
    /// No socket (backing off before the next attempt).
    Disconnected,
}

impl Link {
    fn as_str(self) -> &'static str {
        match self {
            Link::Connected => "connected",
            Link::Connecting => "connecting",
            Link::Disconnected => "disconnected",
        }
    }
}

/// Shared health state.
#[derive(Clone)]
pub struct Health {
    inner: Arc<State>,
}

struct State {
    link: AtomicU8,
    /// When the subscription was lost (or the service started); `None` while subscribed.
    unsubscribed_since: Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
    /// Kept by the REST client's observer: set while Supabase REST is failing.
    database_failing: Arc<AtomicBool>,
}

/// What `GET /health` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// 200 or 503.
    pub http_status: u16,
    /// `healthy`, `unhealthy` or `shutting_down`.
    pub status: &'static str,
    /// The WebSocket state.
    pub link: Link,
    /// Whether Supabase REST answered the last request (informational: restarting would not
    /// help, so it does not change the status code).
    pub database_ok: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// State at start: connecting, the grace period running.
    pub fn new() -> Health {
        Health {
            inner: Arc::new(State {
                link: AtomicU8::new(Link::Connecting as u8),
                unsubscribed_since: Mutex::new(Some(Instant::now())),
                shutting_down: AtomicBool::new(false),
                database_failing: Arc::default(),
            }),
        }
    }

    /// Record a new WebSocket state.
    pub fn set_link(&self, link: Link) {
        self.inner.link.store(link as u8, Ordering::SeqCst);
        let mut since = self.inner.unsubscribed_since.locked();
        match link {
            Link::Connected => *since = None,
            _ => {
                since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// The current WebSocket state.
    pub fn link(&self) -> Link {
        match self.inner.link.load(Ordering::SeqCst) {
            x if x == Link::Connected as u8 => Link::Connected,
            x if x == Link::Connecting as u8 => Link::Connecting,
            _ => Link::Disconnected,
        }
    }

    /// The flag the REST client's observer keeps up to date (reported as `database`;
    /// [`crate::ops::observers::DatabaseStatus`]).
    pub fn database_status(&self) -> Arc<AtomicBool> {
        self.inner.database_failing.clone()
    }

    /// Mark the service as shutting down (health turns 503).
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The report for `now`.
    pub fn report_at(&self, now: Instant) -> Report {
        let link = self.link();
        let since = *self.inner.unsubscribed_since.locked();
        let (http_status, status) = if self.inner.shutting_down.load(Ordering::SeqCst) {
            (503, "shutting_down")
        } else if since.is_none_or(|t| now.saturating_duration_since(t) <= GRACE) {
            (200, "healthy")
        } else {
            (503, "unhealthy")
        };
        let database_ok = !self.inner.database_failing.load(Ordering::Relaxed);
        Report {
            http_status,
            status,
            link,
            database_ok,
        }
    }

    /// The response body for `report` at wall-clock `time`.
    pub fn body(report: &Report, time: SystemTime) -> String {
        serde_json::json!({
            "status": report.status,
            "service": "sms-sender",
            "timestamp": timestamp::rfc3339_seconds(time),
            "websocket": report.link.as_str(),
            "database": if report.database_ok { "ok" } else { "failing" },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_within_grace_then_unhealthy() {
        let h = Health::new();
        let t0 = Instant::now();
        assert_eq!(h.report_at(t0).status, "healthy");
        assert_eq!(h.report_at(t0).link, Link::Connecting);
        assert_eq!(
            h.report_at(t0 + GRACE + Duration::from_secs(1)).http_status,
            503
        );
        assert_eq!(
            h.report_at(t0 + GRACE + Duration::from_secs(1)).status,
            "unhealthy"
        );

        h.set_link(Link::Connected);
        let r = h.report_at(t0 + Duration::from_secs(3600));
        assert_eq!(
            (r.http_status, r.status, r.link),
            (200, "healthy", Link::Connected)
        );

        h.set_link(Link::Disconnected);
        let lost = Instant::now();
        assert_eq!(
            h.report_at(lost + Duration::from_secs(59)).status,
            "healthy"
        );
        h.set_link(Link::Connecting);
        assert_eq!(
            h.report_at(lost + Duration::from_secs(61)).status,
            "unhealthy",
            "reconnect attempts do not restart the grace period"
        );
        h.set_shutting_down();
        assert_eq!(h.report_at(lost).status, "shutting_down");
        assert_eq!(h.report_at(lost).http_status, 503);
    }

    #[test]
    fn body_has_the_documented_fields() {
        let r = Report {
            http_status: 200,
            status: "healthy",
            link: Link::Connected,
            database_ok: false,
        };
        let v: serde_json::Value =
            serde_json::from_str(&Health::body(&r, std::time::UNIX_EPOCH)).unwrap();
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["service"], "sms-sender");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(v["websocket"], "connected");
        assert_eq!(v["database"], "failing");
    }
}
