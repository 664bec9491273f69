//! The live fleet: [`Engine`] runs N shard threads (each owning the vehicles
//! whose id hashes to it, fed by a bounded queue), keeps the stop registry
//! dispatchers' commands are checked against, learns traffic from the
//! shards' matched paths and publishes it as a new routing metric at ticks,
//! and answers queries from what the shards publish (vehicle snapshots, the
//! live-vehicle index, the event bus) without entering a shard.
//!
//! Sans-IO: time is the event time of pings, commands and ticks. The caller
//! decides when to [`Engine::tick`] (the server every few seconds of wall
//! time, a replay every 30 s of trace time). Given the same inputs in the
//! same order, the events and ETAs are the same whatever the shard count:
//! vehicles share nothing but the metric, and the metric changes only at
//! ticks, which every shard sees at the same point of its queue.
//!
//! Here: the engine's configuration, its shards and their queues (admission,
//! shedding) and the commands' way in (checked, journalled, sent). Beside
//! it: [`partition`] (the vehicles a shard drives, sans-IO), [`shard`] (the
//! thread and its messages), [`registry`] (stops, routes, zones), [`persist`]
//! (checkpoints, replay), [`learning`] (traffic and ETA errors at ticks) and
//! [`queries`].

pub mod checkpoint;
pub mod command_log;
pub mod detect;
pub mod eta;
pub mod events;
mod exchange;
mod fleet_zones;
mod handover;
pub mod journal;
pub mod latency;
mod learning;
mod legs;
mod milestones;
mod partition;
mod path_code;
pub mod path_history;
mod persist;
mod queries;
mod registry;
mod remote;
mod shard;
pub mod snapshot;
pub mod stops;
pub mod upkeep;
mod vehicle;
pub mod window;
mod zone_rules;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use lastmile_roadgraph::{Cch, CchMetric, Graph, LatLon, Metric};

pub use checkpoint::{Checkpoint, CheckpointError};
pub use command_log::{AppendError, CommandLog};
pub use detect::DetectConfig;
pub use eta::EtaConfig;
pub use events::{Event, EventBus, EventFilter, EventKind, ReadReport};
pub use exchange::LearningExchange;
pub use fleet_zones::{MAX_POINTS_PER_FLEET, MAX_ZONES_PER_FLEET};
pub use handover::{Adopted, PartitionSave};
pub use journal::Journal;
pub use latency::Histogram;
pub use learning::background_priority;
pub use partition::partition_of;
pub use persist::{Restored, Saving};
pub use registry::StopRecord;
pub use remote::RemoteVehicles;
pub use shard::ShardCounters;
pub use snapshot::{EtaState, StopEta, VehicleSnapshot};
pub use stops::{Command, ProofOfDelivery, Rating, StopOutcome, StopPlan, StopStatus, TimeWindow};
pub use window::{ErrorModel, Outcome, WindowParams, Windows};

/// A piece of a vehicle's finalised matched path: part or all of one edge,
/// driven between two event times (see [`crate::matcher::Traversal`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathPiece {
    pub vehicle: VehicleId,
    pub edge: u32,
    pub from_m: f64,
    pub to_m: f64,
    pub t_start: f64,
    pub t_end: f64,
}

use crate::Ping;
use crate::live_index::LiveIndex;
use crate::matcher::MatcherConfig;
use crate::traffic::{TrafficConfig, TrafficModel};
use crate::zones::ZoneId;
use fleet_zones::FleetZones;
use learning::Coordinator;
use registry::{Registry, apply};
use shard::{Msg, Outlets, ShardReport};
use snapshot::SnapshotTable;

pub type VehicleId = u64;
pub type StopId = u64;

