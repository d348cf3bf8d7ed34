//! The liveness probe (`GET /livez`) fails only when the service's own loops stop turning: a
//! Realtime outage longer than the window keeps it 200 (and messages still go out through the
//! sweep), while a wedged Realtime task turns it 503 within the window.
//!
//! The wedge is made with a hold that exists only in debug builds: while the file named by
//! `SMS_SENDER_DEBUG_HOLD_REALTIME` exists, the Realtime task blocks its executor thread.
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;

/// [`SHORT_LIVENESS`], and a sweep every 2 s (it sends while Realtime is refused).
fn short() -> Vec<(&'static str, &'static str)> {
    with(SHORT_LIVENESS, &[("SWEEP_INTERVAL_SECS", "2")])
}

/// `/livez`: its status and body.
fn livez(svc: &Service) -> (u16, serde_json::Value) {
    let (status, body) = svc.get("/livez").expect("the port answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Realtime refused for twice the window: liveness stays 200 all along, `/health` reports the
/// lost link, and a message inserted meanwhile is sent by the periodic sweep.
#[test]
fn a_realtime_outage_never_fails_liveness() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553800001");
    let svc = stack.start_service(&sms_sender_bin!(), &short());
    assert_eq!(livez(&svc).0, 200, "{}", svc.log());
    stack
        .supabase
        .set_realtime_refuse(Some((503, "Realtime is down".into())));
    stack.supabase.realtime_drop_all();
    let id = stack.insert_outbound(&conv, "sent while Realtime is down");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(17) {
        let (status, body) = livez(&svc);
        assert_eq!(
            status,
            200,
            "alive while Realtime is refused: {body}\n{}",
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        stack.message(&id).status.as_deref(),
        Some("sent"),
        "the sweep sends\n{}",
        svc.log()
    );
    let (_, health) = svc.health().expect("health answers");
    assert_ne!(health["websocket"], "connected", "{health}");
    stack.supabase.set_realtime_refuse(None);
}

/// A Realtime task that stops turning (held in debug builds): `/livez` turns 503 naming
/// `realtime` once the window has passed, and 200 again once the task turns.
#[test]
fn a_wedged_realtime_task_fails_liveness() {
    let stack = Stack::start();
    let dir = TempDir::new("livez-hold");
    let hold = dir.0.join("hold-realtime");
    let hold_text = hold.to_string_lossy().to_string();
    let mut extra = short();
    extra.push(("SMS_SENDER_DEBUG_HOLD_REALTIME", hold_text.as_str()));
    let svc = stack.start_service(&sms_sender_bin!(), &extra);
    assert_eq!(livez(&svc).0, 200, "{}", svc.log());
    std::fs::write(&hold, b"").unwrap();
    let held = Instant::now();
    // Within the window it is still alive.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(livez(&svc).0, 200, "{}", svc.log());
    let stalled = wait_until(Duration::from_secs(15), || {
        let (status, body) = livez(&svc);
        status == 503 && body["stalled"] == serde_json::json!(["realtime"])
    });
    assert!(
        stalled,
        "a wedged Realtime task fails liveness: {:?}\n{}",
        livez(&svc),
        svc.log()
    );
    eprintln!(
        "livez: 503 {:.1} s after the hold (window 8 s)",
        held.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&hold).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || livez(&svc).0 == 200),
        "alive again once the task turns: {:?}",
        livez(&svc)
    );
}
