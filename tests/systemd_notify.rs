//! Under a `Type=notify` systemd unit the service reports its state on `$NOTIFY_SOCKET`: the
//! test plays systemd with a datagram socket of its own and reads what arrives.
//!
//! - `READY=1` only once subscribed to Realtime (not while the subscription is withheld);
//! - `WATCHDOG=1` at half of `$WATCHDOG_USEC`, withheld while a loop is wedged (the debug-only
//!   `SMS_SENDER_DEBUG_HOLD_REALTIME` hold) and resumed after, and none at all when
//!   `$WATCHDOG_PID` names another process;
//! - `STOPPING=1` at SIGTERM, before the exit (code 0).
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::SubscribeMode;

/// systemd's end: a datagram socket and what arrived on it, with when.
struct Systemd {
    socket: UnixDatagram,
    path: String,
    received: Vec<(Instant, String)>,
    _dir: TempDir,
}

impl Systemd {
    fn listen() -> Systemd {
        let dir = TempDir::new("sms-notify");
        let path = dir.0.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Systemd {
            socket,
            path: path.to_string_lossy().into_owned(),
            received: Vec::new(),
            _dir: dir,
        }
    }

    /// Read every datagram that arrives within `for_`.
    fn collect(&mut self, for_: Duration) {
        let end = Instant::now() + for_;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.received.push((Instant::now(), text));
            }
        }
    }

    /// Read until a datagram with the line `line` arrives (or `timeout`); when it arrived.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(at) = self.first(line) {
                return Some(at);
            }
            self.collect(Duration::from_millis(50));
        }
        self.first(line)
    }

    fn first(&self, line: &str) -> Option<Instant> {
        self.received
            .iter()
            .find(|(_, m)| m.lines().any(|l| l == line))
            .map(|(at, _)| *at)
    }

    fn count(&self, line: &str, after: Instant) -> usize {
        self.received
            .iter()
            .filter(|(at, m)| *at >= after && m.lines().any(|l| l == line))
            .count()
    }
}

fn start(stack: &Stack, systemd: &Systemd, extra: &[(&str, &str)]) -> Service {
    let mut vars: Vec<(&str, &str)> = SHORT_LIVENESS.to_vec();
    vars.push(("NOTIFY_SOCKET", systemd.path.as_str()));
    vars.extend_from_slice(extra);
    Service::start(&sms_sender_bin!(), stack.service_env_with(&vars))
}

