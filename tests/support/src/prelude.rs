//! What the integration test files share: which binary they run, the phone number they send to,
//! the shortened timings they start the service with, and the epilogue that checks the promise.
//! `use sms_sender_doubles::prelude::*;` brings all of it in.
//!
//! The timings are the service's own variables set low, so that leases, sweeps and probes play
//! out in seconds; the logic under test is the production logic. Each list is named for what its
//! values must make possible, because the tests that use it depend on exactly those values.

use std::time::Duration;

use crate::supabase::{RestFault, RestRule};
use crate::twilio::Fault;

pub use crate::harness::{
    binary_under_test, free_port, http_get, wait_until, RestTap, Service, Stack, TempDir,
    FROM_NUMBER,
};
pub use crate::sms_sender_bin;

/// The service binary under test, as a `PathBuf`: `SMS_SENDER_BIN` when set (to show a test
/// failing against another build), else the `sms-sender` cargo built for the calling test crate.
/// A macro because `CARGO_BIN_EXE_sms-sender` exists only while compiling that crate.
#[macro_export]
macro_rules! sms_sender_bin {
    () => {
        $crate::harness::binary_under_test(env!("CARGO_BIN_EXE_sms-sender"))
    };
}

/// The recipient of the messages a test sends when one number is enough (masked in logs as
/// `+1555***4567`; tests that need a conversation per case use numbers of their own).
pub const RECIPIENT: &str = "+15551234567";

/// Crash recovery in seconds: a 6 s lease, orphan checks and sweeps every second and a 2 s
/// reconcile settle, so rows left `sending` by a killed instance are taken back within seconds
/// of their lease (the chaos tests wait out exactly that lease).
pub const FAST_RECOVERY: &[(&str, &str)] = &[
    ("HTTP_TIMEOUT_MS", "1000"),
    ("SENDING_TIMEOUT_SECS", "6"),
    ("ORPHAN_CHECK_SECS", "1"),
    ("SWEEP_INTERVAL_SECS", "1"),
    ("RETRY_BACKOFF_MS", "50"),
    ("REALTIME_HEARTBEAT_MS", "500"),
    ("RECONCILE_SETTLE_MS", "2000"),
];

/// Races around a create whose answer was lost: a 20 s lease, longer than the holds and delays
/// these tests inject, so no claim expires mid-race unless a test shortens it on purpose; and a
/// 4 s reconcile settle, longer than the 3 s list lag the Twilio double is given, so a lookup
/// can see the message it looks for.
pub const FAST_RACES: &[(&str, &str)] = &[
    ("HTTP_TIMEOUT_MS", "1000"),
    ("SENDING_TIMEOUT_SECS", "20"),
    ("RECONCILE_SETTLE_MS", "4000"),
    ("ORPHAN_CHECK_SECS", "1"),
    ("SWEEP_INTERVAL_SECS", "2"),
    ("RETRY_BACKOFF_MS", "50"),
    ("REALTIME_HEARTBEAT_MS", "500"),
];

/// A claim's life in seconds: 1 s requests, a 6 s lease, a 4 s settle window and orphan checks
/// every second; sweeps and heartbeats stay at their defaults.
pub const SHORT_LEASE: &[(&str, &str)] = &[
    ("HTTP_TIMEOUT_MS", "1000"),
    ("SENDING_TIMEOUT_SECS", "6"),
    ("RECONCILE_SETTLE_MS", "4000"),
    ("ORPHAN_CHECK_SECS", "1"),
];

/// Short heartbeats and requests, so that the shortest liveness window allowed applies (8 s).
pub const SHORT_LIVENESS: &[(&str, &str)] = &[
    ("REALTIME_HEARTBEAT_MS", "500"),
    ("HTTP_TIMEOUT_MS", "1000"),
    ("LIVENESS_WINDOW_SECS", "8"),
];

/// `base` with `extra` after it (the service's environment takes the later of two same names).
pub fn with<'a>(
    base: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all = base.to_vec();
    all.extend_from_slice(extra);
    all
}

/// `n` distinct bodies `"{prefix} #{i}"`, long enough to be scanned for in service logs.
pub fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} #{i}")).collect()
}

