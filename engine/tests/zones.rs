//! Zones through the engine: a fleet's zones set by command, judged on
//! matched positions, told as `zone_entered`, `zone_left` and `zone_dwell`
//! events that follow the simulator's true positions; kept apart per fleet,
//! the same on any shard count, and kept across a checkpoint.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_events, drive, feed, some_route};
use lastmile_engine::Ping;
use lastmile_engine::fleet::{Admission, Command, CommandError, Engine, EventKind, FleetConfig};
use lastmile_engine::simulate::{SimParams, simulate_pings};
use lastmile_engine::zones::{Outline, ZoneDef, ZoneKind};
use lastmile_roadgraph::geo::{LocalPlane, haversine_m};
use lastmile_roadgraph::{Graph, LatLon};

const T0: f64 = 1_767_225_600.0;
const WAIT: Admission = Admission::Wait(Duration::from_secs(5));
/// The margin the detectors use by default.
const MARGIN: f64 = 15.0;

use common::shared_town as town;

fn engine_with(g: &Arc<Graph>, shards: usize, vehicle_fleets: Vec<([u64; 2], u32)>) -> Engine {
    Engine::new(
        g.clone(),
        FleetConfig {
            shards,
            learning: false,
            events_capacity: 1 << 20,
            vehicle_fleets,
            ..FleetConfig::default()
        },
    )
}

/// Zone events as (vehicle, kind, zone, when it happened).
fn zone_events(e: &Engine) -> Vec<(u64, EventKind, u64, f64)> {
    all_events(e)
        .into_iter()
        .filter(|ev| ev.zone.is_some())
        .map(|ev| (ev.vehicle, ev.kind, ev.zone.unwrap(), ev.value))
        .collect()
}

fn circle(id: u64, centre: LatLon, radius_m: f64) -> ZoneDef {
    ZoneDef {
        id,
        name: format!("zone {id}"),
        outline: Outline::Circle { centre, radius_m },
        kind: ZoneKind::Plain,
        dwell_s: None,
        speed_limit_kmh: None,
    }
}

fn put(e: &Engine, fleet: u32, zones: Vec<ZoneDef>) {
    e.command(Command::PutZones { fleet, zones }, T0, WAIT)
        .unwrap();
}

/// A drive along a route at 10 m/s, a ping a second, and the circle of
/// 120 m around the point it passes halfway.
fn through_a_circle(g: &Graph, seed: u64) -> (Vec<Ping>, LatLon) {
    let route = some_route(g, seed, 1500.0, 2500.0);
    let pings = drive(g, &route, T0, 10.0, 1.0);
    let centre = pings[pings.len() / 2].pos;
    (pings, centre)
}

#[test]
fn a_drive_through_a_zone_enters_and_leaves_it_where_the_truth_does() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let (pings, centre) = through_a_circle(&g, 3);
    put(&e, 0, vec![circle(7, centre, 120.0)]);
    feed(&e, 1, &pings);
    let events = zone_events(&e);
    let kinds: Vec<_> = events.iter().map(|ev| (ev.1, ev.2)).collect();
    assert_eq!(
        kinds,
        [(EventKind::ZoneEntered, 7), (EventKind::ZoneLeft, 7)],
        "{events:?}"
    );
    // The drive is exactly on the road: the first fix the margin inside,
    // and the first the margin outside, are when it happened (told a
    // position later, when the second confirmed it).
    let depth = |p: &Ping| haversine_m(centre, p.pos) - 120.0;
    let entered = pings.iter().find(|p| depth(p) < -MARGIN).unwrap().time;
    let left = pings
        .iter()
        .find(|p| p.time > entered && depth(p) > MARGIN)
        .unwrap()
        .time;
    assert!(
        (events[0].3 - entered).abs() <= 1.0,
        "{} {entered}",
        events[0].3
    );
    assert!((events[1].3 - left).abs() <= 1.0, "{} {left}", events[1].3);
    let left_ev = all_events(&e)
        .into_iter()
        .find(|ev| ev.kind == EventKind::ZoneLeft)
        .unwrap();
    assert!((left_ev.reference - (left - entered)).abs() <= 2.0);
    assert_eq!(left_ev.time, left + 1.0);
    assert_eq!(left_ev.stop, None);
}

