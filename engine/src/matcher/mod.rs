//! The online map matcher: Newson & Krumm's hidden Markov model, run one ping
//! at a time per vehicle with a variable sliding window (Goh et al.).
//!
//! Each ping gets candidates (the approaches of roads within a radius,
//! nearest first) whose emission log-probability falls with the squared
//! distance to the fix (`noise` learns each vehicle's sigma when the device
//! reports no accuracy), and transitions from the previous ping's candidates
//! scored by how far the road distance strays from the straight line
//! (`transition`; distances from bounded searches, `search`). Viterbi
//! scores and back-pointers are kept for a window of recent pings
//! (`window`); standing vehicles take no steps (`standstill`).
//!
//! Two outputs per ping ([`MatchOutput`]): at once, the best current estimate
//! (feeds ETAs); and, as soon as every surviving hypothesis agrees on the past
//! (or the window reaches `max_lag`), the finalised points, smoothed along the
//! path (`smooth`), and the connected path of edges driven between them,
//! with timestamps (feeds history and traffic learning).
//!
//! The state is split the way a shard uses it: [`VehicleTrack`] is the small
//! per-vehicle state (the window), [`Matcher`] the per-thread scratch and
//! counters shared by all the vehicles a thread owns. Nothing allocates per
//! ping in steady state: a vehicle's steps and candidates sit in two
//! buffers of its own (`steps`) that grow to its window's high-water mark
//! and are trimmed by the shard's tick, not on the ping path, and outputs
//! are cleared and refilled.

mod config;
mod held;
mod high_water;
mod jitter;
mod noise;
mod output;
mod search;
mod smooth;
mod standstill;
mod steps;
mod transition;
mod window;

use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::{EdgeCandidate, Graph};

pub use config::{MAX_CANDIDATES_LIMIT, MatcherConfig};
use noise::NoiseEstimate;
pub use output::{Estimate, FinalPoint, MatchOutput, MatchStatus, MatcherStats, Traversal};
use search::{BoundedSearch, Goal};
use smooth::Smoother;
use standstill::{Hold, Still};
use steps::{Cand, NO_BACK, Step, Window, best, normalise};
use transition::{
    ReportedSpeeds, beta_for, direct_moves, log_direct, log_transition, standstill_tolerance,
    straight_travel,
};

use crate::ping::Ping;

/// Where the finalised path of a chain has got to.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Anchor {
    edge: u32,
    /// Where the finalised path has got to on the edge.
    offset_m: f64,
    time: f64,
}

/// One vehicle's matcher state: its window of recent pings. Small, and
/// bounded by `max_lag` steps of at most `max_candidates` candidates.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default)]
pub struct VehicleTrack {
    next_seq: u64,
    /// Time of the last accepted ping.
    last_time: Option<f64>,
    /// Undecided steps; `window[0]` may be the last finalised step, kept as
    /// the anchor transitions start from.
    window: Window,
    last_final: Option<Anchor>,
    /// Index of the last immediate estimate's candidate in the newest step.
    last_choice: Option<u8>,
    /// Consecutive pings rejected as outliers.
    outliers: u32,
    /// Whether any ping of this vehicle was ever on a road.
    seen_road: bool,
    /// GPS noise learnt from this vehicle's matches.
    noise: NoiseEstimate,
    /// How much its fixes jump from one to the next.
    jitter: jitter::JitterEstimate,
    /// Finalised points waiting for their neighbours.
    smoother: Smoother,
    /// Pings of a standing vehicle held with their steps, oldest first; one
    /// queue per vehicle, so its buffer is reused step after step.
    held: held::Held,
    /// Fixes since the newest step, while they stay together (standing still).
    still: Option<Still>,
    /// The newest step's live estimate, repeated for held pings.
    last_immediate: Option<Estimate>,
}

