//! What the binary writes on stderr from its first line to its last, checked on the real binary:
//! a configuration error quoting a URL never shows the URL's user info or query values, and with
//! `LOG_FORMAT=json` every line is one JSON object (`time`, `severity`, `message`, `target`) —
//! configuration errors, "cannot start" (once, not twice), `RUST_LOG` warnings, start and
//! shutdown — while `--help`, `--version` and `check` stay text on stdout.
//!
//! `SMS_SENDER_BIN=/path/to/other/build cargo test --test startup_output` runs these against
//! another build.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;

const WAIT: Duration = Duration::from_secs(20);

/// A configuration that validates and needs no network to validate: loopback URLs nobody serves.
fn valid_env() -> Vec<(String, String)> {
    [
        ("SUPABASE_URL", "http://127.0.0.1:9"),
        ("SUPABASE_SERVICE_KEY", "sb_secret_startupoutputtestkey"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("TWILIO_AUTH_TOKEN", "startupoutputtesttoken"),
        ("TWILIO_PHONE_NUMBER", "+15005550006"),
        ("TWILIO_API_URL", "http://127.0.0.1:9"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// [`valid_env`] with `changes` applied (`None` removes a variable).
fn env_with(changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut env = valid_env();
    for (name, value) in changes {
        env.retain(|(k, _)| k != name);
        if let Some(value) = value {
            env.push((name.to_string(), value.to_string()));
        }
    }
    env
}

/// Run the binary with exactly `env` (and `args`) until it exits (bounded: a binary that keeps
/// running after `timeout` is killed and the test fails).
fn run(env: &[(String, String)], args: &[&str], timeout: Duration) -> Output {
    let dir = TempDir::new("sms-startup-output");
    let mut child = Command::new(sms_sender_bin!())
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let started = Instant::now();
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect the output");
    assert!(
        exited,
        "still running after {:?}; stderr:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each line of `log` as a JSON object with the four fields, or a panic naming the first line
/// that is not one.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nwhole log:\n{log}"));
            for field in ["time", "severity", "message", "target"] {
                assert!(v[field].is_string(), "no string {field:?} in {line}");
            }
            v
        })
        .collect()
}

/// A bad URL holding `secret`: exit 2, one line naming `var`, the secret nowhere, the place shown
/// with `***` where the secret was.
fn assert_refused_without_the_secret(var: &str, url: &str, secret: &str) {
    let out = run(&env_with(&[(var, Some(url))]), &[], WAIT);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{var}={url}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{var}={url}: {stderr}");
    assert!(
        stderr.starts_with(&format!("sms-sender: {var}: ")),
        "{var}={url}: {stderr}"
    );
    assert!(
        !stderr.contains(secret),
        "{var}={url}: the secret was printed: {stderr}"
    );
    assert!(stderr.contains("***"), "{var}={url}: {stderr}");
    assert!(out.stdout.is_empty(), "{var}={url}: stdout used");
}

#[test]
fn an_apikey_in_the_supabase_url_query_is_refused_without_printing_it() {
    let secret = "sb_secret_QUERYMARK0123456789";
    assert_refused_without_the_secret(
        "SUPABASE_URL",
        &format!("https://abcdefghijklmnop.supabase.co/?apikey={secret}"),
        secret,
    );
    let out = run(
        &env_with(&[(
            "SUPABASE_URL",
            Some(&format!(
                "https://abcdefghijklmnop.supabase.co?apikey={secret}"
            )),
        )]),
        &[],
        WAIT,
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("?apikey=***") && stderr.contains("SUPABASE_SERVICE_KEY"),
        "the message shows where the key goes: {stderr}"
    );
}

#[test]
fn user_info_in_the_status_callback_url_is_never_printed() {
    let secret = "CALLBACKMARK0123456789";
    // Refused for its path, and for cleartext to a public host: the user info is not shown.
    assert_refused_without_the_secret(
        "STATUS_CALLBACK_URL",
        &format!("https://twilio:{secret}@sms.example.com/hooks/status"),
        secret,
    );
    assert_refused_without_the_secret(
        "STATUS_CALLBACK_URL",
        &format!("https://twilio:{secret}@sms.example.com/twilio/status/?x={secret}"),
        secret,
    );
}

#[test]
fn user_info_in_the_twilio_api_url_is_refused_without_printing_it() {
    let secret = "APIURLMARK0123456789";
    assert_refused_without_the_secret(
        "TWILIO_API_URL",
        &format!("https://AC0123456789abcdef0123456789abcdef:{secret}@api.twilio.com"),
        secret,
    );
    let out = run(
        &env_with(&[(
            "TWILIO_API_URL",
            Some(&format!("https://user:{secret}@api.twilio.com")),
        )]),
        &[],
        WAIT,
    );
    assert!(
        stderr_of(&out).contains("TWILIO_AUTH_TOKEN"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn with_log_format_json_a_configuration_error_is_one_json_line() {
    let cases: &[(&str, Option<&str>)] = &[
        ("SUPABASE_URL", None),
        (
            "SUPABASE_URL",
            Some("https://abcdefghijklmnop.supabase.co?apikey=JSONMARK0123"),
        ),
        (
            "TWILIO_API_URL",
            Some("https://u:JSONMARK0123@api.twilio.com"),
        ),
        ("TWILIO_PHONE_NUMBER", Some("555-1234")),
        ("PORT", Some("eighty")),
        ("SENDING_TIMEOUT_SECS", Some("1")),
    ];
    for (var, value) in cases {
        let out = run(
            &env_with(&[("LOG_FORMAT", Some("json")), (var, *value)]),
            &[],
            WAIT,
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value:?}: {stderr}");
        let lines = json_lines(&stderr);
        assert_eq!(lines.len(), 1, "{var}={value:?}: {stderr}");
        assert_eq!(lines[0]["severity"], "ERROR", "{stderr}");
        let message = lines[0]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{var}: ")), "{stderr}");
        assert!(!stderr.contains("JSONMARK0123"), "{stderr}");
    }
    // Unknown arguments: one JSON line too (the usage text is for --help).
    let out = run(&env_with(&[("LOG_FORMAT", Some("json"))]), &["serve"], WAIT);
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&stderr_of(&out));
    assert_eq!(lines.len(), 1, "{}", stderr_of(&out));
    // An invalid LOG_FORMAT cannot choose the format of its own error: text, naming it.
    let out = run(&env_with(&[("LOG_FORMAT", Some("yaml"))]), &[], WAIT);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sms-sender: LOG_FORMAT: "), "{stderr}");
}

#[test]
fn cannot_start_is_said_once_and_with_log_format_json_as_json() {
    // The health port is taken (the service binds 0.0.0.0).
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a port");
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(
        &env_with(&[("LOG_FORMAT", Some("json")), ("PORT", Some(&port))]),
        &[],
        WAIT,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&stderr);
    let cannot: Vec<_> = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().contains("cannot start"))
        .collect();
    assert_eq!(cannot.len(), 1, "said once: {stderr}");
    assert_eq!(cannot[0]["severity"], "ERROR", "{stderr}");
    assert!(
        cannot[0]["message"].as_str().unwrap().contains(&port),
        "{stderr}"
    );
    // Once in text too, and even with every log line filtered out.
    for rust_log in ["info", "off"] {
        let out = run(
            &env_with(&[("PORT", Some(&port)), ("RUST_LOG", Some(rust_log))]),
            &[],
            WAIT,
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.matches("cannot start").count(),
            1,
            "RUST_LOG={rust_log}: {stderr}"
        );
    }
    drop(taken);
}

#[test]
fn with_log_format_json_every_line_from_start_to_shutdown_is_json() {
    let stack = Stack::start();
    // An unreadable RUST_LOG directive: the filter parser's own warning must be JSON too.
    let mut svc = stack.start_service(
        Path::new(&sms_sender_bin!()),
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "info,ureq=loud")],
    );
    let conv = stack.create_conversation("+15551234567");
    stack.insert_outbound(&conv, "startup output json check");
    assert!(
        stack.wait_status_count("sent", 1, WAIT),
        "not sent: {}",
        svc.log()
    );
    svc.terminate();
    assert!(
        svc.wait_exit(WAIT).is_some_and(|s| s.success()),
        "no clean exit: {}",
        svc.log()
    );
    let log = svc.log();
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|v| v["severity"] == "WARNING"
                && v["message"].as_str().unwrap().contains("ureq=loud")),
        "the ignored directive is reported: {log}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["message"].as_str().unwrap().contains("starting")),
        "{log}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|v| v["message"] == "shutdown complete"),
        "the last line is the shutdown: {log}"
    );
}

#[test]
fn help_version_and_check_stay_text_on_stdout() {
    let json = env_with(&[("LOG_FORMAT", Some("json"))]);
    let out = run(&json, &["--help"], WAIT);
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sms-sender: sends the SMS"));
    let out = run(&json, &["--version"], WAIT);
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sms-sender "));
    // A configuration error in `check`: the ✗ line on stdout, with the URL shown safely.
    let out = run(
        &env_with(&[
            ("LOG_FORMAT", Some("json")),
            (
                "SUPABASE_URL",
                Some("https://x:CHECKMARK99@abc.supabase.co"),
            ),
        ]),
        &["check"],
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
    assert!(
        stdout.starts_with("✗ configuration: SUPABASE_URL: "),
        "{stdout}"
    );
    assert!(!stdout.contains("CHECKMARK99"), "{stdout}");
}
