//! Replayed status callbacks. Twilio's signature carries no timestamp, so a captured signed
//! callback can be posted again and again and still verifies. A replay must cost nothing: an
//! identical (SID, status) pair seen recently is answered 200 without being queued again; a
//! callback without our message id whose SID no row records is looked up once and dropped (not
//! retried for minutes); and no flood can take the room of a receipt that names its row, so a
//! genuine receipt arriving meanwhile is applied. `SMS_SENDER_BIN` selects another build, to show
//! these tests failing against it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sms_sender_doubles::prelude::*;
use sms_sender_doubles::twilio::{post_form, twilio_signature};

const WAIT: Duration = Duration::from_secs(20);

/// The service with delivery receipts on: the service and its `STATUS_CALLBACK_URL`.
fn start(stack: &Stack) -> (Service, String) {
    let binary = sms_sender_bin!();
    let (svc, _, url) = stack.start_service_with_receipts(Path::new(&binary), &[]);
    (svc, url)
}

/// A signed callback as an eavesdropper would have captured it: the URL Twilio posted to, the
/// form parameters, and the signature header.
#[derive(Clone)]
struct Captured {
    url: String,
    params: Vec<(String, String)>,
    signature: String,
}

impl Captured {
    /// A callback for `sid` with `status` to `url`, with every parameter Twilio sends, signed
    /// with the account's auth token.
    fn new(stack: &Stack, url: &str, sid: &str, status: &str) -> Captured {
        let config = stack.twilio.config();
        let params: Vec<(String, String)> = [
            ("MessageSid", sid),
            ("SmsSid", sid),
            ("MessageStatus", status),
            ("SmsStatus", status),
            ("AccountSid", config.account_sid.as_str()),
            ("To", RECIPIENT),
            ("From", FROM_NUMBER),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let signature = twilio_signature(&config.auth_token, url, &params);
        Captured {
            url: url.to_string(),
            params,
            signature,
        }
    }

    /// Post it once: the status answered (`None`: no answer).
    fn post(&self) -> Option<u16> {
        post_form(&self.url, &self.params, Some(&self.signature))
    }
}

/// A SID no row records (and Twilio never issued).
fn unknown_sid() -> String {
    format!("SM{:032x}", fastrand::u128(..))
}

/// Post `callbacks` round-robin `total` times from `threads` threads at once, counting posts in
/// `done`; returns how many got each answer (`0`: none).
fn flood(
    callbacks: Vec<Captured>,
    total: usize,
    threads: usize,
    done: Arc<AtomicUsize>,
) -> BTreeMap<u16, usize> {
    let callbacks = Arc::new(callbacks);
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (callbacks, next, done) = (callbacks.clone(), next.clone(), done.clone());
            std::thread::spawn(move || {
                let mut answers = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break answers;
                    }
                    let status = callbacks[i % callbacks.len()].post().unwrap_or(0);
                    *answers.entry(status).or_insert(0) += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for handle in handles {
        for (status, n) in handle.join().unwrap() {
            *all.entry(status).or_insert(0) += n;
        }
    }
    all
}

/// REST requests so far whose query or body names `needle` (a SID).
fn rest_calls_naming(stack: &Stack, needle: &str) -> usize {
    stack
        .supabase
        .rest_requests()
        .iter()
        .filter(|r| r.query.contains(needle) || r.body.contains(needle))
        .count()
}

/// The measured attack: one captured callback for a SID no row records (no message id of ours
/// in its URL: an older message's, or Twilio's console), replayed 1,000 times in under a second
/// from 8 connections. Every replay is answered 200, the SID is looked up once (one `PATCH`, one
/// read) and never again, one line says it was dropped, and a genuine receipt posted in the
/// middle of the flood is applied.
#[test]
fn a_replayed_callback_for_an_unknown_sid_is_looked_up_once() {
    let stack = Stack::start();
    let (svc, url) = start(&stack);
    let conv = stack.create_conversation(RECIPIENT);
    let a = stack.insert_outbound(&conv, "delivered during a replay flood");
    assert!(stack.wait_status_count("sent", 1, WAIT), "{}", svc.log());
    let sid_a = stack.message(&a).twilio_message_sid.unwrap();

    let unknown = unknown_sid();
    let captured = Captured::new(&stack, &url, &unknown, "delivered");
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let replay = {
        let done = done.clone();
        std::thread::spawn(move || flood(vec![captured], 1000, 8, done))
    };
    assert!(wait_until(WAIT, || done.load(Ordering::SeqCst) >= 300));
    let genuine = stack.twilio.send_status_callback(&sid_a, "delivered", None);
    let answers = replay.join().unwrap();
    let took = started.elapsed();
    // Everything is observed first, then judged, so a failing run still shows every figure.
    let applied = wait_until(WAIT, || {
        stack.message(&a).status.as_deref() == Some("delivered")
    });
    std::thread::sleep(Duration::from_secs(3));
    let calls = rest_calls_naming(&stack, &unknown);
    std::thread::sleep(Duration::from_secs(3));
    let calls_later = rest_calls_naming(&stack, &unknown);
    eprintln!(
        "1,000 replays in {took:?}: {answers:?}; genuine receipt: {genuine:?}, applied: \
         {applied}; REST requests naming the replayed SID: {calls} after 3 s, {calls_later} \
         after 6 s"
    );
    assert_eq!(
        genuine,
        Some(200),
        "the genuine receipt posted during the flood was refused\n{}",
        svc.log()
    );
    assert!(
        applied,
        "the genuine receipt was not applied: {:?}\n{}",
        stack.message(&a),
        svc.log()
    );
    assert_eq!(
        answers,
        BTreeMap::from([(200, 1000)]),
        "every replay is answered 200 (a 503 here is a real receipt lost at the same moment)"
    );
    assert!(
        calls <= 2,
        "the unknown SID cost {calls} REST requests (one PATCH and one read are enough)"
    );
    assert_eq!(calls_later, calls, "the unknown SID is still being retried");
    let log = svc.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&unknown)).collect();
    assert_eq!(lines.len(), 1, "one line names the dropped receipt:\n{log}");
    assert!(lines[0].contains("dropped"), "{}", lines[0]);
    assert_eq!(
        svc.metric("sms_sender_receipts_not_applied_total{reason=\"duplicate\"}"),
        Some(999.0)
    );
    assert_eq!(
        svc.metric("sms_sender_receipts_not_applied_total{reason=\"unmatched\"}"),
        Some(1.0)
    );
}

