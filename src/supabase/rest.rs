//! The Supabase REST (PostgREST) client: every database read and write the service makes.
//!
//! - [`Rest::claim`]: the atomic compare-and-set `queued_for_send → sending` that makes sending
//!   exclusive across instances, returning the body and the conversation's phone number in the
//!   same request (resource embedding), so the happy path costs one REST call before Twilio.
//!   The claim stamps `sent_at` with the caller's lease stamp (the delivery lease makes and
//!   renews it).
//! - [`Rest::mark_sent`], [`Rest::mark_failed`], [`Rest::release`]: the state changes after it,
//!   each **fenced** on the claim (`status=eq.sending&sent_at=eq.<stamp>`), so a retried, late or
//!   duplicated write never touches a row that has since been claimed again.
//! - [`Rest::queued_page`]: keyset paging over queued outbound rows for the catch-up sweep;
//! - [`Rest::sending_page`], [`Rest::sid_owner`]: what orphan recovery and reconciliation read
//!   (rows in `sending` with their stamps, whether a Twilio SID is already recorded).
//!
//! Keys are sent as docs/supabase.md §1.2 describes: a legacy JWT as `apikey` and Bearer, an
//! `sb_secret_` key as `apikey` only (it is not a JWT and a Bearer would be refused). The response
//! shapes are parsed into domain types here and in [`super::rpc`] (scaled mode's database
//! functions, whose claimed rows are read by the same `claimed_row`); nothing outside these two
//! files sees PostgREST JSON.
//! What each request came to is told to an [`Observer`] (the wiring shows it on `/health`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{KeyKind, Secret, SupabaseConfig};
use crate::http::{describe_transport, read_body, Agent, Exchange, Observer};
use crate::message::{ClaimedMessage, MessageId, Status};
use crate::redact;

/// A REST call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestError {
    /// No connection was made: the request certainly had no effect.
    Connect(String),
    /// The connection failed mid-way (timeout, reset): the request may or may not have applied.
    Transport(String),
    /// PostgREST (or the gateway in front of it) answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// PostgREST's `code` (e.g. `PGRST204`, `42501`), absent for gateway errors.
        code: Option<String>,
        /// `message` (plus `hint` when given), or a non-JSON body, scrubbed
        /// ([`crate::redact::scrub`]: no secret, masked numbers, one line, bounded).
        message: String,
    },
    /// A success status with a body we could not read.
    Body(String),
}

impl std::error::Error for RestError {}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestError::Connect(e) => write!(f, "cannot reach Supabase REST: {e}"),
            RestError::Transport(e) => write!(f, "Supabase REST request interrupted: {e}"),
            RestError::Status {
                status,
                code: Some(code),
                message,
            } => {
                write!(
                    f,
                    "Supabase REST answered HTTP {status} ({code}): {message}"
                )
            }
            RestError::Status {
                status,
                code: None,
                message,
            } => {
                write!(f, "Supabase REST answered HTTP {status}: {message}")
            }
            RestError::Body(e) => write!(f, "unreadable Supabase REST response: {e}"),
        }
    }
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This instance now owns the message (`status='sending'`).
    Won(ClaimedMessage),
    /// Another instance or an earlier event has it, or it is no longer queued: skip it.
    Lost,
    /// The row is ours but cannot be sent as it is (e.g. `content` is not text): fail it.
    Malformed {
        /// The row.
        id: MessageId,
        /// What is wrong, for the log.
        reason: String,
    },
}

/// Which claim a write belongs to: the stamp it wrote into `sent_at`, or none (a row put in
/// `sending` without a stamp, by an older version or by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// `sent_at` equals this stamp.
    Stamp(&'a str),
    /// `sent_at` is null.
    Unstamped,
}

