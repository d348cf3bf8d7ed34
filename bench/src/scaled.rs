//! Scaled mode against the default mode (docs/scaled-mode.md), for fleets of 1, 3 and 10
//! instances: claim requests, REST requests and Realtime messages per message for a trickle and
//! for a burst, the fleet's idle REST traffic, and the burst's wall time. `sms-bench scaled`
//! (`make bench-scaled`) runs only this and splices its section into BENCHMARKS.md between
//! [`BEGIN`] and [`END`]; `make bench` rewrites the file but keeps that section as it was.
//!
//! Invariants: every figure comes from the doubles' own counters (REST requests counted on
//! arrival, Realtime frames counted once per client they reached), reset right before the
//! window they measure; each mode runs on a database of its own (scaled: the migration
//! applied), so one mode's instances never see the other's; a message not sent exactly once
//! fails the run as broken.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sms_sender_doubles::harness::{Service, Stack};
use sms_sender_doubles::supabase::{SupabaseConfig, SupabaseCounters};
use sms_sender_doubles::twilio::TwilioConfig;

use crate::report::tail;
use crate::{step, PHONE};

/// The migration that turns scaled mode on.
const MIGRATION: &str = include_str!("../../sql/migrations/002_scaled_mode.sql");

/// The fleet sizes measured.
pub(crate) const SIZES: [usize; 3] = [1, 3, 10];
/// Messages of the trickle, inserted one at a time [`TRICKLE_GAP`] apart.
const TRICKLE: usize = 100;
const TRICKLE_GAP: Duration = Duration::from_millis(30);
/// Messages of the burst, inserted in one transaction.
const BURST: usize = 500;
/// How long the idle fleets are watched (a whole minute: sweeps and orphan checks run every
/// 60 s by default, so a shorter window would catch either one round or none).
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// Sender threads of each instance (ten instances share a 2-core machine).
const THREADS: &str = "4";

/// The targets for scaled mode at 10 instances.
const TARGET_CLAIMS_PER_MESSAGE: f64 = 1.2;
const TARGET_REALTIME_PER_SMS: f64 = 2.0;
const TARGET_IDLE_REST_PER_MINUTE: f64 = 3.0;

/// The markers around the section in BENCHMARKS.md.
pub(crate) const BEGIN: &str = "<!-- sms-bench scaled: begin -->";
pub(crate) const END: &str = "<!-- sms-bench scaled: end -->";

/// Which mode a fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FleetMode {
    /// No migration: Postgres Changes to every instance, one claim per message.
    Default,
    /// The migration applied: Broadcast to one instance, batch claims, one sweeper.
    Scaled,
}

impl FleetMode {
    fn label(self) -> &'static str {
        match self {
            FleetMode::Default => "default",
            FleetMode::Scaled => "scaled",
        }
    }
}

/// What a window of traffic cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    messages: usize,
    /// Single-claim `PATCH`es plus `rpc/sms_sender_claim` calls.
    claims: usize,
    /// Every REST request.
    rest: u64,
    /// Billed frames sent to clients plus frames received from clients, heartbeats excepted.
    realtime: u64,
}

impl Cost {
    fn per_message(&self, v: f64) -> f64 {
        v / self.messages.max(1) as f64
    }

    fn claims_per_message(&self) -> f64 {
        self.per_message(self.claims as f64)
    }

    fn rest_per_message(&self) -> f64 {
        self.per_message(self.rest as f64)
    }

    fn realtime_per_message(&self) -> f64 {
        self.per_message(self.realtime as f64)
    }
}

/// One fleet's figures.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    mode: FleetMode,
    instances: usize,
    trickle: Cost,
    burst: Cost,
    /// Commit → every row of the burst `sent`.
    burst_wall: Duration,
    /// REST requests of the whole fleet per minute while idle.
    idle_rest_per_minute: Option<f64>,
}

/// A database (with the migration in scaled mode) and the doubles.
fn world(mode: FleetMode) -> (Stack, String) {
    let stack = Stack::start_with(
        SupabaseConfig {
            subscribe_delay: Duration::ZERO,
            ..SupabaseConfig::default()
        },
        TwilioConfig::default(),
    );
    if mode == FleetMode::Scaled {
        stack.sql(MIGRATION);
        stack.supabase.reload_schema();
    }
    let conversation = stack.create_conversation(PHONE);
    (stack, conversation)
}