/// No `READY=1` while Realtime withholds the subscription; `READY=1` once subscribed, exactly
/// once (a later reconnect does not repeat it); `STOPPING=1` at SIGTERM, then exit 0.
#[test]
fn ready_once_subscribed_and_stopping_at_sigterm() {
    let stack = Stack::start();
    stack.supabase.set_subscribe_status(SubscribeMode::Never);
    let mut systemd = Systemd::listen();
    let mut svc = start(&stack, &systemd, &[]);
    systemd.collect(Duration::from_secs(3));
    let (_, health) = svc.health().expect("the port answers");
    assert_ne!(health["websocket"], "connected", "{health}");
    assert_eq!(
        systemd.first("READY=1"),
        None,
        "not ready before the subscription: {:?}\n{}",
        systemd.received,
        svc.log()
    );

    stack.supabase.set_subscribe_status(SubscribeMode::Ok);
    stack.supabase.realtime_drop_all();
    let ready = systemd.wait_for("READY=1", Duration::from_secs(20));
    assert!(
        ready.is_some(),
        "READY=1 once subscribed: {:?}\n{}",
        systemd.received,
        svc.log()
    );
    assert!(svc.wait_subscribed(Duration::from_secs(1)));

    // A reconnect and a new subscription do not announce readiness again.
    stack.supabase.realtime_drop_all();
    assert!(
        svc.wait_subscribed(Duration::from_secs(20)),
        "{}",
        svc.log()
    );
    systemd.collect(Duration::from_millis(500));
    assert_eq!(
        systemd.count("READY=1", ready.unwrap()),
        1,
        "{:?}",
        systemd.received
    );
    assert_eq!(systemd.first("WATCHDOG=1"), None, "no watchdog asked for");

    // The message still goes out, and the shutdown is announced before the exit.
    let conv = stack.create_conversation("+15553900001");
    stack.insert_outbound(&conv, "under systemd");
    assert!(stack.wait_status_count("sent", 1, Duration::from_secs(20)));
    assert_eq!(systemd.first("STOPPING=1"), None);
    svc.terminate();
    let stopping = systemd.wait_for("STOPPING=1", Duration::from_secs(5));
    let status = svc.wait_exit(Duration::from_secs(12));
    assert!(
        stopping.is_some(),
        "STOPPING=1 at SIGTERM: {:?}\n{}",
        systemd.received,
        svc.log()
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", svc.log());
}

/// `WATCHDOG_USEC=600000`: a ping about every 300 ms; none while the Realtime task is wedged
/// past the liveness window, pings again once it turns.
#[test]
fn watchdog_fed_only_while_the_loops_turn() {
    let stack = Stack::start();
    let mut systemd = Systemd::listen();
    let dir = TempDir::new("notify-hold");
    let hold = dir.0.join("hold-realtime");
    let hold_text = hold.to_string_lossy().into_owned();
    let svc = start(
        &stack,
        &systemd,
        &[
            ("WATCHDOG_USEC", "600000"),
            ("SMS_SENDER_DEBUG_HOLD_REALTIME", hold_text.as_str()),
        ],
    );
    assert!(
        systemd
            .wait_for("READY=1", Duration::from_secs(20))
            .is_some(),
        "{}",
        svc.log()
    );
    let from = Instant::now();
    systemd.collect(Duration::from_secs(3));
    let pings = systemd.count("WATCHDOG=1", from);
    assert!(
        (6..=14).contains(&pings),
        "about 10 pings in 3 s at 300 ms: {pings}"
    );

    std::fs::write(&hold, b"").unwrap();
    // Wait for /livez to call the task stalled (window 8 s), then listen for a while.
    assert!(
        sms_sender_doubles::harness::wait_until(Duration::from_secs(20), || {
            svc.get("/livez").is_some_and(|(status, _)| status == 503)
        }),
        "the hold wedges the Realtime task"
    );
    let stalled = Instant::now();
    systemd.collect(Duration::from_secs(3));
    assert_eq!(
        systemd.count("WATCHDOG=1", stalled + Duration::from_millis(400)),
        0,
        "no ping while a loop is wedged: {:?}",
        systemd.received
    );
    assert!(
        svc.log().contains("not feeding the systemd watchdog"),
        "{}",
        svc.log()
    );

    std::fs::remove_file(&hold).unwrap();
    let resumed = Instant::now();
    systemd.collect(Duration::from_secs(4));
    assert!(
        systemd.count("WATCHDOG=1", resumed) >= 3,
        "pings resume once the task turns: {:?}",
        systemd.received
    );
}

/// A watchdog meant for another process (`WATCHDOG_PID`) is not fed; an abstract-namespace
/// socket (`@name`) works like a path.
#[test]
fn watchdog_for_another_pid_and_abstract_socket() {
    let stack = Stack::start();
    let name = format!("sms-sender-test-notify-{}", std::process::id());
    let socket = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let at = format!("@{name}");
    let svc = Service::start(
        &sms_sender_bin!(),
        stack.service_env_with(&[
            ("NOTIFY_SOCKET", at.as_str()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ]),
    );
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !got.iter().any(|m: &String| m.starts_with("READY=1")) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        got.iter().any(|m| m.starts_with("READY=1")),
        "READY=1 on the abstract socket: {got:?}\n{}",
        svc.log()
    );
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        !got.iter().any(|m| m.contains("WATCHDOG=1")),
        "WATCHDOG_PID=1 is not us: {got:?}"
    );
}
