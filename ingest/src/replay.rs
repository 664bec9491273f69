//! The replay driver behind `lastmile replay`: a trace's pings, in time
//! order, sent to a server over C connections (a vehicle always on the same
//! connection, so its pings stay in order), on acknowledged streams or as
//! datagrams, as fast as possible, at a fixed rate, or at a multiple of
//! real time. Measures what a benchmarker needs: pings sent, accepted,
//! rejected and shed, throughput, and acknowledgement latency.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lastmile_engine::fleet::Histogram;
use lastmile_engine::trace::{Trace, parse_time};
use tokio::sync::Semaphore;

use crate::client::{Client, Control, Target, call_on};
use crate::protocol::{PingRecord, Request, Response, Version, WireProof, WireStop};

/// A trace's pings ready to send: each record carries, where the wire has
/// the vehicle, the index of its vehicle's name in `vehicles`, which is
/// also the alias every connection binds to that name (protocol version 2).
pub struct TracePings {
    pub vehicles: Vec<String>,
    /// Sorted by time (stable: equal times keep file order).
    pub pings: Vec<PingRecord>,
}

/// The trace's pings as wire records, with their vehicles' names as the
/// CSV gives them.
pub fn pings_from_trace(trace: &Trace) -> anyhow::Result<TracePings> {
    let mut index: HashMap<&str, u64> = HashMap::new();
    let mut vehicles = Vec::new();
    let mut pings = Vec::with_capacity(trace.rows.len());
    for r in &trace.rows {
        let name = r.vehicle.trim();
        let alias = *index.entry(name).or_insert_with(|| {
            vehicles.push(name.to_string());
            vehicles.len() as u64 - 1
        });
        pings.push(PingRecord::from_ping(alias, &r.ping));
    }
    pings.sort_by_key(|p| p.time_ms);
    Ok(TracePings { vehicles, pings })
}

/// Routes from a stops CSV (`vehicle_id,stop_id,seq,lat,lon` and optional
/// `window_start,window_end,service_s,customer_ref`), per vehicle in `seq` order.
pub fn routes_from_stops<R: Read>(input: R) -> anyhow::Result<Vec<(String, Vec<WireStop>)>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().context("stops CSV header")?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| col(name).with_context(|| format!("stops CSV: no {name} column"));
    let (cv, cs, cq, clat, clon) = (
        need("vehicle_id")?,
        need("stop_id")?,
        need("seq")?,
        need("lat")?,
        need("lon")?,
    );
    let (cws, cwe, csv_s, cref) = (
        col("window_start"),
        col("window_end"),
        col("service_s"),
        col("customer_ref"),
    );
    let mut routes: HashMap<String, Vec<(u32, WireStop)>> = HashMap::new();
    let mut stop_ids = std::collections::HashSet::new();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.context("stops CSV")?;
        let at = || format!("stops CSV line {}", line + 2);
        let get = |i: usize| rec.get(i).unwrap_or("");
        let opt = |c: Option<usize>| c.map(get).filter(|s| !s.is_empty());
        let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
        let (vehicle, id) = (get(cv).to_string(), get(cs).to_string());
        if vehicle.is_empty() || id.is_empty() {
            bail!("{}: a vehicle_id and a stop_id are needed", at());
        }
        if !stop_ids.insert(id.clone()) {
            bail!("{}: stop {id:?} appears twice", at());
        }
        let seq: u32 = get(cq).parse().with_context(at)?;
        let (lat, lon) = (
            num(get(clat)).with_context(at)?,
            num(get(clon)).with_context(at)?,
        );
        let time = |c| -> anyhow::Result<i64> {
            Ok(match opt(c) {
                Some(s) => (parse_time(s).with_context(|| format!("{}: bad time {s:?}", at()))?
                    * 1000.0)
                    .round() as i64,
                None => 0,
            })
        };
        let stop = WireStop {
            id,
            lat_e7: (lat * 1e7).round() as i32,
            lon_e7: (lon * 1e7).round() as i32,
            window_start_ms: time(cws)?,
            window_end_ms: time(cwe)?,
            service_s: opt(csv_s).and_then(num).unwrap_or(0.0) as f32,
            customer_ref: opt(cref).unwrap_or("").to_string(),
        };
        routes.entry(vehicle).or_default().push((seq, stop));
    }
    let mut out: Vec<(String, Vec<WireStop>)> = routes
        .into_iter()
        .map(|(v, mut stops)| {
            stops.sort_by_key(|(seq, _)| *seq);
            (v, stops.into_iter().map(|(_, s)| s).collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub connections: usize,
    /// Total pings per second (None: as fast as possible).
    pub rate: Option<f64>,
    /// Multiple of real time (trace seconds per wall second); ignored with `rate`.
    pub speedup: Option<f64>,
    pub datagrams: bool,
    /// Pings per PINGS frame on streams (capped by the server's limit).
    pub batch: usize,
    /// Unacknowledged batches one connection may have in flight.
    pub window: usize,
    /// ETA queries (GET_VEHICLE of a random replayed vehicle) per second on
    /// a connection of their own while the pings flow: their latency under load.
    pub queries_per_s: Option<f64>,
    /// Stops simulated drivers close during the replay (streams only)…
    pub closings: Arc<Vec<Closing>>,
    /// …with this token (a dispatcher's; `None`: the target's).
    pub dispatch_token: Option<String>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            connections: 1,
            rate: None,
            speedup: None,
            datagrams: false,
            batch: 1024,
            window: 32,
            queries_per_s: None,
            closings: Arc::default(),
            dispatch_token: None,
        }
    }
}

