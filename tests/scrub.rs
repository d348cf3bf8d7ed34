//! Text from outside reaches the log scrubbed, checked on the real binary: no secret (a proxy
//! echoing the Realtime URL with its `?apikey=`), no forged line (a PostgREST or Realtime text
//! holding a newline and a timestamp), no unmasked phone number, no unbounded line — in both log
//! formats.
//!
//! Each test runs its cases to the end and then reports every problem it saw, case by case.
//! `SMS_SENDER_BIN=path` runs these tests against another build (to see them fail on one that
//! logs outside text as it comes).

use std::time::Duration;

use sms_sender_doubles::harness::{Refusal, RefusingServer};
use sms_sender_doubles::prelude::*;
use sms_sender_doubles::supabase::{test_service_jwt, RestFault, RestRule, SubscribeMode};

const WAIT: Duration = Duration::from_secs(20);
const SID: &str = "AC5ca1ab1e0ddba11c0ffee5eedc0de123";
const TOKEN: &str = "7e57a07b70ce2ba5ed0b5ecbe71234ab";
/// A phone number the outside texts quote; only its last four digits may be logged.
/// A line a newline in an outside text would forge, if it were logged as it came.
const FORGED: &str = "2026-01-01T00:00:00Z ERROR forged";
/// The longest log line accepted: a scrubbed text is at most 300 characters, and a line holds
/// at most a few of them.
const MAX_LINE: usize = 2048;

/// Standard base64 with padding (RFC 4648 §4), as the `Authorization: Basic` header carries it.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A new-style secret key no other test uses.
fn sb_secret_key() -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = (0..32)
        .map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())]))
        .collect();
    format!("sb_secret_{body}")
}

/// An outside text that tries everything: a newline followed by a whole forged log line, a phone
/// number, then 8 KiB of words.
fn hostile_text(lead: &str) -> String {
    format!(
        "{lead} line one\n{FORGED} for {RECIPIENT} at\r\n{FORGED} again\n{}",
        "lorem ipsum dolor sit amet ".repeat(8 * 1024 / 27 + 1)
    )
}

/// What a log may not hold, and each record on one line: in text format every line starts with
/// its timestamp, in JSON every line is one object whose message has no line break. Returns the
/// problems found (the first of each kind), each naming `case`.
fn log_problems(case: &str, log: &str, format: &str, secrets: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, secret) in secrets {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            problems.push(format!("{case}: {what} ({secret}) in {}", excerpt(line)));
        }
    }
    if let Some(line) = log.lines().find(|l| l.contains(&RECIPIENT[1..])) {
        problems.push(format!("{case}: {RECIPIENT} unmasked in {}", excerpt(line)));
    }
    if let Some(line) = log.lines().find(|l| l.chars().count() > MAX_LINE) {
        problems.push(format!(
            "{case}: a line of {} characters: {}",
            line.chars().count(),
            excerpt(line)
        ));
    }
    let not_a_record = |line: &str| match format {
        "json" => match serde_json::from_str::<serde_json::Value>(line) {
            Ok(record) => record["message"]
                .as_str()
                .is_some_and(|m| m.contains(['\n', '\r'])),
            Err(_) => true,
        },
        _ => {
            let b = line.as_bytes();
            !(b.len() > 20
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'-'
                && b[10] == b'T')
                || line.starts_with(FORGED)
        }
    };
    let broken: Vec<&str> = log.lines().filter(|l| not_a_record(l)).collect();
    if !broken.is_empty() {
        let forged = broken.iter().filter(|l| l.starts_with(FORGED)).count();
        problems.push(format!(
            "{case}: {} line(s) not one whole record ({forged} forged), first {}",
            broken.len(),
            excerpt(broken[0])
        ));
    }
    problems
}

/// A log line as a failure message quotes it: at most 160 characters.
fn excerpt(line: &str) -> String {
    let count = line.chars().count();
    if count <= 160 {
        return format!("{line:?}");
    }
    let cut: String = line.chars().take(160).collect();
    format!("{cut:?}… ({count} characters)")
}