impl VehicleTrack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps currently held (for memory accounting and tests).
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Gives back the buffers of a vehicle whose chain was flushed (gone
    /// offline), keeping what orders its next pings (sequence numbers, the
    /// last time, the learnt noise).
    pub fn release_buffers(&mut self) {
        if self.window.is_empty() {
            self.window = Window::default();
            self.held = held::Held::default();
            self.smoother = Smoother::default();
        }
    }

    /// Gives back buffer room a long window once needed. For a periodic
    /// tick, not the ping path: between trims, a vehicle's buffers only
    /// grow to its window's high-water mark (bounded by `max_lag` steps of
    /// `max_candidates`), so no ping reallocates once they have.
    pub fn trim_buffers(&mut self) {
        self.window.shrink();
        self.held.shrink();
        self.smoother.shrink();
    }

    /// Bytes held by this vehicle's matcher state (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.window.heap_bytes() + self.held.heap_bytes() + self.smoother.heap_bytes()
    }
}

/// The per-thread matcher: graph, parameters, search scratch and counters.
pub struct Matcher<'g> {
    graph: &'g Graph,
    config: MatcherConfig,
    search: BoundedSearch,
    near: Vec<EdgeCandidate>,
    /// Goals of one predecessor's search, and the candidate each stands for.
    goals: Vec<Goal>,
    goal_cand: Vec<u8>,
    /// Predecessors in the order their transitions are scored.
    order: Vec<usize>,
    chosen: Vec<u8>,
    path_edges: Vec<u32>,
    /// Scratch for the path pieces of one finalised transition.
    pieces: Vec<(u32, f64, f64)>,
    stats: MatcherStats,
}