/// The figures a replay ends with (`replay --json` keys).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub mode: &'static str,
    pub connections: usize,
    pub sent: u64,
    /// Pings the server handed to the engine (acks on streams; the
    /// server's counters for datagrams, when the token may read them).
    pub accepted: u64,
    pub rejected: u64,
    /// Pings the server dropped for lack of room (datagrams only: streams
    /// are pushed back instead).
    pub shed: u64,
    /// Datagram pings that never reached the server (dropped by the
    /// network or the kernel's socket buffers).
    pub lost: u64,
    /// Until every accepted ping was processed by the engine (when the
    /// token may read the server's counters; else until the last ack).
    pub elapsed_s: f64,
    /// Until the last ping was sent (and, on streams, acknowledged).
    pub send_s: f64,
    pub pings_per_s: f64,
    pub ack_p50_us: f64,
    pub ack_p99_us: f64,
    pub ack_max_us: f64,
    pub batches: u64,
    /// Errors the server reported on control streams.
    pub server_errors: u64,
    /// ETA queries made during the replay and their latency.
    pub queries: u64,
    pub query_p50_us: f64,
    pub query_p99_us: f64,
    /// The server's peak resident memory (0 if it does not say).
    pub server_peak_rss_mb: f64,
    /// Share of the server's CPU time during the replay spent in its QUIC
    /// front end (the rest: engine shards, ticks, customization).
    pub server_io_cpu_share: f64,
    /// Stops the simulated drivers closed.
    pub stops_closed: u64,
}

struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    acks: Mutex<Histogram>,
}

/// What assigning routes took. Each route is acknowledged only once the
/// server holds it durably, so the latency is the durable command's.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AssignReport {
    pub routes: usize,
    /// Requests in flight at once.
    pub in_flight: usize,
    pub elapsed_s: f64,
    pub per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Assigns routes (before a replay) at the given event time, `in_flight`
/// requests at a time on the client's connection (the server journals
/// concurrent commands together).
pub async fn assign_routes(
    client: &Client,
    routes: &[(String, Vec<WireStop>)],
    time_ms: i64,
    in_flight: usize,
) -> anyhow::Result<AssignReport> {
    let started = Instant::now();
    let routes: Arc<Vec<(String, Vec<WireStop>)>> = Arc::new(routes.to_vec());
    let version = client.version;
    let next = Arc::new(AtomicUsize::new(0));
    let workers = in_flight.clamp(1, routes.len().max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (conn, routes, next) = (client.connection().clone(), routes.clone(), next.clone());
        tasks.spawn(async move {
            let mut latency = Histogram::default();
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some((vehicle, stops)) = routes.get(i) else {
                    return anyhow::Ok(latency);
                };
                let t = Instant::now();
                let req = Request::AssignRoute {
                    vehicle: vehicle.clone(),
                    time_ms,
                    stops: stops.clone(),
                };
                call_on(&conn, version, &req)
                    .await
                    .with_context(|| format!("assigning the route of vehicle {vehicle}"))?;
                latency.record(t.elapsed());
            }
        });
    }
    let mut latency = Histogram::default();
    while let Some(done) = tasks.join_next().await {
        latency.merge_from(&mut done??);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let us = |q: f64| latency.quantile(q).as_secs_f64() * 1e6;
    Ok(AssignReport {
        routes: routes.len(),
        in_flight: workers,
        elapsed_s,
        per_s: routes.len() as f64 / elapsed_s.max(1e-9),
        p50_us: us(0.5),
        p99_us: us(0.99),
        max_us: us(1.0),
    })
}

