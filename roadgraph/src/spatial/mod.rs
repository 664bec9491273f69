//! Edge spatial index: a static packed R-tree over every road segment
//! (`packed`), answering "which edges pass within R metres of this point" and
//! "the K nearest edges", each with the projected point, its distance and its
//! offset along the edge. This is the map matcher's candidate search.
//!
//! The tree's boxes are exact (the graph's fixed-point coordinates), and it is
//! only a filter: every hit is measured exactly in a plane centred on the
//! query point, and a radius query returns precisely the segments within the
//! radius. K-nearest is a radius query with a growing radius, which keeps it
//! exact under the same metric.

mod packed;

use crate::geo::{
    FIXED_PER_DEGREE, LatLon, LocalPlane, METRES_PER_DEGREE, project_origin_on_segment,
};
use crate::graph::{Graph, NO_EDGE};
use packed::{PackedTree, SegmentItem};

/// One edge near a query point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdgeCandidate {
    pub edge: u32,
    /// Metres from the edge's tail to the projected point, along the edge.
    pub offset_m: f64,
    /// Metres from the query point to the projected point.
    pub distance_m: f64,
    /// The projected point on the edge's geometry.
    pub point: LatLon,
    /// The road segment it lies on (index of the segment's first point in
    /// the graph's geometry).
    pub segment: u32,
    /// Unit vector `[east, north]` of the direction of travel along the
    /// edge on that segment (zero for a segment of no length): what a
    /// device's reported heading is compared with, without a trigonometric
    /// call per candidate.
    pub direction: [f32; 2],
}

/// The packed R-tree over all road segments of a graph; see [`Graph::edge_index`].
pub struct EdgeIndex {
    tree: PackedTree,
}

impl EdgeIndex {
    /// Packs the tree (Hilbert order) from the graph.
    pub fn build(graph: &Graph) -> Self {
        let d = graph.data();
        let mut segments = Vec::with_capacity(d.point_lat.len());
        for road in 0..graph.num_roads() as u32 {
            let pts = graph.road_points(road);
            for i in pts.start..pts.end - 1 {
                segments.push(SegmentItem {
                    a: [d.point_lat[i].to_native(), d.point_lon[i].to_native()],
                    b: [
                        d.point_lat[i + 1].to_native(),
                        d.point_lon[i + 1].to_native(),
                    ],
                    d0: d.point_dist_m[i].to_native(),
                    d1: d.point_dist_m[i + 1].to_native(),
                    road,
                    point: i as u32,
                });
            }
        }
        Self {
            tree: PackedTree::build(segments),
        }
    }

