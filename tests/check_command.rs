//! `sms-sender check`: one line per dependency (configuration, Supabase REST and schema,
//! Realtime, Twilio credentials, sender, message list), `✓` or `✗` with the reason, exit code 0,
//! 1 (a dependency refused) or 2 (configuration); never an SMS sent, never a secret echoed; and
//! an answer within seconds when a key or URL is wrong. Also `--help`, `--version` and an
//! unknown flag. Runs the real binary (`SMS_SENDER_BIN` selects another build).

use std::process::Command;
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::twilio::{Fault, TwilioConfig};

/// `sms-sender check` against `stack` with `extra` variables: its exit code and stdout.
fn check(stack: &Stack, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let env = stack.service_env_with(extra);
    let out = Command::new(sms_sender_bin!())
        .arg("check")
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_command_reports_each_problem_clearly() {
    let owned = "+15005550006";
    let mg = format!("MG{}", "ab".repeat(16));
    let stack = Stack::start_with(
        Default::default(),
        TwilioConfig {
            owned_numbers: vec![owned.into()],
            messaging_services: vec![mg.clone()],
            ..Default::default()
        },
    );
    let (code, out) = check(&stack, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with('✓')).count(),
        7,
        "{out}"
    );
    assert!(out.contains("✓ Scaled mode: not installed"), "{out}");
    assert!(out.contains("✓ Twilio message list: readable"), "{out}");
    assert!(out.contains("✓ Realtime: subscribed"), "{out}");
    assert_eq!(
        stack.twilio.create_requests(),
        0,
        "check never sends an SMS"
    );

    let (code, out) = check(&stack, &[("TWILIO_MESSAGING_SERVICE_SID", &mg)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("✓ Twilio sender: messaging service {mg}")),
        "{out}"
    );

    let (code, out) = check(&stack, &[("TWILIO_AUTH_TOKEN", "wrong")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ Twilio credentials: Twilio refused the credentials"),
        "{out}"
    );
    assert!(!out.contains("wrong"), "no secret echoed: {out}");

    // Test credentials cannot list messages (403): reconciliation cannot work, and check says so.
    stack.twilio.set_list_outage(Some(Fault::Error {
        status: 403,
        code: 20003,
        message: "Authenticate".into(),
        retry_after: None,
    }));
    let (code, out) = check(&stack, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ Twilio message list:") && out.contains("reconciliation cannot work"),
        "{out}"
    );
    stack.twilio.set_list_outage(None);

    let (code, out) = check(&stack, &[("TWILIO_PHONE_NUMBER", "+15557654321")]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("✗ Twilio sender: +15557654321 is not a number of this account"),
        "{out}"
    );

    let (code, out) = check(&stack, &[("SUPABASE_SERVICE_KEY", "sb_secret_not-the-key")]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("✗ Supabase REST: the key was refused"),
        "{out}"
    );
    assert!(out.contains("✗ Realtime:"), "{out}");

    stack.sql("ALTER TABLE messages DROP COLUMN twilio_message_sid");
    stack.supabase.reload_schema();
    let (code, out) = check(&stack, &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("✗ Supabase REST: schema mismatch") && out.contains("twilio_message_sid"),
        "{out}"
    );

    let (code, out) = check(&stack, &[("TWILIO_PHONE_NUMBER", "555")]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("✗ configuration: TWILIO_PHONE_NUMBER"),
        "{out}"
    );

    let help = Command::new(sms_sender_bin!())
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success() && String::from_utf8_lossy(&help.stdout).contains("sms-sender check")
    );
    let version = Command::new(sms_sender_bin!())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("sms-sender {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = Command::new(sms_sender_bin!())
        .arg("--frobnicate")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `check` with a wrong key, or a URL where nothing answers, says so within
/// a few seconds, with the server's reason on the Realtime line.
#[test]
fn check_answers_within_seconds_on_a_wrong_key_or_url() {
    let stack = Stack::start();
    let check = |extra: &[(&str, &str)]| {
        let started = Instant::now();
        let out = Command::new(sms_sender_bin!())
            .arg("check")
            .env_clear()
            .envs(stack.service_env_with(extra))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            started.elapsed(),
        )
    };
    let bound = Duration::from_secs(8);

    let (code, out, took) = check(&[("SUPABASE_SERVICE_KEY", "sb_secret_not-the-key")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(took < bound, "took {took:?}:\n{out}");
    assert!(
        out.contains("✗ Realtime:") && out.contains("Invalid API key"),
        "{out}"
    );

    let wrong_jwt = sms_sender_doubles::supabase::make_test_jwt(
        &serde_json::json!({"role": "service_role", "exp": 4102444800u64, "ref": "other"}),
    );
    let (code, out, took) = check(&[("SUPABASE_SERVICE_KEY", &wrong_jwt)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(took < bound, "took {took:?}:\n{out}");
    assert!(
        out.contains("✗ Realtime:") && out.contains("Failed to validate JWT signature"),
        "{out}"
    );

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, out, took) = check(&[("SUPABASE_URL", &nowhere)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(took < bound, "took {took:?}:\n{out}");
    assert!(out.contains("✗ Realtime:"), "{out}");

    // A join refused by the server is decisive too.
    stack.supabase.set_join_error(Some(
        "TenantNotFound: Tenant with the given ID does not exist".into(),
    ));
    let (code, out, took) = check(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(took < bound, "took {took:?}:\n{out}");
    assert!(out.contains("TenantNotFound"), "{out}");
}
