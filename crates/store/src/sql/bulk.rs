//! Statements over many rows at once: a batch of hooks costs a fixed number of round trips
//! to the database, not several per hook. (On SQLite each statement is a hop to the
//! connection's thread; on PostgreSQL a network round trip.)

/// Rows per statement: far below either database's limit on bound parameters.
pub(super) const CHUNK: usize = 100;

/// `($1, $2, $3), ($4, $5, $6)` for `rows` rows of `columns` parameters.
pub(super) fn values(rows: usize, columns: usize) -> String {
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
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list_from(2, 3), "$2, $3, $4");
    }
}
