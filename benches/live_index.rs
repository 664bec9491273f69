//! The live-vehicle index with 100k vehicles spread over a 1M-edge region:
//! a full rebuild (bulk load, done about once a second), nearest 10 vehicles
//! to a point, vehicles in a 1 km box.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastmile_engine::live_index::{LiveIndex, LivePosition};
use lastmile_roadgraph::rng::Rng;

fn live(c: &mut Criterion) {
    let (_, g) = common::city(1_000_000);
    let index = LiveIndex::new();
    let mut rng = Rng::seed(4);
    let positions: Vec<(u64, LivePosition)> = (0..100_000u64)
        .map(|v| {
            let e = rng.below(g.num_edges() as u64) as u32;
            let offset_m = rng.unit() * g.length_m(e);
            let at = LivePosition {
                time: 0.0,
                pos: g.point_on_edge(e, offset_m),
                edge: e,
                offset_m,
                speed_mps: 8.0,
            };
            (v, at)
        })
        .collect();
    index.rebuild(0.0, positions.iter().copied());
    let points = common::gps_points(&g, 4096, 9);
    let mut group = c.benchmark_group("live_index");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rebuild_100k", |b| {
        b.iter(|| index.rebuild(1.0, positions.iter().copied()))
    });
    let (mut i, mut out) = (0, Vec::new());
    group.bench_function("nearest10_100k", |b| {
        b.iter(|| {
            i = (i + 1) % points.len();
            index.nearest(points[i], 10, &mut out);
            out.len()
        })
    });
    group.bench_function("box_1km_100k", |b| {
        b.iter(|| {
            i = (i + 1) % points.len();
            let p = points[i];
            index.in_box(
                [
                    p.lon - 0.0066,
                    p.lat - 0.0045,
                    p.lon + 0.0066,
                    p.lat + 0.0045,
                ],
                &mut out,
            );
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, live);
criterion_main!(benches);
