//! Along-path smoothing of finalised points. Once the path is decided, each
//! point's position *along* it is still one noisy projection; its neighbours
//! in time, and the speeds the phone reported, say where it was much better.
//! A fixed-lag Kalman smoother runs along the path: the state is path
//! distance and speed, driven by random acceleration; each fix measures the
//! distance (with its own GPS sigma) and each reported speed measures the
//! speed. A point is released once `LAG` later points have come, at the
//! smoothed distance (Rauch–Tung–Striebel over those points), kept at or
//! ahead of the point released before it so the vehicle never moves
//! backwards and not beyond where the newest fixes put it, and mapped back
//! onto the path's edges. This is what puts a
//! point on the right side of a junction when a fix lands a few metres short
//! of it.
//!
//! Sparse sampling needs no special case: over tens of seconds the
//! acceleration noise swamps what one fix says about the next, and the
//! smoothed distance is the fix's own. Such points are released at once
//! (nothing later can join them within `MAX_SPAN_S`), so the finalised stream
//! lags the live one by at most `LAG` pings.

use std::collections::VecDeque;

use lastmile_roadgraph::geo::{LatLonE7, haversine_m};
use lastmile_roadgraph::{Graph, LatLon};

use super::high_water::HighWater;
use super::{FinalPoint, Traversal};

/// Later points a point waits for before it is released.
const LAG: usize = 5;
/// A point is released without waiting once a point this much later has
/// come: at sparse sampling, later fixes barely move it.
const MAX_SPAN_S: f64 = 5.5;
/// Random acceleration driving the motion model, (m/s²)²·s. Delivery vans
/// brake and pull away at 1–3 m/s², and 1 lets the smoother follow that
/// within a ping or two.
const ACCEL_PSD: f64 = 1.0;
/// Noise of a reported (Doppler) speed, m/s. Phones do 0.2–0.5 m/s.
const SPEED_SIGMA: f64 = 0.5;
/// Fixes further from the motion's prediction than this many standard
/// deviations restart the filter.
const GATE: f64 = 3.0;
/// Speed prior at the start of a chain, m/s: anything a van drives.
const SPEED_PRIOR: f64 = 15.0;

/// The motion state along the path after a point's measurements: path
/// distance and speed with their covariance. Worked in `f64`, stored as
/// [`Stored`].
#[derive(Clone, Copy, Debug)]
struct State {
    s: f64,
    v: f64,
    /// Covariance [[ss, sv], [sv, vv]].
    ss: f64,
    sv: f64,
    vv: f64,
}

/// A [`State`] as a pending point keeps it: the path distance in `f64`
/// (chains run for kilometres), the rest in `f32`, which is plenty for a
/// speed and variances, so that a fleet's pending points stay small.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Stored {
    s: f64,
    v: f32,
    ss: f32,
    sv: f32,
    vv: f32,
}

impl From<State> for Stored {
    fn from(x: State) -> Self {
        Self {
            s: x.s,
            v: x.v as f32,
            ss: x.ss as f32,
            sv: x.sv as f32,
            vv: x.vv as f32,
        }
    }
}

impl From<Stored> for State {
    fn from(x: Stored) -> Self {
        Self {
            s: x.s,
            v: f64::from(x.v),
            ss: f64::from(x.ss),
            sv: f64::from(x.sv),
            vv: f64::from(x.vv),
        }
    }
}

impl State {
    /// The state `dt` seconds later, before any measurement.
    fn predict(&self, dt: f64) -> State {
        let q = ACCEL_PSD;
        State {
            s: self.s + self.v * dt,
            v: self.v,
            ss: self.ss + 2.0 * self.sv * dt + self.vv * dt * dt + q * dt.powi(3) / 3.0,
            sv: self.sv + self.vv * dt + q * dt * dt / 2.0,
            vv: self.vv + q * dt,
        }
    }

    /// Folds in a measured path distance `z` of variance `r`.
    fn measure_distance(&mut self, z: f64, r: f64) {
        let k = self.ss + r;
        let (ks, kv) = (self.ss / k, self.sv / k);
        let y = z - self.s;
        self.s += ks * y;
        self.v += kv * y;
        (self.ss, self.sv, self.vv) = (
            self.ss - ks * self.ss,
            self.sv - ks * self.sv,
            self.vv - kv * self.sv,
        );
    }

