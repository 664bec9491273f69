//! Builds the routable [`GraphData`] from a [`RawNetwork`]:
//!
//! 1. ways are cut at junctions (nodes shared by several ways or used twice),
//!    at their ends, at turn-restriction via nodes and where node coordinates
//!    are missing, so every road piece carries exactly one OSM way id and all
//!    degree-2 chains inside a way become one edge with a polyline;
//! 2. closed loops are cut in two so no edge starts and ends at the same node;
//! 3. strongly connected components are labelled (petgraph's Kosaraju),
//!    numbered largest first; none is dropped, because the roads outside the
//!    largest one (one-way exits, car parks, streets cut by the extract's
//!    edge) are exactly where vans go;
//! 4. nodes are renumbered along a Hilbert curve and edges sorted by tail, which
//!    keeps graph searches cache-friendly;
//! 5. turn restrictions are resolved from (way, via node, way) to edges.

use petgraph::graph::{DiGraph, NodeIndex};

use crate::geo::{LatLon, haversine_m};
use crate::graph::{GraphData, GraphMeta, NO_EDGE, REVERSED, TurnRestriction};
use crate::network::{MISSING_COORD, RawNetwork};

const NONE: u32 = u32::MAX;

/// A road piece before filtering: a run of raw nodes of one way.
struct Piece {
    way: u32,
    /// Range into the flat raw node list.
    start: u32,
    end: u32,
}

/// Builds the graph with its CCH preprocessing; `None` when the network has
/// no car-routable edge.
pub fn build_graph(net: &RawNetwork, source: String) -> Option<GraphData> {
    let mut data = build_matching_graph(net, source)?;
    data.cch = crate::cch::preprocess(&data);
    Some(data)
}

