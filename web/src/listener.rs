//! The TCP listener each HTTP door serves from (the pages and API, the
//! driver apps' door): HTTPS with a certificate, else plain HTTP; open
//! connections bounded ([`limit`](crate::limit)); the peer's address handed
//! to the handlers; and a graceful end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use axum::Router;

use crate::{limit, tls};

/// The address a request came from (the handlers' `ConnectInfo`), for
/// either listener.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, limit::Limited<L>>>
    for Peer
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    fn connect_info(s: axum::serve::IncomingStream<'_, limit::Limited<L>>) -> Self {
        Self(*s.remote_addr())
    }
}

pub enum Listener {
    Plain(limit::Limited<tokio::net::TcpListener>),
    Tls(limit::Limited<tls::TlsListener>),
}

impl Listener {
    /// Binds `addr`: HTTPS with `tls`, plain HTTP without; at most
    /// `max_connections` open at once.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        max_connections: usize,
        counts: Arc<limit::Counts>,
        tls_failed: Arc<AtomicU64>,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("HTTP listener on {addr}"))?;
        Ok(match tls {
            Some(config) => Self::Tls(limit::Limited::new(
                tls::TlsListener::new(tcp, config, tls_failed)?,
                max_connections,
                counts,
            )),
            None => Self::Plain(limit::Limited::new(tcp, max_connections, counts)),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        use axum::serve::Listener as _;
        Ok(match self {
            Self::Plain(l) => l.local_addr()?,
            Self::Tls(l) => l.local_addr()?,
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Plain(_) => "http",
            Self::Tls(_) => "https",
        }
    }

    /// Serves `app` until `closing` resolves, then lets open requests end.
    pub async fn serve(
        self,
        app: Router,
        closing: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The peer's address reaches the handlers: the guard limits
        // guessing per address.
        let app = app.into_make_service_with_connect_info::<Peer>();
        match self {
            Self::Plain(l) => axum::serve(l, app).with_graceful_shutdown(closing).await?,
            Self::Tls(l) => axum::serve(l, app).with_graceful_shutdown(closing).await?,
        }
        Ok(())
    }
}