    /// Folds in a measured speed `z` of variance `r`.
    fn measure_speed(&mut self, z: f64, r: f64) {
        let k = self.vv + r;
        let (ks, kv) = (self.sv / k, self.vv / k);
        let y = z - self.v;
        self.s += ks * y;
        self.v += kv * y;
        (self.ss, self.sv, self.vv) = (
            self.ss - ks * self.sv,
            self.sv - ks * self.vv,
            self.vv - kv * self.vv,
        );
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Pending {
    point: FinalPoint,
    ping: LatLonE7,
    /// Path distance from the chain's start the fix measured, metres; once
    /// released, the smoothed one.
    s: f64,
    /// The filtered state after this point (the past and this point only).
    filtered: Stored,
    /// The filter restarted here: the path before does not agree with it.
    fresh: bool,
    released: bool,
}

/// What a point measures besides the path distance its fix projects to
/// (given beside it): the fix and its GPS sigma (none for an outlier, whose
/// fix is not kept) and the speed reported with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fix {
    pub ping: LatLon,
    pub sigma: Option<f64>,
    pub speed: Option<f64>,
}

/// A piece of path with its starting path distance.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Piece {
    edge: u32,
    from_m: f64,
    to_m: f64,
    s0: f64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default)]
pub(crate) struct Smoother {
    points: VecDeque<Pending>,
    pieces: VecDeque<Piece>,
    s: f64,
    peak_points: HighWater,
    peak_pieces: HighWater,
}

impl Smoother {
    /// Records a piece of the finalised path.
    pub fn add_piece(&mut self, t: &Traversal) {
        let len = (t.to_m - t.from_m).max(0.0);
        self.pieces.push_back(Piece {
            edge: t.edge,
            from_m: t.from_m,
            to_m: t.to_m,
            s0: self.s,
        });
        self.peak_pieces.saw(self.pieces.len());
        self.s += len;
    }

    /// Gives back room not used since the last trim (a dense burst's).
    pub fn shrink(&mut self) {
        self.peak_points.trim(&mut self.points, 0);
        self.peak_pieces.trim(&mut self.pieces, 0);
    }