/// Builds the graph without CCH preprocessing: for map matching alone (the
/// matcher never routes by CCH), as the map-matching benchmarks do on their
/// small road networks; never saved as a snapshot.
pub fn build_matching_graph(net: &RawNetwork, source: String) -> Option<GraphData> {
    let n_raw = net.lat.len();
    let has_coord = |v: u32| net.lat[v as usize] != MISSING_COORD;

    // Junction detection: a node is a junction if it is used more than once
    // (by several ways, or twice by one), ends a way run, or is a via node.
    let mut uses = vec![0u8; n_raw];
    let mut flat: Vec<u32> = Vec::new();
    let mut runs: Vec<(u32, u32, u32)> = Vec::new(); // (way, start, end) into flat
    for (w, way) in net.ways.iter().enumerate() {
        let mut start = flat.len();
        let mut close_run = |flat: &mut Vec<u32>, start: &mut usize| {
            if flat.len() - *start >= 2 {
                runs.push((w as u32, *start as u32, flat.len() as u32));
            } else {
                flat.truncate(*start);
            }
            *start = flat.len();
        };
        for &v in &way.nodes {
            if (v as usize) >= n_raw || !has_coord(v) {
                close_run(&mut flat, &mut start);
                continue;
            }
            if flat.len() > start && *flat.last().unwrap() == v {
                continue; // consecutive duplicate
            }
            flat.push(v);
        }
        close_run(&mut flat, &mut start);
    }
    for &(_, s, e) in &runs {
        for &v in &flat[s as usize..e as usize] {
            uses[v as usize] = uses[v as usize].saturating_add(1);
        }
        uses[flat[s as usize] as usize] = 2;
        uses[flat[e as usize - 1] as usize] = 2;
    }
    for r in &net.restrictions {
        if let Some(u) = uses.get_mut(r.via as usize)
            && *u > 0
        {
            *u = 2;
        }
    }

    // Cut runs at junctions into pieces; cut loops in the middle.
    let mut pieces: Vec<Piece> = Vec::new();
    for &(w, s, e) in &runs {
        let mut piece_start = s;
        for i in s + 1..e {
            if uses[flat[i as usize] as usize] >= 2 {
                push_piece(&mut pieces, &flat, w, piece_start, i + 1);
                piece_start = i;
            }
        }
    }

    // Graph node ids for piece endpoints, and tentative directed edges.
    let mut graph_id = vec![NONE; n_raw];
    let mut node_raw: Vec<u32> = Vec::new();
    let mut id_of = |v: u32| {
        if graph_id[v as usize] == NONE {
            graph_id[v as usize] = node_raw.len() as u32;
            node_raw.push(v);
        }
        graph_id[v as usize]
    };
    // (tail, head, piece, reversed)
    let mut edges: Vec<(u32, u32, u32, bool)> = Vec::new();
    for (p, piece) in pieces.iter().enumerate() {
        let a = id_of(flat[piece.start as usize]);
        let b = id_of(flat[piece.end as usize - 1]);
        let attrs = &net.ways[piece.way as usize].attrs;
        if attrs.forward {
            edges.push((a, b, p as u32, false));
        }
        if attrs.backward {
            edges.push((b, a, p as u32, true));
        }
    }
    let n_nodes = node_raw.len();

    if edges.is_empty() {
        return None;
    }
    let scc = strong_components(n_nodes, &edges);

    // Renumber nodes along a Hilbert curve.
    let coord = |g: u32| {
        let r = node_raw[g as usize] as usize;
        (net.lat[r], net.lon[r])
    };
    let (mut min_lat, mut min_lon, mut max_lat, mut max_lon) =
        (i32::MAX, i32::MAX, i32::MIN, i32::MIN);
    for g in 0..n_nodes as u32 {
        let (la, lo) = coord(g);
        min_lat = min_lat.min(la);
        max_lat = max_lat.max(la);
        min_lon = min_lon.min(lo);
        max_lon = max_lon.max(lo);
    }
    let scale = |v: i32, lo: i32, hi: i32| -> u32 {
        let span = (i64::from(hi) - i64::from(lo)).max(1) as f64;
        (((i64::from(v) - i64::from(lo)) as f64 / span) * 65535.0) as u32
    };
    let mut order: Vec<(u64, u32)> = (0..n_nodes as u32)
        .map(|g| {
            let (la, lo) = coord(g);
            (
                hilbert_index(scale(lo, min_lon, max_lon), scale(la, min_lat, max_lat)),
                g,
            )
        })
        .collect();
    order.sort_unstable();
    let mut new_id = vec![NONE; n_nodes];
    for (i, &(_, g)) in order.iter().enumerate() {
        new_id[g as usize] = i as u32;
    }
    let n = order.len();

    // Roads: pieces ordered by their new endpoints.
    let mut road_of_piece = vec![NONE; pieces.len()];
    let mut road_pieces: Vec<u32> = edges.iter().map(|e| e.2).collect();
    road_pieces.sort_unstable();
    road_pieces.dedup();
    let piece_key = |p: u32| {
        let pc = &pieces[p as usize];
        let a = new_id[graph_id[flat[pc.start as usize] as usize] as usize];
        let b = new_id[graph_id[flat[pc.end as usize - 1] as usize] as usize];
        (a.min(b), a.max(b), p)
    };
    road_pieces.sort_unstable_by_key(|&p| piece_key(p));
    for (r, &p) in road_pieces.iter().enumerate() {
        road_of_piece[p as usize] = r as u32;
    }

    let mut data = GraphData {
        meta: GraphMeta {
            source,
            unresolved_restrictions: 0,
        },
        ..Default::default()
    };
    data.node_lat = vec![0; n];
    data.node_lon = vec![0; n];
    for &(_, g) in &order {
        let (la, lo) = coord(g);
        data.node_lat[new_id[g as usize] as usize] = la;
        data.node_lon[new_id[g as usize] as usize] = lo;
    }

    // Road geometry and lengths.
    data.road_first_point.push(0);
    for &p in &road_pieces {
        let pc = &pieces[p as usize];
        let way = &net.ways[pc.way as usize];
        let mut dist = 0.0f64;
        let mut prev: Option<LatLon> = None;
        for &v in &flat[pc.start as usize..pc.end as usize] {
            let (la, lo) = (net.lat[v as usize], net.lon[v as usize]);
            let here = LatLon::from_fixed(la, lo);
            if let Some(prev) = prev {
                dist += haversine_m(prev, here);
            }
            prev = Some(here);
            data.point_lat.push(la);
            data.point_lon.push(lo);
            data.point_dist_m.push(dist as f32);
        }
        data.road_first_point.push(data.point_lat.len() as u32);
        data.road_way.push(way.id);
        data.road_class.push(way.attrs.class as u8);
        data.road_length_cm
            .push((dist * 100.0).round().min(f64::from(u32::MAX)) as u32);
    }

    // Directed edges sorted by (tail, head, road).
    let mut sorted: Vec<(u32, u32, u32, bool)> = edges
        .iter()
        .map(|&(a, b, p, rev)| {
            (
                new_id[a as usize],
                new_id[b as usize],
                road_of_piece[p as usize],
                rev,
            )
        })
        .collect();
    sorted.sort_unstable();
    data.road_edge_fwd = vec![NO_EDGE; road_pieces.len()];
    data.road_edge_bwd = vec![NO_EDGE; road_pieces.len()];
    data.first_out = vec![0; n + 1];
    let mut is_signal = vec![false; n_raw];
    for &v in &net.signals {
        if let Some(s) = is_signal.get_mut(v as usize) {
            *s = true;
        }
    }
    let mut signals: Vec<u8> = Vec::with_capacity(sorted.len());
    for (e, &(a, b, r, rev)) in sorted.iter().enumerate() {
        data.first_out[a as usize + 1] += 1;
        data.tail.push(a);
        data.head.push(b);
        data.edge_road.push(if rev { r | REVERSED } else { r });
        let way = &net.ways[pieces[road_pieces[r as usize] as usize].way as usize];
        let limit = if rev {
            way.attrs.limit_backward
        } else {
            way.attrs.limit_forward
        };
        data.speed_limit.push(limit.to_u8());
        signals.push(piece_signals(
            net,
            &flat,
            &pieces[road_pieces[r as usize] as usize],
            rev,
            &is_signal,
        ));
        if rev {
            data.road_edge_bwd[r as usize] = e as u32;
        } else {
            data.road_edge_fwd[r as usize] = e as u32;
        }
    }
    for v in 0..n {
        data.first_out[v + 1] += data.first_out[v];
    }

    // Incoming adjacency: edges grouped by head.
    (data.first_in, data.in_edge) = crate::csr::group_by_key(&data.head, n);
    crate::free_flow::apply(&mut data, &signals);
    (data.node_component, data.component_nodes) = label_components(&scc, &new_id);

    resolve_restrictions(net, &graph_id, &new_id, &mut data);
    Some(data)
}

