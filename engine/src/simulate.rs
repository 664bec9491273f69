//! The trace simulator behind `lastmile simulate`: vehicles drive delivery
//! tours over a graph and report noisy pings with ground truth.
//!
//! Each vehicle starts somewhere random and is given a tour of stops, each a
//! random road position 0.5–4 km from the previous one, planned on the
//! fastest route (CCH, turn restrictions honoured) until the planned day
//! fills the duration. It drives the legs at speeds that vary around each
//! road's expected speed (a per-driver style, a per-road factor, limited
//! acceleration and braking, slowing for the stop ahead), waits at some
//! junctions as if at lights, and serves each stop for 1–5 minutes.
//!
//! The graph keeps roads outside its main network: vehicles start anywhere
//! (a car park with a one-way exit, a street cut by the map's edge), and
//! stops go where the engine snaps an address (the main network's road
//! unless another is much closer, so some stops lie on the others). A vehicle
//! that finds no route on from where it is (a dead end the extract cut off)
//! leaves the map: it goes silent for 2–10 minutes and comes back somewhere
//! else, as a van that drove off the extract does.
//!
//! Pings come every `interval` seconds at a per-vehicle phase, with Gaussian
//! noise of `noise` metres per axis, occasional outliers (60–250 m off),
//! dropped pings and rarer longer silences. Each row carries the true position
//! and the OSM way the vehicle was on. Optional hidden congestion slows a
//! share of the edges (in clusters) below the speeds the graph and the
//! planned time windows assume, so ETA learning has something to learn. Vehicles are simulated in lockstep and
//! rows come out in time order, so memory stays O(vehicles) for any duration.

use std::io::Write;

use lastmile_roadgraph::dijkstra::EdgePos;
use lastmile_roadgraph::geo::LocalPlane;
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::snap::SnapChoice;
use lastmile_roadgraph::{Graph, LatLon, Metric, Router};
use rayon::prelude::*;

use crate::Ping;

/// 2026-01-01T00:00:00Z: the default start of simulated days.
pub const DEFAULT_START: f64 = 1_767_225_600.0;

#[derive(Clone, Debug)]
pub struct SimParams {
    pub vehicles: usize,
    pub duration_s: f64,
    pub interval_s: f64,
    /// Gaussian noise sigma per axis, metres.
    pub noise_m: f64,
    pub seed: u64,
    pub start_time: f64,
    /// Probability that a ping is an outlier.
    pub outlier_rate: f64,
    /// Probability that a ping is lost.
    pub dropout_rate: f64,
    /// Probability per ping that a silence of 20–300 s starts.
    pub silence_rate: f64,
    /// Write `speed,heading,accuracy` as a phone would.
    pub motion_columns: bool,
    /// Share of edges (0–1) that are truly slower than their free-flow speed
    /// all day, unknown to whoever reads the trace: hidden congestion, in
    /// clusters around random hotspots.
    pub congestion: f64,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            vehicles: 10,
            duration_s: 3600.0,
            interval_s: 1.0,
            noise_m: 5.0,
            seed: 1,
            start_time: DEFAULT_START,
            outlier_rate: 0.002,
            dropout_rate: 0.01,
            silence_rate: 0.0001,
            motion_columns: true,
            congestion: 0.0,
        }
    }
}

