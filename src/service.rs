//! The service commands: `serve` (the QUIC server), and the client commands
//! built on `lastmile_ingest::client` — `replay`, `assign`, `eta`, `watch`,
//! `dispatch …` and `stats`. Wiring only: flags, files, output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lastmile_engine::fleet::{Engine, EventKind};
use lastmile_ingest::auth::Auth;
use lastmile_ingest::client::{Client, Target};
use lastmile_ingest::config::Config;
use lastmile_ingest::convert::event_kind_name;
use lastmile_ingest::protocol::{
    AT_END, FROM_NOW, MATCH_STATUS_NAMES, NO_TIME, Request, Response, Role, WireProof,
};
use lastmile_ingest::replay::{self, ReplayOptions};
use lastmile_ingest::server::{Durable, Server, Sink};
use lastmile_ingest::tls::{Identity, Trust};
use lastmile_node::Node;
use lastmile_web::HttpServer;
use lastmile_web::osmand::OsmAndServer;
use serde_json::{Value, json};

use crate::progress::Bar;

#[derive(Args)]
pub struct ServeArgs {
    /// Graph snapshot or .osm.pbf.
    #[arg(long)]
    graph: PathBuf,
    /// UDP address to listen on (overrides the config; port 0 picks one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for dev certificates and tokens (overrides the config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Development mode: self-signed certificate and an admin token,
    /// written to the data directory.
    #[arg(long)]
    dev: bool,
    /// Serve Prometheus /metrics and /health on this TCP address (overrides the config).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the HTTP side (JSON API, Server-Sent Events) on this loopback
    /// TCP address (overrides the config's `[http] listen`).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Take positions from driver apps (Traccar Client, OsmAnd) on this TCP
    /// address, conventionally port 5055 (overrides `[osmand] listen`).
    #[arg(long)]
    osmand: Option<std::net::SocketAddr>,
    /// Shards (overrides the config; 0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Count pings instead of running the engine (the front end's ceiling).
    #[arg(long)]
    sink: bool,
    /// Logs as JSON lines (for log shippers) instead of text. Level from
    /// LASTMILE_LOG (default info).
    #[arg(long)]
    log_json: bool,
    /// Run as one node of a cluster on these NATS servers (comma-separated
    /// nats://host:port; overrides `[cluster] url`).
    #[arg(long)]
    cluster: Option<String>,
    /// This node's name in the cluster (overrides `[cluster] node`; default:
    /// the host's name and the QUIC port).
    #[arg(long)]
    node: Option<String>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LASTMILE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if a.log_json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(d) = &a.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(m) = a.metrics {
        config.metrics_listen = Some(m);
    }
    if let Some(h) = a.http {
        config.http.listen = Some(h);
    }
    if let Some(o) = a.osmand {
        config.osmand.listen = Some(o);
    }
    if let Some(s) = a.shards {
        config.engine.shards = s;
    }
    if let Some(url) = &a.cluster {
        config.cluster.url = Some(url.clone());
    }
    if let Some(n) = &a.node {
        config.cluster.node = Some(n.clone());
    }
    config.engine.counting_sink |= a.sink;
    config.validate()?;
    let clustered = config.cluster.url.is_some();
    if clustered && config.engine.counting_sink {
        bail!("--sink counts pings on one node: it does not run in a cluster");
    }
    let mut auth = Auth::new(
        &config.fleets,
        &config.tokens,
        config.limits.max_tracking_tokens,
    )?;
    let identity = match (&config.tls.cert, &config.tls.key, a.dev) {
        (Some(c), Some(k), _) => Identity::load(c, k)?,
        (_, _, true) => Identity::dev(&config.data_dir)?.0,
        _ => bail!("no certificate: set [tls] cert and key in the config, or run with --dev"),
    };
    let mut dev_token_file = None;
    if a.dev {
        // With a configured certificate nothing else has made the directory yet.
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("{}", config.data_dir.display()))?;
        let path = config.data_dir.join("dev-token");
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 16 => t.trim().to_string(),
            _ => {
                let t = auth.random_token("dev")?;
                std::fs::write(&path, &t).with_context(|| format!("{}", path.display()))?;
                t
            }
        };
        auth.add_token(&token, Role::Admin, None, "dev admin");
        dev_token_file = Some(path);
    } else if config.tokens.is_empty() {
        bail!("no tokens configured: add [[tokens]] to the config, or run with --dev");
    }
    let bar = Bar::new();
    let graph = Arc::new(lastmile_roadgraph::open(&a.graph, &bar)?);
    bar.finish();
    let mapped_ms = started.elapsed().as_secs_f64() * 1e3;
    let (mut durable, mut resume_clock) = (None, f64::NAN);
    let sink = if config.engine.counting_sink {
        Sink::Counting(AtomicU64::new(0))
    } else {
        let engine = Arc::new(Engine::new(graph.clone(), config.fleet_config()));
        if clustered {
            // The cluster holds the state: partitions' checkpoints and the
            // log. A node's own store would restore vehicles it may no
            // longer own.
            tracing::info!("cluster mode: this node's own store is not used");
        } else if config.store.enabled {
            let (d, rec) = Durable::recover(&config.data_dir, &engine, &auth)?;
            tracing::info!(
                store = %d.store.path().display(),
                checkpoint = rec.checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
                vehicles = rec.vehicles,
                stops = rec.stops,
                journal_replayed = rec.replayed,
                journal_skipped = rec.skipped,
                tracking_tokens = rec.tracking_tokens,
                ms = format!("{:.0}", rec.millis),
                "state recovered"
            );
            for r in &rec.rejected {
                tracing::warn!(reason = %r, "checkpoint not used");
            }
            if rec.journal_gap {
                tracing::error!(
                    "the journal does not reach back to the checkpoint restored: routes and stops changed since may be missing"
                );
            }
            durable = Some(d);
            resume_clock = rec.event_time;
        }
        Sink::Engine(engine)
    };
    tracing::info!(
        graph = %a.graph.display(),
        edges = graph.num_edges(),
        mapped_ms = format!("{mapped_ms:.0}"),
        engine_ms = format!("{:.0}", started.elapsed().as_secs_f64() * 1e3 - mapped_ms),
        "graph loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lastmile-io")
        // Acknowledgements and queries wait on these threads: woken, they
        // should run at once, not a scheduler slice later.
        .on_thread_start(|| {
            lastmile_ingest::priority::short_slice();
        })
        .build()?;
    // The HTTP side serves the same certificate (none in dev mode: plain
    // HTTP on loopback, checked with the config).
    let http_tls = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) if config.http.listen.is_some() || config.osmand.listen.is_some() => {
            let id = Identity::load(c, k)?;
            Some(lastmile_web::tls::server_config(id.chain, id.key)?)
        }
        _ => None,
    };
    runtime.block_on(async move {
        let (http_listen, osmand_listen) = (config.http.listen, config.osmand.listen);
        let member_config = config.cluster.member_config(
            &crate::cluster::default_node_name(config.listen.port()),
            config.store.history_retention_s,
        );
        let names = match &member_config {
            Some(c) => Some(crate::cluster::shared_names(c).await?),
            None => None,
        };
        let running = Node::start(config, sink, auth, durable, resume_clock, names)?;
        // Joined before any front end takes a ping: from here on pings go
        // to the cluster's log.
        if let Some(c) = member_config {
            crate::cluster::join(&running.node, c).await?;
        }
        // One signal stops every side; webhook endpoints start (and a bad
        // one stops the server) before it says it is ready.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let hooks = lastmile_hooks::start(&running.node, &stop_rx)?;
        let node = running.node.clone();
        let server = Server::bind(node.clone(), identity)?;
        let shared = server.shared().clone();
        let http = match http_listen {
            Some(addr) => Some(HttpServer::bind(node.clone(), addr, http_tls.clone()).await?),
            None => None,
        };
        let osmand = match osmand_listen {
            Some(addr) => Some(OsmAndServer::bind(node.clone(), addr, http_tls).await?),
            None => None,
        };
        let http_addr = http
            .as_ref()
            .map(|h| h.local_addr().map(|a| format!(", http on {}://{a}/", h.scheme())))
            .transpose()?;
        let osmand_addr = osmand
            .as_ref()
            .map(|o| o.local_addr().map(|a| format!(", driver apps on {}://{a}/", o.scheme())))
            .transpose()?;
        println!(
            "listening on {} (QUIC, ALPN lastmile/1), certificate sha256 {}, ready in {:.0} ms{}",
            server.local_addr()?,
            server.fingerprint(),
            started.elapsed().as_secs_f64() * 1e3,
            server
                .metrics_addr()
                .map_or(String::new(), |m| format!(", metrics on http://{m}/metrics"))
                + &http_addr.unwrap_or_default()
                + &osmand_addr.unwrap_or_default()
        );
        if let Some(p) = &dev_token_file {
            println!("dev admin token in {} (clients: --token \"$(cat {})\" --fingerprint {})", p.display(), p.display(), server.fingerprint());
        }
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let http_task = http.map(|h| tokio::spawn(h.run(stopped(stop_rx.clone()))));
        let osmand_task = osmand.map(|o| tokio::spawn(o.run(stopped(stop_rx.clone()))));
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        server.run(stopped(stop_rx)).await?;
        for t in [http_task, osmand_task].into_iter().flatten() {
            t.await??;
        }
        for h in hooks {
            h.await?;
        }
        if let Some(member) = node.cluster.get() {
            // Partitions handed over now, checkpointed, rather than at
            // their leases' expiry.
            member.leave().await;
        }
        tokio::task::spawn_blocking(move || node.drain()).await?;
        drop(running);
        let s: std::collections::HashMap<String, u64> = shared.stats_snapshot().into_iter().collect();
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        eprintln!(
            "served {:.0} s: {} connections, {} pings accepted ({} invalid, {} out of scope, {} shed), {} requests, {} events sent",
            started.elapsed().as_secs_f64(),
            g("connections_accepted"),
            g("pings_accepted"),
            g("pings_invalid"),
            g("pings_out_of_scope"),
            g("pings_shed"),
            g("requests"),
            g("events_sent")
        );
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// How every client command reaches the server.
#[derive(Args, Clone)]
pub struct Conn {
    /// Server address, HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    server: String,
    /// Access token (or set LASTMILE_TOKEN).
    #[arg(long, global = true, env = "LASTMILE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust server certificates signed by the CAs in this PEM file.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Trust exactly this certificate (PEM), e.g. the dev server's.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Trust exactly the certificate with this SHA-256 fingerprint.
    #[arg(long, global = true)]
    fingerprint: Option<String>,
    /// Trust any certificate (development only).
    #[arg(long, global = true)]
    insecure_dev: bool,
}

impl Conn {
    pub(crate) fn target(&self) -> Result<Target> {
        let trust = Trust::from_flags(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.fingerprint.as_deref(),
            self.insecure_dev,
        )?;
        let token = self
            .token
            .clone()
            .context("no token: give --token or set LASTMILE_TOKEN")?;
        Target::new(&self.server, trust, token)
    }
}

pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Trace CSV (or GPX) to replay.
    trace: PathBuf,
    #[command(flatten)]
    conn: Conn,
    /// Total pings per second (default: as fast as the server takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Replay at this multiple of real time instead.
    #[arg(long, conflicts_with = "rate")]
    speedup: Option<f64>,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Send pings as QUIC datagrams (no acknowledgement, loss tolerated).
    #[arg(long)]
    datagrams: bool,
    /// Pings per PINGS frame on streams.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Also ask for this many vehicle ETAs per second during the replay
    /// (on a connection of their own) and report their latency.
    #[arg(long)]
    queries: Option<f64>,
    /// Assign these routes first (stops CSV), at the trace's first time.
    #[arg(long)]
    stops: Option<PathBuf>,
    /// Simulated drivers close the stops of --stops as they leave them
    /// (true arrival + service time, the columns `lastmile simulate`
    /// writes), as their app would, on their vehicle's connection after
    /// every earlier ping.
    #[arg(long, requires = "stops", conflicts_with = "datagrams")]
    drivers: bool,
    /// With --drivers: every N-th stop reached fails ("nobody home") instead.
    #[arg(long, default_value_t = 0, requires = "drivers")]
    fail_every: usize,
    /// Token for the routes of --stops and the drivers' commands (a
    /// dispatcher's of the vehicles' fleet; default: --token).
    #[arg(long, requires = "stops")]
    dispatch_token: Option<String>,
    /// Send the pings to the door for driver apps at this URL instead
    /// (`http://HOST:5055/KEY`, the key a token of the vehicles' fleet), one
    /// position per request as Traccar Client and OsmAnd do, each vehicle
    /// a device named by its trace id.
    #[arg(long, conflicts_with_all = ["datagrams", "queries", "stops"])]
    osmand: Option<String>,
    /// How the positions are written to the door (with --osmand).
    #[arg(long, value_enum, default_value = "query", requires = "osmand")]
    form: crate::osmand_replay::Form,
    #[arg(long)]
    json: bool,
}

fn read_trace(path: &Path) -> Result<lastmile_engine::trace::Trace> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let is_gpx = path
        .to_string_lossy()
        .to_ascii_lowercase()
        .trim_end_matches(".gz")
        .ends_with(".gpx");
    let trace = if is_gpx {
        let name = path
            .file_stem()
            .map_or("1".into(), |s| s.to_string_lossy().to_string());
        lastmile_engine::trace::read_gpx(reader, &name)
    } else {
        lastmile_engine::trace::read_csv(std::io::BufReader::new(reader))
    };
    trace.with_context(|| format!("{}", path.display()))
}

