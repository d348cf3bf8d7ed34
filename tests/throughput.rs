//! Throughput against Twilio's per-account concurrency limit: a 429 / 20429 storm lowers the
//! number of creates in flight and loses nothing (no timing assertions: speed is measured by
//! `make bench`).
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::time::Duration;

use sms_sender_doubles::prelude::*;

fn metric(svc: &Service, name: &str) -> Option<f64> {
    let (_, text) = svc.get("/metrics")?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Twilio allows 6 concurrent requests and refuses the rest with 429 / 20429; 300 messages with
/// the default configuration and `MAX_RETRIES=0` (a 429 must never count as a failed attempt).
/// Every message is sent exactly once, the service saw 429s, and it lowered its concurrency to
/// what the account allows instead of hammering it with all its threads.
#[test]
fn a_429_storm_lowers_concurrency_and_loses_nothing() {
    let stack = Stack::start();
    stack.twilio.set_create_latency(Duration::from_millis(60));
    stack.twilio.set_concurrency_limit(Some(6));
    let convs: Vec<String> = (0..10)
        .map(|i| stack.create_conversation(&format!("+155530000{i:02}")))
        .collect();
    let svc = stack.start_service(&sms_sender_bin!(), &[("MAX_RETRIES", "0")]);
    for (i, conv) in convs.iter().enumerate() {
        let bodies: Vec<String> = (0..30).map(|k| format!("storm {i}/{k}")).collect();
        stack.insert_many(conv, &bodies);
    }
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(120), &[&svc]),
        0,
        "nothing failed"
    );
    let refused = stack.twilio.too_many_requests();
    assert!(refused > 0, "the storm happened");
    assert_eq!(
        metric(&svc, "sms_sender_twilio_throttled_total"),
        Some(refused as f64),
        "every 429 was seen and retried"
    );
    let limit = metric(&svc, "sms_sender_twilio_concurrency_limit").unwrap();
    assert!(
        limit <= 12.0,
        "concurrency came down towards the account's 6 (now {limit}); {refused} refusals"
    );
    // Without adapting, the 128 threads would retry into a 6-wide door for the whole burst:
    // thousands of refusals. Adapting (from 16 creates in flight, cut ×0.8 per round trip) keeps
    // it to a few hundred even against this unusually narrow limit (measured 104–366).
    assert!(
        refused < 600,
        "{refused} refusals for 300 messages: the service kept hammering"
    );
}
