//! Customizable contraction hierarchies (Dibbelt, Strasser, Wagner), in three
//! visible steps with small APIs:
//!
//! 1. **Preprocessing** ([`preprocess`] → [`CchData`], viewed as [`Cch`]): a
//!    metric-independent nested-dissection order ([`order`]), the chordal
//!    supergraph of the road graph under that order (every "upward" arc, i.e.
//!    shortcut topology) and its elimination tree. Stored in the snapshot, so
//!    import pays for it once and `serve` maps it in.
//! 2. **Customization** ([`CchMetric`]): arc weights for one weight vector, in
//!    a bottom-up pass over the elimination tree (both cores on wide levels),
//!    and partial customization that re-derives only the arcs that depend on a
//!    set of changed edges. Weights reach the hierarchy only through this API.
//! 3. **Queries** ([`CchQuery`]): elimination-tree searches from positions on
//!    edges (point-to-point with path unpacking, one-to-many, many-to-many),
//!    with per-thread reusable scratch space.
//!
//! Arcs are numbered in rank space: arc `a` joins its lower end `arc_tail[a]`
//! to its upper end `up_head[a]`; `up` weights are for travel upwards (lower to
//! upper rank), `down` weights for travel downwards.

pub mod customize;
pub mod order;
pub mod query;

pub use customize::{CchMetric, UpdateStats};
pub use query::CchQuery;

use crate::csr::group_by_key;
use crate::geo::{LatLon, LocalPlane};
use crate::graph::{Graph, GraphData};

pub(crate) const NONE: u32 = u32::MAX;
/// Bit 0 of `edge_arc`: the edge runs downwards (from the higher rank).
pub(crate) const DOWN: u32 = 1;

/// The metric-independent CCH, as stored in the snapshot.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CchData {
    /// Rank of each node (position in the contraction order).
    pub rank: Vec<u32>,
    /// Node of each rank.
    pub order: Vec<u32>,
    /// Upward arcs per rank (CSR, rank + 1 offsets); heads sorted ascending.
    pub up_first: Vec<u32>,
    pub up_head: Vec<u32>,
    /// Lower end of each arc.
    pub arc_tail: Vec<u32>,
    /// Downward adjacency per rank: lower neighbours (ascending) and the arc to each.
    pub down_first: Vec<u32>,
    pub down_tail: Vec<u32>,
    pub down_arc: Vec<u32>,
    /// Elimination tree parent of each rank ([`NONE`] at a root).
    pub parent: Vec<u32>,
    /// Ranks grouped by height in the elimination tree (leaves first): the
    /// ranks of one level can be customized independently.
    pub level_first: Vec<u32>,
    pub level_ranks: Vec<u32>,
    /// Per graph edge: `arc << 1 | DOWN?`.
    pub edge_arc: Vec<u32>,
    /// Graph edges grouped by arc (CSR, arc + 1 offsets).
    pub arc_first_edge: Vec<u32>,
    pub arc_edges: Vec<u32>,
}

/// Read-only view of a graph's CCH topology.
#[derive(Clone, Copy)]
pub struct Cch<'g> {
    pub(crate) d: &'g ArchivedCchData,
    pub(crate) graph: &'g Graph,
}

impl<'g> Cch<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        Self {
            d: &graph.data().cch,
            graph,
        }
    }

    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    pub fn num_arcs(&self) -> usize {
        self.d.up_head.len()
    }

    /// Height of the elimination tree.
    pub fn levels(&self) -> usize {
        self.d.level_first.len().saturating_sub(1)
    }

    #[inline]
    pub(crate) fn rank(&self, node: u32) -> u32 {
        self.d.rank[node as usize].to_native()
    }

    #[inline]
    pub(crate) fn up_arcs(&self, r: u32) -> std::ops::Range<u32> {
        self.d.up_first[r as usize].to_native()..self.d.up_first[r as usize + 1].to_native()
    }

    #[inline]
    pub(crate) fn up_head(&self, a: u32) -> u32 {
        self.d.up_head[a as usize].to_native()
    }

    #[inline]
    pub(crate) fn arc_tail(&self, a: u32) -> u32 {
        self.d.arc_tail[a as usize].to_native()
    }

    #[inline]
    pub(crate) fn down_range(&self, r: u32) -> std::ops::Range<usize> {
        self.d.down_first[r as usize].to_native() as usize
            ..self.d.down_first[r as usize + 1].to_native() as usize
    }

    #[inline]
    pub(crate) fn parent(&self, r: u32) -> u32 {
        self.d.parent[r as usize].to_native()
    }

    /// Arc joining ranks `lo < hi`, if the chordal graph has it.
    pub(crate) fn find_arc(&self, lo: u32, hi: u32) -> Option<u32> {
        let range = self.up_arcs(lo);
        let heads = &self.d.up_head[range.start as usize..range.end as usize];
        heads
            .binary_search_by(|h| h.to_native().cmp(&hi))
            .ok()
            .map(|i| range.start + i as u32)
    }

    /// Calls `f(v, arc v–x, arc v–y)` for every common lower neighbour `v` of
    /// ranks `x < y` (the lower triangles of arc x–y).
    #[inline]
    pub(crate) fn lower_triangles(&self, x: u32, y: u32, mut f: impl FnMut(u32, u32, u32)) {
        let (rx, ry) = (self.down_range(x), self.down_range(y));
        let (tx, ty) = (&self.d.down_tail[rx.clone()], &self.d.down_tail[ry.clone()]);
        let (ax, ay) = (&self.d.down_arc[rx], &self.d.down_arc[ry]);
        let (mut i, mut j) = (0, 0);
        while i < tx.len() && j < ty.len() {
            let (vi, vj) = (tx[i].to_native(), ty[j].to_native());
            match vi.cmp(&vj) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    f(vi, ax[i].to_native(), ay[j].to_native());
                    i += 1;
                    j += 1;
                }
            }
        }
    }
}

