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

pub mod checkpoint;
pub mod detect;
pub mod eta;
pub mod events;
mod fleet_zones;
pub mod journal;
pub mod latency;
mod legs;
mod milestones;
mod partition;
mod path_code;
mod shard;
pub mod snapshot;
pub mod stops;
pub mod upkeep;
mod vehicle;
pub mod window;
mod zone_rules;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use lastmile_roadgraph::{Cch, CchMetric, Graph, LatLon, Metric};

pub use checkpoint::{Checkpoint, CheckpointError};
pub use detect::DetectConfig;
pub use eta::EtaConfig;
pub use events::{Event, EventBus, EventFilter, EventKind, ReadReport};
pub use fleet_zones::{MAX_POINTS_PER_FLEET, MAX_ZONES_PER_FLEET};
pub use journal::Journal;
pub use latency::Histogram;
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
use crate::live_index::{Found, LiveIndex};
use crate::matcher::MatcherConfig;
use crate::traffic::{EdgeObservation, TrafficConfig, TrafficModel};
use crate::zones::ZoneId;
use fleet_zones::{FleetZones, ZoneBook};
use shard::{Msg, Outlets, ShardReport};
use snapshot::{SnapshotCell, SnapshotTable};

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
        }
    }
}

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

/// A stop as the registry knows it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct StopRecord {
    pub vehicle: VehicleId,
    pub plan: StopPlan,
    pub outcome: Option<StopOutcome>,
    /// When it was completed or failed (event time).
    pub closed_at: Option<f64>,
    /// The customer's rating, once given (completed stops only).
    pub rating: Option<Rating>,
}

/// The authority on which stops exist and who has them.
#[derive(Default)]
struct Registry {
    stops: HashMap<StopId, StopRecord>,
    /// Each vehicle's open stops, in route order.
    routes: HashMap<VehicleId, Vec<StopId>>,
    /// Every fleet's zones, and what the shards were last sent of them.
    zones: ZoneBook,
    zone_sets: Arc<FleetZones>,
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

/// Learnt traffic and the metrics built from it.
struct Coordinator {
    traffic: TrafficModel,
    current: Arc<CchMetric>,
    /// The customization under way, installed at the next tick, and the
    /// changes it applies (a checkpoint saves them).
    job: Option<JoinHandle<Customized>>,
    job_changes: Vec<(u32, u32)>,
    /// The fleet's ETA errors, learnt from arrivals (see [`window`]).
    errors: ErrorModel,
    /// The model as of the windows the shards read (a checkpoint restores
    /// those windows exactly).
    errors_published: ErrorModel,
    /// Event time of the last publication.
    published_at: f64,
    /// Event time of the last tick (the engine's "now").
    last_tick: f64,
    stats: EngineStats,
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
    snapshots: Arc<SnapshotTable>,
    live: LiveIndex,
    events: Arc<EventBus>,
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
    /// Finalised path pieces gathered at ticks, for [`Engine::take_history`].
    history: Mutex<Vec<PathPiece>>,
    /// Whether ticks learn ETA errors (with [`FleetConfig::learning`]),
    /// see [`Engine::set_window_learning`].
    window_learning: std::sync::atomic::AtomicBool,
}

/// What [`Engine::write_checkpoint`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Saving {
    pub bytes: u64,
    pub vehicles: usize,
    /// Vehicles that could not be serialised (left out).
    pub failed: usize,
    /// The last journalled command it includes.
    pub journal_seq: u64,
}

/// What [`Engine::restore`] put back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    pub vehicles: usize,
    pub stops: usize,
    /// Zones of every fleet.
    pub zones: usize,
    /// Vehicles whose record did not decode, and zones this build refuses
    /// (the rest are restored).
    pub failed: Vec<String>,
    /// Edges of learnt traffic the new metric carries.
    pub traffic_edges: usize,
    /// The event time the engine had reached (its last tick): a server's
    /// clock resumes from here rather than jumping to the wall clock.
    pub event_time: f64,
}

/// A new metric and how much changed in it.
struct Customized {
    metric: Arc<CchMetric>,
    changed_edges: usize,
    full: bool,
    millis: f64,
}

