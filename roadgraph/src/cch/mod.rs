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
//!    A top-down perfect customization ([`perfect`]) then prunes the arcs
//!    queries relax to those a shortest path can use.
//! 3. **Queries** ([`CchQuery`]): elimination-tree searches from positions on
//!    edges (point-to-point with path unpacking, one-to-many, many-to-many),
//!    with per-thread reusable scratch space.
//!
//! Arcs are numbered in rank space: arc `a` joins its lower end `arc_tail[a]`
//! to its upper end `up_head[a]`; `up` weights are for travel upwards (lower to
//! upper rank), `down` weights for travel downwards.

pub mod customize;
pub mod order;
pub mod perfect;
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
    /// Ranks in each rank's elimination subtree, itself included. Ranks are a
    /// post-order of the elimination tree, so the subtree of `x` is exactly
    /// the ranks `x + 1 - subtree_size[x] ..= x`: independent subtrees are
    /// contiguous blocks that customization hands to different cores.
    pub subtree_size: Vec<u32>,
    /// Height of the elimination tree (longest root-to-leaf chain, in nodes).
    pub tree_height: u32,
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
        self.d.tree_height.to_native() as usize
    }

    /// Number of ranks in the elimination subtree rooted at `r`.
    #[inline]
    pub(crate) fn subtree_size(&self, r: u32) -> u32 {
        self.d.subtree_size[r as usize].to_native()
    }

    /// Children of rank `r` in the elimination tree, highest first: with
    /// post-order ranks the last child is `r - 1` and each earlier one ends
    /// just below the subtree of the next.
    pub(crate) fn children(&self, r: u32) -> impl Iterator<Item = u32> + '_ {
        let first = r + 1 - self.subtree_size(r);
        let mut next = r;
        std::iter::from_fn(move || {
            if next == first {
                return None;
            }
            let child = next - 1;
            next = child + 1 - self.subtree_size(child);
            Some(child)
        })
    }

    /// Roots of the elimination forest (one per connected component), highest first.
    pub(crate) fn roots(&self) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.d.subtree_size.len() as u32;
        std::iter::from_fn(move || {
            if next == 0 {
                return None;
            }
            let root = next - 1;
            next = root + 1 - self.subtree_size(root);
            Some(root)
        })
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

