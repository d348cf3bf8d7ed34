//! The world and the phases: each phase starts fresh service processes against the local world
//! and records what it measured in [`Results`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use sms_sender_doubles::harness::{free_port, http_get, Service, Stack};
use sms_sender_doubles::supabase::SupabaseConfig;
use sms_sender_doubles::twilio::{TwilioConfig, TwilioDouble};

use crate::measure::{
    cpu_seconds, cpu_split_seconds, machine_cpu, proc_status, read_text, sizes, Relay, RssSampler,
};
use crate::report::tail;
use crate::{
    step, Burst, Calls, Compared, CpuSplit, Latency, Plan, Results, Throughput, Twilio, PHONE,
    TWILIO_REAL_CREATE, TWILIO_REAL_LIMIT, TWILIO_SLOW,
};

/// Everything the phases share.
pub(crate) struct Bench<'a> {
    /// The build under test.
    pub(crate) binary: &'a Path,
    pub(crate) stack: Stack,
    relay: Relay,
    pub(crate) conversation: String,
    /// Messages inserted so far: every one must end `sent`, and stored once by Twilio.
    pub(crate) inserted: usize,
    /// Of those, the ones sent through the stack's Twilio double (the default-configuration
    /// bursts use doubles of their own): its message record is indexed by this count.
    on_stack_twilio: usize,
    /// A profiler command to attach to the memory phase's process (`sms-bench cpu` only).
    profiled: Option<String>,
}

pub(crate) fn run(
    plan: &Plan,
    binary: &Path,
    baseline: Option<&Path>,
    r: &mut Results,
) -> Result<(), String> {
    step("sizes");
    sizes(binary, r);
    if let Some(b) = baseline {
        r.baseline_bytes = std::fs::metadata(b).ok().map(|m| m.len());
        r.baseline = Some(Compared::default());
    }

    let mut b = Bench::start(binary)?;
    r.postgres_version = Some(b.stack.db(|c| {
        let row = c.query_one("SHOW server_version", &[])?;
        Ok(row.get::<_, String>(0))
    }));

    step(&format!("start → subscribed, {} starts", plan.starts));
    for _ in 0..plan.starts {
        let (healthy, subscribed) = b.time_start()?;
        r.start_healthy.push(healthy);
        r.start_subscribed.push(subscribed);
    }

    step(&format!(
        "TLS configured as in production (https:// Twilio URL, nothing sent): {} starts, idle {} s",
        plan.tls_starts,
        plan.idle.as_secs()
    ));
    b.tls_phase(plan, r)?;

    step(&format!(
        "latency: {} messages one at a time, Twilio answering at once",
        plan.latency_fast
    ));
    let (lat, calls) = b.latency_phase(plan.latency_fast, Duration::ZERO, "fast")?;
    r.lat_fast = Some(lat);
    r.calls_single = Some(calls);

    step(&format!(
        "latency: {} messages one at a time, Twilio answering in {} ms",
        plan.latency_slow,
        TWILIO_SLOW.as_millis()
    ));
    let (lat, _) = b.latency_phase(plan.latency_slow, TWILIO_SLOW, "slow")?;
    r.lat_slow = Some(lat);

    // The phases that compare builds run each build back to back, so both see the same load.
    let builds = builds(binary, baseline);
    for &(label, bin) in &builds {
        step(&format!(
            "memory and CPU ({label}): idle {} s, then {} bursts of {} (Twilio at once, default configuration)",
            plan.idle.as_secs(),
            plan.growth_bursts,
            plan.burst
        ));
        b.memory_phase(plan, bin, compared(r, label))
            .map_err(|e| format!("{label}: {e}"))?;
    }
    for twilio in [Twilio::Limited, Twilio::Fast] {
        for &(label, bin) in &builds {
            step(&format!(
                "default configuration ({label}): burst of {}, {}",
                plan.default_burst,
                twilio_label(twilio)
            ));
            let burst = b.burst_phase(plan.default_burst, twilio, bin, label)?;
            eprintln!(
                "    {:.1} msg/s to the last create ({:.1} to every row sent); {} sent, {} stored by Twilio, {} answered 429, peak {} in progress, VmHWM {} KiB",
                burst.per_second,
                burst.per_second_to_sent(),
                burst.rows_sent,
                burst.twilio_stored,
                burst.throttled,
                burst.peak_concurrency,
                burst.hwm_kib
            );
            let ok = burst.exactly_once();
            let summary = format!(
                "{label}: {} messages, {} rows sent with {} distinct SIDs, Twilio stored {} ({} distinct bodies)",
                burst.messages,
                burst.rows_sent,
                burst.distinct_sids,
                burst.twilio_stored,
                burst.distinct_bodies
            );
            let c = compared(r, label);
            match twilio {
                Twilio::Limited => c.limited = Some(burst),
                Twilio::Fast => c.fast = Some(burst),
            }
            if !ok {
                return Err(format!("not every message exactly once: {summary}"));
            }
        }
    }

    crate::modes::run(&mut b, plan, r)?;

    for &(threads, runs) in plan.throughput {
        for run in 1..=runs {
            step(&format!(
                "throughput: burst of {}, Twilio answering in {} ms, SENDER_THREADS={threads} (run {run}/{runs})",
                plan.burst,
                TWILIO_SLOW.as_millis()
            ));
            let t = b.throughput_run(plan.burst, threads)?;
            eprintln!(
                "    {:.1} messages/s ({} in {:.2} s)",
                t.per_second,
                plan.burst,
                t.drain.as_secs_f64()
            );
            r.throughput.push(t);
        }
    }

    // Last: its rows stay queued (no service runs), which would disturb any later phase.
    step(&format!(
        "ceiling: the Supabase double alone delivering a burst of {} Realtime events",
        plan.burst
    ));
    let rate = b.realtime_ceiling(plan.burst)?;
    eprintln!("    {rate:.0} events/s");
    r.realtime_ceiling = Some(rate);
    Ok(())
}

