//! The routable road graph: the rkyv-serialised layout ([`GraphData`]) and the
//! read-only view over its archived form ([`Graph`]) that every query uses.
//!
//! Layout. Undirected *roads* are the pieces of OSM ways between junctions;
//! each owns its polyline geometry, its OSM way id and its class. Directed
//! *edges* (one per allowed direction of a road) form a compressed sparse row
//! graph sorted by tail node, with a mirrored incoming adjacency for backward
//! searches. Everything is structure-of-arrays of plain integers so the archived
//! form is the in-memory form: opening a snapshot is an mmap, not a parse.

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::OnceLock;

use rkyv::util::AlignedVec;

use crate::cch::CchData;
use crate::components::MainReach;
use crate::geo::LatLon;
use crate::highway::{HighwayClass, SpeedLimit};
use crate::network::RestrictionKind;
use crate::spatial::EdgeIndex;

/// Edge direction marker in `edge_road`: the edge runs against the road's geometry.
pub(crate) const REVERSED: u32 = 1 << 31;
/// Marker for "no edge in this direction" in `road_edge_*`.
pub const NO_EDGE: u32 = u32::MAX;

/// The serialised graph. Field comments give units; indices are `u32`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GraphData {
    /// Node latitude, 1e-7 degrees.
    pub node_lat: Vec<i32>,
    /// Node longitude, 1e-7 degrees.
    pub node_lon: Vec<i32>,
    /// CSR offsets into the edge arrays, one per node plus one.
    pub first_out: Vec<u32>,
    pub tail: Vec<u32>,
    pub head: Vec<u32>,
    /// Free-flow travel time of each edge, milliseconds (at least 1; see
    /// [`crate::free_flow`]).
    pub travel_time_ms: Vec<u32>,
    /// What ends each edge ([`crate::free_flow::EdgeFeatures`]): signals,
    /// the junction at its head, urban or rural.
    pub edge_features: Vec<u8>,
    /// Legal limit of each edge (see [`SpeedLimit::to_u8`]).
    pub speed_limit: Vec<u8>,
    /// Road of each edge, with [`REVERSED`] set when the edge runs against it.
    pub edge_road: Vec<u32>,
    /// Incoming adjacency: offsets per node plus one, and edge ids.
    pub first_in: Vec<u32>,
    pub in_edge: Vec<u32>,
    /// OSM way id of each road.
    pub road_way: Vec<i64>,
    /// [`HighwayClass`] of each road.
    pub road_class: Vec<u8>,
    /// Length of each road, centimetres (haversine over its geometry).
    pub road_length_cm: Vec<u32>,
    /// Edge running along / against each road's geometry, or [`NO_EDGE`].
    pub road_edge_fwd: Vec<u32>,
    pub road_edge_bwd: Vec<u32>,
    /// Geometry offsets per road plus one into the point arrays.
    pub road_first_point: Vec<u32>,
    pub point_lat: Vec<i32>,
    pub point_lon: Vec<i32>,
    /// Distance from the start of the road to each point, metres.
    pub point_dist_m: Vec<f32>,
    pub restrictions: Vec<TurnRestriction>,
    /// Strongly connected component of each node. Components are numbered
    /// by size, largest first: component 0 is the main network, the others
    /// are the roads it cannot both reach and be reached from (one-way
    /// exits, car parks, streets cut by the extract's edge, islands).
    pub node_component: Vec<u32>,
    /// Nodes in each component.
    pub component_nodes: Vec<u32>,
    /// Metric-independent CCH preprocessing (order, shortcut topology, elimination tree).
    pub cch: CchData,
    pub meta: GraphMeta,
}

/// A via-node turn restriction resolved to graph edges.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnRestriction {
    /// 0 = `no_*`, 1 = `only_*` (see [`RestrictionKind`]). Several `only` entries
    /// with the same `from_edge` list the allowed continuations together.
    pub kind: u8,
    pub from_edge: u32,
    pub via_node: u32,
    pub to_edge: u32,
}

impl TurnRestriction {
    pub fn kind(&self) -> RestrictionKind {
        if self.kind == RestrictionKind::Only as u8 {
            RestrictionKind::Only
        } else {
            RestrictionKind::No
        }
    }
}

