//! Functions callable over RPC, read from PostgreSQL's catalogs like PostgREST's schema cache
//! (`PostgREST.SchemaCache.Routine`), and the choice of the overload a request calls
//! (`findProc` in `PostgREST.Plan`): by name and by the set of argument keys.
//!
//! Invariant: only functions (`prokind = 'f'`) in `public` are callable; a parameter is
//! required unless it has a default; the argument keys must name every required parameter and
//! may name optional ones, nothing else. The errors are PostgREST's `PGRST202` (no match) and
//! `PGRST203` (several matches), with its texts.

use std::collections::BTreeSet;

use super::super::schema::Column;
use super::render::ApiError;

/// One input parameter of a function.
#[derive(Debug, Clone)]
pub(super) struct Param {
    pub(super) name: String,
    /// `format_type` of the parameter, usable in a column definition list (`integer[]`…).
    pub(super) sql_type: String,
    pub(super) required: bool,
    pub(super) variadic: bool,
}

/// What a function returns, as PostgREST classifies it.
#[derive(Debug, Clone)]
pub(super) enum Returns {
    /// `void`: the call answers 204 without a body.
    Void,
    /// A scalar (including `json`/`jsonb`): the value itself, or an array of values for `SETOF`.
    Scalar { set: bool },
    /// A row type or `TABLE(…)`/OUT columns: an object, or an array of objects for `SETOF`.
    Composite { set: bool, columns: Vec<Column> },
}

/// How PostgreSQL may run a function (`provolatile`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

/// A function in `public`.
#[derive(Debug, Clone)]
pub(super) struct Routine {
    pub(super) name: String,
    pub(super) params: Vec<Param>,
    pub(super) returns: Returns,
    pub(super) volatility: Volatility,
}

/// Every function called `name` in `public` (overloads included).
pub(super) fn load(
    client: &mut postgres::Client,
    name: &str,
) -> Result<Vec<Routine>, postgres::Error> {
    let rows = client.query(
        "SELECT p.oid, p.provolatile::text, p.proretset, p.prorettype = 'pg_catalog.void'::regtype, \
                t.typtype::text, t.typrelid, p.pronargdefaults::int, \
                coalesce(p.proargnames, '{}')::text[], \
                coalesce(p.proargmodes::text[], array_fill('i'::text, ARRAY[p.pronargs::int])), \
                coalesce(p.proallargtypes, p.proargtypes::oid[])::oid[] \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           JOIN pg_type t ON t.oid = p.prorettype \
          WHERE n.nspname = 'public' AND p.proname = $1 AND p.prokind = 'f' \
          ORDER BY p.oid",
        &[&name],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let volatility = match r.get::<_, String>(1).as_str() {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        };
        let set: bool = r.get(2);
        let void: bool = r.get(3);
        let typtype: String = r.get(4);
        let typrelid: u32 = r.get(5);
        let ndefaults: i32 = r.get(6);
        let names: Vec<String> = r.get(7);
        let modes: Vec<String> = r.get(8);
        let types: Vec<u32> = r.get(9);
        let mut params = Vec::new();
        let mut out_columns = Vec::new();
        for (i, (mode, oid)) in modes.iter().zip(&types).enumerate() {
            let pname = names.get(i).cloned().unwrap_or_default();
            let type_row = client.query_one(
                "SELECT CASE $1::oid::regtype WHEN 'character'::regtype THEN 'character varying' \
                        WHEN 'character[]'::regtype THEN 'character varying[]' \
                        ELSE $1::oid::regtype::text END, typname::text FROM pg_type WHERE oid = $1::oid",
                &[oid],
            )?;
            if matches!(mode.as_str(), "i" | "b" | "v") {
                params.push(Param {
                    name: pname.clone(),
                    sql_type: type_row.get(0),
                    required: true,
                    variadic: mode == "v",
                });
            }
            if matches!(mode.as_str(), "o" | "b" | "t") {
                out_columns.push(Column {
                    name: pname,
                    typname: type_row.get(1),
                    sql_type: type_row.get(0),
                });
            }
        }
        // The last `pronargdefaults` input parameters have defaults.
        let n = params.len();
        for p in params
            .iter_mut()
            .skip(n.saturating_sub(ndefaults.max(0) as usize))
        {
            p.required = false;
        }
        let returns = if void {
            Returns::Void
        } else if typtype == "c" {
            let columns = client
                .query(
                    "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, NULL) \
                       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                      ORDER BY a.attnum",
                    &[&typrelid],
                )?
                .iter()
                .map(|c| Column {
                    name: c.get(0),
                    typname: c.get(1),
                    sql_type: c.get(2),
                })
                .collect();
            Returns::Composite { set, columns }
        } else if !out_columns.is_empty() {
            // Any TABLE, INOUT or OUT parameter makes the result a composite (PostgREST's
            // `rettype_is_composite`), even a single one.
            Returns::Composite {
                set,
                columns: out_columns,
            }
        } else {
            Returns::Scalar { set }
        };
        out.push(Routine {
            name: name.to_string(),
            params,
            returns,
            volatility,
        });
    }
    Ok(out)
}

