//! Scaled mode end to end (docs/scaled-mode.md): with `sql/migrations/002_scaled_mode.sql`
//! installed, instances find each other through Presence, each message wakes the one instance
//! that serves its partition, rows are claimed in batches, and only one instance sweeps — and
//! every message is still sent exactly once, through faults, kills, members coming and going,
//! lost broadcasts and a Presence that does not work. Without the migration an instance runs the
//! default mode, and `sms-sender check` says which mode the database has.
//!
//! Runs the real binary (`SMS_SENDER_BIN` selects another build).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{PresenceFault, SupabaseConfig};
use sms_sender_doubles::twilio::TwilioConfig;

/// The migration that turns scaled mode on.
const MIGRATION: &str = include_str!("../sql/migrations/002_scaled_mode.sql");

/// The partition count the migration declares.
const PARTITIONS: u16 = 16;

/// How long the Supabase double keeps a member whose socket went silent (its idle timeout): the
/// membership timeout of these tests (the real server's is 60 s).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(3);

/// The service's allowance for clocks apart (`delivery::lease::CLOCK_SKEW`): orphan recovery
/// waits this long past a claim's stamp, on top of the settle window.
const CLOCK_ALLOWANCE: Duration = Duration::from_secs(5);

/// A stack whose database has scaled mode installed.
fn scaled_stack() -> Stack {
    scaled_stack_with(SupabaseConfig::default())
}

/// [`scaled_stack`] with this Supabase double configuration.
fn scaled_stack_with(config: SupabaseConfig) -> Stack {
    let stack = Stack::start_with(config, TwilioConfig::default());
    stack.sql(MIGRATION);
    stack.supabase.reload_schema();
    stack
}

/// Every log, for a failure message.
fn all_logs(fleet: &[&Service]) -> String {
    fleet
        .iter()
        .map(|s| s.log())
        .collect::<Vec<_>>()
        .join("\n-----\n")
}

/// Wait until every instance of `fleet` logged the membership of `n` members.
fn wait_members(fleet: &[&Service], n: usize, timeout: Duration) {
    let line = format!("scaled mode: {n} member(s)");
    assert!(
        wait_until(timeout, || fleet.iter().all(|s| s.log().contains(&line))),
        "not every instance saw {n} members within {timeout:?}\n{}",
        all_logs(fleet)
    );
}

