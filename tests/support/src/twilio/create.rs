//! `POST …/Messages.json`: the faults that precede creation, Twilio's create-time validation
//! (its order decides the error code, and clients classify retries by that code), the hold,
//! storing under a fresh SID, then the faults that follow creation.

use super::responses::{message_json, refusal, server_error, twilio_error, Outcome};
use super::routes::{first_value, TwilioHandler};
use super::segments::count_segments;
use super::state::Shared;
use super::{Fault, StoredMessage, TwilioConfig, TRIAL_PREFIX};
use crate::http::Response;
use std::time::{Duration, Instant, SystemTime};

/// Twilio's documented body limit; counted in UTF-16 units because how Twilio counts astral
/// characters is undocumented and this is the stricter reading (docs/twilio.md §5.3).
const MAX_BODY_UTF16: usize = 1600;

impl TwilioHandler {
    /// `POST …/Messages.json`: faults that precede creation, validation, store, then faults
    /// that follow creation.
    pub(super) fn create(&self, form: &[(String, String)], received_at: Instant) -> Outcome {
        let fault = self.shared.lock().create_faults.next();
        if let Some(outcome) = fault.as_ref().and_then(refusal) {
            return outcome;
        }
        let new = match validate(&self.shared.config, form) {
            Ok(new) => new,
            Err((code, message)) => return twilio_error(400, code, &message),
        };
        self.shared.wait_while_held();
        let msg = store(&self.shared, new, SystemTime::now(), received_at, None);
        let created = Response::json(201, &message_json(&msg, None, false));
        match fault {
            Some(Fault::ErrorAfterCreate { status }) => server_error(status),
            Some(Fault::HangupAfterCreate) => Outcome::hangup(),
            Some(Fault::DelayAfterCreate(delay)) => Outcome {
                response: Some(created),
                code: None,
                delay,
            },
            _ => Outcome::respond(created),
        }
    }
}

/// A create request that passed validation.
pub(super) struct NewMessage {
    pub(super) to: String,
    pub(super) from: Option<String>,
    pub(super) messaging_service_sid: Option<String>,
    pub(super) body: String,
    pub(super) media_urls: Vec<String>,
    pub(super) status_callback: Option<String>,
}

