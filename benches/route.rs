//! Point-to-point Dijkstra between random edge positions (the reference that
//! the CCH will be measured against).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{Dijkstra, EdgePos, Graph, Metric};

fn pairs(g: &Graph, n: usize) -> Vec<(EdgePos, EdgePos)> {
    let mut rng = Rng::seed(42);
    let mut pos = || {
        let edge = rng.below(g.num_edges() as u64) as u32;
        EdgePos {
            edge,
            offset_m: rng.unit() * g.length_m(edge),
        }
    };
    (0..n).map(|_| (pos(), pos())).collect()
}

fn dijkstra(c: &mut Criterion) {
    let mut graphs: Vec<(String, Graph)> = Vec::new();
    if let Some(g) = common::open_map("monaco.osm.pbf") {
        graphs.push(("monaco".into(), g));
    }
    if let Some(g) = common::open_map("porto_portugal.osm.pbf") {
        graphs.push(("porto".into(), g));
    }
    graphs.push(("city-1000k".into(), common::city(1_000_000).1));
    let mut group = c.benchmark_group("route");
    group.sample_size(10);
    for (name, g) in &graphs {
        let queries = pairs(g, 256);
        let mut d = Dijkstra::new(g);
        let mut i = 0;
        group.bench_function(format!("dijkstra/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                let (s, t) = queries[i];
                d.route(g, &Metric::Time, &[s], &[t]).map(|r| r.cost)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dijkstra);
criterion_main!(benches);
