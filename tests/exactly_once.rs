//! Exactly once against a Twilio that behaves like Twilio: `date_sent` null while queued, a list
//! that lags behind creates, trial-prefixed and redacted bodies, and the races of the review
//! (late writes after a re-claim, identical texts, re-claimed orphans, paced leases, a failing
//! lookup, a lost answer to the `sent` write). Each test ends with [`assert_exactly_once`].
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service (how they were shown
//! to fail before the fix).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use sms_sender_doubles::harness::{wait_until, Service, Stack};
use sms_sender_doubles::supabase::{RestFault, RestRule};
use sms_sender_doubles::twilio::Fault;

/// The binary under test.
fn bin() -> PathBuf {
    std::env::var_os("SMS_SENDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sms-sender")))
}

/// Short timings so each race plays out in seconds; the logic is the production logic.
const FAST: &[(&str, &str)] = &[
    ("HTTP_TIMEOUT_MS", "1000"),
    ("SENDING_TIMEOUT_SECS", "20"),
    ("RECONCILE_SETTLE_MS", "4000"),
    ("ORPHAN_CHECK_SECS", "1"),
    ("SWEEP_INTERVAL_SECS", "2"),
    ("RETRY_BACKOFF_MS", "50"),
    ("REALTIME_HEARTBEAT_MS", "500"),
];

fn env(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut all: Vec<(&str, String)> = FAST.iter().map(|(k, v)| (*k, v.to_string())).collect();
    for (k, v) in extra {
        all.retain(|(key, _)| key != k);
        all.push((k, v.to_string()));
    }
    all.into_iter()
        .map(|(k, v)| (Box::leak(k.to_string().into_boxed_str()) as &str, v))
        .collect()
}

fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    let vars = env(extra);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    stack.start_service(&bin(), &pairs)
}

/// Wait until nothing is `pending`, `queued_for_send` or `sending`.
fn wait_settled(stack: &Stack, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let c = stack.status_counts();
        !c.contains_key("queued_for_send")
            && !c.contains_key("sending")
            && !c.contains_key("pending")
    })
}

