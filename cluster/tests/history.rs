//! Vehicles' paths on the history stream, as two owners write them: the
//! first writes a stretch and dies after its checkpoint, the next drives the
//! partition again from that checkpoint and writes part of the stretch a
//! second time, cut into other chunks. A reader on any node gets each piece
//! once, in time order, across a day boundary, and no other vehicle's. And
//! a node asked for a vehicle another node drives has the owner write it
//! first: the answer does not wait for the owner's next checkpoint.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lastmile_cluster::MemberStats;
use lastmile_cluster::history::{HistoryConfig, PathLog};
use lastmile_engine::bench::Day;
use lastmile_engine::fleet::{FleetConfig, PathPiece, partition_of};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::{CityParams, Graph, synthetic};

async fn open(url: &str) -> (PathLog, Arc<MemberStats>) {
    let js = lastmile_cluster::connect(url, Duration::from_secs(5))
        .await
        .unwrap();
    let stats = Arc::new(MemberStats::default());
    // Right after the servers start, their meta leader may be in election.
    let config = HistoryConfig::default();
    let log = lastmile_cluster::retrying("opening history", Duration::from_secs(20), || {
        PathLog::open(&js, 3, &config, stats.clone())
    })
    .await
    .unwrap();
    (log, stats)
}

/// A vehicle's drive across midnight (UTC): a piece per edge every 4 s,
/// each edge 40 m, two pieces per edge.
fn drive(vehicle: u64, start: f64, pieces: usize) -> Vec<PathPiece> {
    (0..pieces)
        .map(|i| {
            let t = start + 2.0 * i as f64;
            let half = (i % 2) as f64 * 20.0;
            PathPiece {
                vehicle,
                edge: 100 + (i / 2) as u32,
                from_m: half,
                to_m: half + 20.0,
                t_start: t,
                t_end: t + 2.0,
            }
        })
        .collect()
}

