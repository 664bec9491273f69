//! Arrival windows and risk, through the whole engine: on a simulated day
//! whose seed and congestion no tuning saw, the P10–P90 window holds the
//! true arrival four times in five and the P50 is above and below it about
//! equally often; on a constructed drive that slips, `at_risk` comes
//! before `late`, and a new window clears both.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lastmile_engine::Ping;
use lastmile_engine::bench::{Day, DriveParams, run_day};
use lastmile_engine::fleet::{
    Admission, Command, Engine, EventFilter, EventKind, FleetConfig, StopPlan, TimeWindow,
};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::{EdgePos, Graph, Metric, Router};

const WAIT: Admission = Admission::Wait(Duration::from_secs(60));
const T0: f64 = 1_767_225_600.0;

fn town() -> Arc<Graph> {
    Arc::new(Graph::from_data(&common::town().to_data()))
}

/// Fixed when this test was written, not read off what the code gives.
const COVERAGE: std::ops::RangeInclusive<f64> = 0.74..=0.86;
const BALANCE: std::ops::RangeInclusive<f64> = 0.40..=0.60;

#[test]
fn windows_are_calibrated_on_a_day_no_tuning_saw() {
    let g = town();
    // Seed and congestion used nowhere else (the tuning ran on the bench's
    // city with seeds 1 to 3 and congestion 0.15).
    let params = SimParams {
        vehicles: 200,
        duration_s: 7200.0,
        interval_s: 5.0,
        noise_m: 5.0,
        congestion: 0.22,
        seed: 9173,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let config = FleetConfig {
        shards: 2,
        ..FleetConfig::default()
    };
    let r = run_day(g, &day, config, &DriveParams::default(), &|_| {});
    assert!(
        r.stats.eta_outcomes > 1000,
        "{} outcomes",
        r.stats.eta_outcomes
    );
    for h in &r.eta {
        let s = &h.score;
        eprintln!(
            "{} min: {} samples, P10-P90 holds {:.3} (below {:.3}, above {:.3}), P50 low {:.3}, width {:.0} s (fixed band {:.0} s), MAE {:.0} s",
            h.minutes,
            h.samples,
            s.coverage,
            s.below_p10,
            s.above_p90,
            s.p50_too_low,
            s.width_s,
            s.fixed_band_width_s,
            s.mae_s
        );
    }
    for h in &r.eta {
        let s = &h.score;
        assert!(h.samples > 300, "{h:?}");
        assert!(COVERAGE.contains(&s.coverage), "{} min: {s:?}", h.minutes);
        assert!(BALANCE.contains(&s.p50_too_low), "{} min: {s:?}", h.minutes);
    }
}

#[test]
fn at_risk_comes_before_late_and_a_new_window_clears_both() {
    let g = town();
    // A route of a few kilometres on the main network.
    let mut router = Router::new(&g, Metric::Time);
    let main: Vec<u32> = (0..g.num_edges() as u32)
        .filter(|&e| g.edge_in_component(e, 0) && g.length_m(e) > 50.0)
        .collect();
    let route = main
        .iter()
        .step_by(97)
        .flat_map(|&a| main.iter().rev().step_by(89).map(move |&b| (a, b)))
        .find_map(|(a, b)| {
            let at = |e: u32| EdgePos {
                edge: e,
                offset_m: 0.0,
            };
            let r = router.route(
                &[at(a)],
                &[EdgePos {
                    edge: b,
                    offset_m: g.length_m(b),
                }],
            )?;
            (r.duration_s > 300.0 && r.duration_s < 900.0).then_some(r)
        })
        .expect("a route of 5 to 15 minutes");
    let free_flow = route.duration_s;
    let speed = route.distance_m / free_flow;
    let stop = g.point_on_edge(*route.edges.last().unwrap(), route.end.offset_m);
    // Promised with 30% to spare over free flow; the van drives at half
    // the speed, so it slips past the promise well before it gets there.
    let window = TimeWindow {
        start: T0,
        end: T0 + 1.3 * free_flow,
    };
    let e = Engine::new(
        g.clone(),
        FleetConfig {
            shards: 1,
            learning: false,
            ..FleetConfig::default()
        },
    );
    let plan = StopPlan {
        window: Some(window),
        ..StopPlan::new(1, stop)
    };
    e.command(
        Command::AssignRoute {
            vehicle: 7,
            stops: vec![plan.clone()],
        },
        T0,
        WAIT,
    )
    .unwrap();
    let pings = common::drive(&g, &route, T0, 0.5 * speed, 5.0);
    let half = pings.len() * 3 / 4;
    let batch: Vec<(u64, Ping)> = pings[..half].iter().map(|&p| (7, p)).collect();
    e.submit(&batch, WAIT);
    e.sync();
    let events = read_all(&e);
    let first = |kind: EventKind| events.iter().find(|ev| ev.kind == kind).copied();
    let risk = first(EventKind::AtRisk).expect("at_risk");
    let late = first(EventKind::Late).expect("late");
    assert_eq!((risk.stop, late.stop), (Some(1), Some(1)));
    assert!(
        risk.time + 30.0 <= late.time,
        "at_risk at {} s, late at {} s",
        risk.time - T0,
        late.time - T0
    );
    assert!((0.3..=1.0).contains(&risk.value), "{risk:?}");
    assert_eq!(risk.reference, window.end);
    // The window is the one the ETA comes with, and the snapshot says so.
    let snap = e.vehicle(7).unwrap();
    let s = snap.stop(1).unwrap();
    assert!(s.at_risk && s.late);
    assert!(s.eta_p10 < s.eta && s.eta < s.eta_p90, "{s:?}");
    let (lo, hi) = late.eta_window().expect("late carries the ETA's window");
    assert!(lo < late.value && late.value < hi);
    // The dispatcher promises an hour more: back on time, risk cleared.
    let later = TimeWindow {
        start: T0,
        end: window.end + 3600.0,
    };
    let t = pings[half - 1].time;
    e.command(
        Command::AssignRoute {
            vehicle: 7,
            stops: vec![StopPlan {
                window: Some(later),
                ..plan
            }],
        },
        t,
        WAIT,
    )
    .unwrap();
    e.sync();
    let events = read_all(&e);
    let cleared = events
        .iter()
        .filter(|ev| ev.kind == EventKind::RiskCleared)
        .count();
    assert_eq!(cleared, 1, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|ev| ev.kind == EventKind::AtRisk)
            .count(),
        1
    );
    assert!(!e.vehicle(7).unwrap().stop(1).unwrap().at_risk);
}

fn read_all(e: &Engine) -> Vec<lastmile_engine::fleet::Event> {
    let (mut cursor, mut out) = (0, Vec::new());
    e.events()
        .read(&mut cursor, &EventFilter::default(), usize::MAX, &mut out);
    out.into_iter().map(|(_, ev)| ev).collect()
}
