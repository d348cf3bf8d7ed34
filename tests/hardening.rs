//! Hardening, checked on the real binary against the local world: no `RUST_LOG` directive prints
//! a secret, `http://` to a host that is not loopback is refused at start, and the delivery
//! receipt route never takes an unsigned request and logs forgeries rate-limited, and Twilio's
//! error texts reach the log with their phone numbers masked.

use std::process::{Command, Stdio};
use std::time::Duration;

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::twilio::post_form;

const WAIT: Duration = Duration::from_secs(20);

/// Standard base64 with padding (RFC 4648 §4), as the `Authorization: Basic` header carries it.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Every form of directive that once reached the libraries' debug output, and the forms next to
/// them (a module path at each depth, the crate names the libraries log under, the message
/// filter after `/`).
const RUST_LOG_FORMS: &[&str] = &[
    "trace",
    "debug,ureq=trace,ureq::unit=trace,tungstenite::handshake=trace",
    "ureq::unit=trace",
    "ureq::stream=trace,ureq::pool=trace,ureq::response=trace",
    "tungstenite=trace",
    "tungstenite::handshake::client=trace",
    "async_tungstenite=trace",
    "native_tls=trace,openssl=trace,async_native_tls=trace",
    "polling=trace,async_io=trace",
    "off,ureq::unit=trace,tungstenite::handshake::client=trace",
    "trace/apikey",
    "info,ureq=debug",
];

