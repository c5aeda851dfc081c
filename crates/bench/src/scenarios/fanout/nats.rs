//! A load-generator NATS client, as lean as the gRPC test client (`RawStream`) so that the
//! client library is not what is measured: the plain-text client protocol (docs.nats.io,
//! "Client Protocol") over one TCP connection, with only what the fan-out benchmark needs:
//! `CONNECT` (not verbose, not pedantic), `SUB`, `PUB`, `PING`/`PONG` both ways, and `MSG`
//! frames read from one growing buffer. No reconnects, no queue groups, no headers, no
//! JetStream. Also the `nats-server` process it talks to.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Debian's `nats-server` (package nats-server, 2.9).
const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// What the client says in `CONNECT`: no `+OK` after every command, no strict checks.
const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"fluxgate-bench\"}\r\n";

/// A `nats-server` child process on 127.0.0.1, killed when dropped.
pub struct NatsServer {
    child: Child,
    pub address: SocketAddr,
    pub pid: u32,
}

impl NatsServer {
    /// Starts `nats-server` (no JetStream, every other setting its default) on a free port,
    /// bound to `cpu`, and waits until it accepts connections.
    pub async fn start(cpu: usize) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("taskset")
            .arg("--cpu-list")
            .arg(cpu.to_string())
            .arg(NATS_SERVER)
            .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("could not start {NATS_SERVER}: {e}"))?;
        // taskset execs nats-server: the child's pid is the server's.
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("nats-server exited at once"))?;
        let mut server = Self {
            child,
            address,
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(address).await.is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("nats-server exited with {status} before accepting connections");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not accept connections on {address} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the server sent, one protocol frame.
pub enum Frame {
    /// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
    Msg(Vec<u8>),
    Ping,
    Pong,
    /// `INFO`, `+OK`: nothing this client acts on.
    Other,
}

/// One client connection.
pub struct Connection {
    socket: TcpStream,
    /// Bytes read and not yet parsed start at `start`.
    buffer: Vec<u8>,
    start: usize,
}

impl Connection {
    /// Connects, reads the server's `INFO`, sends `CONNECT` and `subscriptions` (`SUB`), and
    /// waits for the `PONG` that answers a `PING` sent after them: once it is back, the
    /// server has registered every subscription.
    pub async fn open(address: SocketAddr, subscriptions: &[(&str, u64)]) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(address).await?;
        socket.set_nodelay(true)?;
        let mut connection = Self {
            socket,
            buffer: Vec::with_capacity(1024),
            start: 0,
        };
        let mut hello = CONNECT.to_vec();
        for (subject, sid) in subscriptions {
            hello.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
        }
        connection.socket.write_all(&hello).await?;
        connection.round_trip().await?;
        Ok(connection)
    }

    /// Sends `PING` and reads until its `PONG`, answering the server's own `PING`s.
    /// Messages read meanwhile are dropped (only the publisher, which subscribes to
    /// nothing, calls this after the handshake).
    pub async fn round_trip(&mut self) -> anyhow::Result<()> {
        self.socket.write_all(b"PING\r\n").await?;
        loop {
            match self.next_frame().await? {
                Frame::Pong => return Ok(()),
                Frame::Ping => self.socket.write_all(b"PONG\r\n").await?,
                Frame::Msg(_) | Frame::Other => {}
            }
        }
    }

    /// `PUB <subject> <#bytes>` and the payload, in one write.
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.socket.write_all(&frame).await?;
        Ok(())
    }

    /// Reads messages until the connection ends, answering `PING`s; calls `on_message`
    /// with each payload.
    pub async fn read_messages(mut self, mut on_message: impl FnMut(&[u8])) -> anyhow::Result<()> {
        loop {
            match self.next_frame().await? {
                Frame::Msg(payload) => on_message(&payload),
                Frame::Ping => self.socket.write_all(b"PONG\r\n").await?,
                Frame::Pong | Frame::Other => {}
            }
        }
    }

    /// The next frame; `-ERR` and the end of the connection are errors.
    pub async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            if self.buffer.capacity() - self.buffer.len() < 512 {
                self.buffer.reserve(4096);
            }
            let read = self.socket.read_buf(&mut self.buffer).await?;
            anyhow::ensure!(read > 0, "nats-server closed the connection");
        }
    }

    /// One complete frame from the buffer, if there is one.
    fn parse(&mut self) -> anyhow::Result<Option<Frame>> {
        let unread = &self.buffer[self.start..];
        let Some(line_end) = unread.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(None);
        };
        let line = &unread[..line_end];
        let after_line = line_end + 2;
        let frame = if let Some(rest) = line.strip_prefix(b"MSG ") {
            let size: usize = std::str::from_utf8(rest)?
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .parse()?;
            if unread.len() < after_line + size + 2 {
                return Ok(None);
            }
            let payload = unread[after_line..after_line + size].to_vec();
            self.start += after_line + size + 2;
            return Ok(Some(Frame::Msg(payload)));
        } else if line == b"PING" {
            Frame::Ping
        } else if line == b"PONG" {
            Frame::Pong
        } else if line.starts_with(b"-ERR") {
            anyhow::bail!("nats-server: {}", String::from_utf8_lossy(line));
        } else {
            Frame::Other
        };
        self.start += after_line;
        Ok(Some(frame))
    }
}
