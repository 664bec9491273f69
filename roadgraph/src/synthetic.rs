//! A deterministic synthetic city of any size, from a few thousand to millions
//! of edges: the built-in default map (`lastmile demo`, the README's first
//! command) and the source of scale benchmarks beyond the real maps.
//!
//! The city is a street grid cut into districts, each with its own block
//! spacing and speed zone (30 or 50 km/h), every street jittered so no two
//! blocks are alike. District boundaries are two-way arterials (primary and
//! secondary, 50–70 km/h); a two-way trunk ring road (80 km/h) with curved
//! geometry meets the arterials at junctions and crosses residential streets
//! on bridges. A fifth of residential streets are one-way, some blocks are
//! missing (dead ends), and short service spurs lead into blocks. The network
//! goes through the same builder as an OSM import, so it is cut at junctions
//! and reduced to its largest strongly connected component the same way.

use crate::build::build_graph;
use crate::geo::{LatLon, METRES_PER_DEGREE};
use crate::graph::GraphData;
use crate::highway::{HighwayClass, SpeedLimit, WayAttributes};
use crate::network::{RawNetwork, RawWay};
use crate::rng::Rng;

/// Directed edges per grid intersection, measured on generated cities; used to
/// size the grid for a requested edge count.
const EDGES_PER_GRID_NODE: f64 = 3.55;

#[derive(Clone, Copy, Debug)]
pub struct CityParams {
    /// Approximate number of directed edges wanted.
    pub target_edges: usize,
    pub seed: u64,
    /// Geographic centre of the city.
    pub center: LatLon,
}

impl CityParams {
    pub fn new(target_edges: usize, seed: u64) -> Self {
        Self {
            target_edges,
            seed,
            center: LatLon::new(47.0, 8.0),
        }
    }
}

/// Generates and builds the city.
pub fn generate_city(params: &CityParams) -> GraphData {
    let net = city_network(params);
    let source = format!(
        "synthetic:edges={},seed={}",
        params.target_edges, params.seed
    );
    build_graph(&net, source).expect("a generated city always has a connected core")
}

#[derive(Clone, Copy, PartialEq)]
enum LineKind {
    Residential { limit: u8 },
    Arterial { class: HighwayClass, limit: u8 },
}

/// Grid line positions in metres, split into districts; returns positions and
/// the district index of each line (a new district starts with an arterial).
fn grid_lines(rng: &mut Rng, count: usize) -> (Vec<f64>, Vec<usize>) {
    let (mut pos, mut district) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let (mut x, mut d, mut left, mut base) = (0.0, 0usize, 0usize, 100.0);
    for _ in 0..count {
        if left == 0 {
            d += 1;
            left = 6 + rng.below(9) as usize;
            base = rng.range_f64(70.0, 140.0);
        }
        left -= 1;
        pos.push(x);
        district.push(d);
        x += base * rng.range_f64(0.85, 1.15);
    }
    (pos, district)
}

