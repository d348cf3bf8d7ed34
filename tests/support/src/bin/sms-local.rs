//! `sms-local`: run the real sms-sender binary in a complete local world (throwaway PostgreSQL,
//! Supabase double, Twilio double), for people without Supabase or Twilio accounts.
//!
//! - `sms-local demo BINARY`: queue a few messages, show what Twilio received and the final rows.
//! - `sms-local smoke BINARY`: run the binary the way the container image does (uid 1001 when
//!   root, empty environment but its config, a read-only working directory holding only the binary
//!   and a CA bundle) and check: health answers, one message is delivered, SIGTERM exits 0.
//!
//! Exit code 0 when everything went as expected, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sms_sender_doubles::harness::{wait_until, Launch, Service, Stack, TempDir};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cmd), Some(binary)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sms-local demo|smoke PATH-TO-sms-sender");
        return ExitCode::from(2);
    };
    let Ok(binary) = PathBuf::from(binary).canonicalize() else {
        eprintln!("sms-local: {binary} does not exist (run `make build` first)");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "demo" => demo(&binary),
        "smoke" => smoke(&binary),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

fn step(text: &str) {
    println!("==> {text}");
}

fn demo(binary: &Path) -> Result<(), String> {
    step("starting a throwaway PostgreSQL with sql/schema.sql, the Supabase double and the Twilio double");
    let stack = Stack::start();
    println!("    PostgreSQL   127.0.0.1:{}", stack.pg.port());
    println!(
        "    Supabase     {}  (REST /rest/v1, Realtime /realtime/v1/websocket)",
        stack.supabase.url()
    );
    println!("    Twilio       {}", stack.twilio.url());

    step(&format!("starting {}", binary.display()));
    let mut env = stack.service_env();
    env.push(("RETRY_BACKOFF_MS".into(), "200".into()));
    let mut svc = Service::start(binary, env);
    if !svc.wait_subscribed(Duration::from_secs(20)) {
        return Err(format!(
            "the service did not subscribe; its log:\n{}",
            svc.log()
        ));
    }
    let (_, health) = svc.health().ok_or("health did not answer")?;
    println!("    GET /health -> {health}");

    step("inserting outbound messages (status 'pending'; the trigger queues them)");
    let alice = stack.create_conversation("+15551230001");
    let bob = stack.create_conversation("+447700900123");
    let typo = stack.create_conversation("555-0100");
    let started = Instant::now();
    let ids = [
        stack.insert_outbound(&alice, "Hi Alice, your table for 4 is confirmed for 8pm."),
        stack.insert_outbound(&bob, "Hello Bob — the boat leaves at 10:00 from pier 3. ⛵"),
        stack.insert_outbound(&alice, "Reply STOP to opt out."),
        stack.insert_outbound(&typo, "This one has a malformed phone number."),
    ];
    let settled = wait_until(Duration::from_secs(20), || {
        let c = stack.status_counts();
        !c.contains_key("queued_for_send")
            && !c.contains_key("sending")
            && !c.contains_key("pending")
    });
    if !settled {
        return Err(format!(
            "messages did not settle: {:?}\n{}",
            stack.status_counts(),
            svc.log()
        ));
    }
    println!("    settled in {} ms", started.elapsed().as_millis());

    step("what the Twilio double received");
    for m in stack.twilio.messages() {
        println!(
            "    {}  To={}  From={}  Body={:?}",
            m.sid,
            m.to,
            m.from.as_deref().unwrap_or("-"),
            m.body
        );
    }
    step("final rows in public.messages");
    for id in &ids {
        let r = stack.message(id);
        println!(
            "    {}  status={:<7} sid={}  sent_at={}",
            r.id,
            r.status.as_deref().unwrap_or("NULL"),
            r.twilio_message_sid.as_deref().unwrap_or("-"),
            r.sent_at.as_deref().unwrap_or("-")
        );
    }

    step("stopping the service with SIGTERM");
    svc.terminate();
    let status = svc
        .wait_exit(Duration::from_secs(10))
        .ok_or("did not exit within 10 s")?;
    println!("    {status}");
    step("the service's log");
    for line in svc.log().lines() {
        println!("    {line}");
    }
    let sent = stack.status_counts().get("sent").copied().unwrap_or(0);
    if sent != 3 || !status.success() {
        return Err(format!(
            "expected 3 sent and a clean exit, got {sent} and {status}"
        ));
    }
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        println!("    ok   {what}");
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn smoke(binary: &Path) -> Result<(), String> {
    let is_root = unsafe_free_geteuid() == 0;
    step("starting PostgreSQL and the doubles");
    let stack = Stack::start();

    step("preparing the image-like directory: only the binary and a CA bundle, not writable");
    let dir = TempDir::new("sms-smoke-root");
    let exe = dir.0.join("sms-sender");
    std::fs::copy(binary, &exe).map_err(|e| format!("copy binary: {e}"))?;
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .ok_or("no CA bundle on this machine (apt-get install ca-certificates)")?;
    std::fs::copy(bundle, dir.0.join("ca-certificates.crt"))
        .map_err(|e| format!("copy CA: {e}"))?;
    set_mode(&exe, 0o755)?;
    set_mode(&dir.0.join("ca-certificates.crt"), 0o644)?;
    set_mode(&dir.0, 0o755)?;
    let entries: Vec<String> = std::fs::read_dir(&dir.0)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    println!("    {}: {:?}", dir.0.display(), entries);

    let uid_gid = if is_root {
        println!("    running as uid 1001, gid 1001 (like USER 1001:1001 in the image)");
        Some((1001, 1001))
    } else {
        println!("    not root: running as the current user (cannot switch to uid 1001)");
        None
    };
    // As the image does (Dockerfile.distroless): the bundle is named, not found in the directory.
    let mut env = stack.service_env();
    env.push((
        "SSL_CERT_FILE".into(),
        dir.0.join("ca-certificates.crt").display().to_string(),
    ));
    let mut svc = Service::launch(Launch {
        binary: &exe,
        env,
        cwd: Some(&dir.0),
        uid_gid,
    });

    step("checks");
    let health_ok = wait_until(Duration::from_secs(10), || {
        svc.health().is_some_and(|(s, _)| s == 200)
    });
    check(health_ok, "GET /health answers 200").map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    check(
        svc.wait_subscribed(Duration::from_secs(20)),
        "subscribed to Realtime",
    )
    .map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    let conv = stack.create_conversation("+15551234567");
    let id = stack.insert_outbound(&conv, "smoke test message");
    let delivered = stack.wait_status_count("sent", 1, Duration::from_secs(20));
    check(
        delivered,
        "one message delivered to the Twilio double and recorded 'sent'",
    )
    .map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    let row = stack.message(&id);
    check(
        stack
            .twilio
            .messages()
            .first()
            .is_some_and(|m| Some(&m.sid) == row.twilio_message_sid.as_ref()),
        "the row carries the Twilio SID",
    )?;
    svc.terminate();
    let status = svc.wait_exit(Duration::from_secs(10));
    check(
        status.is_some_and(|s| s.code() == Some(0)),
        "SIGTERM: exit code 0 within 10 s",
    )
    .map_err(|e| format!("{e} (got {status:?}); log:\n{}", svc.log()))?;
    let log = svc.log();
    check(
        !log.contains(&stack.twilio.config().auth_token),
        "no secret in the log",
    )?;
    println!("smoke: all checks passed");
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn unsafe_free_geteuid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
