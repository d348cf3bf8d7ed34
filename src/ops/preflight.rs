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

use crate::clients::{self, Observers};
use crate::config::{Config, SmsSender};
use crate::http::Unobserved;
use crate::supabase::realtime::{self, ProbeError, Subscription};
use crate::supabase::rest::RestError;
use crate::supabase::rpc::ScaledMode;
use crate::twilio::client::{SendError, Twilio};

/// How long the Realtime check waits for the subscription.
const REALTIME_LIMIT: Duration = Duration::from_secs(20);

/// The columns the service reads or writes, checked in one request.
const COLUMNS: &str =
    "id,conversation_id,content,direction,status,twilio_message_sid,sent_at,delivered_at,created_at,conversation:conversations(phone_number)";

/// Why a check failed, in the words its line prints.
#[derive(Debug)]
enum Failed {
    /// Supabase refused the key (401/403), with its message.
    KeyRefused(String),
    /// The `messages` table does not exist.
    TableMissing(String),
    /// A column or the conversation relation is missing.
    SchemaMismatch(String),
    /// Any other REST failure.
    Rest(RestError),
    /// The Realtime probe did not subscribe.
    Realtime(ProbeError),
    /// A Twilio request failed.
    Twilio(SendError),
    /// The Twilio account exists but is not active.
    AccountInactive {
        /// Its friendly name.
        name: String,
        /// Its status.
        status: String,
    },
    /// The message list (read by reconciliation) cannot be read.
    ListUnreadable(SendError),
    /// `TWILIO_PHONE_NUMBER` is not a number of the account.
    NotOurNumber(String),
    /// `TWILIO_PHONE_NUMBER` belongs to the account but has no SMS capability.
    CannotSendSms(String),
    /// The messaging service does not exist in the account.
    NoMessagingService(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::KeyRefused(message) => write!(
                f,
                "the key was refused ({message}); use the service_role or sb_secret_ key"
            ),
            Failed::TableMissing(message) => {
                write!(f, "table missing: {message}; run sql/schema.sql")
            }
            Failed::SchemaMismatch(message) => {
                write!(f, "schema mismatch: {message}; compare with sql/schema.sql")
            }
            Failed::Rest(e) => write!(f, "{e}"),
            Failed::Realtime(e) => write!(f, "{e}"),
            Failed::Twilio(e) => f.write_str(&describe(e)),
            Failed::AccountInactive { name, status } => {
                write!(f, "the account {name:?} is {status}, not active")
            }
            Failed::ListUnreadable(e) => write!(
                f,
                "{}: reconciliation cannot work, so a message whose create gets no clear answer \
                 (timeout, 5xx) stays 'sending' instead of being re-sent or recorded",
                describe(e)
            ),
            Failed::NotOurNumber(number) => write!(f, "{number} is not a number of this account"),
            Failed::CannotSendSms(number) => {
                write!(f, "{number} belongs to the account but cannot send SMS")
            }
            Failed::NoMessagingService(sid) => {
                write!(f, "messaging service {sid} does not exist in this account")
            }
        }
    }
}

/// One check's result line.
fn line(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "✓" } else { "✗" });
    ok
}

/// Run every check and print the results; `true` when all passed.
pub fn run(config: &Config) -> bool {
    line(true, "configuration", "all variables valid");
    let observers = Observers {
        rest: Arc::new(Unobserved),
        twilio: Arc::new(Unobserved),
    };
    let clients = match clients::build(config, observers) {
        Ok(c) => c,
        Err(e) => return line(false, "clients", &e.to_string()),
    };
    let mut ok = true;
    ok &= line_result("Supabase REST", rest_check(&clients.rest));
    let mode = clients.rest.scaled_mode();
    ok &= line_result("Scaled mode", mode_check(&mode));
    let subscription = match mode {
        Ok(Some(mode)) => Subscription::Partitions {
            partitions: mode.partitions,
            me: String::new(),
            observe_only: true,
        },
        _ => Subscription::Changes,
    };
    ok &= line_result("Realtime", realtime_check(config, subscription));
    ok &= line_result("Twilio credentials", account_check(&clients.twilio));
    ok &= line_result("Twilio sender", sender_check(config, &clients.twilio));
    ok &= line_result("Twilio message list", list_check(&clients.twilio));
    ok
}

