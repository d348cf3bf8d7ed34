//! A claim's life, end to end, against the real binary: how long a claim lasts and who settles
//! it when its holder is gone (a crash recovered within a minute with default settings, a create
//! still in flight at SIGTERM handed over to a successor), when a row is claimed at all (only when
//! its create can start), and what a claim must never do: park a row `sending` because the
//! answer to the claim was lost, let a same-text sibling adopt an SMS that is not its own, take
//! a previous attempt's SID as proof for a requeued row, or pin a sender thread on a `sent`
//! write the database refuses. Also: a retry after Twilio's 429 counts in `/metrics`.
//!
//! Each test asserts on database rows, the Twilio double's stored messages, `/metrics` and log
//! text, with holds and injected faults rather than luck. `SMS_SENDER_BIN` runs them against
//! another build of the service.

use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{RestFault, RestRule};
use sms_sender_doubles::twilio::Fault;

/// Start the service with delivery receipts on, so every create's `StatusCallback` names its row.
fn start_with_receipts(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack
        .start_service_with_receipts(&sms_sender_bin!(), extra)
        .0
}

/// [`SHORT_LEASE`] with `extra` on top, so that the lease and the settle window play out in
/// seconds.
fn short_lease<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    with(SHORT_LEASE, extra)
}

/// Every service's log, for assertion messages.
fn logs(services: &[&Service]) -> String {
    services
        .iter()
        .map(|s| s.log())
        .collect::<Vec<_>>()
        .join("\n-----\n")
}

fn sending(stack: &Stack) -> i64 {
    stack.status_counts().get("sending").copied().unwrap_or(0)
}

/// The stored Twilio messages whose `StatusCallback` names row `id` (receipts on).
fn sids_named_by_callback(stack: &Stack, id: &str) -> Vec<String> {
    let param = format!("sms_sender_message={id}");
    stack
        .twilio
        .messages()
        .into_iter()
        .filter(|m| {
            m.status_callback
                .as_deref()
                .is_some_and(|u| u.contains(&param))
        })
        .map(|m| m.sid)
        .collect()
}

/// An instance dies (SIGKILL) in the middle of a 300-message burst, with creates in flight. Its
/// replacement, started at once with default settings, settles every row within a minute: the
/// default lease is short (30 s) and recovery checks again as soon as the first orphan is due.
#[test]
fn a_crash_is_recovered_within_a_minute_with_default_settings() {
    let stack = Stack::start();
    stack.twilio.set_create_latency(Duration::from_millis(200));
    let convs: Vec<String> = (0..10)
        .map(|i| stack.create_conversation(&format!("+1555310{i:04}")))
        .collect();
    let mut a = stack.start_service(&sms_sender_bin!(), &[]);
    for (c, conv) in convs.iter().enumerate() {
        let bodies: Vec<String> = (0..30).map(|i| format!("crash recovery {c}-{i}")).collect();
        stack.insert_many(conv, &bodies);
    }
    assert!(
        stack.twilio.wait_for_messages(60, Duration::from_secs(30)),
        "A sends: {:?}\n{}",
        stack.status_counts(),
        a.log()
    );
    // Creates that reach Twilio from now on wait there; A dies with them in flight, and Twilio
    // then finishes them (it does not know the client is gone).
    stack.twilio.hold_creates(true);
    assert!(
        stack
            .twilio
            .wait_for_held_creates(1, Duration::from_secs(10)),
        "{}",
        a.log()
    );
    a.kill();
    let killed = Instant::now();
    let counts_at_kill = stack.status_counts();
    let sending_at_kill = sending(&stack);
    let stored_at_kill = stack.twilio.messages().len();
    stack.twilio.hold_creates(false);
    assert!(
        stored_at_kill < 300 && sending_at_kill > 0,
        "the kill must leave work: {counts_at_kill:?}, {stored_at_kill} stored"
    );
    let b_started = Instant::now();
    let b = stack.start_service(&sms_sender_bin!(), &[]);
    let all_sent = stack.wait_status_count(
        "sent",
        300,
        Duration::from_secs(60).saturating_sub(b_started.elapsed()),
    );
    eprintln!(
        "crash recovery: {sending_at_kill} row(s) 'sending' at the kill ({counts_at_kill:?}, \
         {stored_at_kill} SMS stored); all 300 sent: {all_sent}, {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        all_sent,
        "all 300 rows `sent` within 60 s of B's start; counts now {:?}, rows still 'sending' \
         have sent_at (lease end) up to {:?}\n{}",
        stack.status_counts(),
        stack.db(|c| Ok(c
            .query_one(
                "SELECT max(sent_at)::text FROM messages WHERE status = 'sending'",
                &[]
            )?
            .get::<_, Option<String>>(0))),
        b.log()
    );
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
}

