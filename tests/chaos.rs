//! Chaos: crashes, ambiguous Twilio failures, outages of Twilio, Supabase REST, Realtime and
//! PostgreSQL, and rolling restarts (in multi_instance.rs). Every test ends with `Stack::assert_exactly_once`: each message is
//! `sent` with exactly one Twilio create carrying its body and SID, or `failed` for a stated
//! reason; nothing is left `sending` or `queued_for_send`.
//!
//! Timings are shortened through the service's own variables (lease 6 s, checks every second) so
//! the tests stay bounded; the logic is the production logic.

use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::RestFault;
use sms_sender_doubles::twilio::Fault;

/// An instance with [`FAST_RECOVERY`] timings and `extra`, once subscribed.
fn start(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&sms_sender_bin!(), &with(FAST_RECOVERY, extra))
}

/// Kill -9 the service once Twilio holds at least `created` messages.
fn kill_after(svc: &mut Service, stack: &Stack, created: usize) {
    assert!(
        wait_until(Duration::from_secs(60), || stack.twilio.messages().len()
            >= created),
        "never reached {created} creates:\n{}",
        svc.log()
    );
    svc.kill();
}

#[test]
fn sigkill_mid_burst_before_and_after_twilio_converges_without_duplicates() {
    let stack = Stack::start();
    let conv = stack.create_conversation(RECIPIENT);
    stack.twilio.set_latency(Duration::from_millis(40));
    let mut a = start(&stack, &[("SENDER_THREADS", "8")]);
    stack.insert_many(&conv, &bodies("crash", 300));

    // 1: killed while requests wait in Twilio (before the create).
    kill_after(&mut a, &stack, 40);
    // 2: killed while the database writes are slow: SMS created, rows not yet recorded.
    stack.supabase.set_rest_latency(Duration::from_millis(150));
    let mut b = start(&stack, &[("SENDER_THREADS", "8")]);
    kill_after(&mut b, &stack, 120);
    stack.supabase.set_rest_latency(Duration::ZERO);
    let sending = stack.status_counts().get("sending").copied().unwrap_or(0);
    assert!(
        sending > 0,
        "the kills left claimed rows behind: {:?}",
        stack.status_counts()
    );

    let c = start(&stack, &[("SENDER_THREADS", "8")]);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(90), &[&a, &b, &c]),
        0
    );
    assert!(
        c.log().contains("orphan"),
        "orphan recovery did the work:\n{}",
        c.log()
    );
}

#[test]
fn orphans_are_recovered_soon_after_their_stamped_lease_even_with_the_old_migration() {
    let stack = Stack::start();
    stack.sql(include_str!("../sql/migrations/001_claimed_at.sql"));
    stack.supabase.reload_schema();
    let conv = stack.create_conversation(RECIPIENT);
    stack.supabase.set_rest_latency(Duration::from_millis(200));
    let mut a = start(&stack, &[("SENDER_THREADS", "4")]);
    stack.insert_many(&conv, &bodies("stamped", 40));
    kill_after(&mut a, &stack, 5);
    stack.supabase.set_rest_latency(Duration::ZERO);
    let stamped: i64 = stack.db(|c| {
        Ok(c.query_one(
            "SELECT count(*) FROM messages WHERE claimed_at IS NOT NULL",
            &[],
        )?
        .get(0))
    });
    assert!(stamped > 0, "the trigger stamps claims");
    std::thread::sleep(Duration::from_secs(6)); // let the leases expire while nobody runs

    let t = Instant::now();
    let b = start(&stack, &[]);
    assert!(
        stack.wait_settled(Duration::from_secs(60)),
        "{:?}\n{}",
        stack.status_counts(),
        b.log()
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
}

#[test]
fn ambiguous_twilio_failures_after_create_are_reconciled_not_resent() {
    let stack = Stack::start();
    let svc = start(&stack, &[("SENDER_THREADS", "2")]);
    let conv = stack.create_conversation(RECIPIENT);
    for (fault, tag) in [
        (Fault::ErrorAfterCreate { status: 500 }, "500 after create"),
        (Fault::HangupAfterCreate, "cut after create"),
        (
            Fault::DelayAfterCreate(Duration::from_millis(2500)),
            "timeout after create",
        ),
    ] {
        stack.twilio.fail_next_creates(1, fault);
        stack.insert_outbound(&conv, tag);
        assert!(
            stack.wait_settled(Duration::from_secs(30)),
            "{tag}: {:?}\n{}",
            stack.status_counts(),
            svc.log()
        );
    }
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
    assert_eq!(
        stack.twilio.create_requests(),
        3,
        "no second POST for any of them"
    );
    let log = svc.log();
    assert_eq!(
        log.matches("despite the failed attempt").count(),
        3,
        "{log}"
    );
}

#[test]
fn a_5xx_that_did_not_create_is_sent_again_once() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    stack.twilio.fail_next_creates(
        1,
        Fault::Error {
            status: 503,
            code: 20503,
            message: "Service Unavailable".into(),
            retry_after: None,
        },
    );
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_outbound(&conv, "not created the first time");
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(30), &[&svc]),
        0
    );
    assert_eq!(stack.twilio.create_requests(), 2);
    let lists = stack
        .twilio
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!(lists >= 1, "the list was consulted before the second POST");
}