/// The filter selecting row `id` only while `fence`'s claim holds it.
fn fenced(id: &MessageId, fence: Fence<'_>) -> String {
    match fence {
        Fence::Stamp(stamp) if is_stamp(stamp) => {
            format!("id=eq.{id}&status=eq.sending&sent_at=eq.{stamp}")
        }
        // Anything else cannot go into a URL filter as it is: match nothing rather than guess.
        Fence::Stamp(_) => format!("id=eq.{id}&status=eq.sending&sent_at=is.null&id=is.null"),
        Fence::Unstamped => format!("id=eq.{id}&status=eq.sending&sent_at=is.null"),
    }
}

/// Whether `text` is safe to put in a filter as a timestamp (digits, `-:.TZ+ `).
fn is_stamp(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-:.TZ".contains(&b))
}

/// A client for `/rest/v1`, cheap to clone (connections are pooled and kept alive).
#[derive(Clone)]
pub struct Rest {
    agent: Agent,
    base: Arc<str>,
    key: Secret,
    /// `Authorization` for legacy JWT keys; none for `sb_secret_` keys.
    bearer: Option<Arc<str>>,
    /// Told what every request came to.
    observer: Arc<dyn Observer>,
}

/// The most characters a message body may have: Twilio refuses longer bodies (error 21617).
pub const MAX_BODY_CHARS: usize = 1600;

/// A `LIKE` pattern (PostgREST's `*` for `%`) matching text of more than [`MAX_BODY_CHARS`]
/// characters: `_` × 1601 then `*`. The database evaluates it, so a body that cannot be an SMS
/// is never read into this process, however large it is.
fn over_limit_pattern() -> &'static str {
    static PATTERN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| format!("{}*", "_".repeat(MAX_BODY_CHARS + 1)))
}

/// Columns the claim returns: what sending needs, and the SID of a previous attempt (a row in
/// `queued_for_send` or `sending` that records a SID was requeued after that attempt: every path
/// that records the current attempt's SID also moves the row out of those statuses).
const CLAIM_SELECT: &str = "id,content,twilio_message_sid,conversation:conversations(phone_number)";

#[derive(Deserialize)]
struct ClaimRow {
    id: serde_json::Value,
    #[serde(default)]
    content: serde_json::Value,
    #[serde(default)]
    twilio_message_sid: Option<serde_json::Value>,
    #[serde(default)]
    conversation: Option<ConversationRow>,
}

#[derive(Deserialize)]
struct ConversationRow {
    #[serde(default)]
    phone_number: serde_json::Value,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

/// A row in `sending`, as orphan recovery lists it: no `content` (a listing never reads bodies,
/// so one huge row cannot break the page for every other); [`Rest::sending_message`] reads the
/// body of the one orphan being settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingRow {
    /// The row.
    pub id: MessageId,
    /// `created_at` (a lower bound for when it could have been sent).
    pub created_at: Option<String>,
    /// `sent_at`: the claim's stamp (its lease end), absent for claims made without one.
    pub stamp: Option<String>,
}

#[derive(Deserialize)]
struct SendingRowJson {
    id: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
}

impl Rest {
    /// A client for `config`, pooling up to `connections` keep-alive connections, telling
    /// `observer` what every request came to.
    pub fn new(
        config: &SupabaseConfig,
        connections: usize,
        connect_timeout: Duration,
        timeout: Duration,
        tls: Option<Arc<native_tls::TlsConnector>>,
        observer: Arc<dyn Observer>,
    ) -> Rest {
        let agent = Agent::new(connect_timeout, timeout, connections, tls);
        Rest {
            agent,
            base: config.rest_url.as_str().into(),
            key: config.key.clone(),
            bearer: (config.key_kind == KeyKind::LegacyJwt)
                .then(|| format!("Bearer {}", config.key.expose()).into()),
            observer,
        }
    }

    /// Close the pooled idle connections ([`Agent::release_idle`]).
    pub fn release_idle_connections(&self) {
        self.agent.release_idle();
    }

    /// A request on `messages` with `query` (filters, `select`, order).
    fn request(&self, method: &str, query: &str) -> ureq::Request {
        self.request_at(method, &format!("messages?{query}"))
    }