/// The server's counters (empty if the token may not read them).
pub async fn server_stats(client: &Client) -> HashMap<String, u64> {
    match client.request(&Request::GetStats).await {
        Ok(Response::Stats(s)) => s.into_iter().collect(),
        _ => HashMap::new(),
    }
}

/// Replays `pings` (sorted by time) against the target. `progress` counts
/// pings sent as they go.
/// A stop a simulated driver closes, as the driver app does when they
/// leave it: completed, or failed ("nobody home").
#[derive(Clone, Debug, PartialEq)]
pub struct Closing {
    pub time_ms: i64,
    pub vehicle: String,
    pub stop: String,
    pub fail: bool,
}

impl Closing {
    /// Why a simulated driver fails a stop.
    pub const REASON: &str = "nobody home";
    /// The delivery note a simulated driver leaves.
    pub const NOTE: &str = "handed to the customer";

    fn request(&self) -> Request {
        let (vehicle, time_ms, stop) = (self.vehicle.clone(), self.time_ms, self.stop.clone());
        if self.fail {
            Request::Fail {
                vehicle,
                time_ms,
                stop,
                reason: Self::REASON.into(),
            }
        } else {
            Request::Complete {
                vehicle,
                time_ms,
                stop,
                proof: WireProof {
                    pos_e7: None,
                    signature_ref: String::new(),
                    note: Self::NOTE.into(),
                    photo_refs: Vec::new(),
                },
            }
        }
    }
}

/// What simulated drivers do with the stops of a simulated day's stops CSV
/// (its `true_arrival` column): each stop reached is closed as the driver
/// leaves it (true arrival + `service_s`), every `fail_every`-th of them
/// (in the file's order; 0: none) failed instead. In time order.
pub fn closings_from_stops<R: Read>(input: R, fail_every: usize) -> anyhow::Result<Vec<Closing>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().context("stops CSV header")?.clone();
    let col = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!("stops CSV: no {name} column (simulated drivers need the truth `lastmile simulate` writes)")
        })
    };
    let (cv, cs, ca, csv_s) = (
        col("vehicle_id")?,
        col("stop_id")?,
        col("true_arrival")?,
        col("service_s")?,
    );
    let mut out = Vec::new();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.context("stops CSV")?;
        let get = |i: usize| rec.get(i).unwrap_or("");
        if get(ca).is_empty() {
            continue; // never reached
        }
        let at = || format!("stops CSV line {}", line + 2);
        let arrival = parse_time(get(ca)).with_context(at)?;
        let service: f64 = get(csv_s).parse().with_context(at)?;
        let fail = fail_every > 0 && (out.len() + 1) % fail_every == 0;
        out.push(Closing {
            time_ms: ((arrival + service) * 1000.0).round() as i64,
            vehicle: get(cv).to_string(),
            stop: get(cs).to_string(),
            fail,
        });
    }
    out.sort_by_key(|c| c.time_ms);
    Ok(out)
}

