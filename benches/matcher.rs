//! The online map matcher: pings per second on one core for simulated fleets
//! (positions only, 5 m noise) on Monaco, Porto and a ~1M-edge synthetic
//! region, at 1 s and 10 s sampling; and the candidate search alone (the
//! approaches of roads within 50 m, as the matcher asks for them).
//! Per-ping latency percentiles come from `lastmile match --json`.
//!
//! `fleet_order` feeds a large fleet's pings in time order, interleaved
//! across vehicles, as a shard of a running engine receives them: every
//! ping then meets its vehicle's window and its part of the graph cold in
//! the cache, which the one-vehicle-after-another runs above never show.

mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lastmile_engine::Ping;
use lastmile_engine::simulate::{SimParams, simulate, simulate_pings};
use lastmile_engine::trace::{Trace, read_csv};
use lastmile_engine::{MatchOutput, Matcher, MatcherConfig, VehicleTrack};

/// A simulated fleet's trace with about `pings` pings at `interval` seconds.
fn fleet(g: &lastmile_roadgraph::Graph, interval: f64, pings: usize) -> Trace {
    let vehicles = 40;
    let params = SimParams {
        vehicles,
        duration_s: interval * (pings / vehicles) as f64,
        interval_s: interval,
        noise_m: 5.0,
        seed: 21,
        motion_columns: false,
        ..SimParams::default()
    };
    let mut csv = Vec::new();
    simulate(g, &params, &mut csv, &|_| {}).unwrap();
    read_csv(csv.as_slice()).unwrap()
}

fn matching(c: &mut Criterion) {
    let graphs = common::graphs(&common::MONACO_PORTO, &[1_000_000]);
    let mut group = c.benchmark_group("matcher");
    group.sample_size(10);
    for (name, g) in &graphs {
        g.edge_index();
        for interval in [1.0, 10.0] {
            let trace = fleet(g, interval, 20_000);
            // Pings in time order per vehicle, as a shard receives them.
            let order: Vec<(usize, usize)> = trace
                .by_vehicle()
                .into_iter()
                .enumerate()
                .flat_map(|(v, (_, rows))| rows.into_iter().map(move |r| (v, r)))
                .collect();
            let vehicles = trace.by_vehicle().len();
            let mut matcher = Matcher::new(g, MatcherConfig::default());
            let mut out = MatchOutput::default();
            group.throughput(Throughput::Elements(order.len() as u64));
            group.bench_function(format!("pings_{interval}s/{name}"), |b| {
                b.iter_batched_ref(
                    || {
                        (0..vehicles)
                            .map(|_| VehicleTrack::new())
                            .collect::<Vec<_>>()
                    },
                    |tracks| {
                        for &(v, r) in &order {
                            matcher.push(&mut tracks[v], &trace.rows[r].ping, &mut out);
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        let points = common::gps_points(g, 4096, 7);
        let mut near = Vec::new();
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("candidates_50m/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % points.len();
                g.edge_index()
                    .approaches_within(g, points[i], 50.0, &mut near);
                near.truncate(12);
                near.len()
            })
        });
    }
    group.finish();
}

/// Pings of a large fleet in time order, as a running engine's shard sees them.
fn fleet_order(c: &mut Criterion) {
    let (_, g) = common::city(1_000_000);
    g.edge_index();
    let params = SimParams {
        vehicles: 20_000,
        duration_s: 300.0,
        interval_s: 10.0,
        noise_m: 5.0,
        seed: 5,
        motion_columns: false,
        ..SimParams::default()
    };
    let mut pings: Vec<(usize, Ping)> = Vec::new();
    simulate_pings(&g, &params, &|_| {}, &mut |p| {
        pings.push((p.vehicle as usize, p.ping))
    });
    pings.sort_by(|a, b| a.1.time.total_cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut matcher = Matcher::new(&g, MatcherConfig::default());
    let mut out = MatchOutput::default();
    let mut group = c.benchmark_group("matcher");
    group.sample_size(10);
    group.throughput(Throughput::Elements(pings.len() as u64));
    group.bench_function("fleet_order_10s/city-1000k/20k-vehicles", |b| {
        b.iter_batched_ref(
            || {
                (0..params.vehicles)
                    .map(|_| VehicleTrack::new())
                    .collect::<Vec<_>>()
            },
            |tracks| {
                for (v, p) in &pings {
                    matcher.push(&mut tracks[*v], p, &mut out);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, matching, fleet_order);
criterion_main!(benches);
