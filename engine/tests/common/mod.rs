//! Shared helpers for the engine's integration tests: real maps imported once
//! per test binary, simulated traces read back through the trace format, and
//! constructed drives along a route.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use lastmile_engine::evaluate::{Evaluation, TraceMatch, evaluate, match_trace};
use lastmile_engine::fleet::{Admission, Engine, Event, EventFilter};
use lastmile_engine::simulate::{SimParams, simulate};
use lastmile_engine::trace::{Trace, read_csv};
use lastmile_engine::{MatcherConfig, Ping};
use lastmile_roadgraph::{
    CityParams, EdgePos, Graph, Metric, NoProgress, Route, Router, synthetic, testdata,
};

/// A real map from `../shared/data/maps`, imported once per test binary
/// (`None`, after saying so, when the data is absent outside CI).
pub fn map(name: &str) -> Option<&'static Graph> {
    static CACHE: OnceLock<Mutex<Vec<(String, &'static Graph)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let path = testdata::data_file(&format!("maps/{name}"))?;
    let mut c = cache.lock().unwrap();
    if let Some((_, g)) = c.iter().find(|(n, _)| n == name) {
        return Some(g);
    }
    let (data, _) = lastmile_roadgraph::import_pbf(&path, &NoProgress).expect("import");
    let g: &'static Graph = Box::leak(Box::new(Graph::from_data(&data)));
    c.push((name.to_string(), g));
    Some(g)
}

/// A small synthetic town (no data needed).
pub fn town() -> &'static Graph {
    static G: OnceLock<Graph> = OnceLock::new();
    G.get_or_init(|| Graph::from_data(&synthetic::generate_city(&CityParams::new(8_000, 3))))
}

/// [`town`], shared as engines take their graph.
pub fn shared_town() -> std::sync::Arc<Graph> {
    static G: OnceLock<std::sync::Arc<Graph>> = OnceLock::new();
    G.get_or_init(|| std::sync::Arc::new(Graph::from_data(&town().to_data())))
        .clone()
}

/// Simulates a fleet and reads the CSV back, as `lastmile simulate` would write it.
pub fn simulated(g: &Graph, params: &SimParams) -> Trace {
    let mut csv = Vec::new();
    simulate(g, params, &mut csv, &|_| {}).expect("simulate");
    read_csv(csv.as_slice()).expect("read back")
}

pub fn run(g: &Graph, trace: &Trace, config: &MatcherConfig) -> (TraceMatch, Evaluation) {
    let m = match_trace(g, config, trace);
    let e = evaluate(g, trace, &m);
    (m, e)
}

/// A one-vehicle trace from pings.
pub fn trace_of(pings: &[Ping]) -> Trace {
    let mut text = String::from("vehicle_id,timestamp,lat,lon\n");
    for p in pings {
        text.push_str(&format!("v,{},{},{}\n", p.time, p.pos.lat, p.pos.lon));
    }
    read_csv(text.as_bytes()).expect("trace")
}

/// Pings every `dt` seconds of a vehicle driving `route` at `speed` m/s
/// from `t0`, exactly on the road, reporting speed and heading.
pub fn drive(g: &Graph, route: &Route, t0: f64, speed: f64, dt: f64) -> Vec<Ping> {
    let mut pieces = Vec::new();
    for (i, &e) in route.edges.iter().enumerate() {
        let a = if i == 0 { route.start.offset_m } else { 0.0 };
        let b = if i + 1 == route.edges.len() {
            route.end.offset_m
        } else {
            g.length_m(e)
        };
        pieces.push((e, a, b.max(a)));
    }
    let total: f64 = pieces.iter().map(|(_, a, b)| b - a).sum();
    let mut pings = Vec::new();
    let mut k = 0;
    loop {
        let mut s = (speed * dt * k as f64).min(total);
        let mut at = pieces[pieces.len() - 1];
        let mut off = at.2;
        for &(e, a, b) in &pieces {
            if s <= b - a {
                at = (e, a, b);
                off = a + s;
                break;
            }
            s -= b - a;
        }
        let mut p = Ping::new(t0 + dt * k as f64, g.point_on_edge(at.0, off));
        p.speed = Some(speed as f32);
        p.heading = Some(g.edge_bearing(at.0, off) as f32);
        pings.push(p);
        if speed * dt * k as f64 >= total {
            return pings;
        }
        k += 1;
    }
}

/// Every event published so far, in bus order.
pub fn all_events(e: &Engine) -> Vec<Event> {
    let (mut cursor, mut out) = (0, Vec::new());
    let r = e
        .events()
        .read(&mut cursor, &EventFilter::default(), usize::MAX, &mut out);
    assert_eq!(r.lost, 0);
    out.into_iter().map(|(_, ev)| ev).collect()
}

/// A route between two random road positions of the main network
/// `min_m`..`max_m` apart (as the crow flies).
pub fn some_route(g: &Graph, seed: u64, min_m: f64, max_m: f64) -> Route {
    let mut rng = lastmile_roadgraph::rng::Rng::seed(seed);
    let mut router = Router::new(g, Metric::Time);
    let main: Vec<u32> = (0..g.num_edges() as u32)
        .filter(|&e| g.edge_in_component(e, 0))
        .collect();
    loop {
        let pick = |rng: &mut lastmile_roadgraph::rng::Rng| {
            let e = main[rng.below(main.len() as u64) as usize];
            EdgePos {
                edge: e,
                offset_m: g.length_m(e) / 2.0,
            }
        };
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        let d = lastmile_roadgraph::geo::haversine_m(
            g.point_on_edge(a.edge, a.offset_m),
            g.point_on_edge(b.edge, b.offset_m),
        );
        if d < min_m || d > max_m {
            continue;
        }
        if let Some(r) = router.route(&[a], &[b]) {
            return r;
        }
    }
}

/// Submits one vehicle's pings (waiting for room) and waits until they are processed.
pub fn feed(e: &Engine, vehicle: u64, pings: &[Ping]) {
    let batch: Vec<(u64, Ping)> = pings.iter().map(|&p| (vehicle, p)).collect();
    let wait = Admission::Wait(std::time::Duration::from_secs(5));
    assert_eq!(e.submit(&batch, wait).shed, 0);
    e.sync();
}