/// Panic with every problem, if there is any. The stopped services are passed in so that they
/// are dropped only after this: while a test panics their drop skips its own check of the log,
/// and the problems are reported here, all together.
fn assert_no_problems(problems: &[String], _stopped: Vec<Service>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

/// Stop the service and return its whole log (the service itself is dropped by the caller, after
/// its checks: dropping it checks the log for secrets once more).
fn stop(svc: &mut Service) -> String {
    svc.terminate();
    assert!(svc.wait_exit(WAIT).is_some(), "the service did not exit");
    svc.log()
}

/// (1) A proxy, or a wrong `SUPABASE_URL`, refuses the Realtime upgrade with a 404 whose body
/// echoes the request URL, `?apikey=<service key>` included, on every reconnect. No form of
/// the key (not even its first 20 characters), and no other secret, reaches the log: text or
/// JSON, a plain, HTML or JSON body, a JWT or an `sb_secret_` key.
#[test]
fn a_refusal_echoing_the_realtime_url_never_logs_the_key() {
    let cases = [
        (Refusal::Text, "text", sb_secret_key()),
        (Refusal::Json, "json", test_service_jwt()),
        (Refusal::Html, "text", test_service_jwt()),
        (Refusal::Html, "json", sb_secret_key()),
    ];
    let basic = base64(format!("{SID}:{TOKEN}").as_bytes());
    let (mut problems, mut stopped) = (Vec::new(), Vec::new());
    for (refusal, format, key) in cases {
        let case = format!("{refusal:?} body, {format} log, {}… key", &key[..3]);
        let proxy = RefusingServer::start(404, refusal);
        let url = proxy.url();
        let env: Vec<(String, String)> = [
            ("SUPABASE_URL", url.as_str()),
            ("SUPABASE_SERVICE_KEY", key.as_str()),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("TWILIO_PHONE_NUMBER", FROM_NUMBER),
            ("TWILIO_API_URL", url.as_str()),
            ("LOG_FORMAT", format),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut svc = Service::start(&sms_sender_bin!(), env);
        let upgrades = || {
            proxy
                .targets()
                .iter()
                .filter(|t| t.starts_with("/realtime/v1/websocket?apikey="))
                .count()
        };
        let refused_twice = wait_until(WAIT, || {
            upgrades() >= 2 && svc.log().matches("realtime disconnected").count() >= 2
        });
        let log = stop(&mut svc);
        assert!(
            refused_twice,
            "{case}: the upgrade was not refused and retried; targets {:?}",
            proxy.targets()
        );
        // The refusal is reported (what the proxy said), only not the key in it.
        assert!(
            log.contains("upgrade refused with HTTP 404")
                && log.contains("Cannot GET /realtime/v1/websocket"),
            "{case}: the refusal is not in the log"
        );
        let found = log_problems(
            &case,
            &log,
            format,
            &[
                ("the service key", key.as_str()),
                ("the service key's first 20 characters", &key[..20]),
                ("the Twilio auth token", TOKEN),
                ("the Twilio account SID", SID),
                ("the Basic credential", basic.as_str()),
            ],
        );
        problems.extend(found);
        stopped.push(svc);
    }
    assert_no_problems(&problems, stopped);
}

/// (2) PostgREST answers the sweep's read with a 500 whose message holds a newline followed by a
/// forged log line, a phone number and 8 KiB of text (a trigger's `RAISE` can say anything): the
/// log shows it on one line, masked and bounded, in both formats.
#[test]
fn a_postgrest_error_text_cannot_forge_lines_nor_show_a_number() {
    let stack = Stack::start();
    let (mut problems, mut stopped) = (Vec::new(), Vec::new());
    for format in ["text", "json"] {
        stack.supabase.add_rest_rule(RestRule {
            method: "GET".into(),
            query_contains: Some("status=eq.queued_for_send".into()),
            body_contains: None,
            delay: Duration::ZERO,
            fault: Some(RestFault::Status {
                status: 500,
                code: "P0001".into(),
                message: hostile_text("trigger says"),
            }),
            times: 2,
        });
        let mut svc = stack.start_service(&sms_sender_bin!(), &[("LOG_FORMAT", format)]);
        let failed_twice = wait_until(WAIT, || {
            svc.log().matches("catch-up read failed").count() >= 2
        });
        let log = stop(&mut svc);
        assert!(
            failed_twice,
            "{format}: the sweep did not meet the 500 twice"
        );
        assert!(
            log.contains("HTTP 500") && log.contains("trigger says line one"),
            "{format}: PostgREST's text is not reported"
        );
        let found = log_problems(&format!("{format} log"), &log, format, &[]);
        problems.extend(found);
        stopped.push(svc);
    }
    assert_no_problems(&problems, stopped);
}

/// (3) Realtime's own words: a join refused, then a subscription refused, each with a reason
/// that holds a newline and a forged line, a phone number, the service key and 8 KiB of text.
#[test]
fn realtime_refusal_reasons_are_scrubbed() {
    let stack = Stack::start();
    let env = stack.service_env();
    let key = env
        .iter()
        .find(|(k, _)| k == "SUPABASE_SERVICE_KEY")
        .map(|(_, v)| v.clone())
        .expect("the stack's key");
    let reason = hostile_text(&format!("Unauthorized: token {key} refused"));
    let (mut problems, mut stopped) = (Vec::new(), Vec::new());
    for (format, join) in [("text", true), ("json", false)] {
        let said = if join {
            stack.supabase.set_join_error(Some(reason.clone()));
            "realtime join refused"
        } else {
            stack.supabase.set_join_error(None);
            stack
                .supabase
                .set_subscribe_status(SubscribeMode::Error(reason.clone()));
            "realtime subscription failed"
        };
        let case = format!("{said:?}, {format} log");
        let mut svc = Service::start(
            &sms_sender_bin!(),
            stack.service_env_with(&[("LOG_FORMAT", format)]),
        );
        let twice = wait_until(WAIT, || svc.log().matches(said).count() >= 2);
        let log = stop(&mut svc);
        assert!(twice, "{case}: not logged twice");
        assert!(
            log.contains("Unauthorized: token"),
            "{case}: the server's reason is not reported"
        );
        let found = log_problems(
            &case,
            &log,
            format,
            &[
                ("the service key", key.as_str()),
                ("the service key's first 20 characters", &key[..20]),
            ],
        );
        problems.extend(found);
        stopped.push(svc);
    }
    assert_no_problems(&problems, stopped);
}
