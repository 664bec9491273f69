//! The whole engine on a simulated delivery day: pings through match, state,
//! ETA and detectors with 10k vehicles on the ~1M-edge synthetic city, on one
//! and on two shards, traffic learning on. Each iteration is a fresh engine
//! (routes assigned outside the timing) fed the same ten minutes of pings as
//! fast as it takes them; throughput is in pings. Latency percentiles, memory
//! and ETA error come from `lastmile bench` (BENCHMARKS.md).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastmile_engine::bench::{Day, DriveParams, assign_routes, feed_day};
use lastmile_engine::fleet::{Engine, FleetConfig};
use lastmile_engine::simulate::SimParams;

fn fleet(c: &mut Criterion) {
    let (_, g) = common::city(1_000_000);
    let g = Arc::new(g);
    let params = SimParams {
        vehicles: 10_000,
        duration_s: 600.0,
        interval_s: 5.0,
        noise_m: 5.0,
        congestion: 0.15,
        seed: 1,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let mut group = c.benchmark_group("fleet_day");
    group.sample_size(10);
    group.throughput(Throughput::Elements(day.pings.len() as u64));
    for shards in [1, 2] {
        group.bench_function(format!("city-1000k/10k-vehicles/{shards}-shards"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let engine = Engine::new(
                        g.clone(),
                        FleetConfig {
                            shards,
                            queue_capacity: 64,
                            ..FleetConfig::default()
                        },
                    );
                    assign_routes(&engine, &day);
                    let started = Instant::now();
                    let fed = feed_day(&engine, &day, &DriveParams::default(), &|_| {});
                    total += started.elapsed();
                    assert_eq!(fed.pings as usize, day.pings.len());
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fleet);
criterion_main!(benches);
