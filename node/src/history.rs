//! A vehicle's matched path as the front ends answer it: the store's
//! pieces of finalised path turned into timed points along the road
//! geometry, clipped to a time window exactly, identical in every window
//! that holds them (PROTOCOL.md, GET_HISTORY). Points are in whole
//! milliseconds and 1e-7 degrees, so a point is the same value whichever
//! window or front end produced it.

use lastmile_engine::fleet::PathPiece;
use lastmile_roadgraph::Graph;

use crate::runtime::Node;

/// One vertex of a vehicle's matched path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathPoint {
    pub time_ms: i64,
    pub lat_e7: i32,
    pub lon_e7: i32,
    /// The road graph edge it lies on.
    pub edge: u32,
    /// [`PATH_BREAK`]: not connected to the previous point (the match
    /// restarted after a gap); [`PATH_INTERPOLATED`]: placed at a window's
    /// edge between two points of the path.
    pub flags: u32,
}

/// Flag of a path point that starts a new piece of path.
pub const PATH_BREAK: u32 = 1;
/// Flag of a point that is not one of the path's own but interpolated at
/// the edge of the asked time window, between two that are.
pub const PATH_INTERPOLATED: u32 = 2;

fn ms(t: f64) -> i64 {
    if t.is_finite() {
        (t * 1000.0).round() as i64
    } else {
        0
    }
}

fn e7(deg: f64) -> i32 {
    if deg.is_finite() {
        (deg * 1e7).round() as i32
    } else {
        0
    }
}

impl Node {
    /// A vehicle's matched path between two times (s; infinite: open), at
    /// most `max` points, from the store or, on a cluster, the cluster's
    /// history stream: the points, and whether more follow the last. What
    /// is still buffered is written first, so the answer reaches the
    /// finalised path's end (a few pings behind live; on a cluster, a
    /// vehicle another node drives up to its flush interval more). `None`
    /// without a store, a cluster or an engine. Blocks on the store or the
    /// cluster: call it off the async threads.
    pub fn history(
        &self,
        vehicle: u64,
        (from, to): (f64, f64),
        max: usize,
    ) -> Option<anyhow::Result<(Vec<PathPoint>, bool)>> {
        let e = self.sink.engine()?;
        // A piece is at least two points: this many pieces fill an answer.
        let mut pieces = Vec::new();
        let read = if let Some(d) = &self.durable {
            d.gather_history(e, true);
            d.store.history(vehicle, from, to, max / 2, &mut pieces)
        } else {
            let member = self.cluster.get()?;
            member.history(vehicle, (from, to), max / 2, &mut pieces)
        };
        Some(read.map(|more| {
            let (points, used) = path_points(e.graph(), &pieces, (from, to), max);
            (points, more || used < pieces.len())
        }))
    }
}

/// A matched path as timed points along the road geometry, clipped to the
/// time window `[from, to]` (s), at most `max` points (whole pieces only);
/// returns the points and how many pieces they cover.
///
/// Every point but the window's edges is one of the path's own, the same
/// whatever window is asked: its time is spread over its piece in
/// proportion to the distance driven. A piece that does not continue the
/// previous one (another edge not joined to it, or a jump) starts with
/// [`PATH_BREAK`], as it does in every window that holds it.
/// Where the window cuts between two points, a point interpolated at the
/// window's edge is added, flagged [`PATH_INTERPOLATED`]. A stand gives
/// two points at one place (arrival and departure), and no point repeats
/// the one before it.
pub fn path_points(
    graph: &Graph,
    pieces: &[PathPiece],
    (from, to): (f64, f64),
    max: usize,
) -> (Vec<PathPoint>, usize) {
    let mut out: Vec<PathPoint> = Vec::new();
    let mut prev: Option<&PathPiece> = None;
    // The last point of the path seen before the window, to interpolate
    // the window's first point from.
    let mut before: Option<PathPoint> = None;
    let (from_ms, to_ms) = (ms_floor(from), ms_ceil(to));
    let mut piece_points = Vec::new();
    for (used, p) in pieces.iter().enumerate() {
        if p.edge as usize >= graph.num_edges() {
            continue;
        }
        let joined = prev.is_some_and(|q| {
            let same_edge = q.edge == p.edge && (p.from_m - q.to_m).abs() < 1.0;
            let next_edge = graph.head(q.edge) == graph.tail(p.edge)
                && q.to_m >= graph.length_m(q.edge) - 1.0
                && p.from_m < 1.0;
            same_edge || next_edge
        });
        prev = Some(p);
        // A stand is a run of pieces of no length: only its last gives a
        // point (the departure; the arrival ends the piece before it).
        let stands = |q: &PathPiece| q.edge == p.edge && q.to_m - q.from_m <= 0.0;
        if joined
            && stands(p)
            && pieces
                .get(used + 1)
                .is_some_and(|n| stands(n) && n.from_m == p.to_m)
        {
            continue;
        }
        piece_points.clear();
        own_points(graph, p, joined, &mut piece_points);
        if out.len() + piece_points.len() + 2 > max {
            return (out, used);
        }
        for &pt in &piece_points {
            if pt.time_ms < from_ms {
                before = Some(pt);
                continue;
            }
            if pt.time_ms > to_ms {
                // Cut at the window's end, then nothing more.
                if let Some(last) = out.last().copied()
                    && last.time_ms < to_ms
                    && pt.flags & PATH_BREAK == 0
                {
                    push(&mut out, between(&last, &pt, to_ms));
                }
                return (out, pieces.len());
            }
            if out.is_empty() {
                // The window's first point: interpolated at its start when
                // the window cuts into a stretch of path.
                if let Some(b) = before
                    && pt.time_ms > from_ms
                    && pt.flags & PATH_BREAK == 0
                {
                    push(&mut out, between(&b, &pt, from_ms));
                }
            }
            push(&mut out, pt);
        }
    }
    (out, pieces.len())
}

