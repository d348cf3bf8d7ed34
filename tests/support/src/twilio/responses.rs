//! What the double answers: the [`Outcome`] of a request, Twilio's JSON error bodies (and the
//! HTML an edge proxy sends), the answers faults give instead of doing the work, and the
//! Message resource as Twilio renders it.

use super::dates::rfc2822;
use super::{Fault, StoredMessage};
use crate::http::{Reply, Response};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The API version in every path and resource.
pub(super) const API_VERSION: &str = "2010-04-01";

/// What to do with one request.
pub(super) struct Outcome {
    /// `None` = close the connection without answering.
    pub(super) response: Option<Response>,
    /// The Twilio error code in the body, for the request record.
    pub(super) code: Option<u32>,
    /// Sleep this long after deciding (and storing) but before answering.
    pub(super) delay: Duration,
}

impl Outcome {
    pub(super) fn respond(response: Response) -> Outcome {
        Outcome {
            response: Some(response),
            code: None,
            delay: Duration::ZERO,
        }
    }

    pub(super) fn hangup() -> Outcome {
        Outcome {
            response: None,
            code: None,
            delay: Duration::ZERO,
        }
    }

    /// What the HTTP server should do: write the response, or hang up.
    pub(super) fn into_reply(self) -> Reply {
        match self.response {
            Some(response) => Reply::Respond(response),
            None => Reply::Hangup,
        }
    }
}

/// The Message resource as Twilio renders it: numbers as strings, RFC 2822 dates, relative URIs.
/// `now` = `None` renders the create response (the stored, initial state; `date_sent` null);
/// `Some` renders a read at that time (lifecycle applied). `redact` blanks the body.
pub(super) fn message_json(m: &StoredMessage, now: Option<SystemTime>, redact: bool) -> Value {
    let base = format!("/2010-04-01/Accounts/{}/Messages/{}", m.account_sid, m.sid);
    let (status, date_sent) = match now {
        Some(now) => (m.status_at(now), m.date_sent_at(now)),
        None => (m.status.as_str(), None),
    };
    json!({
        "account_sid": m.account_sid,
        "api_version": API_VERSION,
        "body": if redact { "" } else { m.body.as_str() },
        "date_created": rfc2822(m.date_created),
        "date_sent": date_sent.map(rfc2822),
        "date_updated": rfc2822(date_sent.unwrap_or(m.date_created)),
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": m.from,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": m.media_urls.len().to_string(),
        "num_segments": m.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": m.sid,
        "status": status,
        "subresource_uris": {
            "feedback": format!("{base}/Feedback.json"),
            "media": format!("{base}/Media.json"),
        },
        "to": m.to,
        "uri": format!("{base}.json"),
    })
}

/// Twilio's JSON error body with the given HTTP status and code.
pub(super) fn twilio_error(status: u16, code: u32, message: &str) -> Outcome {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    Outcome {
        response: Some(Response::json(status, &body)),
        code: Some(code),
        delay: Duration::ZERO,
    }
}

/// Add a `Retry-After` header (seconds) to an answer, if one is given.
fn with_retry_after(mut outcome: Outcome, retry_after: Option<u64>) -> Outcome {
    if let Some(secs) = retry_after {
        outcome.response = outcome
            .response
            .map(|r| r.header("Retry-After", secs.to_string()));
    }
    outcome
}

/// 404 / 20404, quoting the full path as Twilio does.
pub(super) fn not_found(path: &str) -> Outcome {
    twilio_error(
        404,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

/// 401 / 20003 with a Basic challenge: bad credentials, or another account in the path.
pub(super) fn unauthorized() -> Outcome {
    let body = json!({
        "code": 20003,
        "detail": "Your AccountSid or AuthToken was incorrect.",
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    });
    Outcome {
        response: Some(
            Response::json(401, &body).header("WWW-Authenticate", "Basic realm=\"Twilio API\""),
        ),
        code: Some(20003),
        delay: Duration::ZERO,
    }
}

/// A Twilio-side 5xx with Twilio's body (20500 internal error, 20503 unavailable).
pub(super) fn server_error(status: u16) -> Outcome {
    if status == 503 {
        twilio_error(503, 20503, "Service is unavailable. Please try again")
    } else {
        twilio_error(status, 20500, "An internal server error has occurred")
    }
}

/// What an edge proxy answers when the API behind it is gone: HTML, no Twilio code.
pub(super) fn non_json_error(status: u16) -> Outcome {
    let html = format!(
        "<html><head><title>{status} Error</title></head><body><h1>{status} Error</h1><p>The server encountered a temporary error.</p></body></html>"
    );
    Outcome::respond(
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(html),
    )
}

/// The answer a fault gives *instead of* doing the work (nothing is created): `None` for the
/// faults that let the work happen first (`ErrorAfterCreate`, `HangupAfterCreate`,
/// `DelayAfterCreate`).
pub(super) fn refusal(fault: &Fault) -> Option<Outcome> {
    match fault {
        Fault::Error {
            status,
            code,
            message,
            retry_after,
        } => Some(with_retry_after(
            twilio_error(*status, *code, message),
            *retry_after,
        )),
        Fault::TooManyRequests { retry_after } => Some(with_retry_after(
            twilio_error(429, 20429, "Too Many Requests"),
            *retry_after,
        )),
        Fault::NonJsonError { status } => Some(non_json_error(*status)),
        Fault::HangupBeforeCreate => Some(Outcome::hangup()),
        Fault::ErrorAfterCreate { .. } | Fault::HangupAfterCreate | Fault::DelayAfterCreate(_) => {
            None
        }
    }
}
