//! A shard: one worker thread owning the vehicles whose id hashes to it,
//! fed by one bounded queue. Messages are taken strictly in queue order, so
//! a vehicle's pings, commands and ticks are processed in the order they
//! were submitted; vehicles never share state, and the routing metric
//! changes only at ticks, which is what makes the results independent of
//! the shard count.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use lastmile_roadgraph::{Cch, CchMetric, EdgeCandidate, Graph, Router};

use super::checkpoint;
use super::detect::DetectConfig;
use super::eta::EtaConfig;
use super::events::{Event, EventBus, EventKind};
use super::fleet_zones::FleetZones;
use super::latency::Histogram;
use super::snapshot::{self, SnapshotCell, SnapshotTable, VehicleSnapshot};
use super::stops::Command;
use super::vehicle::Vehicle;
use super::window::{Outcome, Windows};
use super::{FleetConfig, PathPiece, VehicleId};
use crate::Ping;
use crate::matcher::{MatchOutput, Matcher, MatcherStats};
use crate::traffic::{EdgeObservation, TrafficConfig};
use crate::zones::ZoneEvent;

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
    Stop,
}

/// What a shard gathered between two ticks.
pub(crate) struct Gathered {
    pub observations: Vec<EdgeObservation>,
    pub outcomes: Vec<Outcome>,
    pub history: Vec<PathPiece>,
}

/// A shard's part of a checkpoint, streamed: its vehicles' records in
/// chunks, then what else it holds.
pub(crate) enum Saved {
    Records(Vec<u8>),
    Done {
        /// Traffic observations and ETA outcomes not yet taken by a tick.
        observations: Vec<EdgeObservation>,
        outcomes: Vec<Outcome>,
        vehicles: usize,
        failed: usize,
    },
}

/// Bytes of vehicle records a shard hands over at a time while saving.
const SAVE_CHUNK: usize = 64 << 10;

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

/// Everything a vehicle needs from its shard while it processes an input.
pub(crate) struct Ctx<'g> {
    pub graph: &'g Graph,
    pub matcher: Matcher<'g>,
    pub router: Router<'g>,
    pub out: MatchOutput,
    pub detect: DetectConfig,
    pub eta: EtaConfig,
    pub traffic: TrafficConfig,
    pub events: Vec<Event>,
    pub observations: Vec<EdgeObservation>,
    /// The arrival windows ETAs are read from, and the outcomes of noted
    /// predictions since the last tick.
    pub windows: Arc<Windows>,
    pub outcomes: Vec<Outcome>,
    /// Every fleet's zones, and the zone events of the position at hand.
    pub zones: Arc<FleetZones>,
    pub zone_events: Vec<ZoneEvent>,
    /// Finalised path pieces, when the engine keeps history.
    pub history: Option<Vec<PathPiece>>,
    /// Counts metric installs, so a leg knows whether it is out of date.
    pub metric_version: u64,
    pub near: Vec<EdgeCandidate>,
    pub counters: ShardCounters,
}

/// Vehicle ids are already well spread by the caller or not at all; a
/// multiplicative hash is enough and much cheaper than SipHash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (v >> 32);
    }
}

pub(crate) type IdMap<V> = HashMap<VehicleId, V, BuildHasherDefault<IdHasher>>;