/// `replay --osmand`: through the door for driver apps.
fn replay_osmand(a: ReplayArgs, url: String, pings: Arc<replay::TracePings>) -> Result<()> {
    let opts = crate::osmand_replay::Options {
        url,
        form: a.form,
        connections: a.connections,
        rate: a.rate,
        speedup: a.speedup,
    };
    let bar = Bar::new();
    bar.stage_count("replaying positions", pings.pings.len() as u64);
    let report = block_on(async {
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let bar = &bar;
        let watcher = async move {
            loop {
                lastmile_roadgraph::Progress::set(bar, p.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            r = crate::osmand_replay::replay(opts, pings, progress) => r,
            _ = watcher => unreachable!("the progress loop never ends"),
        }
    })?;
    bar.finish();
    if a.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "replayed {} positions over {} {} connection(s) in {:.2} s: {} accepted, {} rejected, {} sent again after 503, {:.0} positions/s, request p50 {:.0} µs p99 {:.0} µs{}",
            report.sent,
            report.connections,
            report.mode,
            report.elapsed_s,
            report.accepted,
            report.rejected,
            report.busy,
            report.pings_per_s,
            report.ack_p50_us,
            report.ack_p99_us,
            report
                .first_refusal
                .as_ref()
                .map_or(String::new(), |r| format!(" (first refusal: {r})"))
        );
    }
    Ok(())
}

