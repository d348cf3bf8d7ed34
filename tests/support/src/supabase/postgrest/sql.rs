//! SQL fragments built from a parsed query: bind parameters (always text or text[], cast to
//! the column's type by PostgreSQL), `WHERE`, `ORDER BY`, and select lists with embedded
//! resources as correlated subqueries through the one foreign key linking two tables. Every
//! identifier is checked against the schema cache and quoted.

use postgres::types::ToSql;

use super::super::schema::{ident, qualified, ForeignKey, Table};
use super::super::Shared;
use super::query::{Filter, FilterOp, OrderTerm, SelectItem};
use super::render::{ApiError, Fail};

/// ` ORDER BY …` for the `order=` terms (empty when there are none), columns checked.
pub(super) fn order_clause(
    table: &Table,
    alias: &str,
    terms: &[OrderTerm],
) -> Result<String, ApiError> {
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

/// Bind parameters (all text or text[]) and alias numbering for one statement.
#[derive(Default)]
pub(super) struct Sql {
    params: Vec<Box<dyn ToSql + Sync>>,
    aliases: usize,
}

impl Sql {
    pub(super) fn text(&mut self, v: String) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn text_array(&mut self, v: Vec<String>) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    pub(super) fn alias(&mut self) -> usize {
        self.aliases += 1;
        self.aliases
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }

    /// The ANDed filters (`TRUE` when there are none), columns checked against `table`.
    pub(super) fn where_clause(
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
pub(super) struct Ctx<'a> {
    pub(super) sql: &'a mut Sql,
    pub(super) client: &'a mut postgres::Client,
    pub(super) shared: &'a Shared,
}

impl Ctx<'_> {
    /// `expr AS "name", …` for `items` over `table` aliased `alias`.
    pub(super) fn select_list(
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
        let fits = |fk: &ForeignKey| match hint {
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