/// Everything the fleet engine can be tuned with.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Worker threads (0: one per available core).
    pub shards: usize,
    /// Ping batches (or commands) each shard's queue holds.
    pub queue_capacity: usize,
    /// Pings each shard's queue holds at most, whatever the batch sizes:
    /// bounds the memory and the time a ping waits (a batch larger than
    /// this still enters an empty queue).
    pub queue_pings: usize,
    pub matcher: MatcherConfig,
    pub detect: DetectConfig,
    pub eta: EtaConfig,
    pub traffic: TrafficConfig,
    /// Learn traffic from the fleet's matched paths and route on it.
    pub learning: bool,
    /// Event seconds between two publications of learnt traffic as a new
    /// routing metric (observations are taken at every tick).
    pub traffic_every_s: f64,
    /// Events the bus keeps for subscribers.
    pub events_capacity: usize,
    /// Traffic observations a shard keeps between two ticks.
    pub max_observations_per_tick: usize,
    /// Completed and failed stops stay queryable this long (event time, s);
    /// the durable record is the store's.
    pub closed_retention_s: f64,
    /// Keep every vehicle's finalised matched path for
    /// [`Engine::take_history`] (a store writes it down).
    pub history: bool,
    /// Path pieces held for `take_history` at most; beyond, the oldest are
    /// dropped and counted (`history_dropped`).
    pub max_history_pieces: usize,
    /// Vehicles numbered inside a fleet's configured ranges, and that
    /// fleet's slot: their fleet's zones are theirs (vehicles with
    /// allocated ids carry their fleet's slot; see [`fleet_zones`]).
    pub vehicle_fleets: Vec<([u64; 2], u32)>,
    /// The fleet of a vehicle numbered outside every range (the node's
    /// names outside any fleet, an admin's).
    pub unranged_fleet: u32,
    /// Fleets' working hours (by slot): `off_hours_movement` outside them.
    pub working_hours: Vec<(u32, crate::zones::WorkingHours)>,
    /// Fleets' service intervals (by slot): `service_due` when reached.
    pub service: Vec<(u32, upkeep::ServiceInterval)>,
    /// The events the shards emit go to [`Engine::emitted`] for a relay
    /// (a cluster's event stream), and [`Engine::events`], which
    /// subscribers read, is filled by that relay in the stream's order;
    /// otherwise both are one bus.
    pub relay_events: bool,
    /// Partitions the fleet's vehicles are spread over by id (0: one per
    /// shard); each shard drives those whose number modulo the shard
    /// count is its own. A vehicle's partition is the unit of its state
    /// (see [`partition`]).
    pub partitions: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            queue_capacity: 1024,
            queue_pings: 65_536,
            matcher: MatcherConfig::default(),
            detect: DetectConfig::default(),
            eta: EtaConfig::default(),
            traffic: TrafficConfig::default(),
            learning: true,
            traffic_every_s: 120.0,
            events_capacity: 1 << 16,
            max_observations_per_tick: 1 << 20,
            closed_retention_s: 86_400.0,
            history: false,
            max_history_pieces: 1 << 22,
            vehicle_fleets: Vec::new(),
            unranged_fleet: 0,
            working_hours: Vec::new(),
            service: Vec::new(),
            relay_events: false,
            partitions: 0,
        }
    }
}

/// Partitions a fleet may be spread over at most.
pub const MAX_PARTITIONS: usize = 4096;

/// How a submission treats a full shard queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Drop (and count) what does not fit now: datagrams, overload.
    Shed,
    /// Wait up to this long for room, then shed.
    Wait(Duration),
}

