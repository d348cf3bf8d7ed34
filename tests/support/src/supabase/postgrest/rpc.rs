//! `POST|GET /rest/v1/rpc/<function>` (PostgREST's `callPlanToQuery` and `mainCall`): the
//! overload chosen by the argument keys, the call with named arguments typed by the function's
//! own parameter types, and the answer shaped by what the function returns.
//!
//! Invariants:
//! - a POST body's values reach the function through `json_to_record(set)` with a column
//!   definition list of the parameters' types, exactly as PostgREST passes them, so PostgreSQL
//!   converts JSON arrays to `int[]`, strings to `timestamptz`, and produces the type errors;
//!   a GET's values are text cast to the parameter's type;
//! - only the arguments the request names are passed (`fn("a" := …)`), so defaults apply;
//! - POST of a volatile function runs read-write; GET, and any stable or immutable function,
//!   runs in a read-only transaction (a write there fails with `25006`, answered 405);
//! - the function runs once per request (its rows are materialised in a CTE that the page, the
//!   count and the single-object check all read).

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::schema::{ident, Table};
use super::super::Shared;
use super::query::Query;
use super::render::{invalid_json, prefer, ApiError, Fail};
use super::routine::{self, Returns, Routine, Volatility};
use super::sql::{order_clause, Ctx, Sql};
use crate::http::{Request, Response};

/// Where the arguments come from.
enum Args {
    /// A JSON POST body: an object (one call) or an array of objects (one call per element).
    Json { body: Value, keys: BTreeSet<String> },
    /// Query parameters of a GET (text values).
    Query(Vec<(String, String)>),
}

/// Serve an RPC call of `function`.
pub(super) fn serve_rpc(
    shared: &Shared,
    client: &mut postgres::Client,
    req: &Request,
    function: &str,
) -> Result<Response, Fail> {
    let is_post = match req.method.as_str() {
        "POST" => true,
        "GET" | "HEAD" => false,
        other => {
            return Err(ApiError::new(
                405,
                "PGRST101",
                format!("Cannot use the {other} method on RPC"),
            )
            .into())
        }
    };
    let (query, args) = if is_post {
        (Query::parse(req)?, json_args(req)?)
    } else {
        let (q, a) = Query::parse_rpc_read(req)?;
        (q, Args::Query(a))
    };
    let keys: BTreeSet<String> = match &args {
        Args::Json { keys, .. } => keys.clone(),
        Args::Query(pairs) => pairs.iter().map(|(k, _)| k.clone()).collect(),
    };
    let candidates = routine::load(client, function)?;
    let routine = routine::find(function, &candidates, &keys, is_post)?.clone();

    let mut sql = Sql::default();
    let from = call_from(&mut sql, &routine, &args, &keys);
    let source = match routine.returns {
        Returns::Composite { .. } => format!("SELECT pgrst_call.* FROM {from}"),
        _ => format!("SELECT pgrst_call.pgrst_scalar FROM {from}"),
    };
    let read_only = !is_post || routine.volatility != Volatility::Volatile;
    let prefs = prefer(req);
    let count_exact = prefs.iter().any(|p| p == "count=exact");
    let single = req
        .header("accept")
        .is_some_and(|a| a.contains("application/vnd.pgrst.object"));
    let mut tail = String::new();
    if let Some(l) = query.limit {
        tail.push_str(&format!(" LIMIT {l}"));
    }
    if let Some(o) = query.offset {
        tail.push_str(&format!(" OFFSET {o}"));
    }

    // (page SELECT over pgrst_source, JSON of the page, count of the filtered source)
    let (page, body_json, where_sql) = match &routine.returns {
        Returns::Composite { columns, set } => {
            let table = Table {
                name: routine.name.clone(),
                columns: columns.clone(),
                pk: Vec::new(),
                fks_out: Vec::new(),
                fks_in: Vec::new(),
            };
            let where_sql = sql.where_clause(&table, "t0", &query.filters)?;
            let select_sql = {
                let mut ctx = Ctx {
                    sql: &mut sql,
                    client,
                    shared,
                };
                ctx.select_list(&table, "t0", &query.select)?
            };
            let order = order_clause(&table, "t0", &query.order)?;
            let json = if *set && !single {
                "coalesce(json_agg(_r), '[]')"
            } else {
                "coalesce(json_agg(_r) -> 0, 'null')"
            };
            (
                format!("SELECT {select_sql} FROM pgrst_source t0 WHERE {where_sql}{order}{tail}"),
                json,
                where_sql,
            )
        }
        Returns::Scalar { set } => (
            format!("SELECT t0.pgrst_scalar FROM pgrst_source t0{tail}"),
            if *set && !single {
                "coalesce(json_agg(_r.pgrst_scalar), '[]')"
            } else {
                "coalesce(json_agg(_r.pgrst_scalar) -> 0, 'null')"
            },
            "TRUE".to_string(),
        ),
        Returns::Void => (
            "SELECT t0.pgrst_scalar FROM pgrst_source t0".to_string(),
            "'null'::json",
            "TRUE".to_string(),
        ),
    };
    let statement = format!(
        "WITH pgrst_source AS ({source}) \
         SELECT {body_json}::text, count(*), \
                (SELECT count(*) FROM pgrst_source t0 WHERE {where_sql}) \
           FROM ({page}) _r"
    );
    let params = sql.params();
    let mut tx = client.build_transaction().read_only(read_only).start()?;
    let row = tx.query_one(statement.as_str(), &params)?;
    let body: String = row.get(0);
    let n: i64 = row.get(1);
    let total: i64 = row.get(2);
    let returns_set = matches!(
        routine.returns,
        Returns::Composite { set: true, .. } | Returns::Scalar { set: true }
    );
    if single && returns_set && n != 1 {
        tx.rollback()?;
        return Err(ApiError::new(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
        )
        .details(format!("The result contains {n} rows"))
        .into());
    }
    tx.commit()?;

    let offset = query.offset.unwrap_or(0) as i64;
    let range = if n > 0 && !matches!(routine.returns, Returns::Void) {
        format!("{}-{}", offset, offset + n - 1)
    } else {
        "*".to_string()
    };
    let content_range = format!(
        "{range}/{}",
        if count_exact {
            total.to_string()
        } else {
            "*".to_string()
        }
    );
    if matches!(routine.returns, Returns::Void) {
        return Ok(Response::new(204).header("Content-Range", content_range));
    }
    let status = if count_exact && n < total { 206 } else { 200 };
    let content_type = if single {
        "application/vnd.pgrst.object+json; charset=utf-8"
    } else {
        "application/json; charset=utf-8"
    };
    let mut resp = Response::new(status)
        .header("Content-Type", content_type)
        .header("Content-Range", content_range);
    if count_exact {
        resp = resp.header("Preference-Applied", "count=exact");
    }
    Ok(resp.body(if req.method == "HEAD" {
        String::new()
    } else {
        body
    }))
}