/// The instance's Presence key, from its start line (`… (this instance is <key>)`).
fn member_key(svc: &Service) -> String {
    let log = svc.log();
    let at = log
        .find("this instance is ")
        .unwrap_or_else(|| panic!("no member key in the log:\n{log}"));
    log[at + "this instance is ".len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

/// The partitions the instance said it serves last (`… serving partitions [a, b]`).
fn serving(svc: &Service) -> Vec<u16> {
    let log = svc.log();
    let Some(at) = log.rfind("serving partitions [") else {
        return Vec::new();
    };
    let rest = &log[at + "serving partitions [".len()..];
    rest[..rest.find(']').unwrap_or(0)]
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Whether the instance's last membership line says it sweeps.
fn sweeps(svc: &Service) -> bool {
    svc.log()
        .lines()
        .rev()
        .find(|l| l.contains("serving partitions"))
        .is_some_and(|l| l.contains("and sweeping"))
}

/// A random v4 UUID whose row falls in `partition` (its last byte modulo 16).
fn id_in_partition(rng: &mut fastrand::Rng, partition: u16) -> String {
    let last = partition as u8 + 16 * rng.u8(0..16);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:010x}{last:02x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..0x1000),
        rng.u16(..0x1000),
        rng.u64(..1 << 40)
    )
}

/// The rows not yet `sent`, by partition: `(partition, status, count)`.
fn left_by_partition(stack: &Stack) -> Vec<(i32, String, i64)> {
    stack.db(|c| {
        Ok(c.query(
            "SELECT get_byte(uuid_send(id), 15) % 16, status, count(*) FROM messages \
             WHERE status <> 'sent' GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
    })
}

/// Single claims: `PATCH`es of `messages` by id on `status=eq.queued_for_send` (the sweep's
/// `PATCH` that fails unsendable rows filters on `content=like.`, not on an id).
fn count_single_claims(stack: &Stack) -> usize {
    stack
        .supabase
        .rest_requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.query.contains("status=eq.queued_for_send")
                && r.query.contains("content=not.like.")
        })
        .count()
}

/// The timings of the recovery tests: a 6 s lease, a 2 s settle window, orphan checks every
/// second, and no periodic sweep within the test (so only the rebalance and orphan recovery can
/// deliver what a lost instance held).
const RECOVERY: &[(&str, &str)] = &[
    ("HTTP_TIMEOUT_MS", "1000"),
    ("SENDING_TIMEOUT_SECS", "6"),
    ("RECONCILE_SETTLE_MS", "2000"),
    ("ORPHAN_CHECK_SECS", "1"),
    ("SWEEP_INTERVAL_SECS", "600"),
    ("RETRY_BACKOFF_MS", "50"),
    ("REALTIME_HEARTBEAT_MS", "500"),
    ("SENDER_THREADS", "2"),
];

#[test]
fn three_instances_share_the_partitions_and_send_a_burst_exactly_once() {
    let stack = scaled_stack();
    let fleet: Vec<Service> = (0..3)
        .map(|_| {
            stack.start_service(
                &sms_sender_bin!(),
                // A sweep during the burst hands on only rows queued at the previous sweep
                // too, so it does not race the owners; it is the backstop for a claim that a
                // REST hiccup left queued.
                &with(
                    FAST_RACES,
                    &[("SENDER_THREADS", "8"), ("SWEEP_INTERVAL_SECS", "10")],
                ),
            )
        })
        .collect();
    let logs: Vec<&Service> = fleet.iter().collect();
    wait_members(&logs, 3, Duration::from_secs(20));
    let conv = stack.create_conversation(RECIPIENT);
    stack.supabase.reset_counters();
    stack.supabase.clear_rest_requests();
    stack.insert_many(&conv, &bodies("scaled", 300));
    assert!(
        stack.wait_status_count("sent", 300, Duration::from_secs(30)),
        "counts {:?}; rows left by partition {:?}; {:#?}\n{}",
        stack.status_counts(),
        left_by_partition(&stack),
        stack.supabase.counters(),
        all_logs(&logs)
    );
    stack.assert_exactly_once(&logs);
    let c = stack.supabase.counters();
    let claims = c.rpc_calls("sms_sender_claim") as f64 + count_single_claims(&stack) as f64;
    assert!(
        claims / 300.0 <= 1.2,
        "{claims} claim requests for 300 messages: {c:#?}"
    );
    eprintln!("{claims} claim requests for 300 messages");
    assert!(
        c.realtime_billed_sent() <= 2 * 300,
        "each message wakes one instance: {c:#?}"
    );
}

/// The multi-instance soak in scaled mode: three instances, a Twilio that lists late, random
/// ambiguous creates and REST faults, slow `sent` writes, SIGKILLs and SIGTERMs with
/// replacements. Every row ends `sent` once or `failed` with its id logged.
#[test]
fn exactly_once_through_faults_and_kills_of_three_scaled_instances() {
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let total = 200;
    eprintln!("scaled soak: seed {seed}, {total} messages (SOAK_SEED reproduces it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let stack = scaled_stack();
    stack.twilio.set_latency(Duration::from_millis(5));
    stack
        .twilio
        .set_visibility_lag(Duration::from_millis(rng.u64(0..1500)));
    let convs: Vec<String> = (0..5)
        .map(|i| stack.create_conversation(&format!("+1555300000{i}")))
        .collect();
    let opts = [
        ("SENDER_THREADS", "4"),
        ("SENDING_TIMEOUT_SECS", "10"),
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
    wait_members(
        &fleet.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(20),
    );
    let chunk = total / 10;
    for round in 0..10 {
        soak_faults(&stack, &mut rng, 500..2500);
        let batch: Vec<String> = (0..chunk)
            .map(|i| format!("scaled soak {seed} message {}", round * chunk + i))
            .collect();
        stack.insert_many(&convs[rng.usize(..convs.len())], &batch);
        std::thread::sleep(Duration::from_millis(rng.u64(200..1200)));
        soak_churn(&mut fleet, &mut retired, &mut rng, 4, launch);
    }
    let logs: Vec<&Service> = fleet.iter().chain(retired.iter()).collect();
    stack.settle_then_assert_exactly_once(Duration::from_secs(120), &logs);
    std::thread::sleep(Duration::from_secs(2)); // any late create would land now
    stack.assert_exactly_once(&logs);
    assert!(
        fleet.iter().any(|s| s.log().contains("scaled mode: ")),
        "the fleet ran in scaled mode\n{}",
        all_logs(&logs)
    );
}

/// What happens to the instance that owns the partitions under test.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// SIGKILL: its socket closes, the server sees it leave at once.
    Killed,
    /// Frozen (SIGSTOP) and its socket black-holed without a close: the server notices only
    /// after its idle timeout.
    Vanished,
}

/// An instance holding claims (creates held at Twilio) and with rows still queued in its
/// partitions is lost: every one of its messages is sent within lease + clock allowance +
/// settle window + one membership timeout (+ 2 s of checks and polling), exactly once.
fn lost_owner_is_replaced_within_the_bound(loss: Loss) {
    let stack = scaled_stack_with(SupabaseConfig {
        idle_timeout: MEMBERSHIP_TIMEOUT,
        ..SupabaseConfig::default()
    });
    let conv = stack.create_conversation(RECIPIENT);
    let mut fleet: Vec<Service> = (0..3)
        .map(|_| stack.start_service(&sms_sender_bin!(), RECOVERY))
        .collect();
    wait_members(
        &fleet.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(20),
    );
    let victim = fleet.remove(0);
    let mine = serving(&victim);
    assert!(!mine.is_empty(), "{}", victim.log());
    let key = member_key(&victim);
    let mut rng = fastrand::Rng::with_seed(5);
    let rows: Vec<(String, String)> = (0..8)
        .map(|i| {
            let p = mine[i % mine.len()];
            (
                id_in_partition(&mut rng, p),
                format!("owned by the lost one {loss:?} #{i}"),
            )
        })
        .collect();
    stack.twilio.hold_creates(true);
    stack.insert_with_ids(&conv, &rows);
    // Its two senders claim and wait at Twilio; the other rows stay queued in its partitions.
    assert!(
        stack
            .twilio
            .wait_for_held_creates(2, Duration::from_secs(10)),
        "{}",
        victim.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut victim = victim;
    let lost_at = Instant::now();
    match loss {
        Loss::Killed => victim.kill(),
        Loss::Vanished => {
            victim.freeze();
            assert!(stack.supabase.realtime_vanish_presence_key(&key) >= 1);
        }
    }
    // The held creates complete at Twilio: orphan recovery must find them there.
    stack.twilio.hold_creates(false);
    let lease = Duration::from_secs(6);
    let settle = Duration::from_secs(2);
    let bound = lease + CLOCK_ALLOWANCE + settle + MEMBERSHIP_TIMEOUT + Duration::from_secs(2);
    let logs: Vec<&Service> = fleet.iter().chain(std::iter::once(&victim)).collect();
    let delivered = wait_until(bound, || {
        stack.count_messages("status = 'sent'") == rows.len() as i64
    });
    let took = lost_at.elapsed();
    assert!(
        delivered,
        "{loss:?}: its messages not all sent within {bound:?} (lease {lease:?} + clock allowance \
         {CLOCK_ALLOWANCE:?} + settle {settle:?} + membership {MEMBERSHIP_TIMEOUT:?} + 2 s): \
         {:?}\n{}",
        stack.status_counts(),
        all_logs(&logs)
    );
    eprintln!("{loss:?}: every message of the lost owner sent {took:?} after the loss");
    victim.kill();
    std::thread::sleep(Duration::from_millis(500));
    let logs: Vec<&Service> = fleet.iter().chain(std::iter::once(&victim)).collect();
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(10), &logs),
        0
    );
    assert!(
        fleet
            .iter()
            .all(|s| s.log().contains("scaled mode: 2 member(s)")),
        "the survivors rebalanced\n{}",
        all_logs(&logs)
    );
}

#[test]
fn a_killed_owner_s_messages_go_out_within_lease_settle_and_membership_timeout() {
    lost_owner_is_replaced_within_the_bound(Loss::Killed);
}

#[test]
fn a_vanished_owner_s_messages_go_out_within_lease_settle_and_membership_timeout() {
    lost_owner_is_replaced_within_the_bound(Loss::Vanished);
}

/// Members join (two new instances), leave cleanly (SIGTERM) and crash (SIGKILL) while a burst
/// drains: every message once, and the logs show the partitions dealt again.
#[test]
fn members_joining_and_leaving_during_a_burst_send_each_message_once() {
    let stack = scaled_stack_with(SupabaseConfig {
        idle_timeout: MEMBERSHIP_TIMEOUT,
        ..SupabaseConfig::default()
    });
    stack.twilio.set_latency(Duration::from_millis(20));
    let conv = stack.create_conversation(RECIPIENT);
    let opts = with(FAST_RECOVERY, &[("SENDER_THREADS", "4")]);
    let launch = || Service::start(&sms_sender_bin!(), stack.service_env_with(&opts));
    let mut fleet: Vec<Service> = (0..2).map(|_| launch()).collect();
    let mut retired: Vec<Service> = Vec::new();
    wait_members(
        &fleet.iter().collect::<Vec<_>>(),
        2,
        Duration::from_secs(20),
    );
    let all = bodies("churn", 400);
    for (i, chunk) in all.chunks(50).enumerate() {
        stack.insert_many(&conv, chunk);
        std::thread::sleep(Duration::from_millis(400));
        match i {
            1 | 3 => fleet.push(launch()),
            4 => {
                let mut old = fleet.remove(0);
                old.terminate();
                let status = old.wait_exit(Duration::from_secs(15));
                assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", old.log());
                retired.push(old);
            }
            6 => {
                let mut old = fleet.remove(0);
                old.kill();
                retired.push(old);
            }
            _ => {}
        }
    }
    let logs: Vec<&Service> = fleet.iter().chain(retired.iter()).collect();
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(90), &logs),
        0
    );
    // The first instance to leave saw the fleet grow; the survivors saw it shrink.
    let counts_seen = |svc: &Service| -> BTreeSet<usize> {
        svc.log()
            .lines()
            .filter_map(|l| {
                let at = l.find("scaled mode: ")? + "scaled mode: ".len();
                l[at..].split(' ').next()?.parse().ok()
            })
            .collect()
    };
    assert!(
        counts_seen(&retired[0]).len() >= 2,
        "a member saw the fleet change: {:?}\n{}",
        counts_seen(&retired[0]),
        retired[0].log()
    );
    for s in &fleet {
        assert!(
            s.log().contains("scaled mode: 2 member(s)"),
            "a survivor rebalanced to two members\n{}",
            s.log()
        );
    }
}

