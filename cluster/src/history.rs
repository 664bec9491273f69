//! Vehicles' matched paths on a cluster, for `GET_HISTORY` and the HTTP
//! history from any node: the stream `LASTMILE_HISTORY`, whose subject
//! `lastmile.history.<vehicle>.<day>` holds chunks of the vehicle's
//! finalised path pieces that start on that day (event time, UTC days since
//! 1970). A subject per vehicle and day lets a reader fetch the days a
//! window spans and no other vehicle's; the stream keeps chunks for the
//! history retention (by when they were written) and bounded bytes.
//!
//! Each partition's owner writes its vehicles' pieces ([`Writer`]) before
//! each checkpoint of the partition (a chunk per vehicle per checkpoint
//! interval: the stream's cost is per message), so what a checkpoint
//! holds has its history on the stream; the next owner drives the
//! partition again from that checkpoint and writes the pieces since then
//! a second time, which readers leave out
//! ([`lastmile_engine::fleet::path_history::settle`]). A history asked of
//! the owner has its newest pieces written first; asked of another node,
//! it is up to a checkpoint interval behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::{Config, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::path_history::{self, decode_chunk, encode_chunk, is_chunk};
use lastmile_engine::fleet::{Engine, PathPiece, VehicleId, partition_of};

use crate::events::Fence;
use crate::member::MemberStats;

pub const STREAM: &str = "LASTMILE_HISTORY";
const SUBJECT: &str = "lastmile.history";
/// Chunks awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;
/// Pieces a writer holds at most while the stream does not take them (a
/// NATS outage); beyond, the oldest are dropped and counted.
const MAX_HELD: usize = 1 << 22;
/// Longest wait for one message of a day being read (a server's loss
/// moves the consumer to another).
const READ_WAIT: Duration = Duration::from_secs(5);

/// How the history stream is bounded.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// Chunks are dropped this long after they were written.
    pub retention: Duration,
    /// Bytes the stream keeps at most; the oldest chunks go first.
    pub max_bytes: i64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            max_bytes: 1 << 30,
        }
    }
}

/// The history stream.
#[derive(Clone)]
pub struct PathLog {
    js: Context,
    stats: Arc<MemberStats>,
}

/// The UTC day (since 1970) a piece starting at `t` (s) is filed under.
fn day_of(t: f64) -> i64 {
    if t.is_finite() {
        (t / 86_400.0).floor() as i64
    } else if t > 0.0 {
        i64::MAX
    } else {
        i64::MIN
    }
}

fn subject(vehicle: VehicleId, day: i64) -> String {
    format!("{SUBJECT}.{vehicle}.{day}")
}

impl PathLog {
    /// The stream, made as `config` says if it is not there yet.
    pub async fn open(
        js: &Context,
        replicas: usize,
        config: &HistoryConfig,
        stats: Arc<MemberStats>,
    ) -> anyhow::Result<Self> {
        let stream = Config {
            name: STREAM.into(),
            subjects: vec![format!("{SUBJECT}.*.*")],
            num_replicas: replicas,
            max_age: config.retention,
            max_bytes: config.max_bytes,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            ..Config::default()
        };
        js.get_or_create_stream(stream)
            .await
            .with_context(|| format!("JetStream refused the stream {STREAM}"))?;
        Ok(Self {
            js: js.clone(),
            stats,
        })
    }