pub async fn replay(
    target: &Target,
    trace: Arc<TracePings>,
    opts: &ReplayOptions,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<ReplayReport> {
    let pings = &trace.pings;
    let c = opts.connections.max(1);
    let probe = Client::connect(target).await?;
    let before = server_stats(&probe).await;
    let totals = Arc::new(Totals {
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        acks: Mutex::new(Histogram::default()),
    });
    // Connect everyone first, so the clock measures sending, not handshakes.
    let mut clients = Vec::with_capacity(c);
    for _ in 0..c {
        clients.push(Client::connect(target).await?);
    }
    // Each connection's share, in one pass (a vehicle always on the same
    // connection, in time order), before the clock starts.
    let mut shares: Vec<Vec<PingRecord>> = vec![Vec::new(); c];
    for p in pings.iter() {
        shares[(p.vehicle % c as u64) as usize].push(*p);
    }
    // Each driver's commands follow the pings of their vehicle's
    // connection, on a dispatcher's connection of their own.
    let dispatcher = match &opts.dispatch_token {
        _ if opts.closings.is_empty() => None,
        Some(token) => Some(Arc::new(
            Client::connect(&Target {
                token: token.clone(),
                ..target.clone()
            })
            .await?,
        )),
        None => Some(Arc::new(Client::connect(target).await?)),
    };
    let mut closings: Vec<Vec<Closing>> = vec![Vec::new(); c];
    let alias: HashMap<&str, usize> = trace
        .vehicles
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    for k in opts.closings.iter() {
        if let Some(&a) = alias.get(k.vehicle.as_str()) {
            closings[a % c].push(k.clone());
        }
    }
    // Each connection binds its vehicles' names to the aliases its records carry.
    for (client, share) in clients.iter().zip(&shares) {
        bind_share(client, &trace.vehicles, share).await?;
    }
    let start = Instant::now();
    let t0 = pings.first().map_or(0, |p| p.time_ms);
    let mut tasks = Vec::new();
    for ((client, share), closing) in clients.into_iter().zip(shares).zip(closings) {
        let (opts, totals, progress) = (opts.clone(), totals.clone(), progress.clone());
        let dispatcher = dispatcher.clone();
        let per_conn_rate = opts.rate.map(|r| r / c as f64);
        tasks.push(tokio::spawn(async move {
            let due = |k: usize, p: &PingRecord| -> f64 {
                match (per_conn_rate, opts.speedup) {
                    (Some(r), _) => k as f64 / r,
                    (None, Some(s)) => (p.time_ms - t0) as f64 / 1000.0 / s,
                    (None, None) => 0.0,
                }
            };
            if opts.datagrams {
                send_datagrams(client, share, start, &due, &totals, &progress).await
            } else {
                let work = Share {
                    pings: share,
                    closings: closing,
                    dispatcher,
                };
                send_streams(client, work, start, &due, &opts, &totals, &progress).await
            }
        }));
    }
    let querying = match opts.queries_per_s {
        Some(rate) if rate > 0.0 => {
            let vehicles = trace.vehicles.clone();
            Some(QueryLoad::start(target.clone(), vehicles, rate).await?)
        }
        _ => None,
    };
    for t in tasks {
        t.await.context("replay task")??;
    }
    let send_s = start.elapsed().as_secs_f64();
    // Acknowledged means queued, not processed: the figure that counts is
    // the time until the engine has worked through everything (when the
    // token may read the server's counters).
    // A node of a cluster has the pings once the cluster's log holds
    // them: unless it drives every partition, its engine's count is not
    // the measure (`lastmile cluster status` shows the owners' lag).
    let processed = |s: &HashMap<String, u64>| {
        if s.get("cluster_partitions_owned") != s.get("cluster_partitions") {
            return None;
        }
        s.get("engine_pings_processed")
            .or_else(|| s.get("sink_counted"))
            .copied()
    };
    let base = processed(&before).unwrap_or(0);
    let mut after = server_stats(&probe).await;
    let accepted_now = |after: &HashMap<String, u64>| {
        if opts.datagrams {
            let k = "pings_accepted";
            after
                .get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(k).copied().unwrap_or(0))
        } else {
            totals.accepted.load(Relaxed)
        }
    };
    // Done once the engine has processed everything accepted. Datagrams
    // are not acknowledged, so what was accepted is only known once the
    // server has stopped receiving them: its count unchanged for
    // `QUIET` (a busy server's io thread can leave it unchanged for a few
    // tens of milliseconds while datagrams still wait in its socket, and
    // the replay then ended before them and overstated the rate).
    const QUIET: Duration = Duration::from_millis(250);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut quiet_since = Instant::now();
    // When the engine last caught up with what was accepted: the end of the
    // run, without the quiet period that confirms it.
    let mut caught_up_at = None;
    loop {
        let received_settled = !opts.datagrams || quiet_since.elapsed() >= QUIET;
        let target_done = base + accepted_now(&after);
        let caught_up = processed(&after).is_none_or(|p| p >= target_done);
        caught_up_at = caught_up.then(|| caught_up_at.unwrap_or_else(Instant::now));
        if (received_settled && caught_up) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = server_stats(&probe).await;
        if next.get("datagrams_received") != after.get("datagrams_received") {
            quiet_since = Instant::now();
        }
        after = next;
    }
    let elapsed = caught_up_at
        .unwrap_or_else(Instant::now)
        .duration_since(start)
        .as_secs_f64();
    let queries = querying.map(QueryLoad::stop).transpose()?;
    probe.close();
    let delta = |k: &str| {
        after
            .get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(k).copied().unwrap_or(0))
    };
    let acks = totals.acks.lock().unwrap_or_else(|p| p.into_inner());
    let sent = totals.sent.load(Relaxed);
    let (accepted, shed) = if opts.datagrams {
        (delta("pings_accepted"), delta("pings_shed"))
    } else {
        (totals.accepted.load(Relaxed), 0)
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(ReplayReport {
        mode: if opts.datagrams {
            "datagrams"
        } else {
            "streams"
        },
        connections: c,
        sent,
        accepted,
        rejected: if opts.datagrams {
            delta("pings_invalid") + delta("pings_out_of_scope")
        } else {
            totals.rejected.load(Relaxed)
        },
        shed,
        lost: if opts.datagrams {
            sent.saturating_sub(delta("pings_received"))
        } else {
            0
        },
        elapsed_s: elapsed,
        send_s,
        pings_per_s: accepted as f64 / elapsed.max(1e-9),
        ack_p50_us: us(acks.quantile(0.5)),
        ack_p99_us: us(acks.quantile(0.99)),
        ack_max_us: us(acks.quantile(1.0)),
        batches: totals.batches.load(Relaxed),
        server_errors: totals.errors.load(Relaxed),
        queries: 0,
        query_p50_us: 0.0,
        query_p99_us: 0.0,
        server_peak_rss_mb: after.get("process_peak_rss_bytes").copied().unwrap_or(0) as f64 / 1e6,
        server_io_cpu_share: {
            let (io, all) = (
                delta("cpu_ms_io"),
                delta("cpu_ms_io") + delta("cpu_ms_engine") + delta("cpu_ms_other"),
            );
            if all > 0 { io as f64 / all as f64 } else { 0.0 }
        },
        stops_closed: totals.closed.load(Relaxed),
    })
    .map(|mut r| {
        if let Some(h) = &queries {
            r.queries = h.count();
            r.query_p50_us = us(h.quantile(0.5));
            r.query_p99_us = us(h.quantile(0.99));
        }
        r
    })
}

