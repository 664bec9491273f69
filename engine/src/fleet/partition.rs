//! Partitions of the fleet: a vehicle belongs to one of a fixed number of
//! partitions by its id ([`partition_of`]), and a partition's vehicles
//! (their matcher state, stops, ETAs, detectors and zones) are driven by
//! their inputs alone — pings, commands, ticks, and the fleet-wide state
//! handed in (the routing metric, arrival windows, zones) — with time
//! taken from the inputs. They emit events, write each vehicle's snapshot
//! into the cell queries read, and gather traffic observations, prediction
//! outcomes and path pieces for the next tick; a partition checkpoints and
//! restores alone.
//!
//! [`Partitions`] is the set one worker drives, with the context they
//! share (the matcher's and router's scratch space is per worker, not per
//! partition). No threads, queues or clocks here: a shard thread
//! ([`super::shard`]) drives its set from its queue, as quinn's endpoint
//! drives quinn-proto's; a node of a cluster would drive the partitions it
//! owns the same way.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lastmile_roadgraph::{Cch, CchMetric, EdgeCandidate, Graph, Router};

use super::checkpoint;
use super::detect::DetectConfig;
use super::eta::EtaConfig;
use super::events::Event;
use super::fleet_zones::FleetZones;
use super::latency::Histogram;
use super::shard::{ShardCounters, ShardReport};
use super::snapshot::{self, SnapshotCell, SnapshotTable, VehicleSnapshot};
use super::stops::Command;
use super::vehicle::Vehicle;
use super::window::{Outcome, Windows};
use super::{FleetConfig, PathPiece, VehicleId};
use crate::Ping;
use crate::matcher::{MatchOutput, Matcher};
use crate::traffic::{EdgeObservation, TrafficConfig};
use crate::zones::ZoneEvent;

/// What a partition gathered between two ticks.
pub(crate) struct Gathered {
    pub observations: Vec<EdgeObservation>,
    pub outcomes: Vec<Outcome>,
    pub history: Vec<PathPiece>,
}

/// A partition's checkpoint, apart from its vehicles' records.
pub(crate) struct SavedRest {
    /// Traffic observations and ETA outcomes not yet taken by a tick.
    pub observations: Vec<EdgeObservation>,
    pub outcomes: Vec<Outcome>,
    pub vehicles: usize,
    pub failed: usize,
}

/// Bytes of vehicle records a partition hands over at a time while saving.
const SAVE_CHUNK: usize = 64 << 10;

/// Which of `count` partitions a vehicle belongs to: fixed while the count
/// is (a multiplicative hash of the id, spread evenly).
pub fn partition_of(vehicle: VehicleId, count: usize) -> usize {
    let h = vehicle.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (vehicle >> 31);
    (((h >> 32) * count as u64) >> 32) as usize
}

/// The vehicles of one partition.
#[derive(Default)]
struct Partition {
    vehicles: IdMap<Slot>,
}

/// The partitions one worker drives and what they share while processing.
pub(crate) struct Partitions<'g> {
    ctx: Ctx<'g>,
    /// By partition number, of the fleet's `parts.len()` (those this
    /// worker does not drive stay empty).
    parts: Vec<Partition>,
    snapshots: Arc<SnapshotTable>,
    /// From a ping being accepted to its ETAs being updated, since the
    /// last report.
    latency: Histogram,
    trim_at: f64,
    max_observations: usize,
    max_history: usize,
}

