//! One statement per request: the SQL for GET/HEAD (with an optional exact count),
//! PATCH/DELETE (filters required) and POST (objects or arrays, `columns=`), each a single
//! statement with a data-modifying CTE, run in a transaction and rendered by [`super::render`].

use serde_json::Value;

use super::super::schema::{ident, qualified, Table};
use super::super::Shared;
use super::auth::Role;
use super::query::Query;
use super::render::{invalid_json, prefer, rows_response, ApiError, Fail, Rows};
use super::sql::{order_clause, Ctx, Sql};
use crate::http::{Request, Response};

/// Serve `req` on the table `name`: build its statement, run it, render the rows.
pub(super) fn serve_table(
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
    // A write with nothing to write runs no statement on the table and reports no rows.
    let no_rows = || {
        (
            String::new(),
            format!(
                "SELECT {select_sql} FROM {} t0 WHERE false",
                qualified(name)
            ),
            None,
        )
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
                no_rows()
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
                no_rows()
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

    Ok(rows_response(
        req,
        &prefs,
        single,
        query.offset.unwrap_or(0),
        Rows {
            array,
            first,
            n,
            total,
        },
    ))
}

/// The request body as JSON (`PGRST102` when empty or invalid).
fn json_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid_json());
    }
    serde_json::from_slice(&req.body).map_err(|_| invalid_json())
}

/// A body key must name a column of the table (`PGRST204`).
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