/// The four ways a create can end without an answer after Twilio stored the message.
pub fn ambiguous_faults() -> Vec<(&'static str, Fault)> {
    vec![
        ("500 after create", Fault::ErrorAfterCreate { status: 500 }),
        ("503 after create", Fault::ErrorAfterCreate { status: 503 }),
        (
            "timeout after create",
            Fault::DelayAfterCreate(Duration::from_secs(3)),
        ),
        ("connection cut after create", Fault::HangupAfterCreate),
    ]
}

/// One round of a soak's faults, drawn from `rng`: up to three creates that end without an
/// answer after Twilio stored them, up to three REST faults (lost answers, hang-ups, the database
/// unavailable), and on one round in two `sent` writes slowed by a delay drawn from `slow_sent_ms`.
pub fn soak_faults(stack: &Stack, rng: &mut fastrand::Rng, slow_sent_ms: std::ops::Range<u64>) {
    let faults = ambiguous_faults();
    for _ in 0..rng.usize(0..4) {
        let (_, f) = &faults[rng.usize(..faults.len())];
        stack.twilio.fail_next_creates(1, f.clone());
    }
    let rest_faults = [
        RestFault::HangupAfterApply,
        RestFault::Hangup,
        RestFault::db_unavailable(),
    ];
    stack.supabase.rest_fail_next(
        rng.usize(0..4),
        rest_faults[rng.usize(..rest_faults.len())].clone(),
    );
    if rng.bool() {
        stack.supabase.add_rest_rule(
            RestRule::body("PATCH", "\"status\":\"sent\"")
                .delay(Duration::from_millis(rng.u64(slow_sent_ms)))
                .times(rng.usize(1..4)),
        );
    }
}

/// One round of a soak's deploys, drawn from `rng`: one chance in `odds` that an instance is
/// killed (SIGKILL), one that it is stopped (SIGTERM, which must end within 15 s); either way a
/// fresh instance from `launch` takes its place and the old one joins `retired` (its log counts).
pub fn soak_churn(
    fleet: &mut Vec<Service>,
    retired: &mut Vec<Service>,
    rng: &mut fastrand::Rng,
    odds: u8,
    launch: impl Fn() -> Service,
) {
    let kill = match rng.u8(..odds) {
        0 => true,
        1 => false,
        _ => return,
    };
    let mut old = fleet.swap_remove(rng.usize(..fleet.len()));
    if kill {
        old.kill();
    } else {
        old.terminate();
        assert!(
            old.wait_exit(Duration::from_secs(15)).is_some(),
            "{}",
            old.log()
        );
    }
    retired.push(old);
    fleet.push(launch());
}

/// The log must not contain any secret of the stack nor any of `bodies`.
pub fn assert_clean_log(svc: &Service, stack: &Stack, bodies: &[&str]) {
    let log = svc.log();
    let env = stack.service_env();
    for (k, v) in &env {
        if k == "SUPABASE_SERVICE_KEY" || k == "TWILIO_AUTH_TOKEN" || k == "TWILIO_ACCOUNT_SID" {
            assert!(!log.contains(v.as_str()), "{k} leaked into the log:\n{log}");
        }
    }
    for b in bodies {
        assert!(
            !log.contains(b),
            "message body {b:?} leaked into the log:\n{log}"
        );
    }
    assert!(
        !log.contains("5551234567"),
        "an unmasked phone number is in the log:\n{log}"
    );
}

impl Stack {
    /// The epilogue of a delivery test: wait up to `timeout` until nothing is `pending`,
    /// `queued_for_send` or `sending` (panicking with the counts and every log if that does not
    /// happen), then [`Stack::assert_exactly_once`]; returns how many rows failed.
    pub fn settle_then_assert_exactly_once(&self, timeout: Duration, logs: &[&Service]) -> usize {
        assert!(
            self.wait_settled(timeout),
            "not settled within {timeout:?}: {:?}\n{}",
            self.status_counts(),
            logs.iter()
                .map(|s| s.log())
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        self.assert_exactly_once(logs)
    }
}
