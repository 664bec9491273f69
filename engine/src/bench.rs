//! The pipeline driver behind `lastmile bench`: a simulated delivery day
//! (routes with time windows, hidden congestion, ground-truth arrivals) fed
//! through the whole engine in process as fast as it takes it, with the
//! figures that matter: sustained pings per second, latency from a ping
//! being accepted to its ETAs being updated, memory per vehicle, and ETA
//! error against the true arrivals at fixed horizons before them.
//!
//! The day is simulated into memory first, so the measurement is the
//! engine's work only. Pings go in in time order, in batches; every
//! `tick_s` of trace time the driver ticks the engine (traffic learning,
//! offline checks; a barrier) and samples the ETA of every stop whose true
//! arrival is one of the horizons away.

use std::sync::Arc;
use std::time::Instant;

use lastmile_roadgraph::Graph;
use lastmile_roadgraph::geo::haversine_m;

use crate::Ping;
use crate::eta_score::{Prediction, Score};
use crate::fleet::{
    Admission, Command, Engine, EngineStats, FleetConfig, ProofOfDelivery, StopPlan, TimeWindow,
};
use crate::foretold::{Foretold, Watch, foretold};
use crate::simulate::{SimParams, SimStop, SimSummary, simulate_pings};
use crate::zones::{Outline, ZoneDef, ZoneKind};

/// Minutes before the true arrival at which ETAs are scored.
pub const HORIZONS_MIN: [u32; 3] = [5, 15, 30];

/// A simulated day held in memory.
pub struct Day {
    /// `(vehicle index, ping)` in time order.
    pub pings: Vec<(u64, Ping)>,
    pub summary: SimSummary,
    pub start_time: f64,
    /// Zones the fleet has drawn before the day starts (none unless set;
    /// see [`yards`]).
    pub zones: Vec<ZoneDef>,
    /// Per vehicle index: metres it truly drove, and the sum of the jumps
    /// between its GPS fixes (what an odometer without a map counts).
    pub true_driven_m: Vec<f64>,
    pub gps_jumps_m: Vec<f64>,
}

impl Day {
    pub fn simulate(graph: &Graph, params: &SimParams, progress: &dyn Fn(f64)) -> Self {
        let mut pings = Vec::new();
        let mut true_driven_m = vec![0.0; params.vehicles];
        let mut gps_jumps_m = vec![0.0; params.vehicles];
        let mut last_fix = vec![None; params.vehicles];
        let summary = simulate_pings(graph, params, progress, &mut |p| {
            let v = p.vehicle as usize;
            pings.push((u64::from(p.vehicle), p.ping));
            true_driven_m[v] = p.true_driven_m;
            if p.ping.pos.is_valid()
                && let Some(before) = last_fix[v].replace(p.ping.pos)
            {
                gps_jumps_m[v] += haversine_m(before, p.ping.pos);
            }
        });
        Self {
            pings,
            summary,
            start_time: params.start_time,
            zones: Vec::new(),
            true_driven_m,
            gps_jumps_m,
        }
    }

    pub fn stops(&self) -> &[SimStop] {
        &self.summary.stops
    }

    /// The vehicle index of a simulated stop (`veh-00042` → 42).
    pub fn vehicle_of(s: &SimStop) -> u64 {
        s.vehicle
            .trim_start_matches("veh-")
            .parse()
            .unwrap_or(u64::MAX)
    }

    /// Each vehicle's route, as the dispatcher's commands.
    pub fn routes(&self) -> Vec<Command> {
        let mut routes: Vec<Command> = Vec::new();
        for (i, s) in self.stops().iter().enumerate() {
            let vehicle = Self::vehicle_of(s);
            let plan = StopPlan {
                id: i as u64,
                pos: s.pos,
                window: Some(TimeWindow {
                    start: s.window_start,
                    end: s.window_end,
                }),
                service_s: s.service_s,
                customer_ref: None,
            };
            match routes.last_mut() {
                Some(Command::AssignRoute { vehicle: v, stops }) if *v == vehicle => {
                    stops.push(plan)
                }
                _ => routes.push(Command::AssignRoute {
                    vehicle,
                    stops: vec![plan],
                }),
            }
        }
        routes
    }
}

