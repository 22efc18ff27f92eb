//! `truxectl migrate --dry-run`: what `truxectl migrate` would do, read from the pending
//! migrations' `up.sql` (as this build embeds them), with the current row count of every table
//! they touch. Nothing is written, no lock is taken.
//!
//! Which tables a migration touches is a heuristic over its SQL, not a parser: comments and
//! string literals are skipped, the text is cut into statements at `;`, and each statement
//! that starts with one of these names its table:
//! `CREATE TABLE [IF NOT EXISTS] t`, `CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] t`,
//! `CREATE TRIGGER … ON t`, `ALTER TABLE [IF EXISTS] [ONLY] t`, `DROP TABLE [IF EXISTS] t[, t2]`,
//! `INSERT [OR …] INTO t`, `UPDATE [OR …] [ONLY] t`, `DELETE FROM [ONLY] t`. A schema prefix
//! (`public.t`) is dropped; quoted names keep their case. Anything else (`DROP INDEX`, functions,
//! `DO` blocks) is listed as a statement that touches no table it can name.

use diesel::RunQueryDsl as _;
use serde::Serialize;
use truxe_server::store::{AnyConnection, migrations};

use crate::Global;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Touched {
    pub table: String,
    /// `create`, `alter`, `index`, `trigger`, `drop`, `insert`, `update`, `delete`, in the order
    /// the migration does them.
    pub operations: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct TableNow {
    table: String,
    operations: Vec<&'static str>,
    /// Rows in the table now; `null` when it does not exist (yet).
    rows: Option<i64>,
    /// A table that does not exist now but that an earlier migration of this plan creates.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    created_earlier_in_plan: bool,
}

#[derive(Debug, Serialize)]
struct Pending {
    version: String,
    name: String,
    tables: Vec<TableNow>,
    /// Statements that name no table the heuristic knows (e.g. `DROP INDEX`).
    other_statements: usize,
}

pub fn print(conn: &mut AnyConnection, target: &str, global: &Global) -> anyhow::Result<()> {
    let mut plan = Vec::new();
    let mut created = std::collections::HashSet::new();
    for migration in migrations::pending(conn)? {
        let sql = migrations::up_sql(conn, &migration.version).unwrap_or_default();
        let (touched, other_statements) = touched_tables(sql);
        let mut tables = Vec::new();
        for Touched { table, operations } in touched {
            let rows = row_count(conn, &table)?;
            let created_earlier_in_plan = rows.is_none() && created.contains(&table);
            if operations.contains(&"create") {
                created.insert(table.clone());
            }
            tables.push(TableNow { table, operations, rows, created_earlier_in_plan });
        }
        plan.push(Pending { version: migration.version, name: migration.name, tables, other_statements });
    }
    if global.json {
        let value = serde_json::json!({ "database": target, "dry_run": true, "pending": plan });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if plan.is_empty() {
        println!("{target}: up to date, nothing to apply (dry run: nothing changed)");
        return Ok(());
    }
    println!("{target}: {} pending migration(s) (dry run: nothing applied)", plan.len());
    for migration in &plan {
        println!();
        println!("{}", migration.name);
        for table in &migration.tables {
            let rows = match table.rows {
                Some(n) => format!("{n} rows"),
                None if table.created_earlier_in_plan => "created by an earlier migration above".to_string(),
                None => "does not exist yet".to_string(),
            };
            println!("  {:<32} {:<24} {rows}", table.table, table.operations.join(","));
        }
        if migration.other_statements > 0 {
            println!("  and {} statement(s) that name no table (see its up.sql)", migration.other_statements);
        }
    }
    println!();
    println!("apply with: truxectl migrate");
    Ok(())
}

// ---- the SQL heuristic ---------------------------------------------------------------------

/// A word of SQL: a keyword or bare name (`Word`, compared case-insensitively), a quoted name
/// (`"Name"`), or one punctuation character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Punct(char),
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Statements of tokens; comments, string literals and dollar-quoted bodies are dropped.
fn statements(sql: &str) -> Vec<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    i += 2;
                } else if chars[i] == '\'' {
                    i += 1;
                    break;
                } else {
                    i += 1;
                }
            }
            current.push(Token::Punct('\''));
        } else if c == '$' && next.is_some_and(|n| n == '$' || n.is_alphabetic()) {
            // A dollar-quoted body ($$ … $$ or $tag$ … $tag$): skipped whole.
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '$' {
                i += 1;
            }
            let tag: String = chars[start..(i + 1).min(chars.len())].iter().collect();
            i += 1;
            let rest: String = chars[i.min(chars.len())..].iter().collect();
            i += rest.find(&tag).map_or(rest.chars().count(), |at| rest[..at].chars().count() + tag.chars().count());
            current.push(Token::Punct('$'));
        } else if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                name.push(chars[i]);
                i += 1;
            }
            i += 1;
            current.push(Token::Quoted(name));
        } else if c == ';' {
            if !current.is_empty() {
                statements.push(std::mem::take(&mut current));
            }
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                i += 1;
            }
            current.push(Token::Word(word));
        } else {
            if !c.is_whitespace() {
                current.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    if !current.is_empty() {
        statements.push(current);
    }
    statements
}

/// The table name starting at `tokens[at]` (`t`, `"T"`, `schema.t`), and where it ends.
fn name_at(tokens: &[Token], at: usize) -> Option<(String, usize)> {
    let part = |token: Option<&Token>| match token {
        Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
        Some(Token::Quoted(q)) => Some(q.clone()),
        _ => None,
    };
    let first = part(tokens.get(at))?;
    if tokens.get(at + 1) == Some(&Token::Punct('.'))
        && let Some(second) = part(tokens.get(at + 2))
    {
        return Some((second, at + 3));
    }
    Some((first, at + 1))
}

/// Skips the optional keywords `words` (each at most once, in order) from `at`.
fn skip(tokens: &[Token], mut at: usize, words: &[&str]) -> usize {
    for word in words {
        if tokens.get(at).is_some_and(|t| t.is(word)) {
            at += 1;
        }
    }
    at
}

/// The tables one statement touches, with what it does to them.
fn statement_targets(tokens: &[Token]) -> Vec<(String, &'static str)> {
    let word = |at: usize, keyword: &str| tokens.get(at).is_some_and(|t| t.is(keyword));
    let one = |at: usize, operation: &'static str| name_at(tokens, at).map(|(name, _)| vec![(name, operation)]);
    let found = if word(0, "CREATE") {
        let at = skip(tokens, 1, &["OR", "REPLACE", "TEMPORARY", "TEMP", "UNLOGGED"]);
        if word(at, "TABLE") {
            one(skip(tokens, at + 1, &["IF", "NOT", "EXISTS"]), "create")
        } else if word(at, "UNIQUE") || word(at, "INDEX") || word(at, "TRIGGER") {
            let operation = if word(at, "TRIGGER") { "trigger" } else { "index" };
            tokens.iter().position(|t| t.is("ON")).and_then(|on| one(skip(tokens, on + 1, &["ONLY"]), operation))
        } else {
            None
        }
    } else if word(0, "ALTER") && word(1, "TABLE") {
        one(skip(tokens, 2, &["IF", "EXISTS", "ONLY"]), "alter")
    } else if word(0, "DROP") && word(1, "TABLE") {
        let mut at = skip(tokens, 2, &["IF", "EXISTS"]);
        let mut names = Vec::new();
        while let Some((name, end)) = name_at(tokens, at) {
            if matches!(name.as_str(), "cascade" | "restrict") {
                break;
            }
            names.push((name, "drop"));
            if tokens.get(end) != Some(&Token::Punct(',')) {
                break;
            }
            at = end + 1;
        }
        Some(names)
    } else if word(0, "INSERT") {
        tokens.iter().position(|t| t.is("INTO")).and_then(|into| one(into + 1, "insert"))
    } else if word(0, "UPDATE") {
        let at = if word(1, "OR") { 3 } else { 1 };
        one(skip(tokens, at, &["ONLY"]), "update")
    } else if word(0, "DELETE") && word(1, "FROM") {
        one(skip(tokens, 2, &["ONLY"]), "delete")
    } else {
        None
    };
    found.unwrap_or_default()
}

/// The tables `sql` touches (in the order first touched), and how many statements name none.
pub fn touched_tables(sql: &str) -> (Vec<Touched>, usize) {
    let mut touched: Vec<Touched> = Vec::new();
    let mut other = 0;
    for statement in statements(sql) {
        let targets = statement_targets(&statement);
        if targets.is_empty() {
            other += 1;
        }
        for (table, operation) in targets {
            match touched.iter_mut().find(|t| t.table == table) {
                Some(entry) if !entry.operations.contains(&operation) => entry.operations.push(operation),
                Some(_) => {}
                None => touched.push(Touched { table, operations: vec![operation] }),
            }
        }
    }
    (touched, other)
}

// ---- row counts ----------------------------------------------------------------------------

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Rows in `table` now; `None` when there is no such table. Only plain names are counted (a name
/// is put into the SQL text, since identifiers cannot be bound).
fn row_count(conn: &mut AnyConnection, table: &str) -> anyhow::Result<Option<i64>> {
    use diesel::sql_types::Text;
    let plain = !table.is_empty()
        && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !table.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Ok(None);
    }
    let exists = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind::<Text, _>(table)
        .get_result::<Count>(c)?,
        AnyConnection::Sqlite(c) => {
            diesel::sql_query("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind::<Text, _>(table)
                .get_result::<Count>(c)?
        }
    };
    if exists.n == 0 {
        return Ok(None);
    }
    let query = format!("SELECT COUNT(*) AS n FROM \"{table}\"");
    let count = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(query).get_result::<Count>(c)?,
        AnyConnection::Sqlite(c) => diesel::sql_query(query).get_result::<Count>(c)?,
    };
    Ok(Some(count.n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(sql: &str) -> Vec<(String, Vec<&'static str>)> {
        touched_tables(sql).0.into_iter().map(|t| (t.table, t.operations)).collect()
    }

    #[test]
    fn the_statements_name_their_tables() {
        let sql = r#"
            -- a comment naming ALTER TABLE nowhere;
            CREATE TABLE IF NOT EXISTS audit_chain (id TEXT PRIMARY KEY, note TEXT DEFAULT 'x; DROP TABLE users');
            CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON ONLY public.audit_events (occurred_at);
            ALTER TABLE "Mixed" ADD COLUMN x BIGINT;
            /* block; comment */
            ALTER TABLE oauth_tokens ADD COLUMN replaced_by TEXT NULL;
            INSERT INTO audit_chain (id) SELECT event_id FROM audit_events;
            UPDATE oauth_tokens SET replaced_by = NULL WHERE jti = 'a''b';
            DELETE FROM ONLY sessions WHERE revoked_at IS NOT NULL;
            DROP TABLE IF EXISTS old_a, old_b CASCADE;
            DROP INDEX idx_old;
            CREATE TRIGGER t_audit BEFORE UPDATE ON audit_events FOR EACH ROW EXECUTE FUNCTION f();
            CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN UPDATE users SET x = 1; RETURN NEW; END $$ LANGUAGE plpgsql;
        "#;
        assert_eq!(
            tables(sql),
            vec![
                ("audit_chain".to_string(), vec!["create", "insert"]),
                ("audit_events".to_string(), vec!["index", "trigger"]),
                ("Mixed".to_string(), vec!["alter"]),
                ("oauth_tokens".to_string(), vec!["alter", "update"]),
                ("sessions".to_string(), vec!["delete"]),
                ("old_a".to_string(), vec!["drop"]),
                ("old_b".to_string(), vec!["drop"]),
            ]
        );
        let (_, other) = touched_tables(sql);
        assert_eq!(other, 2, "DROP INDEX and CREATE FUNCTION name no table");
    }

    #[test]
    fn the_embedded_migrations_parse() {
        let sql = "ALTER TABLE oauth_authorization_codes ADD COLUMN redirect_uri_given BOOLEAN NOT NULL DEFAULT TRUE;";
        assert_eq!(tables(sql), vec![("oauth_authorization_codes".to_string(), vec!["alter"])]);
        let sqlite_rebuild = "CREATE TABLE x_new (a INT); INSERT INTO x_new SELECT a FROM x; DROP TABLE x; ALTER TABLE x_new RENAME TO x;";
        assert_eq!(
            tables(sqlite_rebuild),
            vec![("x_new".to_string(), vec!["create", "insert", "alter"]), ("x".to_string(), vec!["drop"])]
        );
    }
}
