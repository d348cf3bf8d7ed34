//! The Twilio Messages API client: one create request per call, and the reading of its answer.
//!
//! `POST {TWILIO_API_URL}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded (`+` sent as
//! `%2B`), HTTP Basic auth, `.json` so errors come back as `{code, message, more_info, status}`.
//! It never retries by itself: create is not idempotent, so whether to try again is decided by
//! the caller (the delivery retry rules) from the facts this module reports (was the request
//! written? what did Twilio answer?).
//!
//! Twilio has no idempotency key, so after an ambiguous failure the only way to learn whether a
//! message was created is the list endpoint: [`Twilio::list_outbound`] reads it; deciding what the
//! list means is the caller's (delivery's reconciliation). What each request came to is told to
//! an [`Observer`] (the wiring counts it on `/metrics`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::config::{SmsSender, TwilioConfig};
use crate::http::{describe_transport, read_body, Agent, Exchange, Observer};
use crate::message::MessageId;
use crate::redact;
use crate::timestamp;
use crate::twilio::receipts;

/// Twilio accepted the message (HTTP 201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The Message SID (`SM…`/`MM…`).
    pub sid: String,
    /// Initial status (`queued`, `accepted`, …).
    pub status: String,
}

/// Why a send did not produce an [`Accepted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection was made: Twilio never saw the request.
    NotSent(String),
    /// Timeout or connection loss after the request may have been written: the message may exist.
    NoResponse(String),
    /// Twilio answered with an error status.
    Rejected {
        /// HTTP status.
        status: u16,
        /// Twilio error code, when the body had one.
        code: Option<u32>,
        /// Twilio's message, or the start of a non-JSON body.
        message: String,
        /// `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// A success status whose body we could not read: the message exists, its SID is unknown.
    Unreadable {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
}

impl std::error::Error for SendError {}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotSent(e) => write!(f, "Twilio not reached: {e}"),
            SendError::NoResponse(e) => write!(f, "no answer from Twilio: {e}"),
            SendError::Rejected {
                status,
                code: Some(code),
                message,
                ..
            } => {
                write!(f, "HTTP {status}, Twilio code {code}: {message}")
            }
            SendError::Rejected {
                status,
                code: None,
                message,
                ..
            } => {
                write!(f, "HTTP {status}: {message}")
            }
            SendError::Unreadable { status, detail } => {
                write!(f, "HTTP {status} with an unreadable body: {detail}")
            }
        }
    }
}

impl SendError {
    /// The HTTP status, when Twilio answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            SendError::Rejected { status, .. } | SendError::Unreadable { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The Twilio error code, when the answer had one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            SendError::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

/// A Twilio client, cheap to clone (connections are pooled and kept alive).
#[derive(Clone)]
pub struct Twilio {
    agent: Agent,
    api_url: Arc<str>,
    messages_url: Arc<str>,
    authorization: Arc<str>,
    sender: SmsSender,
    /// Sent as `StatusCallback` when delivery receipts are on.
    status_callback: Option<Arc<str>>,
    /// Told what every request came to.
    observer: Arc<dyn Observer>,
}

/// A message in Twilio's list that may be ours (recipient, sender and time already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its SID.
    pub sid: String,
    /// The body Twilio stores (may be trial-prefixed, normalised, redacted or absent).
    pub body: Option<String>,
    /// When Twilio created it.
    pub created: SystemTime,
}

/// The messages of a [`Twilio::list_outbound`], newest first.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The matching messages.
    pub messages: Vec<Listed>,
    /// Whether the list was read back to the start of the window (not cut at the page limit).
    pub complete: bool,
}

/// Why a list could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// Twilio answered with an error, or not at all.
    Twilio(SendError),
    /// The lease leaves no time for another request.
    NoTime,
}

/// One page of `GET …/Messages.json`, reduced to what reconciliation reads.
#[derive(Debug, Deserialize)]
pub struct ListPage {
    /// The messages on this page (newest first).
    #[serde(default)]
    pub messages: Vec<ListedMessage>,
    /// Host-relative URI of the next page, `null` on the last.
    #[serde(default)]
    pub next_page_uri: Option<String>,
}