/// Whether the call's argument keys fit this function's parameters (`matchesParams`).
fn matches(routine: &Routine, keys: &BTreeSet<String>) -> bool {
    if routine.params.is_empty() {
        return keys.is_empty();
    }
    let required: BTreeSet<String> = routine
        .params
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name.clone())
        .collect();
    let optional: BTreeSet<String> = routine
        .params
        .iter()
        .filter(|p| !p.required)
        .map(|p| p.name.clone())
        .collect();
    keys.difference(&optional).cloned().collect::<BTreeSet<_>>() == required
}

/// A single unnamed `json`/`jsonb` parameter takes the whole body of a JSON POST.
fn single_unnamed_json(routine: &Routine, is_post: bool) -> bool {
    is_post
        && routine.params.len() == 1
        && routine.params[0].name.is_empty()
        && matches!(routine.params[0].sql_type.as_str(), "json" | "jsonb")
}

/// Which overload the request calls. `keys` are the body's keys (POST) or the non-filter query
/// parameters (GET); the error is PostgREST's answer.
pub(super) fn find<'a>(
    name: &str,
    candidates: &'a [Routine],
    keys: &BTreeSet<String>,
    is_post: bool,
) -> Result<&'a Routine, ApiError> {
    let named: Vec<&Routine> = candidates.iter().filter(|r| matches(r, keys)).collect();
    let fallback: Vec<&Routine> = candidates
        .iter()
        .filter(|r| !matches(r, keys) && single_unnamed_json(r, is_post))
        .collect();
    match (named.as_slice(), fallback.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one),
        ([], []) => Err(no_function(name, candidates, keys, is_post)),
        ([], many) | (many, _) => Err(ApiError::new(
            300,
            "PGRST203",
            format!(
                "Could not choose the best candidate function between: {}",
                many.iter()
                    .map(|r| format!(
                        "public.{}({})",
                        r.name,
                        r.params
                            .iter()
                            .map(|p| format!("{} => {}", p.name, p.sql_type))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .hint(
            "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
        )),
    }
}

/// 404 `PGRST202` with PostgREST's message and details (`NoRpc` in `PostgREST.Error`). The
/// hint names an overload's parameters when the name exists; PostgREST's fuzzy search over
/// other function names is not reproduced (the hint is null then).
fn no_function(
    name: &str,
    candidates: &[Routine],
    keys: &BTreeSet<String>,
    is_post: bool,
) -> ApiError {
    let func = format!("public.{name}");
    let listed = keys.iter().cloned().collect::<Vec<_>>().join(", ");
    let message = if keys.is_empty() {
        format!("Could not find the function {func} without parameters in the schema cache")
    } else {
        format!("Could not find the function {func}({listed}) in the schema cache")
    };
    let with = if keys.is_empty() {
        " without parameters".to_string()
    } else {
        format!(
            " with parameter{} {listed}",
            if keys.len() > 1 { "s" } else { "" }
        )
    };
    let details = format!(
        "Searched for the function {func}{with}{}, but no matches were found in the schema cache.",
        if is_post {
            " or with a single unnamed json/jsonb parameter"
        } else {
            ""
        }
    );
    let mut err = ApiError::new(404, "PGRST202", message).details(details);
    if let Some(r) = candidates.first() {
        let mut names: Vec<&str> = r.params.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        err = err.hint(format!(
            "Perhaps you meant to call the function {func}({})",
            names.join(", ")
        ));
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routine(params: &[(&str, bool)]) -> Routine {
        Routine {
            name: "f".into(),
            params: params
                .iter()
                .map(|(n, required)| Param {
                    name: n.to_string(),
                    sql_type: "integer".into(),
                    required: *required,
                    variadic: false,
                })
                .collect(),
            returns: Returns::Scalar { set: false },
            volatility: Volatility::Volatile,
        }
    }

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn required_and_optional_parameters() {
        let r = routine(&[("a", true), ("b", false)]);
        assert!(matches(&r, &keys(&["a"])));
        assert!(matches(&r, &keys(&["a", "b"])));
        assert!(!matches(&r, &keys(&["b"])));
        assert!(!matches(&r, &keys(&["a", "c"])));
        assert!(matches(&routine(&[]), &keys(&[])));
        assert!(!matches(&routine(&[]), &keys(&["a"])));
    }

    #[test]
    fn unknown_function_texts() {
        let e = find("nope", &[], &keys(&["b", "a"]), true).unwrap_err();
        let r = e.into_response();
        assert_eq!(r.status, 404);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["code"], "PGRST202");
        assert_eq!(
            body["message"],
            "Could not find the function public.nope(a, b) in the schema cache"
        );
        assert_eq!(
            body["details"],
            "Searched for the function public.nope with parameters a, b or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
        );
        assert_eq!(body["hint"], serde_json::Value::Null);
        let e = find("nope", &[], &keys(&[]), true).unwrap_err();
        let body: serde_json::Value = serde_json::from_slice(&e.into_response().body).unwrap();
        assert_eq!(
            body["message"],
            "Could not find the function public.nope without parameters in the schema cache"
        );
    }
}
