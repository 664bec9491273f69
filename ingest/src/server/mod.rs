//! The QUIC server behind `lastmile serve`: accepts connections (bounded),
//! authenticates each with its HELLO, then serves its ping streams,
//! datagrams and request streams ([`connection`]). Two background threads
//! drive the engine in wall time: the ticker (offline checks, traffic
//! publication, live index refresh, at the event-time [`clock::Clock`]) and
//! the event pump that wakes subscribers when the event bus grows.

mod commands;
mod connection;
pub mod guard;
pub mod metrics;
mod pings;
mod requests;
mod session;
pub mod stats;
mod subscribe;

use guard::{AddressGuard, Refusal};
use memory::MemoryGuard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use lastmile_engine::MatchStatus;
use lastmile_engine::fleet::{EventKind, Histogram};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::Config;
use crate::ids::Ids;
use crate::protocol::ErrorCode;
use crate::tls::Identity;
pub use lastmile_node::clock::{self, Clock};
pub use lastmile_node::durable::{self, Durable};
pub use lastmile_node::memory;
pub use lastmile_node::sink::{self, Sink};
pub use stats::ServerStats;

/// What every connection task shares.
pub struct Shared {
    pub config: Config,
    pub auth: Auth,
    /// Fleets' names for their vehicles and stops.
    pub ids: Ids,
    pub sink: Sink,
    pub stats: ServerStats,
    pub clock: Clock,
    /// The store and checkpoints, unless running from memory only.
    pub durable: Option<Arc<Durable>>,
    /// The event bus's next id, bumped by the pump thread.
    events: watch::Receiver<u64>,
    connections: AtomicUsize,
    /// Per-address connection and failed-login limits.
    guard: AddressGuard,
    /// Holds new pings while memory is over the configured bound.
    pub memory: MemoryGuard,
    subscribers: AtomicUsize,
    /// Time to answer a request (queries and commands), for the metrics.
    request_latency: std::sync::Mutex<Histogram>,
}

impl Shared {
    pub fn record_request(&self, d: Duration) {
        self.request_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(d);
    }

    /// A copy of the request latency histogram.
    pub fn request_latency(&self) -> Histogram {
        self.request_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counters of the front end followed by the engine's, for STATS.
    pub fn stats_snapshot(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.push((
            "connections_open".into(),
            self.connections.load(Relaxed) as u64,
        ));
        out.push((
            "subscribers_open".into(),
            self.subscribers.load(Relaxed) as u64,
        ));
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
}

/// The server's endpoint on a UDP socket with large kernel buffers: bursts
/// from many connections at once (datagrams above all) would otherwise
/// overflow the default ~200 KB and be dropped before anyone sees them.
/// The kernel caps the size at `net.core.rmem_max` / `wmem_max`.
fn bind_endpoint(
    config: quinn::ServerConfig,
    addr: SocketAddr,
    buffer: usize,
) -> anyhow::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.into(),
        runtime,
    )?)
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

pub struct Server {
    endpoint: quinn::Endpoint,
    /// The metrics and health port, when configured.
    metrics: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    fingerprint: String,
    _background: Background,
}

