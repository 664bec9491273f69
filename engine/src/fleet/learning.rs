//! Learning at ticks: the traffic the shards observed becomes a new
//! routing metric (customized in the background, installed at a later
//! tick in every shard), and the ETA errors of reached stops become new
//! arrival windows; the learnt state as queries read it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, bounded};
use lastmile_roadgraph::{Cch, CchMetric, Graph};

use super::shard::Msg;
use super::window::{ErrorModel, Outcome};
use super::{Engine, EngineStats, partition};
use crate::traffic::{EdgeObservation, TrafficModel};

/// Learnt traffic and the metrics built from it.
pub(super) struct Coordinator {
    pub(super) traffic: TrafficModel,
    pub(super) current: Arc<CchMetric>,
    /// The customization under way, installed at the next tick, and the
    /// changes it applies (a checkpoint saves them).
    pub(super) job: Option<JoinHandle<Customized>>,
    pub(super) job_changes: Vec<(u32, u32)>,
    /// The fleet's ETA errors, learnt from arrivals (see [`window`]).
    pub(super) errors: ErrorModel,
    /// The model as of the windows the shards read (a checkpoint restores
    /// those windows exactly).
    pub(super) errors_published: ErrorModel,
    /// Event time of the last publication.
    pub(super) published_at: f64,
    /// Event time of the last tick (the engine's "now").
    pub(super) last_tick: f64,
    pub(super) stats: EngineStats,
}

/// A new metric and how much changed in it.
pub(super) struct Customized {
    pub(super) metric: Arc<CchMetric>,
    pub(super) changed_edges: usize,
    pub(super) full: bool,
    pub(super) millis: f64,
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
pub(super) fn customize(graph: &Graph, base: &CchMetric, changes: Vec<(u32, u32)>) -> Customized {
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

impl Engine {
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
        for r in replies {
            if let Ok(mut g) = r.recv() {
                observations.append(&mut g.observations);
                outcomes.append(&mut g.outcomes);
                self.keep_history(&mut g.history);
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
        co.last_tick = co.last_tick.max(now);
        // The metric customized since the last publication goes in now:
        // every shard takes it at this tick's place in its queue, so the
        // results do not depend on how long the customization took.
        let installed = self.install_customized(&mut co);
        if !self.config.learning {
            return installed;
        }
        // In a cluster: what the other nodes' partitions taught them.
        self.exchange(&mut observations, &mut outcomes);
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
    pub(super) fn learn_errors(&self, co: &mut Coordinator, outcomes: &mut [Outcome]) {
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
    pub(super) fn start_customization(&self, co: &mut Coordinator, changes: Vec<(u32, u32)>) {
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
    pub(super) fn install_customized(&self, co: &mut Coordinator) -> usize {
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
}