#[test]
fn a_gps_outlier_inside_a_zone_enters_nothing() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let route = some_route(&g, 21, 1000.0, 2000.0);
    let mut pings = drive(&g, &route, T0, 10.0, 1.0);
    pings.truncate(40);
    let last = *pings.last().unwrap();
    // A zone 800 m off the road, and one fix inside it.
    let far = LocalPlane::new(last.pos).unproject(800.0, 0.0);
    put(&e, 0, vec![circle(3, far, 100.0)]);
    let mut jump = Ping::new(last.time + 1.0, far);
    jump.speed = last.speed;
    feed(&e, 2, &pings);
    feed(&e, 2, &[jump]);
    let events = all_events(&e);
    assert!(events.iter().any(|ev| ev.kind == EventKind::GpsOutlier));
    assert!(zone_events(&e).is_empty(), "{events:?}");
}

#[test]
fn a_dwell_is_told_once_with_the_time_inside() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let (pings, centre) = through_a_circle(&g, 5);
    let mut zone = circle(4, centre, 120.0);
    zone.dwell_s = Some(120.0);
    put(&e, 0, vec![zone]);
    // Drive to the middle, then stand there for five minutes.
    let half = pings.len() / 2;
    let mut standing = pings[..=half].to_vec();
    let at = pings[half];
    for k in 1..=300 {
        let mut p = Ping::new(at.time + f64::from(k), at.pos);
        p.speed = Some(0.0);
        standing.push(p);
    }
    feed(&e, 9, &standing);
    let events = all_events(&e);
    let dwells: Vec<_> = events
        .iter()
        .filter(|ev| ev.kind == EventKind::ZoneDwell)
        .collect();
    assert_eq!(dwells.len(), 1, "{events:?}");
    let entered = events
        .iter()
        .find(|ev| ev.kind == EventKind::ZoneEntered)
        .unwrap();
    assert_eq!(dwells[0].value, entered.value);
    let inside = dwells[0].reference;
    assert!((120.0..=121.0).contains(&inside), "{inside}");
    assert_eq!(dwells[0].time - dwells[0].value, inside);
}

#[test]
fn zones_changed_or_removed_while_a_vehicle_is_inside() {
    let g = town();
    let e = engine_with(&g, 2, Vec::new());
    let (pings, centre) = through_a_circle(&g, 8);
    let half = pings.len() / 2;
    put(
        &e,
        0,
        vec![circle(1, centre, 150.0), circle(2, centre, 150.0)],
    );
    feed(&e, 4, &pings[..half]);
    assert_eq!(zone_events(&e).len(), 2);
    // Zone 1 removed: forgotten without an event. Zone 2 moved 2 km away:
    // left at the next position.
    e.command(
        Command::RemoveZones {
            fleet: 0,
            zones: vec![1],
        },
        pings[half].time,
        WAIT,
    )
    .unwrap();
    let away = LocalPlane::new(centre).unproject(2000.0, 0.0);
    put(&e, 0, vec![circle(2, away, 150.0)]);
    feed(&e, 4, &pings[half..half + 2]);
    let events = zone_events(&e);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!((events[2].1, events[2].2), (EventKind::ZoneLeft, 2));
    assert_eq!(events[2].3, pings[half].time);
    // And zone 1 put back: entered again.
    put(&e, 0, vec![circle(1, centre, 150.0)]);
    feed(&e, 4, &pings[half + 2..half + 4]);
    let events = zone_events(&e);
    assert_eq!((events[3].1, events[3].2), (EventKind::ZoneEntered, 1));
    assert_eq!(e.zones(0).len(), 2);
}

