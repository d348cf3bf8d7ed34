//! What goes back to the client: success responses (`Content-Range`, `Content-Type`,
//! `Preference-Applied`), PostgREST's error body `{code, details, hint, message}` (or the
//! gateway's `{message, hint}`), and the SQLSTATE → HTTP status map (§9.5).

use serde_json::json;

use crate::http::{Request, Response};

// ---------------------------------------------------------------------------------------------
// Errors.

/// An error answer: PostgREST's `{code, details, hint, message}`, or the gateway's
/// `{message, hint}` when `code` is None.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    status: u16,
    code: Option<String>,
    message: String,
    details: Option<String>,
    hint: Option<String>,
    headers: Vec<(String, String)>,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
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
    pub(super) fn gateway(message: &str, hint: &str) -> ApiError {
        ApiError {
            status: 401,
            code: None,
            message: message.to_string(),
            details: None,
            hint: Some(hint.to_string()),
            headers: Vec::new(),
        }
    }

    pub(super) fn details(mut self, d: impl Into<String>) -> ApiError {
        self.details = Some(d.into());
        self
    }

    pub(super) fn hint(mut self, h: impl Into<String>) -> ApiError {
        self.hint = Some(h.into());
        self
    }

    pub(super) fn header(mut self, k: &str, v: impl Into<String>) -> ApiError {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    pub(super) fn into_response(self) -> Response {
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

    pub(super) fn column_missing(table: &str, column: &str) -> ApiError {
        ApiError::new(
            400,
            "42703",
            format!("column {table}.{column} does not exist"),
        )
    }

    pub(super) fn parse(what: &str, raw: &str, column: usize, details: String) -> ApiError {
        ApiError::new(
            400,
            "PGRST100",
            format!("\"failed to parse {what} ({raw})\" (line 1, column {column})"),
        )
        .details(details)
    }
}

/// A failure while serving: an answer we decided on, or a database error to map.
pub(super) enum Fail {
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
pub(super) fn is_connection_error(e: &postgres::Error, closed: bool) -> bool {
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

/// 503 `PGRST001`: the connection (or the server) went away under the statement.
pub(super) fn connection_lost(e: &postgres::Error) -> ApiError {
    ApiError::new(
        503,
        "PGRST001",
        "Database client error. Retrying the connection.",
    )
    .details(e.to_string())
}

/// A database error as PostgREST renders it (§9.5).
pub(super) fn db_error(e: &postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error() else {
        return connection_lost(e);
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

/// 400 `PGRST102`: the body is empty or not JSON (or not the object/array expected).
pub(super) fn invalid_json() -> ApiError {
    ApiError::new(400, "PGRST102", "Empty or invalid json")
}

// ---------------------------------------------------------------------------------------------
// Success.

/// The request's `Prefer` tokens (several headers and comma lists allowed).
pub(super) fn prefer(req: &Request) -> Vec<String> {
    req.headers
        .iter()
        .filter(|(k, _)| k == "prefer")
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect()
}

/// What a statement produced: the rows as one JSON array, the first row alone, how many, and
/// the exact total when `Prefer: count=exact` asked for one.
pub(super) struct Rows {
    pub(super) array: String,
    pub(super) first: Option<String>,
    pub(super) n: i64,
    pub(super) total: Option<i64>,
}

/// The success answer: GET/HEAD 200 (206 when an exact count exceeds the page), writes 201 for
/// POST, else 200 with `return=representation` or 204; `Content-Range` is `first-last/total`.
pub(super) fn rows_response(
    req: &Request,
    prefs: &[String],
    single: bool,
    offset: u64,
    rows: Rows,
) -> Response {
    let Rows {
        array,
        first,
        n,
        total,
    } = rows;
    let offset = offset as i64;
    let representation = prefs.iter().any(|p| p == "return=representation");
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
    match req.method.as_str() {
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
    }
}
