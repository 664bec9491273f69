//! The fleet engine end to end: the stop lifecycle on a real map, each
//! detector firing on a constructed case and staying quiet on a clean day,
//! ETAs against from-scratch shortest paths after every ping, reassignment,
//! command validation, queue-full shedding, and identical events and ETAs
//! whatever the shard count.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_events, drive, feed, some_route};
use lastmile_engine::Ping;
use lastmile_engine::bench::{Day, DriveParams, Drivers, assign_routes, feed_day};
use lastmile_engine::fleet::{
    Admission, Command, CommandError, Engine, EtaState, Event, EventKind, FleetConfig,
    ProofOfDelivery, StopOutcome, StopPlan, StopStatus, TimeWindow,
};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::geo::LocalPlane;
use lastmile_roadgraph::snap::SnapChoice;
use lastmile_roadgraph::{EdgePos, Graph, LatLon, Metric, Router};

const WAIT: Admission = Admission::Wait(Duration::from_secs(60));
const T0: f64 = 1_767_225_600.0;

/// The town as an `Arc` (the engine shares its graph between threads).
fn town() -> Arc<Graph> {
    static G: std::sync::OnceLock<Arc<Graph>> = std::sync::OnceLock::new();
    G.get_or_init(|| Arc::new(common::town().clone_graph()))
        .clone()
}

trait CloneGraph {
    fn clone_graph(&self) -> Graph;
}

impl CloneGraph for Graph {
    fn clone_graph(&self) -> Graph {
        Graph::from_data(&self.to_data())
    }
}

fn engine(g: &Arc<Graph>, shards: usize, learning: bool) -> Engine {
    Engine::new(
        g.clone(),
        FleetConfig {
            shards,
            learning,
            events_capacity: 1 << 20,
            ..FleetConfig::default()
        },
    )
}

fn kinds(events: &[Event], kind: EventKind) -> Vec<Event> {
    events.iter().filter(|e| e.kind == kind).copied().collect()
}

/// Where the engine reaches a stop: the road within 250 m it snaps to (the
/// main network's unless another is much closer) and, on a two-way street,
/// the same point on the other direction.
fn stop_place(g: &Graph, p: LatLon) -> Vec<EdgePos> {
    SnapChoice::find(g, p, 250.0, &mut Vec::new())
        .unwrap()
        .preferred()
        .positions(g)
}

fn stop_at(id: u64, pos: LatLon) -> StopPlan {
    StopPlan {
        service_s: 120.0,
        ..StopPlan::new(id, pos)
    }
}

// ------------------------------------------------------------ lifecycle