    /// Writes `pieces` (each vehicle's in time order), a chunk per vehicle
    /// and day, acknowledgements awaited with a bounded number in flight;
    /// the pieces of chunks not acknowledged are put back in `pieces`.
    pub async fn append(&self, pieces: &mut Vec<PathPiece>) {
        let mut chunks: HashMap<(VehicleId, i64), Vec<PathPiece>> = HashMap::new();
        for p in pieces.drain(..) {
            chunks
                .entry((p.vehicle, day_of(p.t_start)))
                .or_default()
                .push(p);
        }
        let mut acks = futures_util::stream::FuturesUnordered::new();
        let mut chunks = chunks.into_iter();
        loop {
            while acks.len() < IN_FLIGHT
                && let Some(((vehicle, day), chunk)) = chunks.next()
            {
                let js = self.js.clone();
                acks.push(async move {
                    let payload = Bytes::from(encode_chunk(&chunk));
                    let stored = match js.publish(subject(vehicle, day), payload).await {
                        Ok(ack) => tokio::time::timeout(READ_WAIT, ack)
                            .await
                            .is_ok_and(|a| a.is_ok()),
                        Err(_) => false,
                    };
                    (stored, chunk)
                });
            }
            let Some((stored, chunk)) = acks.next().await else {
                break;
            };
            if stored {
                self.stats.history_chunks.fetch_add(1, Relaxed);
                let n = chunk.len() as u64;
                self.stats.history_pieces.fetch_add(n, Relaxed);
            } else {
                pieces.extend(chunk);
            }
        }
    }

    /// `vehicle`'s pieces overlapping `[from, to]` (event time, s), in
    /// time order, after the last piece that ended before `from` (its
    /// predecessor, for joining), at most `max` into `out` (then `true`:
    /// more remain). Each piece once, runs along one edge as one piece
    /// ([`path_history::settle`]).
    pub async fn read(
        &self,
        vehicle: VehicleId,
        (from, to): (f64, f64),
        max: usize,
        out: &mut Vec<PathPiece>,
    ) -> anyhow::Result<bool> {
        let stream = self.js.get_stream_no_info(STREAM).await?;
        let mut days = Vec::new();
        let mut listed = stream
            .info_with_subjects(format!("{SUBJECT}.{vehicle}.*"))
            .await
            .context("listing the vehicle's days")?;
        while let Some(s) = listed.next().await {
            let (s, _) = s.context("listing the vehicle's days")?;
            if let Some(day) = s.rsplit('.').next().and_then(|d| d.parse::<i64>().ok()) {
                days.push(day);
            }
        }
        days.sort_unstable();
        // A piece that overlaps the window starts on a day the window
        // spans, or is the last of the day before its first piece's (a
        // stretch of path across midnight); that day also holds the
        // window's predecessor.
        let (first, last) = (day_of(from), day_of(to));
        let start = days.partition_point(|&d| d < first).saturating_sub(1);
        let days: Vec<i64> = days[start..]
            .iter()
            .copied()
            .filter(|&d| d <= last)
            .collect();
        let mut pieces = Vec::new();
        for (i, &day) in days.iter().enumerate() {
            self.read_day(&stream, vehicle, day, &mut pieces).await?;
            // Later days' pieces all start later: once the window's answer
            // is full, they can only say that more remain.
            let mut settled = pieces.clone();
            let dropped = path_history::settle(&mut settled);
            let mut answer = Vec::new();
            let more = path_history::window(&settled, from, to, max, &mut answer);
            let unread = i + 1 < days.len();
            if more || !unread {
                self.stats
                    .history_pieces_repeated
                    .fetch_add(dropped as u64, Relaxed);
                out.extend(answer);
                return Ok(more || unread);
            }
        }
        Ok(false)
    }

    /// Every chunk of one vehicle's day, in the order written.
    async fn read_day(
        &self,
        stream: &async_nats::jetstream::stream::Stream<()>,
        vehicle: VehicleId,
        day: i64,
        out: &mut Vec<PathPiece>,
    ) -> anyhow::Result<()> {
        let subject = subject(vehicle, day);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => bail!("the last chunk of {subject}: {e}"),
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: DeliverPolicy::All,
                max_expires: crate::READ_STALL,
                ..OrderedConfig::default()
            })
            .await
            .with_context(|| format!("reading {subject}"))?;
        let mut messages = consumer.messages().await?;
        loop {
            let Ok(next) = tokio::time::timeout(READ_WAIT, messages.next()).await else {
                bail!("{subject} stopped answering");
            };
            let Some(m) = next else {
                bail!("{subject} ended early");
            };
            let m = m.with_context(|| format!("reading {subject}"))?;
            let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(last);
            if is_chunk(&m.payload) {
                out.extend(decode_chunk(vehicle, &m.payload));
            } else {
                self.stats.history_unreadable.fetch_add(1, Relaxed);
            }
            if sequence >= last {
                return Ok(());
            }
        }
    }
}

