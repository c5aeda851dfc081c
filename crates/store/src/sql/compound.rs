//! Several reads, or several writes, sent to the database as one statement.
//!
//! Every statement costs a round trip to PostgreSQL and a hop to the thread sqlx runs a
//! SQLite connection on, and on a busy machine that wait, not the work, sets how many
//! transactions a second the log takes. A [`Compound`] gathers *parts* (one `SELECT` or
//! one `INSERT`/`UPDATE` each, with their parameters bound as they are written) and sends
//! them together:
//!
//! - [`Form::UnionAll`]: reads of one row shape, `part UNION ALL part`, the same in both
//!   dialects.
//! - [`Form::Sequence`]: writes. On PostgreSQL, data-modifying CTEs, `WITH w0 AS (part),
//!   w1 AS (part) SELECT 1` (every one runs, to completion, in one statement). On SQLite,
//!   `part; part`: sqlx prepares each and runs them in order in one hop, numbering the
//!   anonymous parameters straight on.
//!
//! Parts are packed into as few statements as [`MAX_PARAMS`] and [`MAX_PARTS`] allow,
//! in order; the usual batch is one statement. Callers split long row lists into parts of
//! [`ROWS_PER_PART`].
//!
//! A statement that must run on its own (a later one reads what it wrote, or its count of
//! rows affected matters) is written the same way as a [`Single`].
//!
//! Placeholders are written where their values are bound, so their numbers can never
//! drift from the binding order: `$N` on PostgreSQL, `?` on SQLite (SQLite finds a
//! numbered parameter by scanning the statement's names once per parameter bound, which
//! made a 100-row statement cost quadratically in its parameters).

use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::{AnyConnection, Arguments as _, Encode, Type};

use crate::error::StoreError;

/// Parameters per statement: far below PostgreSQL's limit (65,535) and SQLite's (32,766).
pub(super) const MAX_PARAMS: usize = 10_000;

/// Parts per statement: below SQLite's limit on the terms of one compound `SELECT` (500).
pub(super) const MAX_PARTS: usize = 100;

/// Rows (or list items) per part: a batch of hooks costs a fixed number of statements, and
/// one part stays far below [`MAX_PARAMS`].
pub(super) const ROWS_PER_PART: usize = 100;

/// The SQL dialect of a connection, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub(super) fn of(conn: &AnyConnection) -> Self {
        // sqlx's name of the SQLite backend.
        if conn.backend_name() == "SQLite" {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        }
    }
}

/// How a compound's parts are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// Reads of one row shape.
    UnionAll,
    /// Writes, run in order.
    Sequence,
}

/// One statement being built: its parts' SQL and every part's parameters, in order.
#[derive(Default)]
struct Statement {
    parts: Vec<String>,
    args: AnyArguments,
    /// Parameters bound so far (the last one's number on PostgreSQL).
    params: usize,
    /// Parameters the parts declared they would bind at most.
    reserved: usize,
}

/// Parts gathered into as few statements as the limits allow.
pub(super) struct Compound {
    dialect: Dialect,
    form: Form,
    full: Vec<Statement>,
    current: Statement,
    /// The first parameter that failed to encode; reported when the compound runs.
    encode_error: Option<sqlx::error::BoxDynError>,
    /// SQLite only: a statement run in the same hop before the first statement.
    opening: Option<&'static str>,
    /// SQLite only: a statement run in the same hop after the last statement.
    closing: Option<&'static str>,
}

impl Compound {
    pub(super) fn new(dialect: Dialect, form: Form) -> Self {
        Self {
            dialect,
            form,
            full: Vec::new(),
            current: Statement::default(),
            encode_error: None,
            opening: None,
            closing: None,
        }
    }

    /// SQLite only: runs `sql` (without parameters) first, in the same hop as the first
    /// statement: `BEGIN IMMEDIATE` before a transaction's first read. PostgreSQL takes one
    /// statement per query with parameters, so it has no such hop to share.
    pub(super) fn open_with(&mut self, sql: &'static str) {
        debug_assert_eq!(self.dialect, Dialect::Sqlite, "SQLite runs statement lists");
        self.opening = Some(sql);
    }

    /// SQLite only: runs `sql` (without parameters) last, in the same hop as the last
    /// statement: `COMMIT` after a transaction's last write. With no parts, `sql` is the
    /// one statement run.
    pub(super) fn close_with(&mut self, sql: &'static str) {
        debug_assert_eq!(self.dialect, Dialect::Sqlite, "SQLite runs statement lists");
        self.closing = Some(sql);
    }