impl<'g> Partitions<'g> {
    /// None of the fleet's `count` partitions yet, routing on `metric`,
    /// writing snapshots into `snapshots`.
    pub fn new(
        graph: &'g Graph,
        config: &FleetConfig,
        count: usize,
        metric: Arc<CchMetric>,
        snapshots: Arc<SnapshotTable>,
    ) -> Self {
        let ctx = Ctx {
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
        Self {
            ctx,
            parts: (0..count.max(1)).map(|_| Partition::default()).collect(),
            snapshots,
            latency: Histogram::default(),
            trim_at: f64::NEG_INFINITY,
            max_observations: config.max_observations_per_tick,
            max_history: config.max_history_pieces,
        }
    }

    fn vehicles(&self) -> impl Iterator<Item = &Slot> {
        self.parts.iter().flat_map(|p| p.vehicles.values())
    }

    fn vehicle_count(&self) -> usize {
        self.parts.iter().map(|p| p.vehicles.len()).sum()
    }

    /// Bytes the vehicles hold (see [`vehicle_bytes`]).
    fn bytes(&self, sample: usize) -> u64 {
        let per = sample.div_ceil(self.parts.len()).max(1);
        self.parts
            .iter()
            .map(|p| vehicle_bytes(&p.vehicles, per))
            .sum()
    }

    /// Takes a batch of pings, in order (the batch is left empty).
    pub fn pings(&mut self, pings: &mut Vec<(VehicleId, Ping)>, accepted_at: Instant) {
        self.ctx.counters.batches += 1;
        for (id, ping) in pings.drain(..) {
            self.ctx.counters.pings += 1;
            let p = partition_of(id, self.parts.len());
            let slot = Slot::of(&mut self.parts[p].vehicles, id, &self.snapshots);
            slot.vehicle.on_ping(&mut self.ctx, &ping);
            slot.publish();
            self.latency.record(accepted_at.elapsed());
        }
    }

    /// Applies a vehicle's command (zone commands come as [`Self::set_zones`]).
    pub fn command(&mut self, cmd: &Command, time: f64) {
        self.ctx.counters.commands += 1;
        let Some(vehicle) = cmd.vehicle() else {
            return;
        };
        let p = partition_of(vehicle, self.parts.len());
        let slot = Slot::of(&mut self.parts[p].vehicles, vehicle, &self.snapshots);
        if !slot.vehicle.on_command(&mut self.ctx, cmd, time) {
            self.ctx.counters.commands_rejected += 1;
        }
        slot.publish();
    }

    /// Applies a command from the journal after a restore: its events were
    /// published before the restart, so they are dropped.
    pub fn replay(&mut self, cmd: &Command, time: f64) {
        let Some(vehicle) = cmd.vehicle() else {
            return;
        };
        let p = partition_of(vehicle, self.parts.len());
        let slot = Slot::of(&mut self.parts[p].vehicles, vehicle, &self.snapshots);
        slot.vehicle.on_command(&mut self.ctx, cmd, time);
        self.ctx.events.clear();
        slot.publish();
    }

    /// Writes every vehicle as checkpoint records, in chunks handed to
    /// `chunk` (false: the writer gave up, stop), then what else it holds.
    pub fn save(&self, chunk: &mut dyn FnMut(Vec<u8>) -> bool) -> SavedRest {
        let (mut buf, mut saved, mut failed) = (Vec::new(), 0, 0);
        for slot in self.vehicles() {
            match checkpoint::push_record(&mut buf, &slot.vehicle) {
                Ok(()) => saved += 1,
                Err(_) => failed += 1,
            }
            if buf.len() >= SAVE_CHUNK && !chunk(std::mem::take(&mut buf)) {
                break;
            }
        }
        if !buf.is_empty() {
            chunk(buf);
        }
        SavedRest {
            observations: self.ctx.observations.clone(),
            outcomes: self.ctx.outcomes.clone(),
            vehicles: saved,
            failed,
        }
    }

    /// Takes the vehicles of a checkpoint's records at `ranges`, and what
    /// the partition had gathered; `metric_version` is that of the metric
    /// just installed (the checkpoint's, weight for weight: restored paths
    /// are exactly as current as they were). Returns the number restored
    /// and the errors of those that were not.
    pub fn restore(
        &mut self,
        records: &[u8],
        ranges: Vec<std::ops::Range<usize>>,
        mut observations: Vec<EdgeObservation>,
        mut outcomes: Vec<Outcome>,
        metric_version: u64,
    ) -> (usize, Vec<String>) {
        self.ctx.observations.append(&mut observations);
        self.ctx.outcomes.append(&mut outcomes);
        self.ctx.metric_version = metric_version;
        let (mut restored, mut errors) = (0, Vec::new());
        for range in ranges {
            match checkpoint::vehicle_from(&records[range]) {
                Ok(v) => {
                    let slot = Slot::new(Box::new(v), &self.snapshots);
                    slot.publish();
                    let p = partition_of(slot.vehicle.id, self.parts.len());
                    self.parts[p].vehicles.insert(slot.vehicle.id, slot);
                    restored += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.ctx.counters.vehicle_bytes = self.bytes(usize::MAX);
        (restored, errors)
    }

    /// Partition `p`'s vehicles alone as checkpoint records (a partition
    /// handed to another node), with the number saved and of those that
    /// failed to serialise, and the path pieces finalised since the last
    /// tick (every partition's of this worker): the history of what the
    /// records hold is then all out of the worker, to be written before
    /// the records are.
    pub fn save_partition(&mut self, p: usize) -> (Vec<u8>, usize, usize, Vec<PathPiece>) {
        let (mut buf, mut saved, mut failed) = (Vec::new(), 0, 0);
        for slot in self
            .parts
            .get(p)
            .into_iter()
            .flat_map(|p| p.vehicles.values())
        {
            match checkpoint::push_record(&mut buf, &slot.vehicle) {
                Ok(()) => saved += 1,
                Err(_) => failed += 1,
            }
        }
        let history = self.ctx.history.as_mut().map(std::mem::take);
        (buf, saved, failed, history.unwrap_or_default())
    }

    /// Takes the vehicles of records saved by [`Self::save_partition`]
    /// (this worker's, at `ranges`), each replacing any vehicle of its id:
    /// a partition taken over. Paths are retimed at their next ping if the
    /// saving node routed on another metric. Returns the number adopted and
    /// the errors of those that were not.
    pub fn adopt(
        &mut self,
        records: &[u8],
        ranges: Vec<std::ops::Range<usize>>,
    ) -> (usize, Vec<String>) {
        let (mut adopted, mut errors) = (0, Vec::new());
        for range in ranges {
            match checkpoint::vehicle_from(&records[range]) {
                Ok(v) => {
                    let p = partition_of(v.id, self.parts.len());
                    let slot = Slot::new(Box::new(v), &self.snapshots);
                    slot.publish();
                    self.parts[p].vehicles.insert(slot.vehicle.id, slot);
                    adopted += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.ctx.counters.vehicle_bytes = self.bytes(usize::MAX);
        (adopted, errors)
    }

    /// Forgets partition `p`'s vehicles (another node owns them now): they
    /// leave the snapshot table, so queries here no longer answer for them.
    /// Returns how many there were.
    pub fn release(&mut self, p: usize) -> usize {
        let Some(part) = self.parts.get_mut(p) else {
            return 0;
        };
        let gone = std::mem::take(&mut part.vehicles);
        for id in gone.keys() {
            self.snapshots.remove(id);
        }
        self.ctx.counters.vehicle_bytes = self.bytes(usize::MAX);
        gone.len()
    }

    /// The periodic step at `now`: offline checks, buffers trimmed now and
    /// then; hands over what was gathered since the last tick.
    pub fn tick(&mut self, now: f64) -> Gathered {
        let ctx = &mut self.ctx;
        ctx.counters.ticks += 1;
        let trim = now >= self.trim_at;
        if trim {
            self.trim_at = now + TRIM_EVERY_S;
        }
        for slot in self.parts.iter_mut().flat_map(|p| p.vehicles.values_mut()) {
            if slot.vehicle.check_offline(ctx, now) {
                slot.publish();
            }
            if trim {
                slot.vehicle.trim_buffers();
            }
        }
        // An estimate from a sample: walking every vehicle's buffers
        // cost 11 ms per 50k vehicles, a stall of every ping queued
        // behind the tick. `measure` counts exactly.
        let bytes = self.bytes(TICK_SAMPLE);
        let ctx = &mut self.ctx;
        ctx.counters.vehicle_bytes = bytes;
        let mut observations = std::mem::take(&mut ctx.observations);
        if observations.len() > self.max_observations {
            let extra = observations.len() - self.max_observations;
            ctx.counters.observations_dropped += extra as u64;
            observations.truncate(self.max_observations);
        }
        Gathered {
            observations,
            outcomes: std::mem::take(&mut ctx.outcomes),
            history: ctx.history.as_mut().map(std::mem::take).unwrap_or_default(),
        }
    }

    /// Route on `metric` from now on (vehicles retime their paths at their
    /// next ping).
    pub fn set_metric(&mut self, metric: Arc<CchMetric>) {
        self.ctx.counters.metric_updates += 1;
        self.ctx.metric_version += 1;
        self.ctx.router.set_metric(metric);
    }

    /// Read arrival windows from these from now on.
    pub fn set_windows(&mut self, windows: Arc<Windows>) {
        self.ctx.windows = windows;
    }

    /// Judge positions against these zones from now on.
    pub fn set_zones(&mut self, zones: Arc<FleetZones>) {
        self.ctx.zones = zones;
    }

    /// Counts the vehicles' memory exactly.
    pub fn measure(&mut self) {
        self.ctx.counters.vehicle_bytes = self.bytes(usize::MAX);
    }

    /// After each input: what is gathered for the next tick stays bounded
    /// (a tick that never comes cannot grow it), and the events emitted
    /// since the last call are handed over (the vector is left empty).
    pub fn settle(&mut self) -> &mut Vec<Event> {
        let ctx = &mut self.ctx;
        let cap = 2 * self.max_observations;
        if ctx.observations.len() > cap {
            let extra = ctx.observations.len() - cap;
            ctx.counters.observations_dropped += extra as u64;
            ctx.observations.drain(..extra);
        }
        if ctx.outcomes.len() > cap {
            let extra = ctx.outcomes.len() - cap;
            ctx.counters.observations_dropped += extra as u64;
            ctx.outcomes.drain(..extra);
        }
        if let Some(h) = ctx.history.as_mut()
            && h.len() > self.max_history
        {
            let extra = h.len() - self.max_history;
            ctx.counters.history_dropped += extra as u64;
            h.drain(..extra);
        }
        self.ctx.counters.vehicles = self.vehicle_count() as u64;
        &mut self.ctx.events
    }

    /// Its counters into `report`, and the latencies recorded since the last report.
    pub fn report(&mut self, report: &mut ShardReport) {
        report.counters = ShardCounters {
            matcher: self.ctx.matcher.stats(),
            ..self.ctx.counters.clone()
        };
        report.latency.merge_from(&mut self.latency);
    }
}

/// Everything a vehicle needs from its partition while it processes an input.
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

/// A partition's vehicle and the cell it publishes its state to.
struct Slot {
    /// Boxed: a vehicle is about 1.1 KB, and a table of them inline carries
    /// its load-factor slack at that size (about 470 B per vehicle).
    vehicle: Box<Vehicle>,
    snapshot: SnapshotCell,
}

impl Slot {
    /// A vehicle new to this shard, its cell entered in the snapshot table.
    fn new(vehicle: Box<Vehicle>, snapshots: &SnapshotTable) -> Self {
        let snapshot = Arc::new(Mutex::new(VehicleSnapshot::new(vehicle.id)));
        snapshots.insert(vehicle.id, snapshot.clone());
        Self { vehicle, snapshot }
    }

    /// The vehicle's slot, created on its first input.
    fn of<'a>(
        vehicles: &'a mut IdMap<Slot>,
        id: VehicleId,
        snapshots: &SnapshotTable,
    ) -> &'a mut Slot {
        vehicles
            .entry(id)
            .or_insert_with(|| Slot::new(Box::new(Vehicle::new(id)), snapshots))
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

/// Bytes the partition's vehicles hold: the table and the vehicles exactly, their
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Admission, Engine, EventFilter};
    use crate::simulate::SimParams;
    use lastmile_roadgraph::{CityParams, synthetic};

    /// Partitions driven by hand, without a thread or a queue, give the
    /// events an engine's shard gives for the same inputs, and their
    /// checkpoint brings their vehicles back however many partitions hold
    /// them.
    #[test]
    fn a_partition_alone_is_an_engines_shard() {
        let graph = Arc::new(Graph::from_data(&synthetic::generate_city(
            &CityParams::new(6_000, 5),
        )));
        let params = SimParams {
            vehicles: 6,
            duration_s: 900.0,
            interval_s: 2.0,
            seed: 3,
            ..SimParams::default()
        };
        // A delivery day: routes first, then the pings.
        let sim = crate::bench::Day::simulate(&graph, &params, &|_| {});
        let (day, routes) = (&sim.pings, sim.routes());
        let config = FleetConfig {
            shards: 1,
            learning: false,
            events_capacity: 1 << 20,
            ..FleetConfig::default()
        };

        let engine = Engine::new(graph.clone(), config.clone());
        let wait = Admission::Wait(std::time::Duration::from_secs(5));
        for cmd in &routes {
            engine.command(cmd.clone(), sim.start_time, wait).unwrap();
        }
        for chunk in day.chunks(50) {
            assert_eq!(engine.submit(chunk, wait).shed, 0);
        }
        engine.sync();
        let (mut cursor, mut read) = (0, Vec::new());
        engine
            .events()
            .read(&mut cursor, &EventFilter::default(), usize::MAX, &mut read);
        let from_engine: Vec<Event> = read.into_iter().map(|(_, e)| e).collect();

        let metric = Arc::new(CchMetric::for_metric(
            &Cch::new(&graph),
            lastmile_roadgraph::Metric::Time,
        ));
        let snapshots = Arc::new(SnapshotTable::default());
        let mut part = Partitions::new(&graph, &config, 1, metric.clone(), snapshots.clone());
        let mut events = Vec::new();
        for cmd in &routes {
            part.command(cmd, sim.start_time);
            events.append(part.settle());
        }
        for chunk in day.chunks(50) {
            part.pings(&mut chunk.to_vec(), Instant::now());
            events.append(part.settle());
        }
        assert!(from_engine.len() > 50, "{} events", from_engine.len());
        // (Compared as text: an event before the first match has a NaN position.)
        let text = |es: &[Event]| es.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>();
        let (mine, theirs) = (text(&events), text(&from_engine));
        let first = mine.iter().zip(&theirs).position(|(a, b)| a != b);
        assert!(
            mine.len() == theirs.len() && first.is_none(),
            "differ from {first:?}"
        );

        // Saved alone, restored alone: the same snapshots.
        let mut records = Vec::new();
        let rest = part.save(&mut |chunk| {
            records.extend(chunk);
            true
        });
        assert_eq!((rest.vehicles, rest.failed), (6, 0));
        let ranges: Vec<_> = checkpoint::Records(&records)
            .map(|r| {
                let (_, record) = r.unwrap();
                let at = record.as_ptr() as usize - records.as_ptr() as usize;
                at..at + record.len()
            })
            .collect();
        let again = Arc::new(SnapshotTable::default());
        let mut back = Partitions::new(&graph, &config, 3, metric, again.clone());
        let (n, errors) = back.restore(&records, ranges, Vec::new(), Vec::new(), 0);
        assert_eq!((n, errors.len()), (6, 0));
        for v in 0..6 {
            let a = snapshot::read(&snapshots.get(&v).unwrap()).clone();
            let b = snapshot::read(&again.get(&v).unwrap()).clone();
            assert_eq!(a.lifetime_m, b.lifetime_m);
            assert_eq!(a.stops, b.stops);
            assert_eq!(a.matched_time, b.matched_time);
        }
    }
}
