//! The `postgres_changes` items of a join (§3.3, §5): parsing an item and its filter
//! (`col=[not.]op.value`, ANDed by commas), its id, the subscription check against the database
//! (§3.4), and whether a changed row matches a filter.

use serde_json::{Map, Value};

use super::super::schema::Table;
use super::super::Shared;
use super::changes::install_change_triggers;

/// One `postgres_changes` item of a join.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub(super) id: u64,
    /// `INSERT`, `UPDATE`, `DELETE` or `*`.
    pub(super) event: String,
    pub(super) schema: String,
    pub(super) table: String,
    pub(super) conds: Vec<Cond>,
    /// The item's text for error messages.
    pub(super) desc: String,
}

/// One filter condition `column=[not.]op.value`.
#[derive(Debug, Clone)]
pub(super) struct Cond {
    column: String,
    negate: bool,
    op: CondOp,
}

#[derive(Debug, Clone)]
enum CondOp {
    Cmp(&'static str, String),
    In(Vec<String>),
    Is(String),
}

/// A stable id for a `postgres_changes` item in 0..2^27 (the real server uses `phash2`, §3.3):
/// FNV-1a over the item's canonical JSON (serde_json sorts object keys).
pub(super) fn binding_id(item: &Value) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in item.to_string().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h % 134_217_728
}

/// Parse one `postgres_changes` item of a join (`event`, `schema`, `table`, `filter`); the error
/// is the system message text the real server sends.
pub(super) fn parse_binding(item: &Value, id: u64) -> Result<Binding, String> {
    let no_params = || {
        format!(
            "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {item}"
        )
    };
    let o = item.as_object().ok_or_else(no_params)?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let event = match s("event").map(|e| e.to_ascii_uppercase()).as_deref() {
        Some(e @ ("INSERT" | "UPDATE" | "DELETE")) => e.to_string(),
        _ => "*".to_string(),
    };
    let (schema, table) = match (s("schema"), s("table")) {
        (None, None) => return Err(no_params()),
        (schema, table) => (
            schema.unwrap_or_else(|| "public".into()),
            table.unwrap_or_else(|| "*".into()),
        ),
    };
    let filter = s("filter").unwrap_or_default();
    let conds = parse_rt_filter(&filter)?;
    let filters = conds
        .iter()
        .map(|c| {
            let (op, value) = match &c.op {
                CondOp::Cmp(op, v) => (rt_op_name(op), v.clone()),
                CondOp::In(vs) => ("in", format!("({})", vs.join(","))),
                CondOp::Is(v) => ("is", v.clone()),
            };
            format!("{{\"{}\", \"{op}\", \"{value}\", {}}}", c.column, c.negate)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let desc = format!(
        "event: {}, schema: {schema}, table: {table}, filters: [{filters}]",
        s("event").unwrap_or_else(|| "*".into())
    );
    Ok(Binding {
        id,
        event,
        schema,
        table,
        conds,
        desc,
    })
}

fn rt_op_name(op: &str) -> &'static str {
    match op {
        "=" => "eq",
        "<>" => "neq",
        "<" => "lt",
        "<=" => "lte",
        ">" => "gt",
        _ => "gte",
    }
}

/// Split on commas that are outside parentheses and double quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quoted) = (0i32, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Parse a Realtime filter (§5.4): `col=[not.]op.value`, several joined by commas (AND).
fn parse_rt_filter(filter: &str) -> Result<Vec<Cond>, String> {
    if filter.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |parts: Vec<&str>| format!("Error parsing `filter` params: {parts:?}");
    let mut conds = Vec::new();
    for part in split_top_level(filter) {
        let Some((column, rest)) = part.split_once('=') else {
            return Err(bad(vec![part.as_str()]));
        };
        let (negate, rest) = match rest.strip_prefix("not.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let Some((op, value)) = rest.split_once('.') else {
            return Err(bad(vec![rest]));
        };
        let op = match op {
            "eq" => CondOp::Cmp("=", value.to_string()),
            "neq" => CondOp::Cmp("<>", value.to_string()),
            "lt" => CondOp::Cmp("<", value.to_string()),
            "lte" => CondOp::Cmp("<=", value.to_string()),
            "gt" => CondOp::Cmp(">", value.to_string()),
            "gte" => CondOp::Cmp(">=", value.to_string()),
            "in" => {
                let inner = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| bad(vec![op, value]))?;
                let list: Vec<String> = split_top_level(inner)
                    .into_iter()
                    .map(|v| v.trim().trim_matches('"').to_string())
                    .collect();
                if list.len() > 100 {
                    return Err(bad(vec![op, value]));
                }
                CondOp::In(list)
            }
            "is" if matches!(value, "null" | "true" | "false" | "unknown") => {
                CondOp::Is(value.to_string())
            }
            _ => return Err(bad(vec![op, value])),
        };
        conds.push(Cond {
            column: column.trim().to_string(),
            negate,
            op,
        });
    }
    Ok(conds)
}

