//! A stream's gRPC response body: what its session task sends, then live events.
//!
//! The session's messages (Welcome, the backlog, keepalives, subscription status, the
//! closing status) come through a channel. Once the backlog is sent, the session sends
//! [`Outgoing::Live`], and from then on the body also takes live events from the hub's
//! queue itself ([`StreamState::poll_live`]), with no task in between.
//!
//! One channel per open stream, and most streams are idle: a slot is a pointer-sized
//! message or a boxed closing status (tonic's `Status` alone is ~180 bytes, and a channel
//! allocates its slots in blocks of 32 up front), so an idle stream's channel costs about
//! 2 KiB.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use fluxgate_proto::outbound::OutboundMessage;
use fluxgate_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

use crate::session::state::StreamState;

/// What the session hands the response body.
pub enum Outgoing {
    /// Boxed, so that a slot of the stream's channel is two words: the channel allocates
    /// a block of slots up front for every stream, idle or not, and what goes through it
    /// (the backlog, keepalives, statuses) is not the hot path (live events are not sent
    /// through it).
    Message(Box<OutboundMessage>),
    /// The backlog is sent: live events follow, from the hub's queue.
    Live(Arc<StreamState>),
    /// The stream's last word.
    Close(Box<Status>),
}

impl From<v1::BrokerMessage> for Outgoing {
    fn from(message: v1::BrokerMessage) -> Self {
        Self::Message(Box::new(OutboundMessage::from(message)))
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
    (
        sender,
        OutboundStream {
            session: receiver,
            live: None,
            ended: false,
        },
    )
}

/// The response body's end: what tonic encodes and writes.
pub struct OutboundStream {
    session: mpsc::Receiver<Outgoing>,
    /// Set once the backlog is sent.
    live: Option<Arc<StreamState>>,
    /// An error was yielded: the stream is over.
    ended: bool,
}

impl tokio_stream::Stream for OutboundStream {
    type Item = Result<OutboundMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            // The session's messages first: its closing status ends the stream at once.
            match this.session.poll_recv(cx) {
                Poll::Ready(Some(Outgoing::Message(message))) => {
                    return Poll::Ready(Some(Ok(*message)));
                }
                Poll::Ready(Some(Outgoing::Live(state))) => {
                    this.live = Some(state);
                    continue;
                }
                Poll::Ready(Some(Outgoing::Close(status))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(*status)));
                }
                // The session ended without a word: the agent left.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            let Some(state) = &this.live else {
                return Poll::Pending;
            };
            let next = ready!(state.poll_live(cx));
            this.ended = next.is_err();
            return Poll::Ready(Some(next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream's channel allocates a block of 32 slots when it opens, idle or not.
    #[test]
    fn a_channel_slot_is_two_words() {
        assert_eq!(std::mem::size_of::<Outgoing>(), 16);
    }
}
