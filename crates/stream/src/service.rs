//! The `fluxgate.v1.AgentService` gRPC service: authenticates a stream, reads its Hello,
//! and hands it to a session task.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{AgentToken, bearer};
use fluxgate_fanout::CloseReason;
use fluxgate_proto::v1::{self, agent_message};
use fluxgate_proto::v1_outbound::agent_service_server::{AgentService, AgentServiceServer};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::cursor_saver::new_stream_id;
use crate::outbound::{self, OutboundStream};
use crate::session::{self, StreamContext, StreamRequest};
use crate::{convert, status};

/// Messages buffered towards one agent before the session waits for it to read.
const OUTBOUND_BUFFER: usize = 64;
/// How long a new stream waits for the hub to catch up with the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `fluxgate.v1.AgentService` implementation: one task per stream.
pub struct AgentStreams {
    context: Arc<StreamContext>,
    hello_timeout: Duration,
}

impl AgentStreams {
    /// The service; cancelling the context's `shutdown` closes every open stream (one
    /// task watches it for all of them, so that sessions do not poll it per event).
    pub fn new(context: Arc<StreamContext>, hello_timeout: Duration) -> Self {
        let shutdown = context.shutdown.clone();
        let hub = context.hub.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            hub.close_all(CloseReason::Shutdown).await;
        });
        Self {
            context,
            hello_timeout,
        }
    }

    pub fn into_server(self) -> AgentServiceServer<Self> {
        AgentServiceServer::new(self)
    }
}

/// The token from `authorization: Bearer <token>`.
pub fn bearer_token(metadata: &MetadataMap) -> Result<AgentToken, Status> {
    let missing =
        || Status::unauthenticated("missing `authorization: Bearer <agent token>` metadata");
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not valid text"))?;
    let token = bearer::parse(value).map_err(|_| missing())?;
    Ok(AgentToken::from_presented(token))
}

/// The agent a stream's bearer token belongs to, once the hub has applied the log up to
/// the store's head (the agent may have been created or changed a moment ago by another
/// process, and the hub must know it before deciding what the stream may see). Shared by
/// `fluxgate.v1` and the KAS flux API.
pub(crate) async fn authenticate(
    context: &StreamContext,
    metadata: &MetadataMap,
) -> Result<fluxgate_store::AgentRecord, Status> {
    let token = bearer_token(metadata)?;
    let agent = context
        .store
        .agent_by_token(&token.digest())
        .await
        .map_err(|e| e.to_api_error().to_grpc_status())?
        .ok_or_else(|| Status::unauthenticated("unknown agent token"))?;
    let head = context
        .store
        .log_bounds()
        .await
        .map_err(|e| e.to_api_error().to_grpc_status())?
        .head;
    if !context.hub.caught_up_to(head, CATCH_UP_TIMEOUT).await {
        return Err(Status::unavailable(
            "the broker is behind the log; retry shortly",
        ));
    }
    Ok(agent)
}

#[tonic::async_trait]
impl AgentService for AgentStreams {
    type SubscribeStream = OutboundStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if self.context.shutdown.is_cancelled() {
            return Err(status::closed(CloseReason::Shutdown));
        }
        let agent = authenticate(&self.context, request.metadata()).await?;

        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello received; send Hello first"))??;
        let hello = match first.and_then(|m| m.message) {
            Some(agent_message::Message::Hello(hello)) => convert::hello(hello)?,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };

        let (outbound, stream) = outbound::channel(OUTBOUND_BUFFER);
        let stream_id = new_stream_id();
        let span = session::stream_span(&stream_id, &agent.policy, &self.context.broker_id);
        let request = StreamRequest {
            stream_id,
            policy: agent.policy,
            stored_cursor: agent.cursor,
            hello,
        };
        tokio::spawn(
            session::run(
                self.context.clone(),
                Box::new(request),
                Box::new(inbound),
                outbound,
            )
            .instrument(span),
        );
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn bearer_tokens_are_extracted_strictly() {
        assert_eq!(
            bearer_token(&metadata("Bearer fgat_abc")).unwrap().reveal(),
            "fgat_abc"
        );
        assert_eq!(
            bearer_token(&metadata("bearer fgat_abc")).unwrap().reveal(),
            "fgat_abc"
        );
        for bad in ["fgat_abc", "Basic fgat_abc", "Bearer  ", "Bearer"] {
            assert_eq!(
                bearer_token(&metadata(bad)).unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{bad}"
            );
        }
        assert_eq!(
            bearer_token(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
