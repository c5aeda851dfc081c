//! The stock tonic peer of the idle benchmark: a plain tonic 0.14 server with tonic's
//! default prost codec and default server settings, and one bidirectional streaming method
//! written as tonic's own streaming example writes it (a task reads the client's stream, an
//! `mpsc` channel feeds the response stream). It answers the first message with one reply
//! and then holds the stream open until the client goes. The client side opens one
//! connection per stream, as the broker's agents do.

use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

mod generated {
    #![allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs)]
    tonic::include_proto!("stockpeer.v1");
}

use generated::stock_peer_client::StockPeerClient;
use generated::stock_peer_server::{StockPeer, StockPeerServer};
use generated::{PeerReply, PeerRequest};

/// The capacity tonic's streaming example gives the response channel.
const RESPONSE_CHANNEL_CAPACITY: usize = 128;

#[derive(Default)]
struct HoldingPeer;

#[tonic::async_trait]
impl StockPeer for HoldingPeer {
    type SubscribeStream = ReceiverStream<Result<PeerReply, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<PeerRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let (replies, stream) = mpsc::channel(RESPONSE_CHANNEL_CAPACITY);
        tokio::spawn(async move {
            let mut answered = false;
            while let Some(Ok(message)) = inbound.next().await {
                if !answered {
                    answered = true;
                    let reply = PeerReply {
                        greeting: format!("hello {}", message.name),
                        head: message.resume_after,
                    };
                    if replies.send(Ok(reply)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// The hidden `peer-server` subcommand: serves on an ephemeral port of 127.0.0.1 and prints
/// the address on stdout.
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    Server::builder()
        .add_service(StockPeerServer::new(HoldingPeer))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// One open stream to the peer: its own connection, the first reply read.
pub struct PeerStream {
    _outbound: mpsc::Sender<PeerRequest>,
    _inbound: Streaming<PeerReply>,
}

impl PeerStream {
    /// Connects, sends the first message and waits for the reply.
    pub async fn open(address: SocketAddr) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        let mut client = StockPeerClient::new(channel);
        let (outbound, requests) = mpsc::channel(1024);
        outbound
            .send(PeerRequest {
                name: "bench".to_owned(),
                resume_after: 0,
            })
            .await?;
        let mut inbound = client
            .subscribe(ReceiverStream::new(requests))
            .await?
            .into_inner();
        inbound
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the peer closed the stream before its reply"))?;
        Ok(Self {
            _outbound: outbound,
            _inbound: inbound,
        })
    }
}