/// A listed message; every field is optional because Twilio marks them all nullable.
#[derive(Debug, Deserialize)]
pub struct ListedMessage {
    /// SID.
    #[serde(default)]
    pub sid: Option<String>,
    /// Body (may be redacted or discarded by retention settings).
    #[serde(default)]
    pub body: Option<String>,
    /// `outbound-api` for REST-created messages.
    #[serde(default)]
    pub direction: Option<String>,
    /// RFC 2822 creation time.
    #[serde(default)]
    pub date_created: Option<String>,
    /// The service the message went through, if any.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

/// Read a list page.
pub fn parse_list_page(text: &str) -> Result<ListPage, String> {
    serde_json::from_str(text).map_err(|e| redact::scrub(&format!("unreadable message list: {e}")))
}

/// What Twilio answered to a request that reached it.
enum Answer {
    /// 2xx with its body.
    Success { status: u16, text: String },
    /// An error status with its body and `Retry-After` (in seconds), if any.
    Failure {
        status: u16,
        text: String,
        retry_after: Option<Duration>,
    },
}

/// How far past the window a list is read before it is taken to have ended: Twilio orders lists
/// by SID, which is close to, but not exactly, the order of `date_created`.
pub const ORDER_SLACK: Duration = Duration::from_secs(60);

/// At most this many pages are read per lookup (100 messages each).
const MAX_LIST_PAGES: usize = 20;

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

impl Twilio {
    /// A client for `config` using `agent` (timeouts and pool are the agent's), asking for
    /// delivery receipts at `status_callback` when given, telling `observer` what every request
    /// came to.
    pub fn new(
        config: &TwilioConfig,
        agent: Agent,
        status_callback: Option<&str>,
        observer: Arc<dyn Observer>,
    ) -> Twilio {
        let account = config.account_sid.expose();
        Twilio {
            agent,
            api_url: config.api_url.as_str().into(),
            messages_url: format!(
                "{}/2010-04-01/Accounts/{account}/Messages.json",
                config.api_url
            )
            .into(),
            // The same value `redact::register_config` registers as a secret.
            authorization: format!(
                "Basic {}",
                redact::basic_credential(account, config.auth_token.expose())
            )
            .into(),
            sender: config.sender.clone(),
            status_callback: status_callback.map(Into::into),
            observer,
        }
    }

    /// Close the pooled idle connections ([`Agent::release_idle`]).
    pub fn release_idle_connections(&self) {
        self.agent.release_idle();
    }

    /// `GET` a path under the account (`/…json`), authenticated; for the `check` command.
    pub fn get_account_resource(
        &self,
        path_and_query: &str,
    ) -> Result<serde_json::Value, SendError> {
        let url = self
            .messages_url
            .trim_end_matches("/Messages.json")
            .to_string()
            + path_and_query;
        self.get_json(&url)
    }

    /// `GET` any URL with our credentials and read a JSON answer.
    pub fn get_json(&self, url: &str) -> Result<serde_json::Value, SendError> {
        match self.execute(self.agent.current().get(url), None)? {
            Answer::Success { status, text } => {
                serde_json::from_str(&text).map_err(|e| SendError::Unreadable {
                    status,
                    detail: redact::scrub(&e.to_string()),
                })
            }
            Answer::Failure { status, text, .. } => Err(parse_rejection(status, &text, None)),
        }
    }