/// An owner's writer of its partitions' history: the pieces its engine
/// finalised wait, by partition, until the partition is checkpointed (or
/// its history asked for here); those the stream did not take wait for
/// the next write (bounded).
pub(crate) struct Writer {
    log: PathLog,
    engine: Arc<Engine>,
    fence: Arc<Fence>,
    held: tokio::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    by_partition: HashMap<u32, Vec<PathPiece>>,
    pieces: usize,
}

impl Held {
    /// Takes the engine's newest pieces in, each to its partition's.
    fn gather(&mut self, engine: &Engine, stats: &MemberStats) {
        let mut new = Vec::new();
        engine.take_history(&mut new);
        let partitions = engine.partition_count();
        self.pieces += new.len();
        for p in new {
            let part = partition_of(p.vehicle, partitions) as u32;
            self.by_partition.entry(part).or_default().push(p);
        }
        if self.pieces > MAX_HELD {
            // The stream has refused for long: the biggest waits go first.
            if let Some(v) = self.by_partition.values_mut().max_by_key(|v| v.len()) {
                let n = v.len() as u64;
                self.pieces -= v.len();
                v.clear();
                stats.history_pieces_lost.fetch_add(n, Relaxed);
            }
        }
    }
}

impl Writer {
    pub(crate) fn new(log: PathLog, engine: Arc<Engine>, fence: Arc<Fence>) -> Self {
        Self {
            log,
            engine,
            fence,
            held: tokio::sync::Mutex::default(),
        }
    }

    /// Writes every piece of partition `p` its engine finalised so far;
    /// `true` when none is left unwritten. Writes go one at a time. Only
    /// while the partition's lease is certainly this node's, as for its
    /// events ([`Fence`]): a deposed owner (frozen past its lease, then
    /// woken) writes nothing; what it drops, whoever drives the partition
    /// from its checkpoint writes.
    pub(crate) async fn flush(&self, p: u32) -> bool {
        let mut held = self.held.lock().await;
        held.gather(&self.engine, &self.log.stats);
        let Some(mut pieces) = held.by_partition.remove(&p) else {
            return true;
        };
        if self.fence.check(p).is_none() {
            held.pieces -= pieces.len();
            let n = pieces.len() as u64;
            self.log.stats.history_pieces_fenced.fetch_add(n, Relaxed);
            return false;
        }
        let before = pieces.len();
        self.log.append(&mut pieces).await;
        held.pieces -= before - pieces.len();
        let written = pieces.is_empty();
        if !written {
            self.log.stats.history_flush_failures.fetch_add(1, Relaxed);
            held.by_partition.insert(p, pieces);
        }
        written
    }

    /// Drops what partition `p` holds unwritten: it is driven again from
    /// its checkpoint, which writes those pieces again.
    pub(crate) async fn forget(&self, p: u32) {
        let mut held = self.held.lock().await;
        held.gather(&self.engine, &self.log.stats);
        if let Some(v) = held.by_partition.remove(&p) {
            held.pieces -= v.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_filed_under_their_start_day() {
        assert_eq!(day_of(0.0), 0);
        assert_eq!(day_of(86_399.999), 0);
        assert_eq!(day_of(86_400.0), 1);
        assert_eq!(day_of(-1.0), -1);
        assert_eq!(day_of(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(day_of(f64::INFINITY), i64::MAX);
        assert_eq!(subject(42, 20_000), "lastmile.history.42.20000");
    }
}