/// `sms-bench modes`: the world, then only plain vs TLS, system calls and the Node peer.
pub(crate) fn run_modes(plan: &Plan, binary: &Path, r: &mut Results) -> Result<(), String> {
    step("sizes");
    sizes(binary, r);
    let mut b = Bench::start(binary)?;
    r.postgres_version = Some(b.stack.db(|c| {
        let row = c.query_one("SHOW server_version", &[])?;
        Ok(row.get::<_, String>(0))
    }));
    crate::modes::run(&mut b, plan, r)
}

/// `sms-bench cpu`: the world, then only the memory/CPU phase of each build, each build's CPU
/// per message printed (user and system apart). `SMS_BENCH_PROFILE` attaches a profiler to
/// this build's process for its bursts (see the crate doc).
pub(crate) fn run_cpu(
    plan: &Plan,
    binary: &Path,
    baseline: Option<&Path>,
    r: &mut Results,
) -> Result<(), String> {
    let mut plan = plan.clone();
    if let Some(n) = std::env::var("SMS_BENCH_BURST")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        plan.burst = n;
    }
    let plan = &plan;
    let mut b = Bench::start(binary)?;
    let profile = std::env::var("SMS_BENCH_PROFILE")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let builds = builds(binary, baseline);
    for &(label, bin) in &builds {
        step(&format!(
            "memory and CPU ({label}): {} bursts of {}",
            plan.growth_bursts, plan.burst
        ));
        let attach = if label == "this build" {
            profile.as_deref()
        } else {
            None
        };
        b.profiled = attach.map(str::to_string);
        b.memory_phase(plan, bin, compared(r, label))
            .map_err(|e| format!("{label}: {e}"))?;
        b.profiled = None;
        let c = compared(r, label);
        eprintln!(
            "    {label}: CPU per message {:.3} ms (median of {:?})",
            c.cpu_ms_per_message().unwrap_or(f64::NAN),
            c.cpu_per_1000
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// A profiler attached to a process (see `SMS_BENCH_PROFILE`), stopped with SIGINT.
struct Profiler(std::process::Child);

impl Profiler {
    fn attach(command: &str, pid: u32) -> Result<Profiler, String> {
        let command = command.replace("{pid}", &pid.to_string());
        eprintln!("    profiling: {command}");
        let child = std::process::Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .spawn()
            .map_err(|e| format!("SMS_BENCH_PROFILE: {e}"))?;
        // Let the profiler attach before the first burst.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Profiler(child))
    }

    fn stop(mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// The builds the comparing phases run, labelled: this one, then the baseline if any.
fn builds<'p>(binary: &'p Path, baseline: Option<&'p Path>) -> Vec<(&'static str, &'p Path)> {
    std::iter::once(("this build", binary))
        .chain(baseline.map(|p| ("baseline", p)))
        .collect()
}

/// Where a build's comparable figures go.
fn compared<'r>(r: &'r mut Results, label: &str) -> &'r mut Compared {
    if label == "baseline" {
        r.baseline.get_or_insert_with(Compared::default)
    } else {
        &mut r.this
    }
}

pub(crate) fn twilio_label(twilio: Twilio) -> String {
    match twilio {
        Twilio::Limited => format!(
            "Twilio answering creates in {} ms, at most {} requests at once (429 / 20429 beyond)",
            TWILIO_REAL_CREATE.as_millis(),
            TWILIO_REAL_LIMIT
        ),
        Twilio::Fast => format!(
            "Twilio answering in {} ms, no limit",
            TWILIO_SLOW.as_millis()
        ),
    }
}

impl<'a> Bench<'a> {
    /// The local world: PostgreSQL, the Supabase double (no subscribe delay), the Twilio double,
    /// the timestamping relay and one conversation.
    fn start(binary: &'a Path) -> Result<Bench<'a>, String> {
        step("starting PostgreSQL, the Supabase double (no subscribe delay) and the Twilio double");
        let stack = Stack::start_with(
            SupabaseConfig {
                subscribe_delay: Duration::ZERO,
                ..SupabaseConfig::default()
            },
            TwilioConfig::default(),
        );
        let relay = Relay::start(stack.supabase.port()).map_err(|e| format!("relay: {e}"))?;
        let conversation = stack.create_conversation(PHONE);
        Ok(Bench {
            binary,
            stack,
            relay,
            conversation,
            inserted: 0,
            on_stack_twilio: 0,
            profiled: None,
        })
    }

    /// The service's environment: the stack's, JSON logs at `info` as deployed on Cloud Run,
    /// optionally through the relay and with a given number of sender threads.
    pub(crate) fn env(&self, through_relay: bool, threads: Option<usize>) -> Vec<(String, String)> {
        let mut env = self.stack.service_env();
        if through_relay {
            for (k, v) in env.iter_mut() {
                if k == "SUPABASE_URL" {
                    *v = self.relay.url();
                }
            }
        }
        if let Some(t) = threads {
            env.push(("SENDER_THREADS".into(), t.to_string()));
        }
        env.push(("LOG_FORMAT".into(), "json".into()));
        env
    }

    fn start_subscribed(&self, env: Vec<(String, String)>) -> Result<Service, String> {
        self.start_binary(self.binary, env)
    }

    /// Start `binary` (this build or the baseline) and wait until it is subscribed.
    fn start_binary(&self, binary: &Path, env: Vec<(String, String)>) -> Result<Service, String> {
        let svc = Service::start(binary, env);
        if !svc.wait_subscribed(Duration::from_secs(20)) {
            return Err(format!(
                "the service did not subscribe within 20 s; its log:\n{}",
                svc.log()
            ));
        }
        Ok(svc)
    }

    pub(crate) fn stop(&self, mut svc: Service) -> Result<(), String> {
        svc.terminate();
        match svc.wait_exit(Duration::from_secs(15)) {
            Some(s) if s.success() => Ok(()),
            other => Err(format!(
                "the service did not exit cleanly on SIGTERM ({other:?}); its log:\n{}",
                tail(&svc.log(), 40)
            )),
        }
    }

    /// Spawn → first `200` from `/health`, and spawn → `/health` reports the subscription.
    /// Polls every millisecond: `Service::wait_subscribed` polls every 20 ms, too coarse here.
    fn time_start(&self) -> Result<(Duration, Duration), String> {
        let (healthy, subscribed, svc) = self.time_start_with(self.env(false, None))?;
        self.stop(svc)?;
        Ok((healthy, subscribed))
    }

    /// [`Bench::time_start`] with this environment, leaving the service running.
    fn time_start_with(
        &self,
        env: Vec<(String, String)>,
    ) -> Result<(Duration, Duration, Service), String> {
        let t0 = Instant::now();
        let svc = Service::start(self.binary, env);
        let mut healthy = None;
        let subscribed = loop {
            if let Some((status, body)) = http_get(svc.port, "/health") {
                let at = t0.elapsed();
                if status == 200 {
                    healthy.get_or_insert(at);
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if v["websocket"] == "connected" {
                        break at;
                    }
                }
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "the service did not subscribe within 20 s; its log:\n{}",
                    svc.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Ok((healthy.unwrap_or(subscribed), subscribed, svc))
    }

    /// Starts and idle RSS with an `https://` Twilio URL: the service then builds its TLS
    /// connector (loading the CA bundle) at start, as it does in production. Nothing is sent, so
    /// no TLS server is needed; the URL points at a port nobody listens on.
    fn tls_phase(&self, plan: &Plan, r: &mut Results) -> Result<(), String> {
        let mut env = self.env(false, None);
        for (k, v) in env.iter_mut() {
            if k == "TWILIO_API_URL" {
                *v = format!("https://127.0.0.1:{}", free_port());
            }
        }
        for i in 0..plan.tls_starts {
            let (_, subscribed, svc) = self.time_start_with(env.clone())?;
            r.tls_start_subscribed.push(subscribed);
            if i + 1 == plan.tls_starts {
                std::thread::sleep(plan.idle);
                let idle = proc_status(svc.pid())?;
                r.tls_idle_rss_kib = Some(idle.rss_kib);
                eprintln!(
                    "    idle with TLS: VmRSS {} KiB, VmHWM {} KiB",
                    idle.rss_kib, idle.hwm_kib
                );
            }
            self.stop(svc)?;
        }
        Ok(())
    }

    /// How fast the Supabase double alone delivers a burst's Realtime events to one subscriber
    /// that only reads: the ceiling any throughput figure here is under.
    fn realtime_ceiling(&mut self, burst: usize) -> Result<f64, String> {
        let url = format!(
            "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
            self.stack.supabase.port(),
            self.stack.supabase.service_key()
        );
        let (mut ws, _) =
            tungstenite::connect(url.as_str()).map_err(|e| format!("ceiling: connect: {e}"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        }
        // The binding the service uses, so the double filters and encodes exactly the same way.
        let join = serde_json::json!({
            "topic": "realtime:bench-ceiling",
            "event": "phx_join",
            "ref": "1",
            "join_ref": "1",
            "payload": {
                "access_token": self.stack.supabase.service_key(),
                "config": {"postgres_changes": [{
                    "event": "UPDATE",
                    "schema": "public",
                    "table": "messages",
                    "filter": "status=eq.queued_for_send",
                }]},
            },
        });
        ws.send(tungstenite::Message::Text(join.to_string()))
            .map_err(|e| format!("ceiling: join: {e}"))?;
        while !read_text(&mut ws)?.contains("Subscribed to PostgreSQL") {}
        let bodies: Vec<String> = (0..burst).map(|i| format!("bench ceiling {i}")).collect();
        self.stack.insert_many(&self.conversation, &bodies);
        let committed = Instant::now();
        let mut events = 0;
        while events < burst {
            if read_text(&mut ws)?.contains("\"postgres_changes\"") {
                events += 1;
            }
        }
        let rate = burst as f64 / committed.elapsed().as_secs_f64();
        let _ = ws.close(None);
        Ok(rate)
    }

    /// Wait until every inserted message is `sent` (and none `failed`), and Twilio stored each
    /// exactly once.
    pub(crate) fn wait_all_sent(&self, timeout: Duration) -> Result<(), String> {
        let n = self.inserted as i64;
        if !self.stack.wait_status_count("sent", n, timeout) {
            return Err(format!(
                "expected {n} messages 'sent' within {} s, have {:?}",
                timeout.as_secs(),
                self.stack.status_counts()
            ));
        }
        let counts = self.stack.status_counts();
        if counts.len() != 1 {
            return Err(format!("messages in unexpected states: {counts:?}"));
        }
        // Reading the count alone: `messages()` would copy every stored message.
        if self
            .stack
            .twilio
            .wait_for_messages(self.on_stack_twilio + 1, Duration::ZERO)
        {
            return Err(format!(
                "Twilio stored more messages than were sent through it ({}): a message was sent twice",
                self.on_stack_twilio
            ));
        }
        Ok(())
    }

    /// Send `n` messages one at a time (each waits until Twilio stored the previous one),
    /// through the relay, and break each one's latency down.
    fn latency_phase(
        &mut self,
        n: usize,
        twilio_latency: Duration,
        tag: &str,
    ) -> Result<(Latency, Calls), String> {
        let stack = &self.stack;
        stack.twilio.set_latency(twilio_latency);
        let svc = self.start_subscribed(self.env(true, None))?;
        // The start-up catch-up sweep is not per-message traffic: let it finish, then forget it.
        std::thread::sleep(Duration::from_millis(300));
        stack.supabase.clear_rest_requests();
        let twilio_requests_before = stack.twilio.requests().len();
        let creates_before = stack.twilio.create_requests();
        let base = self.on_stack_twilio;
        self.relay.record(true);

        let mut sent = Vec::with_capacity(n);
        for i in 0..n {
            let body = format!("bench latency {tag} {i}");
            let id = stack.insert_outbound(&self.conversation, &body);
            let committed = Instant::now();
            self.inserted += 1;
            self.on_stack_twilio += 1;
            if !stack
                .twilio
                .wait_for_messages(base + i + 1, Duration::from_secs(10))
            {
                return Err(format!(
                    "message {i} of the {tag} latency phase did not reach Twilio within 10 s; log:\n{}",
                    tail(&svc.log(), 40)
                ));
            }
            sent.push((id, body, committed));
        }
        self.relay.record(false);
        self.wait_all_sent(Duration::from_secs(30))?;

        let received: HashMap<String, Instant> = stack.twilio.messages()[base..]
            .iter()
            .map(|m| (m.body.clone(), m.received_at))
            .collect();
        let rest = stack.supabase.rest_requests();
        let mut claims: HashMap<String, Instant> = HashMap::new();
        let mut calls = Calls {
            messages: n,
            twilio_creates: stack.twilio.create_requests() - creates_before,
            ..Calls::default()
        };
        calls.twilio_other =
            stack.twilio.requests().len() - twilio_requests_before - calls.twilio_creates;
        for req in &rest {
            if req.method == "GET" && req.query.contains("status=eq.queued_for_send") {
                calls.catchup_gets += 1;
                continue;
            }
            *calls.rest.entry(req.method.clone()).or_default() += 1;
            if req.method == "PATCH" {
                if let Some(id) = req.query.split('&').find_map(|p| p.strip_prefix("id=eq.")) {
                    claims.entry(id.to_string()).or_insert(req.at);
                }
            }
        }
        let events = self.relay.first_seen();
        let mut lat = Latency::default();
        for (id, body, committed) in &sent {
            let got = *received
                .get(body)
                .ok_or_else(|| format!("Twilio has no message with body {body:?}"))?;
            lat.end_to_end
                .push(got.saturating_duration_since(*committed));
            match events.get(id) {
                Some(&event) => {
                    lat.delivery
                        .push(event.saturating_duration_since(*committed));
                    lat.pipeline.push(got.saturating_duration_since(event));
                    if let Some(&claim) = claims.get(id) {
                        lat.reaction.push(claim.saturating_duration_since(event));
                        lat.claim_to_twilio
                            .push(got.saturating_duration_since(claim));
                    }
                }
                None => lat.unmatched += 1,
            }
        }
        stack.supabase.clear_rest_requests();
        self.relay.clear();
        self.stop(svc)?;
        Ok((lat, calls))
    }

    /// One fresh process of `binary` with its default configuration: idle RSS, then bursts at
    /// full speed (Twilio answering at once): peak RSS in the first, calls per message in the
    /// first, CPU per message in each, RSS after the first vs after the last.
    fn memory_phase(&mut self, plan: &Plan, binary: &Path, r: &mut Compared) -> Result<(), String> {
        let stack = &self.stack;
        stack.twilio.set_latency(Duration::ZERO);
        let svc = self.start_binary(binary, self.env(false, None))?;
        let pid = svc.pid();
        std::thread::sleep(plan.idle);
        let idle = proc_status(pid)?;
        r.idle_rss_kib = Some(idle.rss_kib);
        r.idle_hwm_kib = Some(idle.hwm_kib);
        eprintln!(
            "    idle: VmRSS {} KiB, VmHWM {} KiB",
            idle.rss_kib, idle.hwm_kib
        );

        let profiler = match &self.profiled {
            Some(command) => Some(Profiler::attach(command, pid)?),
            None => None,
        };
        let split_before = cpu_split_seconds(pid)?;
        // Unique bodies across builds and bursts, so every Twilio message names its row.
        let base = self.inserted;
        for burst in 0..plan.growth_bursts {
            stack.supabase.clear_rest_requests();
            let creates_before = stack.twilio.create_requests();
            let bodies: Vec<String> = (0..plan.burst)
                .map(|i| format!("bench burst {base} {burst} {i}"))
                .collect();
            let cpu_before = cpu_seconds(pid)?;
            let sampler = (burst == 0).then(|| RssSampler::start(pid));
            stack.insert_many(&self.conversation, &bodies);
            self.inserted += plan.burst;
            self.on_stack_twilio += plan.burst;
            self.wait_all_sent(Duration::from_secs(300))?;
            let cpu = cpu_seconds(pid)? - cpu_before;
            r.cpu_per_1000.push(cpu * 1000.0 / plan.burst as f64);
            if let Some(sampler) = sampler {
                r.burst_sampled_peak_kib = Some(sampler.stop());
                r.burst_hwm_kib = Some(proc_status(pid)?.hwm_kib);
                let mut calls = Calls {
                    messages: plan.burst,
                    twilio_creates: stack.twilio.create_requests() - creates_before,
                    ..Calls::default()
                };
                for req in stack.supabase.rest_requests() {
                    if req.method == "GET" && req.query.contains("status=eq.queued_for_send") {
                        calls.catchup_gets += 1;
                    } else {
                        *calls.rest.entry(req.method).or_default() += 1;
                    }
                }
                r.calls_burst = Some(calls);
            }
            // Let freed memory settle (allocator trimming, idle connections) before reading.
            std::thread::sleep(Duration::from_millis(500));
            let rss = proc_status(pid)?.rss_kib;
            r.rss_after_each_kib.push(rss);
            eprintln!(
                "    burst {}: {:.3} CPU-s, VmRSS after {} KiB",
                burst + 1,
                cpu,
                rss
            );
        }
        let split_after = cpu_split_seconds(pid)?;
        if let Some(p) = profiler {
            p.stop();
        }
        let n = (plan.burst * plan.growth_bursts) as f64;
        eprintln!(
            "    all bursts: user {:.3} ms, system {:.3} ms per message (with the 500 ms pauses)",
            (split_after.0 - split_before.0) * 1000.0 / n,
            (split_after.1 - split_before.1) * 1000.0 / n
        );
        stack.supabase.clear_rest_requests();
        self.stop(svc)
    }

    /// A fresh process of `binary` with its default configuration (no `SENDER_THREADS`) drains
    /// one burst of `n` against a Twilio double of its own, set up as `twilio` says. Messages per
    /// second are taken from the commit to the last stored create's arrival (as in
    /// [`Bench::throughput_run`]), and also to every row seen `sent`.
    fn burst_phase(
        &mut self,
        n: usize,
        twilio: Twilio,
        binary: &Path,
        label: &str,
    ) -> Result<Burst, String> {
        let double = TwilioDouble::start(self.stack.twilio.config().clone());
        match twilio {
            Twilio::Limited => {
                double.set_create_latency(TWILIO_REAL_CREATE);
                double.set_concurrency_limit(Some(TWILIO_REAL_LIMIT));
            }
            Twilio::Fast => double.set_latency(TWILIO_SLOW),
        }
        let mut env = self.env(false, None);
        for (k, v) in env.iter_mut() {
            if k == "TWILIO_API_URL" {
                *v = double.url();
            }
        }
        let svc = self.start_binary(binary, env)?;
        let pid = svc.pid();
        // Let the start-up catch-up sweep finish first, as in the other throughput runs.
        std::thread::sleep(Duration::from_millis(200));
        let kind = match twilio {
            Twilio::Limited => "limited",
            Twilio::Fast => "fast",
        };
        let bodies: Vec<String> = (0..n)
            .map(|i| format!("bench default {kind} {} {i}", self.inserted))
            .collect();
        let ids = self.stack.insert_many(&self.conversation, &bodies);
        let committed = Instant::now();
        // Read just after the commit, as in [`Bench::throughput_run`]: the service starts on the
        // burst only when the commit's events arrive.
        let before = (
            cpu_seconds(pid)?,
            cpu_seconds(std::process::id())?,
            machine_cpu(),
        );
        self.inserted += n;
        // Generous: 10 msg/s (half of what 4 senders at 200 ms manage), plus start-up slack.
        let timeout = Duration::from_secs_f64(n as f64 / 10.0 + 60.0);
        if !double.wait_for_messages(n, timeout) {
            return Err(format!(
                "{label}: the burst was not stored by Twilio within {} s ({} of {n}; {:?}); log tail:\n{}",
                timeout.as_secs(),
                double.messages().len(),
                self.stack.status_counts(),
                tail(&svc.log(), 40)
            ));
        }
        let last_arrival = double
            .messages()
            .iter()
            .map(|m| m.received_at)
            .max()
            .unwrap_or(committed);
        let drain = last_arrival.saturating_duration_since(committed);
        // Polled only now, so the polling does not load PostgreSQL during the burst.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (to_sent, rows_sent, distinct_sids) = loop {
            let (sent, sids) = self.burst_rows(&ids);
            if sent >= n {
                break (committed.elapsed(), sent, sids);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{label}: Twilio stored all {n}, but only {sent} rows were recorded sent within 60 s; log tail:\n{}",
                    tail(&svc.log(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let service_cpu = cpu_seconds(pid)? - before.0;
        let cores = cpu_split(pid, before, committed)?;
        let hwm_kib = proc_status(pid)?.hwm_kib;
        let metrics = scrape_metrics(svc.port);
        let stored = double.messages();
        let distinct_bodies = stored
            .iter()
            .map(|m| m.requested_body.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len();
        let burst = Burst {
            messages: n,
            per_second: n as f64 / drain.as_secs_f64().max(1e-9),
            drain,
            to_sent,
            rows_sent,
            distinct_sids,
            twilio_stored: stored.len(),
            distinct_bodies,
            create_requests: double.create_requests(),
            throttled: double.too_many_requests(),
            peak_concurrency: double.peak_concurrency(),
            hwm_kib,
            cpu_ms_per_message: service_cpu * 1000.0 / n as f64,
            cores,
            metrics,
        };
        self.wait_all_sent(Duration::from_secs(60))?;
        self.stack.supabase.clear_rest_requests();
        self.stop(svc)?;
        Ok(burst)
    }

    /// Of these rows: how many are `sent`, and how many distinct Twilio SIDs the sent ones hold.
    pub(crate) fn burst_rows(&self, ids: &[String]) -> (usize, usize) {
        self.stack.db(|c| {
            let row = c.query_one(
                "SELECT count(*) FILTER (WHERE status = 'sent'), \
                        count(DISTINCT twilio_message_sid) FILTER (WHERE status = 'sent') \
                 FROM messages WHERE id = ANY($1::text[]::uuid[])",
                &[&ids],
            )?;
            Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
        })
    }

    /// A fresh process with `threads` senders drains one burst, Twilio answering in 50 ms:
    /// messages per second from the commit to the last Twilio request's arrival.
    fn throughput_run(&mut self, burst: usize, threads: usize) -> Result<Throughput, String> {
        let stack = &self.stack;
        stack.twilio.set_latency(TWILIO_SLOW);
        let svc = self.start_subscribed(self.env(false, Some(threads)))?;
        std::thread::sleep(Duration::from_millis(200));
        let base = self.on_stack_twilio;
        let bodies: Vec<String> = (0..burst)
            .map(|i| format!("bench throughput {threads} {} {i}", self.inserted))
            .collect();
        stack.insert_many(&self.conversation, &bodies);
        let committed = Instant::now();
        let cpu_before = (
            cpu_seconds(svc.pid())?,
            cpu_seconds(std::process::id())?,
            machine_cpu(),
        );
        self.inserted += burst;
        self.on_stack_twilio += burst;
        // Generous: a quarter of the target rate, plus start-up slack.
        let ideal = threads as f64 / TWILIO_SLOW.as_secs_f64();
        let timeout = Duration::from_secs_f64(burst as f64 / (ideal / 4.0) + 30.0);
        if !stack.twilio.wait_for_messages(base + burst, timeout) {
            return Err(format!(
                "the burst was not drained within {} s; log tail:\n{}",
                timeout.as_secs(),
                tail(&svc.log(), 40)
            ));
        }
        let last = stack.twilio.messages()[base..]
            .iter()
            .map(|m| m.received_at)
            .max()
            .unwrap_or(committed);
        let drain = last.saturating_duration_since(committed);
        let cores = cpu_split(svc.pid(), cpu_before, committed)?;
        self.wait_all_sent(Duration::from_secs(60))?;
        let hwm_kib = proc_status(svc.pid())?.hwm_kib;
        stack.supabase.clear_rest_requests();
        self.stop(svc)?;
        Ok(Throughput {
            threads,
            per_second: burst as f64 / drain.as_secs_f64().max(1e-9),
            drain,
            hwm_kib,
            cores,
        })
    }
}

/// Cores used since `since`: the service `pid`, the bench process (the doubles), the rest of
/// the machine, and the machine's busy fraction; `before` holds the readings taken then.
fn cpu_split(pid: u32, before: (f64, f64, (f64, f64)), since: Instant) -> Result<CpuSplit, String> {
    let wall = since.elapsed().as_secs_f64().max(1e-9);
    let service = (cpu_seconds(pid)? - before.0) / wall;
    let doubles = (cpu_seconds(std::process::id())? - before.1) / wall;
    let ((busy0, total0), (busy1, total1)) = (before.2, machine_cpu());
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = (busy1 - busy0) / (total1 - total0).max(1e-9);
    Ok(CpuSplit {
        service,
        doubles,
        rest: (busy * ncpu - service - doubles).max(0.0),
        busy,
    })
}

/// The figures of the service's `/metrics` the report shows (absent in builds without them).
fn scrape_metrics(port: u16) -> BTreeMap<String, f64> {
    const NAMES: [&str; 3] = [
        "sms_sender_twilio_throttled_total",
        "sms_sender_twilio_concurrency_limit",
        "sms_sender_retries_total",
    ];
    let Some((200, body)) = http_get(port, "/metrics") else {
        return BTreeMap::new();
    };
    body.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            NAMES
                .contains(&name)
                .then(|| Some((name.to_string(), value.trim().parse().ok()?)))?
        })
        .collect()
}