    /// A request on `path` under `/rest/v1`, with the key headers (docs/supabase.md §1.2).
    fn request_at(&self, method: &str, path: &str) -> ureq::Request {
        let req = self
            .agent
            .current()
            .request(method, &format!("{}/{path}", self.base))
            .set("apikey", self.key.expose())
            .set("Accept", "application/json");
        match &self.bearer {
            Some(bearer) => req.set("Authorization", bearer),
            None => req,
        }
    }

    /// Call the database function `function` (`POST /rest/v1/rpc/<function>`) with the named
    /// arguments in `args`; returns the response body. `function` is one of this crate's own
    /// names, never text from outside.
    pub(super) fn call_rpc(
        &self,
        function: &str,
        args: &serde_json::Value,
    ) -> Result<String, RestError> {
        self.call(
            self.request_at("POST", &format!("rpc/{function}")),
            Some(args),
        )
    }

    fn call(
        &self,
        req: ureq::Request,
        body: Option<&serde_json::Value>,
    ) -> Result<String, RestError> {
        let result = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let (exchange, outcome) = match result {
            Ok(resp) => {
                let status = resp.status();
                match read_body(resp) {
                    Ok(text) => (Exchange::Answered(status), Ok(text)),
                    Err(e) => (
                        Exchange::Interrupted(status),
                        Err(RestError::Transport(e.to_string())),
                    ),
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = read_body(resp).unwrap_or_default();
                (Exchange::Answered(status), Err(parse_error(status, &text)))
            }
            Err(ureq::Error::Transport(t)) => (Exchange::Unanswered, Err(transport_error(&t))),
        };
        self.observer.exchanged(exchange);
        outcome
    }

    /// Try to take `id` for sending (`queued_for_send` outbound → `sending`), stamping `sent_at`
    /// with the lease `stamp` (the fence of every later write of this claim).
    pub fn claim(&self, id: &MessageId, stamp: &str) -> Result<Claim, RestError> {
        // Only a body that can be an SMS is claimed (and so read); the others are failed by
        // [`Rest::fail_unsendable`] without being read.
        let query = format!(
            "id=eq.{id}&status=eq.queued_for_send&direction=eq.outbound&content=not.like.{}\
             &select={CLAIM_SELECT}",
            over_limit_pattern()
        );
        let req = self
            .request("PATCH", &query)
            .set("Prefer", "return=representation");
        let text = self.call(
            req,
            Some(&serde_json::json!({"status": Status::Sending.as_str(), "sent_at": stamp})),
        )?;
        parse_claim(id, &text)
    }

    /// Read back a claim whose answer was lost: `Won` if the row is `sending` with our `stamp`.
    pub fn claimed_by(&self, id: &MessageId, stamp: &str) -> Result<Claim, RestError> {
        let query =
            format!("id=eq.{id}&status=eq.sending&sent_at=eq.{stamp}&select={CLAIM_SELECT}");
        let text = self.call(self.request("GET", &query), None)?;
        parse_claim(id, &text)
    }

    /// Move claim `stamp` on row `id` to a new lease end `new_stamp` (renewal, or hand-over with
    /// an end in the past), if that claim still holds the row. `Ok(false)`: it does not.
    pub fn restamp(&self, id: &MessageId, stamp: &str, new_stamp: &str) -> Result<bool, RestError> {
        if !is_stamp(new_stamp) {
            return Ok(false);
        }
        self.patch_rows(
            &fenced(id, Fence::Stamp(stamp)),
            &serde_json::json!({ "sent_at": new_stamp }),
        )
    }

    /// Whether row `id` is `sending` under `stamp` (to tell whether a write whose answer was
    /// lost applied).
    pub fn holds(&self, id: &MessageId, stamp: &str) -> Result<bool, RestError> {
        let text = self.call(
            self.request(
                "GET",
                &format!("{}&select=id", fenced(id, Fence::Stamp(stamp))),
            ),
            None,
        )?;
        let rows: Vec<IdRow> = rows(&text)?;
        Ok(!rows.is_empty())
    }

    /// Record a message Twilio accepted, if the claim `fence` still holds the row; failing that,
    /// if the row is back in `queued_for_send` (given back by recovery meanwhile: the SMS exists,
    /// so the row must say so before anyone claims it again). `Ok(false)`: neither.
    pub fn mark_sent(
        &self,
        id: &MessageId,
        fence: Fence<'_>,
        sid: &str,
        sent_at: &str,
    ) -> Result<bool, RestError> {
        let body = serde_json::json!({"status": Status::Sent.as_str(), "twilio_message_sid": sid, "sent_at": sent_at});
        if self.patch_rows(&fenced(id, fence), &body)? {
            return Ok(true);
        }
        self.patch_rows(&format!("id=eq.{id}&status=eq.queued_for_send"), &body)
    }

    /// Record a message that will not be sent. `Ok(false)` if the claim no longer holds the row.
    pub fn mark_failed(&self, id: &MessageId, fence: Fence<'_>) -> Result<bool, RestError> {
        self.end_claim(id, fence, Status::Failed)
    }

    /// Give a claimed, unsent message back (`sending → queued_for_send`) for any instance to
    /// take. `Ok(false)` if the claim no longer holds the row.
    pub fn release(&self, id: &MessageId, fence: Fence<'_>) -> Result<bool, RestError> {
        self.end_claim(id, fence, Status::QueuedForSend)
    }

    /// Fail every queued outbound row whose `content` cannot be an SMS — absent, or over
    /// [`MAX_BODY_CHARS`] characters — without reading it (the database tests the length).
    /// Returns the ids failed, for the log. Conditional on `queued_for_send`, so a row that moved
    /// on meanwhile is untouched.
    pub fn fail_unsendable(&self) -> Result<Vec<MessageId>, RestError> {
        let queued = "status=eq.queued_for_send&direction=eq.outbound";
        let failed = serde_json::json!({"status": Status::Failed.as_str(), "sent_at": null});
        let mut ids = Vec::new();
        for content in [
            format!("content=like.{}", over_limit_pattern()),
            "content=is.null".to_string(),
        ] {
            let req = self
                .request("PATCH", &format!("{queued}&{content}&select=id"))
                .set("Prefer", "return=representation");
            let text = self.call(req, Some(&failed))?;
            let rows: Vec<IdRow> = rows(&text)?;
            ids.extend(rows.iter().filter_map(|r| MessageId::parse(&r.id)));
        }
        Ok(ids)
    }

    /// End the claim `fence` on row `id` without a send: `status`, and the stamp cleared.
    fn end_claim(
        &self,
        id: &MessageId,
        fence: Fence<'_>,
        status: Status,
    ) -> Result<bool, RestError> {
        self.patch_rows(
            &fenced(id, fence),
            &serde_json::json!({"status": status.as_str(), "sent_at": null}),
        )
    }

    /// The SID row `id` records for its current attempt, if any (to tell whether a write whose
    /// answer was lost applied, or whether a receipt recorded it). A row still `sending` or
    /// `queued_for_send` has none: a SID there is a previous attempt's.
    pub fn recorded_sid(&self, id: &MessageId) -> Result<Option<String>, RestError> {
        #[derive(Deserialize)]
        struct Row {
            twilio_message_sid: Option<String>,
        }
        let query = format!(
            "select=twilio_message_sid&id=eq.{id}&status=in.(sent,delivered,failed,undelivered)"
        );
        let text = self.call(self.request("GET", &query), None)?;
        let rows: Vec<Row> = rows(&text)?;
        Ok(rows.into_iter().next().and_then(|r| r.twilio_message_sid))
    }

    /// `PATCH` the rows matching `filter` with `body`; tells whether any row changed.
    fn patch_rows(&self, filter: &str, body: &serde_json::Value) -> Result<bool, RestError> {
        let req = self
            .request("PATCH", &format!("{filter}&select=id"))
            .set("Prefer", "return=representation");
        let text = self.call(req, Some(body))?;
        let rows: Vec<IdRow> = rows(&text)?;
        Ok(!rows.is_empty())
    }

    /// Up to `limit` queued outbound ids greater than `after`, in id order (keyset paging is
    /// stable while rows leave the set under us, unlike offsets).
    pub fn queued_page(
        &self,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageId>, RestError> {
        let query = keyset_page("id", "queued_for_send", after, limit);
        let text = self.call(self.request("GET", &query), None)?;
        let rows: Vec<IdRow> = rows(&text)?;
        rows.iter()
            .map(|r| {
                MessageId::parse(&r.id)
                    .ok_or_else(|| RestError::Body(redact::scrub(&format!("bad id {:?}", r.id))))
            })
            .collect()
    }
}

impl Rest {
    /// Up to `limit` outbound rows in `sending` with ids greater than `after`, in id order.
    pub fn sending_page(
        &self,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<SendingRow>, RestError> {
        let query = keyset_page("id,created_at,sent_at", "sending", after, limit);
        let text = self.call(self.request("GET", &query), None)?;
        let rows: Vec<SendingRowJson> = rows(&text)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(SendingRow {
                    id: MessageId::parse(&r.id)?,
                    created_at: r.created_at,
                    stamp: r.sent_at,
                })
            })
            .collect())
    }

