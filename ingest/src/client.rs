//! The async Rust client: connect and authenticate, send pings on streams
//! (acknowledged) or as datagrams, make requests, follow an event
//! subscription. `lastmile replay`, `eta`, `watch` and the dispatcher
//! commands are built on it; so are the end-to-end tests.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;

use crate::io::{ReadFrame, read_frame};
use crate::protocol::{
    Ack, ErrorCode, FrameType, Hello, MAX_FRAME_LEN, PingBatch, PingRecord, Request, Response,
    VERSION, Version, Welcome, write_frame,
};
use crate::tls::{Trust, client_config};

/// The server answered with an ERROR frame (or closed with an error code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server refused ({}): {message}", ErrorCode::from_u16(*code).map_or("unknown", ErrorCode::as_str))]
pub struct ServerError {
    pub code: u16,
    pub message: String,
}

impl ServerError {
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }
}

/// What comes back on the control stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    Ack(Ack),
    Error(ServerError),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Name the certificate must carry (with `Trust::Ca`).
    pub server_name: String,
    pub trust: Trust,
    pub token: String,
    /// Per-stream receive window, bytes: how far the server may run ahead
    /// of a reader (an event subscriber) before flow control holds it.
    pub stream_window: u32,
    /// The highest protocol version to offer (tests of version 1 lower it).
    pub version: u16,
}

impl Target {
    /// `host:port` (default port 4433), resolved.
    pub fn new(server: &str, trust: Trust, token: String) -> anyhow::Result<Self> {
        let with_port = if server
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            server.to_string()
        } else {
            format!("{server}:4433")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {server}"))?
            .next()
            .with_context(|| format!("{server} has no address"))?;
        let host = with_port.rsplit_once(':').map_or("localhost", |(h, _)| h);
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Self {
            addr,
            server_name,
            trust,
            token,
            stream_window: 8 << 20,
            version: VERSION,
        })
    }
}

pub struct Client {
    conn: Connection,
    _endpoint: Endpoint,
    pub welcome: Welcome,
    /// The version the server agreed to.
    pub version: Version,
    control: Option<mpsc::Receiver<Control>>,
}

