//! Webhook endpoints across the cluster: each endpoint's events are
//! delivered by one node at a time, read from the event stream, with the
//! endpoint's place in it kept in the cluster rather than in a node's
//! store, so that another node carries on where a dead one stopped.
//!
//! - The right to deliver is a claim in the leases bucket,
//!   `webhook.<name>`, taken and renewed like a partition's lease
//!   (compare-and-swap, expiring a lease time after its last renewal).
//!   Endpoints spread over the nodes alive by highest random weight, as
//!   partitions do; a node lets go of a claim another node alive should
//!   hold, and that node takes it. A node delivers only while its last
//!   renewal is less than three quarters of a lease old ([`Deliveries::holds`]).
//! - The place (the next stream sequence to deliver) and whether a `410`
//!   disabled the endpoint's URL are kept in the bucket `LASTMILE_HOOKS`,
//!   which does not expire. A node taking a claim takes the place too: it
//!   writes it back at the revision it read, and each later write is a
//!   compare-and-swap at the revision it wrote last, so a deposed node's
//!   late write is refused (and tells it so) rather than moving the place.
//! - Events are read from `LASTMILE_EVENTS` by an ordered consumer from
//!   the place on ([`EventReader`]). An event's id there is its stream
//!   sequence, the id every node's subscribers see: the `webhook-id` is
//!   the same whichever node sends it.
//!
//! Delivery stays at least once: a node that dies mid-batch leaves the
//! place at the batch's start, and the next holder sends the batch again
//! under the same `webhook-id`s, which receivers drop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::Event;
use tokio::task::JoinHandle;

use crate::framed;
use crate::leases::{self, Leases, RenewError};
use crate::member::MemberStats;

pub const BUCKET: &str = "LASTMILE_HOOKS";
/// Attempts at taking a place that another node keeps moving (a deposed
/// holder's last writes) before giving up for a round.
const TAKE_ATTEMPTS: usize = 8;

fn claim_key(endpoint: &str) -> String {
    format!("webhook.{endpoint}")
}

fn place_key(endpoint: &str) -> String {
    format!("{endpoint}.place")
}

fn disabled_key(endpoint: &str) -> String {
    format!("{endpoint}.disabled")
}

fn number(value: &[u8]) -> anyhow::Result<u64> {
    crate::decimal(value).context("not a number")
}

/// A claim this node holds: the revision it wrote last, and until when
/// that renewal certainly holds it.
struct Held {
    revision: u64,
    until: Instant,
}

/// An endpoint's place in the stream, as this node holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The next stream sequence to deliver.
    pub next: u64,
    revision: u64,
}

/// Why a place was not saved.
#[derive(Debug)]
pub enum SaveError {
    /// Another node took the endpoint's place: this one delivers it no more.
    Deposed,
    /// The bucket did not answer (saved again with the next batch).
    Unreachable(String),
}

/// The webhook endpoints' claims and places on the cluster.
pub struct Deliveries {
    js: Context,
    leases: Leases,
    places: Store,
    lease: Duration,
    held: Mutex<HashMap<String, Held>>,
    /// When each endpoint was last seen unclaimed and not this node's to take.
    free_since: Mutex<HashMap<String, Instant>>,
    /// Set once the node lets go of its claims (it is stopping): none is
    /// taken again.
    leaving: AtomicBool,
    stats: Arc<MemberStats>,
}