/// The shared things a shard writes to.
pub(crate) struct Outlets {
    pub snapshots: Arc<SnapshotTable>,
    pub events: Arc<EventBus>,
    pub report: Arc<Mutex<ShardReport>>,
    pub recycle: Sender<Vec<(VehicleId, Ping)>>,
    /// Pings waiting in this shard's queue (the engine adds, we subtract).
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// The shard's thread body: runs until `Stop` or until the engine is gone.
pub(crate) fn run(
    graph: &Graph,
    config: &FleetConfig,
    metric: Arc<CchMetric>,
    inbox: Receiver<Msg>,
    outlets: Outlets,
) {
    let mut ctx = Ctx {
        graph,
        matcher: Matcher::new(graph, config.matcher.clone()),
        router: Router::shared(Cch::new(graph), metric),
        out: MatchOutput::default(),
        detect: config.detect,
        eta: config.eta,
        traffic: config.traffic.clone(),
        events: Vec::new(),
        observations: Vec::new(),
        windows: Arc::new(Windows::prior(&config.eta.window_params())),
        outcomes: Vec::new(),
        zones: Arc::new(FleetZones::new(config)),
        zone_events: Vec::new(),
        history: config.history.then(Vec::new),
        metric_version: 0,
        near: Vec::new(),
        counters: ShardCounters::default(),
    };
    let mut vehicles: IdMap<Slot> = IdMap::default();
    let mut latency = Histogram::default();
    let mut trim_at = f64::NEG_INFINITY;
    let max_observations = config.max_observations_per_tick;
    let max_history = config.max_history_pieces;
    while let Ok(msg) = inbox.recv() {
        match msg {
            Msg::Pings {
                mut pings,
                accepted_at,
            } => {
                ctx.counters.batches += 1;
                outlets
                    .queued
                    .fetch_sub(pings.len(), std::sync::atomic::Ordering::Relaxed);
                for (id, ping) in pings.drain(..) {
                    ctx.counters.pings += 1;
                    let slot = Slot::of(&mut vehicles, id, &outlets);
                    slot.vehicle.on_ping(&mut ctx, &ping);
                    slot.publish();
                    latency.record(accepted_at.elapsed());
                }
                let _ = outlets.recycle.try_send(pings);
            }
            Msg::Command { cmd, time } => {
                ctx.counters.commands += 1;
                // Zone commands come as `Msg::Zones`.
                let Some(vehicle) = cmd.vehicle() else {
                    continue;
                };
                let slot = Slot::of(&mut vehicles, vehicle, &outlets);
                if !slot.vehicle.on_command(&mut ctx, &cmd, time) {
                    ctx.counters.commands_rejected += 1;
                }
                slot.publish();
            }
            Msg::Replay { cmd, time } => {
                let Some(vehicle) = cmd.vehicle() else {
                    continue;
                };
                let slot = Slot::of(&mut vehicles, vehicle, &outlets);
                slot.vehicle.on_command(&mut ctx, &cmd, time);
                ctx.events.clear();
                slot.publish();
            }
            Msg::Checkpoint(parts) => {
                // The writer takes chunks as it writes them (this shard waits
                // meanwhile); gone, it abandoned the checkpoint.
                let (mut chunk, mut saved, mut failed) = (Vec::new(), 0, 0);
                for slot in vehicles.values() {
                    match checkpoint::push_record(&mut chunk, &slot.vehicle) {
                        Ok(()) => saved += 1,
                        Err(_) => failed += 1,
                    }
                    if chunk.len() >= SAVE_CHUNK
                        && parts
                            .send(Saved::Records(std::mem::take(&mut chunk)))
                            .is_err()
                    {
                        break;
                    }
                }
                if !chunk.is_empty() {
                    let _ = parts.send(Saved::Records(chunk));
                }
                let _ = parts.send(Saved::Done {
                    observations: ctx.observations.clone(),
                    outcomes: ctx.outcomes.clone(),
                    vehicles: saved,
                    failed,
                });
            }
            Msg::Restore {
                records,
                ranges,
                mut observations,
                mut outcomes,
                metric_version,
                reply,
            } => {
                ctx.observations.append(&mut observations);
                ctx.outcomes.append(&mut outcomes);
                // The metric installed at restore is the one the checkpoint
                // was taken with, weight for weight: it keeps its version, so
                // restored paths are exactly as current as they were.
                ctx.metric_version = metric_version;
                let (mut restored, mut errors) = (0, Vec::new());
                let all = records.as_slice();
                for range in ranges {
                    match checkpoint::vehicle_from(&all[range]) {
                        Ok(v) => {
                            let slot = Slot::new(Box::new(v), &outlets);
                            slot.publish();
                            vehicles.insert(slot.vehicle.id, slot);
                            restored += 1;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                ctx.counters.vehicle_bytes = vehicle_bytes(&vehicles, usize::MAX);
                let _ = reply.send((restored, errors));
            }
            Msg::Tick { now, reply } => {
                ctx.counters.ticks += 1;
                let trim = now >= trim_at;
                if trim {
                    trim_at = now + TRIM_EVERY_S;
                }
                for slot in vehicles.values_mut() {
                    if slot.vehicle.check_offline(&mut ctx, now) {
                        slot.publish();
                    }
                    if trim {
                        slot.vehicle.trim_buffers();
                    }
                }
                // An estimate from a sample: walking every vehicle's buffers
                // cost 11 ms per 50k vehicles, a stall of every ping queued
                // behind the tick. Sync counts exactly.
                ctx.counters.vehicle_bytes = vehicle_bytes(&vehicles, TICK_SAMPLE);
                let mut observations = std::mem::take(&mut ctx.observations);
                if observations.len() > max_observations {
                    let extra = observations.len() - max_observations;
                    ctx.counters.observations_dropped += extra as u64;
                    observations.truncate(max_observations);
                }
                let history = ctx.history.as_mut().map(std::mem::take).unwrap_or_default();
                let outcomes = std::mem::take(&mut ctx.outcomes);
                let _ = reply.send(Gathered {
                    observations,
                    outcomes,
                    history,
                });
            }
            Msg::Windows(windows) => ctx.windows = windows,
            Msg::Zones(zones) => ctx.zones = zones,
            Msg::Metric(metric) => {
                // Vehicles retime their paths at their next ping.
                ctx.counters.metric_updates += 1;
                ctx.metric_version += 1;
                ctx.router.set_metric(metric);
            }
            Msg::Sync(reply) => {
                ctx.counters.vehicle_bytes = vehicle_bytes(&vehicles, usize::MAX);
                let _ = reply.send(());
            }
            Msg::Stop => break,
        }
        // Observations beyond twice the per-tick allowance are dropped here
        // too, so a tick that never comes cannot grow them without bound.
        if ctx.observations.len() > 2 * max_observations {
            let extra = ctx.observations.len() - 2 * max_observations;
            ctx.counters.observations_dropped += extra as u64;
            ctx.observations.drain(..extra);
        }
        if ctx.outcomes.len() > 2 * max_observations {
            let extra = ctx.outcomes.len() - 2 * max_observations;
            ctx.counters.observations_dropped += extra as u64;
            ctx.outcomes.drain(..extra);
        }
        if let Some(h) = ctx.history.as_mut()
            && h.len() > max_history
        {
            let extra = h.len() - max_history;
            ctx.counters.history_dropped += extra as u64;
            h.drain(..extra);
        }
        outlets.events.publish(&mut ctx.events);
        ctx.counters.vehicles = vehicles.len() as u64;
        let mut report = outlets.report.lock().unwrap_or_else(|p| p.into_inner());
        report.counters = ShardCounters {
            matcher: ctx.matcher.stats(),
            ..ctx.counters.clone()
        };
        report.latency.merge_from(&mut latency);
    }
}

/// A shard's vehicle and the cell it publishes its state to.
struct Slot {
    /// Boxed: a vehicle is about 1.1 KB, and a table of them inline carries
    /// its load-factor slack at that size (about 470 B per vehicle).
    vehicle: Box<Vehicle>,
    snapshot: SnapshotCell,
}

impl Slot {
    /// A vehicle new to this shard, its cell entered in the snapshot table.
    fn new(vehicle: Box<Vehicle>, outlets: &Outlets) -> Self {
        let snapshot = Arc::new(Mutex::new(VehicleSnapshot::new(vehicle.id)));
        outlets.snapshots.insert(vehicle.id, snapshot.clone());
        Self { vehicle, snapshot }
    }

    /// The vehicle's slot, created on its first input.
    fn of<'a>(vehicles: &'a mut IdMap<Slot>, id: VehicleId, outlets: &Outlets) -> &'a mut Slot {
        vehicles
            .entry(id)
            .or_insert_with(|| Slot::new(Box::new(Vehicle::new(id)), outlets))
    }

    /// Writes the vehicle's state where queries read it.
    fn publish(&self) {
        self.vehicle
            .fill_snapshot(&mut snapshot::read(&self.snapshot));
    }
}

/// How often (event time) the vehicles' buffers are trimmed to what they
/// used since the last trim: long enough that a buffer in steady use keeps
/// its room (a vehicle pinging every 10 s fills its window six times over),
/// short enough that a stand's room goes back soon after it ends.
const TRIM_EVERY_S: f64 = 60.0;

/// Vehicles whose buffers a tick measures for the memory estimate.
const TICK_SAMPLE: usize = 1024;

/// Bytes the shard's vehicles hold: the table and the vehicles exactly, their
/// buffers measured on at most `sample` of them (evenly spread) and scaled.
fn vehicle_bytes(vehicles: &IdMap<Slot>, sample: usize) -> u64 {
    let table = vehicles.capacity() * (std::mem::size_of::<(VehicleId, Slot)>() + 1);
    let boxes = vehicles.len() * std::mem::size_of::<Vehicle>();
    let step = vehicles.len().div_ceil(sample.max(1)).max(1);
    let (measured, heap) = vehicles
        .values()
        .step_by(step)
        .fold((0usize, 0usize), |(n, b), s| {
            (n + 1, b + s.vehicle.heap_bytes())
        });
    let heap = if measured == 0 {
        0
    } else {
        (heap as f64 * vehicles.len() as f64 / measured as f64) as usize
    };
    (table + boxes + heap) as u64
}