    /// Send `request` authenticated (as a form POST when `form` is given), report it, and read
    /// the answer. Transport failures are classified here: no connection means not sent.
    fn execute(
        &self,
        request: ureq::Request,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Answer, SendError> {
        let request = request
            .set("Authorization", &self.authorization)
            .set("Accept", "application/json");
        let result = match form {
            Some(form) => request.send_form(form),
            None => request.call(),
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                self.observer.exchanged(Exchange::Answered(status));
                let text = read_body(resp)
                    .map_err(|e| SendError::NoResponse(format!("reading the answer: {e}")))?;
                Ok(Answer::Success { status, text })
            }
            Err(ureq::Error::Status(status, resp)) => {
                self.observer.exchanged(Exchange::Answered(status));
                let retry_after = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = read_body(resp).unwrap_or_default();
                Ok(Answer::Failure {
                    status,
                    text,
                    retry_after,
                })
            }
            Err(ureq::Error::Transport(t)) => {
                self.observer.exchanged(Exchange::Unanswered);
                Err(match t.kind() {
                    ureq::ErrorKind::Dns
                    | ureq::ErrorKind::ConnectionFailed
                    | ureq::ErrorKind::InvalidUrl => SendError::NotSent(describe_transport(&t)),
                    _ => SendError::NoResponse(describe_transport(&t)),
                })
            }
        }
    }

    /// Create one SMS to `to` with `body` for row `id` (named in its `StatusCallback`, when
    /// receipts are on).
    pub fn send(&self, to: &str, body: &str, id: &MessageId) -> Result<Accepted, SendError> {
        let from = match &self.sender {
            SmsSender::Number(n) => ("From", n.as_str()),
            SmsSender::MessagingService(s) => ("MessagingServiceSid", s.as_str()),
        };
        let callback = self
            .status_callback
            .as_ref()
            .map(|base| receipts::url_for(base, id));
        let mut form = vec![("To", to), from, ("Body", body)];
        if let Some(url) = &callback {
            form.push(("StatusCallback", url));
        }
        match self.execute(self.agent.current().post(&self.messages_url), Some(&form))? {
            Answer::Success { status, text } => parse_created(status, &text),
            Answer::Failure {
                status,
                text,
                retry_after,
            } => Err(parse_rejection(status, &text, retry_after)),
        }
    }
}

impl Twilio {
    /// Outbound messages Twilio holds to `to` from our sender, created at or after `since`,
    /// newest first, read page by page until a page reaches messages older than `since` by
    /// [`ORDER_SLACK`]. No `DateSent` filter: `date_sent` is null until a message leaves Twilio
    /// (docs/twilio.md §3.3). The list is ordered by SID, which is only close to creation order
    /// (twilio-csharp PR 65), hence the slack before stopping. `may_start` is asked
    /// before each page request (the lease). At most `MAX_LIST_PAGES` pages are read; a list
    /// that goes on is reported as incomplete.
    pub fn list_outbound(
        &self,
        to: &str,
        since: SystemTime,
        may_start: &dyn Fn() -> bool,
    ) -> Result<Listing, ListError> {
        let agent = self.agent.current();
        let mut request = agent
            .get(&self.messages_url)
            .query("To", to)
            .query("PageSize", "100");
        if let SmsSender::Number(from) = &self.sender {
            request = request.query("From", from);
        }
        let mut listing = Listing::default();
        for _ in 0..MAX_LIST_PAGES {
            if !may_start() {
                return Err(ListError::NoTime);
            }
            let page = self.get_page(request).map_err(ListError::Twilio)?;
            let mut reached_older = false;
            for m in page.messages {
                let Some(created) = m.date_created.as_deref().and_then(timestamp::parse_rfc2822)
                else {
                    continue;
                };
                if created < since {
                    reached_older |= created < timestamp::saturating_sub(since, ORDER_SLACK);
                    continue;
                }
                let outbound = m
                    .direction
                    .as_deref()
                    .is_none_or(|d| d.starts_with("outbound"));
                let our_service = match &self.sender {
                    SmsSender::MessagingService(mg) => m.messaging_service_sid.as_ref() == Some(mg),
                    SmsSender::Number(_) => true,
                };
                if let (Some(sid), true, true) = (m.sid, outbound, our_service) {
                    listing.messages.push(Listed {
                        sid,
                        body: m.body,
                        created,
                    });
                }
            }
            match page.next_page_uri.filter(|u| u.starts_with('/')) {
                Some(uri) if !reached_older => {
                    request = agent.get(&format!("{}{uri}", self.api_url))
                }
                _ => {
                    listing.complete = true;
                    return Ok(listing);
                }
            }
        }
        Ok(listing)
    }

