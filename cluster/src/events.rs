//! The event log as a stream, `LASTMILE_EVENTS` (subjects
//! `lastmile.events.<partition>`): each node relays the events its engine
//! emits for the partitions it drives ([`relay_out`]), and every node's
//! subscribers read the whole stream in its order ([`relay_in`]), so a
//! subscriber may resume on any node: an event's id is its sequence in the
//! stream, the same on every node.
//!
//! An event is published under the message id `<vehicle>-<seq>`: a
//! vehicle's events are numbered by its state, so a new owner replaying
//! the log from a checkpoint emits again, under the same ids, the events
//! the old owner had published, and the stream stores them once (within
//! its duplicate window, which outlasts a checkpoint interval and a
//! failover).
//!
//! A deposed owner must emit nothing taken as current. A node publishes a
//! partition's events only while its lease is certainly held: less than
//! three quarters of a lease after the request that last renewed it
//! started. Past that (NATS slow or in election, the node frozen, the
//! partition lost) its events are dropped, and whoever drives the
//! partition next from its last checkpoint emits them again: a checkpoint
//! is written only once the events before it are published, never over
//! dropped ones, and a node that dropped a partition's events and still
//! holds it drives it again from its checkpoint. Each event carries its
//! owner's epoch in the header `Lastmile-Epoch`.
//!
//! An event as stored: the engine's [`Event`], framed (see `framed`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::{Engine, Event, partition_of};

use crate::framed;
use crate::member::MemberStats;

pub const STREAM: &str = "LASTMILE_EVENTS";
const SUBJECT: &str = "lastmile.events";
/// Events read from the engine's outbox at a time.
const READ_AT_ONCE: usize = 1024;
/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;
/// How long the stream recognises an event published again: longer than a
/// checkpoint interval plus a failover, what a new owner replays.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// The partitions whose events this node may publish now, with their
/// epoch; and those whose events it dropped since it last drove them from
/// a checkpoint ("tainted": no checkpoint of theirs may cover the dropped
/// events, so the supervisor drives them again from the last one).
#[derive(Default)]
pub(crate) struct Fence {
    leases: Mutex<HashMap<u32, (Instant, u64)>>,
    tainted: Mutex<HashSet<u32>>,
}

impl Fence {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Instant, u64)>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tainted(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.tainted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partition `p`'s lease (epoch `epoch`) was taken or renewed by a
    /// request that started at `asked`, for `lease`.
    pub(crate) fn grant(&self, p: u32, epoch: u64, asked: Instant, lease: Duration) {
        self.leases().insert(p, (asked + lease * 3 / 4, epoch));
    }

    pub(crate) fn revoke(&self, p: u32) {
        self.leases().remove(&p);
    }

    /// Partition `p` lost an event on the way to the stream.
    fn taint(&self, p: u32) {
        self.tainted().insert(p);
    }

    /// Partition `p` is driven afresh from its checkpoint.
    pub(crate) fn cleanse(&self, p: u32) {
        self.tainted().remove(&p);
    }

    /// Whether partition `p` dropped events since it was last driven from
    /// its checkpoint.
    pub(crate) fn is_tainted(&self, p: u32) -> bool {
        self.tainted().contains(&p)
    }

    /// The epoch under which partition `p`'s events may be published now;
    /// `None` (and `p` tainted) when its lease is not certainly held.
    pub(crate) fn check(&self, p: u32) -> Option<u64> {
        match self.leases().get(&p) {
            Some(&(until, epoch)) if Instant::now() < until => return Some(epoch),
            _ => {}
        }
        self.taint(p);
        None
    }
}

/// The event stream, made if missing (`max_bytes` bounds it; the oldest
/// events go first).
pub(crate) async fn open(js: &Context, replicas: usize, max_bytes: i64) -> anyhow::Result<()> {
    let config = Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT}.*")],
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        max_bytes,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        ..Config::default()
    };
    js.get_or_create_stream(config)
        .await
        .with_context(|| format!("JetStream refused the stream {STREAM}"))?;
    Ok(())
}

