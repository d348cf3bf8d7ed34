//! The Twilio double: a local, stateful imitation of Twilio's Programmable Messaging REST API
//! (2010-04-01), faithful to `docs/twilio.md` (§1–4, §8.2, §8.3; § numbers in comments refer to it).
//!
//! # What this module owns
//! - The routes a sender needs under `/2010-04-01/Accounts/{AccountSid}/`: create, list and fetch
//!   Messages, plus fetch-account and list-IncomingPhoneNumbers for a configuration check.
//! - Twilio's wire contract: HTTP Basic auth (account SID + auth token, or `SK` key + secret),
//!   form-only create bodies with repeated keys, the create-time validation order and error codes
//!   (quoting the full numbers and paths as Twilio does), Twilio's JSON error body, the Message
//!   resource with its string-typed numbers and RFC 2822 dates, and list paging through
//!   host-relative `next_page_uri`s.
//! - The send lifecycle as a reader sees it (§1.5, §2): a created message is `queued` (`accepted`
//!   through a Messaging Service) with `date_sent: null`, and leaves Twilio after a configurable
//!   send delay (default 1 s), from when on it reads `sent` with `date_sent` set. `DateSent`
//!   filters read `date_sent`, so a message not sent yet matches none of them (§3.1, §3.3).
//! - The ways real reads disappoint a reconciler (§3.3): a visibility lag before a new message is
//!   listable/fetchable, trial-account body prefixes, account-level body redaction.
//! - Fault injection on creates (429, 5xx, non-JSON edge errors, hang-ups and slow answers both
//!   before and *after* the message exists) and on lists (errors, hang-ups), latency on every
//!   request or on creates only, and holding validated creates before they store, so the sender's
//!   retry, reconciliation and race paths can be driven deterministically.
//! - A record of what happened: every stored message (with the body the client asked for) and
//!   every request with its answer.
//!
//! # Invariants
//! - A message is stored (and visible to `messages()`) *before* any byte of the create response
//!   is written, so "created but the answer was lost" is observable exactly as it is with the
//!   real service. List and fetch show it once the visibility lag in effect when it was stored has
//!   passed (at once by default); visibility, once reached, is never lost.
//! - A create that is answered 4xx, 429, an `Error`/`NonJsonError` fault or `HangupBeforeCreate`
//!   never stores anything: those outcomes are safe to retry, and tests rely on that. A held
//!   create has stored nothing until it is let through; it waits without the state lock, and
//!   never longer than [`MAX_HOLD`].
//! - `date_sent` is not a copy of `date_created`: it is null until the message leaves Twilio, then
//!   `date_created` + the send delay in effect when it was stored (`date_updated` likewise); the
//!   status then reads `sent` and never goes back. The create response always shows the initial
//!   state. Seeded history keeps its explicit status and has `date_sent` = `date_created`.
//! - The stored `body` is what Twilio keeps (trial-prefixed on a trial account); redaction only
//!   blanks what list and fetch return, never the record or the create response.
//! - SIDs are unique for the double's lifetime; stored messages are never removed or reordered.
//! - Listing orders by `date_created` descending, ties broken by creation order descending, and a
//!   `PageToken` is a cursor relative to one message (not an offset), so following `next_page_uri`
//!   visits every matching message that was visible when the walk began exactly once, even while
//!   new messages are being created; a walk never repeats a message.
//! - Only one account exists: the one in [`TwilioConfig`]; everything binds to 127.0.0.1.
//!
//! Not reproduced (out of scope for an SMS sender's tests): XML/CSV representations, message
//! update/delete, *automatic* status callbacks ([`TwilioDouble::send_status_callback`] posts one
//! on demand), statuses past `sent` for created messages (`delivered` etc. exist only as seeded
//! history), picking a sender for Messaging Service messages (`from` stays null and
//! `num_segments` "0" after sending), per-sender throughput (one fixed send delay stands for it),
//! `ContentRetention`, Smart Encoding, test-credential 403s, channel addresses (`whatsapp:`).
//!
//! # Layout (the public API, then a request's path through the double)
//! - this file: the public API — [`TwilioDouble`] (start, inspect, inject faults, change the
//!   account's settings, hold creates, seed history), [`TwilioConfig`], [`StoredMessage`],
//!   [`RecordedRequest`], [`Fault`] and the constants tests rely on.
//! - `state`: the mutable state behind one lock, and the hold that parks validated creates.
//! - `routes`: what happens to every request: recording, the concurrency limit, latency,
//!   Basic auth, routing to a resource (or 401/404/405).
//! - `create`: `POST …/Messages.json`: faults, validation in Twilio's order, storing.
//! - `list`: `GET …/Messages.json` and `…/Messages/{Sid}.json`: filters, cursor paging, list
//!   faults.
//! - `account`: the Account, IncomingPhoneNumbers and Messaging Service resources a
//!   configuration check reads.
//! - `responses`: the answer to a request (`Outcome`), Twilio's error bodies, the answers
//!   faults give, and the Message resource as JSON.
//! - `status_callbacks`: [`twilio_signature`] and [`post_form`], to post signed status callbacks.
//! - `segments`: [`count_segments`] (GSM-7 / UCS-2).
//! - `dates`: [`rfc2822`] and the `DateSent` filter grammar, on the `time` crate rather than the
//!   service's own `timestamp.rs`, so the double checks the service's dates independently.
//! - `tests`: the double's own tests over real sockets, by concern.

