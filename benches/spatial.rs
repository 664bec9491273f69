//! Candidate search: nearest 8 edges within 50 m and all edges within 50 m of
//! GPS-like points (random nodes displaced up to ~30 m).

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn queries(c: &mut Criterion) {
    let graphs = common::graphs(&common::MONACO_PORTO, &[1_000_000]);
    let mut group = c.benchmark_group("spatial");
    for (name, g) in &graphs {
        let points = common::gps_points(g, 4096, 7);
        g.edge_index(); // built outside the measurement
        let mut out = Vec::new();
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        group.bench_function(format!("nearest8_50m/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % points.len();
                g.nearest_edges(points[i], 8, 50.0, &mut out);
                out.len()
            })
        });
        group.bench_function(format!("within_50m/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % points.len();
                g.edges_within(points[i], 50.0, &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
