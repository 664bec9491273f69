//! The driver behind `lastmile eta-eval`: real trips through the whole
//! engine, learning from one half and judged on the other.
//!
//! Each trip is a vehicle whose route is one stop where the trip ended,
//! assigned just before its first ping; its pings go in in event time, and
//! the driver completes the stop at the last one (as a driver's app would
//! when the passenger is dropped or the parcel handed over). Every
//! `every`-th ping of a test trip (not the last), the driver reads the
//! stop's ETA and window from the vehicle's snapshot, exactly as a client
//! would, and sets it beside the time the trip really took from there.
//!
//! Phase one feeds the learning half with learning on (traffic and ETA
//! errors). Phase two feeds the test half, its times shifted by whole weeks
//! to after phase one (time of day and weekday kept), with the learning of
//! ETA errors off: the windows are those learnt from the other half. Live
//! traffic is learnt on in both, as in service (what the fleet drives now,
//! within the last quarter hour; trips weeks apart share none of it).

use std::sync::Arc;

use lastmile_roadgraph::Graph;

use crate::eta_score::Prediction;
use crate::fleet::{Admission, Command, Engine, FleetConfig, ProofOfDelivery, StopPlan};
use crate::trips::{Half, Trip};

/// How trips are replayed.
#[derive(Clone, Copy, Debug)]
pub struct TripParams {
    /// Sample every this-many-th ping of a test trip.
    pub every: usize,
    /// Event seconds between engine ticks (learning, publication).
    pub tick_s: f64,
    /// Learn from the learning half first; `false` judges the engine as it
    /// comes (free flow and the prior window).
    pub learn: bool,
    /// Learn from the half otherwise judged, and judge the other: the
    /// second fold of the two, to see that a figure is not one split's.
    pub swap: bool,
}

impl Default for TripParams {
    fn default() -> Self {
        Self {
            every: 4,
            tick_s: 60.0,
            learn: true,
            swap: false,
        }
    }
}

/// One sampled estimate of a test trip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TripPrediction {
    /// Index of the trip in the input.
    pub trip: usize,
    /// Index of the ping it was made at.
    pub ping: usize,
    pub prediction: Prediction,
    /// Whether the trip mostly moves (see [`Trip::mostly_moves`]).
    pub moving: bool,
}

/// What a replay saw.
#[derive(Clone, Debug, Default)]
pub struct TripsReport {
    pub learn_trips: usize,
    pub test_trips: usize,
    pub pings: u64,
    /// ETA outcomes the engine learnt (phase one).
    pub outcomes_learnt: u64,
    /// What phase one taught the windows of vehicles moving (`[0]`) and
    /// standing (`[1]`): per horizon class, its centre (routed seconds to
    /// go), the P10, P50 and P90 ratio of actual to routed time, and the
    /// outcomes it weighs (see [`crate::fleet::ErrorModel::ratios`]).
    pub ratios: [Vec<(f64, [f64; 3], f64)>; 2],
    /// Sampling points where the engine had no ETA (never placed on a road,
    /// or the destination was unreachable).
    pub no_eta: usize,
    pub predictions: Vec<TripPrediction>,
}

const WEEK_S: f64 = 7.0 * 86_400.0;

/// Replays `trips` (see the module documentation). `progress` gets the
/// pings done.
pub fn replay_trips(
    graph: Arc<Graph>,
    config: FleetConfig,
    trips: &[Trip],
    params: &TripParams,
    progress: &dyn Fn(u64),
) -> TripsReport {
    let engine = Engine::new(graph, config);
    let (learn, test): (Vec<usize>, Vec<usize>) =
        (0..trips.len()).partition(|&i| (trips[i].half() == Half::Learn) != params.swap);
    let mut report = TripsReport {
        learn_trips: learn.len(),
        test_trips: test.len(),
        ..TripsReport::default()
    };
    let mut done = 0u64;
    let mut count = |n: u64| {
        done += n;
        progress(done);
    };
    let mut end = f64::NEG_INFINITY;
    if params.learn {
        end = run_phase(&engine, trips, &learn, 0.0, params, None, &mut count);
        // One more tick, far enough on that what was learnt is published.
        let publish_at = end + engine.config().traffic_every_s + params.tick_s;
        engine.tick(publish_at);
        engine.sync();
        end = publish_at;
        report.outcomes_learnt = engine.stats().eta_outcomes;
        report.ratios = [
            engine.learnt_ratios(0, false),
            engine.learnt_ratios(0, true),
        ];
    }
    engine.set_window_learning(false);
    let test_start = test
        .iter()
        .map(|&i| trips[i].start())
        .fold(f64::INFINITY, f64::min);
    let shift = if end > test_start {
        ((end - test_start) / WEEK_S).floor() * WEEK_S + WEEK_S
    } else {
        0.0
    };
    let mut sampled = Sampled::default();
    run_phase(
        &engine,
        trips,
        &test,
        shift,
        params,
        Some(&mut sampled),
        &mut count,
    );
    report.pings = done;
    report.no_eta = sampled.no_eta;
    report.predictions = sampled.predictions;
    report
}

