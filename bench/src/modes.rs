//! Plain and TLS side by side, system calls per message, and the Node original as a CPU peer.
//!
//! - TLS: a throwaway CA and a leaf for IP 127.0.0.1 made with the `openssl` CLI in a temp dir per
//!   run, and a small Node `tls` server (its own process, so its CPU is not the service's) in
//!   front of the Supabase double (REST and Realtime: `https://` and so `wss://`) and of the
//!   Twilio double. The service trusts the system bundle plus that CA (`SSL_CERT_FILE`).
//! - System calls: `strace -c -f -p PID` attached only around one measured burst, on a process
//!   of its own (strace slows the process: no CPU figure is taken from it).
//! - Node: `bench/node-original/` (`npm ci` once if `node_modules` is missing), run on the
//!   same bursts as this build, in the same run, against the same doubles.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sms_sender_doubles::harness::{Launch, Service, TempDir};
use sms_sender_doubles::tls::TestCa;
use sms_sender_doubles::twilio::TwilioDouble;

use crate::measure::{cpu_seconds, proc_status};
use crate::phases::Bench;
use crate::report::tail;
use crate::{
    step, ModeFigures, Peer, Plan, Results, Syscalls, Transport, TWILIO_REAL_CREATE,
    TWILIO_REAL_LIMIT,
};

