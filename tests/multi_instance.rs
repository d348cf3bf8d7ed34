//! Several instances on one queue, as a deploy runs them: two instances splitting a burst,
//! rolling restarts (SIGTERM and SIGKILL) of three, a seeded soak of three with random faults
//! and kills (`make soak` runs a long one), a late release that must not undo another
//! instance's claim, and paced instances that must not outlive their leases. Each test ends
//! with every message sent exactly once or failed for a logged reason.
//!
//! Runs the real binary (`SMS_SENDER_BIN` selects another build).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{RestFault, RestRule};
use sms_sender_doubles::twilio::Fault;

/// An instance with [`FAST_RACES`] timings and `extra`, once subscribed.
fn start_racing(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    stack.start_service(&sms_sender_bin!(), &with(FAST_RACES, extra))
}

/// An instance with [`FAST_RECOVERY`] timings and `extra`, not waited for.
fn launch_recovering(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    Service::start(
        &sms_sender_bin!(),
        stack.service_env_with(&with(FAST_RECOVERY, extra)),
    )
}

#[test]
fn two_instances_send_each_of_200_messages_exactly_once() {
    let stack = Stack::start();
    let a = stack.start_service(&sms_sender_bin!(), &[("SENDER_THREADS", "4")]);
    let b = stack.start_service(&sms_sender_bin!(), &[("SENDER_THREADS", "4")]);
    let conv = stack.create_conversation(RECIPIENT);
    let bodies: Vec<String> = (0..200).map(|i| format!("race {i}")).collect();
    for chunk in bodies.chunks(20) {
        stack.insert_many(&conv, chunk);
    }
    assert!(
        stack.wait_status_count("sent", 200, Duration::from_secs(60)),
        "counts {:?}\nA:\n{}\nB:\n{}",
        stack.status_counts(),
        a.log(),
        b.log()
    );
    let sent = stack.twilio.messages();
    assert_eq!(sent.len(), 200);
    let distinct: HashSet<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(distinct.len(), 200, "a message was sent twice");
    assert!(
        a.log().contains(" sent to ") && b.log().contains(" sent to "),
        "both instances worked"
    );
    assert_clean_log(&a, &stack, &[]);
    assert_clean_log(&b, &stack, &[]);
}

#[test]
fn rolling_restarts_of_three_instances_send_1000_messages_exactly_once() {
    let stack = Stack::start();
    stack.twilio.set_latency(Duration::from_millis(10));
    let conv = stack.create_conversation(RECIPIENT);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut fleet: Vec<Service> = (0..3)
        .map(|_| launch_recovering(&stack, &[("SENDER_THREADS", "4")]))
        .collect();
    let mut retired: Vec<Service> = Vec::new();
    let all = bodies("rolling", 1000);
    let deadline = Instant::now() + Duration::from_secs(150);
    for chunk in all.chunks(100) {
        stack.insert_many(&conv, chunk);
        std::thread::sleep(Duration::from_millis(rng.u64(100..500)));
        // Replace one instance, the way a deploy does: mostly SIGTERM, sometimes a hard kill.
        let victim = rng.usize(..fleet.len());
        let mut old = fleet.swap_remove(victim);
        if rng.u8(..4) == 0 {
            old.kill();
        } else {
            old.terminate();
            let status = old
                .wait_exit(Duration::from_secs(10))
                .expect("exits within 10 s");
            assert_eq!(status.code(), Some(0), "{}", old.log());
        }
        retired.push(old);
        fleet.push(launch_recovering(&stack, &[("SENDER_THREADS", "4")]));
        assert!(Instant::now() < deadline, "rolling phase too slow");
    }
    assert!(
        stack.wait_settled(Duration::from_secs(90)),
        "{:?}\n{}",
        stack.status_counts(),
        fleet[0].log()
    );
    let logs: Vec<&Service> = fleet.iter().chain(retired.iter()).collect();
    assert_eq!(stack.assert_exactly_once(&logs), 0);
    assert_eq!(stack.twilio.messages().len(), 1000);
}

/// Instance A gives a message back, the release applies but its answer is
/// lost; B claims it and is sending; A's retried release must not put it back in the queue.
#[test]
fn a_late_release_cannot_undo_another_instances_claim() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15551230001");
    let mut a = start_racing(&stack, &[("SENDER_THREADS", "1"), ("MAX_RETRIES", "5")]);
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
    let b = start_racing(&stack, &[("SENDER_THREADS", "2")]);
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
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(30), &[&a, &b]),
        0
    );
    assert_eq!(stack.message(&id).status.as_deref(), Some("sent"));
}

/// With `MAX_SENDS_PER_SECOND=0.2` and a short lease, sends wait for slots
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
    let a = start_racing(&stack, &paced);
    let bodies: Vec<String> = (0..4).map(|i| format!("paced #{i}")).collect();
    stack.insert_many(&conv, &bodies);
    std::thread::sleep(Duration::from_millis(500));
    let b = start_racing(&stack, &paced);
    assert!(
        stack.wait_settled(Duration::from_secs(90)),
        "{:?}\n{}\n{}",
        stack.status_counts(),
        a.log(),
        b.log()
    );
    assert_eq!(stack.assert_exactly_once(&[&a, &b]), 0);
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
    // The default lease (30 s, renewed while held): an empty value unsets FAST_RACES'.
    let opts = [
        ("SENDER_THREADS", "4"),
        ("SENDING_TIMEOUT_SECS", ""),
        ("RECONCILE_SETTLE_MS", "2500"),
    ];
    let launch = || {
        Service::start(
            &sms_sender_bin!(),
            stack.service_env_with(&with(FAST_RACES, &opts)),
        )
    };
    let mut fleet: Vec<Service> = (0..3).map(|_| launch()).collect();
    let mut retired: Vec<Service> = Vec::new();
    let mut sent_so_far = 0;
    let chunk = (total / 10).max(1);
    while sent_so_far < total {
        let n = chunk.min(total - sent_so_far);
        soak_faults(&stack, &mut rng, 500..3000);
        for i in 0..n {
            let conv = &convs[rng.usize(..convs.len())];
            stack.insert_outbound(conv, &format!("soak {seed} message {}", sent_so_far + i));
        }
        sent_so_far += n;
        std::thread::sleep(Duration::from_millis(rng.u64(200..1500)));
        soak_churn(&mut fleet, &mut retired, &mut rng, 6, launch);
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