    /// The message of row `id` while claim `fence` holds it, as a claim returns it; `Claim::Lost`
    /// when the claim no longer holds the row **or** its body cannot be an SMS (absent, or over
    /// [`MAX_BODY_CHARS`] characters: not read) — the caller tells them apart by failing the row
    /// with the same fence.
    pub fn sending_message(&self, id: &MessageId, fence: Fence<'_>) -> Result<Claim, RestError> {
        let query = format!(
            "{}&content=not.like.{}&select={CLAIM_SELECT}",
            fenced(id, fence),
            over_limit_pattern()
        );
        let text = self.call(self.request("GET", &query), None)?;
        parse_claim(id, &text)
    }

    /// The row that already records Twilio message `sid`, if any.
    pub fn sid_owner(&self, sid: &str) -> Result<Option<MessageId>, RestError> {
        if !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let query = format!("select=id&twilio_message_sid=eq.{sid}&limit=1");
        let text = self.call(self.request("GET", &query), None)?;
        let rows: Vec<IdRow> = rows(&text)?;
        Ok(rows.first().and_then(|r| MessageId::parse(&r.id)))
    }

    /// Apply a delivery receipt to the row that records Twilio message `sid`, if it is `sent`
    /// (so updates only move forward; a `sending` row that records a SID was requeued, and the
    /// SID is its previous attempt's). Tells whether a row changed.
    pub fn apply_receipt(
        &self,
        sid: &str,
        status: Status,
        delivered_at: Option<&str>,
    ) -> Result<bool, RestError> {
        let Some(body) = receipt_body(sid, status, delivered_at) else {
            return Ok(false);
        };
        self.patch_rows(
            &format!("twilio_message_sid=eq.{sid}&status=eq.sent"),
            &body,
        )
    }