/// The TLS terminator: one TLS listener per upstream port, each connection piped byte for byte
/// to 127.0.0.1:upstream. Prints "UPSTREAM LISTEN" per listener once it listens.
const TERMINATOR_JS: &str = r#"'use strict';
const tls = require('tls'), net = require('net'), fs = require('fs');
const [cert, key, ...upstreams] = process.argv.slice(2);
const options = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
for (const upstream of upstreams) {
  const server = tls.createServer(options, (client) => {
    const up = net.connect(Number(upstream), '127.0.0.1');
    client.setNoDelay(true);
    up.setNoDelay(true);
    client.pipe(up);
    up.pipe(client);
    const close = () => { client.destroy(); up.destroy(); };
    client.on('error', close); up.on('error', close);
    client.on('close', close); up.on('close', close);
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1', () => console.log(`${upstream} ${server.address().port}`));
}
"#;

/// The CA, the leaf and the trust file of one run.
pub(crate) struct TlsMaterial {
    dir: TempDir,
    node: PathBuf,
}

impl TlsMaterial {
    /// Generate a CA and a leaf (SAN IP:127.0.0.1) with the openssl CLI, and the trust file
    /// (system bundle + CA).
    pub(crate) fn create(node: PathBuf) -> Result<TlsMaterial, String> {
        let dir = TempDir::new("sms-bench-tls");
        let d = &dir.0;
        std::fs::write(d.join("terminator.js"), TERMINATOR_JS).map_err(|e| format!("tls: {e}"))?;
        let ca = TestCa::create(d, "sms-bench throwaway CA").map_err(|e| format!("tls: {e}"))?;
        ca.with_system_bundle(&d.join("trust.pem"))
            .map_err(|e| format!("tls: {e}"))?;
        Ok(TlsMaterial { dir, node })
    }

    pub(crate) fn trust_file(&self) -> PathBuf {
        self.dir.0.join("trust.pem")
    }

    /// A terminator in front of these upstream ports; returns it with the TLS port of each.
    pub(crate) fn terminate(&self, upstreams: &[u16]) -> Result<(Terminator, Vec<u16>), String> {
        let d = &self.dir.0;
        let mut child = Command::new(&self.node)
            .arg(d.join("terminator.js"))
            .arg(d.join("leaf.pem"))
            .arg(d.join("leaf.key"))
            .args(upstreams.iter().map(u16::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("tls terminator: {e}"))?;
        let stdout = child.stdout.take().ok_or("tls terminator: no stdout")?;
        let mut terminator = Terminator(child);
        let mut ports = vec![0u16; upstreams.len()];
        let mut lines = BufReader::new(stdout).lines();
        while ports.contains(&0) {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => {
                    terminator.stop();
                    return Err("tls terminator exited before listening".into());
                }
            };
            let mut words = line.split_whitespace().map(|w| w.parse::<u16>().ok());
            if let (Some(Some(up)), Some(Some(port))) = (words.next(), words.next()) {
                if let Some(i) = upstreams.iter().position(|&u| u == up) {
                    ports[i] = port;
                }
            }
        }
        Ok((terminator, ports))
    }
}

/// The terminator process, killed when dropped.
pub(crate) struct Terminator(Child);

impl Terminator {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An executable found on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// `node` and the Node original's folder, `npm ci` run there once if `node_modules` is missing;
/// `Err` says why the Node peer cannot be measured.
pub(crate) fn node_original() -> Result<(PathBuf, PathBuf), String> {
    let node = which("node").ok_or("node is not on PATH")?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node-original");
    if !dir.join("index.js").is_file() {
        return Err(format!("{} has no index.js", dir.display()));
    }
    if !dir.join("node_modules").is_dir() {
        let npm = which("npm").ok_or("npm is not on PATH (needed once for `npm ci`)")?;
        step(&format!("npm ci in {}", dir.display()));
        let out = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("npm ci: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(dir.join("node_modules"));
            return Err(format!(
                "npm ci failed: {}",
                tail(&String::from_utf8_lossy(&out.stderr), 5)
            ));
        }
    }
    Ok((node, dir))
}

/// What runs: this build, or the Node original through `node`.
#[derive(Clone, Copy)]
enum Program<'p> {
    Rust(&'p Path),
    Node { node: &'p Path, dir: &'p Path },
}

/// How a fresh process talks to the doubles.
struct World {
    twilio: TwilioDouble,
    env: Vec<(String, String)>,
    /// Kept alive as long as the world is (TLS mode only).
    _terminator: Option<Terminator>,
}

/// A burst's delivery, checked exactly once against its own Twilio double.
struct Delivered {
    elapsed: Duration,
}

/// The new phases: plain and TLS resources, CPU and system calls, and the Node peer.
pub(crate) fn run(b: &mut Bench<'_>, plan: &Plan, r: &mut Results) -> Result<(), String> {
    let node = which("node");
    let tls = match &node {
        Some(node) => TlsMaterial::create(node.clone()).map(Some),
        None => Err("node is not on PATH (the TLS terminator is a Node `tls` server)".into()),
    };
    let tls = match tls {
        Ok(t) => t,
        Err(e) => {
            r.tls_not_measured = Some(e);
            None
        }
    };
    let mut transports = vec![Transport::Plain];
    if tls.is_some() {
        transports.push(Transport::Tls);
    }
    let this = Program::Rust(b.binary);
    for &t in &transports {
        let figures = figures_mut(r, t);
        step(&format!(
            "{}: idle {} s, then a burst of {} (Twilio answering creates in {} ms, at most {} at once){}",
            t.label(),
            plan.mode_idle.as_secs(),
            plan.mode_burst,
            TWILIO_REAL_CREATE.as_millis(),
            TWILIO_REAL_LIMIT,
            plan.after_minute.map_or(String::new(), |d| format!(
                ", readings again {} s later",
                d.as_secs()
            ))
        ));
        resources(b, plan, this, t, tls.as_ref(), figures)?;
    }
    for &t in &transports {
        step(&format!(
            "{}: CPU, {} bursts of {} (Twilio answering at once)",
            t.label(),
            plan.cpu_bursts,
            plan.cpu_burst
        ));
        let cpu = cpu_bursts(b, plan, this, t, tls.as_ref())?;
        eprintln!("    CPU per message: {}", fmt_list(&cpu));
        figures_mut(r, t).cpu_per_1000 = cpu;
    }
    if plan.node_peer {
        step(&format!(
            "Node original (plain): CPU, {} bursts of {} (Twilio answering at once)",
            plan.cpu_bursts, plan.cpu_burst
        ));
        r.node = Some(match node_original() {
            Ok((node, dir)) => {
                let program = Program::Node {
                    node: &node,
                    dir: &dir,
                };
                match cpu_bursts_with_rss(b, plan, program, Transport::Plain, None) {
                    Ok((cpu, idle_rss_kib, hwm_kib)) => {
                        eprintln!("    Node CPU per message: {}", fmt_list(&cpu));
                        Ok(Peer {
                            cpu_per_1000: cpu,
                            idle_rss_kib,
                            hwm_kib,
                        })
                    }
                    Err(e) => return Err(format!("Node original: {e}")),
                }
            }
            Err(why) => {
                eprintln!("    not measured: {why}");
                Err(why)
            }
        });
    } else {
        r.node = Some(Err("skipped in quick mode".into()));
    }
    match which("strace") {
        None => {
            r.strace_not_measured = Some("strace is not on PATH (apt-get install strace)".into())
        }
        Some(strace) => {
            for &t in &transports {
                step(&format!(
                    "{}: system calls, strace -c -f around one burst of {} (Twilio answering at once)",
                    t.label(),
                    plan.syscall_burst
                ));
                let s = syscalls(b, plan, &strace, t, tls.as_ref())?;
                eprintln!(
                    "    {:.1} system calls per message, clone/clone3 {:.3} per message",
                    s.per_message(),
                    s.clones as f64 / s.messages.max(1) as f64
                );
                figures_mut(r, t).syscalls = Some(s);
            }
        }
    }
    Ok(())
}

fn figures_mut(r: &mut Results, t: Transport) -> &mut ModeFigures {
    match t {
        Transport::Plain => &mut r.plain,
        Transport::Tls => &mut r.tls,
    }
}

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.3} ms"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Twilio double of its own for one fresh process, and the environment pointing at it (and at
/// the Supabase double), in plain or through the TLS terminator.
fn world(b: &Bench<'_>, t: Transport, tls: Option<&TlsMaterial>) -> Result<World, String> {
    let twilio = TwilioDouble::start(b.stack.twilio.config().clone());
    let mut env = b.env(false, None);
    let mut terminator = None;
    let (supabase_url, twilio_url) = match t {
        Transport::Plain => (b.stack.supabase.url(), twilio.url()),
        Transport::Tls => {
            let tls = tls.ok_or("TLS mode without TLS material")?;
            let (term, ports) =
                tls.terminate(&[b.stack.supabase.port(), url_port(&twilio.url())?])?;
            terminator = Some(term);
            env.push((
                "SSL_CERT_FILE".into(),
                tls.trust_file().to_string_lossy().into_owned(),
            ));
            (
                format!("https://127.0.0.1:{}", ports[0]),
                format!("https://127.0.0.1:{}", ports[1]),
            )
        }
    };
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "SUPABASE_URL" => *v = supabase_url.clone(),
            "TWILIO_API_URL" => *v = twilio_url.clone(),
            _ => {}
        }
    }
    Ok(World {
        twilio,
        env,
        _terminator: terminator,
    })
}

