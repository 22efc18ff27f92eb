//! What is in a Truxe database at a schema version: its tables (in foreign-key order), their
//! columns and primary keys, read from the database itself, and the SQL that dumps and loads
//! them on each backend.
//!
//! The set of tables is not a list kept by hand: it is whatever this build's migrations create
//! up to the version, found by applying them to an in-memory SQLite database. A migration that
//! adds a table or a column is backed up without a change here, and a table that is not
//! Truxe's (in a shared PostgreSQL schema) is never dumped or emptied.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use truxe_server::store::{AnyConnection, Backend, migrations};

use super::format::{Column, Kind};

/// diesel's bookkeeping table: the schema version travels in the header instead.
pub const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// diesel writes versions with or without dashes depending on where they come from; compare
/// them as digits.
pub fn normalize(version: &str) -> String {
    version.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// One table as a database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: Vec<ColumnShape>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnShape {
    pub name: String,
    pub kind: Kind,
    /// Position in the primary key (1-based); 0 when not part of it.
    pub pk: i64,
}

impl TableShape {
    pub fn column_names(&self) -> BTreeSet<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn portable_columns(&self) -> Vec<Column> {
        self.columns.iter().map(|c| Column { name: c.name.clone(), kind: c.kind }).collect()
    }
}

/// Every migration this build knows (normalized versions, oldest first).
pub fn known_versions() -> anyhow::Result<Vec<String>> {
    let mut conn = in_memory()?;
    Ok(migrations::status(&mut conn)?.into_iter().map(|m| normalize(&m.version)).collect())
}

fn in_memory() -> anyhow::Result<AnyConnection> {
    let mut conn = diesel::SqliteConnection::establish(":memory:").context("in-memory SQLite")?;
    conn.batch_execute("PRAGMA foreign_keys = ON")?;
    Ok(AnyConnection::Sqlite(conn))
}

/// Applies pending migrations while the next one is not newer than `version`.
pub fn migrate_up_to(conn: &mut AnyConnection, version: &str) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    loop {
        let Some(next) = migrations::pending(conn)?.into_iter().next() else { break };
        if normalize(&next.version).as_str() > version {
            break;
        }
        match migrations::apply_next(conn)? {
            Some(name) => applied.push(name),
            None => break,
        }
    }
    Ok(applied)
}

/// Reverts applied migrations while the latest one is newer than `version`.
pub fn migrate_down_to(conn: &mut AnyConnection, version: &str) -> anyhow::Result<Vec<String>> {
    let mut reverted = Vec::new();
    while let Some(latest) = applied(conn)?.last() {
        if latest.as_str() <= version {
            break;
        }
        match migrations::revert_last(conn)? {
            Some(name) => reverted.push(name),
            None => break,
        }
    }
    Ok(reverted)
}

/// The tables Truxe's migrations create up to `version`, parents before children (a table
/// comes after every table its foreign keys reference), else in creation order.
pub fn tables_at(version: &str) -> anyhow::Result<Vec<TableShape>> {
    let mut conn = in_memory()?;
    migrate_up_to(&mut conn, version)?;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let names: Vec<String> = diesel::sql_query(format!(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '{MIGRATIONS_TABLE}' ORDER BY rowid"
    ))
    .load::<Name>(&mut conn)?
    .into_iter()
    .map(|n| n.name)
    .collect();
    #[derive(QueryableByName)]
    struct Parent {
        #[diesel(sql_type = Text)]
        parent: String,
    }
    let mut parents = Vec::new();
    for name in &names {
        let of: BTreeSet<String> = diesel::sql_query("SELECT \"table\" AS parent FROM pragma_foreign_key_list(?)")
            .bind::<Text, _>(name)
            .load::<Parent>(&mut conn)?
            .into_iter()
            .map(|p| p.parent)
            .filter(|p| p != name)
            .collect();
        parents.push(of);
    }
    // Kahn's algorithm, always taking the earliest-created table that is ready.
    let mut ordered: Vec<String> = Vec::with_capacity(names.len());
    let mut left: Vec<usize> = (0..names.len()).collect();
    while !left.is_empty() {
        let Some(pos) = left.iter().position(|&i| parents[i].iter().all(|p| ordered.contains(p) || !names.contains(p)))
        else {
            bail!(
                "the foreign keys among {:?} form a cycle; backups cannot order them",
                left.iter().map(|&i| &names[i]).collect::<Vec<_>>()
            );
        };
        ordered.push(names[left.remove(pos)].clone());
    }
    let mut shapes = Vec::with_capacity(ordered.len());
    for name in ordered {
        let columns = columns(&mut conn, &name)?;
        shapes.push(TableShape { name, columns });
    }
    Ok(shapes)
}