    /// Number of indexed segments.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.len() == 0
    }

    /// Bytes the index holds in memory.
    pub fn heap_bytes(&self) -> usize {
        self.tree.heap_bytes()
    }

    /// Every edge with some point within `radius_m` of `p`, closest first, each
    /// at its closest point. `out` is cleared first and reused, so a caller that
    /// keeps it allocates nothing in steady state.
    pub fn within(&self, graph: &Graph, p: LatLon, radius_m: f64, out: &mut Vec<EdgeCandidate>) {
        self.collect(graph, p, radius_m, false, out);
    }

    /// Like [`Self::within`], but a road that comes within the radius more
    /// than once (a hairpin, a loop, a road that bends back) gives one
    /// candidate per approach. Two hits at distances `d1`, `d2` whose points
    /// are closer than `d1 + d2` in a straight line are one approach if the
    /// road between them is about that long too (it runs straight past the
    /// point), and two approaches if it is much longer (it went away and came
    /// back). This is what a map matcher needs; the closest point alone would
    /// jump between the legs of a hairpin as the fixes jitter.
    pub fn approaches_within(
        &self,
        graph: &Graph,
        p: LatLon,
        radius_m: f64,
        out: &mut Vec<EdgeCandidate>,
    ) {
        self.collect(graph, p, radius_m, true, out);
    }

    fn collect(
        &self,
        graph: &Graph,
        p: LatLon,
        radius_m: f64,
        separate: bool,
        out: &mut Vec<EdgeCandidate>,
    ) {
        out.clear();
        // Written to also reject a NaN radius.
        if !p.is_valid() || radius_m.is_nan() || radius_m < 0.0 {
            return;
        }
        let plane = LocalPlane::new(p);
        let dlat = radius_m / METRES_PER_DEGREE;
        // The widest longitude span of the box is at the latitude nearest a pole.
        let max_abs_lat = (p.lat.abs() + dlat).min(89.9);
        let dlon = (radius_m / (METRES_PER_DEGREE * max_abs_lat.to_radians().cos())).min(360.0);
        // The box in the graph's fixed-point degrees, rounded outward and
        // kept inside the range of valid coordinates.
        let fixed = |deg: f64, round: fn(f64) -> f64| {
            round(deg * FIXED_PER_DEGREE).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        };
        let query = [
            fixed((p.lat - dlat).max(-90.0), f64::floor),
            fixed((p.lon - dlon).max(-180.0), f64::floor),
            fixed((p.lat + dlat).min(90.0), f64::ceil),
            fixed((p.lon + dlon).min(180.0), f64::ceil),
        ];
        let r2 = radius_m * radius_m;
        // First pass: every segment hit. `edge` holds the road and
        // `offset_m` the distance from the road's start until expansion.
        self.tree.for_each_intersecting(&query, |seg| {
            let (a, b) = (
                plane.project(LatLon::from_fixed(seg.a[0], seg.a[1])),
                plane.project(LatLon::from_fixed(seg.b[0], seg.b[1])),
            );
            let (t, d2) = project_origin_on_segment(a, b);
            if d2 > r2 {
                return;
            }
            let (d0, d1) = (f64::from(seg.d0), f64::from(seg.d1));
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt();
            let direction = if len > 0.0 {
                [(dx / len) as f32, (dy / len) as f32]
            } else {
                [0.0, 0.0]
            };
            out.push(EdgeCandidate {
                edge: seg.road,
                offset_m: d0 + t * (d1 - d0),
                distance_m: d2.sqrt(),
                point: plane.unproject(a.0 + t * dx, a.1 + t * dy),
                segment: seg.point,
                direction,
            });
        });
        // Segment order breaks ties (two segments meeting at the closest
        // point), so the result does not depend on the tree's layout.
        out.sort_unstable_by(|x, y| {
            x.edge
                .cmp(&y.edge)
                .then(x.distance_m.total_cmp(&y.distance_m))
                .then(x.segment.cmp(&y.segment))
        });
        if separate {
            // Keep a hit only if it is far along the road from every closer
            // hit already kept for that road (hits are closest first per road).
            let mut kept = 0;
            for i in 0..out.len() {
                let c = out[i];
                let mut start = kept;
                while start > 0 && out[start - 1].edge == c.edge {
                    start -= 1;
                }
                if out[start..kept].iter().all(|k| {
                    (k.offset_m - c.offset_m).abs() > 1.5 * (k.distance_m + c.distance_m) + 2.0
                }) {
                    out[kept] = c;
                    kept += 1;
                }
            }
            out.truncate(kept);
        } else {
            out.dedup_by_key(|c| c.edge);
        }
        // Second pass: a road becomes one candidate per allowed direction.
        let d = graph.data();
        let roads = out.len();
        for k in 0..roads {
            let c = out[k];
            let road = c.edge as usize;
            let len = f64::from(d.road_length_cm[road].to_native()) / 100.0;
            let along = c.offset_m.min(len);
            let (fwd, bwd) = (
                d.road_edge_fwd[road].to_native(),
                d.road_edge_bwd[road].to_native(),
            );
            if bwd != NO_EDGE {
                out.push(EdgeCandidate {
                    edge: bwd,
                    offset_m: len - along,
                    direction: [-c.direction[0], -c.direction[1]],
                    ..c
                });
            }
            out[k].edge = fwd;
            out[k].offset_m = along;
        }
        out.retain(|c| c.edge != NO_EDGE);
        out.sort_unstable_by(|x, y| {
            x.distance_m
                .total_cmp(&y.distance_m)
                .then(x.edge.cmp(&y.edge))
        });
    }

    /// The `k` nearest edges to `p` within `max_radius_m`, closest first.
    pub fn nearest(
        &self,
        graph: &Graph,
        p: LatLon,
        k: usize,
        max_radius_m: f64,
        out: &mut Vec<EdgeCandidate>,
    ) {
        out.clear();
        if k == 0 || max_radius_m.is_nan() || max_radius_m <= 0.0 {
            return;
        }
        let mut radius = max_radius_m.min(32.0);
        loop {
            self.within(graph, p, radius, out);
            if out.len() >= k || radius >= max_radius_m {
                break;
            }
            radius = (radius * 4.0).min(max_radius_m);
        }
        out.truncate(k);
    }
}

impl Graph {
    /// Every edge within `radius_m` of `p`; see [`EdgeIndex::within`].
    pub fn edges_within(&self, p: LatLon, radius_m: f64, out: &mut Vec<EdgeCandidate>) {
        self.edge_index().within(self, p, radius_m, out);
    }

    /// The `k` nearest edges within `max_radius_m`; see [`EdgeIndex::nearest`].
    pub fn nearest_edges(
        &self,
        p: LatLon,
        k: usize,
        max_radius_m: f64,
        out: &mut Vec<EdgeCandidate>,
    ) {
        self.edge_index().nearest(self, p, k, max_radius_m, out);
    }
}