/// A planned stop and when the simulated vehicle really got there.
#[derive(Clone, Debug, PartialEq)]
pub struct SimStop {
    pub vehicle: String,
    pub stop_id: String,
    pub seq: u32,
    pub pos: LatLon,
    pub edge: u32,
    pub offset_m: f64,
    pub window_start: f64,
    pub window_end: f64,
    pub service_s: f64,
    pub true_arrival: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimSummary {
    pub pings: u64,
    pub outliers: u64,
    pub dropped: u64,
    pub driven_m: f64,
    /// Edges slowed by hidden congestion, and every edge's true speed factor
    /// (1 when free-flowing): ground truth for traffic learning.
    pub congested_edges: usize,
    pub slowdown: Vec<f32>,
    pub stops: Vec<SimStop>,
}

struct Leg {
    edges: Vec<u32>,
    start_offset: f64,
    end_offset: f64,
    /// Seconds spent off the map before this leg (0: it starts where the
    /// last one ended).
    off_map_s: f64,
}

/// Share of vehicles that start on a road outside the main network.
const FRINGE_START: f64 = 0.25;
/// Consecutive stops without a route after which a vehicle leaves the map.
const STUCK_AFTER: u32 = 12;

struct Vehicle {
    rng: Rng,
    legs: Vec<Leg>,
    leg: usize,
    /// Index into the current leg's edges and offset along that edge.
    idx: usize,
    offset: f64,
    speed: f64,
    style: f64,
    edge_factor: f64,
    /// Stops a few metres before the end of the current edge (a red light
    /// or a give-way), as cars do: before the junction, not on it.
    light_ahead: bool,
    /// Parked (serving a stop, at a light) until then.
    wait_until: f64,
    silent_until: f64,
    /// Index of this vehicle's first stop in the summary's list.
    first_stop: usize,
    /// Sub-step phase of its clock, and the ping slot among the steps.
    phase: f64,
    slot: u64,
    done: bool,
    /// Metres driven so far (the truth an odometer is judged by).
    driven_m: f64,
}

/// Where a car waits before a junction (red light, give-way), metres before it.
const LIGHT_SETBACK_M: f64 = 4.0;

/// One simulated ping: what the device reports and the truth behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimPing {
    /// Index of the vehicle (`veh-{index:05}` in the CSV).
    pub vehicle: u32,
    pub ping: Ping,
    pub truth: LatLon,
    pub true_edge: u32,
    /// Metres the vehicle truly drove from the start up to this ping.
    pub true_driven_m: f64,
}