/// Every row is `sent` with the SID of the one Twilio message created for it (matched by the
/// body the service sent), or `failed` with none created. Returns the number failed.
fn assert_exactly_once(stack: &Stack, logs: &[&Service]) -> usize {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = stack.db(|c| {
        Ok(c.query(
            "SELECT id::text, content, status, twilio_message_sid FROM messages",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
    });
    let dump = || {
        logs.iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    let mut created: HashMap<String, Vec<String>> = HashMap::new();
    for m in stack.twilio.messages() {
        created
            .entry(m.requested_body.clone())
            .or_default()
            .push(m.sid.clone());
    }
    let mut failed = 0;
    for (id, body, status, sid) in &rows {
        let sids = created.get(body).cloned().unwrap_or_default();
        match status.as_deref() {
            Some("sent") => {
                assert_eq!(
                    sids.len(),
                    1,
                    "{id} ({body}) created {} times at Twilio\n{}",
                    sids.len(),
                    dump()
                );
                assert_eq!(
                    sid.as_ref(),
                    sids.first(),
                    "{id} records the SID of its SMS\n{}",
                    dump()
                );
            }
            Some("failed") => {
                assert!(
                    sids.is_empty(),
                    "{id} ({body}) is failed but was created\n{}",
                    dump()
                );
                failed += 1;
            }
            other => panic!(
                "{id} left {other:?}; counts {:?}\n{}",
                stack.status_counts(),
                dump()
            ),
        }
    }
    failed
}

/// The four ways a create can end without an answer after Twilio stored the message.
fn ambiguous_faults() -> Vec<(&'static str, Fault)> {
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

/// Every ambiguous kind × {queued for minutes, list lagging, trial account, redacted bodies}:
/// exactly one create, the row `sent` with Twilio's SID.
#[test]
fn every_ambiguous_create_is_found_however_twilio_lists_it() {
    let stack = Stack::start();
    let svc = start(&stack, &[("SENDER_THREADS", "4")]);
    let conditions: [(&str, &dyn Fn(&Stack)); 4] = [
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
            wait_settled(&stack, Duration::from_secs(60)),
            "{condition}: {:?}\n{}",
            stack.status_counts(),
            svc.log()
        );
    }
    assert_eq!(assert_exactly_once(&stack, &[&svc]), 0);
    assert_eq!(stack.twilio.messages().len(), 16);
}

/// Review finding 1: instance A gives a message back, the release applies but its answer is
/// lost; B claims it and is sending; A's retried release must not put it back in the queue.
#[test]
fn a_late_release_cannot_undo_another_instances_claim() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230001");
    let mut a = start(&stack, &[("SENDER_THREADS", "1"), ("MAX_RETRIES", "5")]);
    // A's first create is refused with a long Retry-After: A holds the claim while it waits.
    stack.twilio.fail_next_creates(
        1,
        Fault::TooManyRequests {
            retry_after: Some(20),
        },
    );
    let id = stack.insert_outbound(&conv, "late release race");
    assert!(wait_until(Duration::from_secs(10), || stack
        .twilio
        .create_requests()
        == 1));
    let b = start(&stack, &[("SENDER_THREADS", "2")]);
    // B's creates wait at Twilio; A's release applies but its answer is lost (A retries it).
    stack.twilio.hold_creates(true);
    stack.supabase.add_rest_rule(
        RestRule::body("PATCH", "\"queued_for_send\"").fault(RestFault::HangupAfterApply),
    );
    a.terminate();
    assert!(
        stack
            .twilio
            .wait_for_held_creates(1, Duration::from_secs(10)),
        "B claims the released message\n{}\n{}",
        a.log(),
        b.log()
    );
    // A retries its release within 0.5 s and exits; give it time, then let B's create through.
    assert!(a.wait_exit(Duration::from_secs(15)).is_some());
    std::thread::sleep(Duration::from_secs(1));
    stack.twilio.hold_creates(false);
    assert!(
        wait_settled(&stack, Duration::from_secs(30)),
        "{:?}\n{}",
        stack.status_counts(),
        b.log()
    );
    assert_eq!(assert_exactly_once(&stack, &[&a, &b]), 0);
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
}

/// Review finding 2: two rows, same number, same text. One create fails ambiguously without
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
        wait_settled(&stack, Duration::from_secs(60)),
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

/// Review finding 3: a row seen `sending` goes sending → queued → sending (claimed again, with a
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
    assert!(wait_settled(&stack, Duration::from_secs(20)));
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

/// Review finding 4: with `MAX_SENDS_PER_SECOND=0.2` and a short lease, sends wait for slots
/// longer than the lease; no create may start after its lease, so another instance's orphan
/// recovery never races a late create.
#[test]
fn paced_waits_never_outlive_the_lease() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230004");
    let paced = [
        ("MAX_SENDS_PER_SECOND", "0.2"),
        ("SENDING_TIMEOUT_SECS", "6"),
        ("SENDER_THREADS", "4"),
    ];
    let a = start(&stack, &paced);
    let bodies: Vec<String> = (0..4).map(|i| format!("paced #{i}")).collect();
    stack.insert_many(&conv, &bodies);
    std::thread::sleep(Duration::from_millis(500));
    let b = start(&stack, &paced);
    assert!(
        wait_settled(&stack, Duration::from_secs(90)),
        "{:?}\n{}\n{}",
        stack.status_counts(),
        a.log(),
        b.log()
    );
    assert_eq!(assert_exactly_once(&stack, &[&a, &b]), 0);
}

/// Review finding 5: after an ambiguous create, Twilio's list answers 400 for a while: the
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
    assert!(
        wait_settled(&stack, Duration::from_secs(40)),
        "{:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    assert_eq!(assert_exactly_once(&stack, &[&svc]), 0);
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
    assert!(
        wait_settled(&stack, Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    assert_eq!(assert_exactly_once(&stack, &[&svc]), 0);
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
    std::thread::sleep(Duration::from_millis(1500));
    let log = svc.log();
    assert!(
        !log.contains("could not be recorded") && !log.contains("claimed again"),
        "{log}"
    );
}