#[test]
fn stop_lifecycle_end_to_end_on_a_real_map() {
    let Some(g) = common::map("monaco.osm.pbf") else {
        return;
    };
    let g = Arc::new(g.clone_graph());
    let params = SimParams {
        vehicles: 2,
        duration_s: 3600.0,
        interval_s: 1.0,
        noise_m: 4.0,
        outlier_rate: 0.0,
        dropout_rate: 0.0,
        silence_rate: 0.0,
        seed: 4,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let e = engine(&g, 2, true);
    assign_routes(&e, &day);
    for (i, s) in day.stops().iter().enumerate() {
        let view = e.stop(i as u64).expect("registered");
        assert_eq!(view.record.vehicle, Day::vehicle_of(s));
    }
    feed_day(&e, &day, &DriveParams::default(), &|_| {});
    let events = all_events(&e);
    let arrived = kinds(&events, EventKind::Arrived);
    let departed = kinds(&events, EventKind::Departed);
    let mut reached = 0;
    for (i, s) in day.stops().iter().enumerate() {
        let Some(truth) = s.true_arrival else {
            continue;
        };
        reached += 1;
        let a = arrived
            .iter()
            .find(|ev| ev.stop == Some(i as u64))
            .unwrap_or_else(|| panic!("no arrival at stop {i} (true {truth})"));
        assert!(
            (a.time - truth).abs() <= 30.0,
            "stop {i}: arrived event at {} vs true {truth}",
            a.time
        );
        assert_eq!(a.vehicle, Day::vehicle_of(s));
        let view = e.stop(i as u64).unwrap();
        assert_eq!(view.eta.unwrap().status, StopStatus::Arrived);
        // Served and left, unless the day ended during the service.
        if truth + s.service_s + 60.0 < T0 + params.duration_s {
            let d = departed
                .iter()
                .find(|ev| ev.stop == Some(i as u64))
                .unwrap_or_else(|| panic!("no departure from stop {i}"));
            assert!(d.time > a.time + s.service_s * 0.5, "{d:?} vs {a:?}");
        }
    }
    assert!(reached >= 4, "{reached}");
    // Stops not reached keep an ETA after the last ping's time.
    for (i, s) in day.stops().iter().enumerate() {
        if s.true_arrival.is_none() {
            let eta = e.stop(i as u64).unwrap().eta.unwrap();
            assert!(eta.status.is_remaining());
            assert!(eta.eta.is_finite() && eta.eta > T0, "{eta:?}");
        }
    }
    // Completion with proof of delivery, failure with a reason.
    let (first, second) = (0u64, 1u64);
    let vehicle = Day::vehicle_of(&day.stops()[0]);
    let proof = ProofOfDelivery {
        photo_refs: vec!["s3://pod/0.jpg".into()],
        signature_ref: Some("sig-0".into()),
        note: Some("left with neighbour".into()),
        pos: None,
    };
    let t = T0 + params.duration_s + 10.0;
    e.command(
        Command::Complete {
            vehicle,
            stop: first,
            proof: proof.clone(),
        },
        t,
        WAIT,
    )
    .unwrap();
    e.command(
        Command::Fail {
            vehicle,
            stop: second,
            reason: "nobody home".into(),
        },
        t,
        WAIT,
    )
    .unwrap();
    e.sync();
    assert_eq!(
        e.stop(first).unwrap().record.outcome,
        Some(StopOutcome::Completed(proof))
    );
    assert_eq!(
        e.stop(first).unwrap().eta.unwrap().status,
        StopStatus::Completed
    );
    assert_eq!(
        e.stop(second).unwrap().eta.unwrap().status,
        StopStatus::Failed
    );
    let events = all_events(&e);
    assert_eq!(kinds(&events, EventKind::Completed).len(), 1);
    assert_eq!(kinds(&events, EventKind::Failed)[0].stop, Some(second));
    // A closed stop cannot be closed again.
    assert_eq!(
        e.command(
            Command::Fail {
                vehicle,
                stop: first,
                reason: "x".into()
            },
            t,
            WAIT
        ),
        Err(CommandError::StopClosed(first))
    );
}

// ----------------------------------------------------------------- ETAs

#[test]
fn a_stop_no_road_reaches_has_an_unreachable_eta_and_its_snap_is_reported() {
    // Malta and Gozo share a map but no road. A van drives in Valletta
    // with a route: a stop in Malta, two on Gozo, one back in Malta.
    let Some(g) = common::map("malta-latest-2018.osm.pbf") else {
        return;
    };
    let g = Arc::new(g.clone_graph());
    let e = engine(&g, 1, false);
    let malta = LatLon::new(35.8975, 14.5080);
    let (gozo_a, gozo_b) = (LatLon::new(36.0443, 14.2397), LatLon::new(36.0514, 14.2473));
    let back = LatLon::new(35.9080, 14.5000);
    e.command(
        Command::AssignRoute {
            vehicle: 9,
            stops: vec![
                stop_at(1, malta),
                stop_at(2, gozo_a),
                stop_at(3, gozo_b),
                stop_at(4, back),
            ],
        },
        T0,
        WAIT,
    )
    .unwrap();
    e.sync();
    // Before the van is placed, no time is known, but the legs between
    // stops already show which no road joins.
    let snap = e.vehicle(9).unwrap();
    let states: Vec<EtaState> = snap.stops.iter().map(|s| s.eta_state).collect();
    use EtaState::{Unknown, Unreachable};
    assert_eq!(states, [Unknown, Unreachable, Unknown, Unreachable]);
    let mut router = Router::new(&g, Metric::Time);
    let from = stop_place(&g, LatLon::new(35.8989, 14.5146));
    let to = stop_place(&g, LatLon::new(35.8950, 14.5110));
    let route = router.route(&from, &to).expect("a drive in Valletta");
    feed(&e, 9, &drive(&g, &route, T0 + 10.0, 8.0, 2.0));
    let snap = e.vehicle(9).unwrap();
    let state = |id: u64| snap.stop(id).unwrap();
    assert_eq!(state(1).eta_state, EtaState::Known);
    assert!(state(1).eta.is_finite());
    // Gozo from Malta: unreachable; the next Gozo stop is reachable from it
    // but its time is unknown; the way back to Malta is unreachable again.
    assert_eq!(state(2).eta_state, EtaState::Unreachable);
    assert_eq!(state(3).eta_state, EtaState::Unknown);
    assert_eq!(state(4).eta_state, EtaState::Unreachable);
    for id in [2, 3, 4] {
        assert!(state(id).eta.is_nan(), "{:?}", state(id));
    }
    // The snaps: Malta's stops on the main network, Gozo's on its own.
    for (id, main) in [(1, true), (2, false), (3, false), (4, true)] {
        assert_eq!(state(id).snap_component == 0, main, "{:?}", state(id));
        assert!(state(id).snap_m < 250.0);
    }

    // A van standing on Gozo with its next stop in Malta: the search that
    // found no road is not repeated on every ping from the same edge.
    e.command(
        Command::AssignRoute {
            vehicle: 10,
            stops: vec![stop_at(5, back)],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let before = e.stats().shards.unroutable;
    let standing: Vec<Ping> = (0..30)
        .map(|k| Ping::new(T0 + 100.0 + 2.0 * f64::from(k), gozo_a))
        .collect();
    feed(&e, 10, &standing);
    let snap = e.vehicle(10).unwrap();
    assert_eq!(snap.stop(5).unwrap().eta_state, EtaState::Unreachable);
    let searched = e.stats().shards.unroutable - before;
    assert!(
        (1..=3).contains(&searched),
        "{searched} searches for 30 pings"
    );

    // Each stop became unreachable once, and a dispatcher heard it once,
    // with the snap's distance and component.
    let alerts = kinds(&all_events(&e), EventKind::StopUnreachable);
    let mut stops: Vec<(u64, u64)> = alerts
        .iter()
        .map(|a| (a.vehicle, a.stop.unwrap()))
        .collect();
    stops.sort_unstable();
    assert_eq!(stops, [(9, 2), (9, 4), (10, 5)], "{alerts:?}");
    for a in &alerts {
        let on_main = a.stop != Some(2);
        assert_eq!(a.reference == 0.0, on_main, "{a:?}");
        assert!(a.value >= 0.0 && a.value < 250.0);
    }
}

#[test]
fn etas_equal_fresh_shortest_paths_after_every_ping() {
    let g = town();
    let params = SimParams {
        vehicles: 3,
        duration_s: 2400.0,
        interval_s: 2.0,
        noise_m: 5.0,
        seed: 11,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let e = engine(&g, 2, false);
    assign_routes(&e, &day);
    let mut router = Router::new(&g, Metric::Time);
    let place = |p: LatLon| stop_place(&g, p);
    let mut checked = 0;
    let (mut stale, mut stale_last) = (0, vec![false; params.vehicles]);
    let mut seen_cursor = 0;
    for &(v, p) in &day.pings {
        feed(&e, v, &[p]);
        // A driver closes a stop when leaving it.
        let events = all_events(&e);
        for ev in &events[seen_cursor..] {
            if ev.kind == EventKind::Departed {
                e.command(
                    Command::Complete {
                        vehicle: ev.vehicle,
                        stop: ev.stop.unwrap(),
                        proof: ProofOfDelivery::default(),
                    },
                    ev.time,
                    WAIT,
                )
                .unwrap();
            }
        }
        seen_cursor = events.len();
        e.sync();
        let snap = e.vehicle(v).unwrap();
        if !snap.status.is_on_road() || snap.stops.iter().any(|s| s.status == StopStatus::Arrived) {
            continue;
        }
        let open: Vec<_> = snap
            .stops
            .iter()
            .filter(|s| s.status.is_remaining())
            .collect();
        if open.len() < 2 {
            continue;
        }
        let stop_pos = |id: u64| day.stops()[id as usize].pos;
        let here = EdgePos {
            edge: snap.edge,
            offset_m: snap.offset_m,
        };
        // At the stop (a metre past it is arrived, not a lap of the block).
        if open[0].remaining_m < 60.0 {
            continue;
        }
        let Some(r) = router.route(&[here], &place(stop_pos(open[0].stop))) else {
            continue;
        };
        let want = snap.matched_time + r.cost as f64 / 1000.0;
        // One ping matched off the path keeps the last figures (a wavering
        // match is not worth a search); the next one is exact again.
        if (open[0].eta - want).abs() > 1.0 {
            stale += 1;
            let again = std::mem::replace(&mut stale_last[v as usize], true);
            assert!(
                !again,
                "vehicle {v} at {}: next stop ETA {} vs fresh {want}, twice running",
                p.time, open[0].eta
            );
            continue;
        }
        stale_last[v as usize] = false;
        let leg = router
            .route(
                &place(stop_pos(open[0].stop)),
                &place(stop_pos(open[1].stop)),
            )
            .unwrap();
        let service = day.stops()[open[0].stop as usize].service_s;
        let want2 = want + service + leg.cost as f64 / 1000.0;
        assert!(
            (open[1].eta - want2).abs() <= 1.5,
            "{} vs {want2}",
            open[1].eta
        );
        assert_eq!(open[1].stops_before, 1);
        assert!(open[0].remaining_m > 0.0 && open[1].remaining_m > open[0].remaining_m);
        checked += 1;
    }
    assert!(checked > 500, "{checked}");
    assert!(stale * 20 < checked, "{stale} stale of {checked}");
    let s = e.stats().shards;
    // Advancing along legs, not searching per ping.
    assert!(
        s.leg_routes < s.pings / 5,
        "{} searches for {} pings",
        s.leg_routes,
        s.pings
    );
}

// ------------------------------------------------------------ detectors

#[test]
fn speeding_and_harsh_braking_fire_once_on_a_constructed_drive() {
    let g = town();
    let e = engine(&g, 1, false);
    // A road with a known limit, driven at limit + 30 km/h, then a hard stop.
    let route = (0..)
        .map(|s| some_route(&g, s, 800.0, 2000.0))
        .find(|r| {
            r.edges
                .iter()
                .all(|&x| g.speed_limit(x) == lastmile_roadgraph::SpeedLimit::Kmh(50))
        })
        .expect("a 50 km/h route");
    let fast = 80.0 / 3.6;
    let mut pings = drive(&g, &route, T0, fast, 1.0);
    pings.truncate(pings.len().min(30));
    // Hard braking: 22 m/s to 4 m/s in 3 s (6 m/s²), then standing.
    let last = *pings.last().unwrap();
    for (k, v) in [16.0f32, 10.0, 4.0, 0.0, 0.0].into_iter().enumerate() {
        let mut p = last;
        p.time += 1.0 + k as f64;
        p.speed = Some(v);
        pings.push(p);
    }
    feed(&e, 1, &pings);
    let events = all_events(&e);
    let speeding = kinds(&events, EventKind::Speeding);
    assert_eq!(speeding.len(), 1, "{events:?}");
    assert!((speeding[0].reference - 50.0 / 3.6).abs() < 1e-6);
    assert!(speeding[0].value > 21.0);
    let braking = kinds(&events, EventKind::HarshBraking);
    assert_eq!(braking.len(), 1, "{events:?}");
    assert!(braking[0].value > 5.0);

    // The same road at the limit, braking gently: quiet.
    let e = engine(&g, 1, false);
    let mut pings = drive(&g, &route, T0, 48.0 / 3.6, 1.0);
    let n = pings.len();
    for (k, p) in pings.iter_mut().rev().take(6).enumerate() {
        p.speed = Some((k as f32) * 2.2);
    }
    assert!(n > 20);
    feed(&e, 1, &pings);
    let events = all_events(&e);
    assert!(kinds(&events, EventKind::Speeding).is_empty(), "{events:?}");
    assert!(
        kinds(&events, EventKind::HarshBraking).is_empty(),
        "{events:?}"
    );
}

#[test]
fn stalled_offline_online_and_eta_changed() {
    let g = town();
    let e = engine(&g, 1, false);
    let route = some_route(&g, 5, 1500.0, 3000.0);
    let end = g.point_on_edge(route.end.edge, route.end.offset_m);
    e.command(
        Command::AssignRoute {
            vehicle: 7,
            stops: vec![stop_at(70, end)],
        },
        T0,
        WAIT,
    )
    .unwrap();
    // Drive a bit, then stand still (with GPS jitter) for 10 minutes.
    let mut pings = drive(&g, &route, T0, 10.0, 2.0);
    pings.truncate(20);
    let here = pings.last().unwrap().pos;
    let plane = LocalPlane::new(here);
    let t = pings.last().unwrap().time;
    for k in 1..=300 {
        let jitter = ((k * 7919) % 11) as f64 / 2.0 - 2.5;
        let mut p = Ping::new(t + 2.0 * k as f64, plane.unproject(jitter, -jitter / 2.0));
        p.speed = Some(0.0);
        pings.push(p);
    }
    feed(&e, 7, &pings);
    let events = all_events(&e);
    let stalled = kinds(&events, EventKind::Stalled);
    assert_eq!(stalled.len(), 1, "{events:?}");
    assert_eq!(stalled[0].stop, Some(70));
    assert!(stalled[0].value >= 300.0);
    // Standing for ten minutes pushed the ETA out, in steps over the threshold.
    let changed = kinds(&events, EventKind::EtaChanged);
    assert!(changed.len() >= 3, "{changed:?}");
    assert!(changed.iter().all(|ev| ev.value - ev.reference > 120.0));
    assert!(kinds(&events, EventKind::Arrived).is_empty());
    // Silence: offline at the first tick past the threshold, online with the next ping.
    let last = pings.last().unwrap().time;
    e.tick(last + 60.0);
    assert!(kinds(&all_events(&e), EventKind::Offline).is_empty());
    e.tick(last + 130.0);
    let offline = kinds(&all_events(&e), EventKind::Offline);
    assert_eq!(offline.len(), 1);
    assert!(!e.vehicle(7).unwrap().online);
    feed(&e, 7, &[Ping::new(last + 400.0, here)]);
    let online = kinds(&all_events(&e), EventKind::Online);
    assert_eq!(online.len(), 2, "first ping and back from offline");
    assert!((online[1].value - 400.0).abs() < 1e-9);
    assert!(e.vehicle(7).unwrap().online);
    // Events of a vehicle are numbered in order.
    let seqs: Vec<u64> = all_events(&e).iter().map(|ev| ev.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn off_route_detour_reroutes_the_eta_and_comes_back_on_route() {
    let g = town();
    let e = engine(&g, 1, false);
    let mut router = Router::new(&g, Metric::Time);
    // Planned A -> B; the driver goes A -> W -> B with W off the plan.
    let (plan, detour_a, detour_b) = (0..)
        .find_map(|s| {
            let plan = some_route(&g, 100 + s, 2000.0, 3500.0);
            let mid = plan.edges[plan.edges.len() / 2];
            let w = some_route(&g, 500 + s, 0.0, 10_000.0).end;
            let wp = g.point_on_edge(w.edge, w.offset_m);
            let mp = g.point_on_edge(mid, 0.0);
            let d = lastmile_roadgraph::geo::haversine_m(wp, mp);
            if !(400.0..900.0).contains(&d) {
                return None;
            }
            let a = router.route(&[plan.start], &[w])?;
            let b = router.route(&[w], &[plan.end])?;
            // The detour must leave the plan for a good while.
            let off = a
                .edges
                .iter()
                .chain(&b.edges)
                .filter(|x| !plan.edges.contains(x))
                .count();
            (off > 10).then_some((plan, a, b))
        })
        .unwrap();
    let end = g.point_on_edge(plan.end.edge, plan.end.offset_m);
    e.command(
        Command::AssignRoute {
            vehicle: 3,
            stops: vec![stop_at(30, end)],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let first = drive(&g, &detour_a, T0, 10.0, 1.0);
    let t1 = first.last().unwrap().time + 1.0;
    let mut second = drive(&g, &detour_b, t1, 10.0, 1.0);
    // Parks at the stop.
    let end_ping = *second.last().unwrap();
    for k in 1..=5 {
        let mut p = end_ping;
        p.time += k as f64;
        p.speed = Some(0.0);
        second.push(p);
    }
    let (mut checked, mut stale_last) = (0, false);
    for p in first.iter().chain(&second) {
        feed(&e, 3, &[*p]);
        let snap = e.vehicle(3).unwrap();
        let s = snap.stop(30).unwrap();
        if s.status != StopStatus::Next || !snap.status.is_on_road() {
            continue;
        }
        // Wherever it drives, the ETA is the fresh shortest path from there.
        let here = EdgePos {
            edge: snap.edge,
            offset_m: snap.offset_m,
        };
        let fresh = router.route(&[here], &stop_place(&g, end)).unwrap();
        let exact = (s.eta - (snap.matched_time + fresh.cost as f64 / 1000.0)).abs() <= 1.0;
        // The first ping off the path keeps the last figures, never two.
        assert!(exact || !std::mem::replace(&mut stale_last, true));
        if exact {
            stale_last = false;
        }
        checked += 1;
    }
    assert!(checked > 100);
    let events = all_events(&e);
    let off = kinds(&events, EventKind::OffRoute);
    assert_eq!(off.len(), 1, "{events:?}");
    assert_eq!(off[0].stop, Some(30));
    let back = kinds(&events, EventKind::BackOnRoute);
    assert_eq!(back.len(), 1, "{events:?}");
    assert!(back[0].time > off[0].time);
    assert_eq!(kinds(&events, EventKind::Arrived).len(), 1);
    assert!(e.stats().shards.reroutes > 0);
}

/// An engine whose `late` and `at_risk` wait `confirm_s` (0: not at all).
fn engine_confirming(g: &Arc<Graph>, confirm_s: f64) -> Engine {
    let mut config = FleetConfig {
        shards: 1,
        learning: false,
        events_capacity: 1 << 20,
        ..FleetConfig::default()
    };
    // A share large enough that `confirm_s` is the wait.
    (config.detect.confirm_s, config.detect.confirm_share) = (confirm_s, 0.9);
    Engine::new(g.clone(), config)
}

/// Vehicle 5 set off towards a far stop, then a close one promised
/// within 5 minutes: served after the far stop, that one will be late.
fn promised_too_late(g: &Graph, e: &Engine) -> (Vec<Ping>, TimeWindow) {
    let route = some_route(g, 9, 2500.0, 4000.0);
    let pings = drive(g, &route, T0, 10.0, 2.0);
    let start = pings[0].pos;
    let near = LocalPlane::new(start).unproject(0.0, 300.0);
    let far = g.point_on_edge(route.end.edge, route.end.offset_m);
    let window = TimeWindow {
        start: T0,
        end: T0 + 300.0,
    };
    let mut close_stop = stop_at(2, near);
    close_stop.window = Some(window);
    e.command(
        Command::AssignRoute {
            vehicle: 5,
            stops: vec![stop_at(1, far), close_stop],
        },
        T0,
        WAIT,
    )
    .unwrap();
    (pings, window)
}

#[test]
fn late_and_back_on_time_follow_the_route_order() {
    let g = town();
    let e = engine_confirming(&g, 0.0);
    let (mut pings, window) = promised_too_late(&g, &e);
    pings.truncate(5);
    feed(&e, 5, &pings);
    let events = all_events(&e);
    let late = kinds(&events, EventKind::Late);
    assert_eq!(late.len(), 1, "{events:?}");
    assert_eq!(late[0].stop, Some(2));
    assert_eq!(late[0].reference, window.end);
    assert!(e.vehicle(5).unwrap().stop(2).unwrap().late);
    // The dispatcher serves it first: back on time.
    e.command(
        Command::Reorder {
            vehicle: 5,
            order: vec![2, 1],
        },
        pings.last().unwrap().time,
        WAIT,
    )
    .unwrap();
    e.sync();
    let events = all_events(&e);
    let back = kinds(&events, EventKind::BackOnTime);
    assert_eq!(back.len(), 1, "{events:?}");
    assert_eq!(back[0].stop, Some(2));
    let snap = e.vehicle(5).unwrap();
    assert_eq!(snap.next_stop, Some(2));
    assert!(!snap.stop(2).unwrap().late);
    assert_eq!(snap.stop(1).unwrap().stops_before, 1);
}

#[test]
fn late_and_at_risk_wait_to_be_confirmed() {
    let g = town();
    let e = engine_confirming(&g, 60.0);
    let (pings, window) = promised_too_late(&g, &e);
    // Late from the first ping on, but not said until it has held a minute.
    let first = pings[0].time;
    let mut said = None;
    for p in pings.iter().take(60) {
        feed(&e, 5, std::slice::from_ref(p));
        if e.vehicle(5).unwrap().stop(2).unwrap().late {
            said = Some(p.time);
            break;
        }
    }
    let said = said.expect("late within two minutes");
    assert!(
        said - first >= 60.0 && said - first <= 62.0,
        "{}",
        said - first
    );
    let events = all_events(&e);
    let (risk, late) = (
        kinds(&events, EventKind::AtRisk),
        kinds(&events, EventKind::Late),
    );
    assert_eq!((risk.len(), late.len()), (1, 1), "{events:?}");
    assert!(risk[0].time <= late[0].time);
    assert!(late[0].time < window.end);
}

#[test]
fn a_later_stop_arrives_out_of_order_only_after_lingering_there() {
    let g = town();
    let e = engine(&g, 1, false);
    let r = some_route(&g, 77, 1500.0, 3000.0);
    let (start, end) = (
        g.point_on_edge(r.start.edge, r.start.offset_m),
        g.point_on_edge(r.end.edge, r.end.offset_m),
    );
    // The next stop is far away; the van stands beside a later one.
    e.command(
        Command::AssignRoute {
            vehicle: 4,
            stops: vec![stop_at(40, end), stop_at(41, start)],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let standing = |from: f64, to: f64| -> Vec<Ping> {
        let mut t = from;
        let mut out = Vec::new();
        while t < to {
            let mut p = Ping::new(t, start);
            p.speed = Some(0.0);
            out.push(p);
            t += 2.0;
        }
        out
    };
    // 40 s at a light (or at the depot) by stop 41: not a delivery.
    feed(&e, 4, &standing(T0 + 1.0, T0 + 41.0));
    assert!(kinds(&all_events(&e), EventKind::Arrived).is_empty());
    assert_eq!(
        e.vehicle(4).unwrap().stop(41).unwrap().status,
        StopStatus::Pending
    );
    // Past a minute there, the driver is serving it out of order.
    feed(&e, 4, &standing(T0 + 41.0, T0 + 90.0));
    let arrived = kinds(&all_events(&e), EventKind::Arrived);
    assert_eq!(arrived.len(), 1, "{arrived:?}");
    assert_eq!(arrived[0].stop, Some(41));
    assert!(arrived[0].time >= T0 + 61.0, "{:?}", arrived[0]);
}

#[test]
fn gps_outlier_is_reported_and_does_not_move_the_vehicle() {
    let g = town();
    let e = engine(&g, 1, false);
    let route = some_route(&g, 21, 1000.0, 2000.0);
    let mut pings = drive(&g, &route, T0, 10.0, 1.0);
    pings.truncate(40);
    // One fix 800 m off, one second after the last good one.
    let last = *pings.last().unwrap();
    let mut jump = Ping::new(
        last.time + 1.0,
        LocalPlane::new(last.pos).unproject(800.0, 0.0),
    );
    jump.speed = last.speed;
    feed(&e, 2, &pings);
    let before = e.vehicle(2).unwrap();
    feed(&e, 2, &[jump]);
    let after = e.vehicle(2).unwrap();
    let events = all_events(&e);
    let outliers = kinds(&events, EventKind::GpsOutlier);
    assert_eq!(outliers.len(), 1, "{events:?}");
    assert!(outliers[0].value > 700.0);
    assert_eq!((before.edge, before.offset_m), (after.edge, after.offset_m));
}

#[test]
fn a_clean_day_is_quiet() {
    let g = town();
    let params = SimParams {
        vehicles: 20,
        duration_s: 3600.0,
        interval_s: 1.0,
        noise_m: 4.0,
        outlier_rate: 0.0,
        dropout_rate: 0.0,
        silence_rate: 0.0,
        seed: 17,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    // Drivers follow the free-flow plan, so the engine plans on free flow
    // too (with learnt traffic it may plan another way, and rightly call a
    // driver who ignores it off route).
    let e = engine(&g, 2, false);
    assign_routes(&e, &day);
    feed_day(&e, &day, &DriveParams::default(), &|_| {});
    let events = all_events(&e);
    for kind in [
        EventKind::OffRoute,
        EventKind::Speeding,
        EventKind::HarshBraking,
        EventKind::GpsOutlier,
        EventKind::Offline,
        EventKind::Stalled,
        EventKind::Failed,
    ] {
        let found = kinds(&events, kind);
        assert!(found.is_empty(), "{}: {found:?}", kind.as_str());
    }
    let reached = day
        .stops()
        .iter()
        .filter(|s| s.true_arrival.is_some())
        .count();
    assert_eq!(kinds(&events, EventKind::Arrived).len(), reached);
}

// ------------------------------------------------------------ milestones

/// The customer milestones of a simulated day, judged against what truly
/// happened: every reached stop has out_for_delivery, next_stop, arriving
/// and its outcome, once each and in that order, at the times the truth
/// says (the route's start, the previous stop's arrival, before its own
/// arrival, as the driver left); stops never reached have no outcome.
#[test]
fn customer_milestones_follow_the_true_day() {
    let g = town();
    let params = SimParams {
        vehicles: 12,
        duration_s: 3600.0,
        interval_s: 2.0,
        noise_m: 5.0,
        seed: 31,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let e = engine(&g, 2, true);
    assign_routes(&e, &day);
    let drive = DriveParams {
        drivers: Some(Drivers { fail_every: 5 }),
        ..DriveParams::default()
    };
    feed_day(&e, &day, &drive, &|_| {});
    let mut events = all_events(&e);
    events.sort_by_key(|ev| (ev.vehicle, ev.seq));
    let arriving_s = FleetConfig::default().detect.arriving_s;
    let stops = day.stops();
    let end = T0 + params.duration_s;
    let (mut delivered, mut failed) = (0, 0);
    for (i, s) in stops.iter().enumerate() {
        let mine: Vec<&Event> = events
            .iter()
            .filter(|ev| ev.stop == Some(i as u64) && EventKind::MILESTONES.contains(&ev.kind))
            .collect();
        let names: Vec<&str> = mine.iter().map(|ev| ev.kind.as_str()).collect();
        let at = |kind: EventKind| mine.iter().find(|ev| ev.kind == kind).map(|ev| ev.time);
        let Some(arrival) = s.true_arrival else {
            assert!(
                at(EventKind::Delivered).is_none() && at(EventKind::FailedAttempt).is_none(),
                "stop {i} never reached: {names:?}"
            );
            continue;
        };
        let closed = arrival + s.service_s;
        if closed >= end {
            continue;
        }
        let outcome = match mine.last().map(|ev| ev.kind) {
            Some(EventKind::Delivered) => {
                delivered += 1;
                "delivered"
            }
            _ => {
                failed += 1;
                "failed_attempt"
            }
        };
        assert_eq!(
            names,
            ["out_for_delivery", "next_stop", "arriving", outcome],
            "stop {i}"
        );
        // Out for delivery once the van drives off at the day's start (its
        // route is planned before); the stop next from when the one before
        // it was reached until the driver closed that one at the latest;
        // arriving before it is reached, within twice the threshold.
        let out = at(EventKind::OutForDelivery).unwrap();
        assert!(out <= T0 + 120.0, "stop {i}: out at {out}");
        let next = at(EventKind::NextStop).unwrap();
        let before = (s.seq > 0)
            .then(|| &stops[i - 1])
            .filter(|p| p.vehicle == s.vehicle);
        match before.and_then(|p| p.true_arrival.map(|t| (t, t + p.service_s))) {
            Some((reached, left)) => assert!(
                next >= reached - 60.0 && next <= left,
                "stop {i}: next at {next}, the one before reached at {reached}, left at {left}"
            ),
            None => assert_eq!(next, out, "stop {i}: the first is next at once"),
        }
        let arriving = at(EventKind::Arriving).unwrap();
        assert!(
            arriving <= arrival + 30.0 && arriving >= arrival - 2.0 * arriving_s,
            "stop {i}: arriving at {arriving}, truly there at {arrival}"
        );
        let last = mine.last().unwrap();
        assert_eq!(last.time, closed, "stop {i}: closed as the driver left");
    }
    assert!(
        delivered >= 20 && failed >= 4,
        "{delivered} delivered, {failed} failed"
    );
}

/// A new promised window: `rescheduled` with it, and the first three
/// milestones again, in order, as the van comes.
#[test]
fn a_rescheduled_stop_begins_a_new_attempt() {
    let g = town();
    let mut config = FleetConfig {
        shards: 1,
        learning: false,
        ..FleetConfig::default()
    };
    // A stop a few minutes away is not arriving yet.
    config.detect.arriving_s = 60.0;
    let e = Engine::new(g.clone(), config);
    let route = some_route(&g, 41, 2500.0, 4000.0);
    let pings = drive(&g, &route, T0, 10.0, 2.0);
    let far = g.point_on_edge(route.end.edge, route.end.offset_m);
    let mut plan = stop_at(1, far);
    plan.window = Some(TimeWindow {
        start: T0,
        end: T0 + 3600.0,
    });
    let assign = |plan: &StopPlan, t: f64| {
        e.command(
            Command::AssignRoute {
                vehicle: 3,
                stops: vec![plan.clone()],
            },
            t,
            WAIT,
        )
        .unwrap();
    };
    assign(&plan, T0);
    let half = pings.len() / 2;
    feed(&e, 3, &pings[..half]);
    let t = pings[half - 1].time;
    // The same plan again changes nothing; a new window is news.
    assign(&plan, t);
    let later = TimeWindow {
        start: T0 + 7200.0,
        end: T0 + 9000.0,
    };
    plan.window = Some(later);
    assign(&plan, t);
    feed(&e, 3, &pings[half..]);
    let events = all_events(&e);
    let names: Vec<&str> = events
        .iter()
        .filter(|ev| EventKind::MILESTONES.contains(&ev.kind))
        .map(|ev| ev.kind.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "out_for_delivery",
            "next_stop",
            "rescheduled",
            "out_for_delivery",
            "next_stop",
            "arriving"
        ],
        "{events:?}"
    );
    let r = kinds(&events, EventKind::Rescheduled)[0];
    assert_eq!((r.value, r.reference, r.time), (later.start, later.end, t));
}

// ------------------------------------------------------------- commands

#[test]
fn a_stop_reassigned_to_another_vehicle_moves_with_its_eta() {
    let g = town();
    let e = engine(&g, 2, false);
    let ra = some_route(&g, 31, 1000.0, 2000.0);
    let rb = some_route(&g, 32, 1000.0, 2000.0);
    let target = g.point_on_edge(ra.end.edge, ra.end.offset_m);
    e.command(
        Command::AssignRoute {
            vehicle: 1,
            stops: vec![
                stop_at(10, target),
                stop_at(11, g.point_on_edge(rb.end.edge, 0.0)),
            ],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let mut pa = drive(&g, &ra, T0, 10.0, 2.0);
    pa.truncate(3);
    let mut pb = drive(&g, &rb, T0, 10.0, 2.0);
    pb.truncate(3);
    feed(&e, 1, &pa);
    feed(&e, 2, &pb);
    assert!(e.vehicle(1).unwrap().stop(10).unwrap().eta.is_finite());
    e.reassign(10, 2, Some(0), T0 + 10.0).unwrap();
    e.sync();
    let (a, b) = (e.vehicle(1).unwrap(), e.vehicle(2).unwrap());
    assert!(a.stop(10).is_none());
    assert_eq!(a.next_stop, Some(11));
    assert_eq!(b.next_stop, Some(10));
    assert!(b.stop(10).unwrap().eta.is_finite());
    assert_eq!(e.stop(10).unwrap().record.vehicle, 2);
    assert_eq!(e.route(1), vec![11]);
    assert_eq!(e.route(2), vec![10]);
    // Its events now come from the new vehicle: it arrives there.
    let mut rest = drive(&g, &rb, T0, 10.0, 2.0);
    rest.drain(..3);
    let mut router = Router::new(&g, Metric::Time);
    let last = rest.last().unwrap();
    let mut near = Vec::new();
    g.nearest_edges(last.pos, 1, 50.0, &mut near);
    let mut near_t = Vec::new();
    g.nearest_edges(target, 1, 250.0, &mut near_t);
    let onward = router
        .route(
            &[EdgePos {
                edge: near[0].edge,
                offset_m: near[0].offset_m,
            }],
            &[EdgePos {
                edge: near_t[0].edge,
                offset_m: near_t[0].offset_m,
            }],
        )
        .unwrap();
    let mut more = drive(&g, &onward, last.time + 2.0, 10.0, 2.0);
    let end = *more.last().unwrap();
    for k in 1..=5 {
        let mut p = end;
        p.time += 2.0 * k as f64;
        p.speed = Some(0.0);
        more.push(p);
    }
    feed(&e, 2, &rest);
    feed(&e, 2, &more);
    let arrived = kinds(&all_events(&e), EventKind::Arrived);
    assert!(
        arrived
            .iter()
            .any(|ev| ev.stop == Some(10) && ev.vehicle == 2),
        "{arrived:?}"
    );
}

#[test]
fn bad_commands_are_refused_with_a_reason_and_change_nothing() {
    let g = town();
    let e = engine(&g, 1, false);
    let p = g.node_pos(0);
    e.command(
        Command::AssignRoute {
            vehicle: 1,
            stops: vec![stop_at(1, p), stop_at(2, p)],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let cases: Vec<(Command, CommandError)> = vec![
        (
            Command::AssignRoute {
                vehicle: 2,
                stops: vec![stop_at(1, p)],
            },
            CommandError::WrongVehicle {
                stop: 1,
                vehicle: 1,
            },
        ),
        (
            Command::AssignRoute {
                vehicle: 2,
                stops: vec![stop_at(5, p), stop_at(5, p)],
            },
            CommandError::DuplicateStop(5),
        ),
        (
            Command::AddStop {
                vehicle: 2,
                stop: stop_at(2, p),
                index: None,
            },
            CommandError::DuplicateStop(2),
        ),
        (
            Command::AddStop {
                vehicle: 2,
                stop: stop_at(9, LatLon::new(p.lat + 1.0, p.lon)),
                index: None,
            },
            CommandError::OffRoad {
                stop: 9,
                max_m: 250.0,
            },
        ),
        (
            Command::AddStop {
                vehicle: 2,
                stop: stop_at(9, LatLon::new(f64::NAN, p.lon)),
                index: None,
            },
            CommandError::OffRoad {
                stop: 9,
                max_m: 250.0,
            },
        ),
        (
            Command::RemoveStop {
                vehicle: 1,
                stop: 99,
            },
            CommandError::UnknownStop(99),
        ),
        (
            Command::Complete {
                vehicle: 2,
                stop: 1,
                proof: ProofOfDelivery::default(),
            },
            CommandError::WrongVehicle {
                stop: 1,
                vehicle: 1,
            },
        ),
        (
            Command::Reorder {
                vehicle: 1,
                order: vec![2],
            },
            CommandError::BadOrder,
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(e.command(cmd.clone(), T0, WAIT), Err(want), "{cmd:?}");
    }
    assert_eq!(
        e.command(
            Command::RemoveStop {
                vehicle: 1,
                stop: 2
            },
            f64::NAN,
            WAIT
        ),
        Err(CommandError::NotFinite)
    );
    assert_eq!(
        e.reassign(99, 2, None, T0),
        Err(CommandError::UnknownStop(99))
    );
    e.sync();
    assert_eq!(e.route(1), vec![1, 2]);
    assert!(e.route(2).is_empty());
    let snap = e.vehicle(1).unwrap();
    assert_eq!(snap.stops.len(), 2);
    assert_eq!(e.stats().shards.commands_rejected, 0);
    // Garbage pings are counted, never panic, and change nothing.
    let bad = [
        Ping::new(f64::NAN, p),
        Ping::new(T0, LatLon::new(f64::INFINITY, 0.0)),
        Ping::new(T0, LatLon::new(91.0, 0.0)),
    ];
    feed(&e, 1, &bad);
    let stats = e.stats();
    assert_eq!(
        stats
            .shards
            .matcher
            .count(lastmile_engine::MatchStatus::Invalid),
        3
    );
    assert_eq!(e.vehicle(1).unwrap().stops.len(), 2);
}

#[test]
fn a_full_queue_sheds_and_counts_and_loses_nothing_accepted() {
    let g = town();
    let e = Engine::new(
        g.clone(),
        FleetConfig {
            shards: 1,
            queue_capacity: 1,
            learning: false,
            ..FleetConfig::default()
        },
    );
    let base = g.node_pos(10);
    let batch: Vec<(u64, Ping)> = (0..2000u64)
        .map(|i| {
            (
                i,
                Ping::new(T0, LocalPlane::new(base).unproject(0.0, (i % 50) as f64)),
            )
        })
        .collect();
    let mut accepted = 0;
    let mut shed = 0;
    for k in 0..200 {
        let b: Vec<(u64, Ping)> = batch
            .iter()
            .map(|&(v, mut p)| {
                p.time += k as f64;
                (v, p)
            })
            .collect();
        let r = e.submit(&b, Admission::Shed);
        assert_eq!(r.accepted + r.shed, b.len());
        accepted += r.accepted;
        shed += r.shed;
    }
    e.sync();
    let s = e.stats();
    assert!(shed > 0, "a one-batch queue must overflow");
    assert_eq!(s.shed as usize, shed);
    assert!(s.queue_full > 0);
    assert_eq!(s.submitted as usize, accepted);
    assert_eq!(
        s.shards.pings as usize, accepted,
        "everything accepted was processed"
    );
    // Waiting admission never sheds.
    let r = e.submit(&batch, Admission::Wait(Duration::from_secs(30)));
    assert_eq!(r.shed, 0);
}

#[test]
fn the_ping_budget_bounds_a_queue_of_small_batches_and_offer_gives_back_the_rest() {
    let g = town();
    // Room for a thousand batches but only 300 pings.
    let e = Engine::new(
        g.clone(),
        FleetConfig {
            shards: 1,
            queue_capacity: 1000,
            queue_pings: 300,
            learning: false,
            ..FleetConfig::default()
        },
    );
    let base = g.node_pos(10);
    let plane = LocalPlane::new(base);
    let (mut accepted, mut refused_total) = (0usize, 0usize);
    let mut refused = Vec::new();
    for k in 0..400u64 {
        // Batches of 100 pings for 100 vehicles, offered faster than one
        // shard matches them.
        let b: Vec<(u64, Ping)> = (0..100u64)
            .map(|v| {
                (
                    v,
                    Ping::new(T0 + k as f64, plane.unproject(0.0, (v % 50) as f64)),
                )
            })
            .collect();
        refused.clear();
        let n = e.offer(&b, &mut refused);
        assert_eq!(n + refused.len(), b.len());
        // Never more than 300 pings waiting (a batch enters whole or not).
        accepted += n;
        refused_total += refused.len();
    }
    assert!(
        refused_total > 0,
        "a 300-ping budget must refuse some of 40,000 pings"
    );
    e.sync();
    let s = e.stats();
    assert_eq!(s.shed, 0, "offer never sheds: it gives back");
    assert_eq!(s.submitted as usize, accepted);
    assert_eq!(
        s.shards.pings as usize, accepted,
        "everything accepted was processed"
    );
    assert!(s.queue_full > 0);
}

// ---------------------------------------------------------- determinism

#[test]
fn same_events_and_etas_whatever_the_shard_and_partition_counts() {
    let g = town();
    let params = SimParams {
        vehicles: 40,
        duration_s: 2400.0,
        interval_s: 3.0,
        noise_m: 6.0,
        congestion: 0.3,
        seed: 23,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let run = |shards: usize, partitions: usize| {
        let e = Engine::new(
            g.clone(),
            FleetConfig {
                shards,
                partitions,
                learning: true,
                events_capacity: 1 << 20,
                ..FleetConfig::default()
            },
        );
        assign_routes(&e, &day);
        let drive = DriveParams {
            tick_s: 20.0,
            batch: 97,
            drivers: Some(Drivers { fail_every: 4 }),
            ..DriveParams::default()
        };
        feed_day(&e, &day, &drive, &|_| {});
        let mut events = all_events(&e);
        events.sort_by_key(|ev| (ev.vehicle, ev.seq));
        let mut ids = e.vehicle_ids();
        ids.sort_unstable();
        let snaps: Vec<String> = ids
            .iter()
            .map(|&v| format!("{:?}", e.vehicle(v).unwrap()))
            .collect();
        let updates = e.stats().metric_updates;
        (format!("{events:?}"), snaps, updates, events.len())
    };
    let one = run(1, 0);
    assert!(one.2 > 0, "traffic must have changed the metric");
    assert!(one.3 > 200, "{} events", one.3);
    // Shards driving one partition each, or several (a cluster node's
    // fixed partitions), or more partitions than vehicles.
    for (shards, partitions) in [(2, 0), (3, 0), (2, 7), (3, 64)] {
        let other = run(shards, partitions);
        let what = format!("{shards} shards, {partitions} partitions");
        assert!(one.0 == other.0, "events differ with {what}");
        assert_eq!(one.1, other.1, "ETAs differ with {what}");
    }
}

// -------------------------------------------------------------- learning

#[test]
fn traffic_learning_lowers_eta_error_on_a_congested_day() {
    let g = town();
    let params = SimParams {
        vehicles: 150,
        duration_s: 5400.0,
        interval_s: 5.0,
        noise_m: 5.0,
        congestion: 0.3,
        seed: 29,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let run = |learning: bool| {
        let r = lastmile_engine::bench::run_day(
            g.clone(),
            &day,
            FleetConfig {
                shards: 2,
                learning,
                ..FleetConfig::default()
            },
            &DriveParams::default(),
            &|_| {},
        );
        assert_eq!(r.pings as usize, day.pings.len());
        r
    };
    let (off, on) = (run(false), run(true));
    assert!(on.stats.metric_updates > 10);
    for (a, b) in off.eta.iter().zip(&on.eta) {
        eprintln!(
            "{} min: MAE {:.0} s -> {:.0} s ({} samples)",
            a.minutes, a.mae_s, b.mae_s, a.samples
        );
        assert!(a.samples > 100, "{a:?}");
        // Without learning, ETAs trust free flow and come out early.
        // Learning cuts the error by a third at least (it halved it before
        // the calibrated free flow took a part of it away).
        assert!(a.bias_s < 0.0);
        assert!(b.mae_s < 0.67 * a.mae_s, "{a:?} vs {b:?}");
    }
}