/// Publishes what `engine` emits, for as long as the member lives: each
/// event of a partition this node may publish for (see [`Fence`]), under
/// its id, acknowledgements awaited in order with a bounded number in
/// flight; one not acknowledged is published again under the same id for
/// `patience`, then counted lost.
pub(crate) async fn relay_out(
    js: Context,
    engine: Arc<Engine>,
    fence: Arc<Fence>,
    relayed: Arc<AtomicU64>,
    patience: Duration,
    stats: Arc<MemberStats>,
) {
    let outbox = engine.emitted().clone();
    let partitions = engine.partition_count();
    // The shards wait (a little) for the relay rather than drop events it
    // has not published, as they do for a single node's store.
    outbox.hold_until_durable();
    let mut cursor = outbox.next_id();
    relayed.store(cursor, Relaxed);
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let report = outbox.read_pending(&mut cursor, READ_AT_ONCE, &mut batch);
        stats.events_lost.fetch_add(report.lost, Relaxed);
        if batch.is_empty() {
            relayed.store(cursor, Relaxed);
            let (o, c) = (outbox.clone(), cursor);
            let _ = tokio::task::spawn_blocking(move || {
                o.wait_published(c, Duration::from_millis(100))
            })
            .await;
            continue;
        }
        let mut acks = futures_util::stream::FuturesOrdered::new();
        for (_, e) in &batch {
            let p = partition_of(e.vehicle, partitions) as u32;
            let Some(epoch) = fence.check(p) else {
                stats.events_fenced.fetch_add(1, Relaxed);
                continue;
            };
            let Ok(payload) = framed::encode(e) else {
                stats.events_lost.fetch_add(1, Relaxed);
                continue;
            };
            let payload = Bytes::from(payload);
            let id = format!("{}-{}", e.vehicle, e.seq);
            let subject = format!("{SUBJECT}.{p}");
            let js = js.clone();
            acks.push_back(async move {
                (p, publish(&js, subject, id, epoch, payload, patience).await)
            });
            if acks.len() >= IN_FLIGHT
                && let Some(done) = acks.next().await
            {
                count(done, &fence, &stats);
            }
        }
        while let Some(done) = acks.next().await {
            count(done, &fence, &stats);
        }
        relayed.store(cursor, Relaxed);
        outbox.mark_durable(cursor);
    }
}