/// A genuine receipt naming its row, captured and replayed 1,000 times: applied once; the
/// replays are answered 200 and cost no REST request at all.
#[test]
fn a_replayed_receipt_naming_its_row_is_applied_once() {
    let stack = Stack::start();
    let (svc, url) = start(&stack);
    let conv = stack.create_conversation(RECIPIENT);
    let a = stack.insert_outbound(&conv, "delivered, then replayed");
    assert!(stack.wait_status_count("sent", 1, WAIT), "{}", svc.log());
    let sid = stack.message(&a).twilio_message_sid.unwrap();
    let before = rest_calls_naming(&stack, &sid);

    let captured = Captured::new(
        &stack,
        &format!("{url}?sms_sender_message={a}"),
        &sid,
        "delivered",
    );
    assert_eq!(captured.post(), Some(200));
    assert!(
        wait_until(WAIT, || stack.message(&a).status.as_deref()
            == Some("delivered")),
        "{}",
        svc.log()
    );
    let applied = rest_calls_naming(&stack, &sid) - before;
    let answers = flood(vec![captured], 1000, 8, Arc::new(AtomicUsize::new(0)));
    std::thread::sleep(Duration::from_secs(3));
    let replayed = rest_calls_naming(&stack, &sid) - before - applied;
    eprintln!(
        "1,000 replays: {answers:?}; REST requests naming the SID: {applied} to apply it, \
         {replayed} for the replays"
    );
    assert_eq!(answers, BTreeMap::from([(200, 1000)]));
    assert_eq!(
        replayed, 0,
        "replays of an applied receipt cost REST requests"
    );
    assert_eq!(stack.message(&a).status.as_deref(), Some("delivered"));
}

/// The inbox full of callbacks nobody can place (1,500 distinct SIDs no row records, with the
/// database slow: 200 ms a request) costs no receipt that names its row: it has room of its own
/// and is applied first. Callbacks beyond their bounded room are refused with 503.
#[test]
fn a_full_inbox_never_costs_a_receipt_naming_its_row() {
    let stack = Stack::start();
    let (svc, url) = start(&stack);
    let conv = stack.create_conversation(RECIPIENT);
    let a = stack.insert_outbound(&conv, "delivered behind a full inbox");
    assert!(stack.wait_status_count("sent", 1, WAIT), "{}", svc.log());
    let sid_a = stack.message(&a).twilio_message_sid.unwrap();

    stack.supabase.set_rest_latency(Duration::from_millis(200));
    let unplaced: Vec<Captured> = (0..1500)
        .map(|_| Captured::new(&stack, &url, &unknown_sid(), "delivered"))
        .collect();
    let answers = flood(unplaced, 1500, 8, Arc::new(AtomicUsize::new(0)));
    eprintln!("1,500 distinct unplaceable callbacks: {answers:?}");
    let genuine = stack.twilio.send_status_callback(&sid_a, "delivered", None);
    assert_eq!(
        genuine,
        Some(200),
        "the receipt naming its row was refused behind a full inbox\n{}",
        svc.log()
    );
    assert!(
        wait_until(WAIT, || stack.message(&a).status.as_deref()
            == Some("delivered")),
        "the receipt naming its row was not applied: {:?}",
        stack.message(&a)
    );
    assert!(
        answers.get(&200).copied().unwrap_or(0) <= 1100,
        "callbacks without our message id have bounded room: {answers:?}"
    );
    stack.supabase.set_rest_latency(Duration::ZERO);
}