/// A broadcast lost by Realtime (the row's only wake-up): the sweeper's periodic sweep finds the
/// row within one sweep interval.
#[test]
fn a_lost_broadcast_is_found_by_the_sweeper_within_two_intervals() {
    let stack = scaled_stack();
    let conv = stack.create_conversation(RECIPIENT);
    let opts = with(FAST_RACES, &[("SWEEP_INTERVAL_SECS", "3")]);
    let fleet: Vec<Service> = (0..2)
        .map(|_| stack.start_service(&sms_sender_bin!(), &opts))
        .collect();
    let logs: Vec<&Service> = fleet.iter().collect();
    wait_members(&logs, 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    stack.supabase.reset_counters();
    stack.supabase.drop_next_broadcasts(1);
    let id = stack.insert_outbound(&conv, "its wake-up is lost");
    let inserted = Instant::now();
    // A row of the sweeper's own partitions goes at its next sweep; another member's row once
    // it was queued at two sweeps in a row (so a sweep never races the owners for fresh rows).
    let bound = Duration::from_secs(2 * 3) + Duration::from_millis(1500);
    assert!(
        stack.wait_message_status(&id, "sent", bound),
        "not sent within two sweep intervals + 1.5 s: {:?}\n{}",
        stack.status_counts(),
        all_logs(&logs)
    );
    eprintln!("sent {:?} after the insert", inserted.elapsed());
    let c = stack.supabase.counters();
    assert_eq!(
        c.realtime_sent.get("broadcast").copied().unwrap_or(0),
        0,
        "the broadcast was lost: {c:#?}"
    );
    assert!(
        fleet
            .iter()
            .any(|s| s.log().contains("catch-up found 1 queued message(s)")),
        "a sweep found it\n{}",
        all_logs(&logs)
    );
    assert_eq!(stack.assert_exactly_once(&logs), 0);
}

/// Presence misbehaving as `fault`: each instance serves every partition (and says so), and a
/// burst still goes out exactly once.
fn without_presence_every_instance_serves_everything(fault: PresenceFault) {
    let stack = scaled_stack();
    stack.supabase.set_presence_fault(Some(fault.clone()));
    let conv = stack.create_conversation(RECIPIENT);
    let fleet: Vec<Service> = (0..2)
        .map(|_| {
            Service::start(
                &sms_sender_bin!(),
                stack.service_env_with(&with(FAST_RACES, &[("SENDER_THREADS", "4")])),
            )
        })
        .collect();
    let logs: Vec<&Service> = fleet.iter().collect();
    // Without a presence state the fallback comes after the join limit (15 s).
    assert!(
        wait_until(Duration::from_secs(25), || fleet
            .iter()
            .all(
                |s| s.log().contains("without membership") && s.wait_subscribed(Duration::ZERO)
            )),
        "{fault:?}: not every instance fell back and subscribed\n{}",
        all_logs(&logs)
    );
    let partition_channels = |topics: &[String]| {
        topics
            .iter()
            .filter(|t| t.starts_with("realtime:sms-sender:p"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || {
            let sockets = stack.supabase.realtime_sockets();
            sockets
                .iter()
                .filter(|s| partition_channels(&s.topics) == usize::from(PARTITIONS))
                .count()
                == 2
        }),
        "{fault:?}: each instance joins all {PARTITIONS} partitions: {:#?}\n{}",
        stack.supabase.realtime_sockets(),
        all_logs(&logs)
    );
    stack.insert_many(&conv, &bodies(&format!("no presence {fault:?}"), 60));
    assert_eq!(
        stack.settle_then_assert_exactly_once(Duration::from_secs(30), &logs),
        0
    );
}

#[test]
fn presence_refusing_the_track_makes_every_instance_serve_every_partition() {
    without_presence_every_instance_serves_everything(PresenceFault::TrackError);
}

#[test]
fn presence_rate_limited_makes_every_instance_serve_every_partition() {
    without_presence_every_instance_serves_everything(PresenceFault::RateLimited);
}

#[test]
fn presence_never_answering_makes_every_instance_serve_every_partition() {
    without_presence_every_instance_serves_everything(PresenceFault::Ignore);
}

/// Periodic sweeps (`GET messages?…status=eq.queued_for_send`) and orphan checks (`GET
/// messages?…status=eq.sending`) of the requests one tap recorded.
fn sweeps_and_orphan_checks(tap: &RestTap) -> (usize, usize) {
    let lines = tap.request_lines();
    let gets = |status: &str| {
        lines
            .iter()
            .filter(|l| {
                l.starts_with("GET /rest/v1/messages?")
                    && l.contains(status)
                    && l.contains("order=id.asc")
            })
            .count()
    };
    (gets("status=eq.queued_for_send"), gets("status=eq.sending"))
}

/// Three idle instances, each behind a tap of its own: over a window, the periodic sweep and the
/// orphan check come from one instance only (the one that says it sweeps); when it is killed,
/// one of the others takes both over.
#[test]
fn one_instance_sweeps_and_checks_orphans_and_another_takes_over() {
    let stack = scaled_stack_with(SupabaseConfig {
        idle_timeout: MEMBERSHIP_TIMEOUT,
        ..SupabaseConfig::default()
    });
    let opts = [
        ("SWEEP_INTERVAL_SECS", "1"),
        ("ORPHAN_CHECK_SECS", "1"),
        ("REALTIME_HEARTBEAT_MS", "500"),
    ];
    let taps: Vec<RestTap> = (0..3)
        .map(|_| RestTap::start(stack.supabase.port()))
        .collect();
    let mut fleet: Vec<Service> = taps
        .iter()
        .map(|t| {
            let url = t.url();
            stack.start_service(&sms_sender_bin!(), &with(&opts, &[("SUPABASE_URL", &url)]))
        })
        .collect();
    wait_members(
        &fleet.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(20),
    );
    let window = Duration::from_secs(5);
    let measure = |fleet: &[Service], taps: &[RestTap]| -> Vec<(usize, usize)> {
        // Let the sweeps of the last (re)subscription end before the window opens.
        std::thread::sleep(Duration::from_millis(1500));
        taps.iter().for_each(RestTap::clear);
        std::thread::sleep(window);
        let counts: Vec<(usize, usize)> = taps.iter().map(sweeps_and_orphan_checks).collect();
        eprintln!("(sweeps, orphan checks) per instance over {window:?}: {counts:?}");
        let sweepers: Vec<usize> = (0..fleet.len()).filter(|&i| sweeps(&fleet[i])).collect();
        assert_eq!(
            sweepers.len(),
            1,
            "one instance says it sweeps\n{}",
            all_logs(&fleet.iter().collect::<Vec<_>>())
        );
        counts
    };
    let check = |fleet: &[Service], counts: &[(usize, usize)]| {
        let sweeper = (0..fleet.len()).find(|&i| sweeps(&fleet[i])).unwrap();
        for (i, &(sw, orphans)) in counts.iter().enumerate() {
            if i == sweeper {
                assert!(
                    sw >= 3 && orphans >= 3,
                    "the sweeper sweeps and checks about every second: {counts:?}"
                );
            } else {
                assert_eq!(
                    (sw, orphans),
                    (0, 0),
                    "instance {i} is not the sweeper, yet swept or checked: {counts:?}\n{}",
                    fleet[i].log()
                );
            }
        }
        sweeper
    };
    let counts = measure(&fleet, &taps);
    let sweeper = check(&fleet, &counts);
    let mut gone = fleet.remove(sweeper);
    let mut taps = taps;
    let _gone_tap = taps.remove(sweeper);
    gone.kill();
    wait_members(
        &fleet.iter().collect::<Vec<_>>(),
        2,
        Duration::from_secs(15),
    );
    let counts = measure(&fleet, &taps);
    check(&fleet, &counts);
}

/// Without the migration an instance runs the default mode: it asks once, and says nothing of
/// scaled mode.
#[test]
fn without_the_migration_an_instance_runs_the_default_mode() {
    let stack = Stack::start();
    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    let conv = stack.create_conversation(RECIPIENT);
    let id = stack.insert_outbound(&conv, "default mode message");
    assert!(
        stack.wait_message_status(&id, "sent", Duration::from_secs(10)),
        "{}",
        svc.log()
    );
    let log = svc.log();
    assert!(
        !log.to_lowercase().contains("scaled mode"),
        "no scaled mode without the migration:\n{log}"
    );
    let c = stack.supabase.counters();
    assert_eq!(c.rpc_calls("sms_sender_scaled_mode"), 1, "{c:#?}");
    assert_eq!(c.rpc_calls("sms_sender_claim"), 0, "{c:#?}");
    assert!(
        c.realtime_sent
            .get("postgres_changes")
            .copied()
            .unwrap_or(0)
            >= 1,
        "woken by Postgres Changes: {c:#?}"
    );
}

/// `sms-sender check` against `stack`: its exit code and stdout.
fn check(stack: &Stack) -> (Option<i32>, String) {
    let out = Command::new(sms_sender_bin!())
        .arg("check")
        .env_clear()
        .envs(stack.service_env())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_says_whether_scaled_mode_is_installed() {
    let stack = Stack::start_with(
        SupabaseConfig::default(),
        TwilioConfig {
            owned_numbers: vec![FROM_NUMBER.into()],
            ..TwilioConfig::default()
        },
    );
    let (code, out) = check(&stack);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Scaled mode: not installed"), "{out}");
    stack.sql(MIGRATION);
    stack.supabase.reload_schema();
    let (code, out) = check(&stack);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Scaled mode: installed"), "{out}");
    assert!(out.contains("16 partitions"), "{out}");
}

/// One instance with few senders and a short queue, a burst far larger than both: batch claims
/// run while the queue is full, and a woken row a full batch left behind must keep its wake-up
/// (no periodic sweep here to rescue it).
#[test]
fn a_burst_larger_than_the_queue_leaves_no_row_for_the_sweeper() {
    let stack = scaled_stack();
    let instance = stack.start_service(
        &sms_sender_bin!(),
        &[("SENDER_THREADS", "4"), ("SWEEP_INTERVAL_SECS", "600")],
    );
    wait_members(&[&instance], 1, Duration::from_secs(20));
    let conv = stack.create_conversation(RECIPIENT);
    stack.insert_many(&conv, &bodies("larger than the queue", 500));
    assert!(
        stack.wait_status_count("sent", 500, Duration::from_secs(30)),
        "counts {:?}; rows left by partition {:?}",
        stack.status_counts(),
        left_by_partition(&stack)
    );
    assert_eq!(stack.assert_exactly_once(&[&instance]), 0);
}
