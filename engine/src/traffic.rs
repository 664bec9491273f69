//! Live traffic learnt from the fleet itself: observed traversal times per
//! edge from the matcher's finalised paths, turned into travel-time changes
//! for the routing metric (CCH partial customization takes them as they are).
//!
//! Per vehicle, [`TraversalAccumulator`] joins the consecutive path pieces of
//! one edge into one traversal, keeping short waits (lights, queues) and
//! dropping long standing (a van parked for a delivery is not a traffic jam).
//!
//! [`TrafficModel`] learns the ratio of observed to free-flow time, as
//! exponentially weighted means in event time (each observation counts one,
//! older weight fades with a time constant, so estimates follow the last
//! quarter hour or so and fade back to free flow when nobody drives there),
//! at two levels: each edge, and each cell of a grid (about 500 m) over the
//! map. A fleet drives few of a city's edges often enough to learn them
//! alone, but congestion and the way people really drive are shared by the
//! streets around; so an edge's estimate is its own mean shrunk towards its
//! cell's, and the cell's towards free flow, each by a prior weight
//! (empirical-Bayes style): a well-observed edge speaks for itself, an
//! unobserved one in a busy cell takes the cell's, and nothing is invented
//! where nobody drove. [`TrafficModel::changes`] reports only edges whose
//! believed time moved by more than a threshold since last published, so
//! customization stays small once the estimates settle.

use std::collections::HashMap;

use lastmile_roadgraph::csr::group_by_key;
use lastmile_roadgraph::geo::LocalPlane;
use lastmile_roadgraph::{Graph, LatLon};

use crate::matcher::Traversal;

/// Parameters of traffic learning. Times in seconds, speeds in m/s.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// Time constant of the fading of old observations.
    pub memory_s: f64,
    /// Prior weight of an edge's cell in its estimate, in observations: an
    /// edge with this many recent observations is half its own, half its cell.
    pub min_observations: f64,
    /// Side of the grid cells, metres, and the prior weight of free flow in a
    /// cell's estimate, in observations.
    pub cell_m: f64,
    pub cell_prior: f64,
    /// A traversal must cover this share of its edge to count (the ends of
    /// a trip accelerate and brake).
    pub min_coverage: f64,
    /// Standing still (slower than `standing_speed_mps`) for longer than
    /// `max_wait_s` on an edge is a stop (a delivery), not traffic; shorter
    /// waits (lights, queues) are part of the edge's travel time.
    pub standing_speed_mps: f64,
    pub max_wait_s: f64,
    /// Travel-time changes smaller than this fraction are not published.
    pub change_threshold: f64,
    /// Learnt times are kept within this factor of free flow, both ways.
    pub max_factor: f64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            memory_s: 900.0,
            min_observations: 3.0,
            cell_m: 500.0,
            cell_prior: 10.0,
            min_coverage: 0.5,
            standing_speed_mps: 1.0,
            max_wait_s: 90.0,
            change_threshold: 0.1,
            max_factor: 4.0,
        }
    }
}

/// One vehicle's traversal of one edge, being put together from path pieces.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default)]
struct Open {
    edge: u32,
    metres: f64,
    seconds: f64,
    end: f64,
}

/// Joins a vehicle's finalised path pieces into whole-edge traversals.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
pub struct TraversalAccumulator {
    open: Option<Open>,
}

/// A finished traversal of one edge: distance covered, time moving, end time.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct EdgeObservation {
    pub edge: u32,
    pub metres: f64,
    pub seconds: f64,
    pub time: f64,
}

impl TraversalAccumulator {
    /// Adds a piece of the path; a traversal of the previous edge that is now
    /// complete goes to `out`.
    pub fn push(&mut self, t: &Traversal, config: &TrafficConfig, out: &mut Vec<EdgeObservation>) {
        let (metres, seconds) = ((t.to_m - t.from_m).max(0.0), (t.t_end - t.t_start).max(0.0));
        if let Some(o) = self.open
            && o.edge != t.edge
        {
            self.close(out);
        }
        let o = self.open.get_or_insert(Open {
            edge: t.edge,
            ..Open::default()
        });
        // Standing between pieces (no pieces are made while a vehicle stands)
        // counts when it was a short wait.
        let gap = if o.seconds > 0.0 || o.metres > 0.0 {
            (t.t_start - o.end).max(0.0)
        } else {
            0.0
        };
        if gap <= config.max_wait_s {
            o.seconds += gap;
        }
        o.end = t.t_end;
        let crawling = seconds > 0.0 && metres / seconds < config.standing_speed_mps;
        if !(crawling && seconds > config.max_wait_s) {
            o.metres += metres;
            o.seconds += seconds;
        }
    }

    /// Ends the open traversal (the chain broke or the vehicle left).
    pub fn close(&mut self, out: &mut Vec<EdgeObservation>) {
        if let Some(o) = self.open.take()
            && o.seconds > 0.0
        {
            out.push(EdgeObservation {
                edge: o.edge,
                metres: o.metres,
                seconds: o.seconds,
                time: o.end,
            });
        }
    }
}

