//! A message's life around the service's own life: shutdown while messages wait for a send slot
//! (waiting is never an attempt, so nothing is failed for it).
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::time::Duration;

use sms_sender_doubles::prelude::*;

/// Six messages paced at 0.5/s with `MAX_RETRIES=0`; SIGTERM after 1.5 s. The ones still
/// waiting for a slot go back to (or stay in) `queued_for_send`; none is `failed`, and a second
/// instance then sends them all, exactly once.
#[test]
fn sigterm_while_waiting_for_a_send_slot_fails_nothing() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551240001");
    let paced = [
        ("MAX_SENDS_PER_SECOND", "0.5"),
        ("MAX_RETRIES", "0"),
        ("SENDER_THREADS", "6"),
    ];
    let mut a = stack.start_service(&sms_sender_bin!(), &paced);
    let bodies: Vec<String> = (0..6).map(|i| format!("paced shutdown #{i}")).collect();
    stack.insert_many(&conv, &bodies);
    std::thread::sleep(Duration::from_millis(1500));
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", a.log());
    let counts = stack.status_counts();
    assert!(!counts.contains_key("failed"), "{counts:?}\n{}", a.log());
    assert!(!counts.contains_key("sending"), "{counts:?}\n{}", a.log());
    let b = stack.start_service(&sms_sender_bin!(), &[("SWEEP_INTERVAL_SECS", "1")]);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(30), &[&a, &b]),
        0
    );
}