/// While Twilio holds every create, the rows `sending` are exactly the creates held at Twilio:
/// a row is claimed only once its sender holds a place among the creates in flight (16 at
/// first), so the rest stay `queued_for_send` for any instance to take.
#[test]
fn rows_are_claimed_only_when_their_create_can_start() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553200001");
    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    stack.twilio.hold_creates(true);
    // Four messages occupy the four sender threads the service starts with; the next 56 wait in
    // its queue. When one create is let through, its thread takes the next id with more waiting
    // and none idle, and sender threads start for all of them: more threads than the 16 creates
    // allowed in flight.
    let bodies: Vec<String> = (0..60).map(|i| format!("just in time #{i}")).collect();
    stack.insert_many(&conv, &bodies[..4]);
    assert!(
        stack
            .twilio
            .wait_for_held_creates(4, Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    stack.insert_many(&conv, &bodies[4..]);
    std::thread::sleep(Duration::from_millis(500)); // the ids reach the service's queue
    assert!(stack.twilio.release_one_create());
    assert!(
        stack
            .twilio
            .wait_for_held_creates(16, Duration::from_secs(20)),
        "16 creates reach Twilio: {} held, {:?}\n{}",
        stack.twilio.held_creates(),
        stack.status_counts(),
        svc.log()
    );
    // Wait until nothing moves for a second (well inside the 15 s HTTP timeout of the holds).
    let mut last = (usize::MAX, -1);
    let mut since = Instant::now();
    let stable = wait_until(Duration::from_secs(10), || {
        let now = (stack.twilio.held_creates(), sending(&stack));
        if now != last {
            last = now;
            since = Instant::now();
        }
        since.elapsed() >= Duration::from_secs(1)
    });
    assert!(
        stable,
        "held creates / sending rows kept changing: {last:?}"
    );
    let (held, claimed) = last;
    eprintln!(
        "just in time: {held} create(s) held at Twilio, {claimed} row(s) 'sending', counts {:?}",
        stack.status_counts()
    );
    assert_eq!(
        claimed,
        held as i64,
        "rows 'sending' ({claimed}) = creates held at Twilio ({held}); counts {:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    stack.twilio.hold_creates(false);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(60), &[&svc]),
        0
    );
}

/// SIGTERM while a create is still in flight (held at Twilio past the 8 s drain): the instance
/// hands the claim over (the row stays `sending`, its lease end set to now, the id logged with
/// "handed over") and exits 0. Twilio then finishes the create; a successor with default settings
/// records that one SMS within the settle window and an orphan check.
#[test]
fn sigterm_hands_over_a_create_still_in_flight() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553300001");
    let mut a = stack.start_service(&sms_sender_bin!(), &[]);
    stack.twilio.hold_creates(true);
    let id = stack.insert_outbound(&conv, "handed over at shutdown");
    assert!(
        stack
            .twilio
            .wait_for_held_creates(1, Duration::from_secs(20)),
        "{}",
        a.log()
    );
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(12));
    let a_exited = Instant::now();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "A exits 0 within 12 s of SIGTERM\n{}",
        a.log()
    );
    let row = stack.message(&id);
    let handed_over = stack.count_messages(&format!(
        "id = '{id}' AND status = 'sending' AND sent_at <= now() + interval '1 second'"
    ));
    assert_eq!(
        handed_over,
        1,
        "the row stays 'sending' with its lease end set to now (not in the future): {row:?}\n{}",
        a.log()
    );
    let log = a.log();
    assert!(
        log.lines()
            .any(|l| l.contains("handed over") && l.contains(&id)),
        "A's log names {id} as handed over:\n{log}"
    );
    // Twilio completes the create whose client left.
    stack.twilio.hold_creates(false);
    assert!(stack.twilio.wait_for_messages(1, Duration::from_secs(5)));
    let sid = stack.twilio.messages()[0].sid.clone();
    let b = stack.start_service(&sms_sender_bin!(), &[]);
    let recorded = stack.wait_message_status(
        &id,
        "sent",
        Duration::from_secs(20).saturating_sub(a_exited.elapsed()),
    );
    eprintln!(
        "handover: the successor recorded the row {:.1} s after A's exit",
        a_exited.elapsed().as_secs_f64()
    );
    assert!(
        recorded,
        "B settles the handed-over row within 20 s of A's exit: {:?}\n{}",
        stack.message(&id),
        logs(&[&a, &b])
    );
    assert_eq!(
        stack.message(&id).twilio_message_sid.as_deref(),
        Some(sid.as_str())
    );
    assert_eq!(stack.twilio.messages().len(), 1, "{}", logs(&[&a, &b]));
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
}

