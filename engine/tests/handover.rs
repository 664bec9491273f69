//! A partition handed from one engine to another (how a cluster moves a
//! partition between nodes): saved at a point of its inputs by one engine,
//! adopted by another that then takes the rest of them, it ends as it would
//! have on the first; the engine that released it no longer answers for its
//! vehicles, and the others' vehicles are untouched on both.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lastmile_engine::bench::Day;
use lastmile_engine::fleet::{Admission, Engine, FleetConfig, partition_of};
use lastmile_engine::simulate::SimParams;

const PARTITIONS: usize = 8;

fn engine(shards: usize) -> Engine {
    Engine::new(
        common::shared_town(),
        FleetConfig {
            shards,
            partitions: PARTITIONS,
            learning: false,
            ..FleetConfig::default()
        },
    )
}

#[test]
fn a_partition_moves_between_engines_mid_day() {
    let graph = common::shared_town();
    let params = SimParams {
        vehicles: 40,
        duration_s: 1_200.0,
        interval_s: 3.0,
        seed: 7,
        ..SimParams::default()
    };
    let day = Arc::new(Day::simulate(&graph, &params, &|_| {}));
    let wait = Admission::Wait(Duration::from_secs(5));
    let moved = 3;
    let (first, second) = day.pings.split_at(day.pings.len() / 2);
    assert!(
        first
            .iter()
            .any(|(v, _)| partition_of(*v, PARTITIONS) == moved),
        "the moved partition has vehicles"
    );

    // The whole day on one engine: the reference.
    let whole = engine(2);
    for cmd in day.routes() {
        whole.command(cmd, day.start_time, wait).unwrap();
    }
    for chunk in day.pings.chunks(64) {
        assert_eq!(whole.submit(chunk, wait).shed, 0);
    }
    whole.sync();

    // Half the day on `a`, then the partition goes to `b` (three shards: a
    // different layout) for the rest.
    let a = engine(2);
    let b = engine(3);
    for cmd in day.routes() {
        a.command(cmd, day.start_time, wait).unwrap();
    }
    for chunk in first.chunks(64) {
        assert_eq!(a.submit(chunk, wait).shed, 0);
    }
    let saved = a.save_partition(moved);
    assert!(saved.vehicles > 0 && saved.failed == 0, "{saved:?}");
    let released = a.release_partition(moved);
    assert_eq!(released, saved.vehicles);
    let adopted = b.adopt_partition(saved.records).unwrap();
    assert_eq!(
        (adopted.vehicles, adopted.failed.len()),
        (saved.vehicles, 0)
    );
    let (mine, theirs): (Vec<_>, Vec<_>) = second
        .iter()
        .copied()
        .partition(|(v, _)| partition_of(*v, PARTITIONS) == moved);
    for chunk in theirs.chunks(64) {
        assert_eq!(a.submit(chunk, wait).shed, 0);
    }
    for chunk in mine.chunks(64) {
        assert_eq!(b.submit(chunk, wait).shed, 0);
    }
    a.sync();
    b.sync();

    let mut compared = 0;
    for id in whole.vehicle_ids() {
        let expected = whole.vehicle(id).unwrap();
        let owner = if partition_of(id, PARTITIONS) == moved {
            assert!(a.vehicle(id).is_none(), "{id} released by a");
            &b
        } else {
            assert!(b.vehicle(id).is_none(), "{id} never on b");
            &a
        };
        let got = owner.vehicle(id).unwrap();
        assert_eq!(got.matched_time, expected.matched_time, "{id}");
        assert_eq!(got.lifetime_m, expected.lifetime_m, "{id}");
        assert_eq!(got.odometer_m, expected.odometer_m, "{id}");
        assert_eq!(
            (got.pos.lat.to_bits(), got.pos.lon.to_bits()),
            (expected.pos.lat.to_bits(), expected.pos.lon.to_bits()),
            "{id}"
        );
        assert_eq!(got.stops, expected.stops, "{id}");
        compared += 1;
    }
    assert_eq!(compared, params.vehicles);
}

#[test]
fn a_save_cut_short_is_refused_whole() {
    let graph = common::shared_town();
    let params = SimParams {
        vehicles: 10,
        duration_s: 300.0,
        seed: 2,
        ..SimParams::default()
    };
    let day = Day::simulate(&graph, &params, &|_| {});
    let a = engine(1);
    let wait = Admission::Wait(Duration::from_secs(5));
    assert_eq!(a.submit(&day.pings, wait).shed, 0);
    let p = partition_of(day.pings[0].0, PARTITIONS);
    let mut records = a.save_partition(p).records;
    records.truncate(records.len() - 5);
    assert!(engine(1).adopt_partition(records).is_err());
    // Nothing to save is nothing to adopt.
    let empty = engine(1);
    assert_eq!(empty.save_partition(p).vehicles, 0);
    assert_eq!(empty.adopt_partition(Vec::new()).unwrap().vehicles, 0);
    assert_eq!(empty.release_partition(PARTITIONS + 5), 0);
}