#[test]
fn fleets_see_only_their_own_zones() {
    let g = town();
    // Vehicles 100-199 are fleet 7's; 200-299 fleet 9's.
    let e = engine_with(&g, 2, vec![([100, 199], 7), ([200, 299], 9)]);
    let (pings, centre) = through_a_circle(&g, 11);
    put(&e, 7, vec![circle(70, centre, 150.0)]);
    put(&e, 9, vec![circle(90, centre, 150.0)]);
    feed(&e, 150, &pings);
    feed(&e, 250, &pings);
    // Unranged: no fleet's zones.
    feed(&e, 5, &pings);
    let allocated: u64 = (1 << 62) | (9 << 38) | 1;
    feed(&e, allocated, &pings);
    let mut seen: Vec<(u64, u64)> = zone_events(&e)
        .into_iter()
        .filter(|ev| ev.1 == EventKind::ZoneEntered)
        .map(|ev| (ev.0, ev.2))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [(150, 70), (250, 90), (allocated, 90)]);
    assert_eq!(e.fleet_of(150), 7);
    assert_eq!(e.fleet_of(5), 0);
}

#[test]
fn bad_zones_are_refused_with_a_reason_and_change_nothing() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let c = LatLon::new(43.73, 7.42);
    let polygon = |rings: Vec<Vec<LatLon>>| ZoneDef {
        outline: Outline::Polygon { rings },
        ..circle(5, c, 1.0)
    };
    let bow_tie = vec![vec![
        LatLon::new(43.73, 7.42),
        LatLon::new(43.74, 7.43),
        LatLon::new(43.73, 7.43),
        LatLon::new(43.74, 7.42),
    ]];
    let cases = [
        (polygon(bow_tie), "crosses itself"),
        (polygon(Vec::new()), ""),
        (polygon(vec![vec![c, c]]), ""),
        (circle(5, LatLon::new(95.0, 7.0), 100.0), ""),
        (circle(5, LatLon::new(f64::NAN, 7.0), 100.0), ""),
        (circle(5, c, -3.0), ""),
    ];
    for (zone, says) in cases {
        let err = e
            .command(
                Command::PutZones {
                    fleet: 0,
                    zones: vec![zone.clone()],
                },
                T0,
                WAIT,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, CommandError::BadZone { zone: 5, .. }) && text.contains(says),
            "{zone:?}: {text}"
        );
    }
    let twice = Command::PutZones {
        fleet: 0,
        zones: vec![circle(1, c, 50.0), circle(1, c, 60.0)],
    };
    assert_eq!(
        e.command(twice, T0, WAIT).unwrap_err(),
        CommandError::DuplicateZone(1)
    );
    let unknown = Command::RemoveZones {
        fleet: 0,
        zones: vec![42],
    };
    assert_eq!(
        e.command(unknown, T0, WAIT).unwrap_err(),
        CommandError::UnknownZone(42)
    );
    assert!(e.zones(0).is_empty());
}

/// Entries and leavings of circles, from true positions, by the rule the
/// detectors state (in once `margin` inside, out once `margin` outside):
/// per (vehicle, zone), the times of each entry.
fn true_entries(
    truth: &[(u64, f64, LatLon)],
    zones: &[(u64, LatLon, f64)],
    margin: f64,
) -> std::collections::BTreeMap<(u64, u64), Vec<f64>> {
    let mut inside = std::collections::HashSet::new();
    let mut entries: std::collections::BTreeMap<(u64, u64), Vec<f64>> = Default::default();
    for &(v, t, p) in truth {
        for &(z, centre, r) in zones {
            let d = haversine_m(centre, p) - r;
            if d < -margin && inside.insert((v, z)) {
                entries.entry((v, z)).or_default().push(t);
            } else if d > margin {
                inside.remove(&(v, z));
            }
        }
    }
    entries
}

