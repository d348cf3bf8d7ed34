//! What happens to every request, in order: it is recorded (in arrival order), counted
//! against the concurrency limit, delayed by the injected latency, authenticated (HTTP Basic
//! with the account's token or an API key), then routed to its resource — or answered 401, 404
//! or 405 the way Twilio answers them.

use super::create::is_sid;
use super::responses::{not_found, twilio_error, unauthorized, Outcome};
use super::state::Shared;
use super::{RecordedRequest, TwilioConfig};
use crate::http::{Handler, Reply, Request, Response};
use base64::Engine as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// The request handler the HTTP server calls; every route's behaviour hangs off it.
pub(super) struct TwilioHandler {
    pub(super) shared: Arc<Shared>,
}

/// The routes the double knows, each with the account SID taken from the path.
enum Route<'a> {
    Account(&'a str),
    Messages(&'a str),
    Message(&'a str, &'a str),
    IncomingPhoneNumbers(&'a str),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/2010-04-01/Accounts/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [account] => Some(Route::Account(account.strip_suffix(".json")?)),
            [account, "Messages.json"] => Some(Route::Messages(account)),
            [account, "IncomingPhoneNumbers.json"] => Some(Route::IncomingPhoneNumbers(account)),
            [account, "Messages", sid] => Some(Route::Message(account, sid.strip_suffix(".json")?)),
            _ => None,
        }
    }

    fn account(&self) -> &'a str {
        match self {
            Route::Account(a)
            | Route::Messages(a)
            | Route::Message(a, _)
            | Route::IncomingPhoneNumbers(a) => a,
        }
    }

    /// The methods this double serves on the route (for 405's `Allow`).
    fn allowed(&self) -> &'static str {
        match self {
            Route::Messages(_) => "GET, POST",
            _ => "GET",
        }
    }
}

impl Handler for TwilioHandler {
    fn handle(&self, req: Request, _stream: &TcpStream) -> Reply {
        let at = Instant::now();
        let content_type = req.header("content-type").map(str::to_string);
        // Twilio reads only form bodies; anything else is as if no parameter was sent (§1.3).
        let form = if content_type.as_deref().is_some_and(is_form_content_type) {
            req.form_pairs()
        } else {
            Vec::new()
        };
        let authorization_ok = credentials_ok(&self.shared.config, &req);
        let is_create =
            req.method == "POST" && matches!(Route::parse(&req.path), Some(Route::Messages(_)));
        // Reserve the record's slot now so `requests()` is in arrival order even when answers
        // overtake each other (latency, slow creates).
        let (slot, latency, over_limit) = {
            let mut state = self.shared.lock();
            if is_create {
                state.create_requests += 1;
            }
            let over_limit = state
                .concurrency_limit
                .is_some_and(|limit| state.in_progress >= limit);
            if over_limit {
                state.too_many += 1;
            } else {
                state.in_progress += 1;
                state.peak_in_progress = state.peak_in_progress.max(state.in_progress);
            }
            state.requests.push(RecordedRequest {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query_pairs(),
                form: form.clone(),
                status: None,
                twilio_code: None,
                at,
                authorization_ok,
                content_type,
            });
            let latency = if is_create {
                state.latency + state.create_latency
            } else {
                state.latency
            };
            (state.requests.len() - 1, latency, over_limit)
        };
        if over_limit {
            // Refused before any work: "never processed; always safe to retry".
            let outcome = twilio_error(429, 20429, "Too Many Requests");
            let mut state = self.shared.lock();
            let record = &mut state.requests[slot];
            record.status = Some(429);
            record.twilio_code = Some(20429);
            drop(state);
            return outcome.into_reply();
        }
        if !latency.is_zero() {
            thread::sleep(latency);
        }
        let outcome = self.route(&req, &form, authorization_ok, at);
        {
            let mut state = self.shared.lock();
            state.in_progress -= 1;
            let record = &mut state.requests[slot];
            record.status = outcome.response.as_ref().map(|r| r.status);
            record.twilio_code = outcome.code;
        }
        if !outcome.delay.is_zero() {
            thread::sleep(outcome.delay);
        }
        outcome.into_reply()
    }
}

impl TwilioHandler {
    /// Auth, then routing, then the resource. Auth comes first so an unauthenticated probe
    /// learns nothing about which resources exist.
    fn route(
        &self,
        req: &Request,
        form: &[(String, String)],
        authorization_ok: bool,
        received_at: Instant,
    ) -> Outcome {
        if let Some(sid) = req.path.strip_prefix("/v1/Services/") {
            if !authorization_ok {
                return unauthorized();
            }
            return self.messaging_service(sid);
        }
        if !req.path.starts_with("/2010-04-01/") {
            return not_found(&req.path);
        }
        if !authorization_ok {
            return unauthorized();
        }
        let Some(route) = Route::parse(&req.path) else {
            return not_found(&req.path);
        };
        let account = route.account();
        if !is_sid(account, "AC") {
            return not_found(&req.path);
        }
        // Credentials are only valid for the configured account; another (well-formed) account
        // in the path is a permission failure, as Twilio reports it (20003).
        if account != self.shared.config.account_sid {
            return unauthorized();
        }
        match (&route, req.method.as_str()) {
            (Route::Account(_), "GET") => {
                Outcome::respond(Response::json(200, &self.account_json()))
            }
            (Route::Messages(_), "POST") => self.create(form, received_at),
            (Route::Messages(_), "GET") => {
                let (fault, delay) = self.list_fault();
                let mut outcome = fault.unwrap_or_else(|| self.list(req));
                outcome.delay += delay;
                outcome
            }
            (Route::Message(_, sid), "GET") => self.fetch(sid, &req.path),
            (Route::IncomingPhoneNumbers(_), "GET") => self.incoming_phone_numbers(req),
            (route, _) => {
                let mut outcome = twilio_error(405, 20004, "Method not allowed");
                outcome.response = outcome.response.map(|r| r.header("Allow", route.allowed()));
                outcome
            }
        }
    }
}

/// The first non-empty value of `key` among decoded query or form pairs: Twilio treats an empty
/// value (`To=`) as if the parameter were absent.
pub(super) fn first_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Whether the Basic credentials are the account's token or one of its API keys.
fn credentials_ok(config: &TwilioConfig, req: &Request) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, pass)) = decoded.split_once(':') else {
        return false;
    };
    (user == config.account_sid && pass == config.auth_token)
        || config
            .api_keys
            .iter()
            .any(|(key, secret)| key == user && secret == pass)
}

fn is_form_content_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}
