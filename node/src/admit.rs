//! The rules a ping keeps before the engine sees it, the same at every
//! door (QUIC, the OsmAnd HTTP door): a time after 2000-01-01, no further
//! ahead of the wall clock than `max_future_s`, no further behind the
//! event-time watermark than `max_past_s`, and a believable speed. Then
//! the hand-over to the engine, which waits while a shard queue is full or
//! memory is over its bound rather than drop what a client was told is
//! accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;

use crate::runtime::Node;

/// Why a well-formed ping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Before 2000-01-01: a device whose clock was never set (1970, 1980)
    /// or rolled over (GPS week rollover lands in 1999).
    Time,
    /// Further ahead of the wall clock than `max_future_s`.
    Future,
    /// Further behind the newest accepted ping than `max_past_s`.
    Past,
    /// Faster than `max_speed_mps`.
    Speed,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Time => "time before 2000-01-01",
            Self::Future => "time too far ahead of the server's clock",
            Self::Past => "time too far behind the newest accepted ping",
            Self::Speed => "speed above the server's limit",
        }
    }
}

/// The bounds a ping's time and speed must keep, fixed for one batch.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    earliest: f64,
    latest: f64,
    max_speed: f32,
}

impl Bounds {
    pub fn now(node: &Node) -> Self {
        let l = &node.config.limits;
        let earliest = node
            .clock
            .watermark()
            .map_or(crate::dispatch::MIN_TIME_S, |w| {
                (w - l.max_past_s).max(crate::dispatch::MIN_TIME_S)
            });
        Self {
            earliest,
            latest: crate::clock::wall_s() + l.max_future_s,
            max_speed: l.max_speed_mps as f32,
        }
    }

    pub fn check(&self, p: &Ping) -> Result<(), Reject> {
        if p.time < crate::dispatch::MIN_TIME_S {
            Err(Reject::Time)
        } else if p.time > self.latest {
            Err(Reject::Future)
        } else if p.time < self.earliest {
            Err(Reject::Past)
        } else if p.speed.is_some_and(|s| s > self.max_speed) {
            Err(Reject::Speed)
        } else {
            Ok(())
        }
    }
}

/// The engine did not take every ping within the patience given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy {
    /// Taken before giving up (they stay taken).
    pub accepted: usize,
}

/// Waits that double from half a millisecond to 20 ms, up to a deadline.
struct Backoff {
    wait: Duration,
    deadline: Option<Instant>,
}

impl Backoff {
    /// Waits once; false when that would pass the deadline.
    async fn pause(&mut self, waits: &AtomicU64) -> bool {
        if self
            .deadline
            .is_some_and(|d| Instant::now() + self.wait > d)
        {
            return false;
        }
        waits.fetch_add(1, Relaxed);
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_millis(20));
        true
    }
}

/// Hands `pings` to the engine. While memory is over its bound, or a shard
/// queue is full, it waits (counting each wait in `waits`) and tries again
/// what was refused; `patience` bounds the wait (none: until taken). In a
/// cluster, they go on the cluster's log instead, and are taken once it
/// holds them (a refusal then means the cluster did not acknowledge them
/// within its patience: some may be stored, and a retry's duplicates are
/// dropped by the engine).
pub async fn offer(
    node: &Node,
    pings: &[(VehicleId, Ping)],
    patience: Option<Duration>,
    waits: &AtomicU64,
) -> Result<usize, Busy> {
    if let Some(member) = node.cluster.get() {
        // Taken once the cluster's log holds them, replicated; the
        // engine of the partition's owner reads them from there.
        return member
            .publish(pings)
            .await
            .map_err(|_| Busy { accepted: 0 });
    }
    let mut backoff = Backoff {
        wait: Duration::from_micros(500),
        deadline: patience.map(|p| Instant::now() + p),
    };
    while node.memory.over() {
        if !backoff.pause(waits).await {
            return Err(Busy { accepted: 0 });
        }
    }
    let (mut refused, mut retry) = (Vec::new(), Vec::new());
    let mut accepted = node.sink.offer(pings, &mut refused);
    while !refused.is_empty() {
        if !backoff.pause(waits).await {
            return Err(Busy { accepted });
        }
        std::mem::swap(&mut retry, &mut refused);
        refused.clear();
        accepted += node.sink.offer(&retry, &mut refused);
    }
    Ok(accepted)
}

/// The lossy path (datagrams): hands `pings` to the engine without waiting;
/// returns (accepted, shed). In a cluster they are published in the
/// background, at most [`MAX_LOSSY_IN_FLIGHT`] batches at a time (beyond,
/// shed and counted), and counted accepted once sent.
pub fn offer_lossy(node: &Arc<Node>, pings: &[(VehicleId, Ping)]) -> (usize, usize) {
    let Some(member) = node.cluster.get() else {
        return node.sink.submit_lossy(pings);
    };
    static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
    if IN_FLIGHT.fetch_add(1, Relaxed) >= MAX_LOSSY_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Relaxed);
        return (0, pings.len());
    }
    let (member, batch) = (member.clone(), pings.to_vec());
    tokio::spawn(async move {
        let _ = member.publish(&batch).await;
        IN_FLIGHT.fetch_sub(1, Relaxed);
    });
    (pings.len(), 0)
}

/// Datagram batches being published at once, at most.
pub const MAX_LOSSY_IN_FLIGHT: u64 = 1024;
