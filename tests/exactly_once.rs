//! Exactly once against a Twilio that behaves like Twilio: `date_sent` null while queued, a list
//! that lags behind creates, trial-prefixed and redacted bodies, and the races of the review
//! (late writes after a re-claim, identical texts, re-claimed orphans, paced leases, a failing
//! lookup, a lost answer to the `sent` write), and a seeded soak over three instances. Each test
//! ends with `Stack::assert_exactly_once`.
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service (how they were shown
//! to fail before the fix).

use std::path::PathBuf;
use std::time::Duration;

use sms_sender_doubles::harness::{binary_under_test, wait_until, Service, Stack};
use sms_sender_doubles::supabase::{RestFault, RestRule};
use sms_sender_doubles::twilio::Fault;

fn bin() -> PathBuf {
    binary_under_test(env!("CARGO_BIN_EXE_sms-sender"))
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

/// [`FAST`] with `extra` on top (a later name replaces an earlier one in the service's env).
fn with_fast<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = FAST.to_vec();
    all.extend_from_slice(extra);
    all
}

fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&bin(), &with_fast(extra))
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
        stack.wait_settled(Duration::from_secs(30)),
        "{:?}\n{}",
        stack.status_counts(),
        b.log()
    );
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
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
        stack.wait_settled(Duration::from_secs(90)),
        "{:?}\n{}\n{}",
        stack.status_counts(),
        a.log(),
        b.log()
    );
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
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
        stack.wait_settled(Duration::from_secs(40)),
        "{:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
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
    assert!(stack.wait_settled(Duration::from_secs(20)), "{}", svc.log());
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
    std::thread::sleep(Duration::from_millis(1500));
    let log = svc.log();
    assert!(
        !log.contains("could not be recorded") && !log.contains("claimed again"),
        "{log}"
    );
}

/// A randomized soak, reproducible by seed (`SOAK_SEED`, default 1; `SOAK_MESSAGES`, default 200;
/// `make soak` runs a longer one): three instances against a realistic Twilio (queued for a
/// second, list lagging up to 2 s) with random after-create faults, REST faults (lost answers,
/// outages, hang-ups), slow `sent` writes, kills and restarts, with the default lease. Every row
/// ends `sent` with exactly one create, or `failed` with its id in a log.
#[test]
fn soak_three_instances_with_random_faults_and_kills() {
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let total: usize = std::env::var("SOAK_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    eprintln!("soak: seed {seed}, {total} messages (SOAK_SEED / SOAK_MESSAGES reproduce it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let stack = Stack::start();
    stack.twilio.set_latency(Duration::from_millis(5));
    stack
        .twilio
        .set_visibility_lag(Duration::from_millis(rng.u64(0..2000)));
    let convs: Vec<String> = (0..5)
        .map(|i| stack.create_conversation(&format!("+1555200000{i}")))
        .collect();
    // The default lease (30 s, renewed while held): an empty value unsets FAST's.
    let opts = [
        ("SENDER_THREADS", "4"),
        ("SENDING_TIMEOUT_SECS", ""),
        ("RECONCILE_SETTLE_MS", "2500"),
    ];
    let launch = || Service::start(&bin(), stack.service_env_with(&with_fast(&opts)));
    let mut fleet: Vec<Service> = (0..3).map(|_| launch()).collect();
    let mut retired: Vec<Service> = Vec::new();
    let faults = ambiguous_faults();
    let rest_faults = [
        RestFault::HangupAfterApply,
        RestFault::Hangup,
        RestFault::db_unavailable(),
    ];
    let mut sent_so_far = 0;
    let chunk = (total / 10).max(1);
    while sent_so_far < total {
        let n = chunk.min(total - sent_so_far);
        for _ in 0..rng.usize(0..4) {
            let (_, f) = &faults[rng.usize(..faults.len())];
            stack.twilio.fail_next_creates(1, f.clone());
        }
        stack.supabase.rest_fail_next(
            rng.usize(0..4),
            rest_faults[rng.usize(..rest_faults.len())].clone(),
        );
        if rng.bool() {
            stack.supabase.add_rest_rule(
                RestRule::body("PATCH", "\"status\":\"sent\"")
                    .delay(Duration::from_millis(rng.u64(500..3000)))
                    .times(rng.usize(1..4)),
            );
        }
        for i in 0..n {
            let conv = &convs[rng.usize(..convs.len())];
            stack.insert_outbound(conv, &format!("soak {seed} message {}", sent_so_far + i));
        }
        sent_so_far += n;
        std::thread::sleep(Duration::from_millis(rng.u64(200..1500)));
        match rng.u8(..6) {
            0 => {
                let victim = rng.usize(..fleet.len());
                let mut old = fleet.swap_remove(victim);
                old.kill();
                retired.push(old);
                fleet.push(launch());
            }
            1 => {
                let victim = rng.usize(..fleet.len());
                let mut old = fleet.swap_remove(victim);
                old.terminate();
                assert!(
                    old.wait_exit(Duration::from_secs(15)).is_some(),
                    "{}",
                    old.log()
                );
                retired.push(old);
                fleet.push(launch());
            }
            _ => {}
        }
    }
    let logs: Vec<&Service> = fleet.iter().chain(retired.iter()).collect();
    assert!(
        stack.wait_settled(Duration::from_secs(180)),
        "seed {seed}: {:?}\n{}",
        stack.status_counts(),
        logs.iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    );
    std::thread::sleep(Duration::from_secs(3)); // any late create would land now
    stack.assert_exactly_once(&logs);
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
