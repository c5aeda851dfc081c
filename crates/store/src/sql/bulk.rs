//! Statements over many rows at once: a batch of hooks costs a fixed number of round trips
//! to the database, not several per hook. (On SQLite each statement is a hop to the
//! connection's thread; on PostgreSQL a network round trip.)

use sqlx::AnyConnection;

use super::compound::Dialect;

/// Rows per statement: far below either database's limit on bound parameters.
pub(super) const CHUNK: usize = 100;

/// The placeholders of a statement that binds nothing but `rows` rows of `columns`
/// parameters, in order: `($1, $2, $3), ($4, $5, $6)` on PostgreSQL, `(?, ?, ?), (?, ?, ?)`
/// on SQLite. SQLite finds a numbered parameter by scanning the statement's list of names,
/// once per parameter bound, which made a 100-row statement cost quadratically in its
/// parameters (the top of the fan-out profile: cursors and delivery records are saved this
/// way); anonymous parameters have no names to scan.
pub(super) fn values(conn: &AnyConnection, rows: usize, columns: usize) -> String {
    if Dialect::of(conn) == Dialect::Sqlite {
        anonymous_values(rows, columns)
    } else {
        numbered_values(rows, columns)
    }
}

fn numbered_values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns)
                .map(|c| format!("${}", row * columns + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn anonymous_values(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `$first, …` for `n` parameters, for `IN (…)`.
pub(super) fn list_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(numbered_values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(anonymous_values(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(list_from(2, 3), "$2, $3, $4");
    }
}
