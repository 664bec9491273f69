//! A shard: one worker thread driving the partitions `p` with `p % shards`
//! its number ([`super::partition`]), fed by one bounded queue.
//! Messages are taken strictly in queue order, so a vehicle's pings,
//! commands and ticks are processed in the order they were submitted;
//! vehicles never share state, and the routing metric changes only at
//! ticks, which is what makes the results independent of the shard count.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use lastmile_roadgraph::{CchMetric, Graph};

use super::checkpoint;
use super::events::{EventBus, EventKind};
use super::fleet_zones::FleetZones;
use super::latency::Histogram;
use super::partition::{Gathered, Partitions, SavedRest};
use super::snapshot::SnapshotTable;
use super::stops::Command;
use super::window::{Outcome, Windows};
use super::{FleetConfig, VehicleId};
use crate::Ping;
use crate::matcher::MatcherStats;
use crate::traffic::EdgeObservation;

/// What a shard is asked to do.
pub(crate) enum Msg {
    Pings {
        pings: Vec<(VehicleId, Ping)>,
        accepted_at: Instant,
    },
    Command {
        cmd: Command,
        time: f64,
    },
    /// Offline checks at `now`; the traffic observations and path pieces
    /// gathered since the last tick go back on `reply`.
    Tick {
        now: f64,
        reply: Sender<Gathered>,
    },
    /// Route on this metric from now on.
    Metric(Arc<CchMetric>),
    /// Read arrival windows from these from now on.
    Windows(Arc<Windows>),
    /// Judge positions against these zones from now on.
    Zones(Arc<FleetZones>),
    /// Answered once everything queued before it is done.
    Sync(Sender<()>),
    /// A command from the journal, replayed after a restore: applied like
    /// any other, but its events were published before the restart.
    Replay {
        cmd: Command,
        time: f64,
    },
    /// Every vehicle as checkpoint records (see [`super::checkpoint`]), with
    /// the number of vehicles and of those that failed to serialise.
    Checkpoint(Sender<Saved>),
    /// Vehicles from a checkpoint's records (all of this shard's), and the
    /// version of the metric just installed; the reply is the number restored and
    /// the errors of those that were not.
    Restore {
        /// The checkpoint's records, and where this shard's are in them.
        records: checkpoint::RecordsBuf,
        ranges: Vec<std::ops::Range<usize>>,
        observations: Vec<EdgeObservation>,
        outcomes: Vec<Outcome>,
        metric_version: u64,
        reply: Sender<(usize, Vec<String>)>,
    },
    /// One partition's vehicles as checkpoint records: (records, saved,
    /// failed, the history gathered since the last tick).
    SavePartition {
        partition: usize,
        reply: Sender<(Vec<u8>, usize, usize, Vec<super::PathPiece>)>,
    },
    /// Vehicles of a partition taken over (this shard's records at `ranges`).
    Adopt {
        records: checkpoint::RecordsBuf,
        ranges: Vec<std::ops::Range<usize>>,
        reply: Sender<(usize, Vec<String>)>,
    },
    /// Forget a partition's vehicles; the reply is how many there were.
    Release {
        partition: usize,
        reply: Sender<usize>,
    },
    Stop,
}

/// A shard's part of a checkpoint, streamed: its vehicles' records in
/// chunks, then what else it holds.
pub(crate) enum Saved {
    Records(Vec<u8>),
    Done(SavedRest),
}

/// Events by [`EventKind`], indexed by its number (an array of more than
/// 32 has no `Default` of its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventCounts(pub [u64; EventKind::ALL.len() + 1]);

impl Default for EventCounts {
    fn default() -> Self {
        Self([0; EventKind::ALL.len() + 1])
    }
}

impl std::ops::Deref for EventCounts {
    type Target = [u64; EventKind::ALL.len() + 1];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for EventCounts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Counters of one shard (summed by the engine).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardCounters {
    pub pings: u64,
    pub batches: u64,
    pub commands: u64,
    pub commands_rejected: u64,
    pub ticks: u64,
    pub vehicles: u64,
    pub events: EventCounts,
    /// Searches for the leg to the next stop: first time, after leaving the
    /// path, periodic refresh, traffic.
    pub leg_routes: u64,
    pub stop_leg_routes: u64,
    pub reroutes: u64,
    pub refreshes: u64,
    pub retimes: u64,
    pub traffic_reroutes: u64,
    pub unroutable: u64,
    pub unsnappable_stops: u64,
    pub metric_updates: u64,
    /// Observations dropped because a tick's buffer was full.
    pub observations_dropped: u64,
    /// Path pieces dropped because no tick took them in time.
    pub history_dropped: u64,
    /// Heap bytes held by the shard's vehicles (exact at the last sync,
    /// estimated from a sample at each tick).
    pub vehicle_bytes: u64,
    pub matcher: MatcherStats,
}

impl ShardCounters {
    pub fn event_count(&self, k: EventKind) -> u64 {
        self.events[k as usize]
    }