/// A piece's own points (its first only when it does not continue the
/// previous piece), timed in proportion to the distance driven.
fn own_points(graph: &Graph, p: &PathPiece, joined: bool, out: &mut Vec<PathPoint>) {
    let geometry = graph.edge_geometry_between(p.edge, p.from_m, p.to_m.max(p.from_m));
    let mut along = vec![0.0];
    for w in geometry.windows(2) {
        let d = along.last().copied().unwrap_or(0.0);
        along.push(d + lastmile_roadgraph::geo::haversine_m(w[0], w[1]));
    }
    let total = along.last().copied().unwrap_or(0.0);
    let skip = usize::from(joined);
    for (i, (pt, d)) in geometry.iter().zip(&along).enumerate().skip(skip) {
        // A piece of no length (a stand) ends where it began, at its end time.
        let share = if total > 1e-9 {
            d / total
        } else {
            f64::from(u8::from(i > 0))
        };
        let t = p.t_start + (p.t_end - p.t_start) * share;
        out.push(PathPoint {
            time_ms: ms(t),
            lat_e7: e7(pt.lat),
            lon_e7: e7(pt.lon),
            edge: p.edge,
            flags: if i == 0 && !joined { PATH_BREAK } else { 0 },
        });
    }
}

/// Appends a point unless it repeats the last one (same place, same time).
fn push(out: &mut Vec<PathPoint>, pt: PathPoint) {
    if out
        .last()
        .is_some_and(|l| (l.time_ms, l.lat_e7, l.lon_e7) == (pt.time_ms, pt.lat_e7, pt.lon_e7))
    {
        return;
    }
    out.push(pt);
}

/// The point at `time_ms` between two consecutive points of the path.
fn between(a: &PathPoint, b: &PathPoint, time_ms: i64) -> PathPoint {
    let span = (b.time_ms - a.time_ms).max(1) as f64;
    let f = ((time_ms - a.time_ms) as f64 / span).clamp(0.0, 1.0);
    let lerp = |x: i32, y: i32| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as i32;
    PathPoint {
        time_ms,
        lat_e7: lerp(a.lat_e7, b.lat_e7),
        lon_e7: lerp(a.lon_e7, b.lon_e7),
        edge: b.edge,
        flags: PATH_INTERPOLATED,
    }
}

/// A window's bounds in whole milliseconds, outward (open bounds stay open).
fn ms_floor(t: f64) -> i64 {
    ms_rounded(t, f64::floor)
}

fn ms_ceil(t: f64) -> i64 {
    ms_rounded(t, f64::ceil)
}

