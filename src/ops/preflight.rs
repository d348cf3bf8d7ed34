//! `sms-sender check`: verify a configuration end to end before deploying it, without sending
//! an SMS. One line per check, `✓` or `✗` with the reason; the exit code is 0 only if all pass.
//!
//! Checks, in order (later ones still run when an earlier one fails, so one run shows every
//! problem): the configuration; Supabase REST (reads one row of `messages` with every column the
//! service uses and the embedded conversation phone number, so a wrong key, a missing table or
//! column, or a missing foreign key is named); Realtime (joins and waits for "Subscribed to
//! PostgreSQL"); Twilio credentials (fetches the account); the sender (the number is one of the
//! account's SMS-capable numbers, or the messaging service exists); Twilio's message list (which
//! reconciliation reads after an ambiguous create: test credentials, for one, cannot list).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, SmsSender};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::service;
use crate::supabase::realtime;
use crate::supabase::rest::RestError;
use crate::twilio::client::{SendError, Twilio};

/// How long the Realtime check waits for the subscription.
const REALTIME_LIMIT: Duration = Duration::from_secs(20);

/// The columns the service reads or writes, checked in one request.
const COLUMNS: &str =
    "id,conversation_id,content,direction,status,twilio_message_sid,sent_at,delivered_at,created_at,conversation:conversations(phone_number)";

/// One check's result line.
fn line(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "✓" } else { "✗" });
    ok
}

/// Run every check and print the results; `true` when all passed.
pub fn run(config: &Config) -> bool {
    line(true, "configuration", "all variables valid");
    let health = Health::new();
    let metrics = Arc::new(Metrics::default());
    let clients = match service::clients(config, &health, metrics) {
        Ok(c) => c,
        Err(e) => return line(false, "clients", &e.to_string()),
    };
    let mut ok = true;
    ok &= line_result("Supabase REST", rest_check(&clients.rest));
    ok &= line_result("Realtime", realtime_check(config));
    ok &= line_result("Twilio credentials", account_check(&clients.twilio));
    ok &= line_result("Twilio sender", sender_check(config, &clients.twilio));
    ok &= line_result("Twilio message list", list_check(&clients.twilio));
    ok
}

fn line_result(what: &str, result: Result<String, String>) -> bool {
    match result {
        Ok(detail) => line(true, what, &detail),
        Err(detail) => line(false, what, &detail),
    }
}

fn rest_check(rest: &crate::supabase::rest::Rest) -> Result<String, String> {
    match rest.probe_columns(COLUMNS) {
        Ok(rows) => Ok(format!(
            "messages table readable with every column used ({rows} row(s) sampled)"
        )),
        Err(RestError::Status {
            status: 401 | 403,
            message,
            ..
        }) => Err(format!(
            "the key was refused ({message}); use the service_role or sb_secret_ key"
        )),
        Err(RestError::Status {
            code: Some(code),
            message,
            ..
        }) if code == "PGRST205" || code == "42P01" => {
            Err(format!("table missing: {message}; run sql/schema.sql"))
        }
        Err(RestError::Status {
            code: Some(code),
            message,
            ..
        }) if code == "42703" || code == "PGRST200" => Err(format!(
            "schema mismatch: {message}; compare with sql/schema.sql"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn realtime_check(config: &Config) -> Result<String, String> {
    let started = Instant::now();
    match realtime::probe(&config.supabase, config.heartbeat, REALTIME_LIMIT) {
        Ok(()) => Ok(format!(
            "subscribed to INSERT and UPDATE on public.messages in {} ms",
            started.elapsed().as_millis()
        )),
        Err(e) => Err(e),
    }
}

fn describe(e: &SendError) -> String {
    match e {
        SendError::Rejected { status: 401, .. } => {
            "Twilio refused the credentials (20003): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
                .into()
        }
        other => other.to_string(),
    }
}

fn account_check(twilio: &Twilio) -> Result<String, String> {
    let account = twilio
        .get_account_resource(".json")
        .map_err(|e| describe(&e))?;
    let status = account
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("unknown");
    let name = account
        .get("friendly_name")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    if status != "active" {
        return Err(format!("the account {name:?} is {status}, not active"));
    }
    Ok(format!("account {name:?} is active"))
}

fn list_check(twilio: &Twilio) -> Result<String, String> {
    match twilio.get_account_resource("/Messages.json?PageSize=1") {
        Ok(_) => Ok("readable: an ambiguous create can be reconciled".into()),
        Err(e) => Err(format!(
            "{}: reconciliation cannot work, so a message whose create gets no clear answer \
             (timeout, 5xx) stays 'sending' instead of being re-sent or recorded",
            describe(&e)
        )),
    }
}

fn sender_check(config: &Config, twilio: &Twilio) -> Result<String, String> {
    match &config.twilio.sender {
        SmsSender::Number(number) => {
            let query = format!(
                "/IncomingPhoneNumbers.json?PhoneNumber={}",
                number.replace('+', "%2B")
            );
            let list = twilio
                .get_account_resource(&query)
                .map_err(|e| describe(&e))?;
            let numbers = list
                .get("incoming_phone_numbers")
                .and_then(|n| n.as_array())
                .cloned()
                .unwrap_or_default();
            let found = numbers
                .iter()
                .find(|n| n.get("phone_number").and_then(|p| p.as_str()) == Some(number));
            match found {
                None => Err(format!("{number} is not a number of this account")),
                Some(n)
                    if n.pointer("/capabilities/sms").and_then(|c| c.as_bool()) == Some(false) =>
                {
                    Err(format!(
                        "{number} belongs to the account but cannot send SMS"
                    ))
                }
                Some(_) => Ok(format!("{number} is an SMS-capable number of this account")),
            }
        }
        SmsSender::MessagingService(sid) => {
            let base = config
                .twilio
                .api_url
                .replacen("://api.", "://messaging.", 1);
            let service = twilio
                .get_json(&format!("{base}/v1/Services/{sid}"))
                .map_err(|e| match e {
                    SendError::Rejected { status: 404, .. } => {
                        format!("messaging service {sid} does not exist in this account")
                    }
                    other => describe(&other),
                })?;
            let name = service
                .get("friendly_name")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            Ok(format!("messaging service {sid} ({name:?}) exists"))
        }
    }
}
