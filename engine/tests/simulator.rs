//! The trace simulator: deterministic from its seed, ground truth that is
//! true (each true position lies on its true way), noise of the requested
//! size, tours whose stops are reached, and hidden congestion that slows the
//! fleet without appearing anywhere in the trace.

mod common;

use lastmile_engine::simulate::{SimParams, SimSummary, simulate};
use lastmile_roadgraph::geo::haversine_m;

fn run(params: &SimParams) -> (Vec<u8>, SimSummary) {
    let mut csv = Vec::new();
    let summary = simulate(common::town(), params, &mut csv, &|_| {}).unwrap();
    (csv, summary)
}

fn params(congestion: f64) -> SimParams {
    SimParams {
        vehicles: 12,
        duration_s: 3600.0,
        interval_s: 2.0,
        noise_m: 8.0,
        seed: 5,
        congestion,
        ..SimParams::default()
    }
}

#[test]
fn same_seed_same_bytes() {
    assert_eq!(run(&params(0.2)).0, run(&params(0.2)).0);
    assert_ne!(
        run(&params(0.2)).0,
        run(&SimParams {
            seed: 6,
            ..params(0.2)
        })
        .0
    );
}

#[test]
fn ground_truth_is_true_and_noise_is_as_asked() {
    let g = common::town();
    let (csv, summary) = run(&params(0.0));
    let trace = lastmile_engine::trace::read_csv(csv.as_slice()).unwrap();
    assert_eq!(trace.rows.len() as u64, summary.pings);
    let mut near = Vec::new();
    let mut offsets = Vec::new();
    for r in &trace.rows {
        let t = r.truth.unwrap();
        g.edges_within(t.pos, 1.0, &mut near);
        assert!(
            near.iter().any(|c| g.way_id(c.edge) == t.way_id),
            "truth off its way: {r:?}"
        );
        offsets.push(haversine_m(r.ping.pos, t.pos));
    }
    // Outliers aside, 2-D Gaussian noise of 8 m per axis: median distance 8·1.1774.
    let median = lastmile_engine::evaluate::percentile(&offsets, 0.5);
    assert!((median - 9.42).abs() < 0.6, "median noise {median}");
    assert!(
        summary
            .stops
            .iter()
            .filter(|s| s.true_arrival.is_some())
            .count()
            >= 12
    );
    assert!(summary.outliers > 0 && summary.dropped > 0);
}

#[test]
fn hidden_congestion_slows_the_fleet() {
    let (free_csv, free) = run(&params(0.0));
    let (slow_csv, slow) = run(&params(0.4));
    assert_eq!(free.congested_edges, 0);
    let share = slow.congested_edges as f64 / common::town().num_edges() as f64;
    assert!((share - 0.4).abs() < 0.01, "{share}");
    // Same plan, same columns: nothing in the trace says which edges are slow.
    assert_eq!(free.stops.len(), slow.stops.len());
    let header = |c: &[u8]| c.split(|&b| b == b'\n').next().unwrap().to_vec();
    assert_eq!(header(&free_csv), header(&slow_csv));
    assert!(
        slow.driven_m < 0.95 * free.driven_m,
        "{} vs {}",
        slow.driven_m,
        free.driven_m
    );
    let lateness = |s: &SimSummary| {
        let done: Vec<f64> = s
            .stops
            .iter()
            .filter_map(|x| x.true_arrival.map(|t| t - x.window_start))
            .collect();
        done.iter().sum::<f64>() / done.len() as f64
    };
    assert!(lateness(&slow) > lateness(&free) + 60.0);
}
