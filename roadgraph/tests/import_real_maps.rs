//! Imports every real map in ../shared/data/maps and checks the graph against
//! the source: plausible counts, geometry inside the file's bounding box,
//! one-way ways without reverse edges (read independently from the PBF),
//! every car-routable way kept (counted independently from the PBF), the
//! strongly connected components labelled exactly, way ids, and a lossless
//! snapshot round trip.

mod common;

use std::collections::{HashMap, HashSet};

use common::{MAPS, imported, map_path};
use lastmile_roadgraph::{Graph, snapshot};
use osmpbf::{Element, ElementReader};

/// Ways that the source tags as one-way for cars, and every car way's id,
/// read with osmpbf directly rather than through the importer.
fn oneway_ways(name: &str) -> (HashSet<i64>, HashSet<i64>) {
    let mut oneway = HashSet::new();
    let mut reverse = HashSet::new();
    ElementReader::from_path(map_path(name).unwrap())
        .unwrap()
        .for_each(|el| {
            if let Element::Way(w) = el {
                let tags: HashMap<&str, &str> = w.tags().collect();
                match (tags.get("oneway").copied(), tags.get("junction").copied()) {
                    (Some("yes" | "1" | "true"), _) => {
                        oneway.insert(w.id());
                    }
                    (Some("-1"), _) => {
                        reverse.insert(w.id());
                    }
                    (None, Some("roundabout")) => {
                        oneway.insert(w.id());
                    }
                    _ => {}
                }
            }
        })
        .unwrap();
    (oneway, reverse)
}

/// Ids of the ways a car may drive on, read with osmpbf directly: a car
/// highway class, not an area, not closed to cars (the most specific access
/// tag decides), and at least two consecutive distinct nodes in the file.
fn car_ways(name: &str) -> HashSet<i64> {
    const CAR: [&str; 14] = [
        "motorway",
        "motorway_link",
        "trunk",
        "trunk_link",
        "primary",
        "primary_link",
        "secondary",
        "secondary_link",
        "tertiary",
        "tertiary_link",
        "unclassified",
        "residential",
        "living_street",
        "service",
    ];
    const CLOSED: [&str; 7] = [
        "no",
        "private",
        "agricultural",
        "forestry",
        "emergency",
        "military",
        "discouraged_no",
    ];
    let mut nodes = HashSet::new();
    let mut ways: Vec<(i64, Vec<i64>)> = Vec::new();
    ElementReader::from_path(map_path(name).unwrap())
        .unwrap()
        .for_each(|el| match el {
            Element::Node(n) => {
                nodes.insert(n.id());
            }
            Element::DenseNode(n) => {
                nodes.insert(n.id());
            }
            Element::Way(w) => {
                let tags: HashMap<&str, &str> = w.tags().collect();
                let access = ["motorcar", "motor_vehicle", "vehicle", "access"]
                    .iter()
                    .find_map(|k| tags.get(k));
                if tags.get("highway").is_some_and(|h| CAR.contains(h))
                    && tags.get("area") != Some(&"yes")
                    && !access.is_some_and(|a| CLOSED.contains(a))
                {
                    ways.push((w.id(), w.refs().collect()));
                }
            }
            Element::Relation(_) => {}
        })
        .unwrap();
    ways.into_iter()
        .filter(|(_, refs)| {
            refs.windows(2)
                .any(|p| p[0] != p[1] && nodes.contains(&p[0]) && nodes.contains(&p[1]))
        })
        .map(|(id, _)| id)
        .collect()
}

/// Nodes reachable from `from` (forward) or reaching it (backward).
fn reachable(g: &Graph, from: u32, forward: bool) -> Vec<bool> {
    let mut seen = vec![false; g.num_nodes()];
    let mut stack = vec![from];
    seen[from as usize] = true;
    while let Some(v) = stack.pop() {
        let next: Vec<u32> = if forward {
            g.out_edges(v).map(|e| g.head(e)).collect()
        } else {
            g.in_edges(v).map(|e| g.tail(e)).collect()
        };
        for w in next {
            if !seen[w as usize] {
                seen[w as usize] = true;
                stack.push(w);
            }
        }
    }
    seen
}

