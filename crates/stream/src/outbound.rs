//! The channel from a stream's session task to its gRPC response body.
//!
//! One per open stream, and most streams are idle: a slot is a pointer-sized message or a
//! boxed closing status (tonic's `Status` alone is ~180 bytes, and a channel allocates its
//! slots in blocks of 32 up front), so an idle stream's channel costs about 2 KiB.

use std::pin::Pin;
use std::task::{Context, Poll};

use fluxgate_proto::outbound::OutboundMessage;
use fluxgate_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

/// What the session hands the response body.
#[derive(Debug)]
pub enum Outgoing {
    Message(OutboundMessage),
    /// The stream's last word.
    Close(Box<Status>),
}

impl From<v1::BrokerMessage> for Outgoing {
    fn from(message: v1::BrokerMessage) -> Self {
        Self::Message(OutboundMessage::from(message))
    }
}

impl From<Status> for Outgoing {
    fn from(status: Status) -> Self {
        Self::Close(Box::new(status))
    }
}

/// The session's end.
pub type OutboundSender = mpsc::Sender<Outgoing>;

/// A new channel holding up to `capacity` messages the agent has not read yet.
pub fn channel(capacity: usize) -> (OutboundSender, OutboundStream) {
    let (sender, receiver) = mpsc::channel(capacity);
    (sender, OutboundStream(receiver))
}

/// The response body's end: what tonic encodes and writes.
#[derive(Debug)]
pub struct OutboundStream(mpsc::Receiver<Outgoing>);

impl tokio_stream::Stream for OutboundStream {
    type Item = Result<OutboundMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|next| {
            next.map(|outgoing| match outgoing {
                Outgoing::Message(message) => Ok(message),
                Outgoing::Close(status) => Err(*status),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        assert!(
            std::mem::size_of::<Outgoing>() <= 72,
            "{} bytes",
            std::mem::size_of::<Outgoing>()
        );
    }
}
