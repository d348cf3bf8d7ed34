//! The double's schema cache: columns, primary keys and foreign keys of tables in `public`, read
//! from PostgreSQL's catalogs (like PostgREST's schema cache).
//!
//! Invariant: only tables that exist are cached (a missing table is looked up again next time, so
//! a table created after start is found); [`SchemaCache::clear`] forgets everything, e.g. after a
//! migration. Names here are the catalogs' own, so they are safe to quote into SQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One column.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    /// `pg_type.typname` (`uuid`, `varchar`, `timestamptz`, `_text`…), as Realtime reports it.
    pub typname: String,
    /// `format_type(atttypid, NULL)`, usable in a cast (`character varying`, `uuid`…).
    pub sql_type: String,
}

/// A foreign key `table(cols) -> ftable(fcols)`.
#[derive(Debug, Clone)]
pub(crate) struct ForeignKey {
    pub name: String,
    pub table: String,
    pub cols: Vec<String>,
    pub ftable: String,
    pub fcols: Vec<String>,
}

/// A table (or view) in `public`.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub pk: Vec<String>,
    /// Keys from this table to others (many-to-one embeds).
    pub fks_out: Vec<ForeignKey>,
    /// Keys from other tables to this one (one-to-many embeds).
    pub fks_in: Vec<ForeignKey>,
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Cached table definitions by name.
#[derive(Default)]
pub(crate) struct SchemaCache {
    tables: Mutex<HashMap<String, Arc<Table>>>,
}

impl SchemaCache {
    /// The table `public.<name>`, or None if there is none.
    pub(crate) fn get(
        &self,
        client: &mut postgres::Client,
        name: &str,
    ) -> Result<Option<Arc<Table>>, postgres::Error> {
        if let Some(t) = self.tables.lock().unwrap().get(name) {
            return Ok(Some(t.clone()));
        }
        let Some(table) = load(client, name)? else {
            return Ok(None);
        };
        let table = Arc::new(table);
        self.tables
            .lock()
            .unwrap()
            .insert(name.to_string(), table.clone());
        Ok(Some(table))
    }

    pub(crate) fn clear(&self) {
        self.tables.lock().unwrap().clear();
    }
}

fn load(client: &mut postgres::Client, name: &str) -> Result<Option<Table>, postgres::Error> {
    let Some(row) = client.query_opt(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r','p','v','m','f')",
        &[&name],
    )?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let columns = client
        .query(
            "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, NULL) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            typname: r.get(1),
            sql_type: r.get(2),
        })
        .collect();
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut fks_out = Vec::new();
    let mut fks_in = Vec::new();
    for r in client.query(
        "SELECT con.conname::text, src.relname::text, dst.relname::text, \
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), \
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o), \
           con.conrelid = $1, con.confrelid = $1 \
         FROM pg_constraint con \
         JOIN pg_class src ON src.oid = con.conrelid \
         JOIN pg_namespace sn ON sn.oid = src.relnamespace \
         JOIN pg_class dst ON dst.oid = con.confrelid \
         JOIN pg_namespace dn ON dn.oid = dst.relnamespace \
         WHERE con.contype = 'f' AND sn.nspname = 'public' AND dn.nspname = 'public' \
           AND (con.conrelid = $1 OR con.confrelid = $1) \
         ORDER BY con.conname",
        &[&oid],
    )? {
        let fk = ForeignKey {
            name: r.get(0),
            table: r.get(1),
            ftable: r.get(2),
            cols: r.get(3),
            fcols: r.get(4),
        };
        let (outgoing, incoming): (bool, bool) = (r.get(5), r.get(6));
        if outgoing {
            fks_out.push(fk.clone());
        }
        if incoming {
            fks_in.push(fk);
        }
    }
    Ok(Some(Table {
        name: name.to_string(),
        columns,
        pk,
        fks_out,
        fks_in,
    }))
}

/// Quote an identifier for SQL (`"a""b"`).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"public"."<table>"`.
pub(crate) fn qualified(table: &str) -> String {
    format!("\"public\".{}", ident(table))
}