#[test]
fn a_twilio_outage_pauses_sending_and_nothing_fails() {
    let stack = Stack::start();
    let svc = start(&stack, &[("MAX_RETRIES", "2"), ("SENDER_THREADS", "4")]);
    let conv = stack.create_conversation(RECIPIENT);
    stack.twilio.set_outage(Some(Fault::Error {
        status: 503,
        code: 20503,
        message: "Service Unavailable".into(),
        retry_after: None,
    }));
    stack.insert_many(&conv, &bodies("during outage", 30));
    assert!(
        wait_until(Duration::from_secs(20), || svc
            .log()
            .contains("Twilio looks down")),
        "{}",
        svc.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        stack.status_counts().get("failed"),
        None,
        "nothing burned into failed"
    );
    let during = stack.twilio.create_requests();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        stack.twilio.create_requests() - during <= 3,
        "while open, only probes reach Twilio ({} in 2 s)",
        stack.twilio.create_requests() - during
    );
    stack.twilio.set_outage(None);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(60), &[&svc]),
        0
    );
}

#[test]
fn a_supabase_rest_outage_loses_nothing_and_health_tells() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    stack
        .supabase
        .set_rest_outage(Some(RestFault::db_unavailable()));
    stack.insert_many(&conv, &bodies("rest down", 20));
    assert!(
        wait_until(Duration::from_secs(20), || svc
            .health()
            .is_some_and(|(_, h)| h["database"] == "failing")),
        "{}",
        svc.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stack.status_counts().get("failed"),
        None,
        "a database fault never fails a message"
    );
    stack
        .supabase
        .set_rest_outage(Some(RestFault::NonJson { status: 502 }));
    std::thread::sleep(Duration::from_secs(1));
    stack.supabase.set_rest_outage(None);
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(60), &[&svc]),
        0
    );
    assert!(wait_until(Duration::from_secs(5), || svc
        .health()
        .is_some_and(|(_, h)| h["database"] == "ok")));
}

#[test]
fn realtime_black_holed_or_restarted_loses_nothing() {
    let stack = Stack::start();
    let svc = start(&stack, &[("SWEEP_INTERVAL_SECS", "30")]);
    let conv = stack.create_conversation(RECIPIENT);
    let before = stack.supabase.realtime_connections();

    stack.supabase.set_blackhole(true);
    stack.insert_many(&conv, &bodies("black hole", 10));
    assert!(
        wait_until(Duration::from_secs(20), || svc
            .log()
            .contains("heartbeat not answered")),
        "{}",
        svc.log()
    );
    stack.supabase.set_blackhole(false);
    assert!(
        wait_until(Duration::from_secs(20), || stack
            .status_counts()
            .get("sent")
            == Some(&10)),
        "{}",
        svc.log()
    );

    stack.supabase.realtime_server_disconnect();
    stack.insert_many(&conv, &bodies("restart", 10));
    assert!(
        stack.wait_settled(Duration::from_secs(30)),
        "{:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    assert!(
        stack.supabase.realtime_connections() >= before + 2,
        "reconnected twice"
    );
    assert!(svc.wait_subscribed(Duration::from_secs(20)));
    assert_eq!(stack.assert_exactly_once(&[&svc]), 0);
}

#[test]
fn events_dropped_on_a_healthy_socket_are_caught_by_the_periodic_sweep() {
    let stack = Stack::start();
    let svc = start(&stack, &[]);
    let conv = stack.create_conversation(RECIPIENT);
    stack.supabase.set_drop_events(true);
    stack.insert_many(&conv, &bodies("dropped event", 5));
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(20), &[&svc]),
        0
    );
}

#[test]
fn a_postgresql_restart_loses_nothing() {
    let stack = Stack::start();
    stack.twilio.set_latency(Duration::from_millis(20));
    let svc = start(&stack, &[("SENDER_THREADS", "4")]);
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_many(&conv, &bodies("pg restart", 60));
    assert!(wait_until(Duration::from_secs(20), || stack
        .twilio
        .messages()
        .len()
        >= 10));
    stack.pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    stack.pg.start_again();
    stack.insert_many(&conv, &bodies("after restart", 10));
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(60), &[&svc]),
        0
    );
}