/// The port of an `http://127.0.0.1:PORT` URL.
fn url_port(url: &str) -> Result<u16, String> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| format!("no port in {url}"))
}

/// Start the program in this world and wait until it is subscribed.
fn start(b: &Bench<'_>, program: Program<'_>, w: &World) -> Result<Service, String> {
    let svc = match program {
        Program::Rust(binary) => Service::start(binary, w.env.clone()),
        Program::Node { node, dir } => {
            let index = dir.join("index.js");
            let mut env = w.env.clone();
            env.push(("NODE_ENV".into(), "production".into()));
            Service::launch(Launch {
                binary: &index,
                env,
                cwd: Some(dir),
                uid_gid: None,
                runner: vec![node.to_string_lossy().into_owned()],
                runner_forks: false,
            })
        }
    };
    if !svc.wait_subscribed(Duration::from_secs(30)) {
        return Err(format!(
            "did not subscribe within 30 s; its log:\n{}",
            tail(&svc.log(), 40)
        ));
    }
    let _ = b;
    Ok(svc)
}

/// Insert a burst of `n` and wait until each is stored once by this world's Twilio and every row
/// is `sent` with a SID of its own; `base` is how many the double stored before.
fn burst(
    b: &mut Bench<'_>,
    w: &World,
    svc: &Service,
    n: usize,
    tag: &str,
) -> Result<Delivered, String> {
    let base = w.twilio.messages().len();
    let bodies: Vec<String> = (0..n)
        .map(|i| format!("bench {tag} {} {i}", b.inserted))
        .collect();
    let ids = b.stack.insert_many(&b.conversation, &bodies);
    let committed = Instant::now();
    b.inserted += n;
    let timeout = Duration::from_secs_f64(n as f64 / 5.0 + 60.0);
    if !w.twilio.wait_for_messages(base + n, timeout) {
        return Err(format!(
            "{tag}: Twilio stored {} of {n} within {} s ({:?}); log tail:\n{}",
            w.twilio.messages().len() - base,
            timeout.as_secs(),
            b.stack.status_counts(),
            tail(&svc.log(), 40)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sent, sids) = b.burst_rows(&ids);
        if sent == n && sids == n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{tag}: Twilio stored all {n}, but {sent} rows are `sent` ({sids} distinct SIDs) after 60 s; log tail:\n{}",
                tail(&svc.log(), 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = committed.elapsed();
    // Exactly once: each body stored once (a second create would show after the rows are sent).
    std::thread::sleep(Duration::from_millis(100));
    let stored = w.twilio.messages();
    let mine: std::collections::HashSet<&str> = stored[base..]
        .iter()
        .map(|m| m.requested_body.as_str())
        .collect();
    if stored.len() - base != n || mine.len() != n {
        return Err(format!(
            "{tag}: not exactly once: Twilio stored {} messages ({} distinct bodies) for {n}",
            stored.len() - base,
            mine.len()
        ));
    }
    Ok(Delivered { elapsed })
}

/// Sockets among the process's open file descriptors.
fn sockets(pid: u32) -> Result<usize, String> {
    let entries =
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
    Ok(entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count())
}

/// `Threads:` of `/proc/PID/status`.
fn threads(pid: u32) -> Result<usize, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no Threads"))
}

/// Idle RSS after `mode_idle`, then one burst against Twilio at 200 ms with the account's
/// concurrency limit: RSS, sockets and threads after it, and again `after_minute` later.
fn resources(
    b: &mut Bench<'_>,
    plan: &Plan,
    program: Program<'_>,
    t: Transport,
    tls: Option<&TlsMaterial>,
    f: &mut ModeFigures,
) -> Result<(), String> {
    let w = world(b, t, tls)?;
    w.twilio.set_create_latency(TWILIO_REAL_CREATE);
    w.twilio.set_concurrency_limit(Some(TWILIO_REAL_LIMIT));
    let svc = start(b, program, &w)?;
    let pid = svc.pid();
    std::thread::sleep(plan.mode_idle);
    f.idle_rss_kib = Some(proc_status(pid)?.rss_kib);
    f.idle_threads = Some(threads(pid)?);
    f.idle_sockets = Some(sockets(pid)?);
    let d = burst(
        b,
        &w,
        &svc,
        plan.mode_burst,
        &format!("{} limited", t.tag()),
    )?;
    f.burst_seconds = Some(d.elapsed.as_secs_f64());
    f.burst_throttled = Some(w.twilio.too_many_requests());
    let after = proc_status(pid)?;
    f.after_rss_kib = Some(after.rss_kib);
    f.after_hwm_kib = Some(after.hwm_kib);
    f.after_sockets = Some(sockets(pid)?);
    f.after_threads = Some(threads(pid)?);
    eprintln!(
        "    idle VmRSS {} KiB; after the burst ({:.2} s): VmRSS {} KiB, VmHWM {} KiB, {} sockets, {} threads",
        f.idle_rss_kib.unwrap_or(0),
        d.elapsed.as_secs_f64(),
        after.rss_kib,
        after.hwm_kib,
        f.after_sockets.unwrap_or(0),
        f.after_threads.unwrap_or(0)
    );
    if let Some(wait) = plan.after_minute {
        std::thread::sleep(wait);
        f.later_rss_kib = Some(proc_status(pid)?.rss_kib);
        f.later_sockets = Some(sockets(pid)?);
        f.later_threads = Some(threads(pid)?);
        eprintln!(
            "    {} s later: VmRSS {} KiB, {} sockets, {} threads",
            wait.as_secs(),
            f.later_rss_kib.unwrap_or(0),
            f.later_sockets.unwrap_or(0),
            f.later_threads.unwrap_or(0)
        );
    }
    b.stop(svc)?;
    b.wait_all_sent(Duration::from_secs(30))
}

fn cpu_bursts(
    b: &mut Bench<'_>,
    plan: &Plan,
    program: Program<'_>,
    t: Transport,
    tls: Option<&TlsMaterial>,
) -> Result<Vec<f64>, String> {
    cpu_bursts_with_rss(b, plan, program, t, tls).map(|(cpu, _, _)| cpu)
}

/// A fresh process drains `cpu_bursts` bursts of `cpu_burst`, Twilio answering at once: CPU-s
/// per 1,000 messages of each (= ms per message); and its VmRSS before the first, VmHWM after.
fn cpu_bursts_with_rss(
    b: &mut Bench<'_>,
    plan: &Plan,
    program: Program<'_>,
    t: Transport,
    tls: Option<&TlsMaterial>,
) -> Result<(Vec<f64>, u64, u64), String> {
    let w = world(b, t, tls)?;
    let svc = start(b, program, &w)?;
    let pid = svc.pid();
    // Let the start-up work (and any catch-up) finish before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = proc_status(pid)?.rss_kib;
    let mut cpu = Vec::new();
    for i in 0..plan.cpu_bursts {
        let before = cpu_seconds(pid)?;
        burst(b, &w, &svc, plan.cpu_burst, &format!("{} cpu {i}", t.tag()))?;
        let used = cpu_seconds(pid)? - before;
        cpu.push(used * 1000.0 / plan.cpu_burst as f64);
        std::thread::sleep(Duration::from_millis(500));
    }
    let hwm = proc_status(pid)?.hwm_kib;
    b.stop(svc)?;
    b.wait_all_sent(Duration::from_secs(30))?;
    Ok((cpu, idle_rss, hwm))
}

/// A fresh process, subscribed and idle for a second; `strace -c -f -p PID` attached, one burst
/// of `syscall_burst` (Twilio answering at once), strace detached: its summary.
fn syscalls(
    b: &mut Bench<'_>,
    plan: &Plan,
    strace: &Path,
    t: Transport,
    tls: Option<&TlsMaterial>,
) -> Result<Syscalls, String> {
    let w = world(b, t, tls)?;
    let svc = start(b, Program::Rust(b.binary), &w)?;
    std::thread::sleep(Duration::from_secs(1));
    let out = TempDir::new("sms-bench-strace");
    let summary = out.0.join("summary.txt");
    let mut tracer = Command::new(strace)
        .args(["-c", "-f", "-p"])
        .arg(svc.pid().to_string())
        .arg("-o")
        .arg(&summary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("strace: {e}"))?;
    // Wait until every thread is attached: strace says so on stderr, one line per thread.
    let expected = threads(svc.pid())?;
    let stderr = tracer.stderr.take().ok_or("strace: no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut attached = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached") {
                attached += 1;
                if attached >= expected {
                    let _ = tx.send(());
                }
            }
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let result = burst(
        b,
        &w,
        &svc,
        plan.syscall_burst,
        &format!("{} strace", t.tag()),
    );
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(tracer.id() as libc::pid_t, libc::SIGINT) };
    let _ = tracer.wait();
    result?;
    let text = std::fs::read_to_string(&summary).map_err(|e| format!("strace summary: {e}"))?;
    b.stop(svc)?;
    b.wait_all_sent(Duration::from_secs(30))?;
    parse_strace(&text, plan.syscall_burst)
}

/// The `strace -c` table: calls per system call (the total is summed here, not read).
fn parse_strace(text: &str, messages: usize) -> Result<Syscalls, String> {
    let mut calls: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 5 || words[0].parse::<f64>().is_err() {
            continue;
        }
        let name = words[words.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(n) = words[3].parse::<u64>() {
            calls.push((name.to_string(), n));
        }
    }
    if calls.is_empty() {
        return Err(format!("strace printed no summary:\n{text}"));
    }
    calls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let clones = calls
        .iter()
        .filter(|(n, _)| n == "clone" || n == "clone3")
        .map(|(_, c)| c)
        .sum();
    Ok(Syscalls {
        messages,
        total: calls.iter().map(|(_, c)| c).sum(),
        clones,
        by_call: calls,
    })
}