/// The ETA query load of a replay, on a thread, runtime, connection and
/// socket of its own: the services that ask for ETAs are not the devices
/// that send pings, and a query waiting behind the load generator's own
/// senders for a worker thread would measure the generator, not the server.
struct QueryLoad {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Histogram>,
}

impl QueryLoad {
    /// Connects (an error is returned here) and starts asking.
    async fn start(target: Target, vehicles: Vec<String>, rate: f64) -> anyhow::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, connected) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("replay-queries".into())
            .spawn(move || {
                // Its own wait for a core is not the server's latency.
                crate::priority::short_slice();
                let mut hist = Histogram::default();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                        return hist;
                    }
                };
                runtime.block_on(async {
                    let client = match Client::connect(&target).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    tokio::select! {
                        _ = query_load(&client, &vehicles, rate, &mut hist) => {}
                        _ = stopped => {}
                    }
                    client.close();
                });
                hist
            })
            .context("starting the query thread")?;
        connected
            .await
            .context("the query thread ended before connecting")??;
        Ok(Self { stop, thread })
    }

    /// Stops asking; the latencies of the answers received.
    fn stop(self) -> anyhow::Result<Histogram> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the query thread panicked"))
    }
}

/// Asks for random vehicles' ETAs at a steady rate until dropped,
/// recording each answer's latency in `hist`.
async fn query_load(client: &Client, vehicles: &[String], rate: f64, hist: &mut Histogram) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    for k in 0u64.. {
        pace(start, k as f64 / rate).await;
        // xorshift: a cheap, fixed sequence of vehicles.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let Some(v) = vehicles.get((state % vehicles.len().max(1) as u64) as usize) else {
            return;
        };
        let t = Instant::now();
        if client
            .request(&Request::GetVehicle { vehicle: v.clone() })
            .await
            .is_ok()
        {
            hist.record(t.elapsed());
        }
    }
}

