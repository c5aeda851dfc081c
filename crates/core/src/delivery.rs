//! What happened to one event at one agent: the delivery records the broker keeps per
//! `(event, agent)` so that `fluxgate trace` can say, for any push, when each cluster got
//! it, when its Receivers answered, when Flux fetched the revision and when it was applied,
//! or exactly where it stopped.
//!
//! A record is one stage reached for one object: `acked` (the agent's receivers answered;
//! it carries when the event was sent and each receiver's outcome), `sent` (written only
//! for events a stream sent and that were never acked on it), then what the agent saw Flux
//! do (`fetched` per source, `applied` or `failed` per Kustomization or HelmRelease,
//! `timed_out` when the agent's deadline passed first). Records are bounded in size
//! ([`DeliveryRecord::validate`]) and live as long as their event in the log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;
use crate::log::Seq;
use crate::time::UnixMillis;

/// Longest `object` (`<Kind>/<namespace>/<name>`), in bytes.
pub const MAX_OBJECT_BYTES: usize = 256;
/// Longest Flux revision, in bytes.
pub const MAX_REVISION_BYTES: usize = 256;
/// Longest message (Flux's failure text, or what was awaited), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// How far one event got at one agent, for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStage {
    /// Sent on a stream that closed before the agent acked it.
    Sent,
    /// The agent's receivers answered (or the event matched none of them).
    Acked,
    /// The source fetched the event's revision (or a later one).
    Fetched,
    /// A Kustomization or HelmRelease applied it.
    Applied,
    /// A Kustomization or HelmRelease failed to apply it.
    Failed,
    /// The agent's sync deadline passed while it waited for `object`.
    TimedOut,
}

impl DeliveryStage {
    pub const ALL: [Self; 6] = [
        Self::Sent,
        Self::Acked,
        Self::Fetched,
        Self::Applied,
        Self::Failed,
        Self::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Acked => "acked",
            Self::Fetched => "fetched",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
        }
    }

    /// True for the stages that end the sync of their object.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Applied | Self::Failed | Self::TimedOut)
    }
}

impl fmt::Display for DeliveryStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name that is not one of [`DeliveryStage::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery stage {0:?}")]
pub struct UnknownStage(pub String);

impl FromStr for DeliveryStage {
    type Err = UnknownStage;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|stage| stage.as_str() == raw)
            .ok_or_else(|| UnknownStage(raw.to_owned()))
    }
}

/// One receiver's answer, as the agent acked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverAnswer {
    pub receiver: String,
    /// `delivered`, `coalesced`, `rejected` or `failed`.
    pub outcome: String,
    /// 0 if no response was received.
    pub http_status: u16,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// What a record says beyond its stage; the fields that do not apply are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryDetail {
    /// When the broker sent the event on the stream (`sent`, `acked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<UnixMillis>,
    /// The agent's time from receiving the event to its last receiver answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<ReceiverAnswer>,
    /// The replica that served the stream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// Flux's revision (`main@sha1:…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Flux's failure message, or what the agent was waiting for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the agent saw the stage (agent clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<UnixMillis>,
}

/// One stage one event reached at one agent, for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub seq: Seq,
    pub agent: AgentId,
    pub stage: DeliveryStage,
    /// `<Kind>/<namespace>/<name>` for the sync stages; empty for `sent` and `acked`.
    pub object: String,
    /// When the broker learned of it (broker clock).
    pub at: UnixMillis,
    pub detail: DeliveryDetail,
}

/// A record over a bound; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DeliveryRecordError {
    pub field: &'static str,
    pub reason: String,
}

impl DeliveryRecord {
    /// Checks every bound and that sync stages name their object.
    pub fn validate(&self) -> Result<(), DeliveryRecordError> {
        let bounded = |field: &'static str, value: &str, max: usize| {
            if value.len() > max || value.chars().any(char::is_control) {
                Err(DeliveryRecordError {
                    field,
                    reason: format!("must be at most {max} bytes without control characters"),
                })
            } else {
                Ok(())
            }
        };
        bounded("object", &self.object, MAX_OBJECT_BYTES)?;
        bounded("revision", &self.detail.revision, MAX_REVISION_BYTES)?;
        if self.detail.message.len() > MAX_MESSAGE_BYTES {
            return Err(DeliveryRecordError {
                field: "message",
                reason: format!("must be at most {MAX_MESSAGE_BYTES} bytes"),
            });
        }
        let sync = !matches!(self.stage, DeliveryStage::Sent | DeliveryStage::Acked);
        if sync && self.object.splitn(3, '/').filter(|p| !p.is_empty()).count() != 3 {
            return Err(DeliveryRecordError {
                field: "object",
                reason: format!(
                    "a {} record names its object as <Kind>/<namespace>/<name>",
                    self.stage
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stage: DeliveryStage, object: &str) -> DeliveryRecord {
        DeliveryRecord {
            seq: Seq(7),
            agent: AgentId(1),
            stage,
            object: object.to_owned(),
            at: UnixMillis(1),
            detail: DeliveryDetail::default(),
        }
    }

    #[test]
    fn stages_round_trip_through_their_names() {
        for stage in DeliveryStage::ALL {
            assert_eq!(stage.as_str().parse::<DeliveryStage>(), Ok(stage));
        }
        assert!("done".parse::<DeliveryStage>().is_err());
    }

    #[test]
    fn sync_stages_name_their_object_and_every_field_is_bounded() {
        assert!(record(DeliveryStage::Acked, "").validate().is_ok());
        assert!(
            record(DeliveryStage::Fetched, "GitRepository/flux-system/app")
                .validate()
                .is_ok()
        );
        assert_eq!(
            record(DeliveryStage::Applied, "Kustomization/app")
                .validate()
                .unwrap_err()
                .field,
            "object"
        );
        let long = "x".repeat(MAX_OBJECT_BYTES + 1);
        assert!(record(DeliveryStage::Acked, &long).validate().is_err());
        let mut message = record(DeliveryStage::Failed, "Kustomization/ns/app");
        message.detail.message = "m".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(message.validate().unwrap_err().field, "message");
        let mut revision = record(DeliveryStage::Fetched, "GitRepository/ns/app");
        revision.detail.revision = "main@sha1:\n".to_owned();
        assert_eq!(revision.validate().unwrap_err().field, "revision");
    }
}