/// Where the graph came from and what the builder could not use.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GraphMeta {
    /// File name of the source (or `synthetic:edges=N,seed=K`).
    pub source: String,
    /// Turn restrictions that could not be resolved to graph edges.
    pub unresolved_restrictions: u64,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(AlignedVec),
}

/// A loaded road graph: the archived [`GraphData`] in memory (mmap'd from a
/// snapshot, or built in memory) plus the lazily built edge spatial index.
pub struct Graph {
    storage: Storage,
    /// Byte offset of the archive inside `storage`.
    start: usize,
    /// The archive's root inside `storage`, located once: every accessor
    /// reads through it, and finding the root per call was a measurable
    /// share of the hot loops.
    root: NonNull<ArchivedGraphData>,
    index: OnceLock<EdgeIndex>,
    /// Head and length of every edge side by side, built on first use.
    length_arcs: OnceLock<Box<[LengthArc]>>,
    main_reach: OnceLock<MainReach>,
    fingerprint: OnceLock<u64>,
}

/// An edge as a search by road length reads it: head node and length, 8
/// bytes side by side, indexed by edge id. A node's out-edges are one
/// contiguous run of these, where the archive spreads the same facts over
/// three arrays (`head`, `edge_road`, `road_length_cm`); a search over a
/// graph far larger than the cache pays a miss per array it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LengthArc {
    pub head: u32,
    pub length_cm: u32,
}

// SAFETY: `root` points into `storage`, which the graph owns, never mutates
// and never reallocates (an mmap or a heap buffer, neither moves when the
// `Graph` does); the archived data is plain immutable bytes, so sharing and
// sending the graph is as safe as sharing and sending `storage` itself.
unsafe impl Send for Graph {}
unsafe impl Sync for Graph {}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("nodes", &self.num_nodes())
            .field("edges", &self.num_edges())
            .finish()
    }
}

impl Graph {
    /// Wraps bytes that [`rkyv::access`] has already validated.
    pub(crate) fn from_validated_mmap(mmap: memmap2::Mmap, start: usize) -> Self {
        Self::with_storage(Storage::Mapped(mmap), start)
    }

    fn with_storage(storage: Storage, start: usize) -> Self {
        let bytes = match &storage {
            Storage::Mapped(m) => &m[start..],
            Storage::Owned(v) => &v[start..],
        };
        // SAFETY: both constructors pass bytes rkyv produced or validated
        // (`from_data` serialised them itself, `from_validated_mmap` is only
        // called after `rkyv::access` succeeded on exactly this range).
        let root = NonNull::from(unsafe { rkyv::access_unchecked::<ArchivedGraphData>(bytes) });
        Self {
            storage,
            start,
            root,
            index: OnceLock::new(),
            length_arcs: OnceLock::new(),
            main_reach: OnceLock::new(),
            fingerprint: OnceLock::new(),
        }
    }

    /// Builds a graph in memory from its data (used after import or generation).
    pub fn from_data(data: &GraphData) -> Self {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(data)
            .expect("serialising plain vectors into memory cannot fail");
        Self::with_storage(Storage::Owned(bytes), 0)
    }