/// Check a binding against the database like the server's subscription check (§3.4): the table
/// must exist, filter columns must exist and values must cast to the column type. Installs the
/// change trigger on a table created after the double started. Returns the system error text.
pub(super) fn check_binding(shared: &Shared, b: &Binding) -> Option<String> {
    let unable = || {
        format!(
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled \
             for the given connect parameters: [{}, select: nil]",
            b.desc
        )
    };
    let exception = |e: String| {
        format!(
            "Unable to subscribe to changes with given parameters. An exception happened so please \
             check your connect parameters: [{}]. Exception: {e}",
            b.desc
        )
    };
    if b.schema != "public" && b.schema != "*" {
        return Some(unable());
    }
    if b.table == "*" {
        return None;
    }
    let mut client = match shared.pool.get() {
        Ok(c) => c,
        Err(e) => return Some(format!("{{:error, \"{e}\"}}")),
    };
    let table = match shared.schema.get(&mut client, &b.table) {
        Ok(Some(t)) => t,
        Ok(None) => return Some(unable()),
        Err(e) => return Some(format!("{{:error, \"{e}\"}}")),
    };
    for c in &b.conds {
        let Some(col) = table.column(&c.column) else {
            return Some(exception(format!(
                "ERROR P0001 (raise_exception) invalid column for filter {}",
                c.column
            )));
        };
        let values: Vec<&String> = match &c.op {
            CondOp::Cmp(_, v) => vec![v],
            CondOp::In(vs) => vs.iter().collect(),
            CondOp::Is(_) => vec![],
        };
        for v in values {
            let sql = format!("SELECT $1::text::{}", col.sql_type);
            if let Err(e) = client.execute(sql.as_str(), &[v]) {
                if let Some(db) = e.as_db_error() {
                    return Some(exception(format!(
                        "ERROR {} ({}) {}",
                        db.code().code(),
                        condition_name(db.code().code()),
                        db.message()
                    )));
                }
            }
        }
    }
    if !shared.rt.triggered.lock().unwrap().contains(&b.table) {
        let _ = install_change_triggers(&mut client, shared);
    }
    None
}

fn condition_name(code: &str) -> &'static str {
    match code {
        "22P02" => "invalid_text_representation",
        "22007" => "invalid_datetime_format",
        "22003" => "numeric_value_out_of_range",
        _ => "error",
    }
}

/// The text form a filter compares against (`"x"` → `x`, numbers and booleans as written).
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn values_equal(a: &str, b: &str, typname: &str) -> bool {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if !matches!(typname, "text" | "varchar" | "bpchar") {
            return x == y;
        }
    }
    match typname {
        "uuid" => a.eq_ignore_ascii_case(b),
        "bool" => {
            let norm = |s: &str| {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "t" | "yes" | "on" | "1"
                )
            };
            norm(a) == norm(b)
        }
        _ => a == b,
    }
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// Evaluate one condition against a row (a missing or NULL value never matches a comparison).
pub(super) fn cond_matches(c: &Cond, row: &Map<String, Value>, table: &Table) -> bool {
    let Some(v) = row.get(&c.column) else {
        return false;
    };
    let typname = table
        .column(&c.column)
        .map(|col| col.typname.as_str())
        .unwrap_or("text");
    let result = match &c.op {
        CondOp::Is(what) => match what.as_str() {
            "null" => v.is_null(),
            "true" => v == &Value::Bool(true),
            "false" => v == &Value::Bool(false),
            _ => v.is_null(),
        },
        _ if v.is_null() => return false,
        CondOp::Cmp(op, want) => {
            let have = value_text(v);
            match *op {
                "=" => values_equal(&have, want, typname),
                "<>" => !values_equal(&have, want, typname),
                "<" => compare(&have, want).is_lt(),
                "<=" => compare(&have, want).is_le(),
                ">" => compare(&have, want).is_gt(),
                _ => compare(&have, want).is_ge(),
            }
        }
        CondOp::In(list) => {
            let have = value_text(v);
            list.iter().any(|w| values_equal(&have, w, typname))
        }
    };
    result != c.negate
}
