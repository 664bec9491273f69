//! A deterministic synthetic road network of any size, from a few thousand to
//! millions of edges: the built-in default map (`lastmile demo`, the README's
//! first command) and the source of scale benchmarks beyond the real maps.
//!
//! Small requests (under 30k edges) give one town; larger ones give a
//! metropolitan region, because that is what a road graph of that size is in
//! reality (Greater London's drivable graph has about 300k edges): a core city,
//! suburban towns of varied size around it, villages, and rural roads joining
//! them. Each settlement is a street grid cut into districts with their own
//! block spacing and speed zone (30 or 50 km/h), every intersection jittered;
//! district boundaries are two-way arterials (primary/secondary, 50–70 km/h);
//! a fifth of residential streets are one-way, some blocks are missing (more
//! cul-de-sacs in the suburbs) and short service spurs lead into blocks. The
//! core city has a trunk ring road (80 km/h) with curved geometry that meets
//! arterials at junctions and bridges residential streets, a river crossed
//! only by arterial bridges, and a railway with few crossings. Rural roads
//! are curved polylines (70–100 km/h) from settlement edges to their nearest
//! neighbours, over a spanning tree plus extra links so the region is
//! connected with alternatives.
//!
//! The network goes through the same builder as an OSM import, so it is cut at
//! junctions and its strongly connected components labelled the same way.

use crate::build::build_graph;
use crate::geo::{LatLon, METRES_PER_DEGREE};
use crate::graph::GraphData;
use crate::highway::{HighwayClass, SpeedLimit, WayAttributes};
use crate::network::{RawNetwork, RawWay};
use crate::rng::Rng;

/// Directed edges per grid intersection of the core city (measured).
const EDGES_PER_GRID_NODE: f64 = 3.55;
/// Below this many edges the network is a single town.
const METRO_THRESHOLD: usize = 30_000;

