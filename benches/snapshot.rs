//! Opening a snapshot (mmap + checksum + validation) and building the edge
//! spatial index that a snapshot does not store.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use lastmile_roadgraph::snapshot;
use lastmile_roadgraph::spatial::EdgeIndex;

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    let dir = std::env::temp_dir().join(format!("lastmile-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut inputs = Vec::new();
    if let Some(g) = common::open_map("porto_portugal.osm.pbf") {
        let p = dir.join("porto.graph");
        snapshot::save(&g, &p).unwrap();
        inputs.push(("porto".to_string(), p));
    }
    inputs.push(("city-1000k".to_string(), common::city(1_000_000).0));
    for (name, path) in &inputs {
        group.bench_function(format!("load/{name}"), |b| {
            b.iter(|| snapshot::load(path).unwrap())
        });
        let g = snapshot::load(path).unwrap();
        group.bench_function(format!("edge_index_build/{name}"), |b| {
            b.iter(|| EdgeIndex::build(&g))
        });
    }
    group.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, load);
criterion_main!(benches);