#[test]
fn a_simulated_day_enters_the_zones_its_true_positions_enter_on_every_shard_count() {
    let g = town();
    let params = SimParams {
        vehicles: 30,
        duration_s: 1800.0,
        interval_s: 2.0,
        noise_m: 5.0,
        seed: 31,
        ..SimParams::default()
    };
    let mut day = Vec::new();
    let mut truth = Vec::new();
    simulate_pings(&g, &params, &|_| {}, &mut |p| {
        day.push((u64::from(p.vehicle), p.ping));
        truth.push((u64::from(p.vehicle), p.ping.time, p.truth));
    });
    // Circles of 150 m around points of the main network.
    let mut rng = lastmile_roadgraph::rng::Rng::seed(5);
    let zones: Vec<(u64, LatLon, f64)> = (0..80)
        .map(|z| {
            let e = loop {
                let e = rng.below(g.num_edges() as u64) as u32;
                if g.edge_in_component(e, 0) {
                    break e;
                }
            };
            (z, g.point_on_edge(e, g.length_m(e) / 2.0), 150.0)
        })
        .collect();
    let defs: Vec<ZoneDef> = zones.iter().map(|&(z, c, r)| circle(z, c, r)).collect();
    let run = |shards: usize| {
        let e = engine_with(&g, shards, Vec::new());
        put(&e, 0, defs.clone());
        for chunk in day.chunks(101) {
            assert_eq!(e.submit(chunk, WAIT).shed, 0);
        }
        e.sync();
        let mut events = zone_events(&e);
        events.sort_by(|a, b| (a.0, a.3, a.2).partial_cmp(&(b.0, b.3, b.2)).unwrap());
        events
    };
    let one = run(1);
    for shards in [2, 3] {
        assert_eq!(one, run(shards), "{shards} shards");
    }
    // Against the truth: the entries of positions that went well inside
    // are all there, at their time; none where the truth never came near.
    let strict = true_entries(&truth, &zones, MARGIN + 10.0);
    let loose = true_entries(&truth, &zones, MARGIN - 10.0);
    let mut engine: std::collections::BTreeMap<(u64, u64), Vec<f64>> = Default::default();
    for &(v, kind, z, t) in &one {
        if kind == EventKind::ZoneEntered {
            engine.entry((v, z)).or_default().push(t);
        }
    }
    let total: usize = strict.values().map(Vec::len).sum();
    assert!(total > 30, "the day crosses few zones: {total}");
    for (key, times) in &engine {
        let (lo, hi) = (
            strict.get(key).map_or(0, Vec::len),
            loose.get(key).map_or(0, Vec::len),
        );
        assert!(
            (lo..=hi).contains(&times.len()),
            "vehicle {} zone {}: {} entries, the truth {lo} to {hi}",
            key.0,
            key.1,
            times.len()
        );
        // Each between a loose true entry and the strict one after it (a
        // vehicle that stood at a light just inside the border entered by
        // one rule and not yet by the other), give or take a few pings.
        for &t in times {
            let strict_times = strict.get(key).map_or(&[][..], Vec::as_slice);
            let fits = loose[key].iter().any(|&lo| {
                let hi = strict_times
                    .iter()
                    .copied()
                    .find(|&s| s >= lo)
                    .unwrap_or(f64::INFINITY);
                lo - 10.0 <= t && t <= hi + 10.0
            });
            assert!(fits, "vehicle {} zone {} at {t}", key.0, key.1);
        }
    }
    for key in strict.keys() {
        assert!(engine.contains_key(key), "missed {key:?}");
    }
}