/// Signals on a piece driven in one direction: those in the half of it
/// that leads to its head, the head included (one in the other half, just
/// past the junction it starts from, is the opposite direction's).
fn piece_signals(net: &RawNetwork, flat: &[u32], pc: &Piece, rev: bool, is_signal: &[bool]) -> u8 {
    let points = &flat[pc.start as usize..pc.end as usize];
    let at = |v: u32| LatLon::from_fixed(net.lat[v as usize], net.lon[v as usize]);
    let mut along = vec![0.0f64; points.len()];
    for i in 1..points.len() {
        along[i] = along[i - 1] + haversine_m(at(points[i - 1]), at(points[i]));
    }
    let total = along[points.len() - 1];
    let count = points
        .iter()
        .zip(&along)
        .filter(|&(&v, &d)| {
            let from_tail = if rev { total - d } else { d };
            is_signal[v as usize] && from_tail > 0.5 * total
        })
        .count();
    count.min(3) as u8
}

/// The strongly connected components of the directed graph of `edges`
/// (tail, head, ..) over `n` nodes, as petgraph returns them.
fn strong_components(n: usize, edges: &[(u32, u32, u32, bool)]) -> Vec<Vec<NodeIndex<u32>>> {
    let mut dg: DiGraph<(), (), u32> = DiGraph::with_capacity(n, edges.len());
    for _ in 0..n {
        dg.add_node(());
    }
    for &(a, b, _, _) in edges {
        dg.add_edge(NodeIndex::new(a as usize), NodeIndex::new(b as usize), ());
    }
    // Kosaraju: petgraph's Tarjan recurses once per node on a path and overflows
    // the stack on long road chains; Kosaraju's DFS keeps an explicit stack.
    petgraph::algo::kosaraju_scc(&dg)
}

