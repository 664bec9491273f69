//! Vehicles' paths on the history stream, as two owners write them: the
//! first writes a stretch and dies after its checkpoint, the next drives the
//! partition again from that checkpoint and writes part of the stretch a
//! second time, cut into other chunks. A reader on any node gets each piece
//! once, in time order, across a day boundary, and no other vehicle's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lastmile_cluster::MemberStats;
use lastmile_cluster::history::{HistoryConfig, PathLog};
use lastmile_engine::fleet::PathPiece;

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
