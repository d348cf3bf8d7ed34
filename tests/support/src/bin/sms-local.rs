//! `sms-local`: run the real sms-sender binary in a complete local world (throwaway PostgreSQL,
//! Supabase double, Twilio double), for people without Supabase or Twilio accounts.
//!
//! - `sms-local demo BINARY`: queue a few messages, show what Twilio received and the final rows.
//! - `sms-local smoke BINARY [--runner CMD…]`: run the binary the way the container image does
//!   (uid 1001 when root, empty environment but its config, a read-only working directory holding
//!   only the binary and a CA bundle) and check: health answers, one message is delivered,
//!   SIGTERM exits 0. `--runner qemu-aarch64-static` runs another architecture's build.
//! - `sms-local image-smoke BUNDLE`: run the built image itself, unpacked by `umoci unpack` into
//!   an OCI runtime bundle (`rootfs/` and `config.json`): its entrypoint, user and environment,
//!   as PID 1 of its own PID and mount namespaces, chrooted in its root (root only), and check the
//!   same.
//!
//! Exit code 0 when everything went as expected, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sms_sender_doubles::harness::{wait_until, Launch, Service, Stack, TempDir};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cmd), Some(binary)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sms-local demo|smoke PATH-TO-sms-sender [--runner CMD…] | image-smoke BUNDLE-DIR");
        return ExitCode::from(2);
    };
    let Ok(binary) = PathBuf::from(binary).canonicalize() else {
        eprintln!("sms-local: {binary} does not exist (run `make build` first)");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "demo" => demo(&binary),
        "smoke" => match args.get(3).map(String::as_str) {
            None => smoke(&binary, &[]),
            Some("--runner") if args.len() > 4 => smoke(&binary, &args[4..]),
            Some(other) => Err(format!("unknown option {other:?}")),
        },
        "image-smoke" => image_smoke(&binary),
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

fn smoke(binary: &Path, runner: &[String]) -> Result<(), String> {
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
    if !runner.is_empty() {
        println!("    run through: {}", runner.join(" "));
    }

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
    let svc = Service::launch(Launch {
        binary: &exe,
        env,
        cwd: Some(&dir.0),
        uid_gid,
        runner: runner.to_vec(),
        runner_forks: false,
    });
    service_checks(&stack, svc)?;
    println!("smoke: all checks passed");
    Ok(())
}

/// What an OCI runtime bundle (`umoci unpack`) says about how to run the image.
struct Bundle {
    rootfs: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
    cwd: String,
}

fn read_bundle(dir: &Path) -> Result<Bundle, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run `make image` first)", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let process = &config["process"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let args = strings(&process["args"]);
    if args.is_empty() {
        return Err("the image has no entrypoint (process.args is empty)".into());
    }
    let env = strings(&process["env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let id = |key: &str| {
        process["user"][key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(format!("process.user.{key} missing"))
    };
    let root = config["root"]["path"].as_str().unwrap_or("rootfs");
    Ok(Bundle {
        rootfs: dir.join(root),
        args,
        env,
        uid: id("uid")?,
        gid: id("gid")?,
        cwd: process["cwd"].as_str().unwrap_or("/").to_string(),
    })
}

/// Sets up what a container runtime gives every container (its own PID and mount namespaces,
/// `/proc`, a `/dev` with the usual nodes), then runs the entrypoint chrooted in the image's
/// root as the image's user, with exactly the environment it was given: PID 1 in its namespace,
/// as under Docker or Cloud Run.
const CONTAINER_SCRIPT: &str = r#"set -e
root=$1; user=$2; shift 2
/bin/mkdir -p "$root/proc" "$root/dev"
/bin/mount -t proc proc "$root/proc"
/bin/mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom; do
  : > "$root/dev/$node"
  /bin/mount --bind "/dev/$node" "$root/dev/$node"
done
exec /usr/sbin/chroot --userspec="$user" "$root" "$@"
"#;

fn image_smoke(bundle_dir: &Path) -> Result<(), String> {
    if unsafe_free_geteuid() != 0 {
        return Err(
            "image-smoke runs the image's root with chroot and namespaces: run it as root".into(),
        );
    }
    let bundle = read_bundle(bundle_dir)?;
    step(&format!(
        "the image, as unpacked in {}",
        bundle_dir.display()
    ));
    println!("    entrypoint {:?}", bundle.args);
    println!("    user       {}:{}", bundle.uid, bundle.gid);
    println!("    cwd        {}", bundle.cwd);
    for (k, v) in &bundle.env {
        println!("    env        {k}={v}");
    }
    let mut files = Vec::new();
    list_files(&bundle.rootfs, &bundle.rootfs, &mut files)?;
    for f in &files {
        println!("    file       {f}");
    }
    step("starting PostgreSQL and the doubles");
    let stack = Stack::start();
    // The image's environment, then the service's own variables (a runtime adds PORT too).
    let mut env = bundle.env.clone();
    for (k, v) in stack.service_env() {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    let port = sms_sender_doubles::harness::free_port().to_string();
    env.retain(|(key, _)| key != "PORT");
    env.push(("PORT".into(), port));
    let (entrypoint, args) = bundle.args.split_first().expect("checked non-empty");
    let mut runner: Vec<String> = [
        "/usr/bin/unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        "/bin/sh",
        "-c",
        CONTAINER_SCRIPT,
        "container",
    ]
    .map(String::from)
    .to_vec();
    runner.push(bundle.rootfs.display().to_string());
    runner.push(format!("{}:{}", bundle.uid, bundle.gid));
    // The entrypoint is a path inside the image: the launcher appends it after the runner.
    let entry = PathBuf::from(entrypoint);
    step(&format!(
        "running {entrypoint} as {}:{} in its own PID and mount namespaces",
        bundle.uid, bundle.gid
    ));
    if !args.is_empty() {
        return Err(format!(
            "the entrypoint has arguments {args:?}; the service takes none"
        ));
    }
    if bundle.cwd != "/" {
        return Err(format!(
            "working directory {} (chroot starts in /)",
            bundle.cwd
        ));
    }
    let svc = Service::launch(Launch {
        binary: &entry,
        env,
        cwd: Some(bundle_dir),
        uid_gid: None,
        runner,
        runner_forks: true,
    });
    let process = wait_until(Duration::from_secs(10), || svc.health().is_some())
        .then(|| std::fs::read_to_string(format!("/proc/{}/status", svc.service_pid())))
        .and_then(Result::ok)
        .unwrap_or_default();
    let field = |name: &str| {
        process
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (uid, gid, nspid) = (field("Uid:"), field("Gid:"), field("NSpid:"));
    println!("    process    Uid {uid:?} Gid {gid:?} NSpid {nspid:?}");
    let user = bundle.uid.to_string();
    let group = bundle.gid.to_string();
    check(
        uid.iter().all(|u| *u == user) && gid.iter().all(|g| *g == group) && !uid.is_empty(),
        &format!("the service runs as {user}:{group}, as the image says"),
    )
    .map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    check(
        nspid.last() == Some(&"1"),
        "the service is PID 1 in its namespace, as in a container",
    )?;
    service_checks(&stack, svc)?;
    println!("image-smoke: all checks passed");
    Ok(())
}

/// Every file under `dir` (relative to `root`), with its mode and owner.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let meta = entry.metadata().map_err(|e| e.to_string())?;
        let path = entry.path();
        if meta.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.push(format!(
                "/{} {:o} {}:{} {} bytes",
                path.strip_prefix(root).unwrap_or(&path).display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                meta.len()
            ));
        }
    }
    Ok(())
}