/// Lowers the calling thread to the lowest scheduling priority (Linux; a
/// no-op elsewhere): for the engine's background work, traffic
/// customizations and the ticker's learning and index rebuilds. A
/// customization runs for most of a second, a live-index rebuild for tens of
/// milliseconds; on two cores beside two busy shards they shared the shards'
/// time slices, and every ping that arrived while its shard was descheduled
/// waited a slice (the latency p99). At the lowest priority a shard that
/// wakes takes the core at once, and the background work gets what the
/// shards leave.
pub fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads only its integer arguments; `0` is the
    // calling thread (Linux gives each thread its own nice value).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// `base` with the travel times of `changes` applied.
fn customize(graph: &Graph, base: &CchMetric, changes: Vec<(u32, u32)>) -> Customized {
    background_priority();
    let started = Instant::now();
    let cch = Cch::new(graph);
    // Partial customization costs about 0.11 ms per changed edge on the
    // 1M-edge city, a full pass on one thread about 0.3 µs per edge
    // (BENCHMARKS.md): past about one change in 350 edges the full pass is
    // cheaper.
    let full = changes.len() > graph.num_edges() / 350;
    let run = || {
        if full {
            let mut weights: Vec<u32> = (0..graph.num_edges() as u32)
                .map(|e| base.edge_weight(e))
                .collect();
            for &(e, w) in &changes {
                weights[e as usize] = w;
            }
            CchMetric::new(&cch, weights)
        } else {
            let mut next = base.clone();
            next.update(&cch, &changes);
            // A partial update drops the pruned search arcs; the shards'
            // queries are worth the perfect pass (in the background).
            if next.search_arcs().is_none() {
                next.perfect(&cch);
            }
            next
        }
    };
    // One thread: the shards keep the other core while it runs.
    let metric = match rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "traffic-customize".into())
        .start_handler(|_| background_priority())
        .build()
    {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };
    Customized {
        metric: Arc::new(metric),
        changed_edges: changes.len(),
        full,
        millis: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// The shard a vehicle lives on.
fn shard_of(vehicle: VehicleId, shards: usize) -> usize {
    let h = vehicle.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (vehicle >> 31);
    (((h >> 32) * shards as u64) >> 32) as usize
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
        let (recycle_tx, recycle) = bounded(4 * config.shards * config.queue_capacity.min(64));
        let shards = (0..config.shards)
            .map(|i| {
                let (tx, rx) = bounded(config.queue_capacity);
                let report = Arc::new(Mutex::new(ShardReport::default()));
                let queued = Arc::new(AtomicUsize::new(0));
                let outlets = Outlets {
                    snapshots: snapshots.clone(),
                    events: events.clone(),
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
            config,
            shards,
            snapshots,
            live,
            events,
            registry: RwLock::new(registry),
            recycle,
            submitted: 0.into(),
            shed: 0.into(),
            queue_full: 0.into(),
            journal: OnceLock::new(),
            journal_seq: 0.into(),
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

    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
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

    /// A fleet's zones as given (by id).
    pub fn zones(&self, fleet: u32) -> Vec<crate::zones::ZoneDef> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.zones.of_fleet(fleet).cloned().collect()
    }

    /// The fleet `vehicle` belongs to, as zones go (see [`fleet_zones`]).
    pub fn fleet_of(&self, vehicle: VehicleId) -> u32 {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.zone_sets.fleet_of(vehicle)
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
            parts[shard_of(id, n)].push((id, p));
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
        let seq = {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
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
            self.validate(&reg, &remove)?;
            let wait = Admission::Wait(Duration::from_secs(5));
            self.execute(&mut reg, vec![remove, add], time, wait)?
        };
        self.durable(seq)
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
                Some(v) => self.wait_for_room(shard_of(v, n), admission)?,
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
                Some(v) => self.send_control(shard_of(v, n), Msg::Command { cmd, time }),
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

    /// Re-applies commands read back from the journal after a restore (those
    /// after the checkpoint's [`Checkpoint::journal_seq`], in order). Their
    /// events were published before the restart and are not repeated. A
    /// command the registry no longer accepts is skipped; the number of those
    /// is returned.
    pub fn replay(&self, cmds: &[Command], time: f64) -> usize {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let n = self.shards.len();
        let mut skipped = 0;
        for cmd in cmds {
            let valid = match cmd {
                // The second half of a reassignment names a stop that the
                // first half has just freed; its plan was checked when added.
                Command::AddStop { stop, .. } => !reg.stops.contains_key(&stop.id),
                c => self.validate(&reg, c).is_ok(),
            };
            if !valid {
                skipped += 1;
                continue;
            }
            apply(&mut reg, cmd, time);
            let Some(v) = cmd.vehicle() else {
                self.send_zones(&mut reg, cmd);
                continue;
            };
            let msg = Msg::Replay {
                cmd: cmd.clone(),
                time,
            };
            self.send_control(shard_of(v, n), msg);
        }
        skipped
    }

    /// Notes the journal position a restored engine continues from.
    pub fn set_journal_seq(&self, seq: u64) {
        self.journal_seq
            .store(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a consistent checkpoint in memory (for tests and small fleets;
    /// a server streams it to disk with [`Engine::write_checkpoint`]).
    pub fn checkpoint(&self) -> Checkpoint {
        let mut blob = Vec::new();
        let (meta, vehicles, _) = self
            .save(|chunk| {
                blob.extend_from_slice(chunk);
                Ok(())
            })
            .expect("writing to memory does not fail");
        Checkpoint {
            meta,
            records: checkpoint::RecordsBuf::new(blob),
            vehicles,
        }
    }

    /// Streams a consistent checkpoint in the file format to `w`, holding
    /// no more than a few chunks of it in memory at a time.
    pub fn write_checkpoint(&self, w: &mut impl std::io::Write) -> std::io::Result<Saving> {
        let mut out = checkpoint::Writer::start(w)?;
        let (meta, vehicles, failed) = self.save(|chunk| out.records(chunk))?;
        Ok(Saving {
            bytes: out.finish(&meta, vehicles)?,
            vehicles,
            failed,
            journal_seq: meta.journal_seq,
        })
    }

    /// Takes a consistent checkpoint: every shard saves its vehicles at the
    /// same point of the command order (commands are held meanwhile, pings
    /// are not), with the registry and the learnt traffic as of then. The
    /// shards pause their pings while they serialise, handing their records
    /// to `records` in chunks; an error there abandons the checkpoint.
    fn save(
        &self,
        mut records: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<(checkpoint::Meta, usize, usize)> {
        use std::sync::atomic::Ordering::Relaxed;
        // A few chunks per shard in flight: enough to keep the shards
        // serialising while one is written.
        let (parts_tx, parts) = bounded::<shard::Saved>(2 * self.shards.len());
        let (journal_seq, stops, routes, zones) = {
            let reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Checkpoint(parts_tx.clone()));
            }
            let stops: Vec<(StopId, StopRecord)> =
                reg.stops.iter().map(|(k, v)| (*k, v.clone())).collect();
            let routes: Vec<(VehicleId, Vec<StopId>)> =
                reg.routes.iter().map(|(k, v)| (*k, v.clone())).collect();
            let zones = reg.zones.all();
            (self.journal_seq.load(Relaxed), stops, routes, zones)
        };
        // Only the shards hold senders now: the stream ends when all are done.
        drop(parts_tx);
        let (traffic, errors, metric_version, published_at, installed, pending, event_time) = {
            let co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            let installed: Vec<(u32, u32)> = (0..self.graph.num_edges() as u32)
                .filter_map(|e| {
                    let w = co.current.edge_weight(e);
                    (w != self.graph.travel_time_ms(e)).then_some((e, w))
                })
                .collect();
            let pending = if co.job.is_some() {
                co.job_changes.clone()
            } else {
                Vec::new()
            };
            (
                co.traffic.learnt(),
                [co.errors.clone(), co.errors_published.clone()],
                co.stats.metric_updates,
                co.published_at,
                installed,
                pending,
                co.last_tick,
            )
        };
        let (mut vehicles, mut failed) = (0, 0);
        let (mut observations, mut outcomes) = (Vec::new(), Vec::new());
        for part in &parts {
            match part {
                shard::Saved::Records(chunk) => records(&chunk)?,
                shard::Saved::Done(partition::SavedRest {
                    observations: mut o,
                    outcomes: mut e,
                    vehicles: v,
                    failed: f,
                }) => {
                    vehicles += v;
                    failed += f;
                    observations.append(&mut o);
                    outcomes.append(&mut e);
                }
            }
        }
        let meta = checkpoint::Meta {
            graph_fingerprint: self.graph.fingerprint(),
            journal_seq,
            event_time,
            metric_version,
            published_at,
            installed,
            pending,
            observations,
            outcomes,
            errors,
            stops,
            routes,
            zones,
            traffic,
        };
        Ok((meta, vehicles, failed))
    }

    /// Puts a checkpoint's state into this freshly started engine: the
    /// registry, the learnt traffic (and the metric it implies), and every
    /// vehicle, published at once so queries answer before the next ping.
    /// Refused whole if the checkpoint was taken on another graph.
    pub fn restore(&self, ckpt: Checkpoint) -> Result<Restored, CheckpointError> {
        if ckpt.meta.graph_fingerprint != self.graph.fingerprint() {
            return Err(CheckpointError::GraphMismatch);
        }
        let meta = ckpt.meta;
        let mut report = Restored {
            stops: meta.stops.len(),
            ..Restored::default()
        };
        {
            let mut co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            if !co.traffic.restore(&meta.traffic) {
                return Err(CheckpointError::Traffic);
            }
            co.published_at = meta.published_at;
            co.last_tick = meta.event_time;
            report.event_time = meta.event_time;
            report.traffic_edges = meta.installed.len();
            if !meta.installed.is_empty() {
                let done = customize(&self.graph, &co.current, meta.installed);
                co.current = done.metric.clone();
                for i in 0..self.shards.len() {
                    self.send_control(i, Msg::Metric(done.metric.clone()));
                }
            }
            // A customization that was under way is under way again, and
            // goes in at the next tick as it would have.
            if !meta.pending.is_empty() {
                self.start_customization(&mut co, meta.pending);
            }
            co.stats.metric_updates = meta.metric_version;
            let [errors, published] = meta.errors;
            co.errors = errors;
            co.errors_published = published;
            let windows = Arc::new(
                co.errors_published
                    .publish(&self.config.eta.window_params()),
            );
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Windows(windows.clone()));
            }
        }
        {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            reg.stops = meta.stops.into_iter().collect();
            reg.routes = meta.routes.into_iter().collect();
            let (zones, mut refused) = ZoneBook::restore(meta.zones);
            report.zones = zones.count();
            report.failed.append(&mut refused);
            reg.zones = zones;
            let margin = self.config.detect.zone_margin_m;
            let sets = Arc::new(reg.zones.publish(&reg.zone_sets, None, margin));
            reg.zone_sets = sets.clone();
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Zones(sets.clone()));
            }
        }
        self.set_journal_seq(meta.journal_seq);
        // Records go to the shard each vehicle lives on now: where each
        // one is in the shared buffer, not a copy.
        let n = self.shards.len();
        let mut parts: Vec<Vec<Range<usize>>> = vec![Vec::new(); n];
        let all = ckpt.records.as_slice();
        for r in checkpoint::Records(all) {
            let (id, record) = r?;
            let at = record.as_ptr() as usize - all.as_ptr() as usize;
            parts[shard_of(id, n)].push(at..at + record.len());
        }
        // The next tick sorts observations, so which shard holds them is moot.
        let mut observations = Some(meta.observations);
        let mut outcomes = Some(meta.outcomes);
        let replies: Vec<Receiver<(usize, Vec<String>)>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, ranges)| {
                let (tx, rx) = bounded(1);
                self.send_control(
                    i,
                    Msg::Restore {
                        records: ckpt.records.clone(),
                        ranges,
                        observations: observations.take().unwrap_or_default(),
                        outcomes: outcomes.take().unwrap_or_default(),
                        metric_version: meta.metric_version,
                        reply: tx,
                    },
                );
                rx
            })
            .collect();
        for r in replies {
            if let Ok((n, mut errors)) = r.recv() {
                report.vehicles += n;
                report.failed.append(&mut errors);
            }
        }
        Ok(report)
    }

    fn validate(&self, reg: &Registry, cmd: &Command) -> Result<(), CommandError> {
        let owned_open = |stop: StopId, vehicle: VehicleId| -> Result<(), CommandError> {
            let r = reg
                .stops
                .get(&stop)
                .ok_or(CommandError::UnknownStop(stop))?;
            if r.vehicle != vehicle {
                return Err(CommandError::WrongVehicle {
                    stop,
                    vehicle: r.vehicle,
                });
            }
            if r.outcome.is_some() {
                return Err(CommandError::StopClosed(stop));
            }
            Ok(())
        };
        let snaps = |plan: &StopPlan| -> Result<(), CommandError> {
            let mut near = Vec::new();
            let max_m = self.config.eta.stop_snap_m;
            legs::StopPlace::snap(&self.graph, plan.pos, max_m, &mut near)
                .map(|_| ())
                .ok_or(CommandError::OffRoad {
                    stop: plan.id,
                    max_m,
                })
        };
        match cmd {
            Command::AssignRoute { vehicle, stops } => {
                let mut seen = std::collections::HashSet::new();
                for s in stops {
                    if !seen.insert(s.id) {
                        return Err(CommandError::DuplicateStop(s.id));
                    }
                    if let Some(r) = reg.stops.get(&s.id) {
                        if r.vehicle != *vehicle {
                            return Err(CommandError::WrongVehicle {
                                stop: s.id,
                                vehicle: r.vehicle,
                            });
                        }
                        if r.outcome.is_some() {
                            return Err(CommandError::StopClosed(s.id));
                        }
                    }
                    snaps(s)?;
                }
                Ok(())
            }
            Command::AddStop { stop, .. } => {
                if reg.stops.contains_key(&stop.id) {
                    return Err(CommandError::DuplicateStop(stop.id));
                }
                snaps(stop)
            }
            Command::RemoveStop { vehicle, stop } => owned_open(*stop, *vehicle),
            Command::Complete { vehicle, stop, .. } | Command::Fail { vehicle, stop, .. } => {
                owned_open(*stop, *vehicle)
            }
            Command::Rate {
                vehicle,
                stop,
                rating,
            } => {
                let r = reg
                    .stops
                    .get(stop)
                    .filter(|r| r.vehicle == *vehicle)
                    .ok_or(CommandError::UnknownStop(*stop))?;
                if !matches!(r.outcome, Some(StopOutcome::Completed(_))) {
                    Err(CommandError::NotCompleted(*stop))
                } else if r.rating.is_some() {
                    Err(CommandError::AlreadyRated(*stop))
                } else if !rating.is_valid() {
                    Err(CommandError::BadRating)
                } else {
                    Ok(())
                }
            }
            Command::Reorder { vehicle, order } => {
                let mut want = reg.routes.get(vehicle).cloned().unwrap_or_default();
                let mut got = order.clone();
                want.sort_unstable();
                got.sort_unstable();
                if want == got {
                    Ok(())
                } else {
                    Err(CommandError::BadOrder)
                }
            }
            Command::PutZones { .. } | Command::RemoveZones { .. } => reg.zones.validate(cmd),
            Command::Upkeep { odometer_m, .. } => match odometer_m {
                Some(m) if !m.is_finite() => Err(CommandError::NotFinite),
                Some(m) if !(0.0..=upkeep::MAX_ODOMETER_M).contains(m) => {
                    Err(CommandError::BadOdometer)
                }
                _ => Ok(()),
            },
        }
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

    /// The periodic step at event time `now`: vehicles silent for too long
    /// go offline; the traffic observed since the last tick is learnt, and
    /// every `traffic_every_s` what changed becomes a new metric (partial
    /// customization of the changed edges, or a full pass when many
    /// changed), installed in every shard, which refresh the ETAs whose
    /// paths cross them. Returns the number of edges whose time changed.
    pub fn tick(&self, now: f64) -> usize {
        let replies: Vec<Receiver<partition::Gathered>> = (0..self.shards.len())
            .map(|i| {
                let (tx, rx) = bounded(1);
                self.send_control(i, Msg::Tick { now, reply: tx });
                rx
            })
            .collect();
        let mut observations: Vec<EdgeObservation> = Vec::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut dropped = 0;
        for r in replies {
            if let Ok(mut g) = r.recv() {
                observations.append(&mut g.observations);
                outcomes.append(&mut g.outcomes);
                if self.config.history {
                    let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
                    h.append(&mut g.history);
                    let cap = self.config.max_history_pieces;
                    if h.len() > cap {
                        let extra = h.len() - cap;
                        dropped += extra as u64;
                        h.drain(..extra);
                    }
                }
            }
        }
        let forgotten = {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            let horizon = now - self.config.closed_retention_s;
            let before = reg.stops.len();
            reg.stops
                .retain(|_, r| r.closed_at.is_none_or(|t| t >= horizon));
            (before - reg.stops.len()) as u64
        };
        let mut co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        co.stats.ticks += 1;
        co.stats.stops_forgotten += forgotten;
        co.stats.history_dropped += dropped;
        co.last_tick = co.last_tick.max(now);
        // The metric customized since the last publication goes in now:
        // every shard takes it at this tick's place in its queue, so the
        // results do not depend on how long the customization took.
        let installed = self.install_customized(&mut co);
        if !self.config.learning {
            return installed;
        }
        if self
            .window_learning
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.learn_errors(&mut co, &mut outcomes);
        }
        // The same observations in the same order whatever the shard count.
        observations.sort_by(|a, b| {
            a.time
                .total_cmp(&b.time)
                .then(a.edge.cmp(&b.edge))
                .then(a.metres.total_cmp(&b.metres))
                .then(a.seconds.total_cmp(&b.seconds))
        });
        for o in &observations {
            co.traffic.observe(&self.graph, o);
        }
        if now - co.published_at < self.config.traffic_every_s {
            return installed;
        }
        co.published_at = now;
        let mut changes = Vec::new();
        co.traffic.changes(&self.graph, now, &mut changes);
        co.stats.traffic_tracked = co.traffic.tracked();
        if !changes.is_empty() {
            self.start_customization(&mut co, changes);
        }
        installed
    }

    /// Learns the ETA outcomes of a tick (in an order that does not depend
    /// on the shards), and publishes the windows to the shards every
    /// `traffic_every_s`, as traffic, when anything was learnt.
    fn learn_errors(&self, co: &mut Coordinator, outcomes: &mut [Outcome]) {
        Outcome::sort(outcomes);
        let params = self.config.eta.window_params();
        for o in outcomes.iter() {
            co.errors.learn(o, &params);
        }
        co.stats.eta_outcomes += outcomes.len() as u64;
        let unpublished = co.errors.outcomes() != co.errors_published.outcomes();
        if unpublished && co.last_tick - co.published_at >= self.config.traffic_every_s {
            co.errors_published = co.errors.clone();
            let windows = Arc::new(co.errors.publish(&params));
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Windows(windows.clone()));
            }
        }
    }

    /// What the windows of `fleet`'s vehicles moving or `standing` have
    /// learnt (see [`ErrorModel::ratios`]).
    pub fn learnt_ratios(&self, fleet: u32, standing: bool) -> Vec<(f64, [f64; 3], f64)> {
        let params = self.config.eta.window_params();
        let co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        co.errors.ratios(fleet, standing, &params)
    }

    /// Turns the learning of ETA errors (the windows) on or off from the
    /// next tick: what is learnt so far stays. An evaluation learns them
    /// from one set of trips and is judged on another with it off (live
    /// traffic is learnt on, as in service: it is what the fleet sees now).
    pub fn set_window_learning(&self, on: bool) {
        self.window_learning
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Customizes `changes` into the current metric off the ingest path;
    /// installed at the next tick.
    fn start_customization(&self, co: &mut Coordinator, changes: Vec<(u32, u32)>) {
        let (graph, base) = (self.graph.clone(), co.current.clone());
        co.job_changes = changes.clone();
        co.job = Some(
            std::thread::Builder::new()
                .name("traffic-customize".into())
                .spawn(move || customize(&graph, &base, changes))
                .expect("spawn the customization thread"),
        );
    }

    /// Installs the metric a background customization finished (waiting
    /// for it if need be); returns the number of edges it changed.
    fn install_customized(&self, co: &mut Coordinator) -> usize {
        let Some(job) = co.job.take() else { return 0 };
        let Ok(done) = job.join() else {
            // A panic in customization is a bug; routing carries on with the
            // metric it has rather than taking the engine down.
            co.stats.customization_failures += 1;
            return 0;
        };
        co.stats.customization_ms += done.millis;
        co.stats.metric_updates += 1;
        co.stats.edges_changed += done.changed_edges as u64;
        co.stats.full_customizations += u64::from(done.full);
        co.current = done.metric.clone();
        for i in 0..self.shards.len() {
            self.send_control(i, Msg::Metric(done.metric.clone()));
        }
        done.changed_edges
    }

    /// Moves the finalised path pieces gathered so far (as of the last
    /// tick; each vehicle's in time order) into `out`. Empty unless
    /// [`FleetConfig::history`] is on.
    pub fn take_history(&self, out: &mut Vec<PathPiece>) {
        out.append(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The current routing metric (free flow plus learnt traffic).
    pub fn metric(&self) -> Arc<CchMetric> {
        self.coordinator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .clone()
    }

    /// The learnt travel time of an edge at `now`, ms.
    pub fn learnt_travel_time_ms(&self, edge: u32, now: f64) -> u32 {
        let co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        co.traffic.travel_time_ms(&self.graph, edge, now)
    }

    /// Rebuilds the live-vehicle R-tree from the latest positions (call it
    /// about once a second for nearest/box answers that fresh).
    pub fn refresh_index(&self, now: f64) {
        let positions: Vec<_> = self
            .snapshots
            .iter()
            .filter_map(|e| {
                snapshot::read(e.value())
                    .live_position()
                    .map(|p| (*e.key(), p))
            })
            .collect();
        self.live.rebuild(now, positions);
    }

    // ---------------------------------------------------------------- queries

    /// A vehicle's latest state.
    pub fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        let cell = self.snapshots.get(&id)?.clone();
        let snapshot = snapshot::read(&cell).clone();
        Some(snapshot)
    }

    /// Reads a vehicle's latest state in place (no copy).
    pub fn with_vehicle<R>(
        &self,
        id: VehicleId,
        f: impl FnOnce(&VehicleSnapshot) -> R,
    ) -> Option<R> {
        let cell = self.snapshots.get(&id)?.clone();
        let snapshot = snapshot::read(&cell);
        Some(f(&snapshot))
    }

    /// Every vehicle's id (any order).
    pub fn vehicle_ids(&self) -> Vec<VehicleId> {
        self.snapshots.iter().map(|e| *e.key()).collect()
    }

    /// One stop: its record, ETA and "stops before yours", and where its vehicle is.
    pub fn stop(&self, id: StopId) -> Option<StopView> {
        let record = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            reg.stops.get(&id)?.clone()
        };
        let (eta, vehicle_pos, vehicle_time) = self
            .with_vehicle(record.vehicle, |v| {
                (v.stop(id).copied(), v.pos, v.matched_time)
            })
            .unwrap_or((None, LatLon::new(f64::NAN, f64::NAN), f64::NAN));
        Some(StopView {
            record,
            eta,
            vehicle_pos,
            vehicle_time,
        })
    }

    /// Where each of `stops` is planned and the stars its customer gave
    /// (`None` for a stop the registry no longer holds), under one read of
    /// the registry.
    pub fn stop_briefs(&self, stops: impl IntoIterator<Item = StopId>) -> Vec<Option<StopBrief>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        stops
            .into_iter()
            .map(|s| {
                reg.stops.get(&s).map(|r| StopBrief {
                    pos: r.plan.pos,
                    stars: r.rating.as_ref().map(|r| r.stars),
                })
            })
            .collect()
    }

    /// Every stop the registry holds, with its vehicle (any order).
    pub fn stop_owners(&self) -> Vec<(StopId, VehicleId)> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.stops.iter().map(|(s, r)| (*s, r.vehicle)).collect()
    }

    /// The vehicle's open stops in route order, as the registry has them.
    pub fn route(&self, vehicle: VehicleId) -> Vec<StopId> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.routes.get(&vehicle).cloned().unwrap_or_default()
    }

    /// The `k` vehicles nearest to `p` (as of the last index refresh).
    pub fn nearest(&self, p: LatLon, k: usize, out: &mut Vec<Found>) {
        self.live.nearest(p, k, out);
    }

    /// Vehicles in `[min_lon, min_lat, max_lon, max_lat]`.
    pub fn in_box(&self, b: [f64; 4], out: &mut Vec<Found>) {
        self.live.in_box(b, out);
    }

    /// Counters and latency so far.
    pub fn stats(&self) -> EngineStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = self
            .coordinator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone();
        for h in &self.shards {
            let r = h.report.lock().unwrap_or_else(|p| p.into_inner());
            s.shards.add(&r.counters);
            s.latency.merge_from(&mut r.latency.clone());
        }
        s.submitted = self.submitted.load(Relaxed);
        s.shed = self.shed.load(Relaxed);
        s.queue_full = self.queue_full.load(Relaxed);
        s
    }

    /// Forgets the latency recorded so far (a benchmark's warm-up).
    pub fn reset_latency(&self) {
        for h in &self.shards {
            h.report.lock().unwrap_or_else(|p| p.into_inner()).latency = Histogram::default();
        }
    }

    /// Bytes of live state per vehicle: the shards' vehicles (as of the last
    /// tick or sync), their snapshots and their live-index entries.
    pub fn bytes_per_vehicle(&self) -> f64 {
        let vehicles = self.snapshots.len().max(1);
        let shard_bytes: u64 = self
            .shards
            .iter()
            .map(|h| {
                h.report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counters
                    .vehicle_bytes
            })
            .sum();
        let snap_bytes: usize = self
            .snapshots
            .iter()
            .map(|e| {
                std::mem::size_of::<(VehicleId, SnapshotCell)>()
                    + std::mem::size_of::<Mutex<VehicleSnapshot>>()
                    + 16
                    + snapshot::read(e.value()).stops.capacity() * std::mem::size_of::<StopEta>()
            })
            .sum();
        let live =
            self.live.len() * (std::mem::size_of::<crate::live_index::LivePosition>() + 8 + 48);
        (shard_bytes as f64 + snap_bytes as f64 + live as f64) / vehicles as f64
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

/// Records an accepted command in the registry.
fn apply(reg: &mut Registry, cmd: &Command, time: f64) {
    match cmd {
        Command::AssignRoute { vehicle, stops } => {
            let old = reg.routes.remove(vehicle).unwrap_or_default();
            for id in old {
                reg.stops.remove(&id);
            }
            for s in stops {
                reg.stops.insert(
                    s.id,
                    StopRecord {
                        vehicle: *vehicle,
                        plan: s.clone(),
                        outcome: None,
                        closed_at: None,
                        rating: None,
                    },
                );
            }
            reg.routes
                .insert(*vehicle, stops.iter().map(|s| s.id).collect());
        }
        Command::AddStop {
            vehicle,
            stop,
            index,
        } => {
            reg.stops.insert(
                stop.id,
                StopRecord {
                    vehicle: *vehicle,
                    plan: stop.clone(),
                    outcome: None,
                    closed_at: None,
                    rating: None,
                },
            );
            let route = reg.routes.entry(*vehicle).or_default();
            let at = index.unwrap_or(route.len()).min(route.len());
            route.insert(at, stop.id);
        }
        Command::RemoveStop { vehicle, stop } => {
            reg.stops.remove(stop);
            if let Some(r) = reg.routes.get_mut(vehicle) {
                r.retain(|s| s != stop);
            }
        }
        Command::Reorder { vehicle, order } => {
            reg.routes.insert(*vehicle, order.clone());
        }
        Command::Complete {
            vehicle,
            stop,
            proof,
        } => {
            close(
                reg,
                *vehicle,
                *stop,
                StopOutcome::Completed(proof.clone()),
                time,
            );
        }
        Command::Fail {
            vehicle,
            stop,
            reason,
        } => {
            close(
                reg,
                *vehicle,
                *stop,
                StopOutcome::Failed {
                    reason: reason.clone(),
                },
                time,
            );
        }
        Command::Rate { stop, rating, .. } => {
            if let Some(r) = reg.stops.get_mut(stop) {
                r.rating = Some(rating.clone());
            }
        }
        Command::PutZones { .. } | Command::RemoveZones { .. } => {
            reg.zones.apply(cmd);
        }
        // The vehicle's own counters: its shard's.
        Command::Upkeep { .. } => {}
    }
}

fn close(reg: &mut Registry, vehicle: VehicleId, stop: StopId, outcome: StopOutcome, time: f64) {
    if let Some(r) = reg.stops.get_mut(&stop) {
        r.outcome = Some(outcome);
        r.closed_at = Some(time);
    }
    if let Some(r) = reg.routes.get_mut(&vehicle) {
        r.retain(|s| *s != stop);
    }
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.matcher.validate().map_err(|e| e.to_string())?;
        self.detect.validate()?;
        if self.queue_capacity == 0 || self.queue_pings == 0 {
            return Err("queue_capacity and queue_pings must be at least 1".into());
        }
        self.eta.validate()
    }
}