#[derive(Default)]
struct Sampled {
    predictions: Vec<TripPrediction>,
    no_eta: usize,
}

#[derive(Clone, Copy)]
enum Step {
    Assign,
    Ping(usize),
    Complete,
}

/// Feeds the trips `which` (indices into `trips`), times moved by `shift`;
/// samples ETAs into `sampled` when given. Returns the last event time.
fn run_phase(
    engine: &Engine,
    trips: &[Trip],
    which: &[usize],
    shift: f64,
    params: &TripParams,
    mut sampled: Option<&mut Sampled>,
    count: &mut dyn FnMut(u64),
) -> f64 {
    let wait = Admission::Wait(std::time::Duration::from_secs(3600));
    let mut steps: Vec<(f64, usize, Step)> = Vec::new();
    for &i in which {
        let t = &trips[i];
        steps.push((t.start() + shift - 1.0, i, Step::Assign));
        for (k, p) in t.pings.iter().enumerate() {
            steps.push((p.time + shift, i, Step::Ping(k)));
        }
        steps.push((t.end() + shift, i, Step::Complete));
    }
    // Stable: a trip's completion stays after its last ping.
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next_tick = f64::NEG_INFINITY;
    let mut last = f64::NEG_INFINITY;
    for (time, i, step) in steps {
        if time >= next_tick {
            engine.tick(time);
            next_tick = time + params.tick_s;
        }
        last = time;
        let (vehicle, stop) = (i as u64 + 1, i as u64 + 1);
        let trip = &trips[i];
        match step {
            Step::Assign => {
                let cmd = Command::AssignRoute {
                    vehicle,
                    stops: vec![StopPlan::new(stop, trip.destination())],
                };
                // Refused only when no road is near the destination: the
                // trip then has no ETA, and is counted as such.
                let _ = engine.command(cmd, time, wait);
            }
            Step::Ping(k) => {
                let mut ping = trip.pings[k];
                ping.time += shift;
                engine.submit(&[(vehicle, ping)], wait);
                count(1);
                let sample = k % params.every.max(1) == 0 && k + 1 < trip.pings.len();
                if let (Some(out), true) = (sampled.as_deref_mut(), sample) {
                    engine.sync();
                    let eta = engine
                        .with_vehicle(vehicle, |v| v.stop(stop).copied())
                        .flatten()
                        .filter(|s| !s.status.is_closed() && s.eta.is_finite());
                    match eta {
                        Some(s) => out.predictions.push(TripPrediction {
                            trip: i,
                            ping: k,
                            // An arrived stop's times are its arrival:
                            // nothing left to go.
                            prediction: Prediction {
                                actual_s: trip.end() + shift - ping.time,
                                p10_s: (s.eta_p10 - ping.time).max(0.0),
                                p50_s: (s.eta - ping.time).max(0.0),
                                p90_s: (s.eta_p90 - ping.time).max(0.0),
                            },
                            moving: trip.mostly_moves(),
                        }),
                        None => out.no_eta += 1,
                    }
                }
            }
            Step::Complete => {
                let cmd = Command::Complete {
                    vehicle,
                    stop,
                    proof: ProofOfDelivery::default(),
                };
                let _ = engine.command(cmd, time, wait);
            }
        }
    }
    engine.sync();
    last
}
