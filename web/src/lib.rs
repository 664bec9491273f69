//! `lastmile-web` is the HTTP side of `lastmile serve`: a JSON API for what
//! the QUIC protocol answers ([`api`]), dispatchers' commands
//! ([`commands`]) and a fleet's zones ([`zones`]), and the event log as
//! Server-Sent Events ([`feed`]), over the same node (`lastmile_node::Node`): the same
//! tokens and roles, the same fleets and names, the same scope rules (a
//! name another fleet has answers exactly as a name nobody has), and
//! counters of its own ([`HttpStats`]). The binary protocol stays the fast
//! path; this side is for pages, dashboards and systems that speak HTTP.

mod api;
mod caller;
mod commands;
mod error;
mod feed;
mod fleet;
mod json;
mod limit;
mod listener;
pub mod osmand;
mod pages;
mod roads;
pub mod tls;
mod upkeep;
mod zones;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Router;
use lastmile_node::Node;

pub use error::ApiError;
use listener::Listener;
pub use listener::Peer;

/// The HTTP side's counters (`http_*` in the server's statistics).
#[derive(Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    /// Answered with an error status (4xx, 5xx).
    pub errors: AtomicU64,
    /// No token, or one no fleet has.
    pub unauthenticated: AtomicU64,
    pub forbidden: AtomicU64,
    pub feeds_opened: AtomicU64,
    pub feeds_refused: AtomicU64,
    pub feeds_open: AtomicU64,
    pub events_sent: AtomicU64,
    /// Vehicles sent to live maps (`/api/v1/fleet/live`).
    pub fleet_updates: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: Arc<AtomicU64>,
    /// Open connections, and those that waited for a place.
    pub connections: Arc<limit::Counts>,
}

impl HttpStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Name and value of every counter.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let c = |a: &AtomicU64| a.load(Relaxed);
        [
            ("http_requests", c(&self.requests)),
            ("http_errors", c(&self.errors)),
            ("http_unauthenticated", c(&self.unauthenticated)),
            ("http_forbidden", c(&self.forbidden)),
            ("http_feeds_opened", c(&self.feeds_opened)),
            ("http_feeds_refused", c(&self.feeds_refused)),
            ("http_feeds_open", c(&self.feeds_open)),
            ("http_events_sent", c(&self.events_sent)),
            ("http_fleet_updates", c(&self.fleet_updates)),
            ("http_tls_handshakes_failed", c(&self.tls_failed)),
            ("http_connections_open", c(&self.connections.open)),
            ("http_connections_waited", c(&self.connections.waited)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// What every handler shares.
pub struct Web {
    pub node: Arc<Node>,
    pub stats: HttpStats,
    /// Set when the server stops: open feeds end, so the graceful shutdown
    /// does not wait on them forever.
    closing: tokio::sync::watch::Sender<bool>,
    /// The map's road layer, once built ([`roads::prepare`]).
    roads: roads::Slot,
}

impl Web {
    /// The engine, unless the server only counts pings.
    pub fn engine(&self) -> Result<&Arc<lastmile_engine::fleet::Engine>, ApiError> {
        self.node.sink.engine().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "this server counts pings only (no engine)",
            )
        })
    }
}

/// The HTTP listener of a node: HTTPS with a certificate, else plain.
pub struct HttpServer {
    listener: Listener,
    web: Arc<Web>,
}

/// Largest request body: commands with a route of stops fit well inside.
const MAX_BODY: usize = 1 << 20;

impl HttpServer {
    /// Binds `addr`, serving HTTPS with `tls` ([`tls::server_config`]) or
    /// plain HTTP without. Call inside a tokio runtime.
    pub async fn bind(
        node: Arc<Node>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let stats = HttpStats::default();
        let listener = Listener::bind(
            addr,
            tls,
            node.config.limits.max_connections,
            stats.connections.clone(),
            stats.tls_failed.clone(),
        )
        .await?;
        let web = Arc::new(Web {
            node,
            stats,
            closing: tokio::sync::watch::Sender::new(false),
            roads: roads::Slot::new(),
        });
        roads::prepare(&web);
        // Weak: the node must not keep its front end alive.
        let w = Arc::downgrade(&web);
        web.node.add_stats(Arc::new(move || {
            w.upgrade().map_or_else(Vec::new, |w| w.stats.snapshot())
        }));
        Ok(Self { listener, web })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        self.listener.scheme()
    }

    /// The shared state, for the statistics.
    pub fn web(&self) -> &Arc<Web> {
        &self.web
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let web = self.web.clone();
        let closing = async move {
            shutdown.await;
            web.closing.send_replace(true);
        };
        self.listener.serve(router(self.web), closing).await
    }
}

/// Every route of the HTTP side.
pub fn router(web: Arc<Web>) -> Router {
    use tower_http::compression::CompressionLayer;
    use tower_http::limit::RequestBodyLimitLayer;
    Router::new()
        .merge(api::routes())
        .merge(commands::routes())
        .merge(feed::routes())
        .merge(roads::routes())
        .merge(fleet::routes())
        .merge(zones::routes())
        .merge(upkeep::routes())
        .merge(pages::routes())
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        // Pages, scripts and road tiles shrink several times; event
        // streams are never compressed (they must flush per event).
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            error::count,
        ))
        .with_state(web)
}