    pub(crate) fn add(&mut self, o: &ShardCounters) {
        self.pings += o.pings;
        self.batches += o.batches;
        self.commands += o.commands;
        self.commands_rejected += o.commands_rejected;
        self.ticks += o.ticks;
        self.vehicles += o.vehicles;
        for (a, b) in self.events.iter_mut().zip(o.events.0) {
            *a += b;
        }
        self.leg_routes += o.leg_routes;
        self.stop_leg_routes += o.stop_leg_routes;
        self.reroutes += o.reroutes;
        self.refreshes += o.refreshes;
        self.retimes += o.retimes;
        self.traffic_reroutes += o.traffic_reroutes;
        self.unroutable += o.unroutable;
        self.unsnappable_stops += o.unsnappable_stops;
        self.metric_updates += o.metric_updates;
        self.observations_dropped += o.observations_dropped;
        self.history_dropped += o.history_dropped;
        self.vehicle_bytes += o.vehicle_bytes;
        let m = &mut self.matcher;
        m.pings += o.matcher.pings;
        for (a, b) in m.by_status.iter_mut().zip(o.matcher.by_status) {
            *a += b;
        }
        m.forced += o.matcher.forced;
        m.searches += o.matcher.searches;
        m.settled += o.matcher.settled;
    }
}

/// What a shard publishes for the engine to read: counters and the latency
/// from a ping being accepted to its ETAs being updated.
#[derive(Default)]
pub(crate) struct ShardReport {
    pub counters: ShardCounters,
    pub latency: Histogram,
}

/// The shared things a shard writes to.
pub(crate) struct Outlets {
    pub snapshots: Arc<SnapshotTable>,
    pub events: Arc<EventBus>,
    pub report: Arc<Mutex<ShardReport>>,
    pub recycle: Sender<Vec<(VehicleId, Ping)>>,
    /// Pings waiting in this shard's queue (the engine adds, we subtract).
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// The shard's thread body: drives its partition from the queue until
/// `Stop` or until the engine is gone.
pub(crate) fn run(
    graph: &Graph,
    config: &FleetConfig,
    metric: Arc<CchMetric>,
    inbox: Receiver<Msg>,
    outlets: Outlets,
) {
    let count = config.partition_count();
    let mut part = Partitions::new(graph, config, count, metric, outlets.snapshots.clone());
    while let Ok(msg) = inbox.recv() {
        match msg {
            Msg::Pings {
                mut pings,
                accepted_at,
            } => {
                outlets
                    .queued
                    .fetch_sub(pings.len(), std::sync::atomic::Ordering::Relaxed);
                part.pings(&mut pings, accepted_at);
                let _ = outlets.recycle.try_send(pings);
            }
            Msg::Command { cmd, time } => part.command(&cmd, time),
            Msg::Replay { cmd, time } => part.replay(&cmd, time),
            Msg::Checkpoint(parts) => {
                // The writer takes chunks as it writes them (this shard waits
                // meanwhile); gone, it abandoned the checkpoint.
                let rest = part.save(&mut |chunk| parts.send(Saved::Records(chunk)).is_ok());
                let _ = parts.send(Saved::Done(rest));
            }
            Msg::Restore {
                records,
                ranges,
                observations,
                outcomes,
                metric_version,
                reply,
            } => {
                let all = records.as_slice();
                let done = part.restore(all, ranges, observations, outcomes, metric_version);
                let _ = reply.send(done);
            }
            Msg::SavePartition { partition, reply } => {
                let _ = reply.send(part.save_partition(partition));
            }
            Msg::Adopt {
                records,
                ranges,
                reply,
            } => {
                let _ = reply.send(part.adopt(records.as_slice(), ranges));
            }
            Msg::Release { partition, reply } => {
                let _ = reply.send(part.release(partition));
            }
            Msg::Tick { now, reply } => {
                let _ = reply.send(part.tick(now));
            }
            Msg::Windows(windows) => part.set_windows(windows),
            Msg::Zones(zones) => part.set_zones(zones),
            Msg::Metric(metric) => part.set_metric(metric),
            Msg::Sync(reply) => {
                part.measure();
                let _ = reply.send(());
            }
            Msg::Stop => break,
        }
        outlets.events.publish(part.settle());
        part.report(&mut outlets.report.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