/// The claim PATCH applies but its answer is lost, and REST then fails for 4 s, so the claim
/// cannot be read back at once. When REST answers again the row is recognised as this
/// instance's claim (by its stamp) and sent within seconds, not parked `sending` for the lease;
/// the log never says "left queued" about a row that is `sending`.
#[test]
fn a_lost_claim_answer_is_resolved_not_parked() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553400001");
    // A long lease (the old build requires ≥ 4 × the 15 s HTTP timeout): only a resolved claim,
    // not orphan recovery, can settle the row within the test's window.
    let svc = stack.start_service(&sms_sender_bin!(), &[("SENDING_TIMEOUT_SECS", "60")]);
    // The claim is held 500 ms, then applied, then the connection is cut; the test turns the
    // outage on while it is held, so every request after the claim fails.
    stack.supabase.add_rest_rule(
        RestRule::body("PATCH", "\"status\":\"sending\"")
            .delay(Duration::from_millis(500))
            .fault(RestFault::HangupAfterApply),
    );
    let id = stack.insert_outbound(&conv, "claim answer lost");
    let is_claim = |r: &sms_sender_doubles::supabase::RestRecord| {
        r.method == "PATCH" && r.body.contains("\"status\":\"sending\"")
    };
    assert!(
        wait_until(Duration::from_secs(10), || stack
            .supabase
            .rest_requests()
            .iter()
            .any(is_claim)),
        "the claim reaches REST\n{}",
        svc.log()
    );
    stack
        .supabase
        .set_rest_outage(Some(RestFault::db_unavailable()));
    assert!(
        wait_until(Duration::from_secs(5), || {
            stack
                .supabase
                .rest_requests()
                .iter()
                .any(|r| is_claim(r) && r.status.is_none())
                && stack.message(&id).status.as_deref() == Some("sending")
        }),
        "the claim applied: {:?}",
        stack.message(&id)
    );
    std::thread::sleep(Duration::from_secs(4));
    stack.supabase.set_rest_outage(None);
    let outage_ended = Instant::now();
    let sent = stack.wait_message_status(&id, "sent", Duration::from_secs(10));
    assert!(
        sent,
        "sent within 10 s of REST answering again (the lease is 60 s): {:?}\n{}",
        stack.message(&id),
        svc.log()
    );
    eprintln!(
        "lost claim answer: sent {:.1} s after the outage ended",
        outage_ended.elapsed().as_secs_f64()
    );
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
    let log = svc.log();
    assert!(
        !log.contains("left queued"),
        "the log says 'left queued' about a row that was 'sending':\n{log}"
    );
}

