//! The edge spatial index against a brute-force scan of every segment, on real
//! maps and a synthetic city, for thousands of random points.

mod common;

use lastmile_roadgraph::geo::{LocalPlane, project_origin_on_segment};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{CityParams, EdgeCandidate, Graph, LatLon, synthetic};

/// Distance from `p` to each edge's closest point, by scanning every segment.
fn brute_force(g: &Graph, p: LatLon, radius: f64) -> Vec<(u32, f64)> {
    let plane = LocalPlane::new(p);
    let mut out = Vec::new();
    for e in 0..g.num_edges() as u32 {
        let geom = g.edge_geometry(e);
        let best = geom
            .windows(2)
            .map(|w| {
                project_origin_on_segment(plane.project(w[0]), plane.project(w[1]))
                    .1
                    .sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        if best <= radius {
            out.push((e, best));
        }
    }
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    out
}

fn random_point(g: &Graph, rng: &mut Rng) -> LatLon {
    // Half near a node (where roads are dense), half anywhere in the box.
    if rng.chance(0.5) {
        let v = rng.below(g.num_nodes() as u64) as u32;
        let p = g.node_pos(v);
        LatLon::new(
            p.lat + rng.range_f64(-4e-4, 4e-4),
            p.lon + rng.range_f64(-4e-4, 4e-4),
        )
    } else {
        let b = g.bbox();
        LatLon::new(rng.range_f64(b[1], b[3]), rng.range_f64(b[0], b[2]))
    }
}

fn check(g: &Graph, points: usize, seed: u64) {
    let mut rng = Rng::seed(seed);
    let mut got: Vec<EdgeCandidate> = Vec::new();
    let mut nonempty = 0;
    let (mut bearings, mut bent) = (0, 0);
    for _ in 0..points {
        let p = random_point(g, &mut rng);
        let radius = rng.range_f64(10.0, 120.0);
        let expected = brute_force(g, p, radius);
        g.edges_within(p, radius, &mut got);
        let mut got_ids: Vec<u32> = got.iter().map(|c| c.edge).collect();
        let mut want_ids: Vec<u32> = expected.iter().map(|c| c.0).collect();
        got_ids.sort_unstable();
        want_ids.sort_unstable();
        assert_eq!(got_ids, want_ids, "within {radius} m of {p:?}");
        nonempty += usize::from(!got.is_empty());
        for c in &got {
            let (_, d) = expected.iter().find(|x| x.0 == c.edge).unwrap();
            assert!(
                (c.distance_m - d).abs() < 1e-6,
                "distance {} vs {d}",
                c.distance_m
            );
            // The projected point lies on the edge at the reported offset.
            let on_edge = g.point_on_edge(c.edge, c.offset_m);
            let gap = lastmile_roadgraph::geo::haversine_m(on_edge, c.point);
            assert!(
                gap < 0.05,
                "offset {} of edge {} is {gap} m from the projection",
                c.offset_m,
                c.edge
            );
            assert!(c.offset_m >= 0.0 && c.offset_m <= g.length_m(c.edge) + 1e-3);
        }
        // Approaches: the closest point of every edge is among them, every
        // extra one is within the radius, on the edge, and far along it from
        // the others of the same edge.
        let closest = got.clone();
        let mut approaches = Vec::new();
        g.edge_index()
            .approaches_within(g, p, radius, &mut approaches);
        for c in &closest {
            assert!(
                approaches.contains(c),
                "closest point {c:?} missing from approaches"
            );
        }
        for c in &approaches {
            assert!(c.distance_m <= radius + 1e-9);
            let on_edge = g.point_on_edge(c.edge, c.offset_m);
            assert!(lastmile_roadgraph::geo::haversine_m(on_edge, c.point) < 0.05);
            let (_, d) = expected.iter().find(|x| x.0 == c.edge).unwrap();
            assert!(
                c.distance_m >= d - 1e-6,
                "an approach closer than the closest point"
            );
            for o in approaches.iter().filter(|o| o.edge == c.edge && *o != c) {
                assert!(
                    (o.offset_m - c.offset_m).abs() > 1.5 * (o.distance_m + c.distance_m) + 2.0
                );
            }
        }
        assert!(
            approaches
                .windows(2)
                .all(|w| w[0].distance_m <= w[1].distance_m)
        );
        // Projection onto a whole edge finds the same closest point as the
        // index; onto the part beyond it, never anything closer.
        for c in &closest {
            let len = g.length_m(c.edge);
            let (offset, d) = g.project_onto_edge(c.edge, p, 0.0, len);
            assert!((d - c.distance_m).abs() < 0.02, "{d} vs {}", c.distance_m);
            let gap =
                lastmile_roadgraph::geo::haversine_m(g.point_on_edge(c.edge, offset), c.point);
            assert!(gap < 0.05, "projection {gap} m from the index's point");
            let (later, d2) = g.project_onto_edge(c.edge, p, c.offset_m + 1.0, len);
            assert!(
                d2 >= d - 0.02 && later >= (c.offset_m + 1.0).min(len) - 1e-3,
                "{later} {d2} {c:?}"
            );
        }
        // The candidate's direction is the edge's direction there (never the
        // opposite one), give or take a bend at a vertex.
        for c in &approaches {
            let [east, north] = c.direction;
            let norm = f64::from(east).hypot(f64::from(north));
            if norm == 0.0 {
                continue;
            }
            assert!(
                (norm - 1.0).abs() < 1e-5,
                "direction not a unit vector: {norm}"
            );
            let sb = f64::from(east)
                .atan2(f64::from(north))
                .to_degrees()
                .rem_euclid(360.0);
            let eb = g.edge_bearing(c.edge, c.offset_m);
            let diff = (sb - eb).rem_euclid(360.0).min((eb - sb).rem_euclid(360.0));
            bearings += 1;
            bent += usize::from(diff > 45.0);
            assert!(diff < 150.0, "segment bearing {sb} vs edge bearing {eb}");
        }
        // K nearest: the first k of the brute-force order (ties may swap).
        let k = 1 + rng.below(8) as usize;
        g.nearest_edges(p, k, 2_000.0, &mut got);
        let all = brute_force(g, p, 2_000.0);
        assert_eq!(got.len(), k.min(all.len()));
        for (c, want) in got.iter().zip(&all) {
            assert!(
                (c.distance_m - want.1).abs() < 1e-6,
                "nearest {k}: {} vs {}",
                c.distance_m,
                want.1
            );
        }
    }
    assert!(
        bent * 20 < bearings.max(20),
        "{bent} of {bearings} bearings disagree"
    );
    assert!(
        nonempty > points / 4,
        "too few points near roads: {nonempty}"
    );
}

#[test]
fn monaco_against_brute_force() {
    let Some((_, g)) = common::imported("monaco.osm.pbf") else {
        return;
    };
    check(g, 2_000, 1);
}

#[test]
fn andorra_against_brute_force() {
    let Some((_, g)) = common::imported("andorra.osm.pbf") else {
        return;
    };
    check(g, 2_000, 2);
}

#[test]
fn synthetic_city_against_brute_force() {
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(8_000, 5)));
    check(&g, 1_500, 3);
}

#[test]
fn invalid_points_find_nothing() {
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(2_000, 5)));
    let mut out = Vec::new();
    g.edges_within(LatLon::new(f64::NAN, 8.0), 50.0, &mut out);
    assert!(out.is_empty());
    g.nearest_edges(LatLon::new(47.0, f64::INFINITY), 3, 100.0, &mut out);
    assert!(out.is_empty());
    g.edges_within(LatLon::new(47.0, 8.0), f64::NAN, &mut out);
    assert!(out.is_empty());
}
