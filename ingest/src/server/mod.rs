//! The QUIC server behind `lastmile serve`: accepts connections (bounded),
//! authenticates each with its HELLO, then serves its ping streams,
//! datagrams and request streams ([`connection`]). The engine, its
//! background threads and everything the front ends share are the node's
//! (`lastmile_node::Node`).

mod commands;
mod connection;
pub mod metrics;
mod pings;
mod requests;
mod session;
pub mod stats;
mod subscribe;

use guard::Refusal;
pub use lastmile_node::guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use lastmile_engine::fleet::Histogram;

use crate::protocol::ErrorCode;
use crate::tls::Identity;
use lastmile_node::Node;
pub use lastmile_node::clock::{self, Clock};
pub use lastmile_node::durable::{self, Durable};
pub use lastmile_node::memory;
pub use lastmile_node::sink::{self, Sink};
pub use stats::ServerStats;

/// What every connection task shares: the node (configuration, tokens,
/// names, engine, store, clock; `Shared` derefs to it) and the QUIC side's
/// own counters and limits.
pub struct Shared {
    pub node: Arc<Node>,
    pub stats: ServerStats,
    connections: AtomicUsize,
    subscribers: AtomicUsize,
    /// Time to answer a request (queries and commands), for the metrics.
    request_latency: std::sync::Mutex<Histogram>,
}

impl std::ops::Deref for Shared {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Shared {
    pub fn record_request(&self, d: Duration) {
        self.request_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(d);
    }

    /// A copy of the request latency histogram.
    pub fn request_latency(&self) -> Histogram {
        self.request_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counters of the front end followed by the engine's, for STATS.
    pub fn stats_snapshot(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.push((
            "connections_open".into(),
            self.connections.load(Relaxed) as u64,
        ));
        out.push((
            "subscribers_open".into(),
            self.subscribers.load(Relaxed) as u64,
        ));
        out.extend(self.node.stats());
        out
    }
}

/// The server's endpoint on a UDP socket with large kernel buffers: bursts
/// from many connections at once (datagrams above all) would otherwise
/// overflow the default ~200 KB and be dropped before anyone sees them.
/// The kernel caps the size at `net.core.rmem_max` / `wmem_max`.
fn bind_endpoint(
    config: quinn::ServerConfig,
    addr: SocketAddr,
    buffer: usize,
) -> anyhow::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.into(),
        runtime,
    )?)
}

pub struct Server {
    endpoint: quinn::Endpoint,
    /// The metrics and health port, when configured.
    metrics: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    fingerprint: String,
}

impl Server {
    /// Binds the endpoint and starts the background threads. Call inside a
    /// tokio runtime.
    pub fn bind(node: Arc<Node>, identity: Identity) -> anyhow::Result<Self> {
        let config = &node.config;
        let fingerprint = identity.fingerprint();
        let server_config = crate::tls::server_config(identity, &config.limits)?;
        let endpoint = bind_endpoint(server_config, config.listen, config.limits.udp_buffer_bytes)
            .with_context(|| format!("listening on {}", config.listen))?;
        let shared = Arc::new(Shared {
            node,
            stats: ServerStats::default(),
            connections: AtomicUsize::new(0),
            subscribers: AtomicUsize::new(0),
            request_latency: std::sync::Mutex::new(Histogram::default()),
        });
        let metrics = match shared.config.metrics_listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("metrics listener on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        Ok(Self {
            endpoint,
            metrics,
            shared,
            fingerprint,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Where `/metrics` and `/health` are served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves, then closes every connection with
    /// `shutting_down` and waits (briefly) for the peers to be told. The
    /// node's drain (process, persist, checkpoint) is its owner's to call.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let metrics = match self.metrics.take() {
            Some(l) => Some(tokio::spawn(metrics::serve(
                tokio::net::TcpListener::from_std(l)?,
                self.shared.clone(),
            ))),
            None => None,
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = self.shared.clone();
                    if shared.connections.load(Relaxed) >= shared.config.limits.max_connections {
                        ServerStats::add(&shared.stats.connections_refused, 1);
                        incoming.refuse();
                        continue;
                    }
                    let ip = incoming.remote_address().ip();
                    // An address that presented wrong tokens proves it is
                    // really there (a stateless Retry) before it costs a
                    // handshake: a spoofed source cannot fill its bucket.
                    if shared.guard.suspicious(ip) && incoming.may_retry() {
                        ServerStats::add(&shared.stats.retries_sent, 1);
                        let _ = incoming.retry();
                        continue;
                    }
                    if let Err(Refusal::TooManyConnections) = shared.guard.admit(ip) {
                        ServerStats::add(&shared.stats.connections_refused_address, 1);
                        incoming.refuse();
                        continue;
                    }
                    shared.connections.fetch_add(1, Relaxed);
                    tokio::spawn(async move {
                        connection::serve(shared.clone(), incoming).await;
                        shared.connections.fetch_sub(1, Relaxed);
                        shared.guard.release(ip);
                    });
                }
            }
        }
        if let Some(m) = metrics {
            m.abort();
        }
        self.endpoint
            .close((ErrorCode::ShuttingDown as u32).into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        Ok(())
    }
}