/// The migrations applied to `conn` (normalized, oldest first); empty for a database that has
/// never been migrated. Reads the table directly, so it works in a read-only transaction.
pub fn applied(conn: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    if !table_exists(conn, MIGRATIONS_TABLE)? {
        return Ok(Vec::new());
    }
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let mut versions: Vec<String> = diesel::sql_query(format!("SELECT version FROM {MIGRATIONS_TABLE}"))
        .load::<Version>(conn)?
        .into_iter()
        .map(|v| normalize(&v.version))
        .collect();
    versions.sort();
    Ok(versions)
}

pub fn table_exists(conn: &mut AnyConnection, table: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let query = match conn.backend() {
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
        Backend::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
    };
    let counts: Vec<Count> = diesel::sql_query(query).bind::<Text, _>(table).load(conn)?;
    Ok(counts.first().is_some_and(|c| c.n > 0))
}

/// The columns of `table` in `conn` (in their order), empty when the table does not exist.
pub fn columns(conn: &mut AnyConnection, table: &str) -> anyhow::Result<Vec<ColumnShape>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        data_type: String,
        #[diesel(sql_type = BigInt)]
        pk: i64,
    }
    let query = match conn.backend() {
        Backend::Postgres => {
            "SELECT c.column_name::text AS name, c.data_type::text AS data_type, \
             COALESCE((SELECT k.ordinal_position::bigint FROM information_schema.table_constraints t \
                JOIN information_schema.key_column_usage k ON k.constraint_schema = t.constraint_schema \
                 AND k.constraint_name = t.constraint_name AND k.table_name = t.table_name \
                WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = c.table_schema \
                 AND t.table_name = c.table_name AND k.column_name = c.column_name), 0) AS pk \
             FROM information_schema.columns c \
             WHERE c.table_schema = current_schema() AND c.table_name = $1 ORDER BY c.ordinal_position"
        }
        Backend::Sqlite => "SELECT name, type AS data_type, pk FROM pragma_table_info(?) ORDER BY cid",
    };
    let rows: Vec<Row> = diesel::sql_query(query).bind::<Text, _>(table).load(conn)?;
    rows.into_iter()
        .map(|r| {
            let kind = kind_of(&r.data_type).with_context(|| {
                format!("column {table}.{} has type {}, which backups cannot carry", r.name, r.data_type)
            })?;
            Ok(ColumnShape { name: r.name, kind, pk: r.pk })
        })
        .collect()
}

/// PostgreSQL's `information_schema` type names and SQLite's declared types (by SQLite's own
/// affinity rules), as the portable kinds.
fn kind_of(declared: &str) -> Option<Kind> {
    let t = declared.to_ascii_uppercase();
    if t.contains("BOOL") {
        Some(Kind::Boolean)
    } else if t.contains("INT") {
        Some(Kind::Integer)
    } else if t.contains("CHAR") || t.contains("TEXT") || t.contains("CLOB") {
        Some(Kind::Text)
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Some(Kind::Real)
    } else {
        None
    }
}

/// A double-quoted SQL identifier (both backends).
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// One JSON array text per row, in `columns`' order, sorted by the primary key in byte order
/// (PostgreSQL's `COLLATE "C"` is SQLite's default), so that the same data gives the same file
/// on either backend.
pub fn select_rows_sql(backend: Backend, table: &str, columns: &[ColumnShape]) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|c| match (backend, c.kind) {
            (Backend::Sqlite, Kind::Boolean) => {
                let q = quote(&c.name);
                format!("CASE WHEN {q} IS NULL THEN NULL WHEN {q} THEN json('true') ELSE json('false') END")
            }
            _ => quote(&c.name),
        })
        .collect();
    let mut key: Vec<&ColumnShape> = columns.iter().filter(|c| c.pk > 0).collect();
    key.sort_by_key(|c| c.pk);
    if key.is_empty() {
        key = columns.iter().collect();
    }
    let order: Vec<String> = key
        .iter()
        .map(|c| match (backend, c.kind) {
            (Backend::Postgres, Kind::Text) => format!("{} COLLATE \"C\"", quote(&c.name)),
            _ => quote(&c.name),
        })
        .collect();
    let row = match backend {
        Backend::Postgres => format!("json_build_array({})::text", values.join(", ")),
        Backend::Sqlite => format!("json_array({})", values.join(", ")),
    };
    format!("SELECT {row} AS row FROM {} ORDER BY {}", quote(table), order.join(", "))
}

