//! The PostgREST subset behind `/rest/v1/<table>` (docs/supabase.md §1.2, §9, §10).
//!
//! A request flows through the files in this order:
//! - this file: the entry point — request recording, latency, REST faults and [`RestRule`]s —
//!   then the route to a table (root stub, `rpc/`, profile headers, a pooled connection);
//! - [`auth`]: the gateway's `apikey` check and the role PostgREST derives from `Authorization`;
//! - [`query`]: the query grammar (horizontal filters, `select` with embedding, `order`,
//!   `limit`, `offset`, `columns`), parsed before any database work;
//! - [`sql`]: SQL fragments from the parsed query (bind parameters, `WHERE`, `ORDER BY`, select
//!   lists with embedded resources), identifiers checked against the schema cache;
//! - [`statement`]: one statement per request for GET/HEAD/PATCH/POST/DELETE, run in a
//!   transaction (single-object requests roll back when the row count is not 1);
//! - [`routine`] and [`rpc`]: functions in `public` called at `/rest/v1/rpc/<fn>` — the
//!   overload chosen by the argument keys, the typed call, the answer shaped by the return type;
//! - [`render`]: the answers: success responses (`Content-Range`, `Prefer`), error bodies and
//!   the SQLSTATE → HTTP map.
//!
//! Invariants:
//! - the JSON of every answer is built by PostgreSQL (`json_agg`/`row_to_json`), so values render
//!   exactly as PostgREST renders them (e.g. `timestamptz` as `…+00:00`, trimmed fractions);
//! - identifiers are validated against the schema cache before they reach SQL, and quoted; values
//!   are bind parameters cast from text to the column's type, so PostgreSQL itself produces the
//!   type errors (`22P02 invalid input syntax for type uuid: "abc"`);
//! - a write is one statement (`WITH … AS (UPDATE … RETURNING …) SELECT …`): concurrent
//!   conditional updates serialise in PostgreSQL and exactly one wins. A single-object request
//!   whose row count is not 1 is rolled back.

// Errors are rich answers (`ApiError` carries a whole PostgREST error body); their size on the
// error path does not matter in a test double.
#![allow(clippy::result_large_err)]

mod auth;
mod query;
mod render;
mod routine;
mod rpc;
mod sql;
mod statement;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::counters::RestKind;
use super::{PoolError, RestFault, Shared};
use crate::http::{percent_decode, Reply, Request, Response};
use auth::check_keys;
use query::Query;
use render::{connection_lost, db_error, is_connection_error, ApiError, Fail};
use rpc::serve_rpc;
use statement::serve_table;

/// One REST request as the double saw it.
#[derive(Debug, Clone)]
pub struct RestRecord {
    /// Arrival number, unique per double (0, 1, 2…; not reset by `clear_rest_requests`).
    pub id: u64,
    /// The HTTP method (`GET`, `PATCH`…).
    pub method: String,
    /// The path, still percent-encoded (e.g. `/rest/v1/messages`).
    pub path: String,
    /// The raw query string, still percent-encoded.
    pub query: String,
    /// Request headers (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The status answered; `None` when the double hung up (or is still working on it).
    pub status: Option<u16>,
    /// When the request arrived.
    pub at: Instant,
}

impl RestRecord {
    /// The query decoded into pairs (`+` is a space, as PostgREST decodes it).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        crate::http::parse_urlencoded(&self.query)
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Recording and fault switches for REST.
#[derive(Default)]
pub(crate) struct RestState {
    pub(crate) records: Mutex<Vec<RestRecord>>,
    pub(crate) fail_next: Mutex<VecDeque<RestFault>>,
    pub(crate) outage: Mutex<Option<RestFault>>,
    pub(crate) latency: Mutex<Duration>,
    /// Rules in the order added; a rule with a function name applies to that RPC only.
    pub(crate) rules: Mutex<Vec<(Option<String>, RestRule)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A targeted REST fault: the next `times` requests that match get `delay` and then `fault`
/// (or a normal answer when `fault` is `None`). Rules are tried in the order they were added.
#[derive(Debug, Clone)]
pub struct RestRule {
    /// HTTP method to match (`PATCH`, `GET`, …).
    pub method: String,
    /// A substring the raw query must contain, if any.
    pub query_contains: Option<String>,
    /// A substring the request body must contain, if any.
    pub body_contains: Option<String>,
    /// Held this long before the fault or answer (a slow write, a lagging gateway).
    pub delay: Duration,
    /// What to do after the delay; `None` serves the request normally.
    pub fault: Option<RestFault>,
    /// How many matching requests this rule still applies to.
    pub times: usize,
}

impl RestRule {
    /// Match `method` requests whose body contains `body` (e.g. `"status":"sent"`).
    pub fn body(method: &str, body: &str) -> RestRule {
        RestRule {
            method: method.to_string(),
            query_contains: None,
            body_contains: Some(body.to_string()),
            delay: Duration::ZERO,
            fault: None,
            times: 1,
        }
    }

    /// Apply to this many matching requests.
    pub fn times(mut self, n: usize) -> RestRule {
        self.times = n;
        self
    }

    /// Hold each matching request this long.
    pub fn delay(mut self, d: Duration) -> RestRule {
        self.delay = d;
        self
    }

