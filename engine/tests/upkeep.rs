//! Upkeep through the engine: `service_due` comes when the distance a
//! vehicle truly drove (the simulator's true positions, not the sum of its
//! noisy GPS jumps) reaches its fleet's interval, the same on any shard
//! count; a recorded service starts the count again; moving hours and
//! calendar days count too; the counts survive a checkpoint and a recorded
//! upkeep the journal; a bad odometer reading is refused.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{all_events, drive, feed, some_route};
use lastmile_engine::Ping;
use lastmile_engine::fleet::upkeep::{DUE_CALENDAR, DUE_DISTANCE, DUE_MOVING, ServiceInterval};
use lastmile_engine::fleet::{Admission, Command, CommandError, Engine, EventKind, FleetConfig};
use lastmile_engine::simulate::{SimParams, simulate_pings};
use lastmile_roadgraph::Graph;
use lastmile_roadgraph::geo::haversine_m;

const T0: f64 = 1_767_225_600.0;
const WAIT: Admission = Admission::Wait(Duration::from_secs(5));
const DAY: f64 = 86_400.0;

use common::shared_town as town;

/// An engine whose vehicles (numbered outside any range: fleet slot 0)
/// are due for service at `interval`.
fn engine_with(g: &Arc<Graph>, shards: usize, interval: ServiceInterval) -> Engine {
    Engine::new(
        g.clone(),
        FleetConfig {
            shards,
            learning: false,
            events_capacity: 1 << 20,
            service: vec![(0, interval)],
            ..FleetConfig::default()
        },
    )
}

fn every(
    distance_m: Option<f64>,
    moving_s: Option<f64>,
    calendar_s: Option<f64>,
) -> ServiceInterval {
    ServiceInterval {
        distance_m,
        moving_s,
        calendar_s,
    }
}

/// `service_due` events as (vehicle, time, metres since service, reasons).
fn service_due(e: &Engine) -> Vec<(u64, f64, f64, u8)> {
    let mut due: Vec<_> = all_events(e)
        .into_iter()
        .filter(|ev| ev.kind == EventKind::ServiceDue)
        .map(|ev| (ev.vehicle, ev.time, ev.value, ev.reference as u8))
        .collect();
    due.sort_by(|a, b| a.partial_cmp(b).unwrap());
    due
}

fn upkeep(e: &Engine, vehicle: u64, time: f64, serviced: bool, odometer_m: Option<f64>) {
    let cmd = Command::Upkeep {
        vehicle,
        serviced,
        odometer_m,
    };
    e.command(cmd, time, WAIT).unwrap();
}

/// Metres along the jumps between (time, position) fixes up to each.
fn cumulative(points: &[(f64, lastmile_roadgraph::LatLon)]) -> Vec<(f64, f64)> {
    let mut d = 0.0;
    let mut out = vec![(points[0].0, 0.0)];
    for w in points.windows(2) {
        d += haversine_m(w[0].1, w[1].1);
        out.push((w[1].0, d));
    }
    out
}

/// The metres at time `t` (the last point at or before it).
fn at(c: &[(f64, f64)], t: f64) -> f64 {
    c.iter()
        .take_while(|p| p.0 <= t)
        .last()
        .map_or(0.0, |p| p.1)
}

/// When the metres first reach `d`.
fn when(c: &[(f64, f64)], d: f64) -> Option<f64> {
    c.iter().find(|p| p.1 >= d).map(|p| p.0)
}