/// The arguments of a JSON POST: an empty body is `{}`; an object gives its keys; an array of
/// objects with the same keys gives those keys; `columns=` overrides the keys (`getPayload`).
fn json_args(req: &Request) -> Result<Args, ApiError> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&req.body).map_err(|_| invalid_json())?
    };
    let columns = req
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "columns")
        .map(|(_, v)| {
            v.split(',')
                .map(|c| c.trim().trim_matches('"').to_string())
                .collect::<BTreeSet<String>>()
        });
    let keys = match (&body, columns) {
        (_, Some(cols)) => cols,
        (Value::Object(o), None) => o.keys().cloned().collect(),
        (Value::Array(items), None) => match items.first() {
            None => BTreeSet::new(),
            Some(Value::Object(first)) => {
                let keys: BTreeSet<String> = first.keys().cloned().collect();
                let uniform = items.iter().all(|i| {
                    i.as_object()
                        .is_some_and(|o| o.keys().cloned().collect::<BTreeSet<_>>() == keys)
                });
                if !uniform {
                    return Err(ApiError::new(400, "PGRST102", "All object keys must match"));
                }
                keys
            }
            Some(_) => return Err(ApiError::new(400, "PGRST102", "All object keys must match")),
        },
        // PostgREST truncates any other JSON to an empty array.
        _ => BTreeSet::new(),
    };
    Ok(Args::Json { body, keys })
}

/// `FROM …` producing `pgrst_call` (with `pgrst_scalar` for scalar results), like PostgREST's
/// `callPlanToQuery`.
fn call_from(sql: &mut Sql, routine: &Routine, args: &Args, keys: &BTreeSet<String>) -> String {
    let function = format!("\"public\".{}", ident(&routine.name));
    let specified: Vec<_> = routine
        .params
        .iter()
        .filter(|p| keys.contains(&p.name))
        .collect();
    let scalar = !matches!(routine.returns, Returns::Composite { .. });
    let call = |argument: String| {
        if scalar {
            format!("(SELECT {function}({argument}) pgrst_scalar) pgrst_call")
        } else {
            format!("{function}({argument}) pgrst_call")
        }
    };
    let variadic = |p: &routine::Param| if p.variadic { "VARIADIC " } else { "" };
    match args {
        Args::Json { body, .. } => {
            let single_unnamed = routine.params.len() == 1 && routine.params[0].name.is_empty();
            if single_unnamed {
                let p = sql.text(body.to_string());
                return call(format!("{p}::text::{}", routine.params[0].sql_type));
            }
            if specified.is_empty() {
                return call(String::new());
            }
            let p = sql.text(body.to_string());
            let to_record = if body.is_array() {
                "json_to_recordset"
            } else {
                "json_to_record"
            };
            let names = specified
                .iter()
                .map(|p| ident(&p.name))
                .collect::<Vec<_>>()
                .join(", ");
            let typed = specified
                .iter()
                .map(|p| format!("{} {}", ident(&p.name), p.sql_type))
                .collect::<Vec<_>>()
                .join(", ");
            let named = specified
                .iter()
                .map(|p| {
                    format!(
                        "{}{} := pgrst_body.{}",
                        variadic(p),
                        ident(&p.name),
                        ident(&p.name)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "(SELECT {p}::text::json AS json_data) pgrst_payload, \
                 LATERAL (SELECT {names} FROM {to_record}(pgrst_payload.json_data) AS _({typed})) pgrst_body, \
                 LATERAL {}",
                call(named)
            )
        }
        Args::Query(pairs) => {
            let named = specified
                .iter()
                .map(|p| {
                    let value = pairs
                        .iter()
                        .find(|(k, _)| *k == p.name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    format!(
                        "{}{} := {}::text::{}",
                        variadic(p),
                        ident(&p.name),
                        sql.text(value),
                        p.sql_type
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            call(named)
        }
    }
}