/// Apply Twilio's create-time checks in the order docs/twilio.md gives (§8.2, §8.3): the first
/// failing check decides the code, because clients classify retries by that code.
fn validate(config: &TwilioConfig, form: &[(String, String)]) -> Result<NewMessage, (u32, String)> {
    // An empty value is as good as absent: Twilio answers `To=` like a missing `To`.
    let first = |key: &str| first_value(form, key).map(str::to_string);
    let media_urls: Vec<String> = form
        .iter()
        .filter(|(k, v)| k == "MediaUrl" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    let Some(to) = first("To") else {
        return Err((21604, "A 'To' phone number is required.".into()));
    };
    let from = first("From");
    let service = first("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return Err((21603, "A 'From' phone number is required.".into()));
    }
    let body = first("Body");
    if body.is_none() && media_urls.is_empty() && first("ContentSid").is_none() {
        return Err((21602, "Message body is required.".into()));
    }
    let body = body.unwrap_or_default();
    if body.encode_utf16().count() > MAX_BODY_UTF16 {
        return Err((
            21617,
            "The concatenated message body exceeds the 1600 character limit.".into(),
        ));
    }
    if !is_e164(&to) || to == "+15005550001" {
        return Err((
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    if let Some(from) = &from {
        let magic_applies = config.owned_numbers.is_empty() || config.owned_numbers.contains(from);
        if !(is_e164(from) || is_alphanumeric_sender(from) || is_short_code(from))
            || (magic_applies && from == "+15005550001")
        {
            return Err((
                21212,
                format!(
                    "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
                ),
            ));
        }
        if (magic_applies && from == "+15005550007")
            || (!config.owned_numbers.is_empty() && !config.owned_numbers.contains(from))
        {
            return Err((
                21606,
                format!(
                    "The 'From' phone number provided ({from}) is not a valid message-capable Twilio phone number for this destination."
                ),
            ));
        }
        if magic_applies && from == "+15005550008" {
            return Err((
                21611,
                "This 'From' number has exceeded the maximum number of queued messages".into(),
            ));
        }
    }
    if let Some(service) = &service {
        let known =
            config.messaging_services.is_empty() || config.messaging_services.contains(service);
        if !is_sid(service, "MG") || !known {
            return Err((
                21701,
                format!("The Messaging Service Sid {service} is invalid."),
            ));
        }
    }
    // Destination-specific refusals come last: they need a valid sender to be meaningful.
    let from_text = from.as_deref().unwrap_or("");
    let magic_to = match to.as_str() {
        "+15005550002" => Some((
            21612,
            format!(
                "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from_text} via SMS."
            ),
        )),
        "+15005550003" => Some((
            21408,
            format!("Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."),
        )),
        "+15005550004" => Some((21610, "Attempt to send to unsubscribed recipient".into())),
        "+15005550009" => Some((21614, format!("'To' number {to} is not a valid mobile number"))),
        _ => None,
    };
    if let Some(err) = magic_to {
        return Err(err);
    }
    Ok(NewMessage {
        to,
        from,
        messaging_service_sid: service,
        body,
        media_urls,
        status_callback: first("StatusCallback"),
    })
}

/// Store a validated message under a fresh SID and wake `wait_for_messages`. `status` overrides
/// the initial one (`queued`, or `accepted` with a Messaging Service) for seeded history, which
/// also gets no send delay and no visibility lag. The account settings (trial, send delay,
/// visibility lag) in effect now are fixed into the message.
pub(super) fn store(
    shared: &Shared,
    new: NewMessage,
    date_created: SystemTime,
    received_at: Instant,
    status: Option<&str>,
) -> StoredMessage {
    let seeded = status.is_some();
    let (trial, send_delay, lag) = {
        let state = shared.lock();
        (state.trial, state.send_delay, state.visibility_lag)
    };
    let body = if trial {
        format!("{TRIAL_PREFIX}{}", new.body)
    } else {
        new.body.clone()
    };
    let via_service_only = new.from.is_none();
    let num_segments = if via_service_only {
        // No sender (hence no encoding decision) yet: Twilio reports "0" (§1.5).
        0
    } else {
        count_segments(&body)
    };
    let (sends_at, lag) = if seeded {
        (date_created, Duration::ZERO)
    } else {
        (date_created + send_delay, lag)
    };
    let prefix = if new.media_urls.is_empty() {
        "SM"
    } else {
        "MM"
    };
    let mut state = shared.lock();
    let sid = loop {
        let candidate = format!("{prefix}{}", random_hex32());
        if !state.by_sid.contains_key(&candidate) {
            break candidate;
        }
    };
    let msg = StoredMessage {
        sid: sid.clone(),
        account_sid: shared.config.account_sid.clone(),
        to: new.to,
        from: new.from,
        status: status
            .unwrap_or(if new.messaging_service_sid.is_some() {
                "accepted"
            } else {
                "queued"
            })
            .to_string(),
        messaging_service_sid: new.messaging_service_sid,
        body,
        requested_body: new.body,
        status_callback: new.status_callback,
        num_segments,
        media_urls: new.media_urls,
        date_created,
        sends_at,
        received_at,
        visible_at: Instant::now() + lag,
    };
    let idx = state.messages.len();
    state.messages.push(msg.clone());
    state.by_sid.insert(sid, idx);
    drop(state);
    shared.stored.notify_all();
    msg
}

/// `^<prefix>[0-9a-fA-F]{32}$`.
pub(super) fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `^\+[1-9]\d{7,14}$`.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// An alphanumeric sender ID: up to 11 of letters, digits, spaces and `+ - _ &`, at least one letter.
fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'+' | b'-' | b'_' | b'&'))
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A short code: 3 to 8 digits (5–6 in the US, shorter or longer elsewhere).
fn is_short_code(s: &str) -> bool {
    (3..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// 32 random lowercase hex digits, the body of a fresh SID.
fn random_hex32() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("a hex digit"))
        .collect()
}