/// Binds, on `client`'s connection, the names of the vehicles whose
/// aliases `share` uses, a chunk per BIND.
async fn bind_share(client: &Client, names: &[String], share: &[PingRecord]) -> anyhow::Result<()> {
    if client.version < Version::V2 {
        bail!("the server speaks protocol version 1 only: replay needs version 2 (vehicle names)");
    }
    let mut aliases: Vec<u64> = share.iter().map(|p| p.vehicle).collect();
    aliases.sort_unstable();
    aliases.dedup();
    for chunk in aliases.chunks(10_000) {
        let pairs = chunk
            .iter()
            .map(|&a| (a, names[a as usize].clone()))
            .collect();
        client.bind(pairs).await.context("binding vehicle names")?;
    }
    Ok(())
}

/// Waits until the schedule allows the ping `due` seconds after `start`.
async fn pace(start: Instant, due: f64) {
    let at = start + Duration::from_secs_f64(due.max(0.0));
    if at > Instant::now() + Duration::from_millis(1) {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// How many of `share[from..]` are due now (with a few ms of look-ahead,
/// so slow rates still send small batches, not single pings).
fn due_now(
    share: &[PingRecord],
    from: usize,
    max: usize,
    start: Instant,
    due: &(dyn Fn(usize, &PingRecord) -> f64 + Sync),
) -> usize {
    let now = start.elapsed().as_secs_f64() + 0.005;
    let mut n = 0;
    while n < max && from + n < share.len() && due(from + n, &share[from + n]) <= now {
        n += 1;
    }
    n.max(1).min(share.len() - from)
}

/// One connection's work on streams: its vehicles' pings, and the stops
/// their drivers close (both in time order).
struct Share {
    pings: Vec<PingRecord>,
    closings: Vec<Closing>,
    /// Where the closings are sent (`None` when there are none).
    dispatcher: Option<Arc<Client>>,
}

async fn send_streams(
    mut client: Client,
    mut work: Share,
    start: Instant,
    due: &(dyn Fn(usize, &PingRecord) -> f64 + Sync),
    opts: &ReplayOptions,
    totals: &Arc<Totals>,
    progress: &AtomicU64,
) -> anyhow::Result<()> {
    let batch = opts
        .batch
        .clamp(1, client.welcome.max_batch.max(1) as usize);
    let window = Arc::new(Semaphore::new(opts.window.max(1)));
    let in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let mut control = client.take_control();
    let collector = {
        let (window, in_flight, totals) = (window.clone(), in_flight.clone(), totals.clone());
        tokio::spawn(async move {
            while let Some(msg) = control.recv().await {
                match msg {
                    Control::Ack(a) => {
                        let sent_at = {
                            let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                            let pos = f.iter().position(|(id, _)| *id == a.batch_id);
                            pos.and_then(|i| f.remove(i)).map(|(_, t)| t)
                        };
                        if let Some(t) = sent_at {
                            totals
                                .acks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .record(t.elapsed());
                        }
                        totals.accepted.fetch_add(u64::from(a.accepted), Relaxed);
                        totals.rejected.fetch_add(u64::from(a.rejected), Relaxed);
                        window.add_permits(1);
                    }
                    Control::Error(_) => {
                        totals.errors.fetch_add(1, Relaxed);
                    }
                }
            }
        })
    };
    let mut stream = client.ping_stream().await?;
    let share = std::mem::take(&mut work.pings);
    let mut closings = std::mem::take(&mut work.closings).into_iter().peekable();
    let all = opts.window.max(1) as u32;
    let mut i = 0;
    let mut batch_id = 0u64;
    while i < share.len() || closings.peek().is_some() {
        // A driver closes a stop once every ping before it is in the
        // engine's queue (acknowledged): the engine sees them in order.
        if let Some(k) = closings.next_if(|k| share.get(i).is_none_or(|p| k.time_ms <= p.time_ms)) {
            let _ = tokio::time::timeout(Duration::from_secs(120), window.acquire_many(all)).await;
            if let Some(d) = &work.dispatcher {
                match d.call(&k.request()).await {
                    Ok(_) => totals.closed.fetch_add(1, Relaxed),
                    Err(_) => totals.errors.fetch_add(1, Relaxed),
                };
            }
            continue;
        }
        pace(start, due(i, &share[i])).await;
        let mut n = due_now(&share, i, batch, start, due);
        if let Some(k) = closings.peek() {
            // The batch stops short of the next driver's command.
            n = share[i..i + n]
                .iter()
                .take_while(|p| p.time_ms < k.time_ms)
                .count()
                .max(1);
        }
        window.acquire().await?.forget();
        in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((batch_id, Instant::now()));
        stream.send(batch_id, &share[i..i + n]).await?;
        batch_id += 1;
        i += n;
        totals.sent.fetch_add(n as u64, Relaxed);
        totals.batches.fetch_add(1, Relaxed);
        progress.fetch_add(n as u64, Relaxed);
    }
    // Every batch acknowledged (or the server gone) before we report.
    let _ = tokio::time::timeout(Duration::from_secs(120), window.acquire_many(all)).await;
    stream.finish().await?;
    collector.abort();
    client.close();
    Ok(())
}

async fn send_datagrams(
    client: Client,
    share: Vec<PingRecord>,
    start: Instant,
    due: &(dyn Fn(usize, &PingRecord) -> f64 + Sync),
    totals: &Arc<Totals>,
    progress: &AtomicU64,
) -> anyhow::Result<()> {
    let per = client.datagram_capacity();
    let empty_buffer = client.connection().datagram_send_buffer_space();
    if per == 0 {
        bail!("the server does not take datagrams on this path");
    }
    let mut i = 0;
    while i < share.len() {
        pace(start, due(i, &share[i])).await;
        let n = due_now(&share, i, per, start, due);
        client.send_datagram(&share[i..i + n]).await?;
        i += n;
        totals.sent.fetch_add(n as u64, Relaxed);
        totals.batches.fetch_add(1, Relaxed);
        progress.fetch_add(n as u64, Relaxed);
    }
    // Closing drops datagrams still queued (waiting for congestion
    // window): wait until the send buffer is empty again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connection().datagram_send_buffer_space() < empty_buffer
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    client.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_vehicles_keep_their_names() {
        let csv = "vehicle_id,timestamp,lat,lon\n\
                   van-42,1767225610,43.73,7.42\n\
                   veh-00042,1767225600,43.73,7.42\n\
                   van-42,1767225605,43.73,7.42\n";
        let trace = lastmile_engine::trace::read_csv(csv.as_bytes()).unwrap();
        let t = pings_from_trace(&trace).unwrap();
        // `van-42` and `veh-00042` are two vehicles, not the number 42 twice.
        assert_eq!(t.vehicles, ["van-42", "veh-00042"]);
        let order: Vec<(u64, i64)> = t.pings.iter().map(|p| (p.vehicle, p.time_ms)).collect();
        assert_eq!(
            order,
            [
                (1, 1_767_225_600_000),
                (0, 1_767_225_605_000),
                (0, 1_767_225_610_000)
            ]
        );
    }

    #[test]
    fn stops_csv_becomes_ordered_routes() {
        let csv = "vehicle_id,stop_id,seq,lat,lon,window_start,window_end,service_s\n\
                   veh-00001,veh-00001-s002,2,43.73,7.42,1767225600,1767229200,120\n\
                   veh-00001,veh-00001-s001,1,43.74,7.41,,,60\n\
                   veh-00002,veh-00002-s001,1,43.72,7.40,2026-01-01T01:00:00Z,2026-01-01T02:00:00Z,\n";
        let routes = routes_from_stops(csv.as_bytes()).unwrap();
        assert_eq!(routes.len(), 2);
        let (v, stops) = &routes[0];
        assert_eq!(v, "veh-00001");
        assert_eq!(
            stops.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["veh-00001-s001", "veh-00001-s002"]
        );
        assert_eq!(stops[0].window_start_ms, 0);
        assert_eq!(stops[1].window_end_ms, 1_767_229_200_000);
        assert_eq!(routes[1].1[0].window_start_ms, 1_767_229_200_000);
        assert!(routes_from_stops("vehicle_id,stop_id\n1,2\n".as_bytes()).is_err());
        assert!(
            routes_from_stops("vehicle_id,stop_id,seq,lat,lon\n1,2,x,1,1\n".as_bytes()).is_err()
        );
        // A stop named twice is an error, not a silent merge.
        assert!(
            routes_from_stops("vehicle_id,stop_id,seq,lat,lon\na,s,1,1,1\nb,s,1,1,1\n".as_bytes())
                .is_err()
        );
    }
}