/// Start `n` instances and wait until each is subscribed (and, in scaled mode, sees all `n`).
fn start_fleet(
    stack: &Stack,
    binary: &Path,
    mode: FleetMode,
    n: usize,
) -> Result<Vec<Service>, String> {
    let env = stack.service_env_with(&[("SENDER_THREADS", THREADS), ("LOG_FORMAT", "json")]);
    let fleet: Vec<Service> = (0..n)
        .map(|_| Service::start(binary, env.clone()))
        .collect();
    for svc in &fleet {
        if !svc.wait_subscribed(Duration::from_secs(30)) {
            return Err(format!(
                "{} mode, {n} instances: an instance did not subscribe; its log:\n{}",
                mode.label(),
                tail(&svc.log(), 30)
            ));
        }
    }
    if mode == FleetMode::Scaled {
        let line = format!("scaled mode: {n} member(s)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fleet.iter().all(|s| s.log().contains(&line)) {
            if Instant::now() > deadline {
                return Err(format!(
                    "scaled mode, {n} instances: the membership did not settle at {n}; a log:\n{}",
                    tail(&fleet[0].log(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(fleet)
}

/// SIGTERM every instance and wait for each to exit.
fn stop_fleet(fleet: Vec<Service>) -> Result<(), String> {
    for svc in &fleet {
        svc.terminate();
    }
    for mut svc in fleet {
        if svc.wait_exit(Duration::from_secs(20)).is_none() {
            return Err(format!(
                "an instance did not exit on SIGTERM; its log:\n{}",
                tail(&svc.log(), 30)
            ));
        }
    }
    Ok(())
}

/// The cost of the window since the counters were reset, for `messages` messages.
fn cost(stack: &Stack, messages: usize) -> Cost {
    let c: SupabaseCounters = stack.supabase.counters();
    let single = stack
        .supabase
        .rest_requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.query.contains("status=eq.queued_for_send")
                && r.query.contains("content=not.like.")
        })
        .count();
    Cost {
        messages,
        claims: single + c.rpc_calls("sms_sender_claim") as usize,
        rest: c.rest.values().sum(),
        realtime: c.realtime_billed_sent() + c.realtime_received_without_heartbeats(),
    }
}

/// Reset the counters and the REST record: a window starts.
fn open_window(stack: &Stack) {
    stack.supabase.reset_counters();
    stack.supabase.clear_rest_requests();
}

/// Wait until `total` rows are `sent`, polling every 10 ms; fails with the counts.
fn wait_sent(stack: &Stack, total: usize, timeout: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while stack.count_messages("status = 'sent'") < total as i64 {
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not every message sent within {} s: {:?}",
                timeout.as_secs(),
                stack.status_counts()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Every row `sent` and Twilio holding each body exactly once.
fn exactly_once(stack: &Stack, total: usize, what: &str) -> Result<(), String> {
    let counts = stack.status_counts();
    let stored = stack.twilio.messages();
    let bodies: HashSet<&str> = stored.iter().map(|m| m.requested_body.as_str()).collect();
    if counts.len() != 1 || stored.len() != total || bodies.len() != total {
        return Err(format!(
            "{what}: not every message exactly once: rows {counts:?}, Twilio stored {} ({} distinct bodies) for {total}",
            stored.len(),
            bodies.len()
        ));
    }
    Ok(())
}

/// The trickle and the burst on one fleet of `n` in `mode`.
fn traffic(binary: &Path, mode: FleetMode, n: usize) -> Result<Fleet, String> {
    let what = format!("{} mode, {n} instance(s)", mode.label());
    let (stack, conversation) = world(mode);
    let fleet = start_fleet(&stack, binary, mode, n)?;
    // The start-up catch-up sweeps are not per-message traffic.
    std::thread::sleep(Duration::from_secs(1));

    open_window(&stack);
    for i in 0..TRICKLE {
        stack.insert_outbound(&conversation, &format!("scaled bench {what} trickle {i}"));
        std::thread::sleep(TRICKLE_GAP);
    }
    wait_sent(&stack, TRICKLE, Duration::from_secs(60), &what)?;
    let trickle = cost(&stack, TRICKLE);

    open_window(&stack);
    let bodies: Vec<String> = (0..BURST)
        .map(|i| format!("scaled bench {what} burst {i}"))
        .collect();
    stack.insert_many(&conversation, &bodies);
    let committed = Instant::now();
    wait_sent(&stack, TRICKLE + BURST, Duration::from_secs(120), &what)?;
    let burst_wall = committed.elapsed();
    let burst = cost(&stack, BURST);
    exactly_once(&stack, TRICKLE + BURST, &what)?;
    stop_fleet(fleet)?;
    eprintln!(
        "    {what}: claims/msg trickle {:.2}, burst {:.2}; REST/msg burst {:.2}; Realtime/SMS trickle {:.2}, burst {:.2}; burst {:.2} s",
        trickle.claims_per_message(),
        burst.claims_per_message(),
        burst.rest_per_message(),
        trickle.realtime_per_message(),
        burst.realtime_per_message(),
        burst_wall.as_secs_f64()
    );
    Ok(Fleet {
        mode,
        instances: n,
        trickle,
        burst,
        burst_wall,
        idle_rest_per_minute: None,
    })
}

/// Every fleet idle at once, each on a database of its own, for [`IDLE_WINDOW`]: REST requests
/// per minute of each fleet, in the order of `fleets`.
fn idle(binary: &Path, fleets: &[(FleetMode, usize)]) -> Result<Vec<f64>, String> {
    let mut running = Vec::new();
    for &(mode, n) in fleets {
        let (stack, _) = world(mode);
        let fleet = start_fleet(&stack, binary, mode, n)?;
        running.push((stack, fleet));
    }
    // Past the start-up sweeps and checks of every instance.
    std::thread::sleep(Duration::from_secs(5));
    for (stack, _) in &running {
        open_window(stack);
    }
    std::thread::sleep(IDLE_WINDOW);
    let minutes = IDLE_WINDOW.as_secs_f64() / 60.0;
    let mut per_minute = Vec::new();
    for (stack, fleet) in running {
        let rest: u64 = stack.supabase.counters().rest.values().sum();
        per_minute.push(rest as f64 / minutes);
        stop_fleet(fleet)?;
    }
    Ok(per_minute)
}

/// Every measurement, both modes, every fleet size.
pub(crate) fn run(binary: &Path) -> Result<Vec<Fleet>, String> {
    let mut fleets = Vec::new();
    for n in SIZES {
        for mode in [FleetMode::Default, FleetMode::Scaled] {
            step(&format!(
                "{} mode, {n} instance(s) (SENDER_THREADS={THREADS}): a trickle of {TRICKLE} ({} ms apart), then a burst of {BURST}",
                mode.label(),
                TRICKLE_GAP.as_millis()
            ));
            fleets.push(traffic(binary, mode, n)?);
        }
    }
    step(&format!(
        "idle: every fleet at once, each on a database of its own, for {} s",
        IDLE_WINDOW.as_secs()
    ));
    let which: Vec<(FleetMode, usize)> = fleets.iter().map(|f| (f.mode, f.instances)).collect();
    for (f, rate) in fleets.iter_mut().zip(idle(binary, &which)?) {
        eprintln!(
            "    {} mode, {} instance(s): {rate:.1} REST requests a minute",
            f.mode.label(),
            f.instances
        );
        f.idle_rest_per_minute = Some(rate);
    }
    Ok(fleets)
}

fn find(fleets: &[Fleet], mode: FleetMode, n: usize) -> Option<&Fleet> {
    fleets.iter().find(|f| f.mode == mode && f.instances == n)
}

fn met(v: f64, target: f64) -> &'static str {
    if v <= target {
        "yes"
    } else {
        "**no**"
    }
}

/// The section, markers included.
pub(crate) fn section(fleets: &[Fleet], when: &str, binary: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Scaled mode against the default mode\n");
    let _ = writeln!(
        s,
        "`make bench-scaled` ({when}, binary `{binary}`): fleets of 1, 3 and 10 instances, each instance with SENDER_THREADS={THREADS} and otherwise its defaults (LOG_FORMAT=json), against the local world; the default mode on a database without `sql/migrations/002_scaled_mode.sql`, scaled mode on one with it. Twilio answers at once.\n"
    );
    let _ = writeln!(
        s,
        "| instances | measurement | default mode | scaled mode | target (scaled mode, 10 instances) | met? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    type Figure = fn(&Fleet) -> Option<f64>;
    let measures: [(&str, Figure, Option<f64>); 7] = [
        (
            "claim requests per message, trickle",
            |f| Some(f.trickle.claims_per_message()),
            Some(TARGET_CLAIMS_PER_MESSAGE),
        ),
        (
            "claim requests per message, burst",
            |f| Some(f.burst.claims_per_message()),
            Some(TARGET_CLAIMS_PER_MESSAGE),
        ),
        (
            "REST requests per message, burst",
            |f| Some(f.burst.rest_per_message()),
            None,
        ),
        (
            "Realtime messages per SMS, trickle",
            |f| Some(f.trickle.realtime_per_message()),
            Some(TARGET_REALTIME_PER_SMS),
        ),
        (
            "Realtime messages per SMS, burst",
            |f| Some(f.burst.realtime_per_message()),
            Some(TARGET_REALTIME_PER_SMS),
        ),
        (
            "fleet's idle REST requests a minute",
            |f| f.idle_rest_per_minute,
            Some(TARGET_IDLE_REST_PER_MINUTE),
        ),
        (
            "burst wall time, commit → all `sent` (s)",
            |f| Some(f.burst_wall.as_secs_f64()),
            None,
        ),
    ];
    for n in SIZES {
        for (what, figure, target) in &measures {
            let show = |mode| {
                find(fleets, mode, n)
                    .and_then(figure)
                    .map_or_else(|| "not measured".to_string(), |v| format!("{v:.2}"))
            };
            let (target_text, met_text) = match (target, n) {
                (Some(t), 10) => {
                    let m = find(fleets, FleetMode::Scaled, n)
                        .and_then(figure)
                        .map_or("—", |v| met(v, *t));
                    (format!("≤ {t}"), m)
                }
                _ => ("—".to_string(), "—"),
            };
            let _ = writeln!(
                s,
                "| {n} | {what} | {} | {} | {target_text} | {met_text} |",
                show(FleetMode::Default),
                show(FleetMode::Scaled)
            );
        }
    }
    let _ = writeln!(s, "\nHow these are taken:\n");
    let _ = writeln!(
        s,
        "- Each fleet (mode × size) runs on a fresh world (PostgreSQL, Supabase and Twilio doubles); its instances start, subscribe and (scaled mode) all log the same membership, then idle a second so their start-up sweeps are not counted."
    );
    let _ = writeln!(
        s,
        "- Trickle: {TRICKLE} messages inserted one at a time, {} ms apart; burst: {BURST} messages in one transaction. The Supabase double's counters are reset before each and read once every row is `sent`; every body must be stored by Twilio exactly once.",
        TRICKLE_GAP.as_millis()
    );
    let _ = writeln!(
        s,
        "- Claim requests: single-claim `PATCH`es (`id=eq.…&status=eq.queued_for_send&…&content=not.like.…`) plus `POST rpc/sms_sender_claim` calls, per message. REST requests: every request the Supabase double received, per message. Realtime messages per SMS: frames Supabase bills delivered to clients (`broadcast`, `presence_state`, `presence_diff`, `postgres_changes`, once per receiving client) plus frames received from clients except heartbeats, per message."
    );
    let _ = writeln!(
        s,
        "- Idle: after the traffic runs, every fleet again at once, each on a world of its own, idle 5 s past its start, then its REST requests over a whole {}-s window (sweeps and orphan checks run every 60 s by default, so a shorter window would see one round or none).",
        IDLE_WINDOW.as_secs()
    );
    let _ = writeln!(
        s,
        "- Burst wall time: from the commit of the burst's transaction to every row seen `sent` (polled every 10 ms). Ten instances, PostgreSQL and the doubles share the machine's cores."
    );
    let _ = writeln!(s, "{END}");
    s
}

/// `old` with its scaled section replaced by `section` (appended when it has none).
pub(crate) fn splice(old: &str, section: &str) -> String {
    match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let after = &old[e + END.len()..];
            format!("{}{}{}", &old[..b], section.trim_end_matches('\n'), after)
        }
        _ => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_string() + "\n"
        ),
    }
}

/// The scaled section of `old`, markers included, if it has one.
pub(crate) fn existing_section(old: &str) -> Option<String> {
    let b = old.find(BEGIN)?;
    let e = old.find(END)?;
    (e > b).then(|| format!("{}\n", &old[b..e + END.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let first = splice("# title\n\ntext\n", &format!("{BEGIN}\nA\n{END}\n"));
        assert_eq!(first, format!("# title\n\ntext\n\n{BEGIN}\nA\n{END}\n"));
        let again = splice(
            &format!("{first}\n## later\n"),
            &format!("{BEGIN}\nB\n{END}\n"),
        );
        assert_eq!(
            again,
            format!("# title\n\ntext\n\n{BEGIN}\nB\n{END}\n\n## later\n")
        );
        assert_eq!(
            existing_section(&again).as_deref(),
            Some(format!("{BEGIN}\nB\n{END}\n").as_str())
        );
        assert_eq!(existing_section("nothing"), None);
    }
}
