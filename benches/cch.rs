//! CCH preprocessing (nested dissection + chordal topology), full
//! customization, and partial customization of 1, 10 and 100 changed edges.

mod common;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{Cch, CchMetric, Graph, Metric, cch};

/// Porto and synthetic regions; the 5M-edge region only with `large`
/// (its preprocessing takes about a minute per run, too long for criterion).
fn graphs(large: bool) -> Vec<(String, Graph)> {
    let sizes: &[usize] = if large {
        &[100_000, 1_000_000, 5_000_000]
    } else {
        &[100_000, 1_000_000]
    };
    common::graphs(&[("porto", "porto_portugal.osm.pbf")], sizes)
}

fn preprocessing(c: &mut Criterion) {
    let mut group = c.benchmark_group("cch_preprocess");
    group.sample_size(10);
    for (name, g) in graphs(false) {
        let data = g.to_data();
        group.bench_function(&name, |b| b.iter(|| cch::preprocess(&data)));
    }
    group.finish();
}

fn customization(c: &mut Criterion) {
    let mut group = c.benchmark_group("cch_customize");
    group.sample_size(10);
    for (name, g) in graphs(true) {
        let cch = Cch::new(&g);
        let weights = Metric::Time.weights(&g);
        group.bench_function(format!("full/{name}"), |b| {
            b.iter_batched(
                || weights.clone(),
                |w| CchMetric::new(&cch, w),
                BatchSize::LargeInput,
            )
        });
        // The two passes of a full customization, apart.
        group.bench_function(format!("basic/{name}"), |b| {
            b.iter_batched(
                || weights.clone(),
                |w| CchMetric::basic(&cch, w),
                BatchSize::LargeInput,
            )
        });
        let basic = CchMetric::basic(&cch, weights.clone());
        group.bench_function(format!("perfect/{name}"), |b| {
            b.iter_batched(
                || basic.clone(),
                |mut m| {
                    m.perfect(&cch);
                    m
                },
                BatchSize::LargeInput,
            )
        });
        let mut metric = CchMetric::new(&cch, weights.clone());
        let mut rng = Rng::seed(3);
        for k in [1usize, 10, 100] {
            group.bench_function(format!("partial_{k}/{name}"), |b| {
                b.iter_batched(
                    || {
                        // Traffic-like changes: an edge's time scaled by 0.5..2.5.
                        (0..k)
                            .map(|_| {
                                let e = rng.below(g.num_edges() as u64) as u32;
                                let w = (f64::from(weights[e as usize]) * rng.range_f64(0.5, 2.5))
                                    as u32;
                                (e, w.max(1))
                            })
                            .collect::<Vec<_>>()
                    },
                    |changes| metric.update(&cch, &changes),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, preprocessing, customization);
criterion_main!(benches);