/// Runs the metric-independent preprocessing for a built graph.
pub fn preprocess(data: &GraphData) -> CchData {
    let n = data.node_lat.len();
    // Undirected simple neighbourhoods.
    let mut first = vec![0u32; n + 1];
    let mut adj: Vec<u32> = Vec::with_capacity(2 * data.head.len());
    let mut scratch: Vec<u32> = Vec::new();
    for v in 0..n {
        scratch.clear();
        let out = data.first_out[v] as usize..data.first_out[v + 1] as usize;
        scratch.extend(data.head[out].iter().copied());
        let inc = data.first_in[v] as usize..data.first_in[v + 1] as usize;
        scratch.extend(data.in_edge[inc].iter().map(|&e| data.tail[e as usize]));
        scratch.sort_unstable();
        scratch.dedup();
        scratch.retain(|&w| w as usize != v);
        adj.extend_from_slice(&scratch);
        first[v + 1] = adj.len() as u32;
    }
    let centre = if n > 0 {
        let (la, lo) = (
            data.node_lat.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64,
            data.node_lon.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64,
        );
        LatLon::new(la / 1e7, lo / 1e7)
    } else {
        LatLon::new(0.0, 0.0)
    };
    let plane = LocalPlane::new(centre);
    let xy: Vec<(f64, f64)> = (0..n)
        .map(|v| plane.project(LatLon::from_fixed(data.node_lat[v], data.node_lon[v])))
        .collect();
    let order = order::nested_dissection(&order::UndirectedGraph {
        first: &first,
        adj: &adj,
        xy: &xy,
    });
    let mut rank = vec![0u32; n];
    for (r, &v) in order.iter().enumerate() {
        rank[v as usize] = r as u32;
    }

    // Chordal completion: contracting rank r makes its upper neighbours a
    // clique, recorded by merging them into the lowest one (r's parent).
    let mut up: Vec<Vec<u32>> = (0..n)
        .map(|r| {
            let v = order[r] as usize;
            let mut l: Vec<u32> = adj[first[v] as usize..first[v + 1] as usize]
                .iter()
                .map(|&w| rank[w as usize])
                .filter(|&rw| rw > r as u32)
                .collect();
            l.sort_unstable();
            l
        })
        .collect();
    drop(adj);
    let mut parent = vec![NONE; n];
    let mut merged: Vec<u32> = Vec::new();
    for r in 0..n {
        let list = std::mem::take(&mut up[r]);
        if let Some((&p, rest)) = list.split_first() {
            parent[r] = p;
            let target = &up[p as usize];
            merged.clear();
            let (mut i, mut j) = (0, 0);
            while i < target.len() || j < rest.len() {
                let next = match (target.get(i), rest.get(j)) {
                    (Some(&a), Some(&b)) if a == b => {
                        i += 1;
                        j += 1;
                        a
                    }
                    (Some(&a), Some(&b)) if a < b => {
                        i += 1;
                        a
                    }
                    (Some(_), Some(&b)) | (None, Some(&b)) => {
                        j += 1;
                        b
                    }
                    (Some(&a), None) => {
                        i += 1;
                        a
                    }
                    (None, None) => unreachable!(),
                };
                merged.push(next);
            }
            up[p as usize].clone_from(&merged);
        }
        up[r] = list;
    }

    let mut cch = CchData {
        rank,
        order,
        parent,
        ..Default::default()
    };
    cch.up_first.push(0);
    for (r, l) in up.iter().enumerate() {
        for &h in l {
            cch.up_head.push(h);
            cch.arc_tail.push(r as u32);
        }
        cch.up_first.push(cch.up_head.len() as u32);
    }
    drop(up);
    let arcs = cch.up_head.len();

    // Downward adjacency: arcs grouped by upper end (tails ascend within
    // each group because arcs are numbered by tail and the grouping is stable).
    (cch.down_first, cch.down_arc) = group_by_key(&cch.up_head, n);
    cch.down_tail = cch
        .down_arc
        .iter()
        .map(|&a| cch.arc_tail[a as usize])
        .collect();

    // Elimination tree heights: children have lower ranks than their parent.
    let mut height = vec![0u32; n];
    for r in 0..n {
        let p = cch.parent[r];
        if p != NONE {
            height[p as usize] = height[p as usize].max(height[r] + 1);
        }
    }
    let levels = height.iter().max().map_or(0, |h| *h as usize + 1);
    (cch.level_first, cch.level_ranks) = group_by_key(&height, levels);

    // Graph edges onto arcs.
    let find = |lo: u32, hi: u32| -> u32 {
        let (s, e) = (
            cch.up_first[lo as usize] as usize,
            cch.up_first[lo as usize + 1] as usize,
        );
        s as u32
            + cch.up_head[s..e]
                .binary_search(&hi)
                .expect("every graph edge is an arc") as u32
    };
    cch.edge_arc = (0..data.head.len())
        .map(|e| {
            let (rt, rh) = (
                cch.rank[data.tail[e] as usize],
                cch.rank[data.head[e] as usize],
            );
            if rt < rh {
                find(rt, rh) << 1
            } else {
                (find(rh, rt) << 1) | DOWN
            }
        })
        .collect();
    let arc_of_edge: Vec<u32> = cch.edge_arc.iter().map(|ea| ea >> 1).collect();
    (cch.arc_first_edge, cch.arc_edges) = group_by_key(&arc_of_edge, arcs);
    cch
}