/// Waits until the relay has dealt with every event below `upto` of the
/// engine's outbox (published, or fenced), up to `within`; false if not.
/// A checkpoint waits for it: the events before a checkpoint are then on
/// the stream, and the next owner, who replays only what is after it,
/// loses none.
pub(crate) async fn relayed_up_to(relayed: &AtomicU64, upto: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while relayed.load(Relaxed) < upto {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Counts a publish; one given up taints its partition, as a dropped
/// event does (no checkpoint over it; driven again from the last one).
fn count((p, done): (u32, Result<bool, ()>), fence: &Fence, stats: &MemberStats) {
    match done {
        Ok(false) => stats.events_published.fetch_add(1, Relaxed),
        Ok(true) => stats.events_duplicate.fetch_add(1, Relaxed),
        Err(()) => {
            fence.taint(p);
            stats.events_lost.fetch_add(1, Relaxed)
        }
    };
}

/// One event stored (true: the stream had it already), tried again under
/// its id until `patience` has passed.
async fn publish(
    js: &Context,
    subject: String,
    id: String,
    epoch: u64,
    payload: Bytes,
    patience: Duration,
) -> Result<bool, ()> {
    let started = Instant::now();
    loop {
        let msg = PublishMessage::build()
            .payload(payload.clone())
            .message_id(&id)
            .header("Lastmile-Epoch", epoch.to_string().as_str());
        let ack = match js.send_publish(subject.clone(), msg).await {
            Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        if let Some(ack) = ack {
            return Ok(ack.duplicate);
        }
        if started.elapsed() >= patience {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fills `engine`'s subscribers' bus from the stream, for as long as the
/// member lives: from the oldest event the bus has room for on, each
/// event under its stream sequence (the bus numbers them from there).
pub(crate) async fn relay_in(js: Context, engine: Arc<Engine>, stats: Arc<MemberStats>) {
    let bus = engine.events().clone();
    let capacity = engine.config().events_capacity as u64;
    let from = loop {
        match js.get_stream(STREAM).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => {
                    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
                    break first.max((last + 1).saturating_sub(capacity)).max(1);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    bus.resume_at(from);
    let mut next = from;
    loop {
        let stream = match js.get_stream(STREAM).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{SUBJECT}.*"),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                max_expires: crate::READ_STALL,
                ..OrderedConfig::default()
            })
            .await;
        let Ok(mut messages) = (match consumer {
            Ok(c) => c.messages().await.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        }) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut batch = Vec::with_capacity(1);
        loop {
            // A consumer whose pull died with a NATS server may take tens
            // of seconds to notice: past `READ_STALL` without an event
            // while the stream holds newer ones, read on with a new one.
            let m = match tokio::time::timeout(crate::READ_STALL, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(_) => break,
                Err(_) => {
                    let newer = match stream.get_info().await {
                        Ok(info) => info.state.last_sequence >= next,
                        Err(_) => false,
                    };
                    if newer {
                        break;
                    }
                    continue;
                }
            };
            let Ok(info) = m.info() else { break };
            let seq = info.stream_sequence;
            // The bus numbers events in order from where it started: a gap
            // (events the stream dropped meanwhile, one unreadable) moves
            // its numbering on, so an id stays the stream's sequence.
            bus.skip_to(seq);
            match framed::decode::<Event>(&m.payload) {
                Ok(e) => {
                    batch.push(e);
                    bus.publish(&mut batch);
                    stats.events_received.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    stats.events_unreadable.fetch_add(1, Relaxed);
                    bus.skip_to(seq + 1);
                }
            }
            next = seq + 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_engine::fleet::EventKind;
    use lastmile_roadgraph::LatLon;

    #[test]
    fn an_event_reads_back_and_garbage_does_not() {
        let e = Event {
            vehicle: 7,
            seq: 3,
            time: 1_767_225_600.0,
            kind: EventKind::Arrived,
            stop: Some(9),
            zone: None,
            pos: LatLon::new(43.7, 7.4),
            value: 12.0,
            reference: 30.0,
            window_s: Event::NO_WINDOW,
        };
        let bytes = framed::encode(&e).unwrap();
        assert_eq!(framed::decode::<Event>(&bytes), Ok(e));
        assert!(framed::decode::<Event>(&bytes[..bytes.len() - 4]).is_err());
        assert!(framed::decode::<Event>(&[]).is_err());
    }

    #[test]
    fn a_lease_held_too_long_ago_fences_its_events() {
        let fence = Fence::default();
        let lease = Duration::from_secs(4);
        fence.grant(1, 9, Instant::now(), lease);
        assert_eq!(fence.check(1), Some(9));
        assert!(!fence.is_tainted(1));
        assert_eq!(fence.check(2), None, "not this node's");
        fence.grant(1, 9, Instant::now() - lease, lease);
        assert_eq!(fence.check(1), None, "renewed a whole lease ago");
        assert!(fence.is_tainted(1), "its events were dropped");
        fence.grant(1, 10, Instant::now(), lease);
        assert_eq!(fence.check(1), Some(10));
        assert!(fence.is_tainted(1), "a renewal does not bring them back");
        fence.cleanse(1);
        assert!(!fence.is_tainted(1));
        fence.revoke(1);
        assert_eq!(fence.check(1), None);
    }
}
