//! What the broker sends on an agent stream: a `fluxgate.v1.BrokerMessage`, written either
//! from a message or from an event encoded once for every stream that gets it.
//!
//! One push fans out to many streams, and the event is the same bytes on each of them except
//! for `matched_projects` (which of that stream's subscriptions it matched). So the event's
//! other fields are encoded once ([`SharedEvent::encode_fields`]) and each stream writes
//! those bytes, its own `matched_projects` and the `BrokerMessage` framing around them.
//! Protobuf fields may come in any order, so the result decodes as the same
//! `BrokerMessage` an agent would get from the generated type (see the tests).
//!
//! The broker's `AgentService` server (`v1_outbound`) is generated with this type as its
//! response; agents and tests decode the generated [`v1::BrokerMessage`].

use std::sync::Arc;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::v1;

/// `BrokerMessage.event`'s field number.
const BROKER_MESSAGE_EVENT: u32 = 2;
/// `Event.matched_projects`'s field number.
const EVENT_MATCHED_PROJECTS: u32 = 10;

/// One message towards an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundMessage {
    /// Any message, encoded as usual (boxed: events are most of what is sent, and a
    /// stream's channel holds slots of this type).
    Message(Box<v1::BrokerMessage>),
    /// An event whose fields were encoded once for every stream.
    Event(SharedEvent),
}

impl From<v1::BrokerMessage> for OutboundMessage {
    fn from(message: v1::BrokerMessage) -> Self {
        Self::Message(Box::new(message))
    }
}

impl Default for OutboundMessage {
    fn default() -> Self {
        Self::Message(Box::default())
    }
}

/// An event for one stream: the encoded fields every stream shares, and this stream's
/// `matched_projects`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEvent {
    /// Every field of the `Event` but `matched_projects`, encoded ([`Self::encode_fields`]).
    pub fields: Bytes,
    /// Shared with the stream's subscriptions: a delivery copies no text.
    pub matched_projects: Vec<Arc<str>>,
}

impl SharedEvent {
    /// Encodes every field of `event` but `matched_projects` (which must be empty): the
    /// part of an event that is the same on every stream.
    pub fn encode_fields(event: &v1::Event) -> Bytes {
        debug_assert!(
            event.matched_projects.is_empty(),
            "matched_projects is per stream"
        );
        Bytes::from(event.encode_to_vec())
    }

    fn event_len(&self) -> usize {
        let key = encoding::key_len(EVENT_MATCHED_PROJECTS);
        self.fields.len()
            + self
                .matched_projects
                .iter()
                .map(|path| key + encoding::encoded_len_varint(path.len() as u64) + path.len())
                .sum::<usize>()
    }
}

impl Message for OutboundMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Self::Message(message) => message.encode_raw(buf),
            Self::Event(event) => {
                encoding::encode_key(BROKER_MESSAGE_EVENT, WireType::LengthDelimited, buf);
                encoding::encode_varint(event.event_len() as u64, buf);
                buf.put_slice(&event.fields);
                // As prost encodes a `repeated string`, from shared text.
                for path in &event.matched_projects {
                    encoding::encode_key(EVENT_MATCHED_PROJECTS, WireType::LengthDelimited, buf);
                    encoding::encode_varint(path.len() as u64, buf);
                    buf.put_slice(path.as_bytes());
                }
            }
        }
    }

    /// Decoding (which the broker never does) reads a plain `BrokerMessage`.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if let Self::Event(_) = self {
            *self = Self::default();
        }
        match self {
            Self::Message(message) => message.merge_field(tag, wire_type, buf, ctx),
            Self::Event(_) => unreachable!("replaced by a message above"),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Message(message) => message.encoded_len(),
            Self::Event(event) => {
                let len = event.event_len();
                encoding::key_len(BROKER_MESSAGE_EVENT)
                    + encoding::encoded_len_varint(len as u64)
                    + len
            }
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::broker_message;

    fn event(matched: Vec<String>) -> v1::Event {
        v1::Event {
            seq: 42,
            event_id: "0b6f5d3e-8f3e-4a55-9b8a-2f1b1c7e9d10".to_owned(),
            project_id: 7,
            project_path: "platform/gitops".to_owned(),
            r#ref: "refs/heads/main".to_owned(),
            before: "0".repeat(40),
            after: "a".repeat(40),
            kind: 1,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            matched_projects: matched,
            artifact: Some(v1::Artifact {
                url: "oci://registry.example/platform/gitops".to_owned(),
                tag: "v1.4.0".to_owned(),
                digest: "sha256:abc".to_owned(),
                pipeline_id: "12".to_owned(),
                job_id: "34".to_owned(),
            }),
        }
    }

    fn as_broker_message(event: v1::Event) -> v1::BrokerMessage {
        v1::BrokerMessage {
            message: Some(broker_message::Message::Event(event)),
        }
    }

    #[test]
    fn a_shared_event_decodes_as_the_event_with_this_streams_matches() {
        let fields = SharedEvent::encode_fields(&event(Vec::new()));
        for matched in [
            vec![],
            vec!["platform/gitops".to_owned()],
            vec!["a".to_owned(), "b".repeat(300)],
        ] {
            let outbound = OutboundMessage::Event(SharedEvent {
                fields: fields.clone(),
                matched_projects: matched.iter().map(|m| m.as_str().into()).collect(),
            });
            let bytes = outbound.encode_to_vec();
            assert_eq!(bytes.len(), outbound.encoded_len());
            let decoded = v1::BrokerMessage::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded, as_broker_message(event(matched.clone())));
            assert_eq!(
                bytes.len(),
                as_broker_message(event(matched)).encoded_len(),
                "the same size as the generated encoding"
            );
        }
    }

    #[test]
    fn any_other_message_is_encoded_as_the_generated_type_would() {
        let keepalive = v1::BrokerMessage {
            message: Some(broker_message::Message::Keepalive(v1::Keepalive {
                position: 9,
            })),
        };
        let outbound = OutboundMessage::from(keepalive.clone());
        assert_eq!(outbound.encode_to_vec(), keepalive.encode_to_vec());
        assert_eq!(
            OutboundMessage::decode(keepalive.encode_to_vec().as_slice()).unwrap(),
            outbound
        );
    }
}