impl Server {
    /// Binds the endpoint and starts the background threads. Call inside a
    /// tokio runtime.
    pub fn bind(
        config: Config,
        sink: Sink,
        auth: Auth,
        identity: Identity,
        durable: Option<Arc<Durable>>,
    ) -> anyhow::Result<Self> {
        let fingerprint = identity.fingerprint();
        let server_config = crate::tls::server_config(identity, &config.limits)?;
        let endpoint = bind_endpoint(server_config, config.listen, config.limits.udp_buffer_bytes)
            .with_context(|| format!("listening on {}", config.listen))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (events_tx, events_rx) = watch::channel(0u64);
        let guard = AddressGuard::new(
            config.limits.max_connections_per_address,
            config.limits.auth_failures_burst,
            config.limits.auth_failures_per_minute,
        );
        let memory = MemoryGuard::new(config.limits.max_memory_mb);
        let ids = Ids::new(config.limits.max_ids_per_fleet);
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
                    ids.adopt_number(&scope, crate::ids::Kind::Stop, stop);
                }
            }
        }
        let shared = Arc::new(Shared {
            config,
            auth,
            ids,
            sink,
            stats: ServerStats::default(),
            clock: Clock::default(),
            durable,
            events: events_rx,
            connections: AtomicUsize::new(0),
            guard,
            memory,
            subscribers: AtomicUsize::new(0),
            request_latency: std::sync::Mutex::new(Histogram::default()),
        });
        if shared.memory.bound_bytes().is_some() {
            let (s, st) = (shared.clone(), stop.clone());
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
        if let Some(engine) = shared.sink.engine().cloned() {
            let (s, st) = (shared.clone(), stop.clone());
            let tick = Duration::from_millis(shared.config.engine.tick_ms);
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
            let engine = shared.sink.engine().cloned().expect("checked above");
            let (st, durable) = (stop.clone(), shared.durable.clone());
            let retention_s = shared.config.store.event_retention_s;
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
            if let Some(durable) = shared.durable.clone() {
                let engine = shared.sink.engine().cloned().expect("checked above");
                let (st, s) = (stop.clone(), shared.clone());
                let every = Duration::from_secs_f64(shared.config.store.checkpoint_every_s);
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
        let metrics = match shared.config.metrics_listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("metrics listener on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        Ok(Self {
            endpoint,
            metrics,
            shared,
            fingerprint,
            _background: Background { stop, threads },
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Where `/metrics` and `/health` are served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves, then closes every connection with
    /// `shutting_down` and waits (briefly) for the peers to be told.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let metrics = match self.metrics.take() {
            Some(l) => Some(tokio::spawn(metrics::serve(
                tokio::net::TcpListener::from_std(l)?,
                self.shared.clone(),
            ))),
            None => None,
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = self.shared.clone();
                    if shared.connections.load(Relaxed) >= shared.config.limits.max_connections {
                        ServerStats::add(&shared.stats.connections_refused, 1);
                        incoming.refuse();
                        continue;
                    }
                    let ip = incoming.remote_address().ip();
                    // An address that presented wrong tokens proves it is
                    // really there (a stateless Retry) before it costs a
                    // handshake: a spoofed source cannot fill its bucket.
                    if shared.guard.suspicious(ip) && incoming.may_retry() {
                        ServerStats::add(&shared.stats.retries_sent, 1);
                        let _ = incoming.retry();
                        continue;
                    }
                    if let Err(Refusal::TooManyConnections) = shared.guard.admit(ip) {
                        ServerStats::add(&shared.stats.connections_refused_address, 1);
                        incoming.refuse();
                        continue;
                    }
                    shared.connections.fetch_add(1, Relaxed);
                    tokio::spawn(async move {
                        connection::serve(shared.clone(), incoming).await;
                        shared.connections.fetch_sub(1, Relaxed);
                        shared.guard.release(ip);
                    });
                }
            }
        }
        if let Some(m) = metrics {
            m.abort();
        }
        self.endpoint
            .close((ErrorCode::ShuttingDown as u32).into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        // Drain: everything accepted is processed, its events persisted, and
        // the state checkpointed, so a restart resumes exactly here.
        if let Some(e) = self.shared.sink.engine() {
            let (e, shared) = (e.clone(), self.shared.clone());
            tokio::task::spawn_blocking(move || {
                e.sync();
                if let Some(d) = &shared.durable {
                    // A last tick hands over the path driven since the one before.
                    if shared.clock.watermark().is_some() {
                        e.tick(shared.clock.now());
                    }
                    d.gather_history(&e, true);
                    d.persist_events(&e);
                    match d.checkpoint(&e) {
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
            })
            .await?;
        }
        Ok(())
    }
}