/// The raw network of the city (before the builder).
pub fn city_network(params: &CityParams) -> RawNetwork {
    let mut rng = Rng::seed(params.seed);
    let side = ((params.target_edges as f64 / EDGES_PER_GRID_NODE)
        .sqrt()
        .ceil() as usize)
        .max(6);
    let (xs, x_district) = grid_lines(&mut rng, side);
    let (ys, y_district) = grid_lines(&mut rng, side);
    let (width, height) = (xs[side - 1], ys[side - 1]);
    let origin = params.center;
    let m_per_deg_lon = METRES_PER_DEGREE * origin.lat.to_radians().cos();
    let to_fixed = |x: f64, y: f64| {
        LatLon::new(
            origin.lat + (y - height / 2.0) / METRES_PER_DEGREE,
            origin.lon + (x - width / 2.0) / m_per_deg_lon,
        )
        .to_fixed()
    };
    let mut net = RawNetwork::default();
    let mut metres: Vec<(f64, f64)> = Vec::new(); // planar position of each raw node
    let add = |net: &mut RawNetwork, metres: &mut Vec<(f64, f64)>, x: f64, y: f64| {
        let (la, lo) = to_fixed(x, y);
        metres.push((x, y));
        net.add_node(la, lo)
    };

    // Intersections, jittered.
    for &y in &ys {
        for &x in &xs {
            let (jx, jy) = (rng.range_f64(-6.0, 6.0), rng.range_f64(-6.0, 6.0));
            add(&mut net, &mut metres, x + jx, y + jy);
        }
    }
    let node = |i: usize, j: usize| (j * side + i) as u32;
    let is_arterial = |district: &[usize], k: usize| k == 0 || district[k] != district[k - 1];

    // Lines as (position key, node) so ring crossings can be inserted in order.
    let mut lines: Vec<(Vec<(f64, u32)>, LineKind)> = Vec::new();
    let line_kind = |rng: &mut Rng, arterial: bool, zone: usize| {
        if arterial {
            let primary = rng.chance(0.5);
            LineKind::Arterial {
                class: if primary {
                    HighwayClass::Primary
                } else {
                    HighwayClass::Secondary
                },
                limit: if primary {
                    [60, 70][rng.below(2) as usize]
                } else {
                    50
                },
            }
        } else {
            LineKind::Residential {
                limit: if zone.is_multiple_of(3) { 30 } else { 50 },
            }
        }
    };
    for j in 0..side {
        let kind = line_kind(&mut rng, is_arterial(&y_district, j), y_district[j] + j / 3);
        lines.push(((0..side).map(|i| (i as f64, node(i, j))).collect(), kind));
    }
    for i in 0..side {
        let kind = line_kind(&mut rng, is_arterial(&x_district, i), x_district[i] + i / 3);
        lines.push(((0..side).map(|j| (j as f64, node(i, j))).collect(), kind));
    }

    // Ring road: where it crosses an arterial, both share a junction node.
    let (cx, cy, radius) = (width / 2.0, height / 2.0, 0.38 * width.min(height));
    let mut ring: Vec<(f64, u32)> = Vec::new(); // (angle, node)
    for l in 0..lines.len() {
        if !matches!(lines[l].1, LineKind::Arterial { .. }) {
            continue;
        }
        let horizontal = l < side;
        let fixed = if horizontal { ys[l] } else { xs[l - side] };
        let centre_fixed = if horizontal { cy } else { cx };
        let dist = fixed - centre_fixed;
        if dist.abs() >= radius * 0.98 {
            continue;
        }
        let half = (radius * radius - dist * dist).sqrt();
        let centre_along = if horizontal { cx } else { cy };
        let along_positions = if horizontal { &xs } else { &ys };
        for along in [centre_along - half, centre_along + half] {
            let k = along_positions
                .partition_point(|&p| p <= along)
                .clamp(1, side - 1)
                - 1;
            let (n0, n1) = (lines[l].0[k].1, lines[l].0[k + 1].1);
            let (p0, p1) = (metres[n0 as usize], metres[n1 as usize]);
            let t = ((along - along_positions[k]) / (along_positions[k + 1] - along_positions[k]))
                .clamp(0.0, 1.0);
            let junction = if t < 0.15 {
                n0
            } else if t > 0.85 {
                n1
            } else {
                let v = add(
                    &mut net,
                    &mut metres,
                    p0.0 + t * (p1.0 - p0.0),
                    p0.1 + t * (p1.1 - p0.1),
                );
                lines[l].0.push((k as f64 + t, v));
                v
            };
            let (x, y) = metres[junction as usize];
            ring.push(((y - cy).atan2(x - cx), junction));
        }
    }
    for (line, _) in &mut lines {
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    ring.sort_by(|a, b| a.0.total_cmp(&b.0));
    ring.dedup_by_key(|r| r.1);

    // Emit ways.
    let mut way_id = 1_000i64;
    let mut emit = |net: &mut RawNetwork,
                    nodes: Vec<u32>,
                    class: HighwayClass,
                    limit: u8,
                    fwd: bool,
                    bwd: bool| {
        if nodes.len() >= 2 {
            way_id += 1;
            let limit = SpeedLimit::Kmh(limit);
            net.ways.push(RawWay {
                id: way_id,
                nodes,
                attrs: WayAttributes {
                    class,
                    forward: fwd,
                    backward: bwd,
                    limit_forward: limit,
                    limit_backward: limit,
                },
            });
        }
    };
    for (line, kind) in &lines {
        let (class, limit, one_way, gaps) = match *kind {
            LineKind::Arterial { class, limit } => (class, limit, None, 0.0),
            LineKind::Residential { limit } => {
                let one_way = rng.chance(0.2).then(|| rng.chance(0.5));
                (HighwayClass::Residential, limit, one_way, 0.03)
            }
        };
        let (fwd, bwd) = match one_way {
            Some(forward) => (forward, !forward),
            None => (true, true),
        };
        let mut current = vec![line[0].1];
        let mut blocks_left = 3 + rng.below(8);
        for pair in line.windows(2) {
            let gap = rng.chance(gaps);
            if gap || blocks_left == 0 {
                let done = std::mem::take(&mut current);
                emit(&mut net, done, class, limit, fwd, bwd);
                blocks_left = 3 + rng.below(8);
                if !gap {
                    current.push(pair[0].1);
                }
            }
            if !gap {
                if current.is_empty() {
                    current.push(pair[0].1);
                }
                current.push(pair[1].1);
                blocks_left -= 1;
            }
        }
        emit(&mut net, current, class, limit, fwd, bwd);
    }

    // The ring: curved geometry between junctions, one way per arc.
    for k in 0..ring.len() {
        let (a0, n0) = ring[k];
        let (mut a1, n1) = ring[(k + 1) % ring.len()];
        if a1 <= a0 {
            a1 += std::f64::consts::TAU;
        }
        let arc_len = (a1 - a0) * radius;
        let steps = ((arc_len / 50.0) as usize).max(1);
        let mut nodes = vec![n0];
        for s in 1..steps {
            let a = a0 + (a1 - a0) * s as f64 / steps as f64;
            nodes.push(add(
                &mut net,
                &mut metres,
                cx + radius * a.cos(),
                cy + radius * a.sin(),
            ));
        }
        nodes.push(n1);
        emit(&mut net, nodes, HighwayClass::Trunk, 80, true, true);
    }

    // Service spurs into blocks (dead ends).
    for j in 0..side - 1 {
        for i in 0..side - 1 {
            if !rng.chance(0.04) {
                continue;
            }
            let from = node(i, j);
            let (x, y) = metres[from as usize];
            let depth = rng.range_f64(20.0, 35.0);
            let mid = add(&mut net, &mut metres, x + depth, y + depth * 0.8);
            let mut nodes = vec![from, mid];
            if rng.chance(0.5) {
                nodes.push(add(&mut net, &mut metres, x + depth * 1.6, y + depth * 1.1));
            }
            emit(&mut net, nodes, HighwayClass::Service, 20, true, true);
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_city_different_seed_different_city() {
        let a = generate_city(&CityParams::new(5_000, 7));
        let b = generate_city(&CityParams::new(5_000, 7));
        let c = generate_city(&CityParams::new(5_000, 8));
        assert_eq!(a, b);
        assert_ne!(a.node_lat, c.node_lat);
    }

    #[test]
    fn size_tracks_the_request() {
        for target in [3_000usize, 20_000, 100_000] {
            let g = generate_city(&CityParams::new(target, 1));
            let m = g.head.len() as f64;
            assert!(
                (m / target as f64 - 1.0).abs() < 0.15,
                "target {target}: {m} edges"
            );
        }
    }

    #[test]
    fn has_the_features_of_a_city() {
        let g = generate_city(&CityParams::new(40_000, 3));
        let count = |c: HighwayClass| g.road_class.iter().filter(|&&x| x == c as u8).count();
        assert!(count(HighwayClass::Trunk) > 10, "ring road");
        assert!(
            count(HighwayClass::Primary) + count(HighwayClass::Secondary) > 100,
            "arterials"
        );
        assert!(count(HighwayClass::Service) > 20, "spurs");
        let one_way = (0..g.road_way.len())
            .filter(|&r| (g.road_edge_fwd[r] == u32::MAX) != (g.road_edge_bwd[r] == u32::MAX))
            .count();
        assert!(one_way > 200, "one-way streets: {one_way}");
        // Dead ends: nodes with a single neighbour.
        let dead_ends = (0..g.node_lat.len())
            .filter(|&v| {
                g.first_out[v + 1] - g.first_out[v] == 1 && g.first_in[v + 1] - g.first_in[v] == 1
            })
            .count();
        assert!(dead_ends > 50, "dead ends: {dead_ends}");
        // Polyline geometry on the ring: more points than roads.
        assert!(g.point_lat.len() > 2 * g.road_way.len());
    }
}