    /// The serialised bytes of the archive (what a snapshot stores).
    pub fn archive_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => &m[self.start..],
            Storage::Owned(v) => &v[self.start..],
        }
    }

    /// A 64-bit fingerprint of the graph's contents (xxh3 of its archive):
    /// state saved against one graph (a checkpoint) is only restored onto
    /// the same graph. Computed once, on first use.
    pub fn fingerprint(&self) -> u64 {
        *self
            .fingerprint
            .get_or_init(|| xxhash_rust::xxh3::xxh3_64(self.archive_bytes()))
    }

    /// The archived data. Every constructor validated the bytes once and
    /// located the root, so this is a pointer read, not a check.
    #[inline]
    pub fn data(&self) -> &ArchivedGraphData {
        // SAFETY: `root` was located in `storage` at construction (see
        // `with_storage`) and lives as long as `self`.
        unsafe { self.root.as_ref() }
    }

    /// A deserialised, owned copy (for tests and tools that modify a graph).
    pub fn to_data(&self) -> GraphData {
        rkyv::deserialize::<GraphData, rkyv::rancor::Error>(self.data())
            .expect("deserialising validated plain vectors cannot fail")
    }

    pub fn num_nodes(&self) -> usize {
        self.data().node_lat.len()
    }

    pub fn num_edges(&self) -> usize {
        self.data().head.len()
    }

    pub fn num_roads(&self) -> usize {
        self.data().road_way.len()
    }

    pub fn meta(&self) -> &ArchivedGraphMeta {
        &self.data().meta
    }

    #[inline]
    pub fn node_pos(&self, v: u32) -> LatLon {
        let d = self.data();
        LatLon::from_fixed(
            d.node_lat[v as usize].to_native(),
            d.node_lon[v as usize].to_native(),
        )
    }

    /// Outgoing edge ids of `v` (a contiguous range).
    #[inline]
    pub fn out_edges(&self, v: u32) -> Range<u32> {
        let f = &self.data().first_out;
        f[v as usize].to_native()..f[v as usize + 1].to_native()
    }

    /// Incoming edge ids of `v`.
    #[inline]
    pub fn in_edges(&self, v: u32) -> impl ExactSizeIterator<Item = u32> + '_ {
        let d = self.data();
        let r = d.first_in[v as usize].to_native() as usize
            ..d.first_in[v as usize + 1].to_native() as usize;
        d.in_edge[r].iter().map(|e| e.to_native())
    }

    #[inline]
    pub fn tail(&self, e: u32) -> u32 {
        self.data().tail[e as usize].to_native()
    }

    #[inline]
    pub fn head(&self, e: u32) -> u32 {
        self.data().head[e as usize].to_native()
    }

    #[inline]
    pub fn travel_time_ms(&self, e: u32) -> u32 {
        self.data().travel_time_ms[e as usize].to_native()
    }

    /// What ends edge `e`: signals, the junction at its head, its setting.
    pub fn edge_features(&self, e: u32) -> crate::free_flow::EdgeFeatures {
        crate::free_flow::EdgeFeatures(self.data().edge_features[e as usize])
    }

    /// The speed edge `e` is driven at between its junctions, m/s: its
    /// free-flow time without the delays at its end (see
    /// [`crate::free_flow`]).
    pub fn driving_speed_mps(&self, e: u32) -> f64 {
        let urban = self.edge_features(e).urban();
        crate::free_flow::expected_speed_kmh(self.class(e), self.speed_limit(e), urban) / 3.6
    }

    #[inline]
    pub fn length_cm(&self, e: u32) -> u32 {
        self.data().road_length_cm[self.road_of(e) as usize].to_native()
    }

    #[inline]
    pub fn length_m(&self, e: u32) -> f64 {
        f64::from(self.length_cm(e)) / 100.0
    }

    pub fn speed_limit(&self, e: u32) -> SpeedLimit {
        SpeedLimit::from_u8(self.data().speed_limit[e as usize])
    }

    /// Road of an edge.
    #[inline]
    pub fn road_of(&self, e: u32) -> u32 {
        self.data().edge_road[e as usize].to_native() & !REVERSED
    }

    /// True when the edge runs against its road's geometry.
    #[inline]
    pub fn is_reversed(&self, e: u32) -> bool {
        self.data().edge_road[e as usize].to_native() & REVERSED != 0
    }

    pub fn way_id(&self, e: u32) -> i64 {
        self.data().road_way[self.road_of(e) as usize].to_native()
    }

    pub fn class(&self, e: u32) -> HighwayClass {
        self.road_class(self.road_of(e))
    }

    pub fn road_class(&self, r: u32) -> HighwayClass {
        HighwayClass::from_u8(self.data().road_class[r as usize]).unwrap_or(HighwayClass::Service)
    }

    /// Strongly connected component of node `v` (0 is the largest).
    #[inline]
    pub fn component(&self, v: u32) -> u32 {
        self.data().node_component[v as usize].to_native()
    }

    /// Number of strongly connected components.
    pub fn num_components(&self) -> usize {
        self.data().component_nodes.len()
    }

    /// Nodes in component `c`.
    pub fn component_nodes(&self, c: u32) -> u32 {
        self.data().component_nodes[c as usize].to_native()
    }

    /// The component a vehicle on edge `e` is in: its head's. From anywhere
    /// on the edge a vehicle reaches every node of that component, and it
    /// can come back to the edge from them when the tail is in it too (see
    /// [`Graph::edge_in_component`]).
    #[inline]
    pub fn edge_component(&self, e: u32) -> u32 {
        self.component(self.head(e))
    }

    /// True when both ends of edge `e` lie in component `c`: a vehicle in
    /// `c` can drive onto the edge and back from it.
    #[inline]
    pub fn edge_in_component(&self, e: u32, c: u32) -> bool {
        self.component(self.tail(e)) == c && self.component(self.head(e)) == c
    }

    /// The edge running in the opposite direction over the same road, if any.
    pub fn reverse_edge(&self, e: u32) -> Option<u32> {
        let d = self.data();
        let r = self.road_of(e) as usize;
        let other = if self.is_reversed(e) {
            d.road_edge_fwd[r].to_native()
        } else {
            d.road_edge_bwd[r].to_native()
        };
        (other != NO_EDGE).then_some(other)
    }

    /// Point index range of a road's geometry.
    #[inline]
    pub(crate) fn road_points(&self, r: u32) -> Range<usize> {
        let f = &self.data().road_first_point;
        f[r as usize].to_native() as usize..f[r as usize + 1].to_native() as usize
    }

    #[inline]
    pub(crate) fn point(&self, i: usize) -> LatLon {
        let d = self.data();
        LatLon::from_fixed(d.point_lat[i].to_native(), d.point_lon[i].to_native())
    }

    /// The polyline of road `r`, in its geometry's direction.
    pub fn road_geometry(&self, r: u32) -> impl ExactSizeIterator<Item = LatLon> + '_ {
        self.road_points(r).map(|i| self.point(i))
    }

    /// The polyline of an edge, from its tail to its head.
    pub fn edge_geometry(&self, e: u32) -> Vec<LatLon> {
        let pts = self.road_points(self.road_of(e));
        let mut out: Vec<LatLon> = pts.map(|i| self.point(i)).collect();
        if self.is_reversed(e) {
            out.reverse();
        }
        out
    }

    /// Offsets `from_m..to_m` from edge `e`'s tail, clamped to the edge, as
    /// distances from the start of its road's geometry (ordered, possibly empty).
    fn road_range(&self, e: u32, from_m: f64, to_m: f64) -> (f64, f64) {
        let len = self.length_m(e);
        let (from_m, to_m) = (from_m.clamp(0.0, len), to_m.clamp(0.0, len));
        let (a, b) = if self.is_reversed(e) {
            (len - to_m, len - from_m)
        } else {
            (from_m, to_m)
        };
        // Rounding may leave an empty range inverted by an ulp.
        (a, b.max(a))
    }

    /// The point of edge `e` between offsets `from_m` and `to_m` (from its
    /// tail) nearest to `p`: its offset and distance in metres. Allocates
    /// nothing, so the matcher can call it per ping.
    pub fn project_onto_edge(&self, e: u32, p: LatLon, from_m: f64, to_m: f64) -> (f64, f64) {
        let road = self.road_of(e);
        let len = self.length_m(e);
        let (a, b) = self.road_range(e, from_m, to_m);
        let plane = crate::geo::LocalPlane::new(p);
        let dist = &self.data().point_dist_m;
        let pts = self.road_points(road);
        let mut best = (a, f64::INFINITY);
        for i in pts.start..pts.end - 1 {
            let (d0, d1) = (
                f64::from(dist[i].to_native()),
                f64::from(dist[i + 1].to_native()),
            );
            if d1 < a || d0 > b {
                continue;
            }
            let (q0, q1) = (
                plane.project(self.point(i)),
                plane.project(self.point(i + 1)),
            );
            let (t, d2) = crate::geo::project_origin_on_segment(q0, q1);
            let along = (d0 + t * (d1 - d0)).clamp(a, b);
            let d2 = if along == d0 + t * (d1 - d0) {
                d2
            } else {
                // Clamped to the range: measure at the clamped point.
                let f = if d1 > d0 {
                    (along - d0) / (d1 - d0)
                } else {
                    0.0
                };
                let (x, y) = (q0.0 + f * (q1.0 - q0.0), q0.1 + f * (q1.1 - q0.1));
                x * x + y * y
            };
            if d2 < best.1 {
                best = (along, d2);
            }
        }
        let along = if self.is_reversed(e) {
            len - best.0
        } else {
            best.0
        };
        if best.1.is_infinite() {
            return (
                along,
                crate::geo::haversine_m(p, self.point_on_edge(e, along)),
            );
        }
        (along, best.1.sqrt())
    }

    /// The position `offset_m` metres from the tail of edge `e` along its geometry.
    pub fn point_on_edge(&self, e: u32, offset_m: f64) -> LatLon {
        let road = self.road_of(e);
        let len = self.data().road_length_cm[road as usize].to_native() as f64 / 100.0;
        let offset = offset_m.clamp(0.0, len);
        // Convert to a distance from the road's start.
        let along = if self.is_reversed(e) {
            len - offset
        } else {
            offset
        };
        let pts = self.road_points(road);
        let dist = &self.data().point_dist_m;
        for i in pts.start..pts.end - 1 {
            let (d0, d1) = (
                f64::from(dist[i].to_native()),
                f64::from(dist[i + 1].to_native()),
            );
            if along <= d1 || i == pts.end - 2 {
                let t = if d1 > d0 {
                    ((along - d0) / (d1 - d0)).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (a, b) = (self.point(i), self.point(i + 1));
                return LatLon::new(a.lat + t * (b.lat - a.lat), a.lon + t * (b.lon - a.lon));
            }
        }
        self.point(pts.start)
    }

    /// Direction of travel on edge `e` at `offset_m`, degrees clockwise from
    /// north (measured over a few metres either side, which is what a GPS
    /// course over ground compares with).
    pub fn edge_bearing(&self, e: u32, offset_m: f64) -> f64 {
        let len = self.length_m(e);
        let a = self.point_on_edge(e, (offset_m - 2.0).max(0.0));
        let b = self.point_on_edge(e, (offset_m + 2.0).min(len));
        let (x, y) = crate::geo::LocalPlane::new(a).project(b);
        x.atan2(y).to_degrees().rem_euclid(360.0)
    }

    /// The part of edge `e`'s polyline between two offsets from its tail.
    pub fn edge_geometry_between(&self, e: u32, from_m: f64, to_m: f64) -> Vec<LatLon> {
        let road = self.road_of(e);
        let len = self.length_m(e);
        // Work in the road's own direction, then flip for reversed edges.
        let (a, b) = self.road_range(e, from_m, to_m);
        let dist = &self.data().point_dist_m;
        let mut out = vec![self.point_on_edge(e, if self.is_reversed(e) { len - a } else { a })];
        for i in self.road_points(road) {
            let d = f64::from(dist[i].to_native());
            if d > a && d < b {
                out.push(self.point(i));
            }
        }
        out.push(self.point_on_edge(e, if self.is_reversed(e) { len - b } else { b }));
        if self.is_reversed(e) {
            out.reverse();
        }
        out
    }

    /// Bounding box `[min_lon, min_lat, max_lon, max_lat]` of all geometry.
    pub fn bbox(&self) -> [f64; 4] {
        let d = self.data();
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (lat, lon) in d.point_lat.iter().zip(d.point_lon.iter()) {
            let p = LatLon::from_fixed(lat.to_native(), lon.to_native());
            b[0] = b[0].min(p.lon);
            b[1] = b[1].min(p.lat);
            b[2] = b[2].max(p.lon);
            b[3] = b[3].max(p.lat);
        }
        b
    }

    /// Turn restrictions resolved to edges.
    pub fn restrictions(&self) -> impl ExactSizeIterator<Item = TurnRestriction> + '_ {
        self.data().restrictions.iter().map(|r| TurnRestriction {
            kind: r.kind,
            from_edge: r.from_edge.to_native(),
            via_node: r.via_node.to_native(),
            to_edge: r.to_edge.to_native(),
        })
    }

    /// Every edge's head and length, indexed by edge id (see [`LengthArc`]);
    /// built on first use (8 bytes per edge), so a snapshot opens without it.
    pub fn length_arcs(&self) -> &[LengthArc] {
        self.length_arcs.get_or_init(|| {
            (0..self.num_edges() as u32)
                .map(|e| LengthArc {
                    head: self.head(e),
                    length_cm: self.length_cm(e),
                })
                .collect()
        })
    }

    /// Which components lead into and out of the main network, built on
    /// first use (two graph searches); see [`MainReach::joined`].
    pub fn main_reach(&self) -> &MainReach {
        self.main_reach.get_or_init(|| MainReach::of(self))
    }

    /// The edge spatial index, built on first use (a snapshot opens without it).
    pub fn edge_index(&self) -> &EdgeIndex {
        self.index.get_or_init(|| EdgeIndex::build(self))
    }
}
