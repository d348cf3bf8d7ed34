//! The PostgREST subset behind `/rest/v1/<table>` (reference §1.2, §9, §10).
//!
//! What it owns: the gateway/JWT key checks for REST, the query grammar (horizontal filters,
//! `select` with embedding, `order`, `limit`, `offset`), GET/HEAD/PATCH/POST/DELETE, single-object
//! responses, error bodies and the SQLSTATE → HTTP map, request recording and REST faults.
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

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use serde_json::{json, Value};

use super::schema::{ident, qualified, Table};
use super::{jwt_claims, looks_like_jwt, JwtProblem, PoolError, RestFault, Shared};
use crate::http::{percent_decode, Reply, Request, Response};

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
    pub(crate) rules: Mutex<Vec<RestRule>>,
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
    let mut rules = shared.rest.rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| {
        r.times > 0
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
// Errors.

/// An error answer: PostgREST's `{code, details, hint, message}`, or the gateway's
/// `{message, hint}` when `code` is None.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: u16,
    code: Option<String>,
    message: String,
    details: Option<String>,
    hint: Option<String>,
    headers: Vec<(String, String)>,
}

impl ApiError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: Some(code.to_string()),
            message: message.into(),
            details: None,
            hint: None,
            headers: Vec::new(),
        }
    }

    /// The API gateway's shape (no `code`), always 401 here (§1.2).
    fn gateway(message: &str, hint: &str) -> ApiError {
        ApiError {
            status: 401,
            code: None,
            message: message.to_string(),
            details: None,
            hint: Some(hint.to_string()),
            headers: Vec::new(),
        }
    }

    fn details(mut self, d: impl Into<String>) -> ApiError {
        self.details = Some(d.into());
        self
    }

    fn hint(mut self, h: impl Into<String>) -> ApiError {
        self.hint = Some(h.into());
        self
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> ApiError {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn into_response(self) -> Response {
        let (body, proxy) = match &self.code {
            Some(code) => (
                json!({"code": code, "details": self.details, "hint": self.hint, "message": self.message}),
                Some(format!("PostgREST; error={code}")),
            ),
            None => (json!({"message": self.message, "hint": self.hint}), None),
        };
        let mut resp = Response::json(self.status, &body);
        if let Some(p) = proxy {
            resp = resp.header("Proxy-Status", p);
        }
        for (k, v) in self.headers {
            resp = resp.header(&k, v);
        }
        resp
    }

    fn column_missing(table: &str, column: &str) -> ApiError {
        ApiError::new(
            400,
            "42703",
            format!("column {table}.{column} does not exist"),
        )
    }

    fn parse(what: &str, raw: &str, column: usize, details: String) -> ApiError {
        ApiError::new(
            400,
            "PGRST100",
            format!("\"failed to parse {what} ({raw})\" (line 1, column {column})"),
        )
        .details(details)
    }
}

/// A failure while serving: an answer we decided on, or a database error to map.
enum Fail {
    Api(ApiError),
    Db(postgres::Error),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        Fail::Api(e)
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

/// True when the error means the connection (or the server) is gone rather than the statement
/// being wrong: PostgREST answers those with 503 and reconnects.
fn is_connection_error(e: &postgres::Error, closed: bool) -> bool {
    if closed {
        return true;
    }
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// A database error as PostgREST renders it (§9.5).
fn db_error(e: &postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error() else {
        return ApiError::new(
            503,
            "PGRST001",
            "Database client error. Retrying the connection.",
        )
        .details(e.to_string());
    };
    let code = db.code().code();
    let status = match code {
        "23503" | "23505" => 409,
        "25006" => 405,
        "42501" => 403,
        "42883" | "42P01" => 404,
        "57014" => 500,
        "P0001" => 400,
        c if c.starts_with("08") || c.starts_with("53") => 503,
        c if ["0L", "0P", "28"].iter().any(|p| c.starts_with(p)) => 403,
        c if [
            "09", "25", "2D", "38", "39", "3B", "40", "54", "55", "57", "58", "F0", "HV", "P0",
            "XX",
        ]
        .iter()
        .any(|p| c.starts_with(p)) =>
        {
            500
        }
        _ => 400,
    };
    ApiError {
        status,
        code: Some(code.to_string()),
        message: db.message().to_string(),
        details: db.detail().map(str::to_string),
        hint: db.hint().map(str::to_string),
        headers: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Serving.

fn serve(shared: &Shared, req: &Request) -> Response {
    match serve_inner(shared, req) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Which role the request runs as after the key checks.
#[derive(PartialEq)]
enum Role {
    Service,
    Anon,
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
    if let Some(func) = name.strip_prefix("rpc/") {
        return Err(ApiError::new(
            404,
            "PGRST202",
            format!(
                "Could not find the function public.{func} without parameters in the schema cache"
            ),
        ));
    }
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
    let query = Query::parse(req)?;

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
    let result = serve_table(shared, &mut client, req, &name, &query, role);
    match result {
        Ok(r) => Ok(r),
        Err(Fail::Api(e)) => Err(e),
        Err(Fail::Db(e)) => {
            if is_connection_error(&e, client.is_closed()) {
                client.discard();
                Err(ApiError::new(
                    503,
                    "PGRST001",
                    "Database client error. Retrying the connection.",
                )
                .details(e.to_string()))
            } else {
                Err(db_error(&e))
            }
        }
    }
}

/// The gateway's `apikey` check, then the role PostgREST would derive from `Authorization`.
fn check_keys(shared: &Shared, req: &Request) -> Result<Role, ApiError> {
    let service = &shared.config.service_key;
    let key = req.header("apikey").map(str::to_string).or_else(|| {
        req.query_pairs()
            .into_iter()
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v)
    });
    let Some(key) = key else {
        return Err(ApiError::gateway(
            "No API key found in request",
            "No `apikey` request header or url param was found.",
        ));
    };
    if key != *service {
        return Err(ApiError::gateway(
            "Invalid API key",
            "Double check your Supabase `anon` or `service_role` API key.",
        ));
    }
    let authorization = req.header("authorization");
    if service.starts_with("sb_") {
        // New-style keys (§1.1, §1.2): never from a browser; a Bearer must repeat the key exactly.
        if req
            .header("user-agent")
            .is_some_and(|ua| ua.contains("Mozilla"))
        {
            return Err(ApiError::gateway(
                "Forbidden use of secret API key in browser",
                "Secret API keys can only be used in a protected environment and should never be used in a browser.",
            ));
        }
        // A Bearer is forwarded to PostgREST, which refuses any value that is not a JWT, even
        // one byte-identical to `apikey` (the API-keys guide, §1.2; PGRST301, §9.5). The gateway
        // only hands PostgREST a service_role JWT when `Authorization` is absent.
        if let Some(token) = authorization.and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) {
            let parts = token.trim().split('.').count();
            let description = if parts != 3 {
                format!("Expected 3 parts in JWT; got {parts}")
            } else {
                // No user sessions are modelled: no JWT verifies against this project's secret.
                "No suitable key or wrong key type".to_string()
            };
            return Err(ApiError::new(401, "PGRST301", description.clone()).header(
                "WWW-Authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            ));
        }
        return Ok(Role::Service);
    }
    // Legacy JWT keys: PostgREST takes the role from the Bearer token, anon without one.
    let Some(token) = authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) else {
        return Ok(Role::Anon);
    };
    let token = token.trim();
    let invalid = |description: &str| {
        ApiError::new(401, "PGRST301", description.to_string()).header(
            "WWW-Authenticate",
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        )
    };
    let parts = token.split('.').count();
    if parts != 3 {
        return Err(invalid(&format!("Expected 3 parts in JWT; got {parts}")));
    }
    if !looks_like_jwt(token) || token != service {
        return Err(invalid("No suitable key or wrong key type"));
    }
    if let Err(JwtProblem::Expired(_)) = jwt_claims(token) {
        return Err(ApiError::new(401, "PGRST303", "JWT expired").header(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"JWT expired\"",
        ));
    }
    Ok(Role::Service)
}

/// The request's `Prefer` tokens (several headers and comma lists allowed).
fn prefer(req: &Request) -> Vec<String> {
    req.headers
        .iter()
        .filter(|(k, _)| k == "prefer")
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect()
}

fn serve_table(
    shared: &Shared,
    client: &mut postgres::Client,
    req: &Request,
    name: &str,
    query: &Query,
    role: Role,
) -> Result<Response, Fail> {
    let Some(table) = shared.schema.get(client, name)? else {
        return Err(ApiError::new(
            404,
            "PGRST205",
            format!("Could not find the table 'public.{name}' in the schema cache"),
        )
        .into());
    };
    if role == Role::Anon {
        // The anon role has no grants on these tables in the projects this double stands for.
        return Err(
            ApiError::new(401, "42501", format!("permission denied for table {name}")).into(),
        );
    }
    let prefs = prefer(req);
    let representation = prefs.iter().any(|p| p == "return=representation");
    let count_exact = prefs.iter().any(|p| p == "count=exact");
    let single = req
        .header("accept")
        .is_some_and(|a| a.contains("application/vnd.pgrst.object"));

    let mut sql = Sql::default();
    let where_sql = sql.where_clause(&table, "t0", &query.filters)?;
    let select_sql = {
        let mut ctx = Ctx {
            sql: &mut sql,
            client,
            shared,
        };
        ctx.select_list(&table, "t0", &query.select)?
    };
    // (data-modifying CTE, SELECT over its rows or the table, count query)
    let (cte, body_sql, count_sql) = match req.method.as_str() {
        "GET" | "HEAD" => {
            let order = order_clause(&table, "t0", &query.order)?;
            let mut tail = String::new();
            if let Some(l) = query.limit {
                tail.push_str(&format!(" LIMIT {l}"));
            }
            if let Some(o) = query.offset {
                tail.push_str(&format!(" OFFSET {o}"));
            }
            (
                String::new(),
                format!(
                    "SELECT {select_sql} FROM {} t0 WHERE {where_sql}{order}{tail}",
                    qualified(name)
                ),
                Some(format!(
                    "SELECT count(*) FROM {} t0 WHERE {where_sql}",
                    qualified(name)
                )),
            )
        }
        "PATCH" => {
            let body = json_body(req)?;
            let Value::Object(obj) = &body else {
                return Err(invalid_json().into());
            };
            for k in obj.keys() {
                check_body_column(&table, k)?;
            }
            if query.filters.is_empty() {
                return Err(ApiError::new(400, "21000", "UPDATE requires a WHERE clause").into());
            }
            if obj.is_empty() {
                // Nothing to set: PostgREST runs no UPDATE and reports no rows.
                (
                    String::new(),
                    format!(
                        "SELECT {select_sql} FROM {} t0 WHERE false",
                        qualified(name)
                    ),
                    None,
                )
            } else {
                let p = sql.text(body.to_string());
                let set = obj
                    .keys()
                    .map(|k| format!("{0} = _b.{0}", ident(k)))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    format!(
                        "WITH _w AS (UPDATE {q} AS t0 SET {set} \
                         FROM (SELECT * FROM json_populate_record(NULL::{q}, {p}::text::json)) AS _b \
                         WHERE {where_sql} RETURNING t0.*) ",
                        q = qualified(name)
                    ),
                    format!("SELECT {select_sql} FROM _w t0"),
                    None,
                )
            }
        }
        "DELETE" => {
            if query.filters.is_empty() {
                return Err(ApiError::new(400, "21000", "DELETE requires a WHERE clause").into());
            }
            (
                format!(
                    "WITH _w AS (DELETE FROM {q} AS t0 WHERE {where_sql} RETURNING t0.*) ",
                    q = qualified(name)
                ),
                format!("SELECT {select_sql} FROM _w t0"),
                None,
            )
        }
        "POST" => {
            let body = json_body(req)?;
            let rows: Vec<serde_json::Map<String, Value>> = match body {
                Value::Object(o) => vec![o],
                Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::Object(o) => Ok(o),
                        _ => Err(invalid_json()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(invalid_json().into()),
            };
            let columns: Vec<String> = match &query.columns {
                Some(cols) => cols.clone(),
                None => {
                    let first: Vec<String> = rows
                        .first()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    for r in &rows {
                        if r.len() != first.len() || !first.iter().all(|k| r.contains_key(k)) {
                            return Err(ApiError::new(
                                400,
                                "PGRST102",
                                "All object keys must match",
                            )
                            .into());
                        }
                    }
                    first
                }
            };
            for c in &columns {
                check_body_column(&table, c)?;
            }
            if rows.is_empty() {
                (
                    String::new(),
                    format!(
                        "SELECT {select_sql} FROM {} t0 WHERE false",
                        qualified(name)
                    ),
                    None,
                )
            } else {
                let p = sql
                    .text(Value::Array(rows.into_iter().map(Value::Object).collect()).to_string());
                let cols = columns
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let target = if cols.is_empty() {
                    String::new()
                } else {
                    format!(" ({cols})")
                };
                (
                    format!(
                        "WITH _w AS (INSERT INTO {q}{target} SELECT {cols} \
                         FROM json_populate_recordset(NULL::{q}, {p}::text::json) RETURNING *) ",
                        q = qualified(name)
                    ),
                    format!("SELECT {select_sql} FROM _w t0"),
                    None,
                )
            }
        }
        other => {
            return Err(
                ApiError::new(405, "PGRST117", format!("Unsupported HTTP method: {other}")).into(),
            )
        }
    };

    // A data-modifying CTE must sit at the top level of the statement.
    let agg = format!(
        "{cte}SELECT coalesce(json_agg(_r), '[]'::json)::text, count(*), (json_agg(_r) -> 0)::text \
         FROM ({body_sql}) _r"
    );
    let params = sql.params();
    let mut tx = client.transaction()?;
    let row = tx.query_one(&agg, &params)?;
    let array: String = row.get(0);
    let n: i64 = row.get(1);
    let first: Option<String> = row.get(2);
    if single && n != 1 {
        // §9.3: on writes the 406 rolls the statement back.
        tx.rollback()?;
        return Err(ApiError::new(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
        )
        .details(format!("The result contains {n} rows"))
        .into());
    }
    let total = match (&count_sql, count_exact) {
        (Some(c), true) => Some(tx.query_one(c.as_str(), &params)?.get::<_, i64>(0)),
        _ => None,
    };
    tx.commit()?;

    let offset = query.offset.unwrap_or(0) as i64;
    let range = if n > 0 {
        format!("{}-{}", offset, offset + n - 1)
    } else {
        "*".to_string()
    };
    let content_range = format!(
        "{range}/{}",
        total.map(|t| t.to_string()).unwrap_or_else(|| "*".into())
    );
    let content_type = if single {
        "application/vnd.pgrst.object+json; charset=utf-8"
    } else {
        "application/json; charset=utf-8"
    };
    let payload = if single {
        first.unwrap_or_default()
    } else {
        array
    };
    let resp = match req.method.as_str() {
        "GET" | "HEAD" => {
            let status = match total {
                Some(t) if n < t => 206,
                _ => 200,
            };
            let body = if req.method == "HEAD" {
                String::new()
            } else {
                payload
            };
            Response::new(status)
                .header("Content-Type", content_type)
                .header("Content-Range", content_range)
                .body(body)
        }
        method => {
            let created = method == "POST";
            if representation {
                Response::new(if created { 201 } else { 200 })
                    .header("Content-Type", content_type)
                    .header("Content-Range", content_range)
                    .header("Preference-Applied", "return=representation")
                    .body(payload)
            } else {
                let mut r = Response::new(if created { 201 } else { 204 })
                    .header("Content-Range", content_range);
                if prefs.iter().any(|p| p == "return=minimal") {
                    r = r.header("Preference-Applied", "return=minimal");
                }
                r
            }
        }
    };
    Ok(resp)
}

fn invalid_json() -> ApiError {
    ApiError::new(400, "PGRST102", "Empty or invalid json")
}

fn json_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid_json());
    }
    serde_json::from_slice(&req.body).map_err(|_| invalid_json())
}

fn check_body_column(table: &Table, name: &str) -> Result<(), ApiError> {
    if table.column(name).is_none() {
        return Err(ApiError::new(
            400,
            "PGRST204",
            format!(
                "Could not find the '{name}' column of '{}' in the schema cache",
                table.name
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Query grammar.

/// The parsed query string.
struct Query {
    select: Vec<SelectItem>,
    filters: Vec<Filter>,
    order: Vec<OrderTerm>,
    limit: Option<u64>,
    offset: Option<u64>,
    columns: Option<Vec<String>>,
}

impl Query {
    fn parse(req: &Request) -> Result<Query, ApiError> {
        let mut q = Query {
            select: vec![SelectItem::Star],
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            columns: None,
        };
        for (k, v) in req.query_pairs() {
            match k.as_str() {
                "select" => q.select = parse_select(&v)?,
                "order" => q.order = parse_order(&v)?,
                "limit" => q.limit = Some(parse_count("limit", &v)?),
                "offset" => q.offset = Some(parse_count("offset", &v)?),
                "columns" => {
                    q.columns = Some(
                        v.split(',')
                            .map(|c| c.trim().trim_matches('"').to_string())
                            .collect(),
                    )
                }
                "apikey" | "on_conflict" => {}
                "or" | "and" | "not.or" | "not.and" => {
                    return Err(ApiError::new(
                        400,
                        "PGRST100",
                        format!("\"failed to parse logic tree ({v})\" (line 1, column 1)"),
                    )
                    .details(
                        "logic trees (or/and) are not supported by the sms-sender Supabase double",
                    ))
                }
                _ => q.filters.push(parse_filter(&k, &v)?),
            }
        }
        Ok(q)
    }
}

fn parse_count(what: &str, v: &str) -> Result<u64, ApiError> {
    v.trim().parse().map_err(|_| {
        ApiError::parse(
            &format!("{what} parameter"),
            v,
            1,
            format!(
                "unexpected \"{}\" expecting digit",
                v.chars().next().unwrap_or(' ')
            ),
        )
    })
}

/// A horizontal filter `col=[not.]op.value`.
#[derive(Debug, Clone)]
struct Filter {
    column: String,
    negate: bool,
    op: FilterOp,
}

#[derive(Debug, Clone)]
enum FilterOp {
    /// `=`, `<>`, `<`, … against the value cast to the column type.
    Cmp(&'static str, String),
    /// `= ANY(values)`.
    In(Vec<String>),
    /// `IS NULL`, `IS NOT NULL`, `IS TRUE`, …
    Is(&'static str),
    /// A text operator (`LIKE`, `ILIKE`, `~`, `~*`) against the column's text form.
    Text(&'static str, String),
    /// `IS DISTINCT FROM value`.
    Distinct(String),
}

fn parse_filter(column: &str, raw: &str) -> Result<Filter, ApiError> {
    if column.contains('.') || column.contains("->") {
        return Err(ApiError::new(
            400,
            "PGRST100",
            format!("\"failed to parse filter ({column}={raw})\" (line 1, column 1)"),
        )
        .details("filters on embedded resources or JSON paths are not supported by the sms-sender Supabase double"));
    }
    let (negate, rest, start) = match raw.strip_prefix("not.") {
        Some(r) => (true, r, 5),
        None => (false, raw, 1),
    };
    let expecting = if negate {
        "operator (eq, gt, ...)"
    } else {
        "\"not\" or operator (eq, gt, ...)"
    };
    let unexpected = |at: usize, s: &str, expecting: &str| {
        let what = s
            .chars()
            .next()
            .map(|c| format!("\"{c}\""))
            .unwrap_or_else(|| "end of input".into());
        ApiError::parse(
            "filter",
            raw,
            at,
            format!("unexpected {what} expecting {expecting}"),
        )
    };
    let (op, value) = match rest.split_once('.') {
        Some((op, value)) => (op, Some(value)),
        None => (rest, None),
    };
    let known = [
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "is",
        "like",
        "ilike",
        "match",
        "imatch",
        "isdistinct",
    ];
    if !known.contains(&op) {
        return Err(unexpected(start, rest, expecting));
    }
    let Some(value) = value else {
        return Err(unexpected(start + op.len(), "", "\".\""));
    };
    let value_at = start + op.len() + 1;
    let op = match op {
        "eq" => FilterOp::Cmp("=", value.to_string()),
        "neq" => FilterOp::Cmp("<>", value.to_string()),
        "gt" => FilterOp::Cmp(">", value.to_string()),
        "gte" => FilterOp::Cmp(">=", value.to_string()),
        "lt" => FilterOp::Cmp("<", value.to_string()),
        "lte" => FilterOp::Cmp("<=", value.to_string()),
        "like" => FilterOp::Text("LIKE", value.replace('*', "%")),
        "ilike" => FilterOp::Text("ILIKE", value.replace('*', "%")),
        "match" => FilterOp::Text("~", value.to_string()),
        "imatch" => FilterOp::Text("~*", value.to_string()),
        "isdistinct" => FilterOp::Distinct(value.to_string()),
        "is" => FilterOp::Is(match value.to_ascii_lowercase().as_str() {
            "null" => "NULL",
            "not_null" => "NOT NULL",
            "true" => "TRUE",
            "false" => "FALSE",
            "unknown" => "UNKNOWN",
            _ => {
                return Err(unexpected(
                    value_at,
                    value,
                    "null or trilean value (unknown, true, false)",
                ))
            }
        }),
        "in" => match parse_in_list(value) {
            Some(list) => FilterOp::In(list),
            None => return Err(unexpected(value_at, value, "\"(\"")),
        },
        _ => unreachable!("checked against the known operators"),
    };
    Ok(Filter {
        column: column.to_string(),
        negate,
        op,
    })
}

/// `(a,"b,c",d)` → `[a, b,c, d]`; double quotes protect commas, `\` escapes inside quotes.
fn parse_in_list(v: &str) -> Option<Vec<String>> {
    let inner = v.strip_prefix('(')?.strip_suffix(')')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    let _ = was_quoted;
    out.push(cur);
    Some(out)
}

/// One entry of `select=`.
#[derive(Debug, Clone)]
enum SelectItem {
    Star,
    Column {
        name: String,
        alias: Option<String>,
        cast: Option<String>,
    },
    Embed {
        name: String,
        alias: Option<String>,
        hint: Option<String>,
        items: Vec<SelectItem>,
    },
}

/// Recursive-descent parser for `select=` (`a,b:c,rel(x,y),alias:rel!hint(*)`, `col::text`).
struct SelectParser<'a> {
    raw: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl SelectParser<'_> {
    fn err(&self, expecting: &str) -> ApiError {
        let what = self
            .chars
            .get(self.pos)
            .map(|c| format!("\"{c}\""))
            .unwrap_or_else(|| "end of input".into());
        ApiError::parse(
            "select parameter",
            self.raw,
            self.pos + 1,
            format!("unexpected {what} expecting {expecting}"),
        )
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn name(&mut self) -> Result<String, ApiError> {
        self.skip_ws();
        let mut s = String::new();
        if self.peek() == Some('"') {
            self.pos += 1;
            loop {
                match self.peek() {
                    None => return Err(self.err("\"\\\"\"")),
                    Some('"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(c);
                        self.pos += 1;
                    }
                }
            }
        } else {
            while let Some(c) = self.peek() {
                if c.is_alphanumeric()
                    || c == '_'
                    || c == '$'
                    || c == ' '
                    || c == '-' && self.chars.get(self.pos + 1) != Some(&'>')
                {
                    s.push(c);
                    self.pos += 1;
                } else {
                    break;
                }
            }
            s = s.trim().to_string();
        }
        if s.is_empty() {
            return Err(self.err("field name (* or [a..z0..9_$])"));
        }
        Ok(s)
    }

    fn list(&mut self) -> Result<Vec<SelectItem>, ApiError> {
        let mut items = vec![self.item()?];
        loop {
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
                items.push(self.item()?);
            } else {
                return Ok(items);
            }
        }
    }

    fn item(&mut self) -> Result<SelectItem, ApiError> {
        self.skip_ws();
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok(SelectItem::Star);
        }
        if self.raw[self.byte_pos()..].starts_with("...") {
            return Err(ApiError::parse(
                "select parameter",
                self.raw,
                self.pos + 1,
                "spread embeds (...) are not supported by the sms-sender Supabase double".into(),
            ));
        }
        let mut name = self.name()?;
        let mut alias = None;
        if self.peek() == Some(':') && self.chars.get(self.pos + 1) != Some(&':') {
            self.pos += 1;
            alias = Some(name);
            name = self.name()?;
        }
        let mut cast = None;
        if self.peek() == Some(':') && self.chars.get(self.pos + 1) == Some(&':') {
            self.pos += 2;
            let c = self.name()?;
            if !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ' ')
            {
                return Err(self.err("a type name"));
            }
            cast = Some(c);
        }
        let mut hint = None;
        while self.peek() == Some('!') {
            self.pos += 1;
            let h = self.name()?;
            if h != "inner" && h != "left" {
                hint = Some(h);
            }
        }
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            self.skip_ws();
            let items = if self.peek() == Some(')') {
                vec![SelectItem::Star]
            } else {
                self.list()?
            };
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.err("\",\" or \")\""));
            }
            self.pos += 1;
            return Ok(SelectItem::Embed {
                name,
                alias,
                hint,
                items,
            });
        }
        Ok(SelectItem::Column { name, alias, cast })
    }

    fn byte_pos(&self) -> usize {
        self.chars[..self.pos].iter().map(|c| c.len_utf8()).sum()
    }
}

fn parse_select(raw: &str) -> Result<Vec<SelectItem>, ApiError> {
    if raw.trim().is_empty() {
        return Ok(vec![SelectItem::Star]);
    }
    let mut p = SelectParser {
        raw,
        chars: raw.chars().collect(),
        pos: 0,
    };
    let items = p.list()?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(p.err("\",\" or end of input"));
    }
    Ok(items)
}

/// One `order=` term.
#[derive(Debug, Clone)]
struct OrderTerm {
    column: String,
    desc: bool,
    nulls: Option<&'static str>,
}

fn parse_order(raw: &str) -> Result<Vec<OrderTerm>, ApiError> {
    let mut terms = Vec::new();
    let mut at = 1;
    for term in raw.split(',') {
        let mut parts = term.split('.');
        let column = parts.next().unwrap_or("").trim().to_string();
        if column.is_empty() {
            return Err(ApiError::parse(
                "order",
                raw,
                at,
                "unexpected end of input expecting field name".into(),
            ));
        }
        let mut t = OrderTerm {
            column,
            desc: false,
            nulls: None,
        };
        let mut seen_dir = false;
        for p in parts {
            match p {
                "asc" | "desc" if !seen_dir && t.nulls.is_none() => {
                    t.desc = p == "desc";
                    seen_dir = true;
                }
                "nullsfirst" if t.nulls.is_none() => t.nulls = Some("NULLS FIRST"),
                "nullslast" if t.nulls.is_none() => t.nulls = Some("NULLS LAST"),
                _ => {
                    return Err(ApiError::parse(
                        "order",
                        raw,
                        at,
                        format!("unexpected \"{p}\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""),
                    ))
                }
            }
        }
        at += term.chars().count() + 1;
        terms.push(t);
    }
    Ok(terms)
}

fn order_clause(table: &Table, alias: &str, terms: &[OrderTerm]) -> Result<String, ApiError> {
    if terms.is_empty() {
        return Ok(String::new());
    }
    let mut parts = Vec::new();
    for t in terms {
        if table.column(&t.column).is_none() {
            return Err(ApiError::column_missing(&table.name, &t.column));
        }
        let mut s = format!(
            "{alias}.{} {}",
            ident(&t.column),
            if t.desc { "DESC" } else { "ASC" }
        );
        if let Some(n) = t.nulls {
            s.push(' ');
            s.push_str(n);
        }
        parts.push(s);
    }
    Ok(format!(" ORDER BY {}", parts.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// SQL building.

/// Bind parameters (all text or text[]) and alias numbering for one statement.
#[derive(Default)]
struct Sql {
    params: Vec<Box<dyn ToSql + Sync>>,
    aliases: usize,
}

impl Sql {
    fn text(&mut self, v: String) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn text_array(&mut self, v: Vec<String>) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn alias(&mut self) -> usize {
        self.aliases += 1;
        self.aliases
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }

    /// The ANDed filters (`TRUE` when there are none), columns checked against `table`.
    fn where_clause(
        &mut self,
        table: &Table,
        alias: &str,
        filters: &[Filter],
    ) -> Result<String, ApiError> {
        if filters.is_empty() {
            return Ok("TRUE".into());
        }
        let mut parts = Vec::new();
        for f in filters {
            let Some(col) = table.column(&f.column) else {
                return Err(ApiError::column_missing(&table.name, &f.column));
            };
            let c = format!("{alias}.{}", ident(&col.name));
            let ty = &col.sql_type;
            let expr = match &f.op {
                FilterOp::Cmp(op, v) => format!("{c} {op} {}::text::{ty}", self.text(v.clone())),
                FilterOp::In(vs) => {
                    format!("{c} = ANY({}::text[]::{ty}[])", self.text_array(vs.clone()))
                }
                FilterOp::Is(kw) => format!("{c} IS {kw}"),
                FilterOp::Text(op, v) => format!("{c}::text {op} {}::text", self.text(v.clone())),
                FilterOp::Distinct(v) => {
                    format!("{c} IS DISTINCT FROM {}::text::{ty}", self.text(v.clone()))
                }
            };
            parts.push(if f.negate {
                format!("NOT ({expr})")
            } else {
                expr
            });
        }
        Ok(parts.join(" AND "))
    }
}

/// What building a select list needs: parameters/aliases, and the schema for embedded tables.
struct Ctx<'a> {
    sql: &'a mut Sql,
    client: &'a mut postgres::Client,
    shared: &'a Shared,
}

impl Ctx<'_> {
    /// `expr AS "name", …` for `items` over `table` aliased `alias`.
    fn select_list(
        &mut self,
        table: &Table,
        alias: &str,
        items: &[SelectItem],
    ) -> Result<String, Fail> {
        let mut out = Vec::new();
        for item in items {
            match item {
                SelectItem::Star => {
                    for c in &table.columns {
                        out.push(format!("{alias}.{0} AS {0}", ident(&c.name)));
                    }
                }
                SelectItem::Column {
                    name,
                    alias: as_name,
                    cast,
                } => {
                    if table.column(name).is_none() {
                        return Err(ApiError::column_missing(&table.name, name).into());
                    }
                    let cast = cast.as_ref().map(|c| format!("::{c}")).unwrap_or_default();
                    out.push(format!(
                        "{alias}.{}{cast} AS {}",
                        ident(name),
                        ident(as_name.as_deref().unwrap_or(name))
                    ));
                }
                SelectItem::Embed {
                    name,
                    alias: as_name,
                    hint,
                    items,
                } => {
                    let out_name = ident(as_name.as_deref().unwrap_or(name));
                    out.push(format!(
                        "{} AS {out_name}",
                        self.embed(table, alias, name, hint.as_deref(), items)?
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err(ApiError::parse("select parameter", "", 1, "empty select".into()).into());
        }
        Ok(out.join(", "))
    }

    /// A correlated subquery for an embedded resource, through the one foreign key that links
    /// the two tables: many-to-one gives an object (or null), one-to-many an array.
    fn embed(
        &mut self,
        table: &Table,
        alias: &str,
        name: &str,
        hint: Option<&str>,
        items: &[SelectItem],
    ) -> Result<String, Fail> {
        let no_relationship = || {
            ApiError::new(
                400,
                "PGRST200",
                format!("Could not find a relationship between '{}' and '{name}' in the schema cache", table.name),
            )
            .details(format!(
                "Searched for a foreign key relationship between '{}' and '{name}' in the schema 'public', but no matches were found.",
                table.name
            ))
        };
        let Some(target) = self.shared.schema.get(self.client, name)? else {
            return Err(no_relationship().into());
        };
        let fits = |fk: &super::schema::ForeignKey| match hint {
            None => true,
            Some(h) => fk.name == h || fk.cols.len() == 1 && fk.cols[0] == h,
        };
        let out: Vec<_> = table
            .fks_out
            .iter()
            .filter(|fk| fk.ftable == target.name && fits(fk))
            .collect();
        let inc: Vec<_> = table
            .fks_in
            .iter()
            .filter(|fk| fk.table == target.name && fits(fk))
            .collect();
        if out.len() + inc.len() == 0 {
            return Err(no_relationship().into());
        }
        if out.len() + inc.len() > 1 {
            return Err(ApiError::new(
                300,
                "PGRST201",
                format!(
                    "Could not embed because more than one relationship was found for '{}' and '{name}'",
                    table.name
                ),
            )
            .hint(format!(
                "Try changing '{name}' to one of the following: {}. Find the desired relationship in the 'details' key.",
                out.iter()
                    .chain(inc.iter())
                    .map(|fk| format!("'{name}!{}'", fk.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
        let n = self.sql.alias();
        let sub = format!("t{n}");
        let inner = self.select_list(&target, &sub, items)?;
        if let Some(fk) = out.first() {
            let cond = fk
                .cols
                .iter()
                .zip(&fk.fcols)
                .map(|(c, fc)| format!("{sub}.{} = {alias}.{}", ident(fc), ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            Ok(format!(
                "(SELECT row_to_json(_e{n}) FROM (SELECT {inner} FROM {} {sub} WHERE {cond} LIMIT 1) _e{n})",
                qualified(&target.name)
            ))
        } else {
            let fk = inc[0];
            let cond = fk
                .cols
                .iter()
                .zip(&fk.fcols)
                .map(|(c, fc)| format!("{sub}.{} = {alias}.{}", ident(c), ident(fc)))
                .collect::<Vec<_>>()
                .join(" AND ");
            Ok(format!(
                "COALESCE((SELECT json_agg(_e{n}) FROM (SELECT {inner} FROM {} {sub} WHERE {cond}) _e{n}), '[]'::json)",
                qualified(&target.name)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use serde_json::json;

    use super::super::testkit::{env, env_with, http, insert_message, rest, seed};
    use super::super::{RestFault, SupabaseConfig};
    use super::*;

    #[test]
    fn get_filters_order_limit_and_embedding() {
        let e = env();
        let s = seed(&e.pg);
        let a = insert_message(&e.pg, &s, "first", "outbound", Some("sent"));
        let b = insert_message(&e.pg, &s, "second", "outbound", Some("failed"));
        let c = insert_message(&e.pg, &s, "third", "inbound", None);
        let mut db = e.pg.client();
        for (id, secs) in [(&a, 1), (&b, 2), (&c, 3)] {
            db.execute(
                "UPDATE messages SET created_at = '2026-08-21T10:15:00.120+00'::timestamptz + make_interval(secs => $2::int) WHERE id = $1::text::uuid",
                &[id, &secs],
            )
            .unwrap();
        }
        db.batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, conversation_id uuid REFERENCES conversations);
             INSERT INTO notes VALUES (1, NULL);",
        )
        .unwrap();

        let r = rest(
            &e.sb,
            "GET",
            "messages?select=id,content,created_at,conversation:conversations(phone_number)&direction=eq.outbound&order=created_at.desc&limit=1&offset=1",
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(r.header("Content-Range"), Some("1-1/*"));
        assert_eq!(
            r.json(),
            json!([{"id": a, "content": "first", "created_at": "2026-08-21T10:15:01.12+00:00",
                    "conversation": {"phone_number": "+15551234567"}}])
        );
        // Key order follows `select`, as PostgREST renders it.
        assert!(r.body.starts_with("[{\"id\""), "{}", r.body);

        let r = rest(
            &e.sb,
            "GET",
            "messages?select=content&status=in.(sent,%22failed%22)&order=content.asc",
            &[],
            None,
        );
        assert_eq!(
            r.json(),
            json!([{"content": "first"}, {"content": "second"}])
        );
        let r = rest(
            &e.sb,
            "GET",
            "messages?select=content&status=is.null",
            &[],
            None,
        );
        assert_eq!(r.json(), json!([{"content": "third"}]));
        let r = rest(
            &e.sb,
            "GET",
            "messages?select=content&status=not.eq.sent&direction=eq.outbound",
            &[],
            None,
        );
        assert_eq!(r.json(), json!([{"content": "second"}]));
        let r = rest(
            &e.sb,
            "GET",
            "messages?select=content&created_at=gt.2026-08-21T10:15:02.5Z",
            &[],
            None,
        );
        assert_eq!(r.json(), json!([{"content": "third"}]));
        let r = rest(
            &e.sb,
            "GET",
            &format!("messages?id=eq.{c}&select=*"),
            &[],
            None,
        );
        let row = &r.json()[0];
        assert_eq!(row.as_object().unwrap().len(), 11, "{row}");
        assert_eq!(row["twilio_message_sid"], Value::Null);
        let r = rest(&e.sb, "GET", "messages?status=eq.nothing", &[], None);
        assert_eq!(
            (r.status, r.body.as_str(), r.header("Content-Range")),
            (200, "[]", Some("*/*"))
        );
        let r = rest(
            &e.sb,
            "GET",
            "messages?select=id&direction=eq.outbound",
            &[("Prefer", "count=exact")],
            None,
        );
        assert_eq!(r.header("Content-Range"), Some("0-1/2"));

        // One-to-many embed, and a many-to-one embed with no row.
        let r = rest(
            &e.sb,
            "GET",
            "conversations?select=phone_number,messages(content)&messages.order=x",
            &[],
            None,
        );
        assert_eq!(
            r.status, 400,
            "embedded filters are refused loudly: {}",
            r.body
        );
        let r = rest(
            &e.sb,
            "GET",
            "conversations?select=phone_number,messages(content)",
            &[],
            None,
        );
        assert_eq!(r.json()[0]["messages"].as_array().unwrap().len(), 3);
        let r = rest(&e.sb, "GET", "notes?select=id,conversations(id)", &[], None);
        assert_eq!(r.json(), json!([{"id": 1, "conversations": null}]));
    }

    #[test]
    fn claim_race_has_exactly_one_winner() {
        let e = Arc::new(env());
        let s = seed(&e.pg);
        for round in 0..4 {
            let id = insert_message(
                &e.pg,
                &s,
                &format!("race {round}"),
                "outbound",
                Some("pending"),
            );
            let barrier = Arc::new(Barrier::new(2));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (e, barrier, id) = (e.clone(), barrier.clone(), id.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let r = rest(
                            &e.sb,
                            "PATCH",
                            &format!(
                                "messages?id=eq.{id}&status=eq.queued_for_send&select=id,status"
                            ),
                            &[("Prefer", "return=representation")],
                            Some(r#"{"status":"sending"}"#),
                        );
                        assert_eq!(r.status, 200, "{}", r.body);
                        assert_eq!(
                            r.header("Preference-Applied"),
                            Some("return=representation")
                        );
                        r.json()
                    })
                })
                .collect();
            let mut results: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            results.sort_by_key(|v| v.as_array().unwrap().len());
            assert_eq!(results[0], json!([]));
            assert_eq!(results[1], json!([{"id": id, "status": "sending"}]));
        }
    }

    #[test]
    fn single_object_requests_406_and_roll_back() {
        let e = env();
        let s = seed(&e.pg);
        let a = insert_message(&e.pg, &s, "a", "outbound", Some("pending"));
        insert_message(&e.pg, &s, "b", "outbound", Some("pending"));
        let object = ("Accept", "application/vnd.pgrst.object+json");
        let r = rest(
            &e.sb,
            "PATCH",
            "messages?status=eq.queued_for_send",
            &[object, ("Prefer", "return=representation")],
            Some(r#"{"status":"sending"}"#),
        );
        assert_eq!(r.status, 406);
        assert_eq!(
            r.json(),
            json!({"code":"PGRST116","details":"The result contains 2 rows","hint":null,"message":"Cannot coerce the result to a single JSON object"})
        );
        let n: i64 =
            e.pg.client()
                .query_one(
                    "SELECT count(*) FROM messages WHERE status = 'sending'",
                    &[],
                )
                .unwrap()
                .get(0);
        assert_eq!(n, 0, "the 406 rolled the update back");
        let r = rest(&e.sb, "GET", "messages?status=eq.nope", &[object], None);
        assert_eq!(
            (r.status, r.json()["details"].clone()),
            (406, json!("The result contains 0 rows"))
        );
        let r = rest(
            &e.sb,
            "PATCH",
            &format!("messages?id=eq.{a}&select=status"),
            &[object, ("Prefer", "return=representation")],
            Some(r#"{"status":"sending"}"#),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("Content-Type"),
            Some("application/vnd.pgrst.object+json; charset=utf-8")
        );
        assert_eq!(r.json(), json!({"status": "sending"}));
        // Without return=representation: 204 and no body.
        let r = rest(
            &e.sb,
            "PATCH",
            &format!("messages?id=eq.{a}"),
            &[],
            Some(r#"{"status":"sent","sent_at":"2026-08-21T10:15:31Z"}"#),
        );
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let sent_at: String =
            e.pg.client()
                .query_one(
                    "SELECT to_json(sent_at)::text FROM messages WHERE id = $1::text::uuid",
                    &[&a],
                )
                .unwrap()
                .get(0);
        assert_eq!(sent_at, "\"2026-08-21T10:15:31+00:00\"");
    }

    #[test]
    fn error_bodies_match_postgrest() {
        let e = env();
        let expect = |r: crate::supabase::testkit::HttpResp, status: u16, body: Value| {
            assert_eq!(r.status, status, "{}", r.body);
            assert_eq!(r.json(), body);
        };
        expect(
            rest(&e.sb, "GET", "messages?id=eq.abc", &[], None),
            400,
            json!({"code":"22P02","details":null,"hint":null,"message":"invalid input syntax for type uuid: \"abc\""}),
        );
        expect(
            rest(&e.sb, "GET", "nope", &[], None),
            404,
            json!({"code":"PGRST205","details":null,"hint":null,"message":"Could not find the table 'public.nope' in the schema cache"}),
        );
        expect(
            rest(&e.sb, "GET", "messages?x=eq.1", &[], None),
            400,
            json!({"code":"42703","details":null,"hint":null,"message":"column messages.x does not exist"}),
        );
        expect(
            rest(&e.sb, "GET", "messages?select=id,bogus", &[], None),
            400,
            json!({"code":"42703","details":null,"hint":null,"message":"column messages.bogus does not exist"}),
        );
        expect(
            rest(&e.sb, "GET", "messages?status=queued", &[], None),
            400,
            json!({"code":"PGRST100","details":"unexpected \"q\" expecting \"not\" or operator (eq, gt, ...)","hint":null,
                   "message":"\"failed to parse filter (queued)\" (line 1, column 1)"}),
        );
        expect(
            rest(
                &e.sb,
                "PATCH",
                "messages?id=eq.6f1c2e0a-0000-4000-8000-000000000000",
                &[],
                Some(r#"{"x":1}"#),
            ),
            400,
            json!({"code":"PGRST204","details":null,"hint":null,"message":"Could not find the 'x' column of 'messages' in the schema cache"}),
        );
        expect(
            rest(
                &e.sb,
                "PATCH",
                "messages",
                &[],
                Some(r#"{"status":"sent"}"#),
            ),
            400,
            json!({"code":"21000","details":null,"hint":null,"message":"UPDATE requires a WHERE clause"}),
        );
        expect(
            rest(
                &e.sb,
                "PATCH",
                "messages?id=eq.6f1c2e0a-0000-4000-8000-000000000000",
                &[],
                Some("{not json"),
            ),
            400,
            json!({"code":"PGRST102","details":null,"hint":null,"message":"Empty or invalid json"}),
        );
        expect(
            rest(
                &e.sb,
                "POST",
                "messages",
                &[],
                Some(
                    r#"{"conversation_id":"6f1c2e0a-0000-4000-8000-000000000000","user_id":"6f1c2e0a-0000-4000-8000-000000000000","role":"a","content":"c","direction":"outbound"}"#,
                ),
            ),
            409,
            json!({"code":"23503","details":"Key (conversation_id)=(6f1c2e0a-0000-4000-8000-000000000000) is not present in table \"conversations\".","hint":null,
                   "message":"insert or update on table \"messages\" violates foreign key constraint \"messages_conversation_id_fkey\""}),
        );
        // Gateway shapes: no `code`.
        let r = http(&e.sb, "GET", "/rest/v1/messages", &[], None).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            r.json(),
            json!({"message":"No API key found in request","hint":"No `apikey` request header or url param was found."})
        );
        let r = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[("apikey", "wrong")],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            r.json(),
            json!({"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API key."})
        );
        // A legacy key without Bearer is the anon role.
        let key = e.sb.service_key();
        let r = http(&e.sb, "GET", "/rest/v1/messages", &[("apikey", &key)], None).unwrap();
        assert_eq!((r.status, r.json()["code"].clone()), (401, json!("42501")));
        assert_eq!(r.json()["message"], "permission denied for table messages");
        let r = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[("apikey", &key), ("Authorization", "Bearer potato")],
            None,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.json()["code"].clone()),
            (401, json!("PGRST301"))
        );
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"Expected 3 parts in JWT; got 1\"")
        );
        // ?apikey= works like the header.
        let r = http(
            &e.sb,
            "GET",
            &format!("/rest/v1/messages?apikey={key}"),
            &[("Authorization", &format!("Bearer {key}"))],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }

    #[test]
    fn secret_keys_follow_the_new_key_rules() {
        let e = env_with(SupabaseConfig {
            service_key: "sb_secret_test123".into(),
            ..Default::default()
        });
        let ok = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[("apikey", "sb_secret_test123")],
            None,
        )
        .unwrap();
        assert_eq!(ok.status, 200, "{}", ok.body);
        let same = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[
                ("apikey", "sb_secret_test123"),
                ("Authorization", "Bearer sb_secret_test123"),
            ],
            None,
        )
        .unwrap();
        // Even byte-identical to `apikey`, a non-JWT Bearer is refused by PostgREST (§1.2).
        assert_eq!(same.status, 401, "{}", same.body);
        assert_eq!(same.json()["code"], "PGRST301");
        assert_eq!(same.json()["message"], "Expected 3 parts in JWT; got 1");
        let other = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[
                ("apikey", "sb_secret_test123"),
                ("Authorization", "Bearer sb_secret_other"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(other.status, 401);
        assert_eq!(other.json()["code"], "PGRST301");
        let browser = http(
            &e.sb,
            "GET",
            "/rest/v1/messages",
            &[
                ("apikey", "sb_secret_test123"),
                ("User-Agent", "Mozilla/5.0"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(browser.status, 401);
    }

    #[test]
    fn post_inserts_and_returns_rows() {
        let e = env();
        let s = seed(&e.pg);
        let body = json!({"conversation_id": s.conversation, "user_id": s.user, "role": "assistant",
                          "content": "hello", "direction": "outbound", "status": "draft"});
        let r = rest(
            &e.sb,
            "POST",
            "messages?select=content,status",
            &[("Prefer", "return=representation")],
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json(), json!([{"content": "hello", "status": "draft"}]));
        let r = rest(
            &e.sb,
            "POST",
            "messages",
            &[],
            Some(&json!([body, body]).to_string()),
        );
        assert_eq!((r.status, r.body.as_str()), (201, ""));
        let n: i64 =
            e.pg.client()
                .query_one("SELECT count(*) FROM messages", &[])
                .unwrap()
                .get(0);
        assert_eq!(n, 3);
        let r = rest(
            &e.sb,
            "DELETE",
            "messages?content=eq.hello&select=content",
            &[("Prefer", "return=representation")],
            None,
        );
        assert_eq!(r.json().as_array().unwrap().len(), 3);
    }

    #[test]
    fn faults_latency_and_database_outage() {
        let e = env();
        let s = seed(&e.pg);
        let id = insert_message(&e.pg, &s, "x", "outbound", Some("pending"));
        e.sb.rest_fail_next(1, RestFault::db_unavailable());
        let r = rest(&e.sb, "GET", "messages", &[], None);
        assert_eq!(
            (r.status, r.json()["code"].clone()),
            (503, json!("PGRST001"))
        );
        assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 200);

        e.sb.rest_fail_next(1, RestFault::NonJson { status: 502 });
        let r = rest(&e.sb, "GET", "messages", &[], None);
        assert_eq!(
            (r.status, r.header("Content-Type")),
            (502, Some("text/html"))
        );

        e.sb.rest_fail_next(1, RestFault::Hangup);
        let key = e.sb.service_key();
        let auth = format!("Bearer {key}");
        let patch = format!("/rest/v1/messages?id=eq.{id}");
        let headers = [("apikey", key.as_str()), ("Authorization", auth.as_str())];
        assert!(http(
            &e.sb,
            "PATCH",
            &patch,
            &headers,
            Some(r#"{"content":"hung"}"#)
        )
        .is_none());
        e.sb.rest_fail_next(1, RestFault::HangupAfterApply);
        assert!(http(
            &e.sb,
            "PATCH",
            &patch,
            &headers,
            Some(r#"{"content":"applied"}"#)
        )
        .is_none());
        let content: String =
            e.pg.client()
                .query_one("SELECT content FROM messages", &[])
                .unwrap()
                .get(0);
        assert_eq!(
            content, "applied",
            "Hangup did not apply, HangupAfterApply did"
        );
        let records = e.sb.rest_requests();
        let last = records.last().unwrap();
        assert_eq!((last.method.as_str(), last.status), ("PATCH", None));
        assert_eq!(last.body, r#"{"content":"applied"}"#);
        assert_eq!(records[0].status, Some(503));

        e.sb.set_rest_outage(Some(RestFault::Status {
            status: 504,
            code: "PGRST003".into(),
            message: "Timed out".into(),
        }));
        assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 504);
        assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 504);
        e.sb.set_rest_outage(None);

        e.sb.set_rest_latency(Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(rest(&e.sb, "GET", "messages", &[], None).status, 200);
        assert!(t.elapsed() >= Duration::from_millis(200));
        e.sb.set_rest_latency(Duration::ZERO);

        // PostgreSQL down: 503 like PostgREST; back up: served again on fresh connections.
        e.pg.stop();
        let r = rest(&e.sb, "GET", "messages", &[], None);
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            matches!(r.json()["code"].as_str(), Some("PGRST000" | "PGRST001")),
            "{}",
            r.body
        );
        e.pg.start_again();
        let r = rest(&e.sb, "GET", "messages?select=content", &[], None);
        assert_eq!((r.status, r.json()), (200, json!([{"content": "applied"}])));
    }
}