#[test]
fn zones_and_who_is_inside_survive_a_checkpoint_and_the_journal() {
    let g = town();
    let (pings, centre) = through_a_circle(&g, 14);
    let half = pings.len() / 2;
    let e = engine_with(&g, 2, Vec::new());
    put(&e, 0, vec![circle(1, centre, 150.0)]);
    feed(&e, 6, &pings[..half]);
    assert_eq!(zone_events(&e).len(), 1);
    let ckpt = e.checkpoint();
    let mut bytes = Vec::new();
    ckpt.write_to(&mut bytes).unwrap();
    drop(e);
    // A zone added after the checkpoint comes back from the journal.
    let later = Command::PutZones {
        fleet: 0,
        zones: vec![circle(2, centre, 400.0)],
    };
    let e = engine_with(&g, 3, Vec::new());
    let restored = e
        .restore(lastmile_engine::fleet::Checkpoint::read(&bytes).unwrap())
        .unwrap();
    assert_eq!(restored.zones, 1);
    assert_eq!(e.replay(&[later], pings[half].time), 0);
    assert_eq!(e.zones(0).len(), 2);
    feed(&e, 6, &pings[half..]);
    // Still inside zone 1 (not entered again), zone 2 entered at once,
    // both left.
    let kinds: Vec<_> = zone_events(&e).iter().map(|ev| (ev.1, ev.2)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::ZoneEntered, 2),
            (EventKind::ZoneLeft, 1),
            (EventKind::ZoneLeft, 2)
        ]
    );
}

// ------------------------------------------------------------------ rules

fn with_kind(mut z: ZoneDef, kind: ZoneKind) -> ZoneDef {
    z.kind = kind;
    z
}

fn rule_events(e: &Engine) -> Vec<(EventKind, Option<u64>, f64)> {
    all_events(e)
        .into_iter()
        .filter(|ev| {
            matches!(
                ev.kind,
                EventKind::ForbiddenZone | EventKind::OutsideArea | EventKind::ZoneSpeeding
            )
        })
        .map(|ev| (ev.kind, ev.zone, ev.time))
        .collect()
}

#[test]
fn a_forbidden_zone_is_told_once_per_cooldown() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let (pings, centre) = through_a_circle(&g, 3);
    put(
        &e,
        0,
        vec![with_kind(circle(5, centre, 120.0), ZoneKind::Forbidden)],
    );
    // Through it, back along the same road, and through it again, all
    // within the cool-down (15 minutes).
    let mut back: Vec<Ping> = pings.iter().rev().cloned().collect();
    let t_end = pings.last().unwrap().time;
    for (k, p) in back.iter_mut().enumerate() {
        p.time = t_end + 1.0 + k as f64;
        p.heading = p.heading.map(|h| (h + 180.0) % 360.0);
    }
    feed(&e, 1, &pings);
    feed(&e, 1, &back);
    let kinds: Vec<_> = zone_events(&e).iter().map(|ev| ev.1).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::ZoneEntered)
            .count(),
        2,
        "{kinds:?}"
    );
    let rules = rule_events(&e);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        (rules[0].0, rules[0].1),
        (EventKind::ForbiddenZone, Some(5))
    );
}

#[test]
fn leaving_the_allowed_area_is_told_and_a_clean_drive_tells_nothing() {
    let g = town();
    let (pings, centre) = through_a_circle(&g, 6);
    // The area: 400 m around the middle of the drive; the drive is 1.5 to
    // 2.5 km long, so it starts and ends outside.
    let area = with_kind(circle(9, centre, 400.0), ZoneKind::Allowed);
    let e = engine_with(&g, 1, Vec::new());
    put(&e, 0, vec![area.clone()]);
    feed(&e, 1, &pings);
    let rules = rule_events(&e);
    // Outside from the start (told once, no area left), inside, then out
    // of the area it had entered: told again (a new time outside), but
    // within the cool-down: quiet.
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!((rules[0].0, rules[0].1), (EventKind::OutsideArea, None));
    let told = all_events(&e)
        .into_iter()
        .find(|ev| ev.kind == EventKind::OutsideArea)
        .unwrap();
    assert_eq!(
        told.value, pings[0].time,
        "outside since the first position"
    );
    assert!(rules[0].2 - pings[0].time <= 2.0);
    // With a short cool-down, the leaving is told, naming the area.
    let e = Engine::new(
        g.clone(),
        FleetConfig {
            shards: 1,
            learning: false,
            events_capacity: 1 << 20,
            detect: lastmile_engine::fleet::DetectConfig {
                rule_cooldown_s: 10.0,
                ..Default::default()
            },
            ..FleetConfig::default()
        },
    );
    put(&e, 0, vec![area]);
    feed(&e, 1, &pings);
    let rules = rule_events(&e);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!((rules[1].0, rules[1].1), (EventKind::OutsideArea, Some(9)));
    // An area around the whole town: nothing.
    let e = engine_with(&g, 1, Vec::new());
    put(
        &e,
        0,
        vec![with_kind(circle(1, centre, 40_000.0), ZoneKind::Allowed)],
    );
    feed(&e, 1, &pings);
    assert!(rule_events(&e).is_empty());
}