    /// Bytes of buffers held.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<Pending>()
            + self.pieces.capacity() * std::mem::size_of::<Piece>()
    }

    /// Path distance where the pieces added so far end.
    pub fn end(&self) -> f64 {
        self.s
    }

    /// The path distance, from `from_s` on, of the point of the kept pieces
    /// nearest to `p`: what a fix measures when the window placed the
    /// vehicle elsewhere (a standing vehicle is not moved back, a held ping
    /// goes no further back than the ping before it).
    pub fn project(&self, g: &Graph, p: LatLon, from_s: f64) -> Option<f64> {
        let mut best: Option<(f64, f64)> = None;
        for piece in self.pieces.iter().rev() {
            let len = (piece.to_m - piece.from_m).max(0.0);
            if piece.s0 + len < from_s {
                break;
            }
            let lo = piece.from_m + (from_s - piece.s0).max(0.0);
            let (offset, d) = g.project_onto_edge(piece.edge, p, lo.min(piece.to_m), piece.to_m);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, piece.s0 + (offset - piece.from_m)));
            }
        }
        best.map(|(_, s)| s)
    }

    /// Records a finalised point whose fix projects to path distance `s`.
    /// It may lie behind where the point is placed, since the window places
    /// a standing vehicle no further back than it has already been, and a
    /// ratchet on noise is a bias the smoother must not inherit; or a little
    /// beyond the pieces added so far, where the window let a moving
    /// vehicle stand short of its fix (points are released no further than
    /// the pieces then reach).
    pub fn add_point(
        &mut self,
        g: &Graph,
        point: FinalPoint,
        fix: Fix,
        s: f64,
        out: &mut Vec<FinalPoint>,
    ) {
        let (filtered, fresh) = self.filter(point.time, s, fix);
        self.points.push_back(Pending {
            point,
            ping: if fix.sigma.is_some() {
                fix.ping.into()
            } else {
                LatLonE7::default()
            },
            s,
            filtered: filtered.into(),
            fresh,
            released: false,
        });
        self.peak_points.saw(self.points.len());
        let newest = point.time;
        while let Some(i) = self.points.iter().position(|p| !p.released) {
            // A point is released once `LAG` later ones have come, or once
            // one beyond `MAX_SPAN_S` has: at sparse sampling that is at once.
            let complete = self.points.len() - 1 - i >= LAG;
            if !complete && newest - self.points[i].point.time <= MAX_SPAN_S {
                break;
            }
            self.release(g, i, out);
        }
        self.trim();
    }

    /// The forward filter's state after a point at `time` measured at path
    /// distance `s`, and whether the filter restarted there.
    ///
    /// It restarts when the fix lies far outside what the motion says
    /// (beyond `GATE` standard deviations): the path between the two points
    /// is longer or shorter than the vehicle can have driven (a detour the
    /// chain took through noise, a loop), and averaging across it would pull
    /// points onto path they are nowhere near.
    fn filter(&self, time: f64, s: f64, fix: Fix) -> (State, bool) {
        let start = |sigma: f64| State {
            s,
            v: 0.0,
            ss: sigma * sigma,
            sv: 0.0,
            vv: SPEED_PRIOR * SPEED_PRIOR,
        };
        let mut fresh = false;
        let mut state = match self.points.back() {
            Some(prev) => State::from(prev.filtered).predict((time - prev.point.time).max(0.0)),
            None => {
                fresh = true;
                start(fix.sigma.unwrap_or(0.0))
            }
        };
        if let Some(sigma) = fix.sigma.filter(|_| !fresh) {
            let r = sigma * sigma;
            if (s - state.s).powi(2) > GATE * GATE * (state.ss + r) {
                state = start(sigma);
                fresh = true;
            } else {
                state.measure_distance(s, r);
            }
        }
        if let Some(v) = fix.speed {
            state.measure_speed(v, SPEED_SIGMA * SPEED_SIGMA);
        }
        (state, fresh)
    }

    /// Point `i`'s smoothed path distance, from its filtered state and the
    /// points after it (Rauch–Tung–Striebel, backwards from the newest).
    fn smoothed(&self, i: usize) -> f64 {
        // Points from a restart on are no evidence for the points before it.
        let newest = (i + 1..self.points.len())
            .find(|&j| self.points[j].fresh)
            .map_or(self.points.len() - 1, |j| j - 1);
        let last = State::from(self.points[newest].filtered);
        let (mut s, mut v) = (last.s, last.v);
        for k in (i..newest).rev() {
            let f = State::from(self.points[k].filtered);
            let dt = (self.points[k + 1].point.time - self.points[k].point.time).max(0.0);
            let p = f.predict(dt);
            // Gain G = P_k F' P_pred⁻¹, with F = [[1, dt], [0, 1]].
            let det = p.ss * p.vv - p.sv * p.sv;
            if det.is_nan() || det <= 1e-12 {
                // A degenerate prediction (no spread): nothing to correct.
                (s, v) = (f.s, f.v);
                continue;
            }
            let (a, b, c, d) = (f.ss + f.sv * dt, f.sv, f.sv + f.vv * dt, f.vv);
            let (i00, i01, i11) = (p.vv / det, -p.sv / det, p.ss / det);
            let (ds, dv) = (s - p.s, v - p.v);
            let (g00, g01) = (a * i00 + b * i01, a * i01 + b * i11);
            let (g10, g11) = (c * i00 + d * i01, c * i01 + d * i11);
            (s, v) = (f.s + g00 * ds + g01 * dv, f.v + g10 * ds + g11 * dv);
        }
        s
    }

    /// Releases everything (the chain ended) and starts afresh.
    pub fn flush(&mut self, g: &Graph, out: &mut Vec<FinalPoint>) {
        while let Some(i) = self.points.iter().position(|p| !p.released) {
            self.release(g, i, out);
        }
        self.points.clear();
        self.pieces.clear();
        self.s = 0.0;
    }

    fn release(&mut self, g: &Graph, i: usize, out: &mut Vec<FinalPoint>) {
        let me = self.points[i];
        let mut point = me.point;
        let mut s = self.smoothed(i);
        // Never ahead of where the newest fixes put the vehicle (the path
        // known so far ends there: a vehicle braking to a stand is not
        // carried on past it), never behind the point released before.
        let ahead = self.points.range(i..).map(|p| p.s).fold(f64::MIN, f64::max);
        // Nor beyond the path known so far (a fix may measure a little
        // past it: see `add_point`).
        s = s.min(ahead).min(self.s);
        if let Some(before) = i.checked_sub(1).map(|b| self.points[b].s) {
            s = s.max(before);
        }
        if let Some((edge, offset)) = self.locate(s) {
            point.edge = edge;
            point.offset_m = offset;
            point.point = g.point_on_edge(edge, offset);
            // An outlier's distance stays unknown (NaN): its fix is not kept.
            if !point.distance_m.is_nan() {
                point.distance_m = haversine_m(me.ping.latlon(), point.point);
            }
            self.points[i].s = s;
        }
        self.points[i].released = true;
        out.push(point);
    }

    /// The edge position at path distance `s`, if the kept pieces cover it.
    fn locate(&self, s: f64) -> Option<(u32, f64)> {
        self.pieces
            .iter()
            .find(|p| s >= p.s0 && s <= p.s0 + (p.to_m - p.from_m).max(0.0))
            .map(|p| (p.edge, p.from_m + (s - p.s0)))
    }

    /// Drops released points but the last (it bounds the next from behind,
    /// and while nothing is pending its filtered state is the prior for the
    /// next point), and pieces entirely behind the oldest kept point.
    fn trim(&mut self) {
        let released = self
            .points
            .iter()
            .position(|p| !p.released)
            .unwrap_or(self.points.len());
        self.points.drain(..released.saturating_sub(1));
        let oldest = self.points.front().map_or(self.s, |p| p.s);
        while self.pieces.len() > 1
            && self.pieces[0].s0 + (self.pieces[0].to_m - self.pieces[0].from_m) < oldest
        {
            self.pieces.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::MatchStatus;
    use lastmile_roadgraph::rng::Rng;
    use lastmile_roadgraph::{CityParams, synthetic};

    /// A van at 10 m/s along one long edge, fixed every second with 5 m of
    /// noise along the road. Returns the mean along-road error of the raw
    /// measurements and of the finalised points, and whether the finalised
    /// offsets ever went backwards.
    fn drive(g: &Graph, e: u32, with_speed: bool, seed: u64) -> (f64, f64, bool) {
        let mut rng = Rng::seed(seed);
        let mut sm = Smoother::default();
        let mut out = Vec::new();
        let (mut truth, mut placed, mut raw_err) = (Vec::new(), 0.0f64, 0.0);
        let len = g.length_m(e);
        let mut t = 0.0;
        let mut s = 20.0;
        while s < len - 20.0 {
            let measured = (s + rng.normal() * 5.0).clamp(0.0, len);
            raw_err += (measured - s).abs();
            // The window never moves the vehicle back: its placement is the
            // furthest measurement so far, and the path runs up to it.
            let next = placed.max(measured);
            sm.add_piece(&Traversal {
                edge: e,
                from_m: placed,
                to_m: next,
                t_start: t,
                t_end: t,
            });
            placed = next;
            let point = FinalPoint {
                seq: truth.len() as u64,
                time: t,
                status: MatchStatus::Matched,
                edge: e,
                offset_m: placed,
                point: g.point_on_edge(e, placed),
                distance_m: 0.0,
            };
            let fix = Fix {
                ping: g.point_on_edge(e, s),
                sigma: Some(5.0),
                speed: with_speed.then(|| 10.0 + rng.normal() * 0.3),
            };
            sm.add_point(g, point, fix, measured, &mut out);
            truth.push(s);
            s += 10.0;
            t += 1.0;
        }
        sm.flush(g, &mut out);
        assert_eq!(out.len(), truth.len());
        let err: f64 = out
            .iter()
            .zip(&truth)
            .map(|(p, s)| (p.offset_m - s).abs())
            .sum();
        let backwards = out.windows(2).any(|w| w[1].offset_m < w[0].offset_m);
        let n = truth.len() as f64;
        (raw_err / n, err / n, backwards)
    }

    #[test]
    fn smoothing_cuts_the_along_road_error_and_never_goes_back() {
        let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(4000, 3)));
        let e = (0..g.num_edges() as u32)
            .max_by(|&a, &b| g.length_m(a).total_cmp(&g.length_m(b)))
            .unwrap();
        assert!(g.length_m(e) > 300.0, "{}", g.length_m(e));
        // Measured: 0.40 and 0.25 of the raw error. A mean of five fixes
        // would give 1/sqrt(5), about 0.45, in theory.
        for (with_speed, most) in [(false, 0.5), (true, 0.35)] {
            let (mut raw, mut smoothed) = (0.0, 0.0);
            for seed in 0..20 {
                let (r, s, backwards) = drive(&g, e, with_speed, seed);
                assert!(!backwards, "seed {seed}: the vehicle went backwards");
                raw += r;
                smoothed += s;
            }
            assert!(
                smoothed < most * raw,
                "speeds {with_speed}: smoothed {smoothed:.1} against raw {raw:.1}"
            );
        }
    }
}
