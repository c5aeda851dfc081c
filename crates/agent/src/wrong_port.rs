//! Telling a misdialled broker address from a broker that is down: an agent pointed at
//! fluxgate's HTTP port (hooks and the admin API, HTTP/1.1) instead of its agent port
//! (gRPC, HTTP/2) gets only an HTTP/2 protocol error from the stream. After such a failure
//! the agent asks the address, over HTTP/1.1, what it is: a server that answers with an
//! HTTP/1 status line is not a gRPC listener, and retrying will not change that.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the probe may take in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What to tell the operator when `broker` answered HTTP/1: which port it is, and which
/// one to use instead.
pub fn advice(broker: &str) -> String {
    format!(
        "{broker} answers HTTP/1.1, not gRPC: this is fluxgate's HTTP port (hooks and the \
         admin API, `http_listen`, default 8080), not its agent port; point `broker:` at the \
         agent (gRPC) listener, `agent_listen`, default 8150"
    )
}

/// True if the plain-text (`http://`) server at `authority` (`host:port`) answers an
/// HTTP/1.1 request with an HTTP/1 status line. False for a gRPC (HTTP/2-only) listener,
/// for TLS, and when it cannot be reached or does not answer in time.
pub async fn answers_http1(authority: &str) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request = format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0_u8; 8];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, exchange).await,
        Ok(Ok(head)) if head.starts_with(b"HTTP/1.")
    )
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A server on a free port that answers every connection with `answer`.
    async fn server(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0_u8; 16];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn an_http1_server_is_recognised() {
        let http1 = server(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        assert!(answers_http1(&http1).await);
        // An HTTP/2 server answers a request it cannot read with a GOAWAY frame.
        let h2 =
            server(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01").await;
        assert!(!answers_http1(&h2).await);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(!answers_http1(&nobody).await);
    }
}