#[test]
fn service_due_follows_the_true_distance_not_the_gps_jumps_on_every_shard_count() {
    let g = town();
    let params = SimParams {
        vehicles: 24,
        duration_s: 2400.0,
        interval_s: 2.0,
        noise_m: 8.0,
        seed: 41,
        start_time: T0,
        ..SimParams::default()
    };
    let mut day = Vec::new();
    // Each vehicle's true metres driven by time, and its fixes.
    let mut driven: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    let mut fixes: BTreeMap<u64, Vec<(f64, lastmile_roadgraph::LatLon)>> = BTreeMap::new();
    simulate_pings(&g, &params, &|_| {}, &mut |p| {
        let v = u64::from(p.vehicle);
        day.push((v, p.ping));
        driven
            .entry(v)
            .or_default()
            .push((p.ping.time, p.true_driven_m));
        if p.ping.pos.is_valid() {
            fixes.entry(v).or_default().push((p.ping.time, p.ping.pos));
        }
    });
    // An interval some vehicles reach and others do not: from the truth.
    let mut totals: Vec<f64> = driven.values().map(|c| c.last().unwrap().1).collect();
    totals.sort_by(f64::total_cmp);
    let d = totals[totals.len() * 2 / 5];
    assert!(d > 2_000.0, "the vehicles barely drive: {totals:?}");
    let run = |shards: usize| {
        let e = engine_with(&g, shards, every(Some(d), None, None));
        for chunk in day.chunks(97) {
            assert_eq!(e.submit(chunk, WAIT).shed, 0);
        }
        e.sync();
        service_due(&e)
    };
    let due = run(1);
    for shards in [2, 3] {
        assert_eq!(due, run(shards), "{shards} shards");
    }
    let told: BTreeMap<u64, (f64, f64, u8)> =
        due.iter().map(|&(v, t, m, why)| (v, (t, m, why))).collect();
    assert_eq!(told.len(), due.len(), "told once per vehicle");
    // The matched path is finalised a few fixes behind the newest: the
    // alert is that late. The matched distance itself is within a few
    // percent of the truth (a GPS spike or a wrong turn the chain took
    // and came back from adds a little; a broken chain loses its gap).
    const LAG_M: f64 = 400.0;
    const ODOMETER_ERROR: f64 = 0.06;
    let mut checked = 0;
    for (v, c) in &driven {
        let total = c.last().unwrap().1;
        match told.get(v) {
            Some(&(t, metres, why)) => {
                assert_eq!(why, DUE_DISTANCE);
                assert!(metres >= d, "vehicle {v}: due at {metres} m of {d}");
                let true_m = at(c, t);
                assert!(
                    true_m >= (1.0 - ODOMETER_ERROR) * d && true_m <= d + LAG_M,
                    "vehicle {v}: due when it had truly driven {true_m:.0} m of {d:.0}"
                );
                checked += 1;
            }
            None => assert!(
                total < d + LAG_M,
                "vehicle {v}: truly drove {total:.0} m of {d:.0}, never told"
            ),
        }
        if total < (1.0 - ODOMETER_ERROR) * d {
            assert!(
                !told.contains_key(v),
                "vehicle {v}: drove {total:.0} m of {d:.0}"
            );
        }
    }
    assert!(checked >= 10, "only {checked} vehicles reached {d} m");
    // What the test tells apart: the GPS fixes' jumps add up to the
    // interval well before the vehicles truly drove it.
    let early = driven
        .iter()
        .filter(|(v, c)| {
            let jumps = cumulative(&fixes[v]);
            when(c, d).is_some_and(|t| at(&jumps, t) > 1.1 * d)
        })
        .count();
    assert!(
        early >= checked / 2,
        "GPS jumps were early for {early} of {checked}"
    );
}

#[test]
fn a_service_starts_the_count_again_and_the_lifetime_odometer_goes_on() {
    let g = town();
    let route = some_route(&g, 3, 2_500.0, 4_000.0);
    let pings = drive(&g, &route, T0, 10.0, 2.0);
    let length = route.distance_m;
    let d = length / 3.0;
    let e = engine_with(&g, 2, every(Some(d), None, None));
    let half = pings.len() / 2;
    feed(&e, 8, &pings[..half]);
    let first = service_due(&e);
    assert_eq!(first.len(), 1, "{first:?}");
    // Exactly on the road at 10 m/s: due after d metres, within the lag.
    let (_, t, metres, _) = first[0];
    assert!(
        (t - T0) * 10.0 >= d && (t - T0) * 10.0 <= d + 300.0,
        "at {}",
        t - T0
    );
    assert!(metres >= d);
    // Serviced at the middle of the drive: not due again until d more.
    let serviced_at = pings[half].time;
    upkeep(&e, 8, serviced_at, true, None);
    e.sync();
    let snap = e.vehicle(8).unwrap();
    assert_eq!(
        (snap.service.since, snap.service.driven_m, snap.service.due),
        (serviced_at, 0.0, 0)
    );
    let lifetime = snap.lifetime_m;
    feed(&e, 8, &pings[half..]);
    let all = service_due(&e);
    let from_service = (length - (serviced_at - T0) * 10.0).max(0.0);
    if from_service >= d + 300.0 {
        assert_eq!(all.len(), 2, "{all:?}");
        let t2 = all[1].1;
        assert!(
            (t2 - serviced_at) * 10.0 >= d - 30.0,
            "second due {} s after",
            t2 - serviced_at
        );
    } else {
        assert!(all.len() <= 2);
    }
    let snap = e.vehicle(8).unwrap();
    assert!(snap.lifetime_m > lifetime, "the lifetime odometer went on");
    assert!((snap.lifetime_m - snap.service.driven_m - lifetime).abs() < 1e-6);
    // A dashboard reading sets the lifetime odometer, not the service count.
    upkeep(
        &e,
        8,
        pings.last().unwrap().time,
        false,
        Some(123_456_000.0),
    );
    e.sync();
    let after = e.vehicle(8).unwrap();
    assert_eq!(after.lifetime_m, 123_456_000.0);
    assert_eq!(after.service, snap.service);
}

/// A van that stands at the depot all day and drives ten minutes each morning.
fn mornings(g: &Graph, days: usize) -> Vec<Ping> {
    let route = some_route(g, 9, 3_000.0, 5_000.0);
    let mut pings = Vec::new();
    for day in 0..days {
        let t0 = T0 + day as f64 * DAY + 8.0 * 3600.0;
        let mut drive = drive(g, &route, t0, 8.0, 2.0);
        drive.retain(|p| p.time < t0 + 600.0);
        pings.extend(drive);
    }
    pings
}

