//! Imports every real map in ../shared/data/maps and checks the graph against
//! the source: plausible counts, geometry inside the file's bounding box,
//! one-way ways without reverse edges (read independently from the PBF),
//! strong connectivity, way ids, and a lossless snapshot round trip.

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

fn reachable_count(g: &Graph, forward: bool) -> usize {
    let mut seen = vec![false; g.num_nodes()];
    let mut stack = vec![0u32];
    seen[0] = true;
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
    seen.iter().filter(|s| **s).count()
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

    // Strongly connected: everything reaches node 0 and node 0 reaches everything.
    assert_eq!(
        reachable_count(g, true),
        n,
        "{name}: not all nodes reachable"
    );
    assert_eq!(
        reachable_count(g, false),
        n,
        "{name}: not all nodes reach back"
    );

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