/// Component of every (renumbered) node and the node count of every
/// component, numbered by size, largest first (ties by lowest node id), so
/// component 0 is the main network and the numbering does not depend on
/// petgraph's visiting order.
fn label_components(scc: &[Vec<NodeIndex<u32>>], new_id: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut comps: Vec<(usize, u32, usize)> = scc
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lowest = c.iter().map(|v| new_id[v.index()]).min().unwrap_or(NONE);
            (c.len(), lowest, i)
        })
        .collect();
    comps.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut node_component = vec![NONE; new_id.len()];
    let mut sizes = Vec::with_capacity(comps.len());
    for (label, &(len, _, i)) in comps.iter().enumerate() {
        for v in &scc[i] {
            node_component[new_id[v.index()] as usize] = label as u32;
        }
        sizes.push(len as u32);
    }
    (node_component, sizes)
}

fn push_piece(pieces: &mut Vec<Piece>, flat: &[u32], way: u32, start: u32, end: u32) {
    if flat[start as usize] == flat[end as usize - 1] {
        // A closed loop between one junction and itself: cut it in the middle
        // (dedup guarantees at least three nodes here).
        let mid = start + (end - start) / 2;
        pieces.push(Piece {
            way,
            start,
            end: mid + 1,
        });
        pieces.push(Piece {
            way,
            start: mid,
            end,
        });
    } else {
        pieces.push(Piece { way, start, end });
    }
}

fn resolve_restrictions(net: &RawNetwork, graph_id: &[u32], new_id: &[u32], data: &mut GraphData) {
    let road_way = &data.road_way;
    let way_of = |e: u32| road_way[(data.edge_road[e as usize] & !REVERSED) as usize];
    let mut out = Vec::new();
    let mut unresolved = 0u64;
    for r in &net.restrictions {
        let g = graph_id.get(r.via as usize).copied().unwrap_or(NONE);
        let via = if g == NONE { NONE } else { new_id[g as usize] };
        if via == NONE {
            unresolved += 1;
            continue;
        }
        let v = via as usize;
        let ins: Vec<u32> = data.in_edge[data.first_in[v] as usize..data.first_in[v + 1] as usize]
            .iter()
            .copied()
            .filter(|&e| way_of(e) == r.from_way)
            .collect();
        let outs: Vec<u32> = (data.first_out[v]..data.first_out[v + 1])
            .filter(|&e| way_of(e) == r.to_way)
            .collect();
        let same_road = |a: u32, b: u32| {
            data.edge_road[a as usize] & !REVERSED == data.edge_road[b as usize] & !REVERSED
        };
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        if r.u_turn {
            // Back onto the road the vehicle came from: unambiguous even
            // when the way runs on through the via node.
            for &a in &ins {
                pairs.extend(outs.iter().filter(|&&b| same_road(a, b)).map(|&b| (a, b)));
            }
        } else if ins.len() == 1 && (outs.len() == 1 || r.from_way == r.to_way) {
            // A way that runs on through the via node is ambiguous (which side
            // is "from"? which direction is "to"?) and is left out: a wrongly
            // applied `only_*` is worse than a missing rule. Turning back onto
            // the same road is never what a non-U-turn rule names.
            pairs.extend(
                outs.iter()
                    .filter(|&&b| !same_road(ins[0], b))
                    .map(|&b| (ins[0], b)),
            );
        }
        if pairs.is_empty() {
            unresolved += 1;
        }
        for (from_edge, to_edge) in pairs {
            out.push(TurnRestriction {
                kind: r.kind as u8,
                from_edge,
                via_node: via,
                to_edge,
            });
        }
    }
    out.sort_unstable_by_key(|t| (t.via_node, t.from_edge, t.to_edge, t.kind));
    out.dedup();
    data.restrictions = out;
    data.meta.unresolved_restrictions = unresolved;
}

