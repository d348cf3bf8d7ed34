//! The query grammar of a PostgREST request (§9.2): `select` (columns, aliases, casts,
//! embedded resources with hints), horizontal filters `col=[not.]op.value`, `order`, `limit`,
//! `offset` and `columns`. Parse errors are PGRST100 bodies with PostgREST's texts and columns.
//! Nothing here touches the database; column names are checked later, in [`super::sql`].

use super::render::ApiError;
use crate::http::Request;

/// The parsed query string.
pub(super) struct Query {
    pub(super) select: Vec<SelectItem>,
    pub(super) filters: Vec<Filter>,
    pub(super) order: Vec<OrderTerm>,
    pub(super) limit: Option<u64>,
    pub(super) offset: Option<u64>,
    pub(super) columns: Option<Vec<String>>,
}

impl Query {
    /// Parse the request's query string; any key not reserved is a filter.
    pub(super) fn parse(req: &Request) -> Result<Query, ApiError> {
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

impl Query {
    /// `GET /rpc/<fn>` (PostgREST's `QueryParams.parse` for RPC reads): a non-reserved parameter
    /// whose value parses as a filter is a filter on the result, any other one is an argument
    /// of the function. Returns the query and the arguments in request order.
    pub(super) fn parse_rpc_read(
        req: &Request,
    ) -> Result<(Query, Vec<(String, String)>), ApiError> {
        let mut q = Query {
            select: vec![SelectItem::Star],
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            columns: None,
        };
        let mut args = Vec::new();
        for (k, v) in req.query_pairs() {
            match k.as_str() {
                "select" => q.select = parse_select(&v)?,
                "order" => q.order = parse_order(&v)?,
                "limit" => q.limit = Some(parse_count("limit", &v)?),
                "offset" => q.offset = Some(parse_count("offset", &v)?),
                "columns" | "apikey" | "on_conflict" => {}
                _ => match parse_filter(&k, &v) {
                    Ok(f) => q.filters.push(f),
                    Err(_) => args.push((k, v)),
                },
            }
        }
        Ok((q, args))
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
pub(super) struct Filter {
    pub(super) column: String,
    pub(super) negate: bool,
    pub(super) op: FilterOp,
}

/// A filter's operator and value(s).
#[derive(Debug, Clone)]
pub(super) enum FilterOp {
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
pub(super) enum SelectItem {
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
pub(super) struct OrderTerm {
    pub(super) column: String,
    pub(super) desc: bool,
    pub(super) nulls: Option<&'static str>,
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
