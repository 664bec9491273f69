//! Traffic learning from the fleet: pieces joined into edge traversals with
//! standing time left out; on a simulated day with hidden congestion, the
//! edges that are really slow come out slow and the others do not; and the
//! learnt speeds fade back to free flow once nobody drives there.

mod common;

use lastmile_engine::evaluate::{match_trace, percentile};
use lastmile_engine::simulate::{SimParams, simulate};
use lastmile_engine::trace::read_csv;
use lastmile_engine::traffic::{
    EdgeObservation, TrafficConfig, TrafficModel, TraversalAccumulator,
};
use lastmile_engine::{MatcherConfig, Traversal};

fn piece(edge: u32, from_m: f64, to_m: f64, t_start: f64, t_end: f64) -> Traversal {
    Traversal {
        edge,
        from_m,
        to_m,
        t_start,
        t_end,
    }
}

#[test]
fn pieces_join_into_traversals_without_standing_time() {
    let config = TrafficConfig::default();
    let mut acc = TraversalAccumulator::default();
    let mut out = Vec::new();
    acc.push(&piece(7, 0.0, 40.0, 0.0, 4.0), &config, &mut out);
    // Parked for five minutes, 1 m of jitter: not part of the speed.
    acc.push(&piece(7, 40.0, 41.0, 4.0, 304.0), &config, &mut out);
    // A 20 s wait at a light (no pieces while standing) is.
    acc.push(&piece(7, 41.0, 100.0, 324.0, 330.0), &config, &mut out);
    assert!(out.is_empty());
    acc.push(&piece(8, 0.0, 10.0, 330.0, 331.0), &config, &mut out);
    assert_eq!(out.len(), 1);
    let o = out[0];
    assert_eq!((o.edge, o.time), (7, 330.0));
    assert!(
        (o.metres - 99.0).abs() < 1e-9 && (o.seconds - 30.0).abs() < 1e-9,
        "{o:?}"
    );
    acc.close(&mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn congestion_is_learnt_and_forgotten() {
    let g = common::town();
    let params = SimParams {
        vehicles: 80,
        duration_s: 2.0 * 3600.0,
        interval_s: 1.0,
        noise_m: 5.0,
        seed: 9,
        congestion: 0.3,
        ..SimParams::default()
    };
    let mut csv = Vec::new();
    let summary = simulate(g, &params, &mut csv, &|_| {}).unwrap();
    let trace = read_csv(csv.as_slice()).unwrap();
    let m = match_trace(g, &MatcherConfig::default(), &trace);

    let config = TrafficConfig {
        memory_s: 3600.0,
        ..TrafficConfig::default()
    };
    let mut observations: Vec<EdgeObservation> = Vec::new();
    for path in &m.paths {
        let mut acc = TraversalAccumulator::default();
        for t in path {
            acc.push(t, &config, &mut observations);
        }
        acc.close(&mut observations);
    }
    observations.sort_by(|a, b| a.time.total_cmp(&b.time));
    let mut model = TrafficModel::new(g, config);
    for o in &observations {
        model.observe(g, o);
    }
    let end = params.start_time + params.duration_s;
    let mut changes = Vec::new();
    model.changes(g, end, &mut changes);
    assert!(
        !changes.is_empty() && model.observations > 1000,
        "{} observations",
        model.observations
    );

    // Learnt speed over free-flow speed, on every edge the fleet drove often
    // enough to speak for itself (the others lean on their grid cell).
    let mut seen = vec![0u32; g.num_edges()];
    for o in &observations {
        seen[o.edge as usize] += 1;
    }
    let (mut slow, mut free) = (Vec::new(), Vec::new());
    for e in 0..g.num_edges() as u32 {
        let ms = model.travel_time_ms(g, e, end);
        if seen[e as usize] < 5 {
            continue;
        }
        let ratio = f64::from(g.travel_time_ms(e)) / f64::from(ms);
        if summary.slowdown[e as usize] < 1.0 {
            slow.push(ratio);
        } else {
            free.push(ratio);
        }
    }
    let (ms, mf) = (percentile(&slow, 0.5), percentile(&free, 0.5));
    eprintln!(
        "{} changed edges; learnt: congested median speed factor {ms:.2} ({}), free-flowing {mf:.2} ({})",
        changes.len(),
        slow.len(),
        free.len()
    );
    // The simulated drivers run at about 0.85 of free flow; congestion
    // halves that on the slowed edges.
    assert!(
        slow.len() > 20 && ms < 0.6,
        "congested edges learnt at {ms}"
    );
    assert!(
        (0.6..1.1).contains(&mf) || free.len() < 20,
        "free-flowing edges learnt at {mf}"
    );
    assert!(ms < 0.75 * mf);

    // Five time constants later, with nobody driving, everything is free flow again.
    let published = changes.len();
    model.changes(g, end + 5.0 * 3600.0, &mut changes);
    assert!(changes.iter().all(|&(e, ms)| ms == g.travel_time_ms(e)));
    assert!(!changes.is_empty() && changes.len() <= published);
    assert_eq!(model.tracked(), 0);
    // Nothing left to publish.
    model.changes(g, end + 6.0 * 3600.0, &mut changes);
    assert!(changes.is_empty());
}

#[test]
fn absurd_observations_are_rejected_and_counted() {
    let g = common::town();
    let mut model = TrafficModel::new(g, TrafficConfig::default());
    let e = 0;
    let len = g.length_m(e);
    let good = EdgeObservation {
        edge: e,
        metres: len,
        seconds: 10.0,
        time: 100.0,
    };
    for bad in [
        EdgeObservation {
            edge: u32::MAX,
            ..good
        },
        EdgeObservation {
            metres: f64::NAN,
            ..good
        },
        EdgeObservation {
            seconds: 0.0,
            ..good
        },
        EdgeObservation {
            seconds: f64::INFINITY,
            ..good
        },
        EdgeObservation {
            time: f64::NAN,
            ..good
        },
        EdgeObservation {
            metres: 0.1 * len,
            ..good
        }, // too little of the edge
    ] {
        model.observe(g, &bad);
    }
    assert_eq!((model.observations, model.rejected), (0, 6));
    assert_eq!(model.travel_time_ms(g, e, 100.0), g.travel_time_ms(e));
    // An absurd speed is kept within bounds of free flow.
    for i in 0..5 {
        model.observe(
            g,
            &EdgeObservation {
                seconds: 1e-6,
                time: 100.0 + f64::from(i),
                ..good
            },
        );
    }
    let ms = model.travel_time_ms(g, e, 105.0);
    assert!(ms >= g.travel_time_ms(e) / 4 - 1, "{ms}");
}
