//! Exactly once against a Twilio that behaves like Twilio: `date_sent` null while queued, a list
//! that lags behind creates, trial-prefixed and redacted bodies, and the races of one instance
//! with its own writes (identical texts, re-claimed orphans, a failing lookup, a lost answer to
//! the `sent` write). Races between instances are in multi_instance.rs. Each test ends with
//! `Stack::assert_exactly_once`.
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::time::Duration;

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{RestFault, RestRule};
use sms_sender_doubles::twilio::Fault;

/// An instance with [`FAST_RACES`] timings and `extra`, once subscribed.
fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&sms_sender_bin!(), &with(FAST_RACES, extra))
}

/// A way the Twilio double lists messages.
type Condition = dyn Fn(&Stack);

/// Every ambiguous kind × {queued for minutes, list lagging, trial account, redacted bodies}:
/// exactly one create, the row `sent` with Twilio's SID.
#[test]
fn every_ambiguous_create_is_found_however_twilio_lists_it() {
    let stack = Stack::start();
    let svc = start(&stack, &[("SENDER_THREADS", "4")]);
    let conditions: [(&str, &Condition); 4] = [
        ("queued for minutes", &|s: &Stack| {
            s.twilio.set_send_delay(Duration::from_secs(600))
        }),
        ("list lagging 3 s", &|s: &Stack| {
            s.twilio.set_send_delay(Duration::from_secs(1));
            s.twilio.set_visibility_lag(Duration::from_secs(3));
        }),
        ("trial account", &|s: &Stack| {
            s.twilio.set_visibility_lag(Duration::ZERO);
            s.twilio.set_trial(true);
        }),
        ("redacted bodies", &|s: &Stack| {
            s.twilio.set_trial(false);
            s.twilio.set_redact_bodies(true);
        }),
    ];
    for (n, (condition, apply)) in conditions.iter().enumerate() {
        apply(&stack);
        let faults = ambiguous_faults();
        for (_, fault) in &faults {
            stack.twilio.fail_next_creates(1, fault.clone());
        }
        for (k, (kind, _)) in faults.iter().enumerate() {
            let conv = stack.create_conversation(&format!("+1555100{n}{k:03}"));
            stack.insert_outbound(&conv, &format!("{condition}: {kind}"));
        }
        assert!(
            stack.wait_settled(Duration::from_secs(60)),
            "{condition}: {:?}\n{}",
            stack.status_counts(),
            svc.log()
        );
    }
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
    assert_eq!(stack.twilio.messages().len(), 16);
}

/// Two rows, same number, same text. One create fails ambiguously without
/// creating; the other creates but its `sent` write is slow. The first must not adopt the
/// second's SMS: two rows, two SMS, two SIDs.
#[test]
fn identical_texts_never_adopt_each_other() {
    let stack = Stack::start();
    stack.twilio.set_send_delay(Duration::ZERO); // listed and "sent" at once: the friendliest list
    let conv = stack.create_conversation("+15551230002");
    let svc = start(&stack, &[("SENDER_THREADS", "4")]);
    stack.twilio.fail_next_creates(
        1,
        Fault::Error {
            status: 500,
            code: 20500,
            message: "Internal Server Error".into(),
            retry_after: None,
        },
    );
    stack.supabase.add_rest_rule(
        RestRule::body("PATCH", "\"status\":\"sent\"")
            .delay(Duration::from_secs(3))
            .times(2),
    );
    let ids = stack.insert_many(
        &conv,
        &["see you at 5".to_string(), "see you at 5".to_string()],
    );
    assert!(
        stack.wait_settled(Duration::from_secs(60)),
        "{:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    let sids: Vec<Option<String>> = ids
        .iter()
        .map(|id| stack.message(id).twilio_message_sid)
        .collect();
    assert!(
        sids.iter().all(|s| s.is_some()),
        "both sent: {sids:?}\n{}",
        svc.log()
    );
    assert_ne!(sids[0], sids[1], "each row has its own SMS\n{}", svc.log());
    let created: Vec<String> = stack.twilio.messages().into_iter().map(|m| m.sid).collect();
    assert_eq!(created.len(), 2, "two SMS for two rows\n{}", svc.log());
    for sid in sids.iter().flatten() {
        assert!(created.contains(sid), "{sid} is a real SMS");
    }
}

/// A row seen `sending` goes sending → queued → sending (claimed again, with a
/// 30 s lease) between two checks; orphan recovery must judge the new claim, not the first sight.
#[test]
fn a_reclaimed_row_is_judged_by_its_new_claim() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230003");
    let svc = start(
        &stack,
        &[("SENDING_TIMEOUT_SECS", "6"), ("SWEEP_INTERVAL_SECS", "60")],
    );
    // A row left `sending` by someone (no stamp): this instance starts observing it.
    let id = stack.insert_outbound(&conv, "reclaimed row");
    assert!(stack.wait_settled(Duration::from_secs(20)));
    stack.sql(&format!(
        "UPDATE messages SET status = 'sending', sent_at = NULL, twilio_message_sid = NULL WHERE id = '{id}'"
    ));
    std::thread::sleep(Duration::from_secs(3));
    // Another instance gives it back and claims it again, with a lease that ends in 30 s.
    stack.sql(&format!(
        "BEGIN; UPDATE messages SET status = 'queued_for_send' WHERE id = '{id}'; \
         UPDATE messages SET status = 'sending', \
         sent_at = now() + interval '30 seconds' \
         WHERE id = '{id}'; COMMIT;"
    ));
    let creates = stack.twilio.create_requests();
    std::thread::sleep(Duration::from_secs(10)); // well past 6 s from the first sight
    let row = stack.message(&id);
    assert_eq!(
        row.status.as_deref(),
        Some("sending"),
        "the new holder keeps it\n{}",
        svc.log()
    );
    assert_eq!(
        stack.twilio.create_requests(),
        creates,
        "nobody else sent it\n{}",
        svc.log()
    );
}

