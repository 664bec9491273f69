//! The last stage of `lastmile demo`: the service as a platform team runs
//! it. A `lastmile serve` equivalent starts in process on loopback, a
//! simulated fleet gets its delivery routes over QUIC and its pings are
//! replayed into it at a multiple of real time over several connections,
//! and a live view (throughput, events, the next stops' ETAs) refreshes
//! every second until the day ends or Ctrl-C. The HTTP side serves the
//! dispatcher's map and a customer's tracking page meanwhile: their two
//! links head the view.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lastmile_engine::bench::Day;
use lastmile_engine::fleet::{Command, Engine, FleetConfig};
use lastmile_engine::simulate::SimParams;
use lastmile_ingest::auth::Auth;
use lastmile_ingest::client::{Client, Target};
use lastmile_ingest::config::Config;
use lastmile_ingest::convert::event_kind_name;
use lastmile_ingest::protocol::{
    FROM_NOW, PingRecord, Request, Response, Role, WireEvent, WireStop,
};
use lastmile_ingest::replay::{self, ReplayOptions};
use lastmile_ingest::server::{Server, Sink};
use lastmile_ingest::tls::{Identity, Trust};
use lastmile_roadgraph::Graph;
use lastmile_web::HttpServer;

/// The two pages to open: the dispatcher's map (with the demo's token) and
/// the tracking page of the first vehicle's third stop (a customer two
/// stops from being next).
async fn links(
    client: &Client,
    routes: &[(String, Vec<WireStop>)],
    http: std::net::SocketAddr,
    token: &str,
) -> Result<String> {
    let stop = routes
        .iter()
        .find_map(|(_, stops)| stops.get(2).or(stops.last()))
        .map(|s| s.id.clone())
        .context("the simulated day has no stops")?;
    let ask = Request::CreateTrackingToken {
        stop,
        ttl_s: 86_400,
    };
    let customer = match client.request(&ask).await? {
        Response::TrackingToken { token, .. } => token,
        other => anyhow::bail!("minting the demo's tracking link: {other:?}"),
    };
    Ok(format!(
        "dispatcher: http://{http}/dispatch?token={token}\ncustomer:   http://{http}/t/{customer}\n"
    ))
}

/// How the live stage runs.
pub struct LiveParams {
    pub vehicles: usize,
    /// Simulated seconds of the day.
    pub day_s: f64,
    /// Trace seconds per wall second.
    pub speedup: f64,
    /// Stop after this many wall seconds (None: at the end of the day or Ctrl-C).
    pub seconds: Option<f64>,
    /// The HTTP side's address (the port taken: any free one instead).
    pub http: std::net::SocketAddr,
}

#[derive(Default)]
struct EventLog {
    by_kind: BTreeMap<&'static str, u64>,
    recent: VecDeque<WireEvent>,
    lost: u64,
}

fn wire_stop(p: &lastmile_engine::fleet::StopPlan) -> WireStop {
    let ms = |t: f64| (t * 1000.0).round() as i64;
    WireStop {
        id: p.id.to_string(),
        lat_e7: (p.pos.lat * 1e7).round() as i32,
        lon_e7: (p.pos.lon * 1e7).round() as i32,
        window_start_ms: p.window.map_or(0, |w| ms(w.start)),
        window_end_ms: p.window.map_or(0, |w| ms(w.end)),
        service_s: p.service_s as f32,
        customer_ref: p.customer_ref.as_deref().unwrap_or_default().to_string(),
    }
}

