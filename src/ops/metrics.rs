//! Counters and the one histogram the service keeps, and their Prometheus text exposition
//! (format 0.0.4) served at `GET /metrics`.
//!
//! Everything is a lock-free atomic except the per-status Twilio counter (a small map behind a
//! mutex; statuses are few). Values live for the life of the process, so they survive
//! reconnects. Gauges that mirror other state (connection, queue depth, circuit) are read when
//! the page is rendered.
//!
//! The page is one table, `FAMILIES`: each family's name, type, help and where its samples come
//! from, rendered in that order; the README's metrics table is checked against the rendered page
//! (`tests/readme_tables.rs`).

use crate::sync::Locked;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the send-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How a message's processing ended, for `sms_sender_messages_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded `sent` (including ones found at Twilio after an ambiguous failure).
    Sent,
    /// Recorded `failed`.
    Failed,
    /// Not ours to send (claimed elsewhere, no longer queued).
    Skipped,
}

/// The service's metrics.
#[derive(Default)]
pub struct Metrics {
    sent: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    concurrency_limit: AtomicU64,
    unrecorded: AtomicU64,
    handed_over: AtomicU64,
    lease_renewals: AtomicU64,
    reconnects: AtomicU64,
    orphans_recovered: AtomicU64,
    callbacks: AtomicU64,
    callbacks_rejected: AtomicU64,
    twilio_requests: Mutex<BTreeMap<String, u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

/// Point-in-time gauges supplied by the caller when rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Subscribed to Realtime.
    pub realtime_connected: bool,
    /// Ids waiting for a sender thread.
    pub queue_depth: usize,
    /// The pause gate is open (nothing is being sent).
    pub circuit_open: bool,
    /// Supabase REST answered the last request.
    pub database_ok: bool,
}