fn ms_rounded(t: f64, round: fn(f64) -> f64) -> i64 {
    match t {
        t if t.is_finite() => round(t * 1000.0) as i64,
        t if t < 0.0 => i64::MIN,
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drive along connected edges of a small town: pieces a second or
    /// two long, a stand (zero length, 30 s) in the middle, and a jump to
    /// an unconnected edge after a gap.
    fn drive(g: &Graph) -> Vec<PathPiece> {
        let mut pieces = Vec::new();
        let mut t = 1_000.0;
        let mut e = 0u32;
        let piece = |e: u32, from_m: f64, to_m: f64, t0: f64, t1: f64| PathPiece {
            vehicle: 1,
            edge: e,
            from_m,
            to_m,
            t_start: t0,
            t_end: t1,
        };
        for k in 0..12 {
            let len = g.length_m(e);
            let half = len / 2.0;
            pieces.push(piece(e, 0.0, half, t, t + 1.5));
            t += 1.5;
            if k == 5 {
                // Standing half way along: three zero-length pieces.
                for _ in 0..3 {
                    pieces.push(piece(e, half, half, t, t + 10.0));
                    t += 10.0;
                }
            }
            pieces.push(piece(e, half, len, t, t + 1.5));
            t += 1.5;
            let next = g.out_edges(g.head(e)).find(|&n| g.head(n) != g.tail(e));
            e = next.unwrap_or_else(|| g.out_edges(g.head(e)).next().unwrap());
        }
        // A jump after a gap: an edge that does not continue the last one.
        let far = (0..g.num_edges() as u32)
            .rev()
            .find(|&x| g.tail(x) != g.head(e))
            .unwrap();
        pieces.push(piece(far, 0.0, g.length_m(far), t + 60.0, t + 65.0));
        pieces
    }

    #[test]
    fn history_windows_are_the_full_path_clipped_exactly() {
        let g = Graph::from_data(&lastmile_roadgraph::synthetic::generate_city(
            &lastmile_roadgraph::CityParams::new(1_000, 2),
        ));
        let pieces = drive(&g);
        let open = (f64::NEG_INFINITY, f64::INFINITY);
        let (full, used) = path_points(&g, &pieces, open, 100_000);
        assert_eq!(used, pieces.len());
        assert!(full.iter().all(|p| p.flags & PATH_INTERPOLATED == 0));
        assert_eq!(full.iter().filter(|p| p.flags & PATH_BREAK != 0).count(), 2);
        // No point repeats the one before it; a stand keeps two points.
        for w in full.windows(2) {
            assert!(w[0].time_ms < w[1].time_ms, "{w:?}");
            assert_ne!(w, &[w[1], w[1]][..]);
        }
        for w in full.windows(3) {
            let place = |p: &PathPoint| (p.lat_e7, p.lon_e7);
            assert!(
                !(place(&w[0]) == place(&w[1]) && place(&w[1]) == place(&w[2])),
                "a run of three at one place: {w:?}"
            );
        }
        let (t0, t1) = (pieces[0].t_start, pieces.last().unwrap().t_end);
        for k in 0..60 {
            let from = t0 - 5.0 + (t1 - t0 + 10.0) * f64::from(k) / 60.0;
            for span in [0.7, 3.0, 17.3, 45.0] {
                let to = from + span;
                // What the store gives: the pieces overlapping the window,
                // after the last one that ended before it.
                let first = pieces
                    .iter()
                    .position(|p| p.t_end >= from)
                    .unwrap_or(pieces.len());
                let overlapping: Vec<PathPiece> = pieces[first.saturating_sub(1)..]
                    .iter()
                    .filter(|p| p.t_start <= to)
                    .copied()
                    .collect();
                let (got, _) = path_points(&g, &overlapping, (from, to), 100_000);
                let (lo, hi) = (ms_floor(from), ms_ceil(to));
                let inside: Vec<PathPoint> = full
                    .iter()
                    .filter(|p| (lo..=hi).contains(&p.time_ms))
                    .copied()
                    .collect();
                let own: Vec<PathPoint> = got
                    .iter()
                    .filter(|p| p.flags & PATH_INTERPOLATED == 0)
                    .copied()
                    .collect();
                assert_eq!(own, inside, "window {from}..{to}: the path's own points");
                for (i, p) in got.iter().enumerate() {
                    assert!(
                        (lo..=hi).contains(&p.time_ms),
                        "outside {from}..{to}: {p:?}"
                    );
                    if p.flags & PATH_INTERPOLATED != 0 {
                        let edge =
                            i == 0 && p.time_ms == lo || i == got.len() - 1 && p.time_ms == hi;
                        assert!(edge, "interpolated inside the window: {p:?}");
                    }
                }
            }
        }
    }
}
