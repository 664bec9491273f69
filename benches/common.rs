//! Inputs shared by the benchmarks: real maps from ../shared/data (skipped
//! with a message when absent) and synthetic cities generated once per run.

#![allow(dead_code)]

use std::path::PathBuf;

use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{CityParams, Graph, LatLon, NoProgress, snapshot, synthetic, testdata};

/// Monaco and Porto, by the names the benchmarks report.
pub const MONACO_PORTO: [(&str, &str); 2] = [
    ("monaco", "monaco.osm.pbf"),
    ("porto", "porto_portugal.osm.pbf"),
];

/// Named graphs for a benchmark: real maps `(name, file)` (skipped when the
/// data is absent) and synthetic regions of the given sizes (`city-Nk`).
pub fn graphs(maps: &[(&str, &str)], city_sizes: &[usize]) -> Vec<(String, Graph)> {
    let mut out: Vec<(String, Graph)> = maps
        .iter()
        .filter_map(|&(name, file)| open_map(file).map(|g| (name.to_string(), g)))
        .collect();
    for &edges in city_sizes {
        out.push((format!("city-{}k", edges / 1000), city(edges).1));
    }
    out
}

pub fn map(name: &str) -> Option<PathBuf> {
    testdata::data_file(&format!("maps/{name}"))
}

pub fn open_map(name: &str) -> Option<Graph> {
    map(name).map(|p| lastmile_roadgraph::open(&p, &NoProgress).expect("open map"))
}

/// A synthetic city of about `edges` edges, written as a snapshot under the
/// target directory (reused across runs) and mapped.
pub fn city(edges: usize) -> (PathBuf, Graph) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("city-{edges}-seed1.graph"));
    if snapshot::load(&path).is_err() {
        let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(edges, 1)));
        snapshot::save(&g, &path).unwrap();
    }
    let g = snapshot::load(&path).unwrap();
    (path, g)
}

/// GPS-like query points: a random node displaced by up to ~30 m.
pub fn gps_points(g: &Graph, n: usize, seed: u64) -> Vec<LatLon> {
    let mut rng = Rng::seed(seed);
    (0..n)
        .map(|_| {
            let p = g.node_pos(rng.below(g.num_nodes() as u64) as u32);
            LatLon::new(
                p.lat + rng.range_f64(-2.7e-4, 2.7e-4),
                p.lon + rng.range_f64(-3.5e-4, 3.5e-4),
            )
        })
        .collect()
}