async fn read(
    log: &PathLog,
    vehicle: u64,
    window: (f64, f64),
    max: usize,
) -> (Vec<PathPiece>, bool) {
    let mut out = Vec::new();
    let more = log.read(vehicle, window, max, &mut out).await.unwrap();
    (out, more)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stretch_written_by_two_owners_reads_once() {
    if !common::available() {
        return;
    }
    let nats = common::Nats::start("history");
    let (first, _) = open(&nats.url()).await;
    let (next, _) = open(&nats.url()).await;
    let (reader, stats) = open(&nats.url()).await;
    // Two minutes before midnight to two after; another vehicle alongside.
    let midnight = 1_767_225_600.0;
    let all = drive(7, midnight - 120.0, 120);
    let other = drive(8, midnight - 120.0, 120);
    // The first owner wrote the first 80 pieces, in 4 writes, and died; the
    // next wrote from piece 50 on (its checkpoint's) in 3 writes.
    for w in all[..80].chunks(20) {
        let mut w = w.to_vec();
        first.append(&mut w).await;
        assert!(w.is_empty(), "not taken: {w:?}");
    }
    let mut mixed = other.clone();
    mixed.extend_from_slice(&all[50..]);
    next.append(&mut mixed).await;
    assert!(mixed.is_empty());

    // The whole day: each edge once, a piece per edge.
    let (whole, more) = read(&reader, 7, (f64::NEG_INFINITY, f64::INFINITY), 1000).await;
    assert!(!more);
    assert_eq!(whole.len(), 60, "{whole:?}");
    for (i, p) in whole.iter().enumerate() {
        assert_eq!(p.edge, 100 + i as u32);
        assert_eq!((p.from_m, p.to_m), (0.0, 40.0));
        assert_eq!(p.t_start, all[2 * i].t_start);
        assert_eq!(p.t_end, all[2 * i + 1].t_end);
    }
    assert_eq!(
        stats
            .history_pieces_repeated
            .load(std::sync::atomic::Ordering::Relaxed),
        30,
        "the pieces written twice"
    );
    // A window after midnight: its pieces, after the one before it.
    let (after, more) = read(&reader, 7, (midnight + 10.0, midnight + 20.0), 1000).await;
    assert!(!more);
    let starts: Vec<f64> = after.iter().map(|p| p.t_start - midnight).collect();
    assert_eq!(starts, [4.0, 8.0, 12.0, 16.0, 20.0], "{after:?}");
    // A window that starts the day after a stretch before midnight: the
    // piece across midnight comes from the day before.
    let (across, _) = read(&reader, 7, (midnight + 1.0, midnight + 3.0), 1000).await;
    assert_eq!(across[0].t_start, midnight - 4.0, "{across:?}");
    assert_eq!(across[1].t_start, midnight, "{across:?}");
    // At most `max`, then more.
    let (few, more) = read(&reader, 7, (f64::NEG_INFINITY, f64::INFINITY), 10).await;
    assert!(more);
    assert_eq!(few[..], whole[..10]);
    // The other vehicle's path is its own; an unknown vehicle has none.
    let (theirs, _) = read(&reader, 8, (f64::NEG_INFINITY, f64::INFINITY), 1000).await;
    assert_eq!(theirs.len(), 60);
    assert!(theirs.iter().all(|p| p.vehicle == 8));
    let (none, more) = read(&reader, 9, (f64::NEG_INFINITY, f64::INFINITY), 1000).await;
    assert!(none.is_empty() && !more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_asked_of_another_node_is_the_owners_up_to_now() {
    if !common::available() {
        return;
    }
    const PARTITIONS: usize = 4;
    let nats = common::Nats::start("history-nodes");
    let url = nats.url();
    let graph = Arc::new(Graph::from_data(&synthetic::generate_city(
        &CityParams::new(3_000, 5),
    )));
    let config = FleetConfig {
        shards: 1,
        partitions: PARTITIONS,
        history: true,
        ..FleetConfig::default()
    };
    // No checkpoint within the test: nothing reaches the stream unless
    // asked for.
    let hour = Duration::from_secs(3_600);
    let (a, ma) =
        common::join_checkpointing(&url, "a", &graph, config.clone(), 64 << 20, hour).await;
    let (b, mb) = common::join_checkpointing(&url, "b", &graph, config, 64 << 20, hour).await;
    let t = std::time::Instant::now();
    while ma.owned().len() + mb.owned().len() < PARTITIONS || mb.owned().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "partitions not shared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each node learns the owners at its supervisor's next rounds (every
    // fifth of the 2 s lease).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let params = SimParams {
        vehicles: 12,
        duration_s: 600.0,
        interval_s: 5.0,
        seed: 8,
        ..SimParams::default()
    };
    let day = Day::simulate(&graph, &params, &|_| {});
    for chunk in day.pings.chunks(500) {
        ma.publish(chunk).await.unwrap();
    }
    let t = std::time::Instant::now();
    while ma.lag() + mb.lag() > 0
        || a.stats().shards.pings + b.stats().shards.pings < day.pings.len() as u64
    {
        assert!(t.elapsed() < Duration::from_secs(30), "the day not driven");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The engines' ticks gather what they finalised.
    let end = day
        .pings
        .iter()
        .map(|(_, p)| p.time)
        .fold(f64::MIN, f64::max);
    for e in [a.clone(), b.clone()] {
        tokio::task::spawn_blocking(move || {
            e.sync();
            e.tick(end);
        })
        .await
        .unwrap();
    }
    let bs = mb.owned();
    let theirs: Vec<u64> = {
        let mut v: Vec<u64> = day
            .pings
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| bs.contains(&(partition_of(*v, PARTITIONS) as u32)))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    assert!(!theirs.is_empty(), "b drives some vans");
    let everything = (f64::NEG_INFINITY, f64::INFINITY);
    for v in theirs {
        let (ma2, mb2) = (ma.clone(), mb.clone());
        let (on_a, on_b) = tokio::task::spawn_blocking(move || {
            let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
            ma2.history(v, everything, 10_000, &mut on_a).unwrap();
            mb2.history(v, everything, 10_000, &mut on_b).unwrap();
            (on_a, on_b)
        })
        .await
        .unwrap();
        assert!(on_b.len() > 2, "van {v} drove: {on_b:?}");
        assert_eq!(on_a, on_b, "van {v} asked of a and of its owner b");
    }
}