    /// Apply a receipt that names its row (`id`, from our parameter in the signed callback URL):
    /// to the row if it records `sid` and is `sent`; otherwise, if the row records no
    /// SID yet (`sending`, or given back to `queued_for_send` after a create whose answer was
    /// lost), record `sid` with the receipt's status. Tells whether a row changed.
    pub fn apply_receipt_to(
        &self,
        id: &MessageId,
        sid: &str,
        status: Status,
        delivered_at: Option<&str>,
        now: &str,
    ) -> Result<bool, RestError> {
        let Some(mut body) = receipt_body(sid, status, delivered_at) else {
            return Ok(false);
        };
        if status != Status::Sent
            && self.patch_rows(
                &format!("id=eq.{id}&twilio_message_sid=eq.{sid}&status=eq.sent"),
                &body,
            )?
        {
            return Ok(true);
        }
        body["twilio_message_sid"] = serde_json::Value::String(sid.to_string());
        body["sent_at"] = serde_json::Value::String(now.to_string());
        self.patch_rows(
            &format!("id=eq.{id}&twilio_message_sid=is.null&status=in.(sending,queued_for_send)"),
            &body,
        )
    }

    /// Read one row of `messages` selecting `columns` (for `check`); returns how many came back.
    pub fn probe_columns(&self, columns: &str) -> Result<usize, RestError> {
        let text = self.call(
            self.request("GET", &format!("select={columns}&limit=1")),
            None,
        )?;
        let rows: Vec<serde_json::Value> = rows(&text)?;
        Ok(rows.len())
    }