pub fn run(g: &Arc<Graph>, dir: &std::path::Path, p: &LiveParams) -> Result<()> {
    let params = SimParams {
        vehicles: p.vehicles,
        duration_s: p.day_s,
        interval_s: 5.0,
        noise_m: 6.0,
        congestion: 0.2,
        seed: 5,
        ..SimParams::default()
    };
    let day = Day::simulate(g, &params, &|_| {});
    // The simulated day numbers its vehicles; an admin names them by those numbers.
    let mut vehicles: Vec<u64> = day.pings.iter().map(|(v, _)| *v).collect();
    vehicles.sort_unstable();
    vehicles.dedup();
    let alias = |v: &u64| vehicles.binary_search(v).unwrap_or_default() as u64;
    let mut records: Vec<PingRecord> = day
        .pings
        .iter()
        .map(|(v, ping)| PingRecord::from_ping(alias(v), ping))
        .collect();
    records.sort_by_key(|p| p.time_ms);
    let pings = Arc::new(replay::TracePings {
        vehicles: vehicles.iter().map(u64::to_string).collect(),
        pings: records,
    });
    let routes: Vec<(String, Vec<WireStop>)> = day
        .routes()
        .iter()
        .filter_map(|c| match c {
            Command::AssignRoute { vehicle, stops } => {
                Some((vehicle.to_string(), stops.iter().map(wire_stop).collect()))
            }
            _ => None,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut auth = Auth::new(&[], &[], 1000)?;
        let token = auth.random_token("demo")?;
        auth.add_token(&token, Role::Admin, None, "demo");
        let mut config = Config { listen: "127.0.0.1:0".parse()?, data_dir: dir.to_path_buf(), ..Config::default() };
        config.engine.tick_ms = 500;
        let (identity, _) = Identity::dev(dir)?;
        let engine = Arc::new(Engine::new(g.clone(), FleetConfig::default()));
        let running = lastmile_node::Node::start(config, Sink::Engine(engine), auth, None, f64::NAN, None)?;
        let server = Server::bind(running.node.clone(), identity)?;
        let target = Target::new(&server.local_addr()?.to_string(), Trust::Pin(server.fingerprint().to_string()), token)?;
        println!(
            "service: lastmile/1 on {} (self-signed, sha256 {}…), {} vehicles, {} stops, {} pings over {:.0} min of trace at {:.0}× real time{}",
            server.local_addr()?,
            &server.fingerprint()[..16],
            routes.len(),
            routes.iter().map(|(_, s)| s.len()).sum::<usize>(),
            pings.pings.len(),
            p.day_s / 60.0,
            p.speedup,
            if std::io::stdout().is_terminal() { " — Ctrl-C to stop" } else { "" }
        );
        let http = match HttpServer::bind(running.node.clone(), p.http, None).await {
            Ok(h) => h,
            Err(_) => HttpServer::bind(running.node.clone(), (p.http.ip(), 0).into(), None).await?,
        };
        let http_addr = http.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let serving = tokio::spawn(server.run(stopped(stop_rx.clone())));
        let serving_http = tokio::spawn(http.run(stopped(stop_rx)));

        let client = Client::connect(&target).await?;
        replay::assign_routes(&client, &routes, pings.pings.first().map_or(0, |p| p.time_ms), 32).await?;
        let links = links(&client, &routes, http_addr, &target.token).await?;
        println!("{links}");
        let log = Arc::new(Mutex::new(EventLog::default()));
        let mut sub = client.subscribe(&Request::Subscribe { from: FROM_NOW, kinds: 0, vehicles: vec![], stops: vec![] }).await?;
        let collector = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(frame)) = sub.next().await {
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    match frame {
                        Response::Events(events) => {
                            for e in events {
                                *l.by_kind.entry(event_kind_name(e.kind).unwrap_or("?")).or_default() += 1;
                                if e.kind != 1 {
                                    l.recent.push_back(e);
                                    if l.recent.len() > 6 {
                                        l.recent.pop_front();
                                    }
                                }
                            }
                        }
                        Response::Lost { count } => l.lost += count,
                        _ => {}
                    }
                }
            })
        };
        let progress = Arc::new(AtomicU64::new(0));
        let opts = ReplayOptions { connections: 4, speedup: Some(p.speedup), ..ReplayOptions::default() };
        let replaying = {
            let (target, pings, progress) = (target.clone(), pings.clone(), progress.clone());
            tokio::spawn(async move { replay::replay(&target, pings, &opts, progress).await })
        };
        let started = Instant::now();
        let terminal = std::io::stdout().is_terminal();
        let watched: Vec<String> = routes.iter().map(|(v, _)| v.clone()).take(6).collect();
        let t0 = pings.pings.first().map_or(0, |p| p.time_ms);
        let mut last_sent = 0;
        let mut frames = 0u64;
        let report = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if replaying.is_finished() {
                break Some(replaying.await.context("replay task")??);
            }
            if p.seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
                replaying.abort();
                break None;
            }
            let sent = progress.load(Relaxed);
            let rate = sent - last_sent;
            last_sent = sent;
            frames += 1;
            let view = render(&client, &log, &watched, sent, pings.pings.len() as u64, rate, t0, started).await;
            if terminal {
                print!("\x1b[H\x1b[2J{links}\n{view}");
            } else if frames % 5 == 1 {
                // Logs and pipes get a status line every few seconds.
                print!("{}", view.lines().take(2).map(|l| format!("{l}\n")).collect::<String>());
            }
            std::io::stdout().flush()?;
        };
        let stats = replay::server_stats(&client).await;
        let kinds: Vec<String> = {
            let l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect()
        };
        println!(
            "service: {} pings accepted over QUIC in {:.1} s ({}), engine latency p50 {} µs p99 {} µs; events: {}",
            stats.get("pings_accepted").copied().unwrap_or(0),
            started.elapsed().as_secs_f64(),
            report.map_or("stopped early".to_string(), |r| format!("{:.0} pings/s, ack p99 {:.0} µs", r.pings_per_s, r.ack_p99_us)),
            stats.get("engine_latency_p50_us").copied().unwrap_or(0),
            stats.get("engine_latency_p99_us").copied().unwrap_or(0),
            if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
        );
        collector.abort();
        client.close();
        let _ = stop_tx.send(true);
        let _ = serving.await;
        let _ = serving_http.await;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