/// Two rows, same number, same text. The first create is stored but answered 500 (ambiguous),
/// and Twilio's list shows it only after 2.2 s; the next create is refused (500, not created).
/// The first row's sender keeps its row (renewing the lease) and keeps asking Twilio until it
/// finds its SMS; the sibling waits, and never adopts the first row's SMS. Two SMS, two rows,
/// each row recording the SMS whose status callback names it.
#[test]
fn a_same_text_sibling_never_adopts_an_unrecorded_message() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553500001");
    let svc = start_with_receipts(
        &stack,
        &short_lease(&[("SENDER_THREADS", "4"), ("RETRY_BACKOFF_MS", "1500")]),
    );
    stack.twilio.set_visibility_lag(Duration::from_millis(2200));
    stack
        .twilio
        .fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
    stack.twilio.fail_next_creates(
        1,
        Fault::Error {
            status: 500,
            code: 20500,
            message: "Internal Server Error".into(),
            retry_after: None,
        },
    );
    let ids = stack.insert_many(
        &conv,
        &[
            "same words, twice".to_string(),
            "same words, twice".to_string(),
        ],
    );
    assert!(
        stack.wait_settled(Duration::from_secs(60)),
        "{:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    let rows: Vec<_> = ids.iter().map(|id| stack.message(id)).collect();
    let created: Vec<String> = stack.twilio.messages().into_iter().map(|m| m.sid).collect();
    assert!(
        rows.iter().all(|r| r.status.as_deref() == Some("sent")),
        "both rows sent: {rows:?}\n{}",
        svc.log()
    );
    assert_eq!(created.len(), 2, "two SMS for two rows\n{}", svc.log());
    // The stored-but-500 create, the refused one, and the sibling's retry: nothing else.
    assert_eq!(stack.twilio.create_requests(), 3, "{}", svc.log());
    assert_ne!(
        rows[0].twilio_message_sid,
        rows[1].twilio_message_sid,
        "each row has its own SMS\n{}",
        svc.log()
    );
    let created_for: Vec<(String, Option<String>)> = stack
        .twilio
        .messages()
        .into_iter()
        .map(|m| (m.sid, m.status_callback))
        .collect();
    for row in &rows {
        let own = sids_named_by_callback(&stack, &row.id);
        assert!(
            own.len() == 1 && row.twilio_message_sid.as_ref() == own.first(),
            "row {} records {:?}, but the SMS whose status callbacks name it are {own:?}; \
             rows {rows:?}; SMS (SID, callback) {created_for:?}\n{}",
            row.id,
            row.twilio_message_sid,
            svc.log()
        );
    }
}

/// A row sent as S0, then failed by a signed delivery receipt, is set back to `queued_for_send`
/// by the app. Its next create is refused with a 500 (not created: ambiguous). S0 is in Twilio's
/// list, recorded on this very row, but it is the previous attempt's SMS, never proof for the
/// new claim: the row ends `sent` with a new SID, two SMS in all.
#[test]
fn a_requeued_failed_row_sends_a_new_sms_once() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553600001");
    let svc = start_with_receipts(&stack, &short_lease(&[("RETRY_BACKOFF_MS", "200")]));
    let id = stack.insert_outbound(&conv, "sent again after a failure");
    assert!(
        stack.wait_message_status(&id, "sent", Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    let s0 = stack.message(&id).twilio_message_sid.expect("a SID");
    assert_eq!(
        stack
            .twilio
            .send_status_callback(&s0, "failed", Some(30008)),
        Some(200)
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let row = stack.message(&id);
            row.status.as_deref() == Some("failed")
                && row.twilio_message_sid.as_deref() == Some(s0.as_str())
        }),
        "the receipt fails the row: {:?}\n{}",
        stack.message(&id),
        svc.log()
    );
    stack.twilio.fail_next_creates(
        1,
        Fault::Error {
            status: 500,
            code: 20500,
            message: "Internal Server Error".into(),
            retry_after: None,
        },
    );
    stack.sql(&format!(
        "UPDATE messages SET status = 'queued_for_send' WHERE id = '{id}'"
    ));
    let requeued = Instant::now();
    assert!(
        stack.wait_message_status(&id, "sent", Duration::from_secs(40)),
        "the requeued row is sent again: {:?}\n{}",
        stack.message(&id),
        svc.log()
    );
    eprintln!(
        "requeued row sent again {:.1} s after the requeue",
        requeued.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1)); // a stray create would land now
    let row = stack.message(&id);
    let created: Vec<String> = stack.twilio.messages().into_iter().map(|m| m.sid).collect();
    assert_ne!(
        row.twilio_message_sid.as_deref(),
        Some(s0.as_str()),
        "the requeued row records a new SMS, not the previous attempt's {s0} \
         (created: {created:?})\n{}",
        svc.log()
    );
    assert_eq!(
        created.len(),
        2,
        "one SMS per attempt: {created:?}\n{}",
        svc.log()
    );
    assert_eq!(row.twilio_message_sid.as_ref(), created.get(1));
}