fn line_result(what: &str, result: Result<String, Failed>) -> bool {
    match result {
        Ok(detail) => line(true, what, &detail),
        Err(failed) => line(false, what, &failed.to_string()),
    }
}

fn rest_check(rest: &crate::supabase::rest::Rest) -> Result<String, Failed> {
    match rest.probe_columns(COLUMNS) {
        Ok(rows) => Ok(format!(
            "messages table readable with every column used ({rows} row(s) sampled)"
        )),
        Err(RestError::Status {
            status: 401 | 403,
            message,
            ..
        }) => Err(Failed::KeyRefused(message)),
        Err(RestError::Status {
            code: Some(code),
            message,
            ..
        }) if code == "PGRST205" || code == "42P01" => Err(Failed::TableMissing(message)),
        Err(RestError::Status {
            code: Some(code),
            message,
            ..
        }) if code == "42703" || code == "PGRST200" => Err(Failed::SchemaMismatch(message)),
        Err(e) => Err(Failed::Rest(e)),
    }
}

/// Whether the scaled mode's migration is installed; either answer is fine.
fn mode_check(mode: &Result<Option<ScaledMode>, RestError>) -> Result<String, Failed> {
    match mode {
        Ok(Some(mode)) => Ok(format!(
            "installed: {} partitions, wake-ups by Broadcast, one sweeper",
            mode.partitions
        )),
        Ok(None) => {
            Ok("not installed: the default mode (Postgres Changes to every instance)".into())
        }
        Err(e) => Err(Failed::Rest(e.clone())),
    }
}

fn realtime_check(config: &Config, subscription: Subscription) -> Result<String, Failed> {
    let started = Instant::now();
    let what = match &subscription {
        Subscription::Changes => "INSERT and UPDATE on public.messages".to_string(),
        Subscription::Partitions { partitions, .. } => {
            format!("the {partitions} partition channels (private Broadcast)")
        }
    };
    match realtime::probe(
        subscription,
        &config.supabase,
        config.heartbeat,
        REALTIME_LIMIT,
    ) {
        Ok(()) => Ok(format!(
            "subscribed to {what} in {} ms",
            started.elapsed().as_millis()
        )),
        Err(e) => Err(Failed::Realtime(e)),
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

fn account_check(twilio: &Twilio) -> Result<String, Failed> {
    let account = twilio
        .get_account_resource(".json")
        .map_err(Failed::Twilio)?;
    let status = account
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("unknown");
    let name = account
        .get("friendly_name")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    if status != "active" {
        return Err(Failed::AccountInactive {
            name: name.to_string(),
            status: status.to_string(),
        });
    }
    Ok(format!("account {name:?} is active"))
}

fn list_check(twilio: &Twilio) -> Result<String, Failed> {
    match twilio.get_account_resource("/Messages.json?PageSize=1") {
        Ok(_) => Ok("readable: an ambiguous create can be reconciled".into()),
        Err(e) => Err(Failed::ListUnreadable(e)),
    }
}

fn sender_check(config: &Config, twilio: &Twilio) -> Result<String, Failed> {
    match &config.twilio.sender {
        SmsSender::Number(number) => {
            let query = format!(
                "/IncomingPhoneNumbers.json?PhoneNumber={}",
                number.replace('+', "%2B")
            );
            let list = twilio
                .get_account_resource(&query)
                .map_err(Failed::Twilio)?;
            let numbers = list
                .get("incoming_phone_numbers")
                .and_then(|n| n.as_array())
                .cloned()
                .unwrap_or_default();
            let found = numbers
                .iter()
                .find(|n| n.get("phone_number").and_then(|p| p.as_str()) == Some(number));
            match found {
                None => Err(Failed::NotOurNumber(number.clone())),
                Some(n)
                    if n.pointer("/capabilities/sms").and_then(|c| c.as_bool()) == Some(false) =>
                {
                    Err(Failed::CannotSendSms(number.clone()))
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
                        Failed::NoMessagingService(sid.clone())
                    }
                    other => Failed::Twilio(other),
                })?;
            let name = service
                .get("friendly_name")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            Ok(format!("messaging service {sid} ({name:?}) exists"))
        }
    }
}