fn check_map(name: &str, bbox: [f64; 4], min_edges: usize, max_edges: usize) {
    let Some((data, g)) = imported(name) else {
        return;
    };
    let (n, m) = (g.num_nodes(), g.num_edges());
    assert!((min_edges..=max_edges).contains(&m), "{name}: {m} edges");
    assert!(n * 2 > m / 2 && n < m, "{name}: {n} nodes for {m} edges");

    // Geometry inside the source's bounding box (tolerance: 1e-7 degree rounding).
    let eps = 2e-7;
    let b = g.bbox();
    assert!(
        b[0] >= bbox[0] - eps
            && b[1] >= bbox[1] - eps
            && b[2] <= bbox[2] + eps
            && b[3] <= bbox[3] + eps,
        "{name}: geometry bbox {b:?} outside {bbox:?}"
    );
    // Every edge's geometry starts at its tail and ends at its head.
    for e in 0..m as u32 {
        let geom = g.edge_geometry(e);
        assert!(geom.len() >= 2);
        assert_eq!(
            geom[0],
            g.node_pos(g.tail(e)),
            "{name}: edge {e} starts off its tail"
        );
        assert_eq!(
            *geom.last().unwrap(),
            g.node_pos(g.head(e)),
            "{name}: edge {e} ends off its head"
        );
        assert!(g.travel_time_ms(e) >= 1);
        assert_ne!(g.tail(e), g.head(e), "{name}: self-loop {e}");
    }

    // One-way ways have edges in one direction only, the right one.
    let (oneway, reverse) = oneway_ways(name);
    let mut checked = 0;
    for e in 0..m as u32 {
        let way = g.way_id(e);
        if oneway.contains(&way) || reverse.contains(&way) {
            checked += 1;
            assert_eq!(
                g.reverse_edge(e),
                None,
                "{name}: one-way way {way} has a reverse edge"
            );
            assert_eq!(
                g.is_reversed(e),
                reverse.contains(&way),
                "{name}: way {way} runs the wrong way"
            );
        }
    }
    assert!(checked > 0, "{name}: no one-way edge checked");

    // Every car-routable way of the file is in the graph, and nothing else.
    let kept: HashSet<i64> = (0..m as u32).map(|e| g.way_id(e)).collect();
    let want = car_ways(name);
    let missing: Vec<_> = want.difference(&kept).take(5).collect();
    let extra: Vec<_> = kept.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: {} ways kept, {} car ways in the file; missing {missing:?}, extra {extra:?}",
        kept.len(),
        want.len()
    );

    // Components: a node's component is exactly the nodes it reaches and
    // that reach it (checked for the main one and a spread of others), the
    // main one is the largest, and the sizes add up.
    assert!(g.num_components() >= 1);
    let sizes: Vec<u32> = (0..g.num_components() as u32)
        .map(|c| g.component_nodes(c))
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "{name}: largest first"
    );
    assert_eq!(sizes.iter().map(|&s| s as usize).sum::<usize>(), n);
    let mut probes: Vec<u32> = vec![(0..n as u32).find(|&v| g.component(v) == 0).unwrap()];
    probes.extend(
        (0..n as u32)
            .filter(|&v| g.component(v) != 0)
            .step_by(97)
            .take(20),
    );
    for v in probes {
        let (fwd, bwd) = (reachable(g, v, true), reachable(g, v, false));
        let c = g.component(v);
        let mut size = 0;
        for u in 0..n {
            assert_eq!(
                fwd[u] && bwd[u],
                g.component(u as u32) == c,
                "{name}: node {u} against the component of {v}"
            );
            size += usize::from(fwd[u] && bwd[u]);
        }
        assert_eq!(size, g.component_nodes(c) as usize);
    }

    // CSR consistency.
    for v in 0..n as u32 {
        assert!(g.out_edges(v).all(|e| g.tail(e) == v));
        assert!(g.in_edges(v).all(|e| g.head(e) == v));
    }
    for r in g.restrictions() {
        assert_eq!(g.head(r.from_edge), r.via_node);
        assert_eq!(g.tail(r.to_edge), r.via_node);
    }

    // Snapshot round trip gives the identical graph.
    let dir = std::env::temp_dir().join(format!("lastmile-rt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.graph");
    snapshot::save(g, &path).unwrap();
    let loaded = snapshot::load(&path).unwrap();
    assert_eq!(
        &loaded.to_data(),
        data,
        "{name}: snapshot round trip differs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn monaco() {
    check_map(MAPS[0].0, MAPS[0].1, 3_000, 10_000);
}

#[test]
fn andorra() {
    check_map(MAPS[1].0, MAPS[1].1, 2_500, 10_000);
}

#[test]
fn heidelberg() {
    check_map(MAPS[2].0, MAPS[2].1, 15_000, 60_000);
}

#[test]
fn malta() {
    check_map(MAPS[3].0, MAPS[3].1, 30_000, 100_000);
}

#[test]
fn porto() {
    check_map(MAPS[4].0, MAPS[4].1, 100_000, 250_000);
}

#[test]
fn graphhopper_monaco() {
    check_map(MAPS[5].0, MAPS[5].1, 1_000, 10_000);
}

#[test]
fn monaco_turn_restrictions_are_parsed() {
    let Some((_, g)) = imported("monaco.osm.pbf") else {
        return;
    };
    assert!(g.restrictions().len() >= 10, "{}", g.restrictions().len());
}

#[test]
fn import_is_deterministic() {
    let Some(path) = map_path("andorra.osm.pbf") else {
        return;
    };
    let a = lastmile_roadgraph::import_pbf(&path, &lastmile_roadgraph::NoProgress)
        .unwrap()
        .0;
    let b = lastmile_roadgraph::import_pbf(&path, &lastmile_roadgraph::NoProgress)
        .unwrap()
        .0;
    assert_eq!(a, b);
}