#[test]
fn moving_hours_and_calendar_days_make_a_service_due() {
    let g = town();
    let pings = mornings(&g, 4);
    // Fifteen minutes of moving: on the second morning, five minutes in.
    let e = engine_with(&g, 1, every(None, Some(900.0), None));
    feed(&e, 3, &pings);
    let due = service_due(&e);
    assert_eq!(due.len(), 1, "{due:?}");
    let (_, t, _, why) = due[0];
    assert_eq!(why, DUE_MOVING);
    let second_morning = T0 + DAY + 8.0 * 3600.0;
    assert!(
        (second_morning + 280.0..=second_morning + 340.0).contains(&t),
        "{} s into the second morning",
        t - second_morning
    );
    // Two calendar days from the first sighting: the third morning's first position.
    let e = engine_with(&g, 1, every(None, None, Some(2.0 * DAY)));
    feed(&e, 3, &pings);
    let due = service_due(&e);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].3, DUE_CALENDAR);
    let third_morning = T0 + 2.0 * DAY + 8.0 * 3600.0;
    assert!((third_morning..third_morning + 10.0).contains(&due[0].1));
    // Recorded serviced the day before: counted from then instead.
    let e = engine_with(&g, 1, every(None, None, Some(2.0 * DAY)));
    upkeep(&e, 3, T0 + DAY, true, None);
    feed(&e, 3, &pings);
    let due = service_due(&e);
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].1 >= T0 + 3.0 * DAY, "{}", due[0].1 - T0);
}

#[test]
fn upkeep_survives_a_checkpoint_and_the_journal() {
    let g = town();
    let pings = mornings(&g, 2);
    let e = engine_with(&g, 2, every(Some(1e9), None, None));
    let half = pings.len() / 2;
    feed(&e, 5, &pings[..half]);
    upkeep(&e, 5, pings[half].time, true, Some(5_000_000.0));
    e.sync();
    let before = e.vehicle(5).unwrap();
    let mut bytes = Vec::new();
    e.checkpoint().write_to(&mut bytes).unwrap();
    drop(e);
    let e = engine_with(&g, 3, every(Some(1e9), None, None));
    e.restore(lastmile_engine::fleet::Checkpoint::read(&bytes).unwrap())
        .unwrap();
    let restored = e.vehicle(5).unwrap();
    assert_eq!(restored.service, before.service);
    assert_eq!(restored.lifetime_m, 5_000_000.0);
    // A service recorded after the checkpoint comes back from the journal.
    let later = Command::Upkeep {
        vehicle: 5,
        serviced: true,
        odometer_m: None,
    };
    let serviced_at = pings[half + 1].time;
    assert_eq!(e.replay(&[later], serviced_at), 0);
    feed(&e, 5, &pings[half + 1..]);
    let snap = e.vehicle(5).unwrap();
    assert_eq!(snap.service.since, serviced_at);
    assert!(snap.lifetime_m - 5_000_000.0 > snap.service.driven_m - 1e-6);
}

#[test]
fn a_bad_odometer_reading_is_refused_and_changes_nothing() {
    let g = town();
    let e = engine_with(&g, 1, ServiceInterval::default());
    for (m, want) in [
        (f64::NAN, CommandError::NotFinite),
        (f64::INFINITY, CommandError::NotFinite),
        (-1.0, CommandError::BadOdometer),
        (1e11, CommandError::BadOdometer),
    ] {
        let cmd = Command::Upkeep {
            vehicle: 1,
            serviced: true,
            odometer_m: Some(m),
        };
        let err = e.command(cmd, T0, WAIT).unwrap_err();
        assert_eq!(err.to_string(), want.to_string(), "{m}");
    }
    e.sync();
    assert!(e.vehicle(1).is_none(), "nothing was applied");
}

#[test]
fn a_silence_in_the_drive_is_bridged_by_the_road_between() {
    let g = town();
    let route = some_route(&g, 21, 3_000.0, 5_000.0);
    let pings = drive(&g, &route, T0, 10.0, 2.0);
    // The phone is off for four minutes from the first on (longer than
    // the matcher's gap: the matched path breaks there).
    assert!(route.distance_m > 10.0 * 330.0, "{}", route.distance_m);
    let off = T0 + 60.0..T0 + 300.0;
    let heard: Vec<Ping> = pings
        .iter()
        .filter(|p| !off.contains(&p.time))
        .copied()
        .collect();
    let e = engine_with(&g, 1, ServiceInterval::default());
    feed(&e, 4, &heard);
    let lifetime = e.vehicle(4).unwrap().lifetime_m;
    // The route's length, less what the matcher has not finalised yet.
    assert!(
        lifetime >= 0.95 * route.distance_m && lifetime <= 1.02 * route.distance_m,
        "{lifetime:.0} m of {:.0}",
        route.distance_m
    );
}
