//! One lastmile node at run time: the engine (or the counting sink) with
//! everything every front end shares about it — configuration, tokens and
//! fleets, names, the store, the event-time clock, the memory guard — and
//! the background threads that drive it in wall time: the ticker (offline
//! checks, traffic publication, live index refresh, history hand-over, at
//! the event-time clock), the event pump (persists what the shards publish
//! and tells the front ends the bus grew, so they wake their subscribers),
//! the checkpointer and the memory sampler. The front ends (QUIC, HTTP)
//! each hold an `Arc<Node>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use lastmile_engine::MatchStatus;
use lastmile_engine::fleet::EventKind;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::durable::Durable;
use crate::ids::{Ids, Kind};
use crate::memory::MemoryGuard;
use crate::sink::Sink;

pub struct Node {
    pub config: Config,
    pub auth: Auth,
    /// Fleets' names for their vehicles and stops.
    pub ids: Ids,
    pub sink: Sink,
    pub clock: Clock,
    /// The store and checkpoints, unless running from memory only.
    pub durable: Option<Arc<Durable>>,
    /// Holds new pings while memory is over the configured bound.
    pub memory: MemoryGuard,
    /// The event bus's readable id, bumped by the event pump: front ends
    /// wait on it to wake their subscribers.
    pub events: watch::Receiver<u64>,
    /// Per-address limits on connections and on guessing tokens, shared by
    /// every front end: an address's wrong tokens count the same whichever
    /// door they were tried at.
    pub guard: crate::guard::AddressGuard,
    /// The driver apps' devices (the OsmAnd door) and what they reported.
    pub devices: crate::devices::Devices,
    /// Late positions being placed in the history.
    pub backfill: crate::backfill::Backfill,
    /// The webhook endpoints' delivery, once started.
    pub webhooks: crate::endpoints::Registry,
    /// This node's part in a cluster, once joined (never, alone).
    pub cluster: std::sync::OnceLock<Arc<lastmile_cluster::Member>>,
    /// Counters the front ends add to the node's, so every statistics
    /// answer (QUIC GET_STATS, `/metrics`) carries every front end's.
    front_stats: std::sync::Mutex<Vec<StatsSource>>,
}

/// A front end's counters, read when statistics are asked for.
pub type StatsSource = Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// A started node; stops its background threads when dropped.
pub struct Running {
    pub node: Arc<Node>,
    _background: Background,
}