impl Client {
    /// Connects, authenticates, and starts reading the control stream.
    pub async fn connect(t: &Target) -> anyhow::Result<Self> {
        let bind: SocketAddr = if t.addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("literal address");
        let mut endpoint = Endpoint::client(bind).context("opening a UDP socket")?;
        endpoint.set_default_client_config(client_config(&t.trust, t.stream_window)?);
        let conn = endpoint
            .connect(t.addr, &t.server_name)?
            .await
            .with_context(|| format!("connecting to {}", t.addr))?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut buf = Vec::new();
        Hello {
            version: t.version,
            token: t.token.clone(),
        }
        .encode(&mut buf);
        send.write_all(&buf).await?;
        let welcome = match read_frame(&mut recv, MAX_FRAME_LEN, &mut buf).await {
            ReadFrame::Frame(h) if h.kind == FrameType::Welcome as u16 => Welcome::decode(&buf)?,
            ReadFrame::Frame(h) if h.kind == FrameType::Error as u16 => {
                match Response::decode(Version::V1, h.kind, &buf)? {
                    Response::Error { code, message } => {
                        return Err(ServerError { code, message }.into());
                    }
                    _ => bail!("bad ERROR frame"),
                }
            }
            other => bail!("no WELCOME from the server: {other:?}"),
        };
        let version = Version::from_u16(welcome.version)
            .filter(|v| *v as u16 <= t.version)
            .with_context(|| format!("the server chose protocol version {}", welcome.version))?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(read_control(recv, tx, send));
        Ok(Self {
            conn,
            _endpoint: endpoint,
            welcome,
            version,
            control: Some(rx),
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The acknowledgements and ping-side errors (once; the caller keeps it).
    pub fn take_control(&mut self) -> mpsc::Receiver<Control> {
        self.control.take().expect("control receiver taken twice")
    }

    /// Opens a stream for ping batches.
    pub async fn ping_stream(&self) -> anyhow::Result<PingStream> {
        Ok(PingStream {
            send: self.conn.open_uni().await?,
            buf: Vec::new(),
        })
    }

    /// Sends pings as one datagram (no acknowledgement; may be lost). Waits
    /// for room in the send buffer rather than dropping.
    pub async fn send_datagram(&self, pings: &[PingRecord]) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(8 + 16 + 32 * pings.len());
        write_frame(&mut buf, FrameType::Pings, |w| {
            PingBatch::encode(0, pings, w)
        });
        self.conn.send_datagram_wait(Bytes::from(buf)).await?;
        Ok(())
    }

    /// Largest ping count per datagram on this connection now.
    pub fn datagram_capacity(&self) -> usize {
        self.conn.max_datagram_size().map_or(0, |d| {
            PingBatch::capacity(d.saturating_sub(crate::protocol::FRAME_HEADER_LEN))
        })
    }

    /// One request on its own stream, one response.
    pub async fn request(&self, req: &Request) -> anyhow::Result<Response> {
        request_on(&self.conn, self.version, req).await
    }

    /// A request whose answer must not be an error.
    pub async fn call(&self, req: &Request) -> anyhow::Result<Response> {
        call_on(&self.conn, self.version, req).await
    }

    /// Gives this connection's ping aliases their vehicles (version 2):
    /// ping records then carry the alias where the vehicle's id goes.
    pub async fn bind(&self, vehicles: Vec<(u64, String)>) -> anyhow::Result<()> {
        match self.call(&Request::Bind { vehicles }).await? {
            Response::Ok => Ok(()),
            other => bail!("unexpected answer to BIND: {other:?}"),
        }
    }

    /// Opens an event subscription (the SUBSCRIBE request is in `req`).
    pub async fn subscribe(&self, req: &Request) -> anyhow::Result<Subscription> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let mut buf = Vec::new();
        req.encode(self.version, &mut buf);
        send.write_all(&buf).await?;
        let next_id = match read_response(&mut recv, self.version, &mut buf).await? {
            Response::Subscribed { next_id } => next_id,
            Response::Error { code, message } => return Err(ServerError { code, message }.into()),
            other => bail!("unexpected answer to SUBSCRIBE: {other:?}"),
        };
        Ok(Subscription {
            _send: send,
            recv,
            buf,
            next_id,
            version: self.version,
        })
    }

    /// Closes the connection politely.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

async fn read_response(
    recv: &mut RecvStream,
    v: Version,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Response> {
    match read_frame(recv, MAX_FRAME_LEN, buf).await {
        ReadFrame::Frame(h) => Ok(Response::decode(v, h.kind, buf)?),
        other => bail!("no response: {other:?}"),
    }
}

async fn read_control(mut recv: RecvStream, tx: mpsc::Sender<Control>, _send: SendStream) {
    let mut buf = Vec::new();
    while let ReadFrame::Frame(h) = read_frame(&mut recv, MAX_FRAME_LEN, &mut buf).await {
        let item = if h.kind == FrameType::Ack as u16 {
            match Ack::decode(&buf) {
                Ok(a) => Control::Ack(a),
                Err(_) => break,
            }
        } else {
            // An ERROR frame is the same in every version.
            match Response::decode(Version::V1, h.kind, &buf) {
                Ok(Response::Error { code, message }) => {
                    Control::Error(ServerError { code, message })
                }
                _ => break,
            }
        };
        if tx.send(item).await.is_err() {
            break;
        }
    }
}

/// One request on its own stream of `conn`, one response (for tasks that
/// share a client's connection).
pub async fn request_on(conn: &Connection, v: Version, req: &Request) -> anyhow::Result<Response> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut buf = Vec::new();
    req.encode(v, &mut buf);
    send.write_all(&buf).await?;
    send.finish()?;
    read_response(&mut recv, v, &mut buf).await
}

/// [`request_on`] whose answer must not be an error.
pub async fn call_on(conn: &Connection, v: Version, req: &Request) -> anyhow::Result<Response> {
    match request_on(conn, v, req).await? {
        Response::Error { code, message } => Err(ServerError { code, message }.into()),
        r => Ok(r),
    }
}

/// A unidirectional stream of PINGS frames.
pub struct PingStream {
    send: SendStream,
    buf: Vec<u8>,
}

impl PingStream {
    /// Sends one batch; its ACK arrives on the control channel.
    pub async fn send(&mut self, batch_id: u64, pings: &[PingRecord]) -> anyhow::Result<()> {
        self.buf.clear();
        write_frame(&mut self.buf, FrameType::Pings, |w| {
            PingBatch::encode(batch_id, pings, w)
        });
        self.send.write_all(&self.buf).await?;
        Ok(())
    }

    /// Raw bytes (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.send.write_all(bytes).await?;
        Ok(())
    }

    /// Ends the stream after everything sent.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.send.finish()?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.send.stopped()).await;
        Ok(())
    }
}

/// An open event subscription.
pub struct Subscription {
    _send: SendStream,
    recv: RecvStream,
    buf: Vec<u8>,
    /// The id of the first event this subscription may deliver.
    pub next_id: u64,
    version: Version,
}

impl Subscription {
    /// The next EVENTS or LOST frame; `None` when the server ended it.
    pub async fn next(&mut self) -> anyhow::Result<Option<Response>> {
        match read_frame(&mut self.recv, MAX_FRAME_LEN, &mut self.buf).await {
            ReadFrame::Frame(h) => Ok(Some(Response::decode(self.version, h.kind, &self.buf)?)),
            ReadFrame::End => Ok(None),
            other => bail!("event stream broken: {other:?}"),
        }
    }
}
