//! One more TCP hop between the broker and its database.
//!
//! On the benchmark machine PostgreSQL is on loopback, where a round trip costs little
//! next to the work; in production it is a network hop away and every round trip of a
//! transaction is paid for. [`DatabaseHop`] forwards connections through this process
//! (on the load generator's core), so each round trip crosses one more socket pair and
//! one more wake-up: the broker's round trips per transaction show in its rate.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A forwarder to one database server; stops when dropped.
pub struct DatabaseHop {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl DatabaseHop {
    /// Starts forwarding a new local port to `database_url`'s server.
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(database_url)?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("{database_url} names no host"))?
            .to_owned();
        let port = url.port().unwrap_or(5432);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = (host.clone(), port);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    forward(client, server).await;
                });
            }
        });
        Ok(Self { address, task })
    }

    /// `database_url` with its server replaced by this hop.
    pub fn url(&self, database_url: &str) -> anyhow::Result<String> {
        let mut url = url::Url::parse(database_url)?;
        url.set_ip_host(self.address.ip())
            .map_err(|()| anyhow::anyhow!("{database_url} cannot take an IP host"))?;
        url.set_port(Some(self.address.port()))
            .map_err(|()| anyhow::anyhow!("{database_url} cannot take a port"))?;
        Ok(url.into())
    }
}

impl Drop for DatabaseHop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_cross_the_hop_both_ways_and_the_url_names_it() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).await.unwrap();
            socket.write_all(&buf).await.unwrap();
        });
        let database_url = format!("postgres://postgres@127.0.0.1:{echo_port}/bench");
        let hop = DatabaseHop::start(&database_url).await.unwrap();
        let through = hop.url(&database_url).unwrap();
        assert_eq!(
            through,
            format!("postgres://postgres@127.0.0.1:{}/bench", hop.address.port())
        );
        let mut client = TcpStream::connect(hop.address).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
    }
}