    /// Adds one part that binds at most `params` parameters, written by `write`.
    pub(super) fn part(&mut self, params: usize, write: impl FnOnce(&mut Part<'_>)) {
        let full =
            self.current.reserved + params > MAX_PARAMS || self.current.parts.len() >= MAX_PARTS;
        if full && !self.current.parts.is_empty() {
            self.full.push(std::mem::take(&mut self.current));
        }
        self.current.reserved += params;
        let bound_before = self.current.params;
        let mut part = Part {
            dialect: self.dialect,
            sql: String::new(),
            statement: &mut self.current,
            encode_error: &mut self.encode_error,
        };
        write(&mut part);
        let sql = part.sql;
        debug_assert!(
            self.current.params - bound_before <= params,
            "a part bound more parameters than it declared"
        );
        self.current.parts.push(sql);
    }

    /// The statements, rendered, with their arguments.
    fn statements(self) -> Result<Vec<(String, AnyArguments)>, StoreError> {
        if let Some(err) = self.encode_error {
            return Err(sqlx::Error::Encode(err).into());
        }
        let (dialect, form) = (self.dialect, self.form);
        let mut statements: Vec<(String, AnyArguments)> = self
            .full
            .into_iter()
            .chain((!self.current.parts.is_empty()).then_some(self.current))
            .map(|statement| (render(dialect, form, &statement.parts), statement.args))
            .collect();
        if statements.is_empty() && (self.opening.is_some() || self.closing.is_some()) {
            statements.push((String::new(), AnyArguments::default()));
        }
        if let (Some(opening), Some((first, _))) = (self.opening, statements.first_mut()) {
            *first = join_statements(opening, first);
        }
        if let (Some(closing), Some((last, _))) = (self.closing, statements.last_mut()) {
            *last = join_statements(last, closing);
        }
        Ok(statements)
    }

    /// Runs every part; for writes.
    pub(super) async fn execute(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        for (sql, args) in self.statements()? {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Every row of every part; for reads.
    pub(super) async fn fetch_all(
        self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut found = Vec::new();
        for (sql, args) in self.statements()? {
            found.extend(
                sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(found)
    }
}

/// One statement of its own, written like a part. The caller bounds its parameters (lists
/// of at most [`ROWS_PER_PART`] rows).
pub(super) struct Single {
    sql: String,
    args: AnyArguments,
    encode_error: Option<sqlx::error::BoxDynError>,
}

impl Single {
    pub(super) fn new(dialect: Dialect, write: impl FnOnce(&mut Part<'_>)) -> Self {
        let mut statement = Statement::default();
        let mut encode_error = None;
        let mut part = Part {
            dialect,
            sql: String::new(),
            statement: &mut statement,
            encode_error: &mut encode_error,
        };
        write(&mut part);
        let sql = part.sql;
        Self {
            sql,
            args: statement.args,
            encode_error,
        }
    }

    /// Runs it; the rows it changed.
    pub(super) async fn execute(self, conn: &mut AnyConnection) -> Result<u64, StoreError> {
        if let Some(err) = self.encode_error {
            return Err(sqlx::Error::Encode(err).into());
        }
        let done = sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }
}

/// `first; second`, or whichever of the two is not empty.
fn join_statements(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty()) {
        (true, _) => second.to_owned(),
        (_, true) => first.to_owned(),
        _ => format!("{first}; {second}"),
    }
}

fn render(dialect: Dialect, form: Form, parts: &[String]) -> String {
    match (form, dialect) {
        (_, _) if parts.len() == 1 => parts[0].clone(),
        (Form::UnionAll, _) => parts.join(" UNION ALL "),
        (Form::Sequence, Dialect::Sqlite) => parts.join("; "),
        (Form::Sequence, Dialect::Postgres) => {
            let ctes: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(i, part)| format!("w{i} AS ({part})"))
                .collect();
            format!("WITH {} SELECT 1", ctes.join(", "))
        }
    }
}

/// One part being written: SQL text, and parameters bound where they appear.
pub(super) struct Part<'a> {
    dialect: Dialect,
    sql: String,
    statement: &'a mut Statement,
    encode_error: &'a mut Option<sqlx::error::BoxDynError>,
}

impl Part<'_> {
    pub(super) fn sql(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// Writes a placeholder for `value` and binds it: `$N` on PostgreSQL (numbered across
    /// the whole statement), `?` on SQLite (whose numbered parameters are found by a scan
    /// of the statement's names, once per parameter bound).
    pub(super) fn bind<'t, T: Encode<'t, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        self.statement.params += 1;
        match self.dialect {
            Dialect::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.statement.params.to_string());
            }
            Dialect::Sqlite => self.sql.push('?'),
        }
        if let Err(err) = self.statement.args.add(value) {
            self.encode_error.get_or_insert(err);
        }
        self
    }

    /// Writes `a, b, c`: a placeholder per item, each bound (for `IN (…)`).
    pub(super) fn list<'t, T: Encode<'t, Any> + Type<Any>>(
        &mut self,
        items: impl IntoIterator<Item = T>,
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql(", ");
            }
            self.bind(item);
        }
        self
    }

    /// Writes `(…), (…)`: one parenthesised row per item, `bind_row` binding its values
    /// (separated by commas as they are bound).
    pub(super) fn rows<I>(
        &mut self,
        items: I,
        mut bind_row: impl FnMut(&mut Row<'_, '_>, I::Item),
    ) -> &mut Self
    where
        I: IntoIterator,
    {
        for (i, item) in items.into_iter().enumerate() {
            self.sql(if i == 0 { "(" } else { ", (" });
            bind_row(
                &mut Row {
                    part: self,
                    first: true,
                },
                item,
            );
            self.sql(")");
        }
        self
    }
}