    /// Then answer with this fault.
    pub fn fault(mut self, f: RestFault) -> RestRule {
        self.fault = Some(f);
        self
    }
}

/// The first live rule matching `req`, consumed once (its delay and fault).
fn take_rule(shared: &Shared, req: &Request) -> Option<(Duration, Option<RestFault>)> {
    let body = String::from_utf8_lossy(&req.body);
    let kind = RestKind::of(&req.method, &req.path);
    let mut rules = shared.rest.rules.lock().unwrap();
    let (_, rule) = rules.iter_mut().find(|(function, r)| {
        function.as_ref().is_none_or(|f| {
            kind == RestKind::Rpc {
                function: f.clone(),
            }
        }) && r.times > 0
            && r.method.eq_ignore_ascii_case(&req.method)
            && r.query_contains
                .as_deref()
                .is_none_or(|q| req.query.contains(q))
            && r.body_contains.as_deref().is_none_or(|b| body.contains(b))
    })?;
    rule.times -= 1;
    Some((rule.delay, rule.fault.clone()))
}

/// Entry point for `/rest/v1/…`: record, delay, inject faults, serve.
pub(crate) fn handle(shared: &Shared, req: Request) -> Reply {
    let id = shared
        .rest
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    shared.counters.rest(RestKind::of(&req.method, &req.path));
    {
        let mut records = shared.rest.records.lock().unwrap();
        records.push(RestRecord {
            id,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            status: None,
            at: Instant::now(),
        });
    }
    let latency = *shared.rest.latency.lock().unwrap();
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let ruled = take_rule(shared, &req);
    if let Some((delay, _)) = &ruled {
        std::thread::sleep(*delay);
    }
    let fault = match ruled {
        Some((_, fault)) => fault,
        None => shared
            .rest
            .outage
            .lock()
            .unwrap()
            .clone()
            .or_else(|| shared.rest.fail_next.lock().unwrap().pop_front()),
    };
    let (reply, status) = match fault {
        Some(RestFault::Status {
            status,
            code,
            message,
        }) => (
            Reply::Respond(ApiError::new(status, &code, message).into_response()),
            Some(status),
        ),
        Some(RestFault::NonJson { status }) => (
            Reply::Respond(
                Response::new(status)
                    .header("Content-Type", "text/html")
                    .body(format!(
                        "<html><head><title>{status}</title></head><body><h1>{status}</h1>\
                         <p>The upstream server is unavailable.</p></body></html>"
                    )),
            ),
            Some(status),
        ),
        Some(RestFault::Hangup) => (Reply::Hangup, None),
        Some(RestFault::HangupAfterApply) => {
            let _ = serve(shared, &req);
            (Reply::Hangup, None)
        }
        None => {
            let resp = serve(shared, &req);
            let status = resp.status;
            (Reply::Respond(resp), Some(status))
        }
    };
    if let Some(r) = shared
        .rest
        .records
        .lock()
        .unwrap()
        .iter_mut()
        .rev()
        .find(|r| r.id == id)
    {
        r.status = status;
    }
    reply
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// What a request under `/rest/v1/` addresses.
enum Target {
    /// `rpc/<function>`.
    Rpc(String),
    /// A table, with its parsed query.
    Table(Query),
}

fn serve(shared: &Shared, req: &Request) -> Response {
    match serve_inner(shared, req) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn serve_inner(shared: &Shared, req: &Request) -> Result<Response, ApiError> {
    let role = check_keys(shared, req)?;
    let raw_name = &req.path["/rest/v1/".len()..];
    if raw_name.is_empty() {
        // PostgREST answers the root with its OpenAPI document; a stub is enough here.
        return Ok(Response::json(
            200,
            &json!({"swagger": "2.0", "info": {"title": "sms-sender Supabase double"}}),
        ));
    }
    let name = percent_decode(raw_name, false);
    let profile_header = if matches!(req.method.as_str(), "GET" | "HEAD") {
        "accept-profile"
    } else {
        "content-profile"
    };
    if let Some(p) = req.header(profile_header) {
        if p != "public" {
            return Err(
                ApiError::new(406, "PGRST106", format!("Invalid schema: {p}"))
                    .hint("Only the following schemas are exposed: public, graphql_public"),
            );
        }
    }
    let target = match name.strip_prefix("rpc/") {
        // RPC parses its own query: a GET's arguments are query parameters.
        Some(function) => Target::Rpc(function.to_string()),
        None => Target::Table(Query::parse(req)?),
    };

    let mut client = shared.pool.get().map_err(|e| match e {
        PoolError::Timeout => ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        ),
        PoolError::Connect(text) => ApiError::new(
            503,
            "PGRST000",
            "Database connection error. Retrying the connection.",
        )
        .details(text),
    })?;
    let result = match &target {
        // The anon role is granted nothing in the projects this double stands for.
        Target::Rpc(f) if role == auth::Role::Anon => Err(Fail::Api(ApiError::new(
            401,
            "42501",
            format!("permission denied for function {f}"),
        ))),
        Target::Rpc(f) => serve_rpc(shared, &mut client, req, f),
        Target::Table(q) => serve_table(shared, &mut client, req, &name, q, role),
    };
    match result {
        Ok(r) => Ok(r),
        Err(Fail::Api(e)) => Err(e),
        Err(Fail::Db(e)) => {
            if is_connection_error(&e, client.is_closed()) {
                client.discard();
                Err(connection_lost(&e))
            } else {
                Err(db_error(&e))
            }
        }
    }
}