impl Node {
    /// Builds the node (the names read back from the store) and starts its
    /// background threads. `resume_clock`: the event time a restored engine
    /// had reached (NaN: none). `names`: a cluster's shared directory of
    /// names, used instead of the store's.
    pub fn start(
        config: Config,
        sink: Sink,
        auth: Auth,
        durable: Option<Arc<Durable>>,
        resume_clock: f64,
        names: Option<Arc<dyn crate::ids::Directory>>,
    ) -> anyhow::Result<Running> {
        let ids = match names {
            Some(d) => Ids::shared(config.limits.max_ids_per_fleet, d),
            None => Ids::new(config.limits.max_ids_per_fleet),
        };
        if let Some(d) = &durable {
            d.store
                .load_names(&ids)
                .context("reading the fleets' names")?;
        }
        if let Some(engine) = sink.engine() {
            // Stops planned by a version without names keep their numbers
            // as names in their vehicle's fleet.
            for (stop, vehicle) in engine.stop_owners() {
                if let Some(scope) = auth.range_scope(vehicle) {
                    ids.adopt_number(&scope, Kind::Stop, stop);
                }
            }
        }
        let (events_tx, events_rx) = watch::channel(0u64);
        let memory = MemoryGuard::new(config.limits.max_memory_mb);
        let guard = crate::guard::AddressGuard::new(
            config.limits.max_connections_per_address,
            config.limits.auth_failures_burst,
            config.limits.auth_failures_per_minute,
        );
        let devices =
            crate::devices::Devices::new(&config.devices, &auth, config.limits.max_ids_per_fleet)?;
        let node = Arc::new(Node {
            guard,
            devices,
            backfill: Default::default(),
            webhooks: Default::default(),
            config,
            auth,
            ids,
            sink,
            clock: Clock::default(),
            durable,
            memory,
            events: events_rx,
            front_stats: std::sync::Mutex::new(Vec::new()),
            cluster: std::sync::OnceLock::new(),
        });
        // Event time goes on from where the engine was, not from the wall clock.
        node.clock.observe(resume_clock);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if node.memory.bound_bytes().is_some() {
            let (s, st) = (node.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("lastmile-memory".into())
                    .spawn(move || {
                        while !st.load(Relaxed) {
                            if let Some((rss, _)) = rss_bytes() {
                                s.memory.observe(rss);
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })?,
            );
        }
        if let Some(engine) = node.sink.engine().cloned() {
            let (s, st) = (node.clone(), stop.clone());
            let tick = Duration::from_millis(node.config.engine.tick_ms);
            threads.push(
                std::thread::Builder::new()
                    .name("lastmile-ticker".into())
                    .spawn(move || {
                        // Learning, index rebuilds and ticks are background
                        // work: the shards and the front end come first.
                        lastmile_engine::fleet::background_priority();
                        while !st.load(Relaxed) {
                            std::thread::sleep(tick);
                            yield_engine_threads(s.config.engine.nice);
                            // Event time starts with the first ping (or the
                            // restored state): a tick on the wall clock
                            // before it would put the engine's time ahead of
                            // a replayed day, and a restart would resume there.
                            if s.clock.watermark().is_none() {
                                continue;
                            }
                            let now = s.clock.now();
                            engine.tick(now);
                            engine.refresh_index(now);
                            if let Some(d) = &s.durable {
                                d.gather_history(&engine, false);
                            }
                        }
                    })?,
            );
            let engine = node.sink.engine().cloned().expect("checked above");
            let (st, durable) = (stop.clone(), node.durable.clone());
            let retention_s = node.config.store.event_retention_s;
            threads.push(
                std::thread::Builder::new()
                    .name("lastmile-events".into())
                    .spawn(move || {
                        // Persists what the shards publish (when durable),
                        // then wakes the subscribers.
                        let bus = engine.events().clone();
                        let mut cursor = bus.readable_id();
                        let mut expired_at = std::time::Instant::now();
                        while !st.load(Relaxed) {
                            let waiting = match &durable {
                                Some(_) => bus
                                    .wait_published(bus.readable_id(), Duration::from_millis(100)),
                                None => bus.wait(cursor, Duration::from_millis(100)),
                            };
                            if let Some(d) = &durable {
                                if waiting && d.persist_events(&engine) == 0 {
                                    // The store refused: retry shortly, not in a spin.
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                if expired_at.elapsed() >= Duration::from_secs(60) {
                                    expired_at = std::time::Instant::now();
                                    d.expire_events(retention_s);
                                }
                            }
                            let readable = bus.readable_id();
                            if readable != cursor {
                                cursor = readable;
                                let _ = events_tx.send(cursor);
                            }
                        }
                    })?,
            );
            if let Some(durable) = node.durable.clone() {
                let engine = node.sink.engine().cloned().expect("checked above");
                let (st, s) = (stop.clone(), node.clone());
                let every = Duration::from_secs_f64(node.config.store.checkpoint_every_s);
                threads.push(
                    std::thread::Builder::new()
                        .name("lastmile-checkpoint".into())
                        .spawn(move || {
                            let mut last = std::time::Instant::now();
                            let mut expired = None::<std::time::Instant>;
                            while !st.load(Relaxed) {
                                std::thread::sleep(Duration::from_millis(100));
                                // History is kept by event time: none is
                                // known before the first ping.
                                if let Some(now) = s.clock.watermark()
                                    && expired
                                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
                                {
                                    expired = Some(std::time::Instant::now());
                                    durable
                                        .expire_history(now - s.config.store.history_retention_s);
                                }
                                if last.elapsed() >= every {
                                    last = std::time::Instant::now();
                                    if let Ok(w) = durable.checkpoint(&engine) {
                                        tracing::debug!(
                                            bytes = w.bytes,
                                            vehicles = w.vehicles,
                                            ms = format!("{:.0}", w.total_ms),
                                            "checkpoint written"
                                        );
                                    }
                                }
                            }
                        })?,
                );
            }
        }
        Ok(Running {
            node,
            _background: Background { stop, threads },
        })
    }

    /// The engine id a caller's name stands for, if its fleet has one by
    /// that name (`None` also for what another fleet has: the same answer).
    pub fn find_name(
        &self,
        who: &crate::auth::Principal,
        kind: Kind,
        name: &str,
    ) -> Result<Option<u64>, crate::ids::IdError> {
        self.ids.find(&self.auth.scope(who), kind, name)
    }

    /// How a caller sees an engine id: its fleet's name for it (numbers
    /// only, for clients that have nothing else).
    pub fn name_of(
        &self,
        who: &crate::auth::Principal,
        kind: Kind,
        id: u64,
        numbers_only: bool,
    ) -> String {
        self.ids
            .label(&self.auth.scope(who), kind, id, numbers_only)
    }

    /// Adds a front end's counters to [`stats`](Self::stats).
    pub fn add_stats(&self, source: StatsSource) {
        self.front_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// The node's counters (memory, process, store, engine) and those the
    /// front ends added, as each front end reports them after its own.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let sources = self
            .front_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for source in sources {
            out.extend(source());
        }
        if let Some((now, peak)) = rss_bytes() {
            out.push(("process_rss_bytes".into(), now));
            out.push(("process_peak_rss_bytes".into(), peak));
        }
        let m = &self.memory;
        out.push(("memory_bound_bytes".into(), m.bound_bytes().unwrap_or(0)));
        out.push(("memory_over".into(), u64::from(m.over())));
        out.push(("memory_episodes".into(), m.episodes.load(Relaxed)));
        if let Some(cpu) = cpu_ms_by_role() {
            out.push(("cpu_ms_engine".into(), cpu[0]));
            out.push(("cpu_ms_io".into(), cpu[1]));
            out.push(("cpu_ms_other".into(), cpu[2]));
        }
        if let Some(m) = self.cluster.get() {
            out.extend(cluster_stats(m));
        }
        if let Some(d) = &self.durable {
            let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
            out.push(("events_persisted".into(), c(&d.events_persisted)));
            out.push(("events_unpersisted".into(), c(&d.events_unpersisted)));
            out.push(("store_failures".into(), c(&d.store_failures)));
            out.push(("checkpoints_written".into(), c(&d.checkpoints_written)));
            out.push((
                "history_pieces_written".into(),
                c(&d.history_pieces_written),
            ));
            out.push(("checkpoint_failures".into(), c(&d.checkpoint_failures)));
            let w = *d.last_checkpoint.lock().unwrap_or_else(|p| p.into_inner());
            out.push(("checkpoint_bytes".into(), w.bytes));
            out.push(("checkpoint_vehicles".into(), w.vehicles as u64));
            out.push(("checkpoint_ms".into(), w.total_ms as u64));
            let (units, flushes) = d.store.journal_flushes();
            out.push(("journal_commands".into(), units));
            out.push(("journal_flushes".into(), flushes));
            out.push((
                "store_failed".into(),
                u64::from(d.store.failure().is_some()),
            ));
            let l = d.store.commit_latency();
            out.push(("store_commits".into(), l.count()));
            out.push((
                "store_commit_p99_us".into(),
                l.quantile(0.99).as_micros() as u64,
            ));
        }
        match &self.sink {
            Sink::Engine(e) => {
                let s = e.stats();
                out.push(("engine_submitted".into(), s.submitted));
                out.push(("engine_shed".into(), s.shed));
                out.push(("engine_queue_depth_pings".into(), e.queued_pings() as u64));
                out.push(("engine_queue_full".into(), s.queue_full));
                out.push(("engine_pings_processed".into(), s.shards.pings));
                out.push(("engine_ticks".into(), s.ticks));
                out.push(("engine_metric_updates".into(), s.metric_updates));
                out.push(("engine_stops_forgotten".into(), s.stops_forgotten));
                out.push(("engine_vehicles".into(), s.shards.vehicles));
                out.push(("engine_events".into(), e.events().next_id()));
                let c = &s.shards;
                // ETA work: path searches for the leg to the next stop (and
                // between later stops), by cause, and re-timings on a new
                // metric without a search.
                out.push(("engine_leg_searches".into(), c.leg_routes));
                out.push(("engine_stop_leg_searches".into(), c.stop_leg_routes));
                out.push(("engine_reroutes_off_path".into(), c.reroutes));
                out.push(("engine_refreshes".into(), c.refreshes));
                out.push(("engine_traffic_reroutes".into(), c.traffic_reroutes));
                out.push(("engine_retimes".into(), c.retimes));
                out.push(("engine_unroutable".into(), c.unroutable));
                out.push(("engine_matcher_forced".into(), c.matcher.forced));
                for status in MatchStatus::ALL {
                    let name = format!("matcher_pings_{}", status.as_str());
                    out.push((name, c.matcher.count(status)));
                }
                for kind in EventKind::ALL {
                    out.push((
                        format!("events_kind_{}", kind.as_str()),
                        c.event_count(kind),
                    ));
                }
                out.push((
                    "engine_latency_p50_us".into(),
                    s.latency.quantile(0.5).as_micros() as u64,
                ));
                out.push((
                    "engine_latency_p99_us".into(),
                    s.latency.quantile(0.99).as_micros() as u64,
                ));
            }
            Sink::Counting(n) => out.push(("sink_counted".into(), n.load(Relaxed))),
        }
        out
    }

    /// Drains before a stop: everything accepted is processed, its events
    /// persisted, and the state checkpointed, so a restart resumes exactly
    /// here. Blocks; call once the front ends have stopped taking input.
    pub fn drain(&self) {
        let Some(e) = self.sink.engine() else { return };
        e.sync();
        if let Some(d) = &self.durable {
            // A last tick hands over the path driven since the one before.
            if self.clock.watermark().is_some() {
                e.tick(self.clock.now());
            }
            d.gather_history(e, true);
            d.persist_events(e);
            match d.checkpoint(e) {
                Ok(w) => tracing::info!(
                    bytes = w.bytes,
                    vehicles = w.vehicles,
                    ms = format!("{:.0}", w.total_ms),
                    "final checkpoint written"
                ),
                Err(err) => tracing::error!(error = %err, "final checkpoint failed"),
            }
            if let Err(err) = d.store.flush() {
                tracing::error!(error = %err, "flushing the store failed");
            }
        }
    }
}

/// Background threads; stopped and joined on drop.
struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Lowers the scheduling priority of the engine's shards (called at every
/// tick, for threads that came since) so
/// that on a saturated machine the front end — acknowledgements, queries —
/// runs first and answers within its budget, while the engine, which has
/// queues, absorbs the wait. Linux only; a no-op elsewhere or at 0.
fn yield_engine_threads(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        if nice == 0 {
            return;
        }
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            // The ticker and traffic customizations lower themselves further
            // (to 19, see `background_priority`).
            let engine = comm.starts_with("shard-");
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::id_t>().ok())
            else {
                continue;
            };
            if engine {
                // SAFETY: setpriority only reads its integer arguments; a
                // thread that ended meanwhile makes it fail, harmlessly.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, tid, nice);
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// CPU time (user + system, ms) of the process's threads by role: engine
/// shards and their helpers, the QUIC front end (tokio workers), the rest
/// (main, ticker, event pump, blocking pool). Linux; None elsewhere. This
/// is how the front end's share of the CPU is measured.
fn cpu_ms_by_role() -> Option<[u64; 3]> {
    let ticks_per_s = 100.0; // USER_HZ on every Linux ABI we run on
    let mut out = [0u64; 3];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ..." — comm may hold spaces; split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let ticks = u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
        let role = if comm.starts_with("shard-")
            || comm.starts_with("rayon")
            || comm.starts_with("traffic")
        {
            0
        } else if comm.starts_with("lastmile-io") || comm.starts_with("tokio-runtime") {
            1
        } else {
            2
        };
        out[role] += (ticks as f64 * 1000.0 / ticks_per_s) as u64;
    }
    Some(out)
}

/// The process's resident memory now and at its peak (Linux; None elsewhere).
fn rss_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A cluster member's counters, named `cluster_*`.
fn cluster_stats(m: &lastmile_cluster::Member) -> Vec<(String, u64)> {
    let s = &m.stats;
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    [
        ("partitions", u64::from(m.config().log.partitions)),
        ("partitions_owned", m.owned().len() as u64),
        ("lag_batches", m.lag()),
        ("published_batches", c(&s.published_batches)),
        ("published_pings", c(&s.published_pings)),
        ("publish_retries", c(&s.publish_retries)),
        ("publish_failures", c(&s.publish_failures)),
        ("publish_duplicates", c(&s.publish_duplicates)),
        ("applied_batches", c(&s.applied_batches)),
        ("applied_pings", c(&s.applied_pings)),
        ("bad_batches", c(&s.bad_batches)),
        ("leases_taken", c(&s.leases_taken)),
        ("leases_lost", c(&s.leases_lost)),
        ("leases_suspended", c(&s.leases_suspended)),
        ("handed_over", c(&s.handed_over)),
        ("checkpoints", c(&s.checkpoints)),
        ("checkpoint_bytes", c(&s.checkpoint_bytes)),
        ("checkpoint_failures", c(&s.checkpoint_failures)),
        ("checkpoints_unreadable", c(&s.checkpoints_unreadable)),
        ("heartbeat_failures", c(&s.heartbeat_failures)),
        ("commands_appended", c(&s.commands_appended)),
        ("command_conflicts", c(&s.command_conflicts)),
        ("command_failures", c(&s.command_failures)),
        ("commands_recorded", c(&s.commands_recorded)),
        ("remote_queries", c(&s.remote_queries)),
        ("remote_query_failures", c(&s.remote_query_failures)),
        ("events_published", c(&s.events_published)),
        ("events_duplicate", c(&s.events_duplicate)),
        ("events_fenced", c(&s.events_fenced)),
        ("events_lost", c(&s.events_lost)),
        ("events_received", c(&s.events_received)),
        ("events_unreadable", c(&s.events_unreadable)),
        ("learn_shared", c(&s.learn_shared)),
        ("learn_received", c(&s.learn_received)),
        ("learn_dropped", c(&s.learn_dropped)),
        ("webhooks_taken", c(&s.webhooks_taken)),
        ("webhooks_handed_over", c(&s.webhooks_handed_over)),
        ("webhooks_lost", c(&s.webhooks_lost)),
        ("webhook_events_skipped", c(&s.webhook_events_skipped)),
        ("webhook_events_unreadable", c(&s.webhook_events_unreadable)),
        ("grants_shared", c(&s.grants_shared)),
        ("grants_received", c(&s.grants_received)),
        ("grants_unreadable", c(&s.grants_unreadable)),
        ("replays", c(&s.replays)),
        ("history_chunks", c(&s.history_chunks)),
        ("history_pieces", c(&s.history_pieces)),
        ("history_pieces_repeated", c(&s.history_pieces_repeated)),
        ("history_unreadable", c(&s.history_unreadable)),
        ("history_pieces_lost", c(&s.history_pieces_lost)),
        ("history_flush_failures", c(&s.history_flush_failures)),
        ("history_pieces_fenced", c(&s.history_pieces_fenced)),
    ]
    .into_iter()
    .map(|(k, v)| (format!("cluster_{k}"), v))
    .collect()
}
