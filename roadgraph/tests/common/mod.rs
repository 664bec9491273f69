//! Shared helpers for the road graph's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use lastmile_roadgraph::dijkstra::{EdgeWeight, partial_weight};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{EdgePos, Graph, GraphData, NoProgress, testdata};

/// The real maps in `../shared/data/maps` with the data bounding box that
/// `osmium fileinfo -e` reports for each (SOURCES.md): min lon, min lat, max lon, max lat.
pub const MAPS: [(&str, [f64; 4]); 6] = [
    ("monaco.osm.pbf", [7.3490007, 43.7147967, 7.490996, 43.77]),
    (
        "andorra.osm.pbf",
        [1.0366421, 41.7369089, 1.8252606, 42.7883379],
    ),
    (
        "heidelberg.test.osm.pbf",
        [7.7084693, 49.3073228, 9.1046216, 49.5168325],
    ),
    (
        "malta-latest-2018.osm.pbf",
        [12.8099806, 35.6029696, 18.5697336, 39.6618056],
    ),
    (
        "porto_portugal.osm.pbf",
        [-8.7781794, 40.9810002, -8.3580007, 41.3989987],
    ),
    (
        "graphhopper-monaco.osm.pbf",
        [7.3830115, 43.5136837, 7.5027982, 43.7543317],
    ),
];

pub fn map_path(name: &str) -> Option<PathBuf> {
    testdata::data_file(&format!("maps/{name}"))
}

/// A map imported once: its name, data and graph.
type Imported = (String, &'static (GraphData, Graph));

/// Imports a map once per test binary.
pub fn imported(name: &str) -> Option<&'static (GraphData, Graph)> {
    static CACHE: OnceLock<std::sync::Mutex<Vec<Imported>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let path = map_path(name)?;
    let mut c = cache.lock().unwrap();
    if let Some((_, g)) = c.iter().find(|(n, _)| n == name) {
        return Some(g);
    }
    let (data, _) = lastmile_roadgraph::import_pbf(&path, &NoProgress).expect("import");
    let graph = Graph::from_data(&data);
    let leaked: &'static (GraphData, Graph) = Box::leak(Box::new((data, graph)));
    c.push((name.to_string(), leaked));
    Some(leaked)
}

pub fn random_pos(g: &Graph, rng: &mut Rng) -> EdgePos {
    let edge = rng.below(g.num_edges() as u64) as u32;
    let offset_m = match rng.below(4) {
        0 => 0.0,
        1 => g.length_m(edge),
        _ => rng.unit() * g.length_m(edge),
    };
    EdgePos { edge, offset_m }
}

/// Both directions of the street under a random position.
pub fn random_place(g: &Graph, rng: &mut Rng) -> Vec<EdgePos> {
    let p = random_pos(g, rng);
    let mut place = vec![p];
    if let Some(rev) = g.reverse_edge(p.edge) {
        place.push(EdgePos {
            edge: rev,
            offset_m: g.length_m(rev) - p.offset_m,
        });
    }
    place
}

pub fn path_cost<W: EdgeWeight + ?Sized>(
    g: &Graph,
    w: &W,
    edges: &[u32],
    start: EdgePos,
    end: EdgePos,
) -> u64 {
    if edges.len() == 1 {
        return partial_weight(g, w, start.edge, start.offset_m, end.offset_m);
    }
    let mut c = partial_weight(g, w, start.edge, start.offset_m, g.length_m(start.edge));
    for &e in &edges[1..edges.len() - 1] {
        c += w.weight(g, e);
    }
    c + partial_weight(g, w, end.edge, 0.0, end.offset_m)
}