/// Inserts a batch (one bound JSON array of row arrays, see `format::Batch`), casting each
/// value to its column's kind.
pub fn insert_rows_sql(backend: Backend, table: &str, columns: &[Column]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| match backend {
            Backend::Postgres => {
                let cast = match c.kind {
                    Kind::Text => "",
                    Kind::Integer => "::bigint",
                    Kind::Boolean => "::boolean",
                    Kind::Real => "::double precision",
                };
                format!("(r->>{i}){cast}")
            }
            // json_extract gives SQLite's own values: text, integer, real, 1/0 for booleans.
            Backend::Sqlite => format!("json_extract(value, '$[{i}]')"),
        })
        .collect();
    match backend {
        Backend::Postgres => format!(
            "INSERT INTO {} ({}) SELECT {} FROM jsonb_array_elements($1::jsonb) AS rows(r)",
            quote(table),
            names.join(", "),
            values.join(", ")
        ),
        Backend::Sqlite => format!(
            "INSERT INTO {} ({}) SELECT {} FROM json_each(?) ORDER BY key",
            quote(table),
            names.join(", "),
            values.join(", ")
        ),
    }
}

pub fn count_rows(conn: &mut AnyConnection, table: &str) -> anyhow::Result<u64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let counts: Vec<Count> = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {}", quote(table))).load(conn)?;
    Ok(counts.first().map_or(0, |c| c.n.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_at_the_latest_version_has_every_table_parents_first() {
        let known = known_versions().expect("versions");
        let latest = known.last().expect("at least one migration");
        let tables = tables_at(latest).expect("tables");
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        for expected in ["oauth_clients", "users", "oauth_tokens", "audit_events", "server_secrets"] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        assert!(!names.contains(&MIGRATIONS_TABLE));
        let before = |a: &str, b: &str| {
            names.iter().position(|n| *n == a).expect("a") < names.iter().position(|n| *n == b).expect("b")
        };
        assert!(before("oauth_clients", "oauth_client_redirect_uris"));
        assert!(before("users", "sessions"));
        assert!(before("oauth_grants", "oauth_tokens"));
        assert!(before("oauth_grants", "oauth_authorization_codes"));
        let tokens = tables.iter().find(|t| t.name == "oauth_tokens").expect("tokens");
        assert!(tokens.columns.iter().any(|c| c.name == "jti" && c.pk == 1 && c.kind == Kind::Text));
        let clients = tables.iter().find(|t| t.name == "oauth_clients").expect("clients");
        assert!(clients.columns.iter().any(|c| c.name == "require_pkce" && c.kind == Kind::Boolean));
        assert!(clients.columns.iter().any(|c| c.name == "created_at" && c.kind == Kind::Integer));
    }

    #[test]
    fn an_older_version_has_fewer_columns() {
        let known = known_versions().expect("versions");
        let first = tables_at(&known[0]).expect("first");
        assert!(!first.iter().any(|t| t.name == "server_secrets"), "created by the second migration");
        let users = first.iter().find(|t| t.name == "users").expect("users");
        assert!(!users.columns.iter().any(|c| c.name == "mfa_secret"));
    }

    #[test]
    fn versions_are_compared_as_digits() {
        assert_eq!(normalize("2026-12-03-000002"), "20261203000002");
        assert_eq!(normalize("20261203000002"), "20261203000002");
        let known = known_versions().expect("versions");
        assert!(known.windows(2).all(|w| w[0] < w[1]), "{known:?}");
        assert!(known.iter().all(|v| v.len() == 14), "{known:?}");
    }

    #[test]
    fn declared_types_map_to_portable_kinds() {
        assert_eq!(kind_of("BIGINT"), Some(Kind::Integer));
        assert_eq!(kind_of("integer"), Some(Kind::Integer));
        assert_eq!(kind_of("BOOLEAN"), Some(Kind::Boolean));
        assert_eq!(kind_of("character varying"), Some(Kind::Text));
        assert_eq!(kind_of("double precision"), Some(Kind::Real));
        assert_eq!(kind_of("bytea"), None);
        assert_eq!(kind_of("BLOB"), None);
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