/// One row of a `VALUES` list being bound.
pub(super) struct Row<'p, 'a> {
    part: &'p mut Part<'a>,
    first: bool,
}

impl Row<'_, '_> {
    pub(super) fn bind<'t, T: Encode<'t, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.part.sql(", ");
        }
        self.part.bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_inserts(dialect: Dialect, form: Form) -> Vec<String> {
        let mut compound = Compound::new(dialect, form);
        compound.part(4, |part| {
            part.sql("INSERT INTO a (x, y) VALUES ").rows(
                [(1_i64, "p"), (2, "q")],
                |row, (x, y)| {
                    row.bind(x).bind(y);
                },
            );
        });
        compound.part(1, |part| {
            part.sql("UPDATE b SET z = ")
                .bind(3_i64)
                .sql(" WHERE id = 1");
        });
        let statements = compound.statements().expect("every value encodes");
        statements.into_iter().map(|(sql, _)| sql).collect()
    }

    #[test]
    fn writes_become_ctes_on_postgres_and_a_statement_list_on_sqlite() {
        assert_eq!(
            two_inserts(Dialect::Postgres, Form::Sequence),
            [
                "WITH w0 AS (INSERT INTO a (x, y) VALUES ($1, $2), ($3, $4)), \
              w1 AS (UPDATE b SET z = $5 WHERE id = 1) SELECT 1"
            ]
        );
        assert_eq!(
            two_inserts(Dialect::Sqlite, Form::Sequence),
            ["INSERT INTO a (x, y) VALUES (?, ?), (?, ?); UPDATE b SET z = ? WHERE id = 1"]
        );
    }

    #[test]
    fn placeholders_follow_the_binding_order_in_either_dialect() {
        let write = |part: &mut Part<'_>| {
            part.sql("DELETE FROM t WHERE id IN (")
                .list([1_i64, 2, 3])
                .sql(") AND at < ")
                .bind(9_i64);
        };
        assert_eq!(
            Single::new(Dialect::Postgres, write).sql,
            "DELETE FROM t WHERE id IN ($1, $2, $3) AND at < $4"
        );
        assert_eq!(
            Single::new(Dialect::Sqlite, write).sql,
            "DELETE FROM t WHERE id IN (?, ?, ?) AND at < ?"
        );
    }

    #[test]
    fn one_part_is_sent_as_written() {
        let mut compound = Compound::new(Dialect::Postgres, Form::Sequence);
        compound.part(1, |part| {
            part.sql("UPDATE b SET z = ").bind(3_i64);
        });
        let statements = compound.statements().expect("encodes");
        assert_eq!(statements[0].0, "UPDATE b SET z = $1");
    }

    #[test]
    fn parts_beyond_the_parameter_limit_start_a_new_statement_numbered_from_one() {
        let mut compound = Compound::new(Dialect::Postgres, Form::UnionAll);
        for i in 0..3_i64 {
            compound.part(MAX_PARAMS / 2, |part| {
                part.sql("SELECT x FROM t WHERE x = ").bind(i);
            });
        }
        let statements = compound.statements().expect("encodes");
        let sql: Vec<&str> = statements.iter().map(|(sql, _)| sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "SELECT x FROM t WHERE x = $1 UNION ALL SELECT x FROM t WHERE x = $2",
                "SELECT x FROM t WHERE x = $1",
            ]
        );
    }

    #[test]
    fn parts_beyond_the_part_limit_start_a_new_statement() {
        let mut compound = Compound::new(Dialect::Sqlite, Form::UnionAll);
        for _ in 0..=MAX_PARTS {
            compound.part(0, |part| {
                part.sql("SELECT 1");
            });
        }
        assert_eq!(compound.statements().expect("encodes").len(), 2);
    }

    #[test]
    fn the_opening_goes_before_the_first_statement_and_the_closing_after_the_last() {
        let mut compound = Compound::new(Dialect::Sqlite, Form::UnionAll);
        compound.open_with("BEGIN IMMEDIATE");
        compound.close_with("COMMIT");
        for _ in 0..=MAX_PARTS {
            compound.part(0, |part| {
                part.sql("SELECT 1");
            });
        }
        let statements = compound.statements().expect("encodes");
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0]
                .0
                .starts_with("BEGIN IMMEDIATE; SELECT 1 UNION ALL"),
            "{}",
            statements[0].0
        );
        assert!(!statements[0].0.ends_with("COMMIT"));
        assert_eq!(statements[1].0, "SELECT 1; COMMIT");
    }

    #[test]
    fn a_closing_without_parts_runs_alone() {
        let mut compound = Compound::new(Dialect::Sqlite, Form::Sequence);
        compound.close_with("COMMIT");
        let statements = compound.statements().expect("encodes");
        let sql: Vec<&str> = statements.iter().map(|(sql, _)| sql.as_str()).collect();
        assert_eq!(sql, ["COMMIT"]);
    }
}