impl<'g> Matcher<'g> {
    /// Panics if the configuration is invalid; check it with
    /// [`MatcherConfig::validate`] where it comes from user input.
    pub fn new(graph: &'g Graph, config: MatcherConfig) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid matcher configuration: {e}");
        }
        // Build the edge index and the components' reach now rather than
        // on the first ping that needs them (two whole-graph searches).
        graph.edge_index();
        graph.main_reach();
        Self {
            graph,
            search: BoundedSearch::new(graph),
            near: Vec::new(),
            goals: Vec::new(),
            goal_cand: Vec::new(),
            order: Vec::new(),
            chosen: Vec::new(),
            path_edges: Vec::new(),
            pieces: Vec::new(),
            stats: MatcherStats::default(),
            config,
        }
    }

    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    pub fn stats(&self) -> MatcherStats {
        MatcherStats {
            searches: self.search.searches,
            settled: self.search.settled,
            ..self.stats.clone()
        }
    }

    /// Feeds one ping of `track`'s vehicle; fills `out` and returns the ping's status.
    pub fn push(
        &mut self,
        track: &mut VehicleTrack,
        ping: &Ping,
        out: &mut MatchOutput,
    ) -> MatchStatus {
        out.clear();
        let seq = track.next_seq;
        track.next_seq += 1;
        out.immediate.seq = seq;
        out.immediate.time = ping.time;
        let status = self.place(track, ping, seq, out);
        out.immediate.status = status;
        self.stats.pings += 1;
        self.stats.by_status[status as usize] += 1;
        status
    }

    /// Finalises everything still undecided (end of a trace, vehicle gone
    /// offline) and ends the chain.
    pub fn flush(&mut self, track: &mut VehicleTrack, out: &mut MatchOutput) {
        out.finalized.clear();
        out.path.clear();
        self.finish_chain(track, out);
    }

    fn place(
        &mut self,
        track: &mut VehicleTrack,
        ping: &Ping,
        seq: u64,
        out: &mut MatchOutput,
    ) -> MatchStatus {
        if !ping.pos.is_valid() || !ping.time.is_finite() {
            return MatchStatus::Invalid;
        }
        match track.last_time {
            Some(t) if ping.time < t => return MatchStatus::OutOfOrder,
            Some(t) if ping.time == t => return MatchStatus::Duplicate,
            _ => {}
        }
        track.last_time = Some(ping.time);
        track.jitter.add(ping.pos, ping.time);

        let accuracy = ping.valid_accuracy().map(|a| a.max(1.0));
        let sigma = track.noise.sigma(accuracy).unwrap_or(self.config.sigma_m);
        let (pos, sigma, centroid_step) = match self.hold(track, ping, seq, sigma, out) {
            Hold::Held => return MatchStatus::Matched,
            Hold::Step => (ping.pos, sigma, false),
            Hold::StepAt(p, s) => (p, s, true),
        };
        let radius = self.config.search_radius_m.max((3.0 * sigma).min(300.0));
        self.graph
            .edge_index()
            .approaches_within(self.graph, pos, radius, &mut self.near);
        self.near.truncate(self.config.max_candidates);
        if self.near.is_empty() {
            // A fix the chain refuses cannot start a standing cluster.
            track.still = None;
            return MatchStatus::Unmatched;
        }

        let mut step = Step::new(seq, ping.time, pos, sigma);
        step.settled = centroid_step;
        // Before scoring: a reported speed is a witness of the route length.
        step.set_speed(ping.valid_speed());
        track.window.clear_staged();
        let heading = ping
            .valid_heading()
            .filter(|_| self.config.heading_weight > 0.0)
            .filter(|_| {
                ping.valid_speed()
                    .is_none_or(|s| s >= self.config.heading_min_speed_mps)
            });
        // The reported heading as a unit vector [east, north]: its dot
        // product with a candidate's direction is the cosine between them.
        let heading = heading.map(|h| {
            let (east, north) = h.to_radians().sin_cos();
            [east, north]
        });
        for c in &self.near {
            let mut emission = -0.5 * (c.distance_m / sigma).powi(2);
            if let Some([east, north]) = heading {
                let cos = east * f64::from(c.direction[0]) + north * f64::from(c.direction[1]);
                emission -= self.config.heading_weight * (1.0 - cos);
            }
            track.window.stage(Cand::new(c.edge, c.offset_m, emission));
        }

        // (the chain goes on, no road from the chain leads to the new fix)
        let (continues, disconnected) = match track.window.newest_and_staged() {
            Some((prev, prev_cands, cands)) if ping.time - prev.time <= self.config.max_gap_s => {
                // A ping whose best explanation is far less likely than a
                // typical fix is an outlier, even if some road is reachable.
                let reached = self.score_transitions(prev, prev_cands, &step, cands);
                let continues = reached
                    && cands
                        .iter()
                        .any(|c| c.score > -self.config.outlier_log_odds);
                // A break must be a move a vehicle could make: a spike that
                // lands by some unconnected road is an outlier, not a break.
                let plausible = haversine_m(prev.pos(), step.pos())
                    <= self.config.max_speed_mps * (step.time - prev.time);
                let broken = !reached && plausible && self.disconnected(prev_cands, cands);
                (continues, broken)
            }
            _ => (false, false),
        };
        let status = if continues {
            track.outliers = 0;
            MatchStatus::Matched
        } else if disconnected
            || track.window.is_empty()
            || track.outliers >= self.config.max_outliers
            || {
                // A chain that is broken by a long gap restarts at once.
                track
                    .window
                    .back()
                    .is_some_and(|p| ping.time - p.time > self.config.max_gap_s)
            }
        {
            self.finish_chain(track, out);
            track.outliers = 0;
            // A chain starts here: no predecessor, the vehicle where its fix projects.
            for c in track.window.staged_mut() {
                c.score = c.emission;
                c.back = NO_BACK;
                c.reset_pos();
            }
            if disconnected {
                MatchStatus::Break
            } else if track.seen_road {
                MatchStatus::Reset
            } else {
                MatchStatus::Matched
            }
        } else {
            track.outliers += 1;
            track.still = None;
            track.window.clear_staged();
            // Finalised with the step before it, where the path puts the
            // vehicle at its time.
            if let Some(step) = track.window.back() {
                track.held.push_outlier(step.seq, seq, ping.time);
            }
            return MatchStatus::Outlier;
        };
        step.reset = matches!(status, MatchStatus::Reset | MatchStatus::Break);
        step.disconnected = status == MatchStatus::Break;
        normalise(track.window.staged_mut());
        track.seen_road = true;
        track.window.commit(step);
        let newest = track.window.len() - 1;
        let near = &self.near;
        self.estimate(&track.window, newest, near, &mut track.last_choice, out);
        if let Some(b) = best(track.window.cands(newest))
            && !centroid_step
        {
            // `near` still lists this step's candidates in order.
            track.noise.add(self.near[b].distance_m);
        }
        track.last_immediate = Some(out.immediate);
        self.finalise_converged(track, out);
        status
    }

    /// Viterbi step: the best predecessor of each of `step`'s candidates.
    /// False when none is reachable (an outlier or a broken chain).
    fn score_transitions(
        &mut self,
        prev: &Step,
        prev_cands: &[Cand],
        step: &Step,
        cands: &mut [Cand],
    ) -> bool {
        let g = self.graph;
        let gc = haversine_m(prev.pos(), step.pos());
        let straight = straight_travel(gc, prev.sigma(), step.sigma());
        let dt = step.time - prev.time;
        let sigma = prev.sigma().max(step.sigma());
        let beta = beta_for(self.config.beta_m, self.config.beta_per_sigma, dt, sigma);
        let tolerance = standstill_tolerance(sigma);
        let speeds = ReportedSpeeds::new(prev.speed(), step.speed(), dt);
        let witness = |route: f64| speeds.witness(route, beta);
        let limit_m =
            (gc + 10.0 * beta + 4.0 * sigma).min(self.config.max_speed_mps * dt + 4.0 * sigma);
        let best_prev = prev_cands
            .iter()
            .map(|c| c.score)
            .fold(f64::NEG_INFINITY, f64::max);
        // Predecessors best first: once the strong hypotheses have scored the
        // new candidates, a weaker one's search need only reach as far as it
        // could still win, which is usually almost nowhere.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        // Hypotheses this far behind the best cannot win any more.
        order
            .extend((0..prev_cands.len()).filter(|&i| prev_cands[i].score > best_prev - PRUNE_LOG));
        order.sort_by(|&x, &y| {
            prev_cands[y]
                .score
                .total_cmp(&prev_cands[x].score)
                .then(x.cmp(&y))
        });
        let mut any = false;
        for &i in &order {
            let a = &prev_cands[i];
            for b in cands.iter_mut() {
                // (log-probability, position after the move)
                let mut best = (f64::NEG_INFINITY, b.offset());
                for m in direct_moves(
                    g,
                    (a.edge, a.pos()),
                    (b.edge, b.offset()),
                    tolerance,
                    step.settled,
                )
                .into_iter()
                .flatten()
                .filter(|m| m.distance_m <= limit_m && (!m.u_turn || speeds.allows_u_turn()))
                {
                    let lt = log_direct(&m, straight, beta, sigma, self.config.u_turn_penalty)
                        + witness(m.distance_m);
                    if lt > best.0 {
                        best = (lt, m.to_pos_m);
                    }
                }
                let s = a.score + best.0 + b.emission;
                if s > b.score {
                    b.score = s;
                    b.back = i as u8;
                    b.set_pos(best.1);
                    any = true;
                }
            }
            let remaining_m = g.length_m(a.edge) - a.pos();
            let budget_m = limit_m - remaining_m;
            if budget_m < 0.0 {
                continue;
            }
            // Each candidate is a goal only as far as a route could still
            // beat its score so far: |route - straight| / beta must stay
            // under the slack between this hypothesis and that score.
            // Candidates too far behind the step's best to be extended next
            // time need not be reached at all.
            let floor = cands
                .iter()
                .map(|c| c.score)
                .fold(f64::NEG_INFINITY, f64::max)
                - PRUNE_LOG;
            self.goals.clear();
            self.goal_cand.clear();
            for (j, b) in cands.iter().enumerate() {
                let slack = a.score + b.emission - b.score.max(floor);
                if slack <= 0.0 {
                    continue;
                }
                let useful_m = straight + beta * slack - remaining_m - b.offset();
                let limit_cm = if useful_m < budget_m {
                    if useful_m < 0.0 {
                        continue;
                    }
                    (useful_m * 100.0).ceil() as u32
                } else {
                    (budget_m * 100.0) as u32
                };
                self.goals.push(Goal {
                    node: g.tail(b.edge),
                    limit_cm,
                    found: None,
                });
                self.goal_cand.push(j as u8);
            }
            if self.goals.is_empty() {
                continue;
            }
            self.search.run(g, g.head(a.edge), &mut self.goals);
            for (t, &j) in self.goals.iter().zip(&self.goal_cand) {
                let Some(cm) = t.found else { continue };
                let b = &mut cands[usize::from(j)];
                let route = remaining_m + f64::from(cm) / 100.0 + b.offset();
                let s =
                    a.score + log_transition(route, straight, beta) + witness(route) + b.emission;
                if s > b.score {
                    b.score = s;
                    b.back = i as u8;
                    b.reset_pos();
                    any = true;
                }
            }
        }
        self.order = order;
        any
    }

    /// True when no road leads from where the chain believes the vehicle
    /// is (its best hypothesis) to where the new fix most likely is (its
    /// nearest candidate): the two lie in components the main network does
    /// not join, so the fix starts a new chain rather than being refused as
    /// an outlier. Only asked when no transition was found at all.
    fn disconnected(&self, prev_cands: &[Cand], cands: &[Cand]) -> bool {
        let g = self.graph;
        let (Some(a), Some(b)) = (
            best(prev_cands),
            (0..cands.len()).max_by(|&x, &y| cands[x].emission.total_cmp(&cands[y].emission)),
        ) else {
            return false;
        };
        let from = g.component(g.head(prev_cands[a].edge));
        let to = g.component(g.tail(cands[b].edge));
        !g.main_reach().joined(from, to)
    }

    /// Fills the immediate estimate from step `k` (the newest) and records
    /// the candidate chosen in `last_choice`. `near` is the step's candidate
    /// search in candidate order when it was just made (its snapped points
    /// save walking the edge geometry again), else empty.
    fn estimate(
        &self,
        window: &Window,
        k: usize,
        near: &[EdgeCandidate],
        last_choice: &mut Option<u8>,
        out: &mut MatchOutput,
    ) {
        let (step, cands) = (&window[k], window.cands(k));
        let Some(mut best) = best(cands) else { return };
        // Hysteresis: keep following the hypothesis reported last unless
        // another is clearly better, so the live position does not flip
        // between parallel roads or directions on every fix.
        if !step.reset
            && let Some(prev) = *last_choice
        {
            let follow = (0..cands.len())
                .filter(|&i| cands[i].back == prev)
                .max_by(|&a, &b| cands[a].score.total_cmp(&cands[b].score));
            if let Some(f) = follow
                && cands[f].score >= cands[best].score - self.config.switch_margin
            {
                best = f;
            }
        }
        *last_choice = Some(best as u8);
        let c = cands[best];
        let road = self.graph.road_of(c.edge);
        let (mut same, mut total) = (0.0, 0.0);
        for x in cands {
            let p = x.score.exp();
            total += p;
            if self.graph.road_of(x.edge) == road {
                same += p;
            }
        }
        // A standing vehicle keeps its position when the fix falls behind it.
        let point = match near.get(best) {
            Some(n) if c.at_projection() => n.point,
            _ => self.graph.point_on_edge(c.edge, c.pos()),
        };
        let im = &mut out.immediate;
        im.edge = c.edge;
        im.offset_m = c.pos();
        im.point = point;
        im.confidence = if total > 0.0 {
            (same / total) as f32
        } else {
            0.0
        };
    }
}

/// Hypotheses more than this many log units behind the best are not extended.
pub(crate) const PRUNE_LOG: f64 = 30.0;