impl Metrics {
    /// Count a finished message.
    pub fn message(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Sent => &self.sent,
            Outcome::Failed => &self.failed,
            Outcome::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a request to Twilio by its HTTP status (`None`: no answer).
    pub fn twilio_request(&self, status: Option<u16>) {
        let label = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        *self.twilio_requests.locked().entry(label).or_default() += 1;
    }

    /// Count a retry of a send.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The creates currently allowed in flight at once.
    pub fn set_concurrency_limit(&self, limit: usize) {
        self.concurrency_limit
            .store(limit as u64, Ordering::Relaxed);
    }

    /// How many sends Twilio accepted whose `sent` write has not applied yet (kept in memory).
    pub fn set_unrecorded(&self, n: usize) {
        self.unrecorded.store(n as u64, Ordering::Relaxed);
    }

    /// Count a claim handed over at shutdown (its lease ended early for a successor).
    pub fn handed_over(&self) {
        self.handed_over.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a lease renewal that applied.
    pub fn lease_renewed(&self) {
        self.lease_renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a create Twilio refused for its concurrency limit (429 / 20429).
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a Realtime reconnect.
    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Count an orphan settled by recovery.
    pub fn orphan_recovered(&self) {
        self.orphans_recovered.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a status callback (`accepted`: the signature was valid).
    pub fn callback(&self, accepted: bool) {
        let counter = if accepted {
            &self.callbacks
        } else {
            &self.callbacks_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Observe the time from "queued" to "Twilio accepted".
    pub fn send_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            latency.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Messages counted with this outcome so far.
    pub fn messages(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Sent => &self.sent,
            Outcome::Failed => &self.failed,
            Outcome::Skipped => &self.skipped,
        }
        .load(Ordering::Relaxed)
    }

    /// The exposition text: every family of `FAMILIES`, in its order.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        for family in FAMILIES {
            let (name, kind) = (family.name, family.kind.as_str());
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            self.render_samples(&mut out, name, family.samples, &gauges);
        }
        out
    }

    fn render_samples(&self, out: &mut String, name: &str, samples: Samples, gauges: &Gauges) {
        match samples {
            Samples::Kept(counter) => {
                let _ = writeln!(out, "{name} {}", load(counter(self)));
            }
            Samples::Read(gauge) => {
                let _ = writeln!(out, "{name} {}", gauge(gauges));
            }
            Samples::ByLabel(label, values) => {
                for (value, counter) in values {
                    let n = load(counter(self));
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                }
            }
            Samples::Version => {
                let version = env!("CARGO_PKG_VERSION");
                let _ = writeln!(out, "{name}{{version=\"{version}\"}} 1");
            }
            Samples::TwilioStatuses => {
                for (status, n) in self.twilio_requests.locked().iter() {
                    let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
                }
            }
            Samples::Latency => self.render_latency(out, name),
        }
    }

    fn render_latency(&self, out: &mut String, name: &str) {
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = load(&self.latency_sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (for the life of the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A counter or gauge kept in [`Metrics`].
type Kept = fn(&Metrics) -> &AtomicU64;

/// Where a family's samples come from.
#[derive(Clone, Copy)]
enum Samples {
    /// One sample, no labels, kept here.
    Kept(Kept),
    /// One sample, no labels, from the caller's point-in-time [`Gauges`].
    Read(fn(&Gauges) -> u64),
    /// One sample per value of `label`, each kept here.
    ByLabel(&'static str, &'static [(&'static str, Kept)]),
    /// The build's version as a label, always 1.
    Version,
    /// Twilio requests, one sample per HTTP status seen.
    TwilioStatuses,
    /// The send-latency histogram.
    Latency,
}

/// One metric family of the page.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Samples,
}

/// The page, in order.
const FAMILIES: &[Family] = &[
    Family {
        name: "sms_sender_build_info",
        kind: Kind::Gauge,
        help: "Build information; always 1.",
        samples: Samples::Version,
    },
    Family {
        name: "sms_sender_messages_total",
        kind: Kind::Counter,
        help: "Messages processed, by outcome (skipped: claimed by another instance or no longer queued).",
        samples: Samples::ByLabel(
            "outcome",
            &[
                ("sent", |m| &m.sent),
                ("failed", |m| &m.failed),
                ("skipped", |m| &m.skipped),
            ],
        ),
    },
    Family {
        name: "sms_sender_twilio_requests_total",
        kind: Kind::Counter,
        help: "HTTP requests to Twilio (creates and lookups), by status; \"error\" when there was no answer.",
        samples: Samples::TwilioStatuses,
    },
    Family {
        name: "sms_sender_retries_total",
        kind: Kind::Counter,
        help: "Send attempts retried after a transient failure.",
        samples: Samples::Kept(|m| &m.retries),
    },
    Family {
        name: "sms_sender_twilio_throttled_total",
        kind: Kind::Counter,
        help: "Creates Twilio refused for the account's concurrency limit (429 / 20429), retried without counting against MAX_RETRIES.",
        samples: Samples::Kept(|m| &m.throttled),
    },
    Family {
        name: "sms_sender_twilio_concurrency_limit",
        kind: Kind::Gauge,
        help: "Creates allowed in flight at once now (grows while Twilio keeps up, shrinks on 429).",
        samples: Samples::Kept(|m| &m.concurrency_limit),
    },
    Family {
        name: "sms_sender_unrecorded_sends",
        kind: Kind::Gauge,
        help: "Messages Twilio accepted whose 'sent' write could not apply yet; kept in memory and retried (each was logged at ERROR with its id and SID).",
        samples: Samples::Kept(|m| &m.unrecorded),
    },
    Family {
        name: "sms_sender_lease_renewals_total",
        kind: Kind::Counter,
        help: "Claims whose lease was renewed while their sender still held them.",
        samples: Samples::Kept(|m| &m.lease_renewals),
    },
    Family {
        name: "sms_sender_claims_handed_over_total",
        kind: Kind::Counter,
        help: "Claims ended early at shutdown so that a successor settles them after the settle window.",
        samples: Samples::Kept(|m| &m.handed_over),
    },
    Family {
        name: "sms_sender_realtime_connected",
        kind: Kind::Gauge,
        help: "1 while subscribed to Realtime, else 0.",
        samples: Samples::Read(|g| u64::from(g.realtime_connected)),
    },
    Family {
        name: "sms_sender_realtime_reconnects_total",
        kind: Kind::Counter,
        help: "Realtime connections lost and retried.",
        samples: Samples::Kept(|m| &m.reconnects),
    },
    Family {
        name: "sms_sender_queue_depth",
        kind: Kind::Gauge,
        help: "Message ids waiting for a sender thread.",
        samples: Samples::Read(|g| g.queue_depth as u64),
    },
    Family {
        name: "sms_sender_circuit_open",
        kind: Kind::Gauge,
        help: "1 while sending is paused (Twilio outage or refused credentials).",
        samples: Samples::Read(|g| u64::from(g.circuit_open)),
    },
    Family {
        name: "sms_sender_database_up",
        kind: Kind::Gauge,
        help: "1 if Supabase REST answered the last request.",
        samples: Samples::Read(|g| u64::from(g.database_ok)),
    },
    Family {
        name: "sms_sender_orphans_recovered_total",
        kind: Kind::Counter,
        help: "Orphaned 'sending' rows settled.",
        samples: Samples::Kept(|m| &m.orphans_recovered),
    },
    Family {
        name: "sms_sender_status_callbacks_total",
        kind: Kind::Counter,
        help: "Twilio status callbacks, by signature check result.",
        samples: Samples::ByLabel(
            "result",
            &[
                ("accepted", |m| &m.callbacks),
                ("rejected", |m| &m.callbacks_rejected),
            ],
        ),
    },
    Family {
        name: "sms_sender_send_latency_seconds",
        kind: Kind::Histogram,
        help: "Time from a message being queued here to Twilio accepting it.",
        samples: Samples::Latency,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.message(Outcome::Sent);
        m.message(Outcome::Sent);
        m.message(Outcome::Skipped);
        m.twilio_request(Some(201));
        m.twilio_request(None);
        m.send_latency(Duration::from_millis(3));
        m.send_latency(Duration::from_millis(70));
        let text = m.render(Gauges {
            realtime_connected: true,
            queue_depth: 7,
            ..Default::default()
        });
        assert!(text.contains("sms_sender_messages_total{outcome=\"sent\"} 2\n"));
        assert!(text.contains("sms_sender_messages_total{outcome=\"skipped\"} 1\n"));
        assert!(text.contains("sms_sender_twilio_requests_total{status=\"201\"} 1\n"));
        assert!(text.contains("sms_sender_twilio_requests_total{status=\"error\"} 1\n"));
        assert!(text.contains("sms_sender_realtime_connected 1\n"));
        assert!(text.contains("sms_sender_queue_depth 7\n"));
        assert!(text.contains("sms_sender_send_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("sms_sender_send_latency_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("sms_sender_send_latency_seconds_bucket{le=\"0.1\"} 2\n"));
        assert!(text.contains("sms_sender_send_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("sms_sender_send_latency_seconds_count 2\n"));
        assert!(text.contains(&format!(
            "sms_sender_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
