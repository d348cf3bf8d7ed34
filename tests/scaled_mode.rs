//! Scaled mode end to end (docs/scaled-mode.md): with `sql/migrations/002_scaled_mode.sql`
//! installed, instances find each other through Presence, each message wakes the one instance
//! that serves its partition, rows are claimed in batches, and only one instance sweeps — and
//! every message is still sent exactly once.
//!
//! Runs the real binary (`SMS_SENDER_BIN` selects another build).

use std::time::Duration;

use sms_sender_doubles::prelude::*;

/// The migration that turns scaled mode on.
const MIGRATION: &str = include_str!("../sql/migrations/002_scaled_mode.sql");

/// A stack whose database has scaled mode installed.
fn scaled_stack() -> Stack {
    let stack = Stack::start();
    stack.sql(MIGRATION);
    stack.supabase.reload_schema();
    stack
}

#[test]
fn three_instances_share_the_partitions_and_send_a_burst_exactly_once() {
    let stack = scaled_stack();
    let fleet: Vec<Service> = (0..3)
        .map(|_| {
            stack.start_service(
                &sms_sender_bin!(),
                &with(FAST_RACES, &[("SENDER_THREADS", "8")]),
            )
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || fleet
        .iter()
        .all(|s| s.log().contains("3 member(s)"))));
    let conv = stack.create_conversation(RECIPIENT);
    stack.supabase.reset_counters();
    stack.insert_many(&conv, &bodies("scaled", 300));
    let logs: Vec<&Service> = fleet.iter().collect();
    assert!(
        stack.wait_status_count("sent", 300, Duration::from_secs(60)),
        "counts {:?}\n{}",
        stack.status_counts(),
        fleet
            .iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    stack.assert_exactly_once(&logs);
    let c = stack.supabase.counters();
    let claims = c.rpc_calls("sms_sender_claim") as f64 + count_single_claims(&stack) as f64;
    assert!(
        claims / 300.0 <= 1.2,
        "{claims} claim requests for 300 messages: {c:#?}"
    );
    assert!(
        c.realtime_billed_sent() <= 2 * 300,
        "each message wakes one instance: {c:#?}"
    );
}

/// Single claims: `PATCH`es of `messages` whose filter is `status=eq.queued_for_send`.
fn count_single_claims(stack: &Stack) -> usize {
    stack
        .supabase
        .rest_requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.query.contains("status=eq.queued_for_send"))
        .count()
}