#[test]
fn speeding_in_a_zone_is_judged_by_its_own_limit() {
    let g = town();
    let e = engine_with(&g, 1, Vec::new());
    let (pings, centre) = through_a_circle(&g, 12);
    // 10 m/s (36 km/h) through a 20 km/h zone, and through a 50 km/h one.
    let mut slow = circle(3, centre, 200.0);
    slow.speed_limit_kmh = Some(20.0);
    put(&e, 0, vec![slow]);
    feed(&e, 1, &pings);
    let rules = rule_events(&e);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!((rules[0].0, rules[0].1), (EventKind::ZoneSpeeding, Some(3)));
    let ev = all_events(&e)
        .into_iter()
        .find(|ev| ev.kind == EventKind::ZoneSpeeding)
        .unwrap();
    assert!((ev.value - 10.0).abs() < 0.5 && (ev.reference - 20.0 / 3.6).abs() < 1e-9);
    let e = engine_with(&g, 1, Vec::new());
    let mut fast = circle(3, centre, 200.0);
    fast.speed_limit_kmh = Some(50.0);
    put(&e, 0, vec![fast]);
    feed(&e, 1, &pings);
    assert!(rule_events(&e).is_empty());
}

/// A drive of `seed`'s route starting at `t0` (UTC, "2026-…Z") by a
/// vehicle of a fleet that works Monday to Friday, 07:00 to 19:00 in
/// Lisbon: the times `off_hours_movement` was told.
fn off_hours_told(t0: &str) -> Vec<f64> {
    let g = town();
    let hours = lastmile_engine::zones::WorkingHours::new(
        "Europe/Lisbon",
        &["mon-fri 07:00-19:00".to_string()],
    )
    .unwrap();
    let e = Engine::new(
        g.clone(),
        FleetConfig {
            shards: 1,
            learning: false,
            events_capacity: 1 << 20,
            working_hours: vec![(0, hours)],
            ..FleetConfig::default()
        },
    );
    let t0: f64 = {
        let t: jiff::Timestamp = t0.parse().unwrap();
        t.as_second() as f64
    };
    let route = some_route(&g, 4, 1500.0, 2500.0);
    feed(&e, 1, &drive(&g, &route, t0, 10.0, 1.0));
    all_events(&e)
        .into_iter()
        .filter(|ev| ev.kind == EventKind::OffHoursMovement)
        .map(|ev| ev.time - t0)
        .collect()
}

#[test]
fn moving_outside_working_hours_is_told_once_by_the_fleets_own_clock() {
    // Friday 06:30 in Lisbon (UTC+0 in March before the 29th): told once,
    // after a minute of moving (and the moments it takes to be moving).
    let told = off_hours_told("2026-03-27T06:30:00Z");
    assert_eq!(told.len(), 1, "{told:?}");
    assert!((60.0..=70.0).contains(&told[0]), "{told:?}");
    // Monday 06:30 UTC is 07:30 in Lisbon after the clocks went forward.
    assert!(off_hours_told("2026-03-30T06:30:00Z").is_empty());
    // A Sunday afternoon.
    assert_eq!(off_hours_told("2026-03-29T15:00:00Z").len(), 1);
}