#[derive(Clone, Copy, Debug)]
pub struct CityParams {
    /// Approximate number of directed edges wanted.
    pub target_edges: usize,
    pub seed: u64,
    /// Geographic centre of the network.
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

/// Generates and builds the network.
pub fn generate_city(params: &CityParams) -> GraphData {
    let net = city_network(params);
    let source = format!(
        "synthetic:edges={},seed={}",
        params.target_edges, params.seed
    );
    build_graph(&net, source).expect("a generated city always has a connected core")
}

/// The raw network (before the builder).
pub fn city_network(params: &CityParams) -> RawNetwork {
    let mut region = Region::new(params);
    let target = params.target_edges;
    if target < METRO_THRESHOLD {
        region.town(target, (0.0, 0.0), Features::CORE);
        return region.net;
    }
    let core = region.town(target / 4, (0.0, 0.0), Features::CORE);
    let mut places = vec![core];
    // Suburban towns: sizes spread around the mean, placed around the core.
    let towns = (target / 60_000).clamp(2, 30);
    let weights: Vec<f64> = (0..towns)
        .map(|_| region.rng.range_f64(-1.0, 1.0).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let town_budget = target as f64 * 0.55;
    for w in weights {
        let edges = ((town_budget * w / total) as usize).max(3_000);
        let radius = town_radius(edges);
        let centre = region.place(&places, radius, (2.0, 5.0), 1_500.0);
        let t = region.town(edges, centre, Features::SUBURB);
        places.push(t);
    }
    let villages = target * 12 / 100 / 600;
    for _ in 0..villages {
        let edges = 200 + region.rng.below(800) as usize;
        let centre = region.place(&places, town_radius(edges), (1.3, 6.5), 400.0);
        let v = region.town(edges, centre, Features::VILLAGE);
        places.push(v);
    }
    region.rural_roads(&places);
    region.net
}

/// Approximate radius of a town grid of `edges` edges (blocks ~105 m).
fn town_radius(edges: usize) -> f64 {
    (edges as f64 / EDGES_PER_GRID_NODE).sqrt() * 105.0 / 2.0
}

#[derive(Clone, Copy, PartialEq)]
enum LineKind {
    Residential { limit: u8 },
    Arterial { class: HighwayClass, limit: u8 },
}

/// What a town has beyond its street grid.
#[derive(Clone, Copy)]
struct Features {
    ring: bool,
    river: bool,
    railway: bool,
    /// Chance that a residential block is missing (dead ends).
    gaps: f64,
    /// Chance of a service spur into a block.
    spurs: f64,
    /// Range of block spacing, metres.
    spacing: (f64, f64),
    /// Directed edges per grid intersection that this kind of town ends up
    /// with (measured), to size its grid for a requested edge count.
    edges_per_node: f64,
}

impl Features {
    const CORE: Features = Features {
        ring: true,
        river: true,
        railway: true,
        gaps: 0.03,
        spurs: 0.04,
        spacing: (70.0, 140.0),
        edges_per_node: EDGES_PER_GRID_NODE,
    };
    const SUBURB: Features = Features {
        ring: false,
        river: false,
        railway: false,
        gaps: 0.08,
        spurs: 0.06,
        spacing: (80.0, 160.0),
        edges_per_node: 3.2,
    };
    const VILLAGE: Features = Features {
        ring: false,
        river: false,
        railway: false,
        gaps: 0.1,
        spurs: 0.05,
        spacing: (90.0, 180.0),
        edges_per_node: 3.1,
    };
}

/// A generated settlement: where it is and the nodes on its outer streets,
/// where rural roads attach.
struct Place {
    centre: (f64, f64),
    radius: f64,
    edge_nodes: Vec<u32>,
}

/// The region under construction: the raw network, the planar position (metres
/// from the region centre) of every raw node, and the generator state.
struct Region {
    net: RawNetwork,
    metres: Vec<(f64, f64)>,
    rng: Rng,
    origin: LatLon,
    m_per_deg_lon: f64,
    next_way: i64,
}

impl Region {
    fn new(params: &CityParams) -> Self {
        Self {
            net: RawNetwork::default(),
            metres: Vec::new(),
            rng: Rng::seed(params.seed),
            origin: params.center,
            m_per_deg_lon: METRES_PER_DEGREE * params.center.lat.to_radians().cos(),
            next_way: 1_000,
        }
    }

    fn node(&mut self, x: f64, y: f64) -> u32 {
        let (la, lo) = LatLon::new(
            self.origin.lat + y / METRES_PER_DEGREE,
            self.origin.lon + x / self.m_per_deg_lon,
        )
        .to_fixed();
        self.metres.push((x, y));
        self.net.add_node(la, lo)
    }

    fn way(
        &mut self,
        nodes: Vec<u32>,
        class: HighwayClass,
        limit: u8,
        forward: bool,
        backward: bool,
    ) {
        if nodes.len() < 2 {
            return;
        }
        self.next_way += 1;
        let limit = SpeedLimit::Kmh(limit);
        self.net.ways.push(RawWay {
            id: self.next_way,
            nodes,
            attrs: WayAttributes {
                class,
                forward,
                backward,
                limit_forward: limit,
                limit_backward: limit,
            },
        });
    }

    /// A free spot for a settlement of `radius` at `range` core radii from the
    /// centre, at least `clearance` metres from every other settlement.
    fn place(
        &mut self,
        places: &[Place],
        radius: f64,
        range: (f64, f64),
        clearance: f64,
    ) -> (f64, f64) {
        let core = places[0].radius;
        let mut spread = 1.0;
        loop {
            for _ in 0..40 {
                let d = core * self.rng.range_f64(range.0, range.1) * spread + radius;
                let a = self.rng.range_f64(0.0, std::f64::consts::TAU);
                let c = (d * a.cos(), d * a.sin());
                let free = places.iter().all(|p| {
                    let (dx, dy) = (p.centre.0 - c.0, p.centre.1 - c.1);
                    (dx * dx + dy * dy).sqrt() > p.radius + radius + clearance
                });
                if free {
                    return c;
                }
            }
            spread *= 1.2;
        }
    }

    /// Grid line positions in metres, split into districts; returns positions
    /// and the district of each line (a new district starts with an arterial).
    fn grid_lines(&mut self, count: usize, spacing: (f64, f64)) -> (Vec<f64>, Vec<usize>) {
        let (mut pos, mut district) = (Vec::with_capacity(count), Vec::with_capacity(count));
        let (mut x, mut d, mut left, mut base) = (0.0, 0usize, 0usize, 100.0);
        for _ in 0..count {
            if left == 0 {
                d += 1;
                left = 6 + self.rng.below(9) as usize;
                base = self.rng.range_f64(spacing.0, spacing.1);
            }
            left -= 1;
            pos.push(x);
            district.push(d);
            x += base * self.rng.range_f64(0.85, 1.15);
        }
        (pos, district)
    }

    /// A town of about `edges` directed edges centred at `centre` (metres).
    fn town(&mut self, edges: usize, centre: (f64, f64), f: Features) -> Place {
        let side = ((edges as f64 / f.edges_per_node).sqrt().ceil() as usize).max(6);
        let (mut xs, x_district) = self.grid_lines(side, f.spacing);
        let (mut ys, y_district) = self.grid_lines(side, f.spacing);
        let (w, h) = (xs[side - 1], ys[side - 1]);
        xs.iter_mut().for_each(|x| *x += centre.0 - w / 2.0);
        ys.iter_mut().for_each(|y| *y += centre.1 - h / 2.0);

        // Intersections, jittered.
        let first = self.metres.len() as u32;
        for &y in &ys {
            for &x in &xs {
                let (jx, jy) = (self.rng.range_f64(-6.0, 6.0), self.rng.range_f64(-6.0, 6.0));
                self.node(x + jx, y + jy);
            }
        }
        let node = |i: usize, j: usize| first + (j * side + i) as u32;
        let is_arterial = |district: &[usize], k: usize| {
            k == 0 || k == side - 1 || district[k] != district[k - 1]
        };

        // Lines as (position key, node) so ring crossings can be inserted in order.
        let mut lines: Vec<(Vec<(f64, u32)>, LineKind)> = Vec::new();
        for j in 0..side {
            let kind = self.line_kind(is_arterial(&y_district, j), y_district[j] + j / 3);
            lines.push(((0..side).map(|i| (i as f64, node(i, j))).collect(), kind));
        }
        for i in 0..side {
            let kind = self.line_kind(is_arterial(&x_district, i), x_district[i] + i / 3);
            lines.push(((0..side).map(|j| (j as f64, node(i, j))).collect(), kind));
        }
        let ring = if f.ring {
            self.ring_junctions(&mut lines, &xs, &ys)
        } else {
            Vec::new()
        };
        for (line, _) in &mut lines {
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
        }

        // Barriers of the core: a meandering river and a railway.
        let (cx, cy) = centre;
        let river =
            move |x: f64| cy + 0.12 * h * ((x - cx) / (0.35 * w) * std::f64::consts::PI).sin();
        let rail = move |y: f64| cx + 0.2 * w + 0.15 * (y - cy);
        let crosses = |p: (f64, f64), q: (f64, f64), rng: &mut Rng| {
            let river_cut = f.river && ((p.1 - river(p.0)) * (q.1 - river(q.0)) < 0.0);
            let rail_cut =
                f.railway && ((p.0 - rail(p.1)) * (q.0 - rail(q.1)) < 0.0) && rng.chance(0.8);
            river_cut || rail_cut
        };

        for (line, kind) in &lines {
            let (class, limit, one_way, gaps, arterial) = match *kind {
                LineKind::Arterial { class, limit } => (class, limit, None, 0.0, true),
                LineKind::Residential { limit } => {
                    let one_way = self.rng.chance(0.2).then(|| self.rng.chance(0.5));
                    (HighwayClass::Residential, limit, one_way, f.gaps, false)
                }
            };
            let (fwd, bwd) = one_way.map_or((true, true), |forward| (forward, !forward));
            let mut current = vec![line[0].1];
            let mut blocks_left = 3 + self.rng.below(8);
            for pair in line.windows(2) {
                let (p, q) = (
                    self.metres[pair[0].1 as usize],
                    self.metres[pair[1].1 as usize],
                );
                let gap = self.rng.chance(gaps) || (!arterial && crosses(p, q, &mut self.rng));
                if gap || blocks_left == 0 {
                    let done = std::mem::take(&mut current);
                    self.way(done, class, limit, fwd, bwd);
                    blocks_left = 3 + self.rng.below(8);
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
            self.way(current, class, limit, fwd, bwd);
        }
        if f.ring {
            self.ring_road(&ring, centre, 0.38 * w.min(h));
        }

        // Service spurs into blocks (dead ends).
        for j in 0..side - 1 {
            for i in 0..side - 1 {
                if !self.rng.chance(f.spurs) {
                    continue;
                }
                let from = node(i, j);
                let (x, y) = self.metres[from as usize];
                let depth = self.rng.range_f64(20.0, 35.0);
                let mid = self.node(x + depth, y + depth * 0.8);
                let mut nodes = vec![from, mid];
                if self.rng.chance(0.5) {
                    nodes.push(self.node(x + depth * 1.6, y + depth * 1.1));
                }
                self.way(nodes, HighwayClass::Service, 20, true, true);
            }
        }

        let mut edge_nodes = Vec::new();
        for k in 0..side {
            edge_nodes.extend([node(k, 0), node(k, side - 1), node(0, k), node(side - 1, k)]);
        }
        Place {
            centre,
            radius: 0.5 * w.max(h),
            edge_nodes,
        }
    }

    fn line_kind(&mut self, arterial: bool, zone: usize) -> LineKind {
        if arterial {
            let primary = self.rng.chance(0.5);
            LineKind::Arterial {
                class: if primary {
                    HighwayClass::Primary
                } else {
                    HighwayClass::Secondary
                },
                limit: if primary {
                    [60, 70][self.rng.below(2) as usize]
                } else {
                    50
                },
            }
        } else {
            LineKind::Residential {
                limit: if zone.is_multiple_of(3) { 30 } else { 50 },
            }
        }
    }

    /// Junctions of the ring road with the arterials, inserted into their lines;
    /// returns them as (angle, node) around the centre.
    fn ring_junctions(
        &mut self,
        lines: &mut [(Vec<(f64, u32)>, LineKind)],
        xs: &[f64],
        ys: &[f64],
    ) -> Vec<(f64, u32)> {
        let side = xs.len();
        let (cx, cy) = ((xs[0] + xs[side - 1]) / 2.0, (ys[0] + ys[side - 1]) / 2.0);
        let radius = 0.38 * (xs[side - 1] - xs[0]).min(ys[side - 1] - ys[0]);
        let mut ring: Vec<(f64, u32)> = Vec::new();
        for l in 0..lines.len() {
            if !matches!(lines[l].1, LineKind::Arterial { .. }) {
                continue;
            }
            let horizontal = l < side;
            let fixed = if horizontal { ys[l] } else { xs[l - side] };
            let dist = fixed - if horizontal { cy } else { cx };
            if dist.abs() >= radius * 0.98 {
                continue;
            }
            let half = (radius * radius - dist * dist).sqrt();
            let centre_along = if horizontal { cx } else { cy };
            let along_positions = if horizontal { xs } else { ys };
            for along in [centre_along - half, centre_along + half] {
                let k = along_positions
                    .partition_point(|&p| p <= along)
                    .clamp(1, side - 1)
                    - 1;
                let (n0, n1) = (lines[l].0[k].1, lines[l].0[k + 1].1);
                let (p0, p1) = (self.metres[n0 as usize], self.metres[n1 as usize]);
                let t = ((along - along_positions[k])
                    / (along_positions[k + 1] - along_positions[k]))
                    .clamp(0.0, 1.0);
                let junction = if t < 0.15 {
                    n0
                } else if t > 0.85 {
                    n1
                } else {
                    let v = self.node(p0.0 + t * (p1.0 - p0.0), p0.1 + t * (p1.1 - p0.1));
                    lines[l].0.push((k as f64 + t, v));
                    v
                };
                let (x, y) = self.metres[junction as usize];
                ring.push(((y - cy).atan2(x - cx), junction));
            }
        }
        ring.sort_by(|a, b| a.0.total_cmp(&b.0));
        ring.dedup_by_key(|r| r.1);
        ring
    }

    /// The ring road: curved geometry between junctions, one way per arc.
    fn ring_road(&mut self, ring: &[(f64, u32)], centre: (f64, f64), radius: f64) {
        for k in 0..ring.len() {
            let (a0, n0) = ring[k];
            let (mut a1, n1) = ring[(k + 1) % ring.len()];
            if a1 <= a0 {
                a1 += std::f64::consts::TAU;
            }
            let steps = (((a1 - a0) * radius / 50.0) as usize).max(1);
            let mut nodes = vec![n0];
            for s in 1..steps {
                let a = a0 + (a1 - a0) * s as f64 / steps as f64;
                nodes.push(self.node(centre.0 + radius * a.cos(), centre.1 + radius * a.sin()));
            }
            nodes.push(n1);
            self.way(nodes, HighwayClass::Trunk, 80, true, true);
        }
    }

    /// Rural roads: a spanning tree over the settlements (shortest links
    /// first) plus each settlement's second-nearest link, as curved roads
    /// between their closest edge nodes.
    fn rural_roads(&mut self, places: &[Place]) {
        let n = places.len();
        let dist = |a: usize, b: usize| {
            let (p, q) = (places[a].centre, places[b].centre);
            ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt()
        };
        let mut pairs: Vec<(f64, usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .map(|(a, b)| (dist(a, b), a, b))
            .collect();
        pairs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut comp: Vec<usize> = (0..n).collect();
        fn find(c: &mut [usize], x: usize) -> usize {
            let mut r = x;
            while c[r] != r {
                r = c[r];
            }
            c[x] = r;
            r
        }
        let mut links: Vec<(usize, usize)> = Vec::new();
        for &(_, a, b) in &pairs {
            let (ra, rb) = (find(&mut comp, a), find(&mut comp, b));
            if ra != rb {
                comp[ra] = rb;
                links.push((a, b));
            }
        }
        for a in 0..n {
            let mut near: Vec<usize> = (0..n).filter(|&b| b != a).collect();
            near.sort_by(|&x, &y| dist(a, x).total_cmp(&dist(a, y)));
            if let Some(&b) = near.get(1) {
                let link = (a.min(b), a.max(b));
                if !links.contains(&link) {
                    links.push(link);
                }
            }
        }
        for (a, b) in links {
            let from = self.closest_edge_node(&places[a], places[b].centre);
            let to = self.closest_edge_node(&places[b], places[a].centre);
            let big = places[a].radius.min(places[b].radius) > 2_000.0;
            let (class, limit) = if a == 0 || b == 0 || big {
                (HighwayClass::Primary, 90 + 10 * self.rng.below(2) as u8)
            } else if places[a].radius.min(places[b].radius) > 800.0 {
                (HighwayClass::Secondary, 80)
            } else {
                (HighwayClass::Tertiary, 70)
            };
            self.curved_road(from, to, class, limit);
        }
    }

    fn closest_edge_node(&self, place: &Place, towards: (f64, f64)) -> u32 {
        *place
            .edge_nodes
            .iter()
            .min_by(|&&x, &&y| {
                let d = |v: u32| {
                    let p = self.metres[v as usize];
                    (p.0 - towards.0).powi(2) + (p.1 - towards.1).powi(2)
                };
                d(x).total_cmp(&d(y))
            })
            .expect("a town has edge nodes")
    }

    /// A two-way road from node `a` to node `b` that bends gently, with a
    /// shape point every ~120 m.
    fn curved_road(&mut self, a: u32, b: u32, class: HighwayClass, limit: u8) {
        let (p, q) = (self.metres[a as usize], self.metres[b as usize]);
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let len = (dx * dx + dy * dy).sqrt();
        let (nx, ny) = (-dy / len.max(1.0), dx / len.max(1.0));
        let amp = len * self.rng.range_f64(-0.08, 0.08);
        let waves = 1.0 + self.rng.below(2) as f64;
        let steps = ((len / 120.0) as usize).max(1);
        let mut nodes = vec![a];
        for s in 1..steps {
            let t = s as f64 / steps as f64;
            let off =
                amp * (std::f64::consts::PI * t * waves).sin() + self.rng.range_f64(-8.0, 8.0);
            nodes.push(self.node(p.0 + t * dx + off * nx, p.1 + t * dy + off * ny));
        }
        nodes.push(b);
        self.way(nodes, class, limit, true, true);
    }
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
    fn a_town_has_the_features_of_a_city() {
        let g = generate_city(&CityParams::new(25_000, 3));
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

    #[test]
    fn a_large_request_is_a_region_of_towns_joined_by_rural_roads() {
        let g = generate_city(&CityParams::new(200_000, 2));
        let net = city_network(&CityParams::new(200_000, 2));
        let towns = net
            .ways
            .iter()
            .filter(|w| w.attrs.class == HighwayClass::Trunk)
            .count();
        assert!(towns > 0, "the core has its ring road");
        // Rural roads: long primary/secondary/tertiary roads with many shape points.
        let rural = (0..g.road_way.len())
            .filter(|&r| {
                g.road_length_cm[r] > 300_000
                    && g.road_first_point[r + 1] - g.road_first_point[r] > 10
            })
            .count();
        assert!(rural >= 5, "rural roads: {rural}");
        // Almost everything generated is one strongly connected region.
        let main = g.node_component.iter().filter(|&&c| c == 0).count();
        assert!(
            main > g.node_lat.len() * 49 / 50,
            "main component: {main} of {} nodes",
            g.node_lat.len()
        );
    }
}