pub fn replay(a: ReplayArgs) -> Result<()> {
    if a.connections == 0
        || a.rate.is_some_and(|r| r.is_nan() || r <= 0.0)
        || a.speedup.is_some_and(|s| s.is_nan() || s <= 0.0)
        || a.batch == 0
    {
        bail!("--connections, --rate, --speedup and --batch must be positive");
    }
    let trace = read_trace(&a.trace)?;
    let pings = Arc::new(
        replay::pings_from_trace(&trace).with_context(|| format!("{}", a.trace.display()))?,
    );
    drop(trace);
    if pings.pings.is_empty() {
        bail!("{}: no pings", a.trace.display());
    }
    if let Some(url) = a.osmand.clone() {
        return replay_osmand(a, url, pings);
    }
    let target = a.conn.target()?;
    let routes = match &a.stops {
        Some(p) => replay::routes_from_stops(
            std::fs::File::open(p).with_context(|| format!("{}", p.display()))?,
        )
        .with_context(|| format!("{}", p.display()))?,
        None => Vec::new(),
    };
    let closings = match (&a.stops, a.drivers) {
        (Some(p), true) => replay::closings_from_stops(
            std::fs::File::open(p).with_context(|| format!("{}", p.display()))?,
            a.fail_every,
        )
        .with_context(|| format!("{}", p.display()))?,
        _ => Vec::new(),
    };
    let opts = ReplayOptions {
        connections: a.connections,
        rate: a.rate,
        speedup: a.speedup,
        datagrams: a.datagrams,
        batch: a.batch,
        queries_per_s: a.queries,
        closings: Arc::new(closings),
        dispatch_token: a.dispatch_token.clone(),
        ..ReplayOptions::default()
    };
    let bar = Bar::new();
    let total = pings.pings.len() as u64;
    let report = block_on(async {
        let mut assigned = None;
        if !routes.is_empty() {
            bar.stage_spinner(&format!("assigning {} routes", routes.len()));
            let dispatcher = Target {
                token: a.dispatch_token.clone().unwrap_or(target.token.clone()),
                ..target.clone()
            };
            let c = Client::connect(&dispatcher).await?;
            assigned = Some(
                replay::assign_routes(&c, &routes, pings.pings[0].time_ms, ASSIGN_IN_FLIGHT)
                    .await?,
            );
            c.close();
        }
        bar.stage_count("replaying pings", total);
        let progress = Arc::new(AtomicU64::new(0));
        let watcher = {
            let p = progress.clone();
            let bar = &bar;
            async move {
                loop {
                    lastmile_roadgraph::Progress::set(bar, p.load(Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let report = tokio::select! {
            r = replay::replay(&target, pings.clone(), &opts, progress.clone()) => r,
            _ = watcher => unreachable!("the progress loop never ends"),
        }?;
        anyhow::Ok((report, assigned))
    })?;
    let (report, assigned) = report;
    bar.finish();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["routes_assigned"] = json!(routes.len());
        if let Some(a) = &assigned {
            v["assign"] = serde_json::to_value(a)?;
        }
        println!("{v}");
    } else {
        println!(
            "replayed {} pings over {} {} connection(s) in {:.2} s: {} accepted, {} rejected, {} shed, {:.0} pings/s, ack p50 {:.0} µs p99 {:.0} µs{}",
            report.sent,
            report.connections,
            report.mode,
            report.elapsed_s,
            report.accepted,
            report.rejected,
            report.shed,
            report.pings_per_s,
            report.ack_p50_us,
            report.ack_p99_us,
            assigned.map_or(String::new(), |a| format!(
                ", {} routes assigned ({:.0}/s, durable ack p50 {:.0} µs p99 {:.0} µs)",
                a.routes, a.per_s, a.p50_us, a.p99_us
            )) + &if a.drivers {
                format!(", {} stops closed by their drivers", report.stops_closed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct AssignArgs {
    /// Stops CSV: vehicle_id,stop_id,seq,lat,lon[,window_start,window_end,service_s,customer_ref].
    stops: PathBuf,
    #[command(flatten)]
    conn: Conn,
    /// Event time of the assignment (epoch seconds or RFC 3339; default: the server's clock).
    #[arg(long)]
    time: Option<String>,
    /// Assignments in flight at once (each acknowledged once durable).
    #[arg(long, default_value_t = ASSIGN_IN_FLIGHT)]
    in_flight: usize,
}

/// Route assignments a client keeps in flight: enough for the server to
/// journal many per flush, well under its streams-per-connection limit.
const ASSIGN_IN_FLIGHT: usize = 32;

fn parse_time_ms(s: Option<&str>) -> Result<i64> {
    match s {
        None => Ok(NO_TIME),
        Some(s) => Ok((lastmile_engine::trace::parse_time(s)
            .with_context(|| format!("bad time {s:?}"))?
            * 1000.0)
            .round() as i64),
    }
}

pub fn assign(a: AssignArgs) -> Result<()> {
    let target = a.conn.target()?;
    let file = std::fs::File::open(&a.stops).with_context(|| format!("{}", a.stops.display()))?;
    let routes =
        replay::routes_from_stops(file).with_context(|| format!("{}", a.stops.display()))?;
    let time = parse_time_ms(a.time.as_deref())?;
    let r = block_on(async {
        let c = Client::connect(&target).await?;
        let r = replay::assign_routes(&c, &routes, time, a.in_flight).await?;
        c.close();
        Ok(r)
    })?;
    let stops: usize = routes.iter().map(|(_, s)| s.len()).sum();
    println!(
        "assigned {} routes ({stops} stops) in {:.2} s, {:.0}/s, {} in flight; acknowledged (durable) p50 {:.0} µs, p99 {:.0} µs",
        r.routes, r.elapsed_s, r.per_s, r.in_flight, r.p50_us, r.p99_us
    );
    Ok(())
}

#[derive(Args)]
pub struct EtaArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long, conflicts_with = "stop", required_unless_present = "stop")]
    vehicle: Option<String>,
    #[arg(long)]
    stop: Option<String>,
    #[arg(long)]
    json: bool,
}

fn iso(ms: i64) -> Value {
    if ms == NO_TIME {
        Value::Null
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn nan_null(x: f32) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

pub fn eta(a: EtaArgs) -> Result<()> {
    let target = a.conn.target()?;
    let req = match (a.vehicle, a.stop) {
        (Some(vehicle), _) => Request::GetVehicle { vehicle },
        (None, Some(stop)) => Request::GetStop { stop },
        (None, None) => bail!("give --vehicle or --stop"),
    };
    let resp = block_on(async {
        let c = Client::connect(&target).await?;
        let r = c.call(&req).await;
        c.close();
        r
    })?;
    let v = match &resp {
        Response::Vehicle(v) => json!({
            "vehicle": v.vehicle,
            "time": iso(v.time_ms),
            "position": v.has_position.then(|| json!([v.lat_e7 as f64 * 1e-7, v.lon_e7 as f64 * 1e-7])),
            "way_id": v.way_id,
            "speed_mps": v.speed_mps,
            "moving": v.moving, "online": v.online, "off_route": v.off_route,
            "match_status": MATCH_STATUS_NAMES.get(v.match_status as usize),
            "odometer_m": v.odometer_m,
            "next_stop": v.next_stop,
            "stops": v.stops.iter().map(|s| json!({
                "stop": s.stop, "status": s.status.as_str(), "eta": iso(s.eta.eta_ms),
                "eta_window": [iso(s.eta.p10_ms), iso(s.eta.p90_ms)],
                "eta_state": s.eta.state.as_str(),
                "window_end": iso(s.window_end_ms), "late": s.late, "at_risk": s.at_risk,
                "stops_before": s.stops_before, "remaining_m": nan_null(s.remaining_m),
            })).collect::<Vec<_>>(),
        }),
        Response::Stop(s) => json!({
            "stop": s.stop, "vehicle": s.vehicle, "status": s.status.as_str(), "late": s.late,
            "at_risk": s.at_risk,
            "eta": iso(s.eta.eta_ms), "eta_window": [iso(s.eta.p10_ms), iso(s.eta.p90_ms)],
            "eta_state": s.eta.state.as_str(),
            "stops_before": s.stops_before, "remaining_m": nan_null(s.remaining_m),
            "snap_m": nan_null(s.snap_m), "snap_component": s.snap_component,
            "window": [iso(s.window_start_ms), iso(s.window_end_ms)],
            "vehicle_position": s.vehicle_pos.map(|(la, lo, t)| json!([la as f64 * 1e-7, lo as f64 * 1e-7, iso(t)])),
            "closed": iso(s.closed_ms), "customer_ref": s.customer_ref, "outcome": s.outcome_text,
        }),
        other => bail!("unexpected answer {other:?}"),
    };
    if a.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    vehicle: Vec<String>,
    #[arg(long)]
    stop: Vec<String>,
    /// Event kinds (comma-separated names, e.g. late,off_route).
    #[arg(long, value_delimiter = ',')]
    kind: Vec<String>,
    /// Start at this event id (default: only new events).
    #[arg(long)]
    from: Option<u64>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// One JSON object per event.
    #[arg(long)]
    json: bool,
}

pub fn watch(a: WatchArgs) -> Result<()> {
    let target = a.conn.target()?;
    let mut kinds = 0u64;
    for k in &a.kind {
        let kind = EventKind::ALL
            .into_iter()
            .find(|e| e.as_str() == k)
            .with_context(|| format!("unknown event kind {k:?}"))?;
        kinds |= kind.bit();
    }
    let req = Request::Subscribe {
        from: a.from.unwrap_or(FROM_NOW),
        kinds,
        vehicles: a.vehicle.clone(),
        stops: a.stop.clone(),
    };
    block_on(async {
        let c = Client::connect(&target).await?;
        let mut sub = c.subscribe(&req).await?;
        let mut seen = 0u64;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(frame) = sub.next().await? {
            match frame {
                Response::Events(events) => {
                    for e in events {
                        let kind = event_kind_name(e.kind).unwrap_or("unknown");
                        if a.json {
                            writeln!(
                                out,
                                "{}",
                                json!({
                                    "id": e.id, "vehicle": e.vehicle, "seq": e.seq, "stop": e.stop, "zone": e.zone,
                                    "time": e.time_ms as f64 / 1000.0, "kind": kind,
                                    "lat": e.lat_e7 as f64 * 1e-7, "lon": e.lon_e7 as f64 * 1e-7,
                                    "value": e.value, "reference": e.reference,
                                })
                            )?;
                        } else {
                            let stop = match (&e.stop, &e.zone) {
                                (Some(s), _) => format!(" stop {s}"),
                                (None, Some(z)) => format!(" zone {z}"),
                                (None, None) => String::new(),
                            };
                            writeln!(
                                out,
                                "#{} t={:.0} vehicle {}{stop} {kind} {:.1} / {:.1}",
                                e.id,
                                e.time_ms as f64 / 1000.0,
                                e.vehicle,
                                e.value,
                                e.reference
                            )?;
                        }
                        out.flush()?;
                        seen += 1;
                        if a.count.is_some_and(|n| seen >= n) {
                            c.close();
                            return Ok(());
                        }
                    }
                }
                Response::Lost { count } => eprintln!("lost {count} events (reading too slowly)"),
                other => bail!("unexpected frame {other:?}"),
            }
        }
        Ok(())
    })
}

#[derive(Subcommand)]
pub enum DispatchCmd {
    /// Mark a stop completed, with proof of delivery.
    Complete {
        #[arg(long)]
        vehicle: String,
        #[arg(long)]
        stop: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        photo: Vec<String>,
        #[arg(long)]
        signature: Option<String>,
    },
    /// Mark a stop failed, with a reason.
    Fail {
        #[arg(long)]
        vehicle: String,
        #[arg(long)]
        stop: String,
        #[arg(long)]
        reason: String,
    },
    /// Remove an open stop from a vehicle's route.
    Remove {
        #[arg(long)]
        vehicle: String,
        #[arg(long)]
        stop: String,
    },
    /// Move an open stop to another vehicle (at the end of its route, or at --index).
    Reassign {
        #[arg(long)]
        stop: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        index: Option<u32>,
    },
    /// Record a vehicle's upkeep: it was serviced (its service counts start
    /// again) and/or what its odometer reads.
    Upkeep {
        #[arg(long)]
        vehicle: String,
        #[arg(long)]
        serviced: bool,
        /// The odometer's reading, km: the lifetime odometer is set to it.
        #[arg(long)]
        odometer_km: Option<f64>,
    },
    /// Mint a customer's tracking token for one stop.
    Track {
        #[arg(long)]
        stop: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u32,
    },
}

#[derive(Args)]
pub struct DispatchArgs {
    #[command(subcommand)]
    cmd: DispatchCmd,
    #[command(flatten)]
    conn: Conn,
    /// Event time of the command (default: the server's clock).
    #[arg(long, global = true)]
    time: Option<String>,
}

pub fn dispatch(a: DispatchArgs) -> Result<()> {
    let target = a.conn.target()?;
    let time_ms = parse_time_ms(a.time.as_deref())?;
    let req = match a.cmd {
        DispatchCmd::Complete {
            vehicle,
            stop,
            note,
            photo,
            signature,
        } => Request::Complete {
            vehicle,
            time_ms,
            stop,
            proof: WireProof {
                pos_e7: None,
                signature_ref: signature.unwrap_or_default(),
                note: note.unwrap_or_default(),
                photo_refs: photo,
            },
        },
        DispatchCmd::Fail {
            vehicle,
            stop,
            reason,
        } => Request::Fail {
            vehicle,
            time_ms,
            stop,
            reason,
        },
        DispatchCmd::Remove { vehicle, stop } => Request::RemoveStop {
            vehicle,
            time_ms,
            stop,
        },
        DispatchCmd::Reassign { stop, to, index } => Request::Reassign {
            stop,
            to_vehicle: to,
            time_ms,
            index: index.unwrap_or(AT_END),
        },
        DispatchCmd::Track { stop, ttl } => Request::CreateTrackingToken { stop, ttl_s: ttl },
        DispatchCmd::Upkeep {
            vehicle,
            serviced,
            odometer_km,
        } => {
            if !serviced && odometer_km.is_none() {
                bail!("say --serviced, or give --odometer-km, or both");
            }
            Request::Upkeep {
                vehicle,
                time_ms,
                serviced,
                odometer_m: odometer_km.map_or(f64::NAN, |km| km * 1000.0),
            }
        }
    };
    let resp = block_on(async {
        let c = Client::connect(&target).await?;
        let r = c.call(&req).await;
        c.close();
        r
    })?;
    match resp {
        Response::TrackingToken { token, expires_ms } => {
            println!(
                "{}",
                json!({"token": token, "expires": expires_ms as f64 / 1000.0})
            )
        }
        _ => println!("ok"),
    }
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    conn: Conn,
}

pub fn stats(a: StatsArgs) -> Result<()> {
    let target = a.conn.target()?;
    let resp = block_on(async {
        let c = Client::connect(&target).await?;
        let r = c.call(&Request::GetStats).await;
        c.close();
        r
    })?;
    let Response::Stats(pairs) = resp else {
        bail!("unexpected answer")
    };
    let map: serde_json::Map<String, Value> =
        pairs.into_iter().map(|(k, v)| (k, json!(v))).collect();
    println!("{}", Value::Object(map));
    Ok(())
}