/// A faded mean of time ratios (observed / free flow).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Faded {
    /// Observation weight as of `last`.
    weight: f32,
    ratio: f32,
    last: f64,
}

/// Most recent observations an edge's and a cell's estimates rest on.
const EDGE_CAP: f64 = 10.0;
const CELL_CAP: f64 = 50.0;
/// Faded evidence below half an observation is stale: ignored.
const STALE_WEIGHT: f64 = 0.5;

impl Faded {
    fn weight_at(&self, now: f64, memory_s: f64) -> f64 {
        if self.weight <= 0.0 {
            return 0.0;
        }
        let w = f64::from(self.weight) * (-(now - self.last).max(0.0) / memory_s).exp();
        if w < STALE_WEIGHT { 0.0 } else { w }
    }

    /// Adds an observation; the weight is capped so that, however busy the
    /// place, old evidence fades within a few time constants.
    fn add(&mut self, ratio: f64, time: f64, memory_s: f64, cap: f64) {
        let w = (self.weight_at(time, memory_s) + 1.0).min(cap);
        self.ratio = (f64::from(self.ratio) + (ratio - f64::from(self.ratio)) / w) as f32;
        self.weight = w as f32;
        self.last = self.last.max(time);
    }

    /// The mean shrunk towards `prior` with `prior_weight`.
    fn shrunk(&self, now: f64, memory_s: f64, prior: f64, prior_weight: f64) -> f64 {
        let w = self.weight_at(now, memory_s);
        (w * f64::from(self.ratio) + prior_weight * prior) / (w + prior_weight)
    }
}

/// A tracked cell's estimate and those of its edges that hold anything:
/// `(edge, estimate, published travel time ms or 0)`.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LearntCell {
    pub cell: u32,
    pub faded: Faded,
    pub edges: Vec<(u32, Faded, u32)>,
}

/// What a [`TrafficModel`] has learnt, as saved in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LearntTraffic {
    pub cells: Vec<LearntCell>,
    pub observations: u64,
    pub rejected: u64,
}

/// Learnt travel times of every edge of a graph.
pub struct TrafficModel {
    config: TrafficConfig,
    edges: Vec<Faded>,
    /// Travel time last published per edge, ms (0 = the free-flow time).
    published_ms: Vec<u32>,
    /// Cell of each edge, and the edges of each cell (CSR).
    cell_of: Vec<u32>,
    cell_first: Vec<u32>,
    cell_edges: Vec<u32>,
    cells: Vec<Faded>,
    /// Cells with recent observations or published edges, to scan in `changes`.
    active: Vec<u32>,
    in_active: Vec<bool>,
    /// Observations taken and rejected (too short a coverage, not finite).
    pub observations: u64,
    pub rejected: u64,
}

impl TrafficModel {
    pub fn new(graph: &Graph, config: TrafficConfig) -> Self {
        // Grid cells in a plane around the map's centre.
        let bbox = graph.bbox();
        let plane = LocalPlane::new(LatLon::new(
            (bbox[1] + bbox[3]) / 2.0,
            (bbox[0] + bbox[2]) / 2.0,
        ));
        let mut ids: HashMap<(i64, i64), u32> = HashMap::new();
        let cell_m = config.cell_m.max(1.0);
        let cell_of: Vec<u32> = (0..graph.num_edges() as u32)
            .map(|e| {
                let (x, y) = plane.project(graph.node_pos(graph.tail(e)));
                let key = ((x / cell_m).floor() as i64, (y / cell_m).floor() as i64);
                let next = ids.len() as u32;
                *ids.entry(key).or_insert(next)
            })
            .collect();
        let (cell_first, cell_edges) = group_by_key(&cell_of, ids.len());
        Self {
            edges: vec![Faded::default(); graph.num_edges()],
            published_ms: vec![0; graph.num_edges()],
            cells: vec![Faded::default(); ids.len()],
            in_active: vec![false; ids.len()],
            active: Vec::new(),
            cell_of,
            cell_first,
            cell_edges,
            observations: 0,
            rejected: 0,
            config,
        }
    }

    /// Takes one traversal into the edge's and its cell's estimates.
    pub fn observe(&mut self, graph: &Graph, o: &EdgeObservation) {
        let e = o.edge as usize;
        let usable = e < self.edges.len()
            && o.seconds > 0.0
            && o.seconds.is_finite()
            && o.metres.is_finite()
            && o.time.is_finite();
        if !usable {
            self.rejected += 1;
            return;
        }
        let len = graph.length_m(o.edge);
        if o.metres < self.config.min_coverage * len {
            self.rejected += 1;
            return;
        }
        let free_s = f64::from(graph.travel_time_ms(o.edge)) / 1000.0 * (o.metres / len.max(0.1));
        let f = self.config.max_factor;
        let ratio = (o.seconds / free_s.max(0.001)).clamp(1.0 / f, f);
        let memory = self.config.memory_s;
        self.edges[e].add(ratio, o.time, memory, EDGE_CAP);
        let c = self.cell_of[e];
        self.cells[c as usize].add(ratio, o.time, memory, CELL_CAP);
        self.observations += 1;
        if !self.in_active[c as usize] {
            self.in_active[c as usize] = true;
            self.active.push(c);
        }
    }

