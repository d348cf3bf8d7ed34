//! The Twilio double: a local, stateful imitation of Twilio's Programmable Messaging REST API
//! (2010-04-01), faithful to `shared/reference/twilio-messages.md` (§1–4, §8.2, §8.3).
//!
//! # What this file owns
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

use crate::http::{self, Handler, Reply, Request, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const API_VERSION: &str = "2010-04-01";
/// Twilio's documented body limit; counted in UTF-16 units because how Twilio counts astral
/// characters is undocumented and this is the stricter reading (reference §5.3).
const MAX_BODY_UTF16: usize = 1600;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// How long a created message stays `queued`/`accepted` before it leaves Twilio, unless
/// [`TwilioDouble::set_send_delay`] says otherwise. Non-zero, as with the real service.
pub const DEFAULT_SEND_DELAY: Duration = Duration::from_secs(1);
/// The longest a create waits while creates are held; then it proceeds as if released, so a
/// test that forgets to release cannot hang forever.
pub const MAX_HOLD: Duration = Duration::from_secs(60);
/// What a trial account puts before every body it stores and returns (reference §3.3).
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

/// Mutable state behind one lock; every critical section is short and never sleeps.
#[derive(Default)]
struct State {
    messages: Vec<StoredMessage>,
    /// sid → position in `messages`, so fetch and uniqueness checks stay O(1) in long benchmarks.
    by_sid: HashMap<String, usize>,
    requests: Vec<RecordedRequest>,
    create_requests: usize,
    queued_faults: VecDeque<Fault>,
    outage: Option<Fault>,
    list_faults: VecDeque<Fault>,
    list_outage: Option<Fault>,
    latency: Duration,
    create_latency: Duration,
    send_delay: Duration,
    visibility_lag: Duration,
    trial: bool,
    redact_bodies: bool,
    /// Whether validated creates wait before storing ([`TwilioDouble::hold_creates`]).
    hold_creates: bool,
    /// Creates waiting now.
    held: usize,
    /// Waiting creates told to proceed that have not woken yet (never more than `held`).
    releases: usize,
    /// Account-level limit of concurrent API requests ([`TwilioDouble::set_concurrency_limit`]).
    concurrency_limit: Option<usize>,
    /// API requests being handled now.
    in_progress: usize,
    /// The most that were ever in progress at once.
    peak_in_progress: usize,
    /// Requests answered 429 / 20429 for exceeding the limit.
    too_many: usize,
}

struct Shared {
    config: TwilioConfig,
    state: Mutex<State>,
    /// Signalled whenever a message is stored (for `wait_for_messages`).
    stored: Condvar,
    /// Signalled whenever the hold changes: a create starts waiting, is released, or the hold
    /// ends (for held creates and `wait_for_held_creates`).
    hold_changed: Condvar,
}

impl Shared {
    /// Lock, tolerating poison: a panicking test thread must not turn every later call into a
    /// second, misleading panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait on `condvar` until `deadline` (tolerating poison like [`Shared::lock`]).
    fn wait_until<'a>(
        &self,
        condvar: &Condvar,
        state: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match condvar.wait_timeout(state, timeout) {
            Ok((guard, _)) => guard,
            Err(p) => p.into_inner().0,
        }
    }

    /// If creates are held, wait (the lock released while waiting) until this one is let
    /// through, the hold ends, or [`MAX_HOLD`] passes.
    fn wait_while_held(&self) {
        let deadline = Instant::now() + MAX_HOLD;
        let mut state = self.lock();
        if !state.hold_creates {
            return;
        }
        state.held += 1;
        self.hold_changed.notify_all();
        while state.hold_creates && Instant::now() < deadline {
            if state.releases > 0 {
                state.releases -= 1;
                break;
            }
            state = self.wait_until(&self.hold_changed, state, deadline);
        }
        state.held -= 1;
        // A release meant for a create that timed out instead must not let a later one through.
        state.releases = state.releases.min(state.held);
        drop(state);
        self.hold_changed.notify_all();
    }

    /// End any hold and wake every held create.
    fn end_hold(&self) {
        let mut state = self.lock();
        state.hold_creates = false;
        state.releases = 0;
        drop(state);
        self.hold_changed.notify_all();
    }
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
        let mut state = self.shared.lock();
        // (A loop rather than `repeat_n`, which is newer than the project's MSRV.)
        for _ in 0..n {
            state.queued_faults.push_back(fault.clone());
        }
    }

    /// While set, EVERY create gets this fault (an outage); `None` ends it.
    /// Faults queued by [`TwilioDouble::fail_next_creates`] are served first.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.shared.lock().outage = fault;
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

    /// Limit the account's concurrent API requests, as Twilio does (reference §5.1): a request
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
        let mut state = self.shared.lock();
        for _ in 0..n {
            state.list_faults.push_back(fault.clone());
        }
    }

    /// While set, EVERY list gets this fault; `None` ends it. Faults queued by
    /// [`TwilioDouble::fail_next_lists`] are served first.
    pub fn set_list_outage(&self, fault: Option<Fault>) {
        self.shared.lock().list_outage = fault;
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

    /// Post a status callback for stored message `sid` to its `StatusCallback` URL, signed as
    /// Twilio signs it (reference §6.3). Returns the receiver's HTTP status (`None`: no answer).
    pub fn send_status_callback(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<u32>,
    ) -> Option<u16> {
        let message = self.messages().into_iter().find(|m| m.sid == sid)?;
        let url = message.status_callback.clone()?;
        let mut params = vec![
            ("MessageSid".to_string(), sid.to_string()),
            ("SmsSid".to_string(), sid.to_string()),
            ("MessageStatus".to_string(), status.to_string()),
            ("SmsStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), message.account_sid.clone()),
            ("To".to_string(), message.to.clone()),
            ("ApiVersion".to_string(), "2010-04-01".to_string()),
        ];
        if let Some(from) = &message.from {
            params.push(("From".to_string(), from.clone()));
        }
        if let Some(code) = error_code {
            params.push(("ErrorCode".to_string(), code.to_string()));
        }
        let signature = twilio_signature(&self.config().auth_token, &url, &params);
        post_form(&url, &params, Some(&signature))
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
        let new = NewMessage {
            to: to.to_string(),
            from: Some(from.to_string()),
            messaging_service_sid: None,
            body: body.to_string(),
            media_urls: Vec::new(),
            status_callback: None,
        };
        store(
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

/// The request handler the HTTP server calls; all behaviour lives here.
struct TwilioHandler {
    shared: Arc<Shared>,
}

/// What to do with one request.
struct Outcome {
    /// `None` = close the connection without answering.
    response: Option<Response>,
    /// The Twilio error code in the body, for the request record.
    code: Option<u32>,
    /// Sleep this long after deciding (and storing) but before answering.
    delay: Duration,
}

impl Outcome {
    fn respond(response: Response) -> Outcome {
        Outcome {
            response: Some(response),
            code: None,
            delay: Duration::ZERO,
        }
    }

    fn hangup() -> Outcome {
        Outcome {
            response: None,
            code: None,
            delay: Duration::ZERO,
        }
    }
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
            return match outcome.response {
                Some(response) => Reply::Respond(response),
                None => Reply::Hangup,
            };
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
        match outcome.response {
            Some(response) => Reply::Respond(response),
            None => Reply::Hangup,
        }
    }
}

/// `X-Twilio-Signature`: HMAC-SHA1 with the auth token over the URL followed by the sorted
/// parameters' names and values, base64 (reference §6.3). Written independently of the
/// service's implementation (a different HMAC library) so each checks the other.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// POST a form to an `http://127.0.0.1:PORT/path` URL with an optional `X-Twilio-Signature`;
/// returns the status (bounded to 5 s).
pub fn post_form(url: &str, params: &[(String, String)], signature: Option<&str>) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", http::percent_encode(k), http::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let sig = signature
        .map(|v| format!("X-Twilio-Signature: {v}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: TwilioProxy/1.1\r\n{sig}\r\n{body}",
        if path.is_empty() { "/" } else { path },
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl TwilioHandler {
    /// `GET /v1/Services/{MG}` (the Messaging API): the service if the account has it.
    fn messaging_service(&self, sid: &str) -> Outcome {
        let known = &self.shared.config.messaging_services;
        if is_sid(sid, "MG") && known.iter().any(|s| s == sid) {
            Outcome::respond(Response::json(
                200,
                &json!({"sid": sid, "account_sid": self.shared.config.account_sid,
                        "friendly_name": "Test service", "url": format!("https://messaging.twilio.com/v1/Services/{sid}")}),
            ))
        } else {
            twilio_error(
                404,
                20404,
                &format!("The requested resource /v1/Services/{sid} was not found"),
            )
        }
    }

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

    /// `POST …/Messages.json`: faults that precede creation, validation, store, then faults
    /// that follow creation.
    fn create(&self, form: &[(String, String)], received_at: Instant) -> Outcome {
        let fault = {
            let mut state = self.shared.lock();
            let queued = state.queued_faults.pop_front();
            queued.or_else(|| state.outage.clone())
        };
        match &fault {
            Some(Fault::Error {
                status,
                code,
                message,
                retry_after,
            }) => return with_retry_after(twilio_error(*status, *code, message), *retry_after),
            Some(Fault::TooManyRequests { retry_after }) => {
                return with_retry_after(
                    twilio_error(429, 20429, "Too Many Requests"),
                    *retry_after,
                )
            }
            Some(Fault::NonJsonError { status }) => return non_json_error(*status),
            Some(Fault::HangupBeforeCreate) => return Outcome::hangup(),
            _ => {}
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

    /// The fault the next list gets, if any: `(answer instead of the page, delay before
    /// answering)`.
    fn list_fault(&self) -> (Option<Outcome>, Duration) {
        let fault = {
            let mut state = self.shared.lock();
            let queued = state.list_faults.pop_front();
            queued.or_else(|| state.list_outage.clone())
        };
        let outcome = match fault {
            None => return (None, Duration::ZERO),
            Some(Fault::DelayAfterCreate(delay)) => return (None, delay),
            Some(Fault::Error {
                status,
                code,
                message,
                retry_after,
            }) => with_retry_after(twilio_error(status, code, &message), retry_after),
            Some(Fault::TooManyRequests { retry_after }) => {
                with_retry_after(twilio_error(429, 20429, "Too Many Requests"), retry_after)
            }
            Some(Fault::NonJsonError { status }) => non_json_error(status),
            Some(Fault::HangupBeforeCreate | Fault::HangupAfterCreate) => Outcome::hangup(),
            Some(Fault::ErrorAfterCreate { status }) => server_error(status),
        };
        (Some(outcome), Duration::ZERO)
    }

    /// `GET …/Messages/{Sid}.json`: 404 / 20404 until the message is visible.
    fn fetch(&self, sid: &str, path: &str) -> Outcome {
        let now = Instant::now();
        let state = self.shared.lock();
        match state.by_sid.get(sid).map(|&idx| &state.messages[idx]) {
            Some(m) if m.visible_at <= now => Outcome::respond(Response::json(
                200,
                &message_json(m, Some(SystemTime::now()), state.redact_bodies),
            )),
            _ => not_found(path),
        }
    }

    /// `GET …/Messages.json`: filters, newest first, cursor paging (see the module invariants).
    fn list(&self, req: &Request) -> Outcome {
        let query = req.query_pairs();
        let get = |key: &str| {
            query
                .iter()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let to = get("To");
        let from = get("From");
        // (wire name, raw value, parsed bound) in the order Twilio writes them into page URIs.
        let mut dates: Vec<(&str, &str, DateBound)> = Vec::new();
        for key in ["DateSent", "DateSent<", "DateSent>"] {
            if let Some(raw) = get(key) {
                match parse_date_filter(raw) {
                    Some(bound) => dates.push((key, raw, bound)),
                    None => {
                        return twilio_error(400, 20001, &format!("Invalid {key} value: {raw}"))
                    }
                }
            }
        }
        let page_size = match get("PageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return twilio_error(
                        400,
                        20001,
                        &format!("Invalid PageSize {v}: must be between 1 and {MAX_PAGE_SIZE}"),
                    )
                }
            },
        };
        let page = match get("Page") {
            None => 0,
            Some(v) => match v.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return twilio_error(400, 20001, &format!("Invalid Page {v}")),
            },
        };
        let token = get("PageToken");

        let (now, wall) = (Instant::now(), SystemTime::now());
        let state = self.shared.lock();
        let key = |i: usize| (state.messages[i].date_created, i);
        let mut matching: Vec<usize> = (0..state.messages.len())
            .filter(|&i| {
                let m = &state.messages[i];
                let sent = m.date_sent_at(wall).map(unix_seconds);
                m.visible_at <= now
                    && to.iter().all(|t| m.to == *t)
                    && from.iter().all(|f| m.from.as_deref() == Some(*f))
                    // A message not sent yet (date_sent null) matches no DateSent filter.
                    && dates.iter().all(|(name, _, bound)| {
                        sent.is_some_and(|sent| date_matches(name, *bound, sent))
                    })
            })
            .collect();
        matching.sort_by_key(|&i| std::cmp::Reverse(key(i)));

        let (lo, hi) = match token {
            None => {
                let lo = page.saturating_mul(page_size).min(matching.len());
                (lo, (lo + page_size).min(matching.len()))
            }
            Some(token) => {
                let anchor = token
                    .get(..2)
                    .filter(|p| *p == "PA" || *p == "PB")
                    .and_then(|_| state.by_sid.get(&token[2..]).copied());
                let Some(anchor) = anchor else {
                    return twilio_error(400, 20001, &format!("Invalid PageToken {token}"));
                };
                let anchor_key = key(anchor);
                if token.starts_with("PA") {
                    // Everything strictly after the anchor in newest-first order.
                    let lo = matching.partition_point(|&i| key(i) >= anchor_key);
                    (lo, (lo + page_size).min(matching.len()))
                } else {
                    // The page that ends just before the anchor.
                    let hi = matching.partition_point(|&i| key(i) > anchor_key);
                    (hi.saturating_sub(page_size), hi)
                }
            }
        };
        let items = &matching[lo..hi];

        let account = &self.shared.config.account_sid;
        let mut base = format!("/2010-04-01/Accounts/{account}/Messages.json?");
        for (k, v) in [("To", to), ("From", from)] {
            if let Some(v) = v {
                base.push_str(&format!("{k}={}&", form_encode(v)));
            }
        }
        for (k, raw, _) in &dates {
            base.push_str(&format!("{}={}&", form_encode(k), form_encode(raw)));
        }
        base.push_str(&format!("PageSize={page_size}"));
        let page_uri = |p: usize, token: Option<String>| match token {
            Some(t) => format!("{base}&Page={p}&PageToken={t}"),
            None => format!("{base}&Page={p}"),
        };
        let next = (hi < matching.len() && hi > lo).then(|| {
            page_uri(
                page + 1,
                Some(format!("PA{}", state.messages[matching[hi - 1]].sid)),
            )
        });
        let previous = (lo > 0 && hi > lo).then(|| {
            page_uri(
                page.saturating_sub(1),
                Some(format!("PB{}", state.messages[matching[lo]].sid)),
            )
        });
        let start = page.saturating_mul(page_size);
        let end = if items.is_empty() {
            start
        } else {
            start + items.len() - 1
        };
        let body = json!({
            "messages": items
                .iter()
                .map(|&i| message_json(&state.messages[i], Some(wall), state.redact_bodies))
                .collect::<Vec<_>>(),
            "end": end,
            "first_page_uri": page_uri(0, None),
            "next_page_uri": next,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": previous,
            "start": start,
            "uri": page_uri(page, token.map(str::to_string)),
        });
        Outcome::respond(Response::json(200, &body))
    }

    /// `GET /2010-04-01/Accounts/{AccountSid}.json`: enough of the Account resource for a
    /// credentials check.
    fn account_json(&self) -> Value {
        let sid = &self.shared.config.account_sid;
        let base = format!("/2010-04-01/Accounts/{sid}");
        let date = rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_286_400));
        json!({
            "auth_token": self.shared.config.auth_token,
            "date_created": date,
            "date_updated": date,
            "friendly_name": "sms-sender test account",
            "owner_account_sid": sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": {
                "incoming_phone_numbers": format!("{base}/IncomingPhoneNumbers.json"),
                "messages": format!("{base}/Messages.json"),
            },
            "type": "Full",
            "uri": format!("{base}.json"),
        })
    }

    /// `GET …/IncomingPhoneNumbers.json[?PhoneNumber=…]`: the configured owned numbers, all
    /// SMS-capable. `PhoneNumber` matches as a substring with `*` wildcards ignored, which is
    /// how Twilio treats partial numbers.
    fn incoming_phone_numbers(&self, req: &Request) -> Outcome {
        let query = req.query_pairs();
        let get = |key: &str| {
            query
                .iter()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let filter = get("PhoneNumber").map(|p| p.replace('*', ""));
        let page_size = match get("PageSize").map(str::parse::<usize>) {
            None => DEFAULT_PAGE_SIZE,
            Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            Some(_) => return twilio_error(400, 20001, "Invalid PageSize"),
        };
        let page = match get("Page").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return twilio_error(400, 20001, "Invalid Page"),
        };
        let config = &self.shared.config;
        let matching: Vec<&String> = config
            .owned_numbers
            .iter()
            .filter(|n| filter.iter().all(|f| n.contains(f.as_str())))
            .collect();
        let lo = page.saturating_mul(page_size).min(matching.len());
        let hi = (lo + page_size).min(matching.len());
        let account = &config.account_sid;
        let mut base = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json?");
        if let Some(p) = get("PhoneNumber") {
            base.push_str(&format!("PhoneNumber={}&", form_encode(p)));
        }
        base.push_str(&format!("PageSize={page_size}"));
        let date = rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_298_344));
        let numbers: Vec<Value> = matching[lo..hi]
            .iter()
            .map(|number| {
                let sid = format!("PN{}", stable_hex(number));
                json!({
                    "account_sid": account,
                    "api_version": API_VERSION,
                    "capabilities": {"fax": false, "mms": true, "sms": true, "voice": true},
                    "date_created": date,
                    "date_updated": date,
                    "friendly_name": number,
                    "phone_number": number,
                    "sid": sid,
                    "sms_method": "POST",
                    "sms_url": "",
                    "status": "in-use",
                    "status_callback": "",
                    "uri": format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"),
                })
            })
            .collect();
        let start = page.saturating_mul(page_size);
        let body = json!({
            "end": if hi > lo { start + (hi - lo) - 1 } else { start },
            "first_page_uri": format!("{base}&Page=0"),
            "incoming_phone_numbers": numbers,
            "next_page_uri": (hi < matching.len()).then(|| format!("{base}&Page={}", page + 1)),
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (page > 0).then(|| format!("{base}&Page={}", page - 1)),
            "start": start,
            "uri": format!("{base}&Page={page}"),
        });
        Outcome::respond(Response::json(200, &body))
    }
}