/// What became of a submitted batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Submitted {
    pub accepted: usize,
    pub shed: usize,
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("stop {0} is unknown")]
    UnknownStop(StopId),
    #[error("stop {stop} belongs to vehicle {vehicle}")]
    WrongVehicle { stop: StopId, vehicle: VehicleId },
    #[error("stop {0} already exists")]
    DuplicateStop(StopId),
    #[error("stop {0} is already completed or failed")]
    StopClosed(StopId),
    #[error("stop {stop} is not within {max_m} m of a road")]
    OffRoad { stop: StopId, max_m: f64 },
    #[error("stop {0} is not delivered: only a completed stop can be rated")]
    NotCompleted(StopId),
    #[error("stop {0} has been rated already")]
    AlreadyRated(StopId),
    #[error("a rating is 1 to 5 stars and a comment of at most 1000 bytes")]
    BadRating,
    #[error("the new order must name each open stop of the vehicle exactly once")]
    BadOrder,
    #[error("time or coordinates are not finite numbers")]
    NotFinite,
    #[error("zone {0} is unknown")]
    UnknownZone(ZoneId),
    #[error("zone {0} is given twice")]
    DuplicateZone(ZoneId),
    #[error("zone {zone}: {why}")]
    BadZone { zone: ZoneId, why: String },
    #[error("a fleet may have at most {zones} zones, with at most {points} points in all")]
    TooManyZones { zones: usize, points: usize },
    #[error("an odometer reading is 0 to {} km", upkeep::MAX_ODOMETER_M / 1000.0)]
    BadOdometer,
    #[error("the engine is overloaded: the shard queue stayed full")]
    Overloaded,
    #[error("the command could not be made durable: {0}")]
    Journal(String),
}

/// What a vehicle's list of stops shows beside each ETA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopBrief {
    pub pos: LatLon,
    /// The customer's rating, once given.
    pub stars: Option<u8>,
}

/// A stop's live view: its record, ETA and the vehicle's position.
#[derive(Clone, Debug, PartialEq)]
pub struct StopView {
    pub record: StopRecord,
    pub eta: Option<StopEta>,
    pub vehicle_pos: LatLon,
    pub vehicle_time: f64,
}

impl StopView {
    /// The stop's status: its outcome once closed (the registry has it at
    /// once, the vehicle's snapshot a moment later), else the snapshot's.
    pub fn status(&self) -> StopStatus {
        match (&self.record.outcome, &self.eta) {
            (Some(StopOutcome::Completed(_)), _) => StopStatus::Completed,
            (Some(StopOutcome::Failed { .. }), _) => StopStatus::Failed,
            (None, Some(e)) => e.status,
            (None, None) => StopStatus::Pending,
        }
    }
}

/// Figures of the whole engine.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub shards: ShardCounters,
    pub latency: Histogram,
    pub submitted: u64,
    pub shed: u64,
    pub queue_full: u64,
    pub ticks: u64,
    pub metric_updates: u64,
    pub edges_changed: u64,
    pub customization_ms: f64,
    /// Grid cells the traffic model tracks.
    pub traffic_tracked: usize,
    /// Arrivals learnt as ETA outcomes (see [`window`]).
    pub eta_outcomes: u64,
    pub full_customizations: u64,
    pub customization_failures: u64,
    /// Path pieces dropped because nobody took the history in time.
    pub history_dropped: u64,
    /// Closed stops dropped from memory after `closed_retention_s` (their
    /// durable record is the store's).
    pub stops_forgotten: u64,
}

struct ShardHandle {
    inbox: Sender<Msg>,
    /// Pings in `inbox` (the shard subtracts what it takes).
    queued: Arc<AtomicUsize>,
    report: Arc<Mutex<ShardReport>>,
    thread: Option<JoinHandle<()>>,
}

/// The fleet engine; share it by `Arc` (every method takes `&self`).
pub struct Engine {
    graph: Arc<Graph>,
    config: FleetConfig,
    shards: Vec<ShardHandle>,
    /// Partitions the vehicles are spread over ([`FleetConfig::partitions`]).
    partitions: usize,
    snapshots: Arc<SnapshotTable>,
    live: LiveIndex,
    events: Arc<EventBus>,
    /// Where the shards publish: `events` itself, or a relay's outbox.
    emitted: Arc<EventBus>,
    registry: RwLock<Registry>,
    coordinator: Mutex<Coordinator>,
    recycle: Receiver<Vec<(VehicleId, Ping)>>,
    submitted: AtomicU64,
    shed: AtomicU64,
    queue_full: AtomicU64,
    /// Where accepted commands are made durable, if anywhere.
    journal: OnceLock<Arc<dyn Journal>>,
    /// Sequence number of the last journalled command.
    journal_seq: AtomicU64,
    /// Where commands are ordered when several engines share them (a
    /// cluster's log), instead of by the registry lock.
    command_log: OnceLock<Arc<dyn CommandLog>>,
    /// How far the registry has read that log.
    recorded: command_log::Recorded,
    /// Where vehicles another engine drives are asked for.
    remote: OnceLock<Arc<dyn RemoteVehicles>>,
    /// Where what the engines learn is swapped.
    exchange: OnceLock<Arc<dyn LearningExchange>>,
    /// Finalised path pieces gathered at ticks, for [`Engine::take_history`].
    history: Mutex<Vec<PathPiece>>,
    /// Whether ticks learn ETA errors (with [`FleetConfig::learning`]),
    /// see [`Engine::set_window_learning`].
    window_learning: std::sync::atomic::AtomicBool,
}