/// ETA error at one horizon.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HorizonError {
    pub minutes: u32,
    pub samples: usize,
    /// Mean absolute error, seconds.
    pub mae_s: f64,
    /// Mean absolute error over the time still to go.
    pub mape: f64,
    /// Mean signed error (ETA − truth), seconds: negative means optimistic.
    pub bias_s: f64,
    /// The P50 and window figures (see [`Score`]): coverage of P10–P90,
    /// share of P50s below the truth, mean width, pinball loss.
    pub score: Score,
}

/// What one run of the day measured.
#[derive(Clone, Debug, Default)]
pub struct DayReport {
    pub vehicles: usize,
    pub shards: usize,
    pub learning: bool,
    pub pings: u64,
    /// Wall time of the streaming phase (routes assigned beforehand).
    pub seconds: f64,
    pub pings_per_s: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub bytes_per_vehicle: f64,
    /// Wall time to assign every vehicle its route (snapping, legs).
    pub assign_s: f64,
    pub eta: Vec<HorizonError>,
    pub stats: EngineStats,
    /// The learnt ratios of actual to routed time per horizon class (see
    /// [`crate::fleet::ErrorModel::ratios`]).
    pub ratios: Vec<(f64, [f64; 3], f64)>,
    /// How `late` and `at_risk` foretold the true lateness, and the
    /// events the bench fell too far behind to read (then they are short).
    pub late: Foretold,
    pub at_risk: Foretold,
    pub events_lost: u64,
    pub odometer: OdometerError,
}

/// The lifetime odometer against the distance truly driven, over the
/// vehicles that drove at least a kilometre: quantiles of the ratio, and
/// the median ratio of the GPS jumps' sum for comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OdometerError {
    pub vehicles: usize,
    pub ratio_p10: f64,
    pub ratio_p50: f64,
    pub ratio_p90: f64,
    pub gps_jumps_p50: f64,
}

impl OdometerError {
    fn measure(engine: &Engine, day: &Day) -> Self {
        let mut ratios = Vec::new();
        let mut jumps = Vec::new();
        for (v, &truth) in day.true_driven_m.iter().enumerate() {
            if truth < 1000.0 {
                continue;
            }
            if let Some(s) = engine.vehicle(v as u64) {
                ratios.push(s.lifetime_m / truth);
                jumps.push(day.gps_jumps_m[v] / truth);
            }
        }
        ratios.sort_by(f64::total_cmp);
        jumps.sort_by(f64::total_cmp);
        let q = |v: &[f64], p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            vehicles: ratios.len(),
            ratio_p10: q(&ratios, 0.1),
            ratio_p50: q(&ratios, 0.5),
            ratio_p90: q(&ratios, 0.9),
            gps_jumps_p50: q(&jumps, 0.5),
        }
    }
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct DriveParams {
    /// Trace seconds between engine ticks.
    pub tick_s: f64,
    /// Pings per submitted batch.
    pub batch: usize,
    /// Offered load, pings per wall-clock second (`None`: as fast as the
    /// engine takes them). Latency is measured under a paced load below
    /// capacity; at saturation it only measures the queue.
    pub rate: Option<f64>,
    /// Feed only the first this many pings of the day.
    pub max_pings: Option<usize>,
    /// Latency recorded before this many pings is forgotten: the day's
    /// start routes every vehicle's first leg at once, a burst no steady
    /// state has.
    pub warmup_pings: usize,
    /// Drivers close the stops, as their app does: each stop the simulated
    /// vehicle reached is completed as it leaves (true arrival + service),
    /// every `n`-th of them failed instead; `None`: nobody closes stops.
    pub drivers: Option<Drivers>,
}

