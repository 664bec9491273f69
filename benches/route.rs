//! Queries between random edge positions, travel-time metric, one thread:
//! CCH point-to-point (with path unpacking; also its cost alone, and on a
//! metric without perfect customization's pruning) and one-to-20, and
//! Dijkstra on the same pairs as the reference.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{Cch, CchMetric, CchQuery, Dijkstra, EdgePos, Graph, Metric};

fn positions(g: &Graph, n: usize, seed: u64) -> Vec<EdgePos> {
    let mut rng = Rng::seed(seed);
    (0..n)
        .map(|_| {
            let edge = rng.below(g.num_edges() as u64) as u32;
            EdgePos {
                edge,
                offset_m: rng.unit() * g.length_m(edge),
            }
        })
        .collect()
}

fn queries(c: &mut Criterion) {
    let graphs = common::graphs(&common::MONACO_PORTO, &[100_000, 1_000_000, 5_000_000]);
    let mut group = c.benchmark_group("route");
    for (name, g) in &graphs {
        let cch = Cch::new(g);
        let metric = CchMetric::for_metric(&cch, Metric::Time);
        let mut q = CchQuery::new(&cch);
        let from = positions(g, 1024, 1);
        let to = positions(g, 1024, 2);
        let stops: Vec<Vec<EdgePos>> = positions(g, 20, 3).into_iter().map(|p| vec![p]).collect();
        let mut i = 0;
        group.bench_function(format!("cch/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % from.len();
                q.route(&cch, &metric, &[from[i]], &[to[i]]).map(|r| r.cost)
            })
        });
        group.bench_function(format!("cch_cost/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % from.len();
                q.cost(&cch, &metric, &[from[i]], &[to[i]])
            })
        });
        let basic = CchMetric::basic(&cch, Metric::Time.weights(g));
        group.bench_function(format!("cch_unpruned/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % from.len();
                q.route(&cch, &basic, &[from[i]], &[to[i]]).map(|r| r.cost)
            })
        });
        group.bench_function(format!("cch_one_to_20/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % from.len();
                q.one_to_many(&cch, &metric, &[from[i]], &stops)
            })
        });
        let mut d = Dijkstra::new(g);
        group.sample_size(10);
        group.bench_function(format!("dijkstra/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % from.len();
                d.route(g, &Metric::Time, &[from[i]], &[to[i]])
                    .map(|r| r.cost)
            })
        });
        group.sample_size(100);
    }
    group.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