/// The shard a vehicle lives on: the one driving its partition.
fn shard_of(vehicle: VehicleId, partitions: usize, shards: usize) -> usize {
    partition::partition_of(vehicle, partitions) % shards
}

impl Engine {
    /// Starts the shards on `graph` with its free-flow travel-time metric.
    /// Panics if the configuration is invalid (check it where it comes from
    /// user input with [`FleetConfig::validate`]).
    pub fn new(graph: Arc<Graph>, mut config: FleetConfig) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid fleet configuration: {e}");
        }
        if config.shards == 0 {
            config.shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        }
        // The edge R-tree and the free-flow customization are the two costs
        // of starting; they share nothing, so they overlap.
        let ((), metric) = rayon::join(
            || {
                graph.edge_index();
            },
            || Arc::new(CchMetric::for_metric(&Cch::new(&graph), Metric::Time)),
        );
        let snapshots = Arc::new(SnapshotTable::new());
        let live = LiveIndex::new();
        let events = Arc::new(EventBus::new(config.events_capacity));
        let emitted = if config.relay_events {
            Arc::new(EventBus::new(config.events_capacity))
        } else {
            events.clone()
        };
        let (recycle_tx, recycle) = bounded(4 * config.shards * config.queue_capacity.min(64));
        let shards = (0..config.shards)
            .map(|i| {
                let (tx, rx) = bounded(config.queue_capacity);
                let report = Arc::new(Mutex::new(ShardReport::default()));
                let queued = Arc::new(AtomicUsize::new(0));
                let outlets = Outlets {
                    snapshots: snapshots.clone(),
                    events: emitted.clone(),
                    report: report.clone(),
                    recycle: recycle_tx.clone(),
                    queued: queued.clone(),
                };
                let (g, c, m) = (graph.clone(), config.clone(), metric.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("shard-{i}"))
                    .spawn(move || shard::run(&g, &c, m, rx, outlets))
                    .expect("spawn a shard thread");
                ShardHandle {
                    inbox: tx,
                    queued,
                    report,
                    thread: Some(thread),
                }
            })
            .collect();
        let traffic = TrafficModel::new(&graph, config.traffic.clone());
        let registry = Registry {
            zone_sets: Arc::new(FleetZones::new(&config)),
            ..Registry::default()
        };
        Self {
            coordinator: Mutex::new(Coordinator {
                traffic,
                current: metric,
                job: None,
                job_changes: Vec::new(),
                errors: ErrorModel::default(),
                errors_published: ErrorModel::default(),
                published_at: f64::NEG_INFINITY,
                last_tick: f64::NEG_INFINITY,
                stats: EngineStats::default(),
            }),
            graph,
            partitions: config.partition_count(),
            config,
            shards,
            snapshots,
            live,
            events,
            emitted,
            registry: RwLock::new(registry),
            recycle,
            submitted: 0.into(),
            shed: 0.into(),
            queue_full: 0.into(),
            journal: OnceLock::new(),
            journal_seq: 0.into(),
            command_log: OnceLock::new(),
            recorded: Default::default(),
            remote: OnceLock::new(),
            exchange: OnceLock::new(),
            history: Mutex::new(Vec::new()),
            window_learning: true.into(),
        }
    }

    /// Journals every accepted command in `journal`, and acknowledges it
    /// only once durable there (once; false if a journal was already set).
    pub fn set_journal(&self, journal: Arc<dyn Journal>) -> bool {
        self.journal.set(journal).is_ok()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Partitions the vehicles are spread over (see [`partition_of`]).
    pub fn partition_count(&self) -> usize {
        self.partitions
    }

    /// Pings waiting in the shards' queues now.
    pub fn queued_pings(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        self.shards.iter().map(|h| h.queued.load(Relaxed)).sum()
    }

    /// Shard threads still running (fewer than [`Engine::shard_count`] only
    /// if one died: a bug, reported by the health check).
    pub fn shards_alive(&self) -> usize {
        self.shards
            .iter()
            .filter(|h| h.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .count()
    }

    /// The events subscribers read.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The events this engine's shards emitted, for a relay (the same bus
    /// as [`Engine::events`] unless [`FleetConfig::relay_events`]).
    pub fn emitted(&self) -> &Arc<EventBus> {
        &self.emitted
    }

    /// Sends one message to a shard under an admission policy. Ping batches
    /// also need room in the shard's ping budget (`queue_pings`).
    fn send(&self, shard: usize, mut msg: Msg, admission: Admission) -> Result<(), Msg> {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.shards[shard];
        let n = match &msg {
            Msg::Pings { pings, .. } => pings.len(),
            _ => 0,
        };
        let deadline = match admission {
            Admission::Shed => None,
            Admission::Wait(t) => Some(Instant::now() + t),
        };
        let mut counted = false;
        loop {
            let queued = h.queued.load(Relaxed);
            if n == 0 || queued == 0 || queued + n <= self.config.queue_pings {
                h.queued.fetch_add(n, Relaxed);
                match h.inbox.try_send(msg) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Disconnected(m)) => {
                        h.queued.fetch_sub(n, Relaxed);
                        return Err(m);
                    }
                    Err(TrySendError::Full(m)) => {
                        h.queued.fetch_sub(n, Relaxed);
                        msg = m;
                    }
                }
            }
            if !counted {
                self.queue_full.fetch_add(1, Relaxed);
                counted = true;
            }
            match deadline {
                Some(d) if Instant::now() < d => std::thread::sleep(Duration::from_micros(200)),
                _ => return Err(msg),
            }
        }
    }

    /// Control messages must arrive: wait for room (the shards always drain).
    fn send_control(&self, shard: usize, msg: Msg) {
        let _ = self.shards[shard].inbox.send(msg);
    }

    /// After a zone command: its fleet's zones indexed anew, to every
    /// shard in command order.
    fn send_zones(&self, reg: &mut Registry, cmd: &Command) {
        let fleet = match cmd {
            Command::PutZones { fleet, .. } | Command::RemoveZones { fleet, .. } => *fleet,
            _ => return,
        };
        let margin = self.config.detect.zone_margin_m;
        let sets = Arc::new(reg.zones.publish(&reg.zone_sets, Some(fleet), margin));
        reg.zone_sets = sets.clone();
        for shard in 0..self.shards.len() {
            self.send_control(shard, Msg::Zones(sets.clone()));
        }
    }

    /// Hands pings to their shards. A shard whose queue stays full gets
    /// nothing of this batch (counted as shed); the others are unaffected.
    pub fn submit(&self, pings: &[(VehicleId, Ping)], admission: Admission) -> Submitted {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.dispatch(pings, admission, None);
        self.submitted.fetch_add(result.accepted as u64, Relaxed);
        self.shed.fetch_add(result.shed as u64, Relaxed);
        result
    }

    /// The reliable path: hands pings to their shards without waiting, and
    /// gives back in `refused` (in their original order per vehicle) the
    /// pings of shards whose queue is full, for the caller to offer again
    /// later. Nothing is shed; a network front end stops reading its
    /// sender meanwhile, so the pressure reaches the device.
    pub fn offer(
        &self,
        pings: &[(VehicleId, Ping)],
        refused: &mut Vec<(VehicleId, Ping)>,
    ) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.dispatch(pings, Admission::Shed, Some(refused));
        self.submitted.fetch_add(result.accepted as u64, Relaxed);
        result.accepted
    }

    fn dispatch(
        &self,
        pings: &[(VehicleId, Ping)],
        admission: Admission,
        mut refused: Option<&mut Vec<(VehicleId, Ping)>>,
    ) -> Submitted {
        let n = self.shards.len();
        let mut parts: Vec<Vec<(VehicleId, Ping)>> = (0..n)
            .map(|_| {
                let mut v = self.recycle.try_recv().unwrap_or_default();
                v.clear();
                v
            })
            .collect();
        for &(id, p) in pings {
            parts[shard_of(id, self.partitions, n)].push((id, p));
        }
        let accepted_at = Instant::now();
        let mut result = Submitted::default();
        for (i, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let len = part.len();
            let msg = Msg::Pings {
                pings: part,
                accepted_at,
            };
            match self.send(i, msg, admission) {
                Ok(()) => result.accepted += len,
                Err(Msg::Pings { pings, .. }) if refused.is_some() => {
                    if let Some(r) = refused.as_mut() {
                        r.extend_from_slice(&pings);
                    }
                }
                Err(_) => result.shed += len,
            }
        }
        result
    }

    /// Checks a dispatcher's command against the registry, journals it
    /// (when a journal is set), records it, queues it for the vehicle's
    /// shard, and returns once the journal holds it durably. Completing or
    /// failing a stop, and every route change, is visible to
    /// [`Engine::stop`] on return.
    pub fn command(
        &self,
        cmd: Command,
        time: f64,
        admission: Admission,
    ) -> Result<(), CommandError> {
        if !time.is_finite() {
            return Err(CommandError::NotFinite);
        }
        if let Some(log) = self.logged() {
            return self.append_logged(log, time, |reg| {
                self.validate(reg, &cmd)?;
                Ok(vec![cmd.clone()])
            });
        }
        let seq = {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            self.validate(&reg, &cmd)?;
            self.execute(&mut reg, vec![cmd], time, admission)?
        };
        self.durable(seq)
    }

    /// Moves an open stop to another vehicle (at `index` among its open
    /// stops, or last): its removal and addition are one journal entry.
    pub fn reassign(
        &self,
        stop: StopId,
        to: VehicleId,
        index: Option<usize>,
        time: f64,
    ) -> Result<(), CommandError> {
        if !time.is_finite() {
            return Err(CommandError::NotFinite);
        }
        if let Some(log) = self.logged() {
            return self.append_logged(log, time, |reg| self.reassignment(reg, stop, to, index));
        }
        let seq = {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            let unit = self.reassignment(&reg, stop, to, index)?;
            let wait = Admission::Wait(Duration::from_secs(5));
            self.execute(&mut reg, unit, time, wait)?
        };
        self.durable(seq)
    }

    /// A reassignment as one unit: the stop's removal from its vehicle and
    /// its addition to `to`, checked.
    fn reassignment(
        &self,
        reg: &Registry,
        stop: StopId,
        to: VehicleId,
        index: Option<usize>,
    ) -> Result<Vec<Command>, CommandError> {
        let r = reg
            .stops
            .get(&stop)
            .ok_or(CommandError::UnknownStop(stop))?;
        if r.outcome.is_some() {
            return Err(CommandError::StopClosed(stop));
        }
        let remove = Command::RemoveStop {
            vehicle: r.vehicle,
            stop,
        };
        // The plan was checked when it was added; the stop is free for
        // the other vehicle once removed.
        let add = Command::AddStop {
            vehicle: to,
            stop: r.plan.clone(),
            index,
        };
        self.validate(reg, &remove)?;
        Ok(vec![remove, add])
    }

    /// Applies validated commands: room in their shards' queues first (so
    /// a journalled command is never refused afterwards), then the journal,
    /// then the registry and the shards. The caller holds the registry lock
    /// throughout, so the journal's order is the shards' order. Returns the
    /// journal's sequence number for [`Engine::durable`] (0 without one).
    fn execute(
        &self,
        reg: &mut Registry,
        cmds: Vec<Command>,
        time: f64,
        admission: Admission,
    ) -> Result<u64, CommandError> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.shards.len();
        for c in &cmds {
            match c.vehicle() {
                Some(v) => self.wait_for_room(shard_of(v, self.partitions, n), admission)?,
                None => {
                    for shard in 0..n {
                        self.wait_for_room(shard, admission)?;
                    }
                }
            }
        }
        let mut seq = 0;
        if let Some(j) = self.journal.get() {
            let closed: Vec<StopPlan> = cmds
                .iter()
                .filter_map(|c| match c {
                    Command::Complete { stop, .. } | Command::Fail { stop, .. } => {
                        reg.stops.get(stop).map(|r| r.plan.clone())
                    }
                    _ => None,
                })
                .collect();
            seq = j
                .append(&cmds, &closed, time)
                .map_err(CommandError::Journal)?;
            self.journal_seq.store(seq, Relaxed);
        }
        for cmd in cmds {
            apply(reg, &cmd, time);
            match cmd.vehicle() {
                Some(v) => {
                    self.send_control(shard_of(v, self.partitions, n), Msg::Command { cmd, time })
                }
                None => self.send_zones(reg, &cmd),
            }
        }
        Ok(seq)
    }

    /// Waits, outside the registry lock, until the journal holds a command
    /// durably: dispatchers arriving meanwhile are flushed together. The
    /// command is already applied; if the journal fails it refuses every
    /// later command, and a restart recovers what was durable.
    fn durable(&self, seq: u64) -> Result<(), CommandError> {
        match self.journal.get() {
            Some(j) if seq > 0 => j.sync(seq).map_err(CommandError::Journal),
            _ => Ok(()),
        }
    }

    /// Waits (per the admission) until a shard's queue has room for a message.
    fn wait_for_room(&self, shard: usize, admission: Admission) -> Result<(), CommandError> {
        use std::sync::atomic::Ordering::Relaxed;
        let inbox = &self.shards[shard].inbox;
        let deadline = match admission {
            Admission::Shed => None,
            Admission::Wait(t) => Some(Instant::now() + t),
        };
        let mut counted = false;
        while inbox.is_full() {
            if !counted {
                self.queue_full.fetch_add(1, Relaxed);
                counted = true;
            }
            match deadline {
                Some(d) if Instant::now() < d => std::thread::sleep(Duration::from_micros(200)),
                _ => return Err(CommandError::Overloaded),
            }
        }
        Ok(())
    }

    /// A barrier: returns once every shard has processed everything queued
    /// before the call.
    pub fn sync(&self) {
        let replies: Vec<Receiver<()>> = (0..self.shards.len())
            .map(|i| {
                let (tx, rx) = bounded(1);
                self.send_control(i, Msg::Sync(tx));
                rx
            })
            .collect();
        for r in replies {
            let _ = r.recv();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for h in &self.shards {
            let _ = h.inbox.send(Msg::Stop);
        }
        for h in &mut self.shards {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl FleetConfig {
    /// Partitions the vehicles are spread over (with `shards` resolved).
    pub fn partition_count(&self) -> usize {
        if self.partitions == 0 {
            self.shards.max(1)
        } else {
            self.partitions
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.partitions > MAX_PARTITIONS {
            return Err(format!("at most {MAX_PARTITIONS} partitions"));
        }
        self.matcher.validate().map_err(|e| e.to_string())?;
        self.detect.validate()?;
        if self.queue_capacity == 0 || self.queue_pings == 0 {
            return Err("queue_capacity and queue_pings must be at least 1".into());
        }
        self.eta.validate()
    }
}