/// How simulated drivers close their stops (see [`DriveParams::drivers`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drivers {
    /// Every this-many-th reached stop fails ("nobody home"); 0: none.
    pub fail_every: usize,
}

impl Drivers {
    /// Why a driver fails a stop.
    pub const REASON: &str = "nobody home";

    /// The drivers' commands over the day, in time order: `(time, command)`.
    pub fn commands(&self, day: &Day) -> Vec<(f64, Command)> {
        let mut out: Vec<(f64, Command)> = Vec::new();
        let reached = day
            .stops()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.true_arrival.map(|t| (i, s, t)));
        for (k, (i, s, arrival)) in reached.enumerate() {
            let (vehicle, stop) = (Day::vehicle_of(s), i as u64);
            let cmd = if self.fail_every > 0 && (k + 1) % self.fail_every == 0 {
                Command::Fail {
                    vehicle,
                    stop,
                    reason: Self::REASON.into(),
                }
            } else {
                Command::Complete {
                    vehicle,
                    stop,
                    proof: ProofOfDelivery::default(),
                }
            };
            out.push((arrival + s.service_s, cmd));
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

impl Default for DriveParams {
    fn default() -> Self {
        Self {
            tick_s: 30.0,
            batch: 512,
            rate: None,
            max_pings: None,
            warmup_pings: 0,
            drivers: None,
        }
    }
}

/// What feeding a day measured.
#[derive(Clone, Debug, Default)]
pub struct Fed {
    pub pings: u64,
    /// Wall time of the feeding.
    pub seconds: f64,
    /// ETA samples per horizon, as times to go from the sample time.
    pub errors: Vec<Vec<Prediction>>,
    /// How `late` and `at_risk` foretold the true lateness (see
    /// [`crate::foretold`]), and events the bench could not read in time.
    pub late: Foretold,
    pub at_risk: Foretold,
    pub events_lost: u64,
}

/// Assigns every vehicle its route (at the day's start).
pub fn assign_routes(engine: &Engine, day: &Day) {
    let wait = Admission::Wait(std::time::Duration::from_secs(3600));
    for cmd in day.routes() {
        // A stop the simulator placed is always on a road; a refusal here
        // would be a bug worth seeing.
        engine
            .command(cmd, day.start_time - 1.0, wait)
            .expect("simulated routes are valid");
    }
    engine.sync();
}

/// Feeds the day's pings in time order, ticking every `tick_s` of trace
/// time and sampling the ETAs of stops at the horizons before their true
/// arrival. `progress` gets the pings done.
pub fn feed_day(engine: &Engine, day: &Day, drive: &DriveParams, progress: &dyn Fn(u64)) -> Fed {
    // Sample times: (time, stop index, true arrival, horizon index), sorted.
    let mut samples: Vec<(f64, usize, f64, usize)> = Vec::new();
    for (i, s) in day.stops().iter().enumerate() {
        if let Some(arrival) = s.true_arrival {
            for (h, m) in HORIZONS_MIN.iter().enumerate() {
                let t = arrival - f64::from(*m) * 60.0;
                if t > day.start_time {
                    samples.push((t, i, arrival, h));
                }
            }
        }
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut errors: Vec<Vec<Prediction>> = vec![Vec::new(); HORIZONS_MIN.len()];
    let mut watch = Watch::default();
    let mut next_sample = 0;
    let stops = day.stops();
    // Paced, ticks run beside the feeding, as a server's timer does (the
    // feeding must not stall while a tick waits for a customization).
    let (ticks_tx, ticks_rx) = crossbeam_channel::bounded::<f64>(1024);
    let paced = drive.rate.is_some();
    // `tick(NaN)` says the feeding is over.
    let mut tick = |t: f64| {
        if paced {
            let _ = ticks_tx.send(t);
            return;
        }
        if t.is_nan() {
            return;
        }
        engine.tick(t);
        engine.refresh_index(t);
        watch.drain(engine.events());
        while next_sample < samples.len() && samples[next_sample].0 <= t {
            let (_, i, arrival, h) = samples[next_sample];
            next_sample += 1;
            let vehicle = Day::vehicle_of(&stops[i]);
            let eta = engine
                .with_vehicle(vehicle, |v| {
                    v.stop(i as u64)
                        .filter(|s| s.status.is_remaining() && s.eta.is_finite())
                        .copied()
                })
                .flatten();
            if let Some(s) = eta {
                errors[h].push(Prediction {
                    actual_s: arrival - t,
                    p10_s: s.eta_p10 - t,
                    p50_s: s.eta - t,
                    p90_s: s.eta_p90 - t,
                });
            }
        }
    };

    let fed = std::thread::scope(|scope| {
        if paced {
            scope.spawn(move || {
                crate::fleet::background_priority();
                for t in ticks_rx.iter().take_while(|t| !t.is_nan()) {
                    engine.tick(t);
                    engine.refresh_index(t);
                }
            });
        }
        feed(engine, day, drive, progress, &mut tick)
    });
    engine.sync();
    watch.drain(engine.events());
    let (late, at_risk) = foretold(&watch, day.stops());
    Fed {
        errors,
        late,
        at_risk,
        events_lost: watch.lost,
        ..fed
    }
}

/// The feeding loop of [`feed_day`].
fn feed(
    engine: &Engine,
    day: &Day,
    drive: &DriveParams,
    progress: &dyn Fn(u64),
    tick: &mut dyn FnMut(f64),
) -> Fed {
    let wait = Admission::Wait(std::time::Duration::from_secs(3600));
    let started = Instant::now();
    let mut next_tick = day.start_time + drive.tick_s;
    let mut batch: Vec<(u64, Ping)> = Vec::with_capacity(drive.batch);
    let mut done = 0u64;
    let flush = |batch: &mut Vec<(u64, Ping)>, done: &mut u64| {
        if !batch.is_empty() {
            if let Some(rate) = drive.rate {
                // Offer the batch when its last ping is due at this rate.
                let due = (*done + batch.len() as u64) as f64 / rate;
                let ahead = due - started.elapsed().as_secs_f64();
                if ahead > 0.0 {
                    std::thread::sleep(std::time::Duration::from_secs_f64(ahead));
                }
            }
            engine.submit(batch, wait);
            *done += batch.len() as u64;
            batch.clear();
            progress(*done);
        }
    };
    let pings = &day.pings[..drive.max_pings.unwrap_or(usize::MAX).min(day.pings.len())];
    let mut warm = drive.warmup_pings == 0;
    let closing = drive.drivers.map_or_else(Vec::new, |d| d.commands(day));
    let mut closing = closing.into_iter().peekable();
    for &(v, p) in pings {
        // A driver's command after every ping before it, as the app sends it.
        while let Some((t, cmd)) = closing.next_if(|(t, _)| *t <= p.time) {
            flush(&mut batch, &mut done);
            // Refused only if the stop is already closed or gone: news only.
            let _ = engine.command(cmd, t, wait);
        }
        if !warm && done as usize >= drive.warmup_pings {
            engine.sync();
            engine.reset_latency();
            warm = true;
        }
        while p.time >= next_tick {
            flush(&mut batch, &mut done);
            tick(next_tick);
            next_tick += drive.tick_s;
        }
        batch.push((v, p));
        if batch.len() == drive.batch {
            flush(&mut batch, &mut done);
        }
    }
    flush(&mut batch, &mut done);
    tick(next_tick);
    tick(f64::NAN);
    engine.sync();
    Fed {
        pings: done,
        seconds: started.elapsed().as_secs_f64(),
        ..Fed::default()
    }
}

/// Runs the day through a fresh engine. `progress` gets the pings done.
pub fn run_day(
    graph: Arc<Graph>,
    day: &Day,
    config: FleetConfig,
    drive: &DriveParams,
    progress: &dyn Fn(u64),
) -> DayReport {
    let learning = config.learning;
    let engine = Engine::new(graph, config);
    if !day.zones.is_empty() {
        let put = Command::PutZones {
            fleet: 0,
            zones: day.zones.clone(),
        };
        engine
            .command(
                put,
                day.start_time,
                Admission::Wait(std::time::Duration::from_secs(60)),
            )
            .expect("the day's zones are valid");
    }
    let assign_started = Instant::now();
    assign_routes(&engine, day);
    let assign_s = assign_started.elapsed().as_secs_f64();
    let fed = feed_day(&engine, day, drive, progress);
    // Against the whole day's truth: only when the whole day was fed.
    let odometer = match drive.max_pings {
        None => OdometerError::measure(&engine, day),
        Some(_) => OdometerError::default(),
    };
    let stats = engine.stats();
    let ratios = engine.learnt_ratios(0, false);
    let eta = HORIZONS_MIN
        .iter()
        .zip(&fed.errors)
        .map(|(&minutes, e)| horizon_error(minutes, e))
        .collect();
    DayReport {
        vehicles: engine.vehicle_ids().len(),
        shards: engine.shard_count(),
        learning,
        pings: fed.pings,
        seconds: fed.seconds,
        pings_per_s: fed.pings as f64 / fed.seconds.max(1e-9),
        latency_p50_us: stats.latency.quantile(0.5).as_secs_f64() * 1e6,
        latency_p99_us: stats.latency.quantile(0.99).as_secs_f64() * 1e6,
        bytes_per_vehicle: engine.bytes_per_vehicle(),
        assign_s,
        eta,
        stats,
        ratios,
        late: fed.late,
        at_risk: fed.at_risk,
        events_lost: fed.events_lost,
        odometer,
    }
}

/// `n` customers' yards: octagons of about 150 m around junctions drawn
/// at random (seeded), each with a dwell time of 10 minutes: what a fleet
/// with many regular customers draws.
pub fn yards(graph: &Graph, n: usize, seed: u64) -> Vec<ZoneDef> {
    let mut rng = lastmile_roadgraph::rng::Rng::seed(seed);
    (0..n as u64)
        .map(|id| {
            let c = graph.node_pos(rng.below(graph.num_nodes() as u64) as u32);
            let (dlat, dlon) = (
                150.0 / lastmile_roadgraph::geo::METRES_PER_DEGREE,
                150.0 / (lastmile_roadgraph::geo::METRES_PER_DEGREE * c.lat.to_radians().cos()),
            );
            let ring = (0..8)
                .map(|k| {
                    let a = f64::from(k) * std::f64::consts::TAU / 8.0;
                    lastmile_roadgraph::LatLon::new(c.lat + dlat * a.sin(), c.lon + dlon * a.cos())
                })
                .collect();
            ZoneDef {
                id,
                name: format!("yard {id}"),
                outline: Outline::Polygon { rings: vec![ring] },
                kind: ZoneKind::Plain,
                dwell_s: Some(600.0),
                speed_limit_kmh: None,
            }
        })
        .collect()
}

/// Error figures of one horizon's samples.
pub fn horizon_error(minutes: u32, e: &[Prediction]) -> HorizonError {
    let n = e.len().max(1) as f64;
    let score = Score::of(&format!("{minutes} min"), e);
    HorizonError {
        minutes,
        samples: e.len(),
        mae_s: score.mae_s,
        mape: e
            .iter()
            .map(|p| (p.p50_s - p.actual_s).abs() / p.actual_s.max(60.0))
            .sum::<f64>()
            / n,
        bias_s: score.bias_s,
        score,
    }
}
