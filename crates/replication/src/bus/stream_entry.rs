//! One log entry as a Redis Stream entry: two fields, `seq` (decimal) and `entry` (the
//! entry as JSON). Decoding says why it failed; the seq field must agree with the entry.

use std::collections::HashMap;

use fluxgate_core::{LogEntry, Seq};

/// Field names of a stream entry.
const SEQ_FIELD: &str = "seq";
const ENTRY_FIELD: &str = "entry";

/// Why an entry read from the Redis stream is not a log entry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the stream entry has no `{field}` field")]
    MissingField { field: &'static str },
    #[error("the `{field}` field of the stream entry is not text")]
    NotText {
        field: &'static str,
        #[source]
        source: redis::ParsingError,
    },
    #[error("the `seq` field {value:?} is not a seq")]
    InvalidSeq {
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("the `entry` field is not a log entry")]
    InvalidEntry {
        #[source]
        source: serde_json::Error,
    },
    #[error("the `seq` field says {field} but the entry is seq {entry}")]
    SeqMismatch { field: Seq, entry: Seq },
}

impl DecodeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::NotText { .. } => "not_text",
            DecodeError::InvalidSeq { .. } => "invalid_seq",
            DecodeError::InvalidEntry { .. } => "invalid_entry",
            DecodeError::SeqMismatch { .. } => "seq_mismatch",
        }
    }
}

/// The fields of `entry`'s stream entry.
pub(super) fn encode(entry: &LogEntry) -> [(&'static str, String); 2] {
    let body = serde_json::to_string(entry).expect("log entries always serialize");
    [
        (SEQ_FIELD, entry.seq.get().to_string()),
        (ENTRY_FIELD, body),
    ]
}

/// The log entry a stream entry holds.
pub(super) fn decode(fields: &HashMap<String, redis::Value>) -> Result<LogEntry, DecodeError> {
    let body = text(fields, ENTRY_FIELD)?;
    let entry: LogEntry =
        serde_json::from_str(&body).map_err(|source| DecodeError::InvalidEntry { source })?;
    let value = text(fields, SEQ_FIELD)?;
    let seq = value
        .parse()
        .map(Seq)
        .map_err(|source| DecodeError::InvalidSeq { value, source })?;
    if seq != entry.seq {
        return Err(DecodeError::SeqMismatch {
            field: seq,
            entry: entry.seq,
        });
    }
    Ok(entry)
}

fn text(
    fields: &HashMap<String, redis::Value>,
    field: &'static str,
) -> Result<String, DecodeError> {
    let value = fields
        .get(field)
        .ok_or(DecodeError::MissingField { field })?;
    redis::from_redis_value(value.clone()).map_err(|source| DecodeError::NotText { field, source })
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{AdminAction, AgentName, LogRecord, StateCause, StateChange, UnixMillis};

    use super::*;

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            seq: Seq(seq),
            recorded_at: UnixMillis(1),
            record: LogRecord::State(StateChange {
                cause: StateCause::Admin {
                    action: AdminAction::Create,
                    agent: AgentName::parse("edge").unwrap(),
                },
                effects: Vec::new(),
            }),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, redis::Value> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    redis::Value::BulkString(v.as_bytes().to_vec()),
                )
            })
            .collect()
    }

    #[test]
    fn an_encoded_entry_decodes_to_itself() {
        let original = entry(7);
        let [(seq_name, seq), (entry_name, body)] = encode(&original);
        let decoded = decode(&fields(&[(seq_name, &seq), (entry_name, &body)])).unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn decoding_says_why_it_failed() {
        let body = serde_json::to_string(&entry(7)).unwrap();
        let cases = [
            (fields(&[("seq", "7")]), "missing_field"),
            (fields(&[("seq", "seven"), ("entry", &body)]), "invalid_seq"),
            (fields(&[("seq", "7"), ("entry", "{")]), "invalid_entry"),
            (fields(&[("seq", "8"), ("entry", &body)]), "seq_mismatch"),
        ];
        for (fields, label) in cases {
            let err = decode(&fields).unwrap_err();
            assert_eq!(err.label(), label, "{err}");
        }
        let mut not_text = fields(&[("seq", "7")]);
        not_text.insert("entry".to_owned(), redis::Value::Nil);
        let err = decode(&not_text).unwrap_err();
        assert_eq!(err.label(), "not_text");
        assert!(std::error::Error::source(&err).is_some(), "{err}");
    }
}