mod account;
mod create;
mod dates;
mod list;
mod responses;
mod routes;
mod segments;
mod state;
mod status_callbacks;
#[cfg(test)]
mod tests;

pub use dates::rfc2822;
pub use segments::count_segments;
pub use status_callbacks::{post_form, twilio_signature};

use crate::http;
use routes::TwilioHandler;
use state::{Shared, State};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a created message stays `queued`/`accepted` before it leaves Twilio, unless
/// [`TwilioDouble::set_send_delay`] says otherwise. Non-zero, as with the real service.
pub const DEFAULT_SEND_DELAY: Duration = Duration::from_secs(1);
/// The longest a create waits while creates are held; then it proceeds as if released, so a
/// test that forgets to release cannot hang forever.
pub const MAX_HOLD: Duration = Duration::from_secs(60);
/// What a trial account puts before every body it stores and returns (docs/twilio.md §3.3).
pub const TRIAL_PREFIX: &str = "Sent from your Twilio trial account - ";

/// Who the double is and what the account owns.
#[derive(Clone, Debug)]
pub struct TwilioConfig {
    /// The only account: `AC` + 32 hex. It must appear in every request path.
    pub account_sid: String,
    /// The account's auth token (Basic-auth password when the username is the account SID).
    pub auth_token: String,
    /// Extra accepted API keys (SK sid, secret): Basic auth with these is also valid for account_sid.
    pub api_keys: Vec<(String, String)>,
    /// Sender numbers the account owns; a `From` not in this list → 21606. Empty = accept any
    /// E.164 (or alphanumeric / short code) `From`.
    pub owned_numbers: Vec<String>,
    /// Messaging service SIDs that exist; an unknown one → 400/21701. Empty = accept any
    /// well-formed `MG` SID.
    pub messaging_services: Vec<String>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            account_sid: "AC0123456789abcdef0123456789abcdef".to_string(),
            auth_token: "test-auth-token".to_string(),
            api_keys: Vec::new(),
            owned_numbers: Vec::new(),
            messaging_services: Vec::new(),
        }
    }
}