    /// The travel time the model believes for edge `e` at time `now`, ms.
    pub fn travel_time_ms(&self, graph: &Graph, e: u32, now: f64) -> u32 {
        let free_ms = graph.travel_time_ms(e);
        let (cell, edge) = (
            &self.cells[self.cell_of[e as usize] as usize],
            &self.edges[e as usize],
        );
        let memory = self.config.memory_s;
        if cell.weight_at(now, memory) == 0.0 {
            return free_ms;
        }
        let cell_ratio = cell.shrunk(now, memory, 1.0, self.config.cell_prior);
        let ratio = edge.shrunk(now, memory, cell_ratio, self.config.min_observations);
        (f64::from(free_ms) * ratio)
            .round()
            .clamp(1.0, f64::from(u32::MAX - 1)) as u32
    }

    /// Edges whose believed travel time at `now` differs from the one last
    /// published by more than the threshold, as `(edge, travel_time_ms)` for
    /// partial customization; they are marked published. Cells that faded
    /// back to free flow are reported once more and then forgotten.
    pub fn changes(&mut self, graph: &Graph, now: f64, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let threshold = self.config.change_threshold;
        let memory = self.config.memory_s;
        let mut keep = 0;
        for i in 0..self.active.len() {
            let c = self.active[i];
            let range =
                self.cell_first[c as usize] as usize..self.cell_first[c as usize + 1] as usize;
            let mut published_any = false;
            for k in range {
                let e = self.cell_edges[k];
                let free = graph.travel_time_ms(e);
                let mut believed = self.travel_time_ms(graph, e, now);
                // Close to free flow is free flow: what fades back gets there.
                if (f64::from(believed) - f64::from(free)).abs() <= threshold * f64::from(free) {
                    believed = free;
                }
                let p = &mut self.published_ms[e as usize];
                let published = if *p == 0 { free } else { *p };
                let moved = (f64::from(believed) - f64::from(published)).abs()
                    > threshold * f64::from(published);
                let back_to_free = believed == free && published != free;
                if moved || back_to_free {
                    out.push((e, believed));
                    *p = if believed == free { 0 } else { believed };
                }
                published_any |= *p != 0;
            }
            if !published_any && self.cells[c as usize].weight_at(now, memory) == 0.0 {
                self.in_active[c as usize] = false;
                self.cells[c as usize] = Faded::default();
                let range =
                    self.cell_first[c as usize] as usize..self.cell_first[c as usize + 1] as usize;
                for k in range {
                    self.edges[self.cell_edges[k] as usize] = Faded::default();
                }
            } else {
                self.active[keep] = c;
                keep += 1;
            }
        }
        self.active.truncate(keep);
    }

    /// What the model has learnt, for a checkpoint: the tracked cells with
    /// their estimates and their edges' (untracked cells hold nothing).
    pub fn learnt(&self) -> LearntTraffic {
        let cells = self
            .active
            .iter()
            .map(|&c| {
                let range =
                    self.cell_first[c as usize] as usize..self.cell_first[c as usize + 1] as usize;
                let edges = self.cell_edges[range]
                    .iter()
                    .map(|&e| (e, self.edges[e as usize], self.published_ms[e as usize]))
                    .filter(|(_, f, p)| f.weight > 0.0 || *p != 0)
                    .collect();
                LearntCell {
                    cell: c,
                    faded: self.cells[c as usize],
                    edges,
                }
            })
            .collect();
        LearntTraffic {
            cells,
            observations: self.observations,
            rejected: self.rejected,
        }
    }

    /// Takes back what [`TrafficModel::learnt`] saved from a model of the
    /// same graph and cell size; false (and nothing changed) if it does not
    /// fit this model.
    pub fn restore(&mut self, learnt: &LearntTraffic) -> bool {
        let fits = learnt.cells.iter().all(|c| {
            (c.cell as usize) < self.cells.len()
                && c.edges
                    .iter()
                    .all(|(e, _, _)| self.cell_of.get(*e as usize) == Some(&c.cell))
        });
        if !fits {
            return false;
        }
        for c in &learnt.cells {
            self.cells[c.cell as usize] = c.faded;
            for &(e, f, p) in &c.edges {
                self.edges[e as usize] = f;
                self.published_ms[e as usize] = p;
            }
            if !self.in_active[c.cell as usize] {
                self.in_active[c.cell as usize] = true;
                self.active.push(c.cell);
            }
        }
        self.observations = learnt.observations;
        self.rejected = learnt.rejected;
        true
    }

    /// Grid cells currently tracked (observed recently or with published edges).
    pub fn tracked(&self) -> usize {
        self.active.len()
    }
}
