//! Along-path smoothing of finalised points. Once the path is decided, each
//! point's position *along* it is still one noisy projection; at dense
//! sampling its neighbours in time say where it was much better. A local
//! linear fit of path distance against time over the two finalised points
//! either side (only those within a few seconds) replaces it, kept between
//! its neighbours so the vehicle never moves backwards, and mapped back onto
//! the path's edges. This is what puts a point on the right side of a
//! junction when a fix lands a few metres short of it.
//!
//! Points are released two finalised points late (or when the chain ends), so
//! the finalised stream lags the live one by about two more pings.

use std::collections::VecDeque;

use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::{Graph, LatLon};

use super::high_water::HighWater;
use super::{FinalPoint, Traversal};

/// Finalised points each side used by the fit.
const HALF: usize = 2;
/// Neighbours further apart in time than this are not used (sparse sampling
/// says nothing about speed between fixes).
const MAX_SPAN_S: f64 = 3.5;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Pending {
    point: FinalPoint,
    ping: LatLon,
    /// Path distance from the chain's start, metres.
    s: f64,
    released: bool,
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

    /// Records a finalised point at the end of the pieces added so far and
    /// releases every point that now has its neighbours.
    pub fn add_point(
        &mut self,
        g: &Graph,
        point: FinalPoint,
        ping: LatLon,
        out: &mut Vec<FinalPoint>,
    ) {
        self.add_point_at(g, point, ping, self.s, out);
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

    /// Records a finalised point at path distance `s` (not beyond the pieces
    /// added so far, not behind the previous point).
    pub fn add_point_at(
        &mut self,
        g: &Graph,
        point: FinalPoint,
        ping: LatLon,
        s: f64,
        out: &mut Vec<FinalPoint>,
    ) {
        self.points.push_back(Pending {
            point,
            ping,
            s,
            released: false,
        });
        self.peak_points.saw(self.points.len());
        let newest = point.time;
        while let Some(i) = self.points.iter().position(|p| !p.released) {
            // A point is released once its neighbours have come, or once a
            // point beyond its time span has (none can join its fit later):
            // at sparse sampling that is at once.
            let complete = self.points.len() - 1 - i >= HALF;
            if !complete && newest - self.points[i].point.time <= MAX_SPAN_S {
                break;
            }
            self.release(g, i, out);
        }
        self.trim();
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
        let lo = i.saturating_sub(HALF);
        let hi = (i + HALF).min(self.points.len() - 1);
        // (time from this point, path distance) of the neighbours in reach.
        let near = || {
            (lo..=hi)
                .map(|j| &self.points[j])
                .filter(|p| (p.point.time - me.point.time).abs() <= MAX_SPAN_S)
                .map(|p| (p.point.time - me.point.time, p.s))
        };
        let mut point = me.point;
        let count = near().count();
        if count >= 3 {
            let n = count as f64;
            let mt = near().map(|p| p.0).sum::<f64>() / n;
            let ms = near().map(|p| p.1).sum::<f64>() / n;
            let var: f64 = near().map(|p| (p.0 - mt).powi(2)).sum();
            let cov: f64 = near().map(|p| (p.0 - mt) * (p.1 - ms)).sum();
            let slope = if var > 0.0 { cov / var } else { 0.0 };
            let mut s = ms - slope * mt;
            // Never behind the point released before, never past the next one.
            let before = self.points.range(..i).next_back().map(|p| p.s);
            let after = self.points.get(i + 1).map(|p| p.s);
            if let Some(b) = before {
                s = s.max(b);
            }
            if let Some(a) = after {
                s = s.min(a);
            }
            if (s - me.s).abs() > 1e-6
                && let Some((edge, offset)) = self.locate(s)
            {
                point.edge = edge;
                point.offset_m = offset;
                point.point = g.point_on_edge(edge, offset);
                // NaN for an outlier, whose fix is not kept.
                point.distance_m = haversine_m(me.ping, point.point);
                self.points[i].s = s;
            }
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

    /// Drops released points no longer needed, and pieces entirely behind
    /// the oldest kept point. A released point is needed as a neighbour of
    /// the oldest unreleased one (within `HALF` places and `MAX_SPAN_S`),
    /// and the last released one bounds the next from behind.
    fn trim(&mut self) {
        let first_open = self.points.iter().position(|p| !p.released);
        let released = first_open.unwrap_or(self.points.len());
        let needed = |p: &Pending, place_before: usize| match first_open {
            Some(i) => {
                place_before <= HALF && self.points[i].point.time - p.point.time <= MAX_SPAN_S
            }
            None => false,
        };
        let mut drop = 0;
        while drop + 1 < released && !needed(&self.points[drop], released - drop) {
            drop += 1;
        }
        self.points.drain(..drop);
        let oldest = self.points.front().map_or(self.s, |p| p.s);
        while self.pieces.len() > 1
            && self.pieces[0].s0 + (self.pieces[0].to_m - self.pieces[0].from_m) < oldest
        {
            self.pieces.pop_front();
        }
    }
}
