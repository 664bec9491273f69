//! PBF import (decode + build) of real maps. Compare with
//! `osmium fileinfo -e` on the same file (BENCHMARKS.md).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use lastmile_roadgraph::NoProgress;

fn import(c: &mut Criterion) {
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    for name in ["monaco.osm.pbf", "porto_portugal.osm.pbf"] {
        let Some(path) = common::map(name) else {
            continue;
        };
        group.bench_function(name, |b| {
            b.iter(|| lastmile_roadgraph::import_pbf(&path, &NoProgress).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
