//! A bound on the HTTP side's open connections (`[limits] max_connections`,
//! counted apart from the QUIC side's): past it, the next connection waits
//! in the kernel's backlog until one closes, and the wait is counted. Each
//! connection carries its place and gives it back when dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counters of the bound.
#[derive(Default)]
pub struct Counts {
    pub open: AtomicU64,
    /// Connections that found every place taken and waited.
    pub waited: AtomicU64,
}

/// `inner`, accepting at most `max` connections open at once.
pub struct Limited<L> {
    inner: L,
    places: Arc<Semaphore>,
    counts: Arc<Counts>,
}

impl<L> Limited<L> {
    pub fn new(inner: L, max: usize, counts: Arc<Counts>) -> Self {
        Self {
            inner,
            places: Arc::new(Semaphore::new(max.max(1))),
            counts,
        }
    }
}

impl<L: Listener> Listener for Limited<L>
where
    L::Io: Unpin,
{
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let place = match self.places.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.counts.waited.fetch_add(1, Relaxed);
                match self.places.clone().acquire_owned().await {
                    Ok(p) => p,
                    // Never closed; if it were, accept nothing more.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let (io, addr) = self.inner.accept().await;
        self.counts.open.fetch_add(1, Relaxed);
        let counted = Counted {
            io,
            _place: place,
            counts: self.counts.clone(),
        };
        (counted, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding its place.
pub struct Counted<T> {
    io: T,
    _place: OwnedSemaphorePermit,
    counts: Arc<Counts>,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