/// The index of the first element of `sorted` not below `target`
/// (`sorted.len()` if none), by exponential then binary search: O(log d)
/// for a target d places on.
pub(crate) fn gallop(sorted: &[rkyv::rend::u32_le], target: u32) -> usize {
    let mut bound = 1;
    while bound < sorted.len() && sorted[bound].to_native() < target {
        bound *= 2;
    }
    let lo = bound / 2;
    let hi = (bound + 1).min(sorted.len());
    lo + sorted[lo..hi].partition_point(|v| v.to_native() < target)
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

    // Renumber ranks in a post-order of the elimination tree. Any order that
    // keeps every node below its tree ancestors has the same chordal graph and
    // tree (Liu 1990); a post-order also makes every subtree a contiguous rank
    // block, which parallel customization relies on.
    let (order, up, parent) = post_order(order, up, &parent);
    let rank = {
        let mut rank = vec![0u32; n];
        for (r, &v) in order.iter().enumerate() {
            rank[v as usize] = r as u32;
        }
        rank
    };

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

    // Subtree sizes and heights: children have lower ranks than their parent.
    cch.subtree_size = vec![1u32; n];
    let mut height = vec![1u32; n];
    for r in 0..n {
        let p = cch.parent[r];
        if p != NONE {
            cch.subtree_size[p as usize] += cch.subtree_size[r];
            height[p as usize] = height[p as usize].max(height[r] + 1);
        }
    }
    cch.tree_height = height.iter().copied().max().unwrap_or(0);

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

/// Renumbers ranks in a post-order of the elimination forest (children in
/// ascending rank, roots in ascending rank): returns the new node order, the
/// upward neighbour lists and the parents, all in the new ranks.
fn post_order(
    order: Vec<u32>,
    up: Vec<Vec<u32>>,
    parent: &[u32],
) -> (Vec<u32>, Vec<Vec<u32>>, Vec<u32>) {
    let n = order.len();
    let mut child_count = vec![0u32; n + 1];
    for &p in parent {
        if p != NONE {
            child_count[p as usize + 1] += 1;
        }
    }
    for r in 0..n {
        child_count[r + 1] += child_count[r];
    }
    let first_child = child_count;
    let mut fill = first_child.clone();
    let mut children = vec![0u32; n - parent.iter().filter(|&&p| p == NONE).count()];
    for (r, &p) in parent.iter().enumerate() {
        if p != NONE {
            children[fill[p as usize] as usize] = r as u32;
            fill[p as usize] += 1;
        }
    }
    let mut new_rank = vec![NONE; n];
    let mut next = 0u32;
    let mut stack: Vec<(u32, u32)> = Vec::new();
    for root in (0..n as u32).filter(|&r| parent[r as usize] == NONE) {
        stack.push((root, first_child[root as usize]));
        while let Some(&mut (x, ref mut k)) = stack.last_mut() {
            if *k < first_child[x as usize + 1] {
                let c = children[*k as usize];
                *k += 1;
                stack.push((c, first_child[c as usize]));
            } else {
                new_rank[x as usize] = next;
                next += 1;
                stack.pop();
            }
        }
    }
    let mut new_order = vec![0u32; n];
    let mut new_up = vec![Vec::new(); n];
    let mut new_parent = vec![NONE; n];
    for (old, list) in up.into_iter().enumerate() {
        let r = new_rank[old] as usize;
        new_order[r] = order[old];
        let mut list: Vec<u32> = list.into_iter().map(|h| new_rank[h as usize]).collect();
        list.sort_unstable();
        new_up[r] = list;
        let p = parent[old];
        new_parent[r] = if p == NONE {
            NONE
        } else {
            new_rank[p as usize]
        };
    }
    (new_order, new_up, new_parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{CityParams, generate_city};

    /// Galloping finds what a plain partition point finds, for every target
    /// in and around sorted lists of every length up to 70 (duplicates too).
    #[test]
    fn gallop_is_a_partition_point() {
        let mut rng = crate::rng::Rng::seed(11);
        for len in 0..70 {
            let mut v: Vec<u32> = (0..len).map(|_| rng.below(100) as u32).collect();
            v.sort_unstable();
            let le: Vec<rkyv::rend::u32_le> = v.iter().map(|&x| x.into()).collect();
            for target in 0..=101 {
                assert_eq!(
                    gallop(&le, target),
                    v.partition_point(|&x| x < target),
                    "len {len} target {target}"
                );
            }
        }
    }

    /// Ranks are a post-order of the elimination tree: every subtree is the
    /// contiguous block customization hands to one task, and `children` and
    /// `roots` enumerate exactly the tree's edges and roots.
    #[test]
    fn ranks_are_a_post_order_of_the_elimination_tree() {
        for (edges, seed) in [(3_000, 1), (20_000, 7)] {
            let g = Graph::from_data(&generate_city(&CityParams::new(edges, seed)));
            let cch = Cch::new(&g);
            let n = g.num_nodes() as u32;
            let is_ancestor = |mut x: u32, a: u32| {
                while x != NONE && x < a {
                    x = cch.parent(x);
                }
                x == a
            };
            for x in 0..n {
                let size = cch.subtree_size(x);
                let block = x + 1 - size..x;
                assert!(block.clone().all(|r| is_ancestor(r, x)), "subtree of {x}");
                // Nothing just below the block hangs under x.
                if block.start > 0 {
                    assert!(!is_ancestor(block.start - 1, x));
                }
                let mut children: Vec<u32> = cch.children(x).collect();
                children.sort_unstable();
                let expected: Vec<u32> = block.filter(|&r| cch.parent(r) == x).collect();
                assert_eq!(children, expected, "children of {x}");
                for a in cch.up_arcs(x) {
                    assert!(is_ancestor(x, cch.up_head(a)), "arc heads are ancestors");
                }
            }
            let mut roots: Vec<u32> = cch.roots().collect();
            roots.sort_unstable();
            let expected: Vec<u32> = (0..n).filter(|&r| cch.parent(r) == NONE).collect();
            assert_eq!(roots, expected);
            let height = (0..n)
                .map(|mut x| {
                    let mut h = 0;
                    while x != NONE {
                        h += 1;
                        x = cch.parent(x);
                    }
                    h
                })
                .max();
            assert_eq!(Some(cch.levels()), height);
        }
    }
}