/// After an ambiguous create, Twilio's list answers 400 for a while: the
/// message must not be failed (nor re-sent); once the list answers, the SMS is found.
#[test]
fn a_failing_lookup_never_fails_a_maybe_sent_message() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230005");
    let svc = start(
        &stack,
        &[
            ("SENDING_TIMEOUT_SECS", "8"),
            ("RECONCILE_SETTLE_MS", "1000"),
        ],
    );
    stack
        .twilio
        .fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
    stack.twilio.set_list_outage(Some(Fault::Error {
        status: 400,
        code: 20001,
        message: "Invalid parameter".into(),
        retry_after: None,
    }));
    let id = stack.insert_outbound(&conv, "lookup refused");
    std::thread::sleep(Duration::from_secs(12));
    assert_ne!(
        stack.message(&id).status.as_deref(),
        Some("failed"),
        "{}",
        svc.log()
    );
    assert_eq!(
        stack.twilio.create_requests(),
        1,
        "not re-sent blindly\n{}",
        svc.log()
    );
    stack.twilio.set_list_outage(None);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(40), &[&svc]),
        0
    );
}

/// A `sent` write that applied but whose answer was lost: the retry sees the row recorded, and
/// the log does not claim a loss.
#[test]
fn a_lost_answer_to_the_sent_write_is_recognised() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230006");
    let svc = start(&stack, &[]);
    stack.supabase.add_rest_rule(
        RestRule::body("PATCH", "\"status\":\"sent\"").fault(RestFault::HangupAfterApply),
    );
    let id = stack.insert_outbound(&conv, "lost answer to sent");
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(20), &[&svc]),
        0
    );
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
    std::thread::sleep(Duration::from_millis(1500));
    let log = svc.log();
    assert!(
        !log.contains("could not be recorded") && !log.contains("claimed again"),
        "{log}"
    );
}

/// `/metrics` counts a message `sent` when its row says so, not when Twilio answered: while the
/// `sent` write is held, the counter stays at zero.
#[test]
fn metrics_count_a_send_when_its_row_is_written() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230007");
    let svc = start(&stack, &[]);
    stack.supabase.add_rest_rule(
        RestRule::body("PATCH", "\"status\":\"sent\"").delay(Duration::from_secs(3)),
    );
    let id = stack.insert_outbound(&conv, "counted when written");
    assert!(stack.twilio.wait_for_messages(1, Duration::from_secs(10)));
    let sent_metric = |svc: &Service| {
        let (_, text) = svc.get("/metrics").expect("metrics answer");
        text.lines()
            .find(|l| l.starts_with("sms_sender_messages_total{outcome=\"sent\"}"))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stack.message(&id).status.as_deref(), Some("sending"));
    assert_eq!(sent_metric(&svc).as_deref(), Some("0"), "{}", svc.log());
    assert!(stack.wait_settled(Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(2), || sent_metric(&svc)
        .as_deref()
        == Some("1")));
}