async fn render(
    client: &Client,
    log: &Mutex<EventLog>,
    watched: &[String],
    sent: u64,
    total: u64,
    rate: u64,
    t0_ms: i64,
    started: Instant,
) -> String {
    let stats = replay::server_stats(client).await;
    let get = |k: &str| stats.get(k).copied().unwrap_or(0);
    let mut out = String::new();
    let clock_s = |ms: i64| {
        let s = (ms - t0_ms).max(0) / 1000;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    let mut sim_now = t0_ms;
    let mut rows = Vec::new();
    for v in watched {
        if let Ok(Response::Vehicle(s)) = client
            .request(&Request::GetVehicle { vehicle: v.clone() })
            .await
        {
            sim_now = sim_now.max(s.time_ms);
            let remaining: Vec<_> = s.stops.iter().filter(|e| e.status as u8 <= 1).collect();
            let next = remaining.first().map_or("route done".to_string(), |e| {
                format!(
                    "next stop {} ETA {} ({:.1} km){}",
                    e.stop,
                    clock_s(e.eta.eta_ms),
                    e.remaining_m / 1000.0,
                    if e.late { " LATE" } else { "" }
                )
            });
            rows.push(format!(
                "  vehicle {v:>4}  {:>5.1} km/h  {:<8} {} stops left, {next}\n",
                s.speed_mps * 3.6,
                if s.off_route {
                    "off route"
                } else if s.moving {
                    "moving"
                } else {
                    "stopped"
                },
                remaining.len()
            ));
        }
    }
    out.push_str(&format!(
        "lastmile demo — trace time {} — wall {:.0} s — {sent}/{total} pings sent, {rate} pings/s\n",
        clock_s(sim_now),
        started.elapsed().as_secs_f64()
    ));
    out.push_str(&format!(
        "  server: {} accepted, {} vehicles, {} events, engine latency p50 {} µs p99 {} µs, {} connections\n\n",
        get("pings_accepted"),
        get("engine_vehicles"),
        get("engine_events"),
        get("engine_latency_p50_us"),
        get("engine_latency_p99_us"),
        get("connections_open")
    ));
    out.push_str("ETAs\n");
    for r in rows {
        out.push_str(&r);
    }
    let l = log.lock().unwrap_or_else(|e| e.into_inner());
    let kinds: Vec<String> = l.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push_str(&format!("\nevents: {}\n", kinds.join(", ")));
    for e in &l.recent {
        out.push_str(&format!(
            "  {} vehicle {:>4} {}{}\n",
            clock_s(e.time_ms),
            e.vehicle,
            event_kind_name(e.kind).unwrap_or("?"),
            e.stop
                .as_deref()
                .map_or(String::new(), |s| format!(" at stop {s}"))
        ));
    }
    out
}