#[test]
fn no_rust_log_directive_prints_a_secret() {
    let stack = Stack::start();
    let env = stack.service_env();
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (key, sid, token) = (
        value("SUPABASE_SERVICE_KEY"),
        value("TWILIO_ACCOUNT_SID"),
        value("TWILIO_AUTH_TOKEN"),
    );
    let basic = base64(format!("{sid}:{token}").as_bytes());
    let secrets = [
        ("the Supabase service key", key.as_str()),
        ("the Twilio auth token", token.as_str()),
        ("the Twilio account SID", sid.as_str()),
        ("the Basic credential", basic.as_str()),
    ];
    let conv = stack.create_conversation(RECIPIENT);
    let mut leaks = Vec::new();
    for (i, form) in RUST_LOG_FORMS.iter().enumerate() {
        let format = if i % 2 == 0 { "text" } else { "json" };
        let mut svc = stack.start_service(
            &sms_sender_bin!(),
            &[("RUST_LOG", form), ("LOG_FORMAT", format)],
        );
        // A send (Twilio create with Basic auth, claim and record with the apikey header), after
        // the Realtime handshake (the URL with ?apikey=) that start_service waited for.
        stack.insert_outbound(&conv, &format!("hardening message number {i}"));
        assert!(
            stack.wait_status_count("sent", i as i64 + 1, WAIT),
            "RUST_LOG={form}: not sent; log:\n{}",
            svc.log()
        );
        svc.terminate();
        assert!(svc.wait_exit(WAIT).is_some(), "RUST_LOG={form}: no exit");
        let log = svc.log();
        for (what, secret) in secrets {
            if log.contains(secret) {
                let line = log.lines().find(|l| l.contains(secret)).unwrap_or_default();
                leaks.push(format!("RUST_LOG={form:?} printed {what}: {line}"));
            }
        }
        if (form.starts_with("trace") || form.starts_with("debug")) && !form.contains('/') {
            assert!(
                log.lines().count() > 10,
                "RUST_LOG={form}: the service's own debug lines are missing:\n{log}"
            );
        }
        // The Service's own check on drop would panic on the same leak; the list above says more.
        if !leaks.is_empty() {
            std::mem::forget(svc);
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// Run the binary with the stack's environment changed by `extra`; exit code and stderr. A
/// binary that accepted its configuration and runs is killed after 10 s (code `None`).
fn run_with(stack: &Stack, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new("sms-hardening");
    let stderr_path = dir.0.join("stderr");
    let mut child = Command::new(sms_sender_bin!())
        .env_clear()
        .envs(stack.service_env_with(extra))
        .env("PORT", free_port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut code = None;
    wait_until(Duration::from_secs(10), || {
        code = child.try_wait().unwrap().map(|s| s.code());
        code.is_some()
    });
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        code.flatten(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

#[test]
fn cleartext_http_to_a_host_that_is_not_loopback_is_refused_at_start() {
    let stack = Stack::start();
    let cases = [
        ("SUPABASE_URL", "http://abcdefghijklmnop.supabase.co"),
        ("SUPABASE_URL", "http://10.0.0.5:54321"),
        ("TWILIO_API_URL", "http://api.twilio.com"),
        ("TWILIO_API_URL", "http://[::2]:8080"),
        (
            "STATUS_CALLBACK_URL",
            "http://sms.example.com/twilio/status",
        ),
    ];
    for (var, url) in cases {
        let (code, stderr) = run_with(&stack, &[(var, url)]);
        assert_eq!(code, Some(2), "{var}={url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}={url}: {stderr}");
        assert!(
            stderr.starts_with(&format!("sms-sender: {var}: ")) && stderr.contains("https://"),
            "{var}={url}: {stderr}"
        );
    }
    // Loopback stays allowed (the local doubles), and so does https anywhere: these get past the
    // configuration and run (stopped at once).
    for (var, url) in [
        ("STATUS_CALLBACK_URL", "http://localhost:1/twilio/status"),
        (
            "STATUS_CALLBACK_URL",
            "https://sms.example.com/twilio/status",
        ),
    ] {
        let mut svc = stack.start_service(&sms_sender_bin!(), &[(var, url)]);
        svc.terminate();
        assert!(
            svc.wait_exit(WAIT).is_some_and(|s| s.success()),
            "{var}={url}"
        );
    }
}

#[test]
fn callbacks_without_a_signature_are_refused_and_forgeries_are_logged_rate_limited() {
    let stack = Stack::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/twilio/status");
    let svc = stack.start_service(
        &sms_sender_bin!(),
        &[("PORT", &port.to_string()), ("STATUS_CALLBACK_URL", &url)],
    );
    let params = vec![
        ("MessageSid".to_string(), format!("SM{}", "a".repeat(32))),
        ("MessageStatus".to_string(), "delivered".to_string()),
    ];
    for i in 0..60 {
        let signature = match i % 3 {
            0 => None,
            1 => Some(""),
            _ => Some("bm90IGEgc2lnbmF0dXJl"),
        };
        assert_eq!(
            post_form(&url, &params, signature),
            Some(403),
            "request {i}"
        );
    }
    assert!(wait_until(WAIT, || svc.get("/metrics").is_some_and(
        |(_, m)| m.contains("sms_sender_status_callbacks_total{result=\"rejected\"} 60")
    )));
    let log = svc.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("X-Twilio-Signature"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "60 forged callbacks gave {lines} log lines:\n{log}"
    );
}

/// Twilio's 21211 quotes the full `To` number ("The 'To' number +15005550001 is not a valid
/// phone number."): the service logs the failure with the number masked, and the error text once.
#[test]
fn twilio_error_texts_reach_the_log_with_numbers_masked() {
    let stack = Stack::start();
    let svc = stack.start_service(&sms_sender_bin!(), &[]);
    let conv = stack.create_conversation("+15005550001");
    stack.insert_outbound(&conv, "masked number");
    assert!(stack.wait_status_count("failed", 1, WAIT), "{}", svc.log());
    assert!(wait_until(WAIT, || svc
        .log()
        .contains("failed permanently")));
    let log = svc.log();
    assert!(log.contains("21211"), "{log}");
    assert!(
        !log.contains("5005550001"),
        "the full number reached the log:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("21211")) {
        assert_eq!(
            line.matches("Twilio code").count(),
            1,
            "the prefix once: {line}"
        );
    }
}
