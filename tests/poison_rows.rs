//! Poison rows cannot hurt other rows or the process: bodies that cannot be an SMS (9 MiB, just
//! over Twilio's 1,600 characters, absent) are failed without a Twilio call and without being
//! read; every other row still flows, orphan recovery keeps settling other rows while such a row
//! is `sending`, and the service's peak memory stays small.
//!
//! `SMS_SENDER_BIN` runs these tests against another build of the service.

use std::time::Duration;

use sms_sender_doubles::prelude::*;

/// The service's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Insert `n` outbound `pending` rows whose content is `sql_content` (an SQL expression, so that
/// megabytes never pass through this process); returns their ids.
fn insert_sql_content(
    stack: &Stack,
    conversation: &str,
    sql_content: &str,
    n: usize,
) -> Vec<String> {
    stack.db(|c| {
        let rows = c.query(
            &format!(
                "INSERT INTO messages (conversation_id, user_id, role, content, direction, status) \
                 SELECT c.id, c.user_id, 'assistant', {sql_content}, 'outbound', 'pending' \
                 FROM conversations c, generate_series(1, {n}) \
                 WHERE c.id = $1::text::uuid RETURNING id::text"
            ),
            &[&conversation],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })
}

/// Sixteen rows of 9 MiB, one of 1,601 characters, and an orphan of 9 MiB left `sending` by a
/// dead instance, among ordinary rows and an ordinary orphan. The ordinary ones are all sent
/// (the orphan reconciled and sent once), the poison ones `failed` with the reason logged, Twilio
/// never sees a body over 1,600 characters, and the service's peak RSS stays within 32 MiB.
#[test]
fn poison_rows_fail_alone_and_cost_no_memory() {
    let stack = Stack::start();
    let conv = stack.create_conversation("+15553700001");
    // A dead instance's claims, long expired: one ordinary, one of 9 MiB.
    let orphan = stack.insert_outbound(&conv, "an ordinary orphan");
    let big_orphan = insert_sql_content(&stack, &conv, "repeat('o', 9 * 1024 * 1024)", 1).remove(0);
    stack.sql(&format!(
        "UPDATE messages SET status = 'sending', sent_at = now() - interval '10 minutes' \
         WHERE id IN ('{orphan}', '{big_orphan}')"
    ));
    let svc = stack.start_service(
        &sms_sender_bin!(),
        &[("SWEEP_INTERVAL_SECS", "2"), ("ORPHAN_CHECK_SECS", "2")],
    );
    let huge = insert_sql_content(&stack, &conv, "repeat('x', 9 * 1024 * 1024)", 16);
    let just_over = insert_sql_content(&stack, &conv, "repeat('y', 1601)", 1).remove(0);
    let exactly = insert_sql_content(&stack, &conv, "repeat('é', 1600)", 1).remove(0);
    let bodies: Vec<String> = (0..20).map(|i| format!("ordinary row #{i}")).collect();
    let ordinary = stack.insert_many(&conv, &bodies);

    let poison: Vec<&String> = huge.iter().chain([&just_over, &big_orphan]).collect();
    let settled = wait_until(Duration::from_secs(45), || {
        let sent = stack.count_messages("status = 'sent'");
        let failed = stack.count_messages("status = 'failed'");
        sent == ordinary.len() as i64 + 2 && failed == poison.len() as i64
    });
    let peak = peak_rss_kib(svc.pid());
    assert!(
        settled,
        "ordinary rows and the orphan sent, poison rows failed: {:?}\n{}",
        stack.status_counts(),
        svc.log()
    );
    for id in ordinary.iter().chain([&orphan, &exactly]) {
        assert_eq!(stack.message(id).status.as_deref(), Some("sent"), "{id}");
    }
    for id in &poison {
        assert_eq!(stack.message(id).status.as_deref(), Some("failed"), "{id}");
    }
    let longest = stack
        .twilio
        .messages()
        .iter()
        .map(|m| m.requested_body.chars().count())
        .max();
    assert_eq!(longest, Some(1600), "Twilio never sees a longer body");
    assert_eq!(
        stack.twilio.create_requests(),
        ordinary.len() + 2,
        "one create per sendable row, none for poison rows\n{}",
        svc.log()
    );
    let log = svc.log();
    for id in &poison {
        assert!(
            log.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("failed without sending")),
            "the log says why {id} failed:\n{log}"
        );
    }
    let peak = peak.expect("the service's /proc status");
    eprintln!("poison rows: peak RSS {peak} KiB");
    assert!(peak <= 32 * 1024, "peak RSS {peak} KiB over 32 MiB");
    assert_eq!(stack.assert_exactly_once(&[&svc]), poison.len());
}
