//! The road not taken for the matcher's route distances: an FMM-style
//! upper-bounded origin-destination table (UBODT), every node pair within
//! `delta` metres of road, precomputed. This measures what it would cost:
//! its size on each map (mean nodes reachable within `delta`, times nodes),
//! the time to build it, and the price of one lookup in it, to set against
//! the matcher's bounded searches (`benches/matcher.rs`).

mod common;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastmile_roadgraph::Graph;
use lastmile_roadgraph::rng::Rng;

/// Nodes within `delta_cm` of `source` by road, with their distances.
fn within(g: &Graph, source: u32, delta_cm: u32, dist: &mut HashMap<u32, u32>) {
    dist.clear();
    let mut heap = BinaryHeap::new();
    dist.insert(source, 0);
    heap.push(Reverse((0u32, source)));
    while let Some(Reverse((d, v))) = heap.pop() {
        if dist.get(&v).is_some_and(|&x| x < d) {
            continue;
        }
        for e in g.out_edges(v) {
            let nd = d + g.length_cm(e);
            let w = g.head(e);
            if nd <= delta_cm && dist.get(&w).is_none_or(|&x| nd < x) {
                dist.insert(w, nd);
                heap.push(Reverse((nd, w)));
            }
        }
    }
}

fn ubodt(c: &mut Criterion) {
    let graphs = common::graphs(&common::MONACO_PORTO, &[]);
    let mut group = c.benchmark_group("ubodt");
    group.sample_size(10);
    for (name, g) in &graphs {
        let mut rng = Rng::seed(3);
        let mut dist = HashMap::new();
        for delta_m in [300u32, 1000, 3000] {
            let samples = 200;
            let mut reach = 0usize;
            for _ in 0..samples {
                within(
                    g,
                    rng.below(g.num_nodes() as u64) as u32,
                    delta_m * 100,
                    &mut dist,
                );
                reach += dist.len();
            }
            let mean = reach as f64 / samples as f64;
            let entries = mean * g.num_nodes() as f64;
            // FMM stores source, target, next node, previous edge and distance: 24 bytes.
            eprintln!(
                "ubodt {name} delta {delta_m} m: {mean:.0} nodes reachable on average, {:.1} M entries, about {:.0} MB",
                entries / 1e6,
                entries * 24.0 / 1e6
            );
        }
        // Build the 1 km table where that fits, and time lookups in it.
        if g.num_nodes() > 100_000 {
            continue;
        }
        let mut table: HashMap<(u32, u32), u32> = HashMap::new();
        let t0 = std::time::Instant::now();
        for v in 0..g.num_nodes() as u32 {
            within(g, v, 100_000, &mut dist);
            table.extend(dist.iter().map(|(&w, &d)| ((v, w), d)));
        }
        eprintln!(
            "ubodt {name} delta 1000 m: built {} entries in {:.2} s",
            table.len(),
            t0.elapsed().as_secs_f64()
        );
        // Random pairs from the table, in random order (the table's own
        // order would walk its memory sequentially and flatter it).
        let all: Vec<(u32, u32)> = table.keys().copied().collect();
        let keys: Vec<(u32, u32)> = (0..100_000)
            .map(|_| all[rng.below(all.len() as u64) as usize])
            .collect();
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("lookup_1km/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                // A pair the matcher asks for: near (in the table) or not.
                table.get(&keys[i]).copied().unwrap_or(u32::MAX)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ubodt);
criterion_main!(benches);