/// A create request that passed validation.
struct NewMessage {
    to: String,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    body: String,
    media_urls: Vec<String>,
    status_callback: Option<String>,
}

/// Apply Twilio's create-time checks in the order the reference gives (§8.2, §8.3): the first
/// failing check decides the code, because clients classify retries by that code.
fn validate(config: &TwilioConfig, form: &[(String, String)]) -> Result<NewMessage, (u32, String)> {
    // An empty value is as good as absent: Twilio answers `To=` like a missing `To`.
    let first = |key: &str| {
        form.iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
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
fn store(
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

/// The Message resource as Twilio renders it: numbers as strings, RFC 2822 dates, relative URIs.
/// `now` = `None` renders the create response (the stored, initial state; `date_sent` null);
/// `Some` renders a read at that time (lifecycle applied). `redact` blanks the body.
fn message_json(m: &StoredMessage, now: Option<SystemTime>, redact: bool) -> Value {
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
fn twilio_error(status: u16, code: u32, message: &str) -> Outcome {
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

fn with_retry_after(mut outcome: Outcome, retry_after: Option<u64>) -> Outcome {
    if let Some(secs) = retry_after {
        outcome.response = outcome
            .response
            .map(|r| r.header("Retry-After", secs.to_string()));
    }
    outcome
}

fn not_found(path: &str) -> Outcome {
    twilio_error(
        404,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

fn unauthorized() -> Outcome {
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
fn server_error(status: u16) -> Outcome {
    if status == 503 {
        twilio_error(503, 20503, "Service is unavailable. Please try again")
    } else {
        twilio_error(status, 20500, "An internal server error has occurred")
    }
}

/// What an edge proxy answers when the API behind it is gone: HTML, no Twilio code.
fn non_json_error(status: u16) -> Outcome {
    let html = format!(
        "<html><head><title>{status} Error</title></head><body><h1>{status} Error</h1><p>The server encountered a temporary error.</p></body></html>"
    );
    Outcome::respond(
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(html),
    )
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

/// `^<prefix>[0-9a-fA-F]{32}$`.
fn is_sid(s: &str, prefix: &str) -> bool {
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

fn random_hex32() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("a hex digit"))
        .collect()
}

/// 32 hex digits derived from `s` (two FNV-1a passes), so a number's `PN` SID is the same on
/// every call without storing it.
fn stable_hex(s: &str) -> String {
    let fnv = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// Form-encode a value the way Twilio writes its page URIs: `%XX`, spaces as `+`.
fn form_encode(s: &str) -> String {
    http::percent_encode(s).replace("%20", "+")
}

// ------------------------------------------------------------------------------------------------
// Segments

/// The GSM 03.38 default alphabet (127 characters; the escape code itself excluded).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table: each costs an escape plus the character (2 septets).
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character costs in GSM-7, or `None` if it forces UCS-2.
fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// SMS segments for `body` (reference §5.3): GSM-7 when every character is in the GSM 03.38
/// alphabet or its extension (extension characters cost 2 septets), else UCS-2 counted in UTF-16
/// units. One segment holds 160 septets / 70 units; concatenated segments hold 153 / 67, and a
/// 2-unit character (escape pair, surrogate pair) is never split across two segments.
/// An empty body is one (empty) segment.
pub fn count_segments(body: &str) -> u32 {
    let gsm: Option<Vec<u32>> = body.chars().map(gsm7_septets).collect();
    let (costs, single, concatenated) = match gsm {
        Some(costs) => (costs, 160, 153),
        None => (body.chars().map(|c| c.len_utf16() as u32).collect(), 70, 67),
    };
    if costs.iter().sum::<u32>() <= single {
        return 1;
    }
    let mut segments = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > concatenated {
            segments += 1;
            used = 0;
        }
        used += cost;
    }
    segments
}

// ------------------------------------------------------------------------------------------------
// Dates (no date crate: the civil-calendar arithmetic is small and exact)

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Whole seconds since the Unix epoch, flooring instants before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (March-based year so leap days come last).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Twilio's date format, always GMT: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    format!(
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A `DateSent` filter value: a whole GMT day (the documented form) or an instant (what
/// twilio-python sends for date-times).
#[derive(Clone, Copy, Debug, PartialEq)]
enum DateBound {
    Day(i64),
    Instant(i64),
}

/// Whether a message sent at `sent` (unix seconds) passes the filter `name` (`DateSent`,
/// `DateSent<`, `DateSent>`). Both bounds are inclusive, as Twilio documents (§3.1).
fn date_matches(name: &str, bound: DateBound, sent: i64) -> bool {
    match (name, bound) {
        ("DateSent>", DateBound::Day(d)) => sent >= d * 86_400,
        ("DateSent>", DateBound::Instant(t)) => sent >= t,
        ("DateSent<", DateBound::Day(d)) => sent < (d + 1) * 86_400,
        ("DateSent<", DateBound::Instant(t)) => sent <= t,
        (_, DateBound::Day(d)) => sent.div_euclid(86_400) == d,
        (_, DateBound::Instant(t)) => sent == t,
    }
}

/// `YYYY-MM-DD` → days since the epoch, rejecting impossible dates.
fn parse_ymd(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i64 = digits(&s[0..4])?;
    let month: u32 = digits(&s[5..7])?;
    let day: u32 = digits(&s[8..10])?;
    let days = days_from_civil(year, month, day);
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

/// Parse an all-digit field (no sign, no spaces).
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `HH:MM:SS` → seconds of the day.
fn parse_hms(s: &str) -> Option<i64> {
    let mut it = s.split(':');
    let (h, m, sec): (i64, i64, i64) = (
        digits(it.next()?)?,
        digits(it.next()?)?,
        digits(it.next()?)?,
    );
    (it.next().is_none() && h < 24 && m < 60 && sec < 61).then_some(h * 3600 + m * 60 + sec)
}

/// `Z`, `GMT`, `UT`, `+HH:MM`, `-HHMM`, … → offset east of GMT in seconds.
fn parse_zone(s: &str) -> Option<i64> {
    match s {
        "" | "Z" | "GMT" | "UT" | "UTC" => return Some(0),
        _ => {}
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = s[1..].replace(':', "");
    if rest.len() != 4 {
        return None;
    }
    let h: i64 = digits(&rest[0..2])?;
    let m: i64 = digits(&rest[2..4])?;
    Some(sign * (h * 3600 + m * 60))
}

/// Accept the documented `YYYY-MM-DD`, ISO 8601 date-times (`2024-01-02T10:00:00Z`, optional
/// fraction, offset or space separator) and RFC 2822 (`Wed, 19 Jun 2019 22:04:00 -0000`).
fn parse_date_filter(s: &str) -> Option<DateBound> {
    let s = s.trim();
    if let Some(day) = parse_ymd(s) {
        return Some(DateBound::Day(day));
    }
    if s.len() >= 19 && matches!(s.as_bytes().get(10), Some(b'T') | Some(b' ')) {
        let day = parse_ymd(s.get(0..10)?)?;
        let sod = parse_hms(s.get(11..19)?)?;
        let mut rest = s.get(19..)?;
        if let Some(fraction) = rest.strip_prefix('.') {
            let end = fraction
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(fraction.len());
            if end == 0 {
                return None;
            }
            rest = &fraction[end..];
        }
        let offset = parse_zone(rest.trim())?;
        return Some(DateBound::Instant(day * 86_400 + sod - offset));
    }
    let s = match s.split_once(',') {
        Some((weekday, rest)) if WEEKDAYS.contains(&weekday.trim()) => rest.trim(),
        _ => s,
    };
    let fields: Vec<&str> = s.split_whitespace().collect();
    if let [day, month, year, time, zone] = fields.as_slice() {
        let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
        let (year, day): (i64, u32) = (digits(year)?, digits(day)?);
        let days = days_from_civil(year, month, day);
        if civil_from_days(days) != (year, month, day) {
            return None;
        }
        let sod = parse_hms(time)?;
        let offset = parse_zone(zone)?;
        return Some(DateBound::Instant(days * 86_400 + sod - offset));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    // --------------------------------------------------------------------------------------------
    // A tiny HTTP/1.1 client over std, so the tests exercise the real wire format.

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!(
                    "status {} body is not JSON ({e}): {}",
                    self.status,
                    String::from_utf8_lossy(&self.body)
                )
            })
        }
    }

    struct Client {
        reader: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(d: &TwilioDouble) -> Client {
            let addr = d.url().trim_start_matches("http://").to_string();
            let stream = TcpStream::connect(addr).expect("connect to the double");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Client {
                reader: BufReader::new(stream),
            }
        }

        fn set_read_timeout(&self, t: Duration) {
            self.reader.get_ref().set_read_timeout(Some(t)).unwrap();
        }

        /// `Ok(None)` when the server closed the connection without answering.
        fn request(
            &mut self,
            method: &str,
            target: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> std::io::Result<Option<Resp>> {
            let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(body);
            self.reader.get_mut().write_all(&bytes)?;
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                self.reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').expect("a header line");
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            Ok(Some(Resp {
                status,
                headers,
                body,
            }))
        }
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    fn auth(d: &TwilioDouble) -> String {
        basic(&d.config().account_sid, &d.config().auth_token)
    }

    fn messages_path(d: &TwilioDouble) -> String {
        format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            d.config().account_sid
        )
    }

    fn encode_form(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", http::percent_encode(k), http::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// POST a raw form body on a fresh connection; `None` = hung up.
    fn post_raw(d: &TwilioDouble, body: &str) -> Option<Resp> {
        let a = auth(d);
        Client::connect(d)
            .request(
                "POST",
                &messages_path(d),
                &[
                    ("Authorization", &a),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .expect("request")
    }

    fn create(d: &TwilioDouble, pairs: &[(&str, &str)]) -> Resp {
        post_raw(d, &encode_form(pairs)).expect("an answer")
    }

    fn get(d: &TwilioDouble, target: &str) -> Resp {
        let a = auth(d);
        Client::connect(d)
            .request("GET", target, &[("Authorization", &a)], b"")
            .expect("request")
            .expect("an answer")
    }

    fn assert_twilio_error(resp: &Resp, status: u16, code: u64) -> Value {
        let body = resp.json();
        assert_eq!(resp.status, status, "body: {body}");
        assert_eq!(body["code"], code, "body: {body}");
        assert_eq!(body["status"], status);
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(resp
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")));
        body
    }

    const TO: &str = "+15551234567";
    const FROM: &str = "+15557654321";

    fn ok_form<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![("To", TO), ("From", FROM), ("Body", "hello")];
        v.extend_from_slice(extra);
        v
    }

    fn is_hex_sid(s: &str, prefix: &str) -> bool {
        is_sid(s, prefix) && s[2..].bytes().all(|b| !b.is_ascii_uppercase())
    }

    // --------------------------------------------------------------------------------------------

    #[test]
    fn twilio_happy_create_returns_full_resource_and_stores_it() {
        let d = TwilioDouble::start(TwilioConfig::default());
        // A busy sender: the message stays queued for the whole test, so fetch == create.
        d.set_send_delay(Duration::from_secs(600));
        // `+` as %2B, a space as `+` (form encoding), a repeated MediaUrl-free create.
        let raw = "To=%2B15551234567&From=%2B15557654321&Body=Hello+world&StatusCallback=https%3A%2F%2Fexample.com%2Fcb%3Fid%3D7";
        let resp = post_raw(&d, raw).unwrap();
        assert_eq!(resp.status, 201);
        let m = resp.json();
        let sid = m["sid"].as_str().unwrap().to_string();
        assert!(is_hex_sid(&sid, "SM"), "{sid}");
        assert_eq!(m["account_sid"], d.config().account_sid);
        assert_eq!(m["api_version"], "2010-04-01");
        assert_eq!(m["to"], "+15551234567");
        assert_eq!(m["from"], "+15557654321");
        assert_eq!(m["body"], "Hello world");
        assert_eq!(m["status"], "queued");
        assert_eq!(m["direction"], "outbound-api");
        assert_eq!(m["num_segments"], "1");
        assert_eq!(m["num_media"], "0");
        assert_eq!(m["price"], Value::Null);
        assert_eq!(m["error_code"], Value::Null);
        assert_eq!(m["messaging_service_sid"], Value::Null);
        let date = m["date_created"].as_str().unwrap();
        assert!(date.ends_with(" +0000") && date.len() == 31, "{date}");
        assert_eq!(m["date_sent"], Value::Null, "not sent yet (§2)");
        assert_eq!(m["date_updated"], date);
        let uri = format!(
            "/2010-04-01/Accounts/{}/Messages/{sid}.json",
            d.config().account_sid
        );
        assert_eq!(m["uri"], uri);
        assert_eq!(
            m["subresource_uris"]["media"],
            uri.replace(".json", "/Media.json")
        );

        let stored = d.messages();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].sid, sid);
        assert_eq!(stored[0].to, "+15551234567");
        assert_eq!(stored[0].from.as_deref(), Some("+15557654321"));
        assert_eq!(stored[0].body, "Hello world");
        assert_eq!(stored[0].requested_body, "Hello world");
        assert_eq!(stored[0].status, "queued");
        assert_eq!(
            stored[0].status_callback.as_deref(),
            Some("https://example.com/cb?id=7")
        );
        assert_eq!(stored[0].num_segments, 1);
        assert_eq!(d.create_requests(), 1);
        let reqs = d.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].status, Some(201));
        assert!(reqs[0].authorization_ok);
        assert!(reqs[0].form.contains(&("To".into(), "+15551234567".into())));

        // Fetch returns the same resource; an unknown SID is 20404.
        let fetched = get(&d, &uri);
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.json(), m);
        let missing = format!(
            "/2010-04-01/Accounts/{}/Messages/SM{}.json",
            d.config().account_sid,
            "0".repeat(32)
        );
        assert_twilio_error(&get(&d, &missing), 404, 20404);

        // Two creates never share a SID.
        let second = create(&d, &ok_form(&[]));
        assert_ne!(second.json()["sid"], m["sid"]);
    }

    #[test]
    fn twilio_raw_plus_decodes_to_space_and_fails_21211() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let resp = post_raw(&d, "To=+15551234567&From=%2B15557654321&Body=hi").unwrap();
        let body = assert_twilio_error(&resp, 400, 21211);
        assert_eq!(
            body["message"],
            "The 'To' number  15551234567 is not a valid phone number."
        );
        assert!(d.messages().is_empty());
    }

    #[test]
    fn twilio_validation_codes_in_order() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let long_gsm = "a".repeat(1601);
        let emoji_800 = "😀".repeat(800); // exactly 1600 UTF-16 units: allowed
        let emoji_801 = "😀".repeat(801); // 801 characters but 1602 units: rejected
        let cases: Vec<(Vec<(&str, &str)>, u64)> = vec![
            (vec![], 21604),
            (vec![("To", ""), ("From", FROM), ("Body", "x")], 21604),
            (vec![("Body", "x"), ("From", "garbage")], 21604),
            (vec![("To", "garbage")], 21603),
            (vec![("To", "garbage"), ("Body", "x")], 21603),
            (vec![("To", "garbage"), ("From", "garbage")], 21602),
            (
                vec![("To", "garbage"), ("From", "garbage"), ("Body", &long_gsm)],
                21617,
            ),
            (
                vec![("To", TO), ("From", FROM), ("Body", &emoji_801)],
                21617,
            ),
            (
                vec![("To", "garbage"), ("From", "garbage"), ("Body", "x")],
                21211,
            ),
            (
                vec![("To", "15551234567"), ("From", FROM), ("Body", "x")],
                21211,
            ),
            (
                vec![("To", "+0551234567"), ("From", FROM), ("Body", "x")],
                21211,
            ),
            (
                vec![("To", "+1555123"), ("From", FROM), ("Body", "x")],
                21211,
            ),
            (
                vec![("To", TO), ("From", "not valid!"), ("Body", "x")],
                21212,
            ),
            (vec![("To", TO), ("From", "+123"), ("Body", "x")], 21212),
            (
                vec![("To", TO), ("MessagingServiceSid", "MG123"), ("Body", "x")],
                21701,
            ),
            // Magic numbers (reference §8.3).
            (
                vec![("To", "+15005550001"), ("From", FROM), ("Body", "x")],
                21211,
            ),
            (
                vec![("To", "+15005550002"), ("From", FROM), ("Body", "x")],
                21612,
            ),
            (
                vec![("To", "+15005550003"), ("From", FROM), ("Body", "x")],
                21408,
            ),
            (
                vec![("To", "+15005550004"), ("From", FROM), ("Body", "x")],
                21610,
            ),
            (
                vec![("To", "+15005550009"), ("From", FROM), ("Body", "x")],
                21614,
            ),
            (
                vec![("To", TO), ("From", "+15005550001"), ("Body", "x")],
                21212,
            ),
            (
                vec![("To", TO), ("From", "+15005550007"), ("Body", "x")],
                21606,
            ),
            (
                vec![("To", TO), ("From", "+15005550008"), ("Body", "x")],
                21611,
            ),
            // From problems are reported before destination problems.
            (
                vec![
                    ("To", "+15005550004"),
                    ("From", "+15005550007"),
                    ("Body", "x"),
                ],
                21606,
            ),
        ];
        for (form, code) in &cases {
            let resp = create(&d, form);
            let body = assert_twilio_error(&resp, 400, *code);
            if *code == 21604 {
                assert_eq!(body["message"], "A 'To' phone number is required.");
            }
        }
        assert!(d.messages().is_empty(), "no failed create may store");
        assert_eq!(d.create_requests(), cases.len());
        let recorded: Vec<Option<u32>> = d.requests().iter().map(|r| r.twilio_code).collect();
        assert_eq!(
            recorded,
            cases
                .iter()
                .map(|(_, c)| Some(*c as u32))
                .collect::<Vec<_>>()
        );

        // Boundaries that must pass: 1600 GSM chars, 1600 UTF-16 units, magic passing From,
        // alphanumeric sender, short code, media without body.
        let gsm_1600 = "a".repeat(1600);
        for form in [
            vec![("To", TO), ("From", FROM), ("Body", &gsm_1600)],
            vec![("To", TO), ("From", FROM), ("Body", &emoji_800)],
            vec![("To", TO), ("From", "+15005550006"), ("Body", "x")],
            vec![("To", TO), ("From", "ACME Corp"), ("Body", "x")],
            vec![("To", TO), ("From", "12345"), ("Body", "x")],
            vec![
                ("To", TO),
                ("From", FROM),
                ("MediaUrl", "https://example.com/a.png"),
                ("MediaUrl", "https://example.com/b.png"),
            ],
        ] {
            let resp = create(&d, &form);
            assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        }
        let stored = d.messages();
        assert_eq!(stored[0].num_segments, 11); // 1600 septets / 153 per segment
                                                // 1600 UTF-16 units; a surrogate pair is not split, so 33 emoji per 67-unit segment.
        assert_eq!(stored[1].num_segments, 25);
        let mms = stored.last().unwrap();
        assert_eq!(mms.media_urls.len(), 2, "repeated MediaUrl keys are kept");
        assert!(mms.sid.starts_with("MM"));
    }

    #[test]
    fn twilio_ownership_and_messaging_services() {
        let service = format!("MG{}", "ab".repeat(16));
        let d = TwilioDouble::start(TwilioConfig {
            owned_numbers: vec![FROM.to_string(), "+15005550008".to_string()],
            messaging_services: vec![service.clone()],
            ..TwilioConfig::default()
        });
        assert_twilio_error(
            &create(&d, &[("To", TO), ("From", "+15559999999"), ("Body", "x")]),
            400,
            21606,
        );
        // Magic From numbers apply only to owned numbers once ownership is configured.
        assert_twilio_error(
            &create(&d, &[("To", TO), ("From", "+15005550001"), ("Body", "x")]),
            400,
            21606,
        );
        assert_twilio_error(
            &create(&d, &[("To", TO), ("From", "+15005550008"), ("Body", "x")]),
            400,
            21611,
        );
        let unknown = format!("MG{}", "cd".repeat(16));
        let body = assert_twilio_error(
            &create(
                &d,
                &[("To", TO), ("MessagingServiceSid", &unknown), ("Body", "x")],
            ),
            400,
            21701,
        );
        assert_eq!(
            body["message"],
            format!("The Messaging Service Sid {unknown} is invalid.")
        );

        let resp = create(
            &d,
            &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
        );
        assert_eq!(resp.status, 201);
        let m = resp.json();
        assert_eq!(m["from"], Value::Null);
        assert_eq!(m["messaging_service_sid"], service);
        assert_eq!(m["status"], "accepted");
        assert_eq!(m["num_segments"], "0");
        let ok = create(&d, &ok_form(&[]));
        assert_eq!(ok.status, 201);
        assert_eq!(d.messages().len(), 2);
    }

    #[test]
    fn twilio_json_body_is_not_read() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let a = auth(&d);
        let body = serde_json::to_vec(&json!({"To": TO, "From": FROM, "Body": "hi"})).unwrap();
        let resp = Client::connect(&d)
            .request(
                "POST",
                &messages_path(&d),
                &[("Authorization", &a), ("Content-Type", "application/json")],
                &body,
            )
            .unwrap()
            .unwrap();
        assert_twilio_error(&resp, 400, 21604);
        // A form body without a Content-Type is not read either.
        let resp = Client::connect(&d)
            .request(
                "POST",
                &messages_path(&d),
                &[("Authorization", &a)],
                encode_form(&ok_form(&[])).as_bytes(),
            )
            .unwrap()
            .unwrap();
        assert_twilio_error(&resp, 400, 21604);
        // The charset parameter is fine.
        let resp = Client::connect(&d)
            .request(
                "POST",
                &messages_path(&d),
                &[
                    ("Authorization", &a),
                    (
                        "Content-Type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    ),
                ],
                encode_form(&ok_form(&[])).as_bytes(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(d.messages().len(), 1);
    }

    #[test]
    fn twilio_auth_and_routing() {
        let key = format!("SK{}", "12".repeat(16));
        let d = TwilioDouble::start(TwilioConfig {
            api_keys: vec![(key.clone(), "key-secret".to_string())],
            ..TwilioConfig::default()
        });
        let ac = d.config().account_sid.clone();
        let form = encode_form(&ok_form(&[]));
        let send = |authz: Option<&str>, path: &str, method: &str| {
            let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
            if let Some(a) = authz {
                headers.push(("Authorization", a));
            }
            Client::connect(&d)
                .request(method, path, &headers, form.as_bytes())
                .unwrap()
                .unwrap()
        };
        let path = messages_path(&d);

        let resp = send(None, &path, "POST");
        assert_eq!(resp.status, 401);
        assert_eq!(
            resp.json(),
            json!({"code":20003,"detail":"Your AccountSid or AuthToken was incorrect.","message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401})
        );
        assert_eq!(
            resp.header("www-authenticate"),
            Some("Basic realm=\"Twilio API\"")
        );
        assert_twilio_error(&send(Some(&basic(&ac, "wrong")), &path, "POST"), 401, 20003);
        assert_twilio_error(
            &send(Some(&basic(&key, "wrong")), &path, "POST"),
            401,
            20003,
        );
        assert_twilio_error(&send(Some("Bearer abc"), &path, "POST"), 401, 20003);
        assert!(d.messages().is_empty());
        assert_eq!(
            d.create_requests(),
            4,
            "every POST counts, even unauthenticated"
        );
        assert!(!d.requests()[0].authorization_ok);

        // The API key works, with the account SID in the path.
        let resp = send(Some(&basic(&key, "key-secret")), &path, "POST");
        assert_eq!(resp.status, 201);
        assert_eq!(resp.json()["account_sid"], ac);
        // …but the key SID in the path is not an account: 20404.
        let key_path = format!("/2010-04-01/Accounts/{key}/Messages.json");
        assert_twilio_error(
            &send(Some(&basic(&key, "key-secret")), &key_path, "POST"),
            404,
            20404,
        );
        // Another well-formed account: permission failure.
        let other = format!("/2010-04-01/Accounts/AC{}/Messages.json", "f".repeat(32));
        assert_twilio_error(&send(Some(&auth(&d)), &other, "POST"), 401, 20003);
        // No `.json`, unknown paths, wrong methods.
        let no_json = format!("/2010-04-01/Accounts/{ac}/Messages");
        let body = assert_twilio_error(&send(Some(&auth(&d)), &no_json, "POST"), 404, 20404);
        assert_eq!(
            body,
            json!({"code":20404,"message":format!("The requested resource {no_json} was not found"),"more_info":"https://www.twilio.com/docs/errors/20404","status":404})
        );
        assert_twilio_error(&send(Some(&auth(&d)), "/nothing/here", "GET"), 404, 20404);
        let resp = send(Some(&auth(&d)), &path, "DELETE");
        assert_twilio_error(&resp, 405, 20004);
        assert_eq!(resp.header("allow"), Some("GET, POST"));
        assert_eq!(d.messages().len(), 1);

        // Account fetch and owned numbers, for a configuration check.
        let account = get(&d, &format!("/2010-04-01/Accounts/{ac}.json"));
        assert_eq!(account.status, 200);
        let a = account.json();
        assert_eq!(a["sid"], ac);
        assert_eq!(a["status"], "active");
        assert_eq!(a["type"], "Full");
        let numbers = get(
            &d,
            &format!(
                "/2010-04-01/Accounts/{ac}/IncomingPhoneNumbers.json?PhoneNumber=%2B15557654321"
            ),
        );
        assert_eq!(numbers.status, 200);
        assert_eq!(numbers.json()["incoming_phone_numbers"], json!([]));
    }

    #[test]
    fn twilio_incoming_phone_numbers_lists_owned() {
        let d = TwilioDouble::start(TwilioConfig {
            owned_numbers: vec![FROM.to_string(), "+447700900123".to_string()],
            ..TwilioConfig::default()
        });
        let ac = d.config().account_sid.clone();
        let path = format!("/2010-04-01/Accounts/{ac}/IncomingPhoneNumbers.json");
        let all = get(&d, &path).json();
        assert_eq!(all["incoming_phone_numbers"].as_array().unwrap().len(), 2);
        let one = get(&d, &format!("{path}?PhoneNumber=%2B15557654321")).json();
        let list = one["incoming_phone_numbers"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["phone_number"], FROM);
        assert_eq!(list[0]["capabilities"]["sms"], true);
        assert!(is_sid(list[0]["sid"].as_str().unwrap(), "PN"));
        assert_eq!(one["next_page_uri"], Value::Null);
        assert_eq!(
            all["incoming_phone_numbers"][0]["sid"], list[0]["sid"],
            "stable PN sid"
        );
    }

    #[test]
    fn twilio_list_filters_and_pages_exactly_once() {
        let d = TwilioDouble::start(TwilioConfig::default());
        // Sent at once, so the DateSent filters below see every message.
        d.set_send_delay(Duration::ZERO);
        let other = "+15550001111";
        let mut created = Vec::new();
        for i in 0..5 {
            let body = format!("m{i}");
            let resp = create(&d, &[("To", TO), ("From", FROM), ("Body", &body)]);
            created.push(resp.json()["sid"].as_str().unwrap().to_string());
            create(&d, &[("To", other), ("From", FROM), ("Body", "noise")]);
        }
        let today = rfc2822(SystemTime::now()); // for the day
        let (y, m, day) = civil_from_days(unix_seconds(SystemTime::now()).div_euclid(86_400));
        let ymd = format!("{y:04}-{m:02}-{day:02}");
        assert!(today.contains(&format!("{day:02} ")));

        let first = format!(
            "{}?To=%2B15551234567&DateSent%3E={ymd}&PageSize=2",
            messages_path(&d)
        );
        let mut target = first.clone();
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut late = None;
        loop {
            let resp = get(&d, &target);
            assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
            let page = resp.json();
            assert_eq!(page["page_size"], 2);
            assert_eq!(page["page"], pages);
            assert_eq!(page["start"], pages * 2);
            let uri = page["uri"].as_str().unwrap();
            assert!(uri.contains("To=%2B15551234567&DateSent%3E="), "{uri}");
            assert_eq!(
                page["first_page_uri"],
                format!(
                    "/2010-04-01/Accounts/{}/Messages.json?To=%2B15551234567&DateSent%3E={ymd}&PageSize=2&Page=0",
                    d.config().account_sid
                )
            );
            if pages == 0 {
                assert_eq!(page["previous_page_uri"], Value::Null);
                // A message created while paging must not shift or repeat the remaining pages.
                late = Some(
                    create(&d, &ok_form(&[])).json()["sid"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            } else {
                assert!(page["previous_page_uri"].is_string());
            }
            for m in page["messages"].as_array().unwrap() {
                assert_eq!(m["to"], TO);
                seen.push(m["sid"].as_str().unwrap().to_string());
            }
            pages += 1;
            match page["next_page_uri"].as_str() {
                Some(next) => {
                    assert!(next.contains("PageToken="), "{next}");
                    target = next.to_string();
                }
                None => break,
            }
            assert!(pages < 10, "paging does not terminate");
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = created.iter().rev().cloned().collect();
        assert_eq!(seen, expected, "newest first, every message exactly once");

        // Going back from page 2 (via previous_page_uri) lands on page 1's content.
        let p1 = get(&d, &format!("{first}&Page=0")).json();
        let p2 = get(&d, p1["next_page_uri"].as_str().unwrap()).json();
        let back = get(&d, p2["previous_page_uri"].as_str().unwrap()).json();
        assert_eq!(back["messages"], p1["messages"]);
        // p1 now starts with the late message, created after the first listing.
        assert_eq!(p1["messages"][0]["sid"], late.unwrap().as_str());

        // Tomorrow-onwards and before-yesterday find nothing; From filters; raw `>` key works.
        let tomorrow = civil_from_days(unix_seconds(SystemTime::now()).div_euclid(86_400) + 1);
        let tomorrow = format!("{:04}-{:02}-{:02}", tomorrow.0, tomorrow.1, tomorrow.2);
        let none = get(&d, &format!("{}?DateSent>={tomorrow}", messages_path(&d))).json();
        assert_eq!(none["messages"], json!([]));
        assert_eq!(none["next_page_uri"], Value::Null);
        assert!(none["uri"]
            .as_str()
            .unwrap()
            .contains(&format!("DateSent%3E={tomorrow}")));
        let all = get(&d, &format!("{}?DateSent={ymd}", messages_path(&d))).json();
        assert_eq!(all["messages"].as_array().unwrap().len(), 11);
        assert_eq!(all["page_size"], 50);
        let noise = get(
            &d,
            &format!(
                "{}?To=%2B15550001111&From=%2B15557654321",
                messages_path(&d)
            ),
        )
        .json();
        assert_eq!(noise["messages"].as_array().unwrap().len(), 5);
        let nobody = get(&d, &format!("{}?From=%2B15550000000", messages_path(&d))).json();
        assert_eq!(nobody["messages"], json!([]));

        for bad in [
            "PageSize=0",
            "PageSize=1001",
            "PageSize=x",
            "DateSent%3E=yesterday",
            "PageToken=PAnope",
        ] {
            assert_twilio_error(
                &get(&d, &format!("{}?{bad}", messages_path(&d))),
                400,
                20001,
            );
        }
    }

    #[test]
    fn twilio_list_date_filters_against_seeded_history() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        // 2020-01-01T11:00:00Z and 12:00:00Z, 2020-01-02T00:00:00Z.
        let base = 1_577_836_800;
        let a = d.seed_message(TO, FROM, "a", at(base + 11 * 3600)).sid;
        let b = d.seed_message(TO, FROM, "b", at(base + 12 * 3600)).sid;
        let c = d.seed_message(TO, FROM, "c", at(base + 86_400)).sid;
        // Still queued for the whole test: listed, but matching no DateSent filter.
        d.set_send_delay(Duration::from_secs(600));
        let fresh = create(&d, &ok_form(&[])).json()["sid"]
            .as_str()
            .unwrap()
            .to_string();
        let list = |q: &str| -> Vec<String> {
            let page = get(&d, &format!("{}?{q}", messages_path(&d))).json();
            page["messages"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|m| m["sid"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            list(""),
            vec![fresh.clone(), c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(list("DateSent=2020-01-01"), vec![b.clone(), a.clone()]);
        assert_eq!(list("DateSent%3C=2020-01-01"), vec![b.clone(), a.clone()]);
        assert_eq!(list("DateSent%3E=2020-01-02"), vec![c.clone()]);
        // Instants are inclusive.
        assert_eq!(
            list("DateSent%3E=2020-01-01T12:00:00Z&DateSent%3C=2020-01-02T00:00:00Z"),
            vec![c.clone(), b.clone()]
        );
        assert_eq!(
            list("DateSent%3E=2020-01-01T12%3A00%3A01Z&DateSent%3C=2020-01-01T23:59:59Z"),
            Vec::<String>::new()
        );
        assert_eq!(
            list("DateSent%3C=Wed%2C+01+Jan+2020+11%3A00%3A00+-0000"),
            vec![a.clone()]
        );
        let seeded = &d.messages()[0];
        assert_eq!(seeded.status, "delivered");
        let fetched = get(
            &d,
            &format!("{}/{a}.json", messages_path(&d).trim_end_matches(".json")),
        )
        .json();
        assert_eq!(fetched["date_created"], "Wed, 01 Jan 2020 11:00:00 +0000");
        assert_eq!(fetched["date_sent"], "Wed, 01 Jan 2020 11:00:00 +0000");
        assert_eq!(
            fetched["status"], "delivered",
            "seeded history keeps its status"
        );
    }

    #[test]
    fn twilio_fault_too_many_requests_then_normal() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(
            2,
            Fault::TooManyRequests {
                retry_after: Some(3),
            },
        );
        for _ in 0..2 {
            let resp = create(&d, &ok_form(&[]));
            let body = assert_twilio_error(&resp, 429, 20429);
            assert_eq!(body["message"], "Too Many Requests");
            assert_eq!(resp.header("retry-after"), Some("3"));
        }
        assert!(d.messages().is_empty());
        // Faults apply to creates only: listing still works.
        assert_eq!(get(&d, &messages_path(&d)).status, 200);
        let resp = create(&d, &ok_form(&[]));
        assert_eq!(resp.status, 201);
        assert_eq!(d.messages().len(), 1);
        assert_eq!(d.create_requests(), 3);
        // Without Retry-After.
        d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
        let resp = create(&d, &ok_form(&[]));
        assert_eq!(resp.status, 429);
        assert_eq!(resp.header("retry-after"), None);
    }

    #[test]
    fn twilio_fault_error_and_non_json_do_not_create() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(
            1,
            Fault::Error {
                status: 503,
                code: 20503,
                message: "Service unavailable".into(),
                retry_after: Some(7),
            },
        );
        d.fail_next_creates(1, Fault::NonJsonError { status: 502 });
        let resp = create(&d, &ok_form(&[]));
        let body = assert_twilio_error(&resp, 503, 20503);
        assert_eq!(body["message"], "Service unavailable");
        assert_eq!(resp.header("retry-after"), Some("7"));
        let resp = create(&d, &ok_form(&[]));
        assert_eq!(resp.status, 502);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
        assert!(d.messages().is_empty());
        // Before-create faults win over validation.
        d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
        assert_eq!(create(&d, &[]).status, 429);
        let codes: Vec<_> = d
            .requests()
            .iter()
            .map(|r| (r.status, r.twilio_code))
            .collect();
        assert_eq!(
            codes,
            vec![
                (Some(503), Some(20503)),
                (Some(502), None),
                (Some(429), Some(20429))
            ]
        );
    }

    #[test]
    fn twilio_fault_hangup_before_create() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(1, Fault::HangupBeforeCreate);
        assert!(post_raw(&d, &encode_form(&ok_form(&[]))).is_none());
        assert!(d.messages().is_empty());
        assert_eq!(d.create_requests(), 1);
        assert_eq!(d.requests()[0].status, None);
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
    }

    #[test]
    fn twilio_fault_error_after_create_stores() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
        d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 503 });
        let resp = create(&d, &ok_form(&[]));
        assert_twilio_error(&resp, 500, 20500);
        assert_twilio_error(&create(&d, &ok_form(&[])), 503, 20503);
        assert_eq!(d.messages().len(), 2, "the messages exist despite the 5xx");
        // They are visible to reconciliation through the list.
        let page = get(&d, &format!("{}?To=%2B15551234567", messages_path(&d))).json();
        assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn twilio_fault_after_create_consumed_by_invalid_request() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
        assert_twilio_error(&create(&d, &[("To", TO)]), 400, 21603);
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert_eq!(d.messages().len(), 1);
    }

    #[test]
    fn twilio_fault_hangup_after_create_stores() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(1, Fault::HangupAfterCreate);
        assert!(post_raw(&d, &encode_form(&ok_form(&[]))).is_none());
        assert_eq!(d.messages().len(), 1);
        assert_eq!(d.requests()[0].status, None);
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert_eq!(d.messages().len(), 2);
    }

    #[test]
    fn twilio_fault_delay_after_create_times_out_client() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.fail_next_creates(1, Fault::DelayAfterCreate(Duration::from_millis(600)));
        let mut client = Client::connect(&d);
        client.set_read_timeout(Duration::from_millis(150));
        let a = auth(&d);
        let started = Instant::now();
        let result = client.request(
            "POST",
            &messages_path(&d),
            &[
                ("Authorization", &a),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            encode_form(&ok_form(&[])).as_bytes(),
        );
        assert!(result.is_err(), "the client must time out");
        assert!(started.elapsed() < Duration::from_millis(550));
        assert!(d.wait_for_messages(1, Duration::from_secs(2)));
        // A patient client gets the normal 201 after the delay.
        d.fail_next_creates(1, Fault::DelayAfterCreate(Duration::from_millis(300)));
        let started = Instant::now();
        let resp = create(&d, &ok_form(&[]));
        assert_eq!(resp.status, 201);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(d.messages().len(), 2);
    }

    #[test]
    fn twilio_outage_and_queue_precedence() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_outage(Some(Fault::ErrorAfterCreate { status: 500 }));
        d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
        assert_eq!(
            create(&d, &ok_form(&[])).status,
            429,
            "the queue goes first"
        );
        assert_eq!(create(&d, &ok_form(&[])).status, 500);
        assert_eq!(create(&d, &ok_form(&[])).status, 500);
        assert_eq!(d.messages().len(), 2);
        d.set_outage(None);
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
    }

    #[test]
    fn twilio_latency_applies_to_every_request() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_latency(Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(get(&d, &messages_path(&d)).status, 200);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert!(started.elapsed() >= Duration::from_millis(200));
        d.set_latency(Duration::ZERO);
        let started = Instant::now();
        create(&d, &ok_form(&[]));
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn twilio_concurrency_limit_refuses_with_20429_without_creating() {
        let d = std::sync::Arc::new(TwilioDouble::start(TwilioConfig::default()));
        d.set_concurrency_limit(Some(2));
        d.set_create_latency(Duration::from_millis(400));
        let answers: Vec<u16> = (0..3)
            .map(|i| {
                let d = d.clone();
                std::thread::sleep(Duration::from_millis(if i == 2 { 100 } else { 0 }));
                std::thread::spawn(move || create(&d, &ok_form(&[])).status)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            answers.iter().filter(|s| **s == 201).count(),
            2,
            "{answers:?}"
        );
        assert_eq!(
            answers.iter().filter(|s| **s == 429).count(),
            1,
            "{answers:?}"
        );
        assert_eq!(d.too_many_requests(), 1);
        assert_eq!(d.peak_concurrency(), 2);
        assert_eq!(d.messages().len(), 2, "a refused request creates nothing");
        let refused = d
            .requests()
            .into_iter()
            .find(|r| r.status == Some(429))
            .unwrap();
        assert_eq!(refused.twilio_code, Some(20429));
        d.set_concurrency_limit(None);
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
    }

    #[test]
    fn twilio_keep_alive_and_wait_and_stop() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let a = auth(&d);
        let mut client = Client::connect(&d);
        for _ in 0..3 {
            let resp = client
                .request(
                    "POST",
                    &messages_path(&d),
                    &[
                        ("Authorization", &a),
                        ("Content-Type", "application/x-www-form-urlencoded"),
                    ],
                    encode_form(&ok_form(&[])).as_bytes(),
                )
                .unwrap()
                .unwrap();
            assert_eq!(resp.status, 201);
        }
        assert_eq!(d.connections_accepted(), 1);
        assert!(d.wait_for_messages(3, Duration::from_millis(10)));
        let started = Instant::now();
        assert!(!d.wait_for_messages(4, Duration::from_millis(100)));
        assert!(started.elapsed() >= Duration::from_millis(100));

        // A waiter is woken by a create from another thread.
        let url = d.url();
        let body = encode_form(&ok_form(&[]));
        let path = messages_path(&d);
        let poster = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
            let req = format!(
                "POST {path} HTTP/1.1\r\nAuthorization: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        });
        assert!(d.wait_for_messages(4, Duration::from_secs(5)));
        assert!(poster.join().unwrap().starts_with("HTTP/1.1 201"));

        // After stop, the kept-alive connection is cut and new connections fail or go unanswered.
        d.stop();
        let cut = client.request("GET", &messages_path(&d), &[], b"");
        assert!(matches!(cut, Ok(None) | Err(_)));
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let addr = d.url().trim_start_matches("http://").to_string();
            match TcpStream::connect(&addr) {
                Err(_) => break,
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
                    let mut buf = [0u8; 1];
                    if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "still serving after stop");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn message_path(d: &TwilioDouble, sid: &str) -> String {
        format!(
            "/2010-04-01/Accounts/{}/Messages/{sid}.json",
            d.config().account_sid
        )
    }

    fn sid_of(resp: &Resp) -> String {
        resp.json()["sid"].as_str().unwrap().to_string()
    }

    fn list_sids(d: &TwilioDouble, query: &str) -> Vec<String> {
        let page = get(d, &format!("{}?{query}", messages_path(d))).json();
        page["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|m| m["sid"].as_str().unwrap().to_string())
            .collect()
    }

    fn stored(d: &TwilioDouble, sid: &str) -> StoredMessage {
        d.messages().into_iter().find(|m| m.sid == sid).unwrap()
    }

    #[test]
    fn twilio_lifecycle_queued_then_sent_after_send_delay() {
        let d = TwilioDouble::start(TwilioConfig::default());
        // The default delay is non-zero, as with the real service.
        assert_eq!(DEFAULT_SEND_DELAY, Duration::from_secs(1));
        let default = stored(&d, &sid_of(&create(&d, &ok_form(&[]))));
        assert_eq!(default.sends_at, default.date_created + DEFAULT_SEND_DELAY);

        // A busy sender: stays queued/accepted, date_sent null, on every read.
        d.set_send_delay(Duration::from_secs(600));
        let service = format!("MG{}", "ab".repeat(16));
        let busy = sid_of(&create(&d, &ok_form(&[])));
        let busy_mg = sid_of(&create(
            &d,
            &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
        ));
        for (sid, initial) in [(&busy, "queued"), (&busy_mg, "accepted")] {
            let m = get(&d, &message_path(&d, sid)).json();
            assert_eq!(m["status"], initial);
            assert_eq!(m["date_sent"], Value::Null);
            assert_eq!(m["date_updated"], m["date_created"]);
        }

        // A short delay: the create answer shows the initial state, later reads show `sent`.
        d.set_send_delay(Duration::from_millis(200));
        let resp = create(&d, &ok_form(&[])).json();
        assert_eq!(resp["status"], "queued");
        assert_eq!(resp["date_sent"], Value::Null);
        let quick_mg = create(
            &d,
            &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
        )
        .json();
        assert_eq!(quick_mg["status"], "accepted");
        assert_eq!(quick_mg["date_sent"], Value::Null);
        thread::sleep(Duration::from_millis(250));
        for created in [&resp, &quick_mg] {
            let sid = created["sid"].as_str().unwrap();
            let record = stored(&d, sid);
            assert_eq!(
                record.sends_at,
                record.date_created + Duration::from_millis(200)
            );
            let m = get(&d, &message_path(&d, sid)).json();
            assert_eq!(m["status"], "sent");
            assert_eq!(m["date_sent"], rfc2822(record.sends_at));
            assert_eq!(m["date_updated"], m["date_sent"]);
            assert_eq!(m["date_created"], created["date_created"]);
            // The record keeps the initial status; the lifecycle is computed from the clock.
            assert!(matches!(record.status.as_str(), "queued" | "accepted"));
            assert_eq!(record.status_at(SystemTime::now()), "sent");
            assert_eq!(record.status_at(record.date_created), record.status);
            assert_eq!(record.date_sent_at(record.date_created), None);
        }
        let page = get(&d, &messages_path(&d)).json();
        let statuses: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap())
            .collect();
        assert_eq!(&statuses[..4], ["sent", "sent", "accepted", "queued"]);

        // A later delay change does not move messages already stored.
        d.set_send_delay(Duration::from_secs(600));
        let sid = resp["sid"].as_str().unwrap();
        assert_eq!(get(&d, &message_path(&d, sid)).json()["status"], "sent");

        // Seeded history keeps its explicit status, date_sent = date_created.
        let when = SystemTime::now() - Duration::from_secs(3600);
        let seeded = d.seed_message(TO, FROM, "old", when);
        assert_eq!(seeded.sends_at, when);
        let m = get(&d, &message_path(&d, &seeded.sid)).json();
        assert_eq!(m["status"], "delivered");
        assert_eq!(m["date_sent"], rfc2822(when));
        assert_eq!(m["date_sent"], m["date_created"]);
    }

    #[test]
    fn twilio_date_sent_filters_ignore_messages_not_sent() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_send_delay(Duration::from_secs(600));
        let queued = sid_of(&create(&d, &ok_form(&[])));
        d.set_send_delay(Duration::ZERO);
        let sent = sid_of(&create(&d, &ok_form(&[])));
        let day = unix_seconds(stored(&d, &sent).sends_at).div_euclid(86_400);
        let (y, m, dd) = civil_from_days(day);
        let ymd = format!("{y:04}-{m:02}-{dd:02}");
        // Both are listed, newest first by date_created…
        assert_eq!(list_sids(&d, ""), vec![sent.clone(), queued.clone()]);
        assert_eq!(
            list_sids(&d, "To=%2B15551234567"),
            vec![sent.clone(), queued.clone()]
        );
        // …but the queued one (date_sent null) matches no DateSent filter at all.
        for q in [
            format!("DateSent={ymd}"),
            "DateSent%3E=1970-01-01".to_string(),
            "DateSent%3C=2999-12-31".to_string(),
            "DateSent%3E=1970-01-01&DateSent%3C=2999-12-31&To=%2B15551234567".to_string(),
        ] {
            assert_eq!(list_sids(&d, &q), vec![sent.clone()], "{q}");
        }
    }

    #[test]
    fn twilio_visibility_lag_hides_new_messages_from_list_and_fetch() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let ac = d.config().account_sid.clone();
        let early = d.seed_message(TO, FROM, "history", SystemTime::now()).sid;
        d.set_visibility_lag(Duration::from_secs(600));
        let started = Instant::now();
        let hidden = sid_of(&create(&d, &ok_form(&[])));
        d.set_visibility_lag(Duration::from_millis(200));
        let soon = sid_of(&create(&d, &ok_form(&[])));
        // The test's record shows both at once.
        assert_eq!(d.messages().len(), 3);
        assert!(stored(&d, &hidden).visible_at >= started + Duration::from_secs(600));
        // A seeded message made later is still visible at once.
        d.set_visibility_lag(Duration::from_secs(600));
        let later = d.seed_message(TO, FROM, "history", SystemTime::now()).sid;
        let body = assert_twilio_error(&get(&d, &message_path(&d, &hidden)), 404, 20404);
        assert_eq!(
            body["message"],
            format!("The requested resource /2010-04-01/Accounts/{ac}/Messages/{hidden}.json was not found")
        );
        assert_eq!(get(&d, &message_path(&d, &early)).status, 200);
        thread::sleep(Duration::from_millis(250));
        assert_eq!(get(&d, &message_path(&d, &soon)).status, 200);
        assert_eq!(get(&d, &message_path(&d, &later)).status, 200);
        assert_twilio_error(&get(&d, &message_path(&d, &hidden)), 404, 20404);
        let listed = list_sids(&d, "To=%2B15551234567");
        assert!(!listed.contains(&hidden), "{listed:?}");
        assert_eq!(listed.len(), 3);
        assert!(listed.contains(&soon) && listed.contains(&early) && listed.contains(&later));
    }

    #[test]
    fn twilio_trial_account_prefixes_bodies_and_keeps_requested_body() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_trial(true);
        let resp = create(&d, &[("To", TO), ("From", FROM), ("Body", "hi there")]).json();
        let expected = format!("{TRIAL_PREFIX}hi there");
        assert_eq!(TRIAL_PREFIX, "Sent from your Twilio trial account - ");
        assert_eq!(resp["body"], expected);
        let sid = resp["sid"].as_str().unwrap();
        let record = stored(&d, sid);
        assert_eq!(record.body, expected);
        assert_eq!(record.requested_body, "hi there");
        assert_eq!(record.num_segments, count_segments(&expected));
        assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], expected);
        let page = get(&d, &messages_path(&d)).json();
        assert_eq!(page["messages"][0]["body"], expected);
        // 160 requested characters become two billed segments once prefixed.
        let full = "a".repeat(160);
        let long = sid_of(&create(&d, &[("To", TO), ("From", FROM), ("Body", &full)]));
        assert_eq!(stored(&d, &long).num_segments, 2);
        assert_eq!(stored(&d, &long).requested_body, full);
        // Seeded history on a trial account is prefixed too.
        let seeded = d.seed_message(TO, FROM, "old", SystemTime::now());
        assert_eq!(seeded.body, format!("{TRIAL_PREFIX}old"));
        assert_eq!(seeded.requested_body, "old");
        // Off again: stored as sent; no Body (media only) → empty requested_body.
        d.set_trial(false);
        let plain = create(&d, &ok_form(&[])).json();
        assert_eq!(plain["body"], "hello");
        let media = sid_of(&create(
            &d,
            &[
                ("To", TO),
                ("From", FROM),
                ("MediaUrl", "https://example.com/a.png"),
            ],
        ));
        assert_eq!(stored(&d, &media).requested_body, "");
    }

    #[test]
    fn twilio_redaction_blanks_bodies_on_read_only() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_redact_bodies(true);
        let resp = create(&d, &ok_form(&[])).json();
        assert_eq!(resp["body"], "hello", "the create response keeps the body");
        let sid = resp["sid"].as_str().unwrap();
        assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], "");
        let page = get(&d, &messages_path(&d)).json();
        assert_eq!(page["messages"][0]["body"], "");
        assert_eq!(page["messages"][0]["sid"], sid);
        assert_eq!(d.messages()[0].body, "hello");
        assert_eq!(d.messages()[0].requested_body, "hello");
        d.set_redact_bodies(false);
        assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], "hello");
    }

    #[test]
    fn twilio_list_faults_and_outage() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let sid = sid_of(&create(&d, &ok_form(&[])));
        let error = |status, code, message: &str, retry_after| Fault::Error {
            status,
            code,
            message: message.to_string(),
            retry_after,
        };
        d.fail_next_lists(1, error(403, 20003, "Permission Denied", None));
        d.fail_next_lists(1, error(400, 20001, "Invalid parameter", None));
        d.fail_next_lists(
            1,
            error(500, 20500, "An internal server error has occurred", Some(2)),
        );
        d.fail_next_lists(1, Fault::HangupBeforeCreate);
        d.fail_next_lists(1, Fault::NonJsonError { status: 502 });
        // Creates and fetches are not affected and consume nothing.
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert_eq!(get(&d, &message_path(&d, &sid)).status, 200);
        let list = messages_path(&d);
        assert_twilio_error(&get(&d, &list), 403, 20003);
        assert_twilio_error(&get(&d, &format!("{list}?PageSize=x")), 400, 20001);
        let resp = get(&d, &list);
        assert_twilio_error(&resp, 500, 20500);
        assert_eq!(resp.header("retry-after"), Some("2"));
        let a = auth(&d);
        let hung = Client::connect(&d)
            .request("GET", &list, &[("Authorization", &a)], b"")
            .unwrap();
        assert!(hung.is_none(), "hang up without answering");
        let resp = get(&d, &list);
        assert_eq!(resp.status, 502);
        assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
        assert_eq!(
            get(&d, &list).json()["messages"].as_array().unwrap().len(),
            2
        );

        // An outage lasts until cleared; queued faults go first.
        d.set_list_outage(Some(Fault::TooManyRequests {
            retry_after: Some(1),
        }));
        d.fail_next_lists(1, Fault::HangupAfterCreate);
        assert!(Client::connect(&d)
            .request("GET", &list, &[("Authorization", &a)], b"")
            .unwrap()
            .is_none());
        for _ in 0..2 {
            let resp = get(&d, &list);
            assert_twilio_error(&resp, 429, 20429);
            assert_eq!(resp.header("retry-after"), Some("1"));
        }
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        d.set_list_outage(None);
        assert_eq!(get(&d, &list).status, 200);
        let statuses: Vec<Option<u16>> = d
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == list)
            .map(|r| r.status)
            .collect();
        assert_eq!(
            statuses,
            [
                Some(403),
                Some(400),
                Some(500),
                None,
                Some(502),
                Some(200),
                None,
                Some(429),
                Some(429),
                Some(200)
            ]
        );
    }

    #[test]
    fn twilio_hold_creates_until_released() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.hold_creates(true);
        assert!(!d.release_one_create(), "nothing is waiting");
        thread::scope(|s| {
            let one = s.spawn(|| create(&d, &[("To", TO), ("From", FROM), ("Body", "one")]));
            let two = s.spawn(|| create(&d, &[("To", TO), ("From", FROM), ("Body", "two")]));
            assert!(d.wait_for_held_creates(2, Duration::from_secs(5)));
            assert_eq!(d.held_creates(), 2);
            assert!(d.messages().is_empty(), "held creates store nothing");
            // Invalid creates and before-create faults are answered at once; reads proceed.
            assert_twilio_error(&create(&d, &[("To", TO)]), 400, 21603);
            d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
            assert_eq!(create(&d, &ok_form(&[])).status, 429);
            assert_eq!(get(&d, &messages_path(&d)).status, 200);
            assert_eq!(d.held_creates(), 2);

            assert!(d.release_one_create());
            assert!(d.wait_for_messages(1, Duration::from_secs(5)));
            assert!(!d.wait_for_messages(2, Duration::from_millis(100)));
            assert_eq!(d.held_creates(), 1);
            d.hold_creates(false);
            assert_eq!(one.join().unwrap().status, 201);
            assert_eq!(two.join().unwrap().status, 201);
        });
        assert_eq!(d.held_creates(), 0);
        let mut bodies: Vec<String> = d.messages().into_iter().map(|m| m.body).collect();
        bodies.sort();
        assert_eq!(bodies, ["one", "two"]);
        // Off: creates do not wait.
        assert!(!d.release_one_create());
        assert_eq!(create(&d, &ok_form(&[])).status, 201);

        // Stopping the double lets a held create through (it stores; the answer is cut).
        d.hold_creates(true);
        thread::scope(|s| {
            let held = s.spawn(|| post_raw(&d, &encode_form(&ok_form(&[]))));
            assert!(d.wait_for_held_creates(1, Duration::from_secs(5)));
            d.stop();
            assert!(d.wait_for_messages(4, Duration::from_secs(5)));
            let _ = held.join();
        });
    }

    #[test]
    fn twilio_create_latency_applies_to_creates_only() {
        let d = TwilioDouble::start(TwilioConfig::default());
        d.set_create_latency(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(get(&d, &messages_path(&d)).status, 200);
        assert!(started.elapsed() < Duration::from_millis(300));
        // It adds to the latency of every request.
        d.set_latency(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(create(&d, &ok_form(&[])).status, 201);
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[test]
    fn twilio_error_texts_quote_numbers_and_full_paths() {
        let d = TwilioDouble::start(TwilioConfig::default());
        let ac = d.config().account_sid.clone();
        let cases: [(&str, &str, u64, String); 5] = [
            (
                "+15005550001",
                FROM,
                21211,
                "The 'To' number +15005550001 is not a valid phone number.".to_string(),
            ),
            (
                "+15005550009",
                FROM,
                21614,
                "'To' number +15005550009 is not a valid mobile number".to_string(),
            ),
            (
                TO,
                "+15005550001",
                21212,
                "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.".to_string(),
            ),
            (
                TO,
                "+15005550007",
                21606,
                "The 'From' phone number provided (+15005550007) is not a valid message-capable Twilio phone number for this destination.".to_string(),
            ),
            (
                "+15005550003",
                FROM,
                21408,
                "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +15005550003.".to_string(),
            ),
        ];
        for (to, from, code, message) in cases {
            let resp = create(&d, &[("To", to), ("From", from), ("Body", "x")]);
            let body = assert_twilio_error(&resp, 400, code);
            assert_eq!(body["message"], message);
        }
        let missing = format!("SM{}", "0".repeat(32));
        let body = assert_twilio_error(&get(&d, &message_path(&d, &missing)), 404, 20404);
        assert_eq!(
            body["message"],
            format!("The requested resource /2010-04-01/Accounts/{ac}/Messages/{missing}.json was not found")
        );
        let body = assert_twilio_error(
            &get(&d, &format!("/2010-04-01/Accounts/{ac}/Nothing.json")),
            404,
            20404,
        );
        assert_eq!(
            body["message"],
            format!("The requested resource /2010-04-01/Accounts/{ac}/Nothing.json was not found")
        );
        let service = format!("MG{}", "ab".repeat(16));
        let body = assert_twilio_error(
            &get(&d, &d.messaging_service_url(&service).replace(&d.url(), "")),
            404,
            20404,
        );
        assert_eq!(
            body["message"],
            format!("The requested resource /v1/Services/{service} was not found")
        );
    }

    #[test]
    fn twilio_double_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TwilioDouble>();
        assert_send_sync::<StoredMessage>();
        assert_send_sync::<RecordedRequest>();
    }

    #[test]
    fn twilio_count_segments_rules() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(count_segments(""), 1);
        assert_eq!(count_segments("hello"), 1);
        assert_eq!(count_segments(&"a".repeat(160)), 1);
        assert_eq!(count_segments(&"a".repeat(161)), 2);
        assert_eq!(count_segments(&"a".repeat(306)), 2);
        assert_eq!(count_segments(&"a".repeat(307)), 3);
        // '€' is an extension character: 2 septets, still GSM-7.
        assert_eq!(count_segments(&"€".repeat(80)), 1);
        assert_eq!(count_segments(&format!("{}€", "a".repeat(159))), 2);
        // An escape pair is not split: 152 + '€' does not fit the 153-septet first segment.
        assert_eq!(
            count_segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))),
            3
        );
        // One emoji switches the whole message to UCS-2 (70 / 67 units).
        assert_eq!(count_segments(&format!("{}😀", "a".repeat(68))), 1);
        assert_eq!(count_segments(&format!("{}😀", "a".repeat(69))), 2);
        assert_eq!(
            count_segments(&"é".repeat(160)),
            1,
            "é is in the GSM alphabet"
        );
        assert_eq!(count_segments(&"á".repeat(70)), 1, "á is not");
        assert_eq!(count_segments(&"á".repeat(71)), 2);
        assert_eq!(count_segments(&"á".repeat(134)), 2);
        assert_eq!(count_segments(&"á".repeat(135)), 3);
        assert_eq!(count_segments("“smart quotes”"), 1);
    }

    #[test]
    fn twilio_rfc2822_and_calendar() {
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(1_692_853_305)),
            "Thu, 24 Aug 2023 05:01:45 +0000"
        );
        assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_286_400)),
            "Thu, 30 Jul 2015 20:00:00 +0000"
        );
        assert_eq!(
            rfc2822(UNIX_EPOCH - Duration::from_secs(1)),
            "Wed, 31 Dec 1969 23:59:59 +0000"
        );
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            parse_date_filter("2023-08-24"),
            Some(DateBound::Day(19_593))
        );
        assert_eq!(parse_date_filter("2023-02-29"), None);
        assert_eq!(
            parse_date_filter("2023-08-24T05:01:45Z"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(
            parse_date_filter("2023-08-24 07:01:45.000+02:00"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(
            parse_date_filter("Thu, 24 Aug 2023 05:01:45 +0000"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(parse_date_filter("06/11/2019 22:05:25 MST"), None);
    }
}