/// What every smoke test checks of a running service: health answers, it subscribes, one
/// message is delivered and recorded with its SID, SIGTERM ends it with code 0 within the
/// shutdown deadline, and no secret reached the log.
fn service_checks(stack: &Stack, mut svc: Service) -> Result<(), String> {
    step("checks");
    let health_ok = wait_until(Duration::from_secs(10), || {
        svc.health().is_some_and(|(s, _)| s == 200)
    });
    check(health_ok, "GET /health answers 200").map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    check(
        svc.wait_subscribed(Duration::from_secs(30)),
        "subscribed to Realtime",
    )
    .map_err(|e| format!("{e}; log:\n{}", svc.log()))?;
    let conv = stack.create_conversation("+15551234567");
    let id = stack.insert_outbound(&conv, "smoke test message");
    let delivered = stack.wait_status_count("sent", 1, Duration::from_secs(30));
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
    let stopped = Instant::now();
    svc.terminate();
    let status = svc.wait_exit(Duration::from_secs(10));
    check(
        status.is_some_and(|s| s.code() == Some(0)),
        &format!(
            "SIGTERM: exit code 0 within 10 s (took {} ms)",
            stopped.elapsed().as_millis()
        ),
    )
    .map_err(|e| format!("{e} (got {status:?}); log:\n{}", svc.log()))?;
    let log = svc.log();
    check(
        !log.contains(&stack.twilio.config().auth_token),
        "no secret in the log",
    )?;
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