    fn get_page(&self, request: ureq::Request) -> Result<ListPage, SendError> {
        match self.execute(request, None)? {
            Answer::Success { status, text } => {
                parse_list_page(&text).map_err(|detail| SendError::Unreadable { status, detail })
            }
            Answer::Failure { status, text, .. } => Err(parse_rejection(status, &text, None)),
        }
    }
}

/// Read a 2xx answer to a create.
pub fn parse_created(status: u16, text: &str) -> Result<Accepted, SendError> {
    match serde_json::from_str::<MessageResource>(text) {
        Ok(m) if is_message_sid(&m.sid) => Ok(Accepted {
            sid: m.sid,
            status: m.status.unwrap_or_else(|| "queued".into()),
        }),
        Ok(m) => Err(SendError::Unreadable {
            status,
            detail: redact::scrub(&format!("sid {:?} is not a Message SID", m.sid)),
        }),
        Err(e) => Err(SendError::Unreadable {
            status,
            detail: redact::scrub(&e.to_string()),
        }),
    }
}

/// Read an error answer, JSON or not.
pub fn parse_rejection(status: u16, text: &str, retry_after: Option<Duration>) -> SendError {
    match serde_json::from_str::<ErrorBody>(text) {
        // Twilio's texts quote numbers and account paths: masked before anyone can log them.
        Ok(b) => SendError::Rejected {
            status,
            code: b.code,
            message: redact::scrub(&b.message.unwrap_or_default()),
            retry_after,
        },
        // The whole body is scrubbed, then bounded: cutting first could leave part of a key.
        Err(_) => SendError::Rejected {
            status,
            code: None,
            message: redact::scrub(text),
            retry_after,
        },
    }
}

/// `SM`/`MM` + 32 hex.
fn is_message_sid(sid: &str) -> bool {
    sid.len() == 34
        && (sid.starts_with("SM") || sid.starts_with("MM"))
        && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credential_known_answers() {
        assert_eq!(redact::basic_credential("", ""), "Og==");
        assert_eq!(redact::basic_credential("f", "o"), "Zjpv");
        assert_eq!(
            redact::basic_credential("ACxx", "token"),
            "QUN4eDp0b2tlbg=="
        );
    }

    #[test]
    fn created_answers() {
        let ok = r#"{"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"queued","num_segments":"1","price":null}"#;
        assert_eq!(
            parse_created(201, ok),
            Ok(Accepted {
                sid: "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                status: "queued".into()
            })
        );
        assert!(matches!(
            parse_created(201, "<Response/>"),
            Err(SendError::Unreadable { .. })
        ));
        assert!(matches!(
            parse_created(201, r#"{"sid":"XX1"}"#),
            Err(SendError::Unreadable { .. })
        ));
    }

    #[test]
    fn list_pages() {
        let page = parse_list_page(
            r#"{"messages":[{"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","body":"hi","direction":"outbound-api",
            "date_created":"Thu, 24 Aug 2023 05:01:45 +0000","num_segments":"1","price":null}],
            "next_page_uri":"/2010-04-01/Accounts/AC1/Messages.json?PageToken=PA1","page":0}"#,
        )
        .unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].body.as_deref(), Some("hi"));
        assert!(page.next_page_uri.is_some());
        let last = parse_list_page(r#"{"messages":[],"next_page_uri":null}"#).unwrap();
        assert!(last.next_page_uri.is_none());
        assert!(parse_list_page("<Response/>").is_err());
    }

    #[test]
    fn rejections() {
        let body = r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        let e = parse_rejection(400, body, None);
        assert_eq!(e.twilio_code(), Some(21211));
        assert_eq!(e.http_status(), Some(400));
        assert!(e.to_string().contains("Twilio code 21211"));
        let html = parse_rejection(
            503,
            "<html>Service Unavailable</html>",
            Some(Duration::from_secs(3)),
        );
        assert!(matches!(
            html,
            SendError::Rejected {
                code: None,
                retry_after: Some(_),
                ..
            }
        ));
    }
}