    /// Whether `messages` has column `name` (an unknown column is PostgREST error 42703).
    pub fn has_column(&self, name: &str) -> Result<bool, RestError> {
        let query = format!("select={name}&limit=1");
        match self.call(self.request("GET", &query), None) {
            Ok(_) => Ok(true),
            Err(RestError::Status {
                code: Some(code), ..
            }) if code == "42703" || code == "PGRST204" || code == "PGRST100" => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Read a JSON response body into `T` (an unreadable one is [`RestError::Body`]).
fn rows<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, RestError> {
    serde_json::from_str(text).map_err(|e| RestError::Body(redact::scrub(&e.to_string())))
}

/// Keyset paging over outbound rows in `status`: up to `limit`, ids greater than `after`, in id
/// order (stable while rows leave the set under us, unlike offsets).
fn keyset_page(select: &str, status: &str, after: Option<&MessageId>, limit: usize) -> String {
    let mut query = format!(
        "select={select}&status=eq.{status}&direction=eq.outbound&order=id.asc&limit={limit}"
    );
    if let Some(after) = after {
        query.push_str(&format!("&id=gt.{after}"));
    }
    query
}

/// The `PATCH` body of a receipt, or `None` when `sid` could not be a Twilio SID (it goes into
/// a filter, so nothing but letters and digits).
fn receipt_body(
    sid: &str,
    status: Status,
    delivered_at: Option<&str>,
) -> Option<serde_json::Value> {
    if !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut body = serde_json::json!({ "status": status.as_str() });
    if let Some(at) = delivered_at {
        body["delivered_at"] = serde_json::Value::String(at.to_string());
    }
    Some(body)
}

/// Read a claim response: `[]` lost, a row won (or malformed; the filter is on the primary key,
/// so there is at most one), anything that is not a JSON array unreadable.
pub fn parse_claim(id: &MessageId, text: &str) -> Result<Claim, RestError> {
    // Rows are kept raw, then the first is read into its view: no JSON tree is built.
    let rows: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| {
        RestError::Body(redact::scrub(&format!(
            "claim response is not a JSON array: {e}"
        )))
    })?;
    let Some(first) = rows.first() else {
        return Ok(Claim::Lost);
    };
    Ok(claimed_row(id, first.get()))
}

/// Read one row a claim returned for row `id` (the `select` of [`CLAIM_SELECT`], or the same
/// columns from the batch claim): `Won` when it is row `id` with a text body, else `Malformed`
/// (never `Lost`: the claim took the row, so it must be sent or failed).
pub(super) fn claimed_row(id: &MessageId, raw: &str) -> Claim {
    let malformed = |reason: String| Claim::Malformed {
        id: id.clone(),
        reason,
    };
    let row: ClaimRow = match serde_json::from_str(raw) {
        Ok(r) => r,
        Err(e) => return malformed(redact::scrub(&format!("unreadable row: {e}"))),
    };
    if row.id.as_str().and_then(MessageId::parse).as_ref() != Some(id) {
        return malformed("the claim returned a different row".into());
    }
    let body = match row.content {
        serde_json::Value::String(s) => s,
        other => {
            return malformed(format!("content is {} instead of text", json_kind(&other)));
        }
    };
    let phone_number = match row.conversation.map(|c| c.phone_number) {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => {
            return malformed(format!(
                "conversation phone_number is {}",
                json_kind(&other)
            ));
        }
    };
    let previous_sid = match row.twilio_message_sid {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Claim::Won(ClaimedMessage {
        id: id.clone(),
        body,
        phone_number,
        previous_sid,
    })
}

/// What kind of JSON value `v` is, for a reason in the log.
pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Turn an error response into [`RestError::Status`], whatever its body (PostgREST JSON, the
/// gateway's JSON without `code`, or an HTML page from an edge during an outage).
pub fn parse_error(status: u16, text: &str) -> RestError {
    #[derive(Deserialize)]
    struct Body {
        code: Option<serde_json::Value>,
        message: Option<String>,
        hint: Option<String>,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(b) => {
            let mut message = b.message.unwrap_or_default();
            if let Some(hint) = b.hint.filter(|h| !h.is_empty()) {
                message = format!("{message} (hint: {hint})");
            }
            let code = b.code.map(|c| match c {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            // The database's texts quote what they were given (a trigger's RAISE, a constraint's
            // DETAIL): scrubbed here, once, like every text from outside.
            RestError::Status {
                status,
                code: code.map(|c| redact::scrub(&c)),
                message: redact::scrub(&message),
            }
        }
        // Scrubbed whole, then bounded: cutting first could leave part of a key at the cut.
        Err(_) => RestError::Status {
            status,
            code: None,
            message: redact::scrub(text),
        },
    }
}

/// Map a ureq transport failure to "certainly not sent" or "maybe applied".
pub fn transport_error(t: &ureq::Transport) -> RestError {
    match t.kind() {
        ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::InvalidUrl => {
            RestError::Connect(describe_transport(t))
        }
        _ => RestError::Transport(describe_transport(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        MessageId::parse("6f1c2e0a-0000-4000-8000-000000000001").unwrap()
    }

    #[test]
    fn claim_responses() {
        assert_eq!(parse_claim(&id(), "[]"), Ok(Claim::Lost));
        let won = r#"[{"id":"6f1c2e0a-0000-4000-8000-000000000001","content":"hi",
            "conversation":{"phone_number":"+15551234567"}}]"#;
        assert_eq!(
            parse_claim(&id(), won),
            Ok(Claim::Won(ClaimedMessage {
                id: id(),
                body: "hi".into(),
                phone_number: Some("+15551234567".into()),
                previous_sid: None,
            }))
        );
        let orphan =
            r#"[{"id":"6f1c2e0a-0000-4000-8000-000000000001","content":"hi","conversation":null}]"#;
        assert!(
            matches!(parse_claim(&id(), orphan), Ok(Claim::Won(m)) if m.phone_number.is_none())
        );
        let bad =
            r#"[{"id":"6f1c2e0a-0000-4000-8000-000000000001","content":null,"conversation":null}]"#;
        assert!(
            matches!(parse_claim(&id(), bad), Ok(Claim::Malformed { reason, .. }) if reason.contains("null"))
        );
        let other = r#"[{"id":"00000000-0000-4000-8000-000000000002","content":"x"}]"#;
        assert!(matches!(
            parse_claim(&id(), other),
            Ok(Claim::Malformed { .. })
        ));
        assert!(matches!(parse_claim(&id(), "{}"), Err(RestError::Body(_))));
        assert!(matches!(
            parse_claim(&id(), "<html>"),
            Err(RestError::Body(_))
        ));
    }

    #[test]
    fn error_bodies() {
        let pgrst = r#"{"code":"PGRST204","details":null,"hint":null,"message":"Could not find the 'x' column of 'messages' in the schema cache"}"#;
        assert_eq!(
            parse_error(400, pgrst),
            RestError::Status {
                status: 400,
                code: Some("PGRST204".into()),
                message: "Could not find the 'x' column of 'messages' in the schema cache".into()
            }
        );
        let gateway = r#"{"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API key."}"#;
        let e = parse_error(401, gateway);
        assert!(
            matches!(&e, RestError::Status { status: 401, code: None, message } if message.starts_with("Invalid API key (hint:"))
        );
        let html = parse_error(502, "<html>\n<body>Bad gateway</body></html>");
        assert!(
            matches!(html, RestError::Status { status: 502, code: None, message } if message.contains("Bad gateway"))
        );
    }
}