/// Simulates the fleet and writes the trace CSV to `out`. `progress` gets the
/// simulated seconds done.
pub fn simulate<W: Write>(
    graph: &Graph,
    params: &SimParams,
    out: W,
    progress: &dyn Fn(f64),
) -> Result<SimSummary, csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["vehicle_id", "timestamp", "lat", "lon"];
    if params.motion_columns {
        header.extend(["speed", "heading", "accuracy"]);
    }
    header.extend(["true_lat", "true_lon", "true_way_id"]);
    w.write_record(&header)?;
    let mut failed = None;
    let summary = simulate_pings(graph, params, progress, &mut |p: &SimPing| {
        if failed.is_none()
            && let Err(e) = w.write_record(csv_row(graph, p, params.motion_columns))
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    w.flush()?;
    Ok(summary)
}

/// The CSV fields of one ping.
fn csv_row(graph: &Graph, p: &SimPing, motion: bool) -> Vec<String> {
    let mut row = vec![
        vehicle_name(p.vehicle as usize),
        format!("{:.3}", p.ping.time),
        format!("{:.7}", p.ping.pos.lat),
        format!("{:.7}", p.ping.pos.lon),
    ];
    if motion {
        let opt =
            |v: Option<f32>, digits: usize| v.map_or_else(String::new, |v| format!("{v:.digits$}"));
        row.push(opt(p.ping.speed, 2));
        row.push(opt(p.ping.heading, 1));
        row.push(opt(p.ping.accuracy, 1));
    }
    row.push(format!("{:.7}", p.truth.lat));
    row.push(format!("{:.7}", p.truth.lon));
    row.push(graph.way_id(p.true_edge).to_string());
    row
}

/// The name of simulated vehicle `i` in traces and stop files.
pub fn vehicle_name(i: usize) -> String {
    format!("veh-{i:05}")
}

/// Simulates the fleet, handing each ping to `sink` in time order.
pub fn simulate_pings(
    graph: &Graph,
    params: &SimParams,
    progress: &dyn Fn(f64),
    sink: &mut dyn FnMut(&SimPing),
) -> SimSummary {
    let mut summary = SimSummary::default();
    let steps_per_ping = params.interval_s.ceil().max(1.0) as u64;
    let step = params.interval_s / steps_per_ping as f64;
    let slowdown = congestion(graph, params.congestion, params.seed);
    summary.congested_edges = slowdown.iter().filter(|&&f| f < 1.0).count();
    summary.slowdown = slowdown.clone();
    let fringe: Vec<u32> = (0..graph.num_edges() as u32)
        .filter(|&e| !graph.edge_in_component(e, 0))
        .collect();
    // Tours are planned in parallel (each vehicle has its own seeded random
    // stream, so the result does not depend on the thread count).
    let planned: Vec<(Vehicle, Vec<SimStop>)> = (0..params.vehicles)
        .into_par_iter()
        .map_init(
            || Router::new(graph, Metric::Time),
            |router, i| plan_vehicle(graph, router, params, &fringe, i, step, steps_per_ping),
        )
        .collect();
    let mut fleet = Vec::with_capacity(planned.len());
    for (mut v, stops) in planned {
        v.first_stop = summary.stops.len();
        summary.stops.extend(stops);
        fleet.push(v);
    }

    let total_steps = (params.duration_s / step).floor() as u64;
    let mut pings: Vec<SimPing> = Vec::new();
    for k in 0..=total_steps {
        pings.clear();
        for (i, v) in fleet.iter_mut().enumerate() {
            let now = params.start_time + v.phase + k as f64 * step;
            if k > 0 {
                let driven = advance(graph, &slowdown, v, now, step, &mut summary.stops);
                v.driven_m += driven;
                summary.driven_m += driven;
            }
            if k % steps_per_ping == v.slot
                && let Some(p) = sim_ping(graph, v, i as u32, now, params, &mut summary)
            {
                pings.push(p);
            }
        }
        pings.sort_by(|a, b| a.ping.time.total_cmp(&b.ping.time));
        for p in &pings {
            sink(p);
        }
        if k % 600 == 0 {
            progress(k as f64 * step);
        }
    }
    summary
}

/// Plans a vehicle's tour of stops until its planned day fills the duration.
fn plan_vehicle(
    graph: &Graph,
    router: &mut Router,
    params: &SimParams,
    fringe: &[u32],
    i: usize,
    step: f64,
    steps_per_ping: u64,
) -> (Vehicle, Vec<SimStop>) {
    let mut rng = Rng::seed(params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let id = vehicle_name(i);
    let mut stops = Vec::new();
    // A quarter of the vehicles start off the main network (leaving a car
    // park, coming in over a street the map cut), where the map has such roads.
    // Drawn from a stream of its own, so that a vehicle starting on the
    // main network drives the same day whether or not the map has others.
    let mut fringe_rng =
        Rng::seed(params.seed ^ 0x000F_214E ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut at = if !fringe.is_empty() && fringe_rng.chance(FRINGE_START) {
        let edge = fringe[fringe_rng.below(fringe.len() as u64) as usize];
        EdgePos {
            edge,
            offset_m: fringe_rng.range_f64(0.0, graph.length_m(edge)),
        }
    } else {
        random_position(graph, &mut rng)
    };
    let mut planned = params.start_time;
    let mut legs = Vec::new();
    let mut seq = 0;
    let mut attempts = 0;
    let (mut failures, mut off_map_s) = (0, 0.0);
    while planned < params.start_time + params.duration_s && attempts < 10_000 {
        attempts += 1;
        if failures >= STUCK_AFTER {
            // Nowhere to go from here: off the map, back elsewhere.
            failures = 0;
            at = random_position(graph, &mut rng);
            if !legs.is_empty() {
                off_map_s = rng.range_f64(120.0, 600.0).round();
                planned += off_map_s;
            }
        }
        let to = (0..10)
            .find_map(|_| near_position(graph, &mut rng, graph_pos(graph, at), 500.0, 4000.0))
            .unwrap_or_else(|| random_position(graph, &mut rng));
        // A delivery on a two-way street is made from whichever side the
        // way in reaches first, as drivers (and the engine's ETAs) do.
        let mut ends = vec![to];
        if let Some(r) = graph.reverse_edge(to.edge) {
            ends.push(EdgePos {
                edge: r,
                offset_m: (graph.length_m(r) - to.offset_m).max(0.0),
            });
        }
        let Some(route) = router.route(&[at], &ends) else {
            failures += 1;
            continue;
        };
        failures = 0;
        let to = route.end;
        let service = rng.range_f64(60.0, 300.0);
        planned += route.duration_s;
        stops.push(SimStop {
            vehicle: id.clone(),
            stop_id: format!("{id}-s{seq:03}"),
            seq,
            pos: graph.point_on_edge(to.edge, to.offset_m),
            edge: to.edge,
            offset_m: to.offset_m,
            window_start: (planned - 600.0).floor(),
            window_end: (planned + 1200.0).ceil(),
            service_s: service.round(),
            true_arrival: None,
        });
        planned += service;
        seq += 1;
        legs.push(Leg {
            edges: route.edges,
            start_offset: route.start.offset_m,
            end_offset: route.end.offset_m,
            off_map_s: std::mem::take(&mut off_map_s),
        });
        at = to;
    }
    let offset = legs.first().map_or(0.0, |l| l.start_offset);
    let vehicle = Vehicle {
        legs,
        leg: 0,
        idx: 0,
        offset,
        speed: 0.0,
        style: rng.range_f64(0.8, 1.05),
        edge_factor: rng.range_f64(0.75, 1.1),
        light_ahead: false,
        wait_until: 0.0,
        silent_until: 0.0,
        first_stop: 0,
        phase: rng.range_f64(0.0, step),
        slot: rng.below(steps_per_ping),
        done: false,
        driven_m: 0.0,
        rng,
    };
    (vehicle, stops)
}

fn graph_pos(graph: &Graph, p: EdgePos) -> LatLon {
    graph.point_on_edge(p.edge, p.offset_m)
}

fn random_position(graph: &Graph, rng: &mut Rng) -> EdgePos {
    let edge = rng.below(graph.num_edges() as u64) as u32;
    EdgePos {
        edge,
        offset_m: rng.range_f64(0.0, graph.length_m(edge)),
    }
}

/// A road position at a random bearing and distance from `from`.
fn near_position(
    graph: &Graph,
    rng: &mut Rng,
    from: LatLon,
    min_m: f64,
    max_m: f64,
) -> Option<EdgePos> {
    let d = rng.range_f64(min_m, max_m);
    let a = rng.range_f64(0.0, std::f64::consts::TAU);
    let p = LocalPlane::new(from).unproject(d * a.sin(), d * a.cos());
    // Where the engine would put a stop at that address: the main
    // network's road unless another is much closer.
    let c = SnapChoice::find(graph, p, 300.0, &mut Vec::new())?.preferred();
    Some(EdgePos {
        edge: c.edge,
        offset_m: c.offset_m,
    })
}

impl Vehicle {
    /// The edge driven now, whether it is the leg's last, and the offset at
    /// which the vehicle leaves it (the stop on the last edge).
    fn current_edge(&self, graph: &Graph) -> (u32, bool, f64) {
        let leg = &self.legs[self.leg];
        let e = leg.edges[self.idx];
        let last = self.idx + 1 == leg.edges.len();
        (
            e,
            last,
            if last {
                leg.end_offset
            } else {
                graph.length_m(e)
            },
        )
    }
}

/// Speed factor per edge: 1 for free-flowing edges, 0.35–0.7 for edges
/// within 500 m of a congestion hotspot; hotspots are added at random nodes
/// until `share` of the edges is slowed.
fn congestion(graph: &Graph, share: f64, seed: u64) -> Vec<f32> {
    let mut factor = vec![1.0f32; graph.num_edges()];
    if share <= 0.0 || graph.num_edges() == 0 {
        return factor;
    }
    let target = (share.min(1.0) * graph.num_edges() as f64) as usize;
    let mut rng = Rng::seed(seed ^ 0xC0_4E_57_10);
    let mut slowed = 0;
    let mut near = Vec::new();
    // Bounded: a share near 1 would otherwise hunt for the last few edges.
    for _ in 0..4 * graph.num_nodes() {
        if slowed >= target {
            break;
        }
        let centre = graph.node_pos(rng.below(graph.num_nodes() as u64) as u32);
        let slow = rng.range_f64(0.35, 0.7) as f32;
        graph.edges_within(centre, 500.0, &mut near);
        for c in &near {
            if factor[c.edge as usize] == 1.0 && slowed < target {
                factor[c.edge as usize] = slow;
                slowed += 1;
            }
        }
    }
    factor
}

/// Drives one time step; returns metres driven.
fn advance(
    graph: &Graph,
    slowdown: &[f32],
    v: &mut Vehicle,
    now: f64,
    dt: f64,
    stops: &mut [SimStop],
) -> f64 {
    if v.done || now < v.wait_until {
        v.speed = 0.0;
        return 0.0;
    }
    let (e, last_edge, edge_end) = v.current_edge(graph);
    // Between junctions: the stops at lights are simulated below, not
    // spread over the edge as the free-flow time's delays are.
    let free = graph.driving_speed_mps(e) * f64::from(slowdown[e as usize]);
    let mut target = free * v.style * v.edge_factor;
    let stop_line = edge_end - LIGHT_SETBACK_M;
    if v.light_ahead && !last_edge && v.offset >= stop_line - 0.5 {
        v.light_ahead = false;
        v.wait_until = now + v.rng.range_f64(5.0, 40.0);
        v.speed = 0.0;
        return 0.0;
    }
    // Brake for the stop or the light ahead: v² = 2·a·d, planned at 1.5 m/s²
    // so that one-second steps still end gently. The stop may lie a few
    // short edges ahead.
    let to_stop = {
        let leg = &v.legs[v.leg];
        let mut d = edge_end - v.offset;
        for (j, &e) in leg.edges.iter().enumerate().skip(v.idx + 1) {
            if d > 80.0 {
                break;
            }
            d += if j + 1 == leg.edges.len() {
                leg.end_offset
            } else {
                graph.length_m(e)
            };
        }
        d
    };
    let to_light = if v.light_ahead && !last_edge {
        stop_line - v.offset
    } else {
        f64::INFINITY
    };
    let brake = to_stop.min(to_light);
    if brake.is_finite() {
        target = target.min((2.0 * 1.5 * brake.max(0.0)).sqrt() + 0.3);
    }
    v.speed += (target - v.speed).clamp(-3.0 * dt, 2.0 * dt);
    let mut left = v.speed * dt;
    let driven = left;
    while left > 0.0 {
        let (_, last_edge, edge_end) = v.current_edge(graph);
        if v.light_ahead && !last_edge && v.offset + left >= edge_end - LIGHT_SETBACK_M {
            // Creep up to the stop line; the wait starts on the next step.
            v.offset = (edge_end - LIGHT_SETBACK_M).max(v.offset);
            break;
        }
        if v.offset + left < edge_end {
            v.offset += left;
            break;
        }
        left -= (edge_end - v.offset).max(0.0);
        if last_edge {
            // Arrived: serve the stop, then start the next leg.
            let stop = &mut stops[v.first_stop + v.leg];
            stop.true_arrival = Some(now);
            v.wait_until = now + stop.service_s;
            v.speed = 0.0;
            if v.leg + 1 == v.legs.len() {
                v.done = true;
                v.offset = edge_end;
                return driven - left;
            }
            v.leg += 1;
            v.idx = 0;
            v.offset = v.legs[v.leg].start_offset;
            let away = v.legs[v.leg].off_map_s;
            if away > 0.0 {
                // Drives off the map after the stop, back `away` s later.
                v.wait_until += away;
                v.silent_until = v.wait_until;
            }
            return driven - left;
        }
        v.idx += 1;
        v.offset = 0.0;
        v.edge_factor = v.rng.range_f64(0.75, 1.1);
        let next = v.legs[v.leg].edges[v.idx];
        // A light the driver can stop for comfortably (2 m/s²): a red light
        // just round the corner of a short edge would be a hard stop no
        // driver makes, since they see it coming.
        let room = graph.length_m(next) - LIGHT_SETBACK_M;
        v.light_ahead = room > v.speed * v.speed / 4.0 + 5.0 && v.rng.chance(0.08);
    }
    driven
}

/// The ping of vehicle `index` at `now`, or `None` when it is lost.
fn sim_ping(
    graph: &Graph,
    v: &mut Vehicle,
    index: u32,
    now: f64,
    params: &SimParams,
    summary: &mut SimSummary,
) -> Option<SimPing> {
    if now < v.silent_until {
        summary.dropped += 1;
        return None;
    }
    if v.rng.chance(params.silence_rate) {
        v.silent_until = now + v.rng.range_f64(20.0, 300.0);
        summary.dropped += 1;
        return None;
    }
    if v.rng.chance(params.dropout_rate) {
        summary.dropped += 1;
        return None;
    }
    let leg = &v.legs[v.leg];
    let e = leg.edges[v.idx];
    let truth = graph.point_on_edge(e, v.offset);
    let plane = LocalPlane::new(truth);
    let (mut dx, mut dy) = (
        v.rng.normal() * params.noise_m,
        v.rng.normal() * params.noise_m,
    );
    if v.rng.chance(params.outlier_rate) {
        let (d, a) = (
            v.rng.range_f64(60.0, 250.0),
            v.rng.range_f64(0.0, std::f64::consts::TAU),
        );
        dx += d * a.sin();
        dy += d * a.cos();
        summary.outliers += 1;
    }
    // Rounded to what the CSV keeps (1e-7 degrees), so in-memory and CSV
    // runs see the same pings.
    let seen = plane.unproject(dx, dy);
    let seen = LatLon::new(round7(seen.lat), round7(seen.lon));
    summary.pings += 1;
    let mut ping = Ping::new((now * 1000.0).round() / 1000.0, seen);
    if params.motion_columns {
        let speed = (v.speed + v.rng.normal() * 0.3).max(0.0);
        ping.speed = Some(((speed * 100.0).round() / 100.0) as f32);
        // Phones report no course when standing still.
        if v.speed > 1.0 {
            let h = (graph.edge_bearing(e, v.offset) + v.rng.normal() * 5.0).rem_euclid(360.0);
            ping.heading = Some(((h * 10.0).round() / 10.0) as f32);
        }
        ping.accuracy = Some(((params.noise_m.max(1.0) * 10.0).round() / 10.0) as f32);
    }
    Some(SimPing {
        vehicle: index,
        ping,
        truth: LatLon::new(round7(truth.lat), round7(truth.lon)),
        true_edge: e,
        true_driven_m: v.driven_m,
    })
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// Writes the stops CSV (`vehicle_id,stop_id,seq,lat,lon,window_start,
/// window_end,service_s,true_arrival`).
pub fn write_stops<W: Write>(stops: &[SimStop], out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "vehicle_id",
        "stop_id",
        "seq",
        "lat",
        "lon",
        "window_start",
        "window_end",
        "service_s",
        "true_arrival",
    ])?;
    for s in stops {
        w.write_record([
            s.vehicle.clone(),
            s.stop_id.clone(),
            s.seq.to_string(),
            format!("{:.7}", s.pos.lat),
            format!("{:.7}", s.pos.lon),
            format!("{:.0}", s.window_start),
            format!("{:.0}", s.window_end),
            format!("{:.0}", s.service_s),
            s.true_arrival
                .map_or_else(String::new, |t| format!("{t:.3}")),
        ])?;
    }
    w.flush()?;
    Ok(())
}