/// A message the double created (or was seeded with), as it would be read back from Twilio.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    /// `SM` + 32 lowercase hex (`MM` when media was attached).
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    /// `None` when sent through a Messaging Service without `From` (no sender picked yet).
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// The body as Twilio stores and returns it: [`TRIAL_PREFIX`] + the requested body on a trial
    /// account, else the requested body. (Redaction blanks only what list and fetch return.)
    pub body: String,
    /// The `Body` parameter exactly as the client sent it (empty when absent), to correlate a
    /// Twilio message with the row it came from whatever Twilio did to `body`.
    pub requested_body: String,
    pub status_callback: Option<String>,
    /// The status it was stored with: `queued`, or `accepted` when a Messaging Service was given
    /// (what the create response shows), or the seeded one. What list and fetch show at a given
    /// time is [`StoredMessage::status_at`].
    pub status: String,
    /// 0 when sent through a Messaging Service without `From`, else computed by [`count_segments`]
    /// on the stored `body`.
    pub num_segments: u32,
    /// Every `MediaUrl` value, in request order (repeated keys kept).
    pub media_urls: Vec<String>,
    /// When Twilio stored it (`date_created`); list order is by this, newest first.
    pub date_created: SystemTime,
    /// When it leaves Twilio: `date_created` + the send delay in effect when it was stored
    /// (`date_created` for seeded history). Rendered as `date_sent` only once passed.
    pub sends_at: SystemTime,
    /// When the create request reached the double (monotonic, for latency assertions).
    pub received_at: Instant,
    /// From when list and fetch show it: stored + the visibility lag in effect then (at once
    /// for seeded history). `messages()` shows it at once regardless.
    pub visible_at: Instant,
}

impl StoredMessage {
    /// Whether the status can still move on its own (`queued`/`accepted` → `sent`).
    fn pending(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "accepted")
    }

    /// The status list and fetch show at `now`: `sent` once a `queued`/`accepted` message has
    /// left Twilio (`now >= sends_at`), otherwise the stored [`StoredMessage::status`].
    pub fn status_at(&self, now: SystemTime) -> &str {
        if self.pending() && now >= self.sends_at {
            "sent"
        } else {
            &self.status
        }
    }

    /// `date_sent` as list and fetch show it at `now`: `None` (JSON null) while the message has
    /// not left Twilio, else [`StoredMessage::sends_at`].
    pub fn date_sent_at(&self, now: SystemTime) -> Option<SystemTime> {
        (!self.pending() || now >= self.sends_at).then_some(self.sends_at)
    }
}

/// One request the double received and what it answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, still percent-encoded, without the query string.
    pub path: String,
    /// The decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// The decoded form pairs (empty unless the body was declared form-encoded).
    pub form: Vec<(String, String)>,
    /// The HTTP status answered; `None` = hung up (or still being handled).
    pub status: Option<u16>,
    /// The `code` of the Twilio error body, when one was sent.
    pub twilio_code: Option<u32>,
    /// When the request arrived (before any injected latency).
    pub at: Instant,
    /// Whether the Basic credentials were valid for the configured account.
    pub authorization_ok: bool,
    pub content_type: Option<String>,
}

/// A failure to inject into create requests (`POST …/Messages.json`) or, through
/// [`TwilioDouble::fail_next_lists`], into list requests (`GET …/Messages.json`). On a list, which
/// creates nothing, `HangupBeforeCreate`/`HangupAfterCreate` both hang up without answering,
/// `ErrorAfterCreate` answers that 5xx, and `DelayAfterCreate` answers normally after the delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and Twilio error body; the message is NOT created. Optional Retry-After seconds header.
    Error {
        status: u16,
        code: u32,
        message: String,
        retry_after: Option<u64>,
    },
    /// 429 / 20429 "Too Many Requests" (not created, safe to retry). Optional Retry-After.
    TooManyRequests { retry_after: Option<u64> },
    /// Close the connection after reading the request, before creating anything.
    HangupBeforeCreate,
    /// Create and store the message, then answer with this 5xx status and a Twilio error body (ambiguous failure).
    ErrorAfterCreate { status: u16 },
    /// Create and store the message, then close the connection without answering.
    HangupAfterCreate,
    /// Create and store the message, then sleep this long before answering normally (client timeout case).
    DelayAfterCreate(Duration),
    /// Answer 5xx with a non-JSON (HTML) body, message NOT created (edge proxy failure).
    NonJsonError { status: u16 },
}

/// A running Twilio double on 127.0.0.1. Stops (cutting its connections) when dropped.
pub struct TwilioDouble {
    shared: Arc<Shared>,
    server: http::HttpServer,
}

