//! Live traffic learnt from the fleet itself: observed traversal speeds per
//! edge from the matcher's finalised paths, turned into travel-time changes
//! for the routing metric (CCH partial customization takes them as they are).
//!
//! Per vehicle, [`TraversalAccumulator`] joins the consecutive path pieces of
//! one edge into one traversal, keeping short waits (lights, queues) and
//! dropping long standing (a van parked for a delivery is not a traffic jam). Per edge, [`TrafficModel`] keeps an
//! exponentially weighted mean speed in event time: each observation counts
//! one, and older weight fades with a time constant, so the estimate follows
//! the traffic of the last quarter hour or so and, once nobody has driven the
//! edge for a while, fades back to the free-flow speed. An edge's learnt
//! speed is used only once enough recent observations back it, and
//! [`TrafficModel::changes`] reports only edges whose travel time moved by
//! more than a threshold since last published, so customization stays small.

use lastmile_roadgraph::Graph;

use crate::matcher::Traversal;

/// Parameters of traffic learning. Times in seconds, speeds in m/s.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficConfig {
    /// Time constant of the fading of old observations.
    pub memory_s: f64,
    /// Recent observations (faded weight) needed before an edge's speed is used.
    pub min_observations: f64,
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
    /// Learnt speeds are kept within this factor of free flow, both ways.
    pub max_factor: f64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            memory_s: 900.0,
            min_observations: 3.0,
            min_coverage: 0.5,
            standing_speed_mps: 1.0,
            max_wait_s: 90.0,
            change_threshold: 0.1,
            max_factor: 4.0,
        }
    }
}

/// One vehicle's traversal of one edge, being put together from path pieces.
#[derive(Clone, Copy, Debug, Default)]
struct Open {
    edge: u32,
    metres: f64,
    seconds: f64,
    end: f64,
}

/// Joins a vehicle's finalised path pieces into whole-edge traversals.
#[derive(Clone, Debug, Default)]
pub struct TraversalAccumulator {
    open: Option<Open>,
}

/// A finished traversal of one edge: distance covered, time moving, end time.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// Faded statistics of one edge.
#[derive(Clone, Copy, Debug, Default)]
struct EdgeStats {
    /// Faded observation weight, as of `last`.
    weight: f32,
    /// Weighted mean speed, m/s.
    speed: f32,
    /// Time of the last observation.
    last: f64,
    /// Travel time last published, ms (0 = the free-flow time).
    published_ms: u32,
}

/// Learnt speeds of every edge of a graph.
pub struct TrafficModel {
    config: TrafficConfig,
    stats: Vec<EdgeStats>,
    /// Edges with an observation or a published change, to scan in `changes`.
    active: Vec<u32>,
    in_active: Vec<bool>,
    /// Observations taken and rejected (too short a coverage).
    pub observations: u64,
    pub rejected: u64,
}

impl TrafficModel {
    pub fn new(graph: &Graph, config: TrafficConfig) -> Self {
        Self {
            stats: vec![EdgeStats::default(); graph.num_edges()],
            in_active: vec![false; graph.num_edges()],
            active: Vec::new(),
            observations: 0,
            rejected: 0,
            config,
        }
    }

    /// Free-flow speed of an edge, m/s.
    fn free_speed(graph: &Graph, e: u32) -> f64 {
        graph.length_m(e) / (f64::from(graph.travel_time_ms(e)) / 1000.0).max(0.001)
    }

    /// Takes one traversal into the edge's estimate.
    pub fn observe(&mut self, graph: &Graph, o: &EdgeObservation) {
        let e = o.edge as usize;
        let usable = e < self.stats.len()
            && o.seconds > 0.0
            && o.seconds.is_finite()
            && o.metres.is_finite()
            && o.time.is_finite();
        if !usable {
            self.rejected += 1;
            return;
        }
        if o.metres < self.config.min_coverage * graph.length_m(o.edge) {
            self.rejected += 1;
            return;
        }
        let free = Self::free_speed(graph, o.edge);
        let speed = (o.metres / o.seconds)
            .clamp(free / self.config.max_factor, free * self.config.max_factor);
        let s = &mut self.stats[e];
        let faded = if s.weight > 0.0 {
            f64::from(s.weight) * (-(o.time - s.last).max(0.0) / self.config.memory_s).exp()
        } else {
            0.0
        };
        let weight = faded + 1.0;
        s.speed = (f64::from(s.speed) + (speed - f64::from(s.speed)) / weight) as f32;
        s.weight = weight as f32;
        s.last = s.last.max(o.time);
        self.observations += 1;
        if !self.in_active[e] {
            self.in_active[e] = true;
            self.active.push(o.edge);
        }
    }

    /// The travel time the model believes for edge `e` at time `now`, ms.
    pub fn travel_time_ms(&self, graph: &Graph, e: u32, now: f64) -> u32 {
        let s = &self.stats[e as usize];
        let free_ms = graph.travel_time_ms(e);
        let weight = f64::from(s.weight) * (-(now - s.last).max(0.0) / self.config.memory_s).exp();
        if weight < self.config.min_observations {
            return free_ms;
        }
        let speed = f64::from(s.speed);
        ((graph.length_m(e) / speed) * 1000.0)
            .round()
            .clamp(1.0, f64::from(u32::MAX - 1)) as u32
    }

    /// Edges whose believed travel time at `now` differs from the one last
    /// published by more than the threshold, as `(edge, travel_time_ms)` for
    /// partial customization; they are marked published. Edges that faded
    /// back to free flow are reported once more and then forgotten.
    pub fn changes(&mut self, graph: &Graph, now: f64, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let threshold = self.config.change_threshold;
        let mut keep = 0;
        for i in 0..self.active.len() {
            let e = self.active[i];
            let believed = self.travel_time_ms(graph, e, now);
            let free = graph.travel_time_ms(e);
            let s = &mut self.stats[e as usize];
            let published = if s.published_ms == 0 {
                free
            } else {
                s.published_ms
            };
            let moved = (f64::from(believed) - f64::from(published)).abs()
                > threshold * f64::from(published);
            if moved || (believed == free && published != free) {
                out.push((e, believed));
                s.published_ms = if believed == free { 0 } else { believed };
            }
            let faded =
                f64::from(s.weight) * (-(now - s.last).max(0.0) / self.config.memory_s).exp();
            if s.published_ms == 0 && faded < self.config.min_observations {
                self.in_active[e as usize] = false;
                *s = EdgeStats::default();
            } else {
                self.active[keep] = e;
                keep += 1;
            }
        }
        self.active.truncate(keep);
    }

    /// Edges currently tracked (observed recently or published).
    pub fn tracked(&self) -> usize {
        self.active.len()
    }
}