/// Position of `(x, y)` on a Hilbert curve over a 2^16 × 2^16 grid.
fn hilbert_index(mut x: u32, mut y: u32) -> u64 {
    let mut d = 0u64;
    let mut s = 1u32 << 15;
    while s > 0 {
        let rx = u32::from(x & s > 0);
        let ry = u32::from(y & s > 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                x = 0xFFFF - x;
                y = 0xFFFF - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s >>= 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::highway::{HighwayClass, SpeedLimit, WayAttributes};
    use crate::network::{RawRestriction, RawWay, RestrictionKind};

    fn attrs(forward: bool, backward: bool) -> WayAttributes {
        WayAttributes {
            class: HighwayClass::Residential,
            forward,
            backward,
            limit_forward: SpeedLimit::Kmh(30),
            limit_backward: SpeedLimit::Kmh(30),
        }
    }

    fn way(id: i64, nodes: Vec<u32>, forward: bool, backward: bool) -> RawWay {
        RawWay {
            id,
            nodes,
            attrs: attrs(forward, backward),
        }
    }

    /// A 3x3 grid of raw nodes about 100 m apart.
    fn grid() -> RawNetwork {
        let mut net = RawNetwork::default();
        for i in 0..3 {
            for j in 0..3 {
                net.add_node(500_000_000 + i * 9_000, 100_000_000 + j * 14_000);
            }
        }
        net
    }

    #[test]
    fn hilbert_is_a_bijection_on_a_small_grid() {
        let mut seen = std::collections::HashSet::new();
        for x in 0..64u32 {
            for y in 0..64u32 {
                assert!(seen.insert(hilbert_index(x << 10, y << 10)));
            }
        }
    }

    #[test]
    fn splits_at_junctions_and_keeps_way_ids() {
        let mut net = grid();
        // Row 0..2 through the middle row, and a column crossing it.
        net.ways.push(way(10, vec![3, 4, 5], true, true));
        net.ways.push(way(11, vec![1, 4, 7], true, true));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.node_lat.len(), 5); // 4 ends + the crossing
        assert_eq!(g.head.len(), 8);
        assert_eq!(g.road_way.iter().filter(|&&w| w == 10).count(), 2);
    }

    #[test]
    fn degree_two_chains_become_one_edge_with_geometry() {
        let mut net = grid();
        net.ways.push(way(1, vec![0, 1, 2, 5, 8], true, true));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.head.len(), 2);
        assert_eq!(g.road_first_point, vec![0, 5]);
        assert!(g.road_length_cm[0] > 40_000);
    }

    #[test]
    fn a_one_way_dead_end_is_kept_in_a_component_of_its_own() {
        let mut net = grid();
        net.ways.push(way(1, vec![0, 1, 2], true, true));
        net.ways.push(way(2, vec![2, 5], true, false));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.head.len(), 3);
        assert_eq!(g.component_nodes, vec![2, 1]);
        let dead_end = (0..3).find(|&v| g.node_component[v] == 1).unwrap();
        let way2 = g.road_way.iter().position(|&w| w == 2).unwrap();
        let e = g.road_edge_fwd[way2] as usize;
        assert_eq!(g.head[e] as usize, dead_end);
        assert_eq!(g.node_component[g.tail[e] as usize], 0);
    }

    #[test]
    fn components_are_numbered_largest_first() {
        let mut net = grid();
        // A two-way street of two pieces (3 nodes) and, apart, a two-way
        // street of one piece (2 nodes) and a one-way lane off it.
        net.ways.push(way(1, vec![6, 7], true, true));
        net.ways.push(way(3, vec![7, 8], true, false));
        net.ways.push(way(2, vec![0, 1, 2], true, true));
        net.ways.push(way(4, vec![1, 4], true, true));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.component_nodes, vec![4, 2, 1]);
        let mut count = [0u32; 3];
        for &c in &g.node_component {
            count[c as usize] += 1;
        }
        assert_eq!(count, [4, 2, 1]);
    }

    #[test]
    fn loops_are_cut_and_missing_nodes_break_ways() {
        let mut net = grid();
        net.ways.push(way(1, vec![0, 1, 4, 3, 0], true, false));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.head.len(), 2);
        assert!(g.tail.iter().zip(&g.head).all(|(a, b)| a != b));

        let mut net = grid();
        net.lat[1] = MISSING_COORD;
        net.ways.push(way(1, vec![0, 1, 2, 5], true, true));
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.head.len(), 2); // only 2-5 survives; 0 alone is not a run
    }

    #[test]
    fn a_very_long_road_chain_does_not_overflow_the_stack() {
        // 200k junctions in a row: a recursive SCC or DFS would need one
        // stack frame per node (test threads have 2 MiB of stack).
        let mut net = RawNetwork::default();
        let n = 200_000u32;
        for i in 0..n {
            net.add_node(500_000_000 + i as i32 * 100, 100_000_000);
        }
        for i in 0..n - 1 {
            net.ways.push(way(i64::from(i), vec![i, i + 1], true, true));
        }
        let g = build_graph(&net, "chain".into()).unwrap();
        assert_eq!(g.node_lat.len(), n as usize);
        assert_eq!(g.head.len(), 2 * (n as usize - 1));
    }

    #[test]
    fn no_roads_gives_none() {
        let net = grid();
        assert!(build_graph(&net, "t".into()).is_none());
    }

    #[test]
    fn restrictions_resolve_to_edges() {
        let mut net = grid();
        net.ways.push(way(10, vec![3, 4, 5], true, true));
        net.ways.push(way(11, vec![1, 4], true, true));
        net.ways.push(way(12, vec![4, 7], true, true));
        let no = |from_way, via, to_way, u_turn| RawRestriction {
            kind: RestrictionKind::No,
            u_turn,
            from_way,
            via,
            to_way,
        };
        net.restrictions.push(no(11, 4, 12, false)); // 1-4 then 4-7: one pair
        net.restrictions.push(no(99, 4, 12, false)); // unknown way
        net.restrictions.push(no(11, 4, 10, false)); // way 10 runs through 4: ambiguous
        net.restrictions.push(no(10, 4, 10, true)); // U-turns on both sides of 4
        let g = build_graph(&net, "t".into()).unwrap();
        assert_eq!(g.restrictions.len(), 3);
        assert_eq!(g.meta.unresolved_restrictions, 2);
        let road = |e: u32| g.edge_road[e as usize] & !REVERSED;
        for r in &g.restrictions {
            assert_eq!(g.head[r.from_edge as usize], r.via_node);
            assert_eq!(g.tail[r.to_edge as usize], r.via_node);
        }
        let u_turns: Vec<_> = g
            .restrictions
            .iter()
            .filter(|r| g.road_way[road(r.from_edge) as usize] == 10)
            .collect();
        assert_eq!(u_turns.len(), 2);
        assert!(
            u_turns.iter().all(|r| road(r.from_edge) == road(r.to_edge)),
            "a U-turn stays on its road"
        );
    }
}