impl TwilioDouble {
    /// Start on a free port of 127.0.0.1. Panics if no port can be bound (tests only).
    pub fn start(config: TwilioConfig) -> TwilioDouble {
        TwilioDouble::start_on(0, config).expect("bind the Twilio double on 127.0.0.1")
    }

    /// Start on `port` of 127.0.0.1 (0 = any free port).
    pub fn start_on(port: u16, config: TwilioConfig) -> std::io::Result<TwilioDouble> {
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                send_delay: DEFAULT_SEND_DELAY,
                ..State::default()
            }),
            stored: Condvar::new(),
            hold_changed: Condvar::new(),
        });
        let handler = Arc::new(TwilioHandler {
            shared: shared.clone(),
        });
        let server = http::HttpServer::start(port, handler)?;
        Ok(TwilioDouble { shared, server })
    }

    /// The base URL, standing in for `https://api.twilio.com`: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The configuration the double was started with.
    pub fn config(&self) -> &TwilioConfig {
        &self.shared.config
    }

    /// Every message the double CREATED (stored), in creation order — including ones whose response was then faulted.
    /// Messages added with [`TwilioDouble::seed_message`] are included, in the order they were added.
    pub fn messages(&self) -> Vec<StoredMessage> {
        self.shared.lock().messages.clone()
    }

    /// Every request received (any path/method), in order, with what was answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Number of POST .../Messages.json requests received (whatever the outcome).
    pub fn create_requests(&self) -> usize {
        self.shared.lock().create_requests
    }

    /// Block until at least n messages are stored or the timeout passes; returns whether reached.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.messages.len() >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.shared.stored.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Fault injection on create (POST Messages.json): the next `n` creates get `fault`, then normal.
    ///
    /// A queued fault is consumed by the next authenticated create whatever its fate: an
    /// `*AfterCreate` fault consumed by an invalid request yields the normal 400 and is gone.
    pub fn fail_next_creates(&self, n: usize, fault: Fault) {
        self.shared.lock().create_faults.queue(n, fault);
    }

    /// While set, EVERY create gets this fault (an outage); `None` ends it.
    /// Faults queued by [`TwilioDouble::fail_next_creates`] are served first.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.shared.lock().create_faults.outage = fault;
    }

    /// Latency added before answering any request (applied before the request is processed).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Latency added before processing each create (`POST …/Messages.json`) only, on top of
    /// [`TwilioDouble::set_latency`]. Default zero.
    pub fn set_create_latency(&self, latency: Duration) {
        self.shared.lock().create_latency = latency;
    }

    /// Limit the account's concurrent API requests, as Twilio does (docs/twilio.md §5.1): a request
    /// arriving while `limit` others are in progress is answered 429 / 20429 at once and not
    /// processed. `None` (the default) lifts the limit.
    pub fn set_concurrency_limit(&self, limit: Option<usize>) {
        self.shared.lock().concurrency_limit = limit;
    }

    /// Requests answered 429 / 20429 for exceeding the concurrency limit so far.
    pub fn too_many_requests(&self) -> usize {
        self.shared.lock().too_many
    }

    /// The most API requests ever in progress at once.
    pub fn peak_concurrency(&self) -> usize {
        self.shared.lock().peak_in_progress
    }

    /// Fault injection on list (`GET …/Messages.json`): the next `n` authenticated lists get
    /// `fault` instead of their page (see [`Fault`] for what each means on a list), then normal.
    /// Fetches of one message and creates are not affected.
    pub fn fail_next_lists(&self, n: usize, fault: Fault) {
        self.shared.lock().list_faults.queue(n, fault);
    }

    /// While set, EVERY list gets this fault; `None` ends it. Faults queued by
    /// [`TwilioDouble::fail_next_lists`] are served first.
    pub fn set_list_outage(&self, fault: Option<Fault>) {
        self.shared.lock().list_faults.outage = fault;
    }

    /// How long a message created from now on stays `queued`/`accepted` (`date_sent` null)
    /// before it reads `sent`. Default [`DEFAULT_SEND_DELAY`] (1 s); a long delay (minutes)
    /// models a busy sender. Fixed per message when it is stored: later changes do not move
    /// messages already stored.
    pub fn set_send_delay(&self, delay: Duration) {
        self.shared.lock().send_delay = delay;
    }

    /// How long a message created from now on stays absent from list results and answers 404 /
    /// 20404 to a fetch after it is stored (`messages()` shows it at once). Default zero; fixed
    /// per message when it is stored.
    pub fn set_visibility_lag(&self, lag: Duration) {
        self.shared.lock().visibility_lag = lag;
    }

    /// Make the account a trial account (default off): every message stored from now on (seeded
    /// ones included) has body [`TRIAL_PREFIX`] + the requested body, in the create response, list
    /// and fetch alike. `requested_body` keeps the text as sent.
    pub fn set_trial(&self, trial: bool) {
        self.shared.lock().trial = trial;
    }

    /// Account-level Message Body Redaction (default off): while on, list and fetch return
    /// `"body": ""` for every message; the create response and `messages()` keep the text.
    pub fn set_redact_bodies(&self, redact: bool) {
        self.shared.lock().redact_bodies = redact;
    }

    /// While on, a create that passed validation (and drew no before-create fault) waits before
    /// storing, without holding the state lock, until the hold ends, a
    /// [`TwilioDouble::release_one_create`] lets it through, or [`MAX_HOLD`] passes. Turning it
    /// off releases every waiting create. Default off.
    pub fn hold_creates(&self, hold: bool) {
        if hold {
            self.shared.lock().hold_creates = true;
        } else {
            self.shared.end_hold();
        }
    }

    /// Let one held create proceed (which one is unspecified). Returns false, and changes
    /// nothing, when no create is waiting that was not already released.
    pub fn release_one_create(&self) -> bool {
        let mut state = self.shared.lock();
        if state.releases >= state.held {
            return false;
        }
        state.releases += 1;
        drop(state);
        self.shared.hold_changed.notify_all();
        true
    }

    /// How many creates are waiting in the hold now (released ones that have not woken yet
    /// included).
    pub fn held_creates(&self) -> usize {
        self.shared.lock().held
    }

    /// Block until at least `n` creates are waiting in the hold or the timeout passes; returns
    /// whether reached.
    pub fn wait_for_held_creates(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.held < n {
            if Instant::now() >= deadline {
                return false;
            }
            state = self
                .shared
                .wait_until(&self.shared.hold_changed, state, deadline);
        }
        true
    }

    /// Stop the server (also on Drop) and cut open connections; held creates are released.
    pub fn stop(&self) {
        self.shared.end_hold();
        self.server.stop();
    }

    /// HTTP connections accepted so far (to check keep-alive reuse).
    pub fn connections_accepted(&self) -> u64 {
        self.server.connections_accepted()
    }

    /// Look up `MessagingServiceSid` support for the `check` command: see `Route::Service`.
    pub fn messaging_service_url(&self, sid: &str) -> String {
        format!("{}/v1/Services/{sid}", self.url())
    }

    /// Store a message as if it had been created earlier (e.g. before a crash), with status
    /// `delivered`, the given creation date and `date_sent` = `date_created` (no send delay), so
    /// reconciliation through the list (`DateSent` filters, ordering) can be tested against
    /// history. It is listable at once (no visibility lag) and trial-prefixed on a trial account.
    /// Returns what was stored.
    pub fn seed_message(
        &self,
        to: &str,
        from: &str,
        body: &str,
        date_created: SystemTime,
    ) -> StoredMessage {
        let new = create::NewMessage {
            to: to.to_string(),
            from: Some(from.to_string()),
            messaging_service_sid: None,
            body: body.to_string(),
            media_urls: Vec::new(),
            status_callback: None,
        };
        create::store(
            &self.shared,
            new,
            date_created,
            Instant::now(),
            Some("delivered"),
        )
    }
}

impl Drop for TwilioDouble {
    /// Release held creates so their connection threads finish (the server stops after this).
    fn drop(&mut self) {
        self.shared.end_hold();
    }
}