impl Deliveries {
    /// The places bucket, made if missing.
    pub(crate) async fn open(
        js: &Context,
        leases: Leases,
        lease: Duration,
        replicas: usize,
        stats: Arc<MemberStats>,
    ) -> anyhow::Result<Self> {
        let places = crate::bucket(
            js,
            kv::Config {
                bucket: BUCKET.into(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Self {
            js: js.clone(),
            leases,
            places,
            lease,
            held: Mutex::default(),
            free_since: Mutex::default(),
            leaving: AtomicBool::new(false),
            stats,
        })
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_free_since(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.free_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the endpoints named (those this node should deliver) for as
    /// long as the task runs, a round every fifth of a lease; the task
    /// ends with the member.
    pub fn hold(self: &Arc<Self>, endpoints: Vec<String>) -> JoinHandle<()> {
        let me = Arc::downgrade(self);
        let every = self.lease / 5;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(d) = Weak::upgrade(&me) else { return };
                d.round(&endpoints).await;
            }
        })
    }

    /// Whether this node may deliver `endpoint`'s events now.
    pub fn holds(&self, endpoint: &str) -> bool {
        self.lock_held()
            .get(endpoint)
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// One round: the claims held renewed, then each endpoint taken or let
    /// go as the nodes alive say.
    async fn round(&self, endpoints: &[String]) {
        if self.leaving.load(Relaxed) {
            return;
        }
        let patience = self.lease / 2;
        let me = self.leases.node().to_owned();
        let held: Vec<(String, u64)> = self
            .lock_held()
            .iter()
            .map(|(n, h)| (n.clone(), h.revision))
            .collect();
        for (name, revision) in held {
            let asked = Instant::now();
            let renewed = tokio::time::timeout(
                patience,
                self.leases
                    .renew_claim(&claim_key(&name), Bytes::from(me.clone()), revision),
            )
            .await
            .unwrap_or_else(|_| Err(RenewError::Unreachable("no answer".into())));
            match renewed {
                Ok(revision) => {
                    let until = asked + self.lease * 3 / 4;
                    self.lock_held().insert(name, Held { revision, until });
                }
                // Kept, unrenewed: `holds` turns false as its time runs out,
                // and the next round tries again.
                Err(RenewError::Unreachable(_)) => {}
                Err(RenewError::Taken) => {
                    tracing::warn!(endpoint = %name, "webhook endpoint lost to another node");
                    self.lock_held().remove(&name);
                    self.stats.webhooks_lost.fetch_add(1, Relaxed);
                }
            }
        }
        let Ok(Ok(view)) = tokio::time::timeout(patience, self.leases.view()).await else {
            return;
        };
        let nodes: Vec<String> = view.nodes.iter().map(|(n, _)| n.clone()).collect();
        if !nodes.contains(&me) {
            return;
        }
        for name in endpoints {
            let key = claim_key(name);
            let preferred = leases::preferred_for(name.as_bytes(), &nodes);
            let held = self.lock_held().get(name).map(|h| h.revision);
            if let Some(revision) = held {
                if preferred != Some(me.as_str()) {
                    tracing::info!(endpoint = %name, to = ?preferred, "webhook endpoint handed over");
                    self.lock_held().remove(name);
                    self.leases.release_claim(&key, revision).await;
                    self.stats.webhooks_handed_over.fetch_add(1, Relaxed);
                }
                continue;
            }
            if view.claims.contains_key(&key) {
                self.lock_free_since().remove(name);
                continue;
            }
            // Unclaimed: the preferred node takes it; any node does once it
            // stayed unclaimed three lease times (the preferred one cannot).
            let since = *self
                .lock_free_since()
                .entry(name.clone())
                .or_insert_with(Instant::now);
            if !(preferred == Some(me.as_str()) || since.elapsed() > 3 * self.lease) {
                continue;
            }
            let asked = Instant::now();
            if let Ok(Some(revision)) = self.leases.claim(&key, Bytes::from(me.clone())).await {
                tracing::info!(endpoint = %name, "webhook endpoint taken");
                self.lock_free_since().remove(name);
                let until = asked + self.lease * 3 / 4;
                self.lock_held()
                    .insert(name.clone(), Held { revision, until });
                self.stats.webhooks_taken.fetch_add(1, Relaxed);
            }
        }
    }

    /// Gives every claim up now (a clean shutdown, after the endpoints
    /// saved their places): the others take them at once.
    pub async fn let_go(&self) {
        self.leaving.store(true, Relaxed);
        let held: Vec<(String, Held)> = self.lock_held().drain().collect();
        for (name, h) in held {
            self.leases
                .release_claim(&claim_key(&name), h.revision)
                .await;
        }
    }

    /// Takes `endpoint`'s place: where its delivery stands. An endpoint
    /// never delivered starts at the stream's end, not its first week.
    pub async fn take_place(&self, endpoint: &str) -> anyhow::Result<Place> {
        let key = place_key(endpoint);
        for _ in 0..TAKE_ATTEMPTS {
            match self.places.entry(&key).await? {
                Some(e) if e.operation == Operation::Put => {
                    let next = number(&e.value)
                        .with_context(|| format!("{endpoint}'s place in {BUCKET}"))?;
                    // Written back at the revision read: a deposed holder's
                    // next write is refused from here on.
                    match self.places.update(&key, e.value.clone(), e.revision).await {
                        Ok(revision) => return Ok(Place { next, revision }),
                        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                _ => {
                    let next = self.end().await?;
                    let value = Bytes::from(next.to_string());
                    match self.places.create(&key, value).await {
                        Ok(revision) => return Ok(Place { next, revision }),
                        Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
        }
        anyhow::bail!("{endpoint}'s place kept moving: another node still delivers it")
    }

    /// Moves `place` on to `next`.
    pub async fn save_place(
        &self,
        endpoint: &str,
        place: &mut Place,
        next: u64,
    ) -> Result<(), SaveError> {
        let value = Bytes::from(next.to_string());
        match self
            .places
            .update(place_key(endpoint), value, place.revision)
            .await
        {
            Ok(revision) => {
                *place = Place { next, revision };
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(SaveError::Deposed),
            Err(e) => Err(SaveError::Unreachable(e.to_string())),
        }
    }

    /// The mark of the URL a `410` disabled for `endpoint`, if any.
    pub async fn disabled(&self, endpoint: &str) -> anyhow::Result<Option<u64>> {
        match self.places.entry(disabled_key(endpoint)).await? {
            Some(e) if e.operation == Operation::Put => Ok(number(&e.value).ok()),
            _ => Ok(None),
        }
    }

    /// Keeps `endpoint` disabled for the URL marked `mark`.
    pub async fn disable(&self, endpoint: &str, mark: u64) -> anyhow::Result<()> {
        self.places
            .put(disabled_key(endpoint), Bytes::from(mark.to_string()))
            .await?;
        Ok(())
    }

    /// The sequence the next event will have.
    pub async fn end(&self) -> anyhow::Result<u64> {
        stream_end(&self.js).await
    }

    /// A reader of the event stream.
    pub fn reader(&self) -> EventReader {
        EventReader {
            js: self.js.clone(),
            stats: self.stats.clone(),
            next: 0,
            messages: None,
            idle_since: None,
        }
    }
}

/// The sequence the event stream's next event will have.
async fn stream_end(js: &Context) -> anyhow::Result<u64> {
    let stream = js.get_stream(crate::events::STREAM).await?;
    Ok(stream.get_info().await?.state.last_sequence + 1)
}

/// What one [`EventReader::read`] got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// The sequence after the last one read.
    pub next: u64,
    /// Events the stream holds after it.
    pub pending: u64,
}

/// Reads the event stream in order from a sequence on, keeping one
/// ordered consumer while the reads follow on from each other.
pub struct EventReader {
    js: Context,
    stats: Arc<MemberStats>,
    /// The sequence `messages` yields next.
    next: u64,
    messages: Option<Ordered>,
    /// Since when reads found nothing.
    idle_since: Option<Instant>,
}

impl EventReader {
    /// Up to `max` events from sequence `from` on, as many as the stream
    /// holds now, waiting up to `wait` for the first: each with its
    /// sequence and when the stream stored it (ms since the epoch).
    /// Events the stream dropped before they were read (its size bound)
    /// are counted and passed over; so are unreadable ones.
    pub async fn read(
        &mut self,
        from: u64,
        max: usize,
        wait: Duration,
        out: &mut Vec<(u64, Event, i64)>,
    ) -> anyhow::Result<Read> {
        let from = from.max(1);
        if self.messages.is_none() || self.next != from {
            self.messages = None;
            let stream = self.js.get_stream(crate::events::STREAM).await?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    max_expires: crate::READ_STALL,
                    ..OrderedConfig::default()
                })
                .await?;
            self.messages = Some(consumer.messages().await?);
            self.next = from;
        }
        let mut read = Read {
            next: from,
            pending: 0,
        };
        let Some(messages) = self.messages.as_mut() else {
            return Ok(read);
        };
        let mut first = true;
        let before = out.len();
        while out.len() < max {
            // The first event is waited for; the rest are taken while the
            // consumer has them at hand.
            let patience = if first {
                wait
            } else {
                Duration::from_millis(5)
            };
            first = false;
            let m = match tokio::time::timeout(patience, messages.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => {
                    self.messages = None;
                    return Err(anyhow::anyhow!("reading {}: {e}", crate::events::STREAM));
                }
                Ok(Some(Ok(m))) => m,
            };
            let (seq, pending, stored_ms) = match m.info() {
                Ok(i) => (
                    i.stream_sequence,
                    i.pending,
                    (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
                ),
                Err(e) => {
                    self.messages = None;
                    return Err(anyhow::anyhow!("an event without its sequence: {e}"));
                }
            };
            if seq > read.next {
                self.stats
                    .webhook_events_skipped
                    .fetch_add(seq - read.next, Relaxed);
            }
            match framed::decode::<Event>(&m.payload) {
                Ok(e) => out.push((seq, e, stored_ms)),
                Err(_) => {
                    self.stats.webhook_events_unreadable.fetch_add(1, Relaxed);
                }
            }
            read = Read {
                next: seq + 1,
                pending,
            };
        }
        self.next = read.next;
        // Nothing for a while though the stream holds more: the consumer
        // may have lost its pull with a NATS server; a new one reads on.
        if out.len() == before && read.next == from {
            let since = *self.idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > crate::READ_STALL
                && stream_end(&self.js).await.is_ok_and(|end| end > from)
            {
                self.messages = None;
                self.idle_since = None;
            }
        } else {
            self.idle_since = None;
        }
        Ok(read)
    }
}