/// With one sender thread, message 1's `sent` write is refused by the database (400, a check
/// constraint: permanent while it lasts). After a few tries the service keeps the (id, SID) fact
/// in memory, logs it at ERROR, shows it in `/metrics` as `sms_sender_unrecorded_sends`, and
/// frees the thread and the (number, text) hold: message 2, same number and text, is sent. Once
/// the database accepts the write, message 1 is recorded with its SID and the gauge is 0.
#[test]
fn a_sent_write_that_cannot_apply_releases_the_sender() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553700001");
    let svc = stack.start_service(&sms_sender_bin!(), &[("SENDER_THREADS", "1")]);
    stack.twilio.hold_creates(true);
    let id1 = stack.insert_outbound(&conv, "recorded much later");
    assert!(
        stack
            .twilio
            .wait_for_held_creates(1, Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    // While this constraint exists, PostgreSQL refuses `sent` on message 1 only: PostgREST
    // answers 400 with code 23514 ("new row … violates check constraint").
    stack.sql(&format!(
        "ALTER TABLE messages ADD CONSTRAINT test_unrecordable \
         CHECK (id <> '{id1}'::uuid OR status <> 'sent')"
    ));
    let id2 = stack.insert_outbound(&conv, "recorded much later");
    stack.twilio.hold_creates(false);
    assert!(
        stack.wait_message_status(&id2, "sent", Duration::from_secs(20)),
        "message 2 is sent while message 1's write is refused: {:?} / {:?}\n{}",
        stack.message(&id1),
        stack.message(&id2),
        svc.log()
    );
    let created: Vec<String> = stack.twilio.messages().into_iter().map(|m| m.sid).collect();
    assert_eq!(created.len(), 2, "{}", svc.log());
    let sid1 = created[0].clone();
    assert_eq!(
        stack.message(&id2).twilio_message_sid.as_ref(),
        Some(&created[1])
    );
    assert_eq!(
        stack.message(&id1).status.as_deref(),
        Some("sending"),
        "{}",
        svc.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || svc
            .log()
            .lines()
            .any(|l| l.contains("ERROR")
                && l.contains(&id1)
                && l.contains(&sid1))),
        "an ERROR line names {id1} and {sid1}:\n{}",
        svc.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || svc
            .metric("sms_sender_unrecorded_sends")
            == Some(1.0)),
        "sms_sender_unrecorded_sends 1: {:?}\n{}",
        svc.get("/metrics"),
        svc.log()
    );
    stack.sql("ALTER TABLE messages DROP CONSTRAINT test_unrecordable");
    assert!(
        wait_until(Duration::from_secs(45), || {
            let row = stack.message(&id1);
            row.status.as_deref() == Some("sent")
                && row.twilio_message_sid.as_deref() == Some(sid1.as_str())
        }),
        "message 1 recorded with {sid1} once the database accepts it: {:?}\n{}",
        stack.message(&id1),
        svc.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || svc
            .metric("sms_sender_unrecorded_sends")
            == Some(0.0)),
        "the gauge goes back to 0: {:?}",
        svc.metric("sms_sender_unrecorded_sends")
    );
    assert_eq!(stack.twilio.messages().len(), 2, "{}", svc.log());
}

/// A create refused with 429 and then accepted: the retry is counted in
/// `sms_sender_retries_total`.
#[test]
fn a_retry_after_429_counts_in_retries_total() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553800001");
    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    stack
        .twilio
        .fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
    let id = stack.insert_outbound(&conv, "after a 429");
    assert!(
        stack.wait_message_status(&id, "sent", Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    assert_eq!(stack.twilio.create_requests(), 2);
    assert!(
        wait_until(Duration::from_secs(5), || svc
            .metric("sms_sender_retries_total")
            .is_some_and(|n| n >= 1.0)),
        "sms_sender_retries_total counts the retry after 429: {:?}",
        svc.metric("sms_sender_retries_total")
    );
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
}
