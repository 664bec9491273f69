//! `lastmile bench`: a simulated delivery day through the whole engine, in
//! process, with traffic learning off and on; prints the figures (or one
//! JSON object with the keys DESIGN.md promises).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use lastmile_engine::bench::{Day, DayReport, DriveParams, run_day};
use lastmile_engine::fleet::{EventKind, FleetConfig};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::Graph;
use serde_json::{Value, json};

use crate::progress::Bar;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Learning {
    Off,
    On,
    Both,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    vehicles: usize,
    /// Shards (worker threads); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Simulated seconds of the day.
    #[arg(long, default_value_t = 3600.0)]
    duration: f64,
    /// Seconds between a vehicle's pings.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// GPS noise sigma per axis, metres.
    #[arg(long, default_value_t = 5.0)]
    noise: f64,
    /// Share of edges truly slower than the graph says (hidden congestion).
    #[arg(long, default_value_t = 0.15)]
    congestion: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Trace seconds between engine ticks (traffic metric updates).
    #[arg(long, default_value_t = 30.0)]
    tick: f64,
    /// Run with traffic learning off, on, or both (the ETA comparison).
    #[arg(long, value_enum, default_value_t = Learning::Both)]
    learning: Learning,
    /// Latency is measured in a last run offered this share of the measured
    /// throughput (paced, so it measures the engine, not a queue) over the
    /// first `--latency-share` of the day's pings, the first tenth of them
    /// (every vehicle's first route at once) not counted.
    #[arg(long, default_value_t = 0.5)]
    latency_load: f64,
    #[arg(long, default_value_t = 0.2)]
    latency_share: f64,
    /// Pings handed to the engine together in the latency run, as a front
    /// end hands over what arrived together (a datagram burst, a frame); the
    /// throughput runs hand over 512 at a time.
    #[arg(long, default_value_t = 32)]
    latency_batch: usize,
    /// Customers' yards the fleet has drawn (octagons of about 150 m around
    /// random junctions), judged at every matched position.
    #[arg(long, default_value_t = 0)]
    zones: usize,
    #[arg(long)]
    json: bool,
}

fn report_json(r: &DayReport) -> Value {
    let horizons: serde_json::Map<String, Value> = r
        .eta
        .iter()
        .map(|h| (h.minutes.to_string(), json!(h.mae_s)))
        .collect();
    let mape: serde_json::Map<String, Value> = r
        .eta
        .iter()
        .map(|h| (h.minutes.to_string(), json!(h.mape)))
        .collect();
    let s = &r.stats.shards;
    json!({
        "pings": r.pings, "seconds": r.seconds, "pings_per_s": r.pings_per_s,
        "latency_p50_us": r.latency_p50_us, "latency_p99_us": r.latency_p99_us,
        "bytes_per_vehicle": r.bytes_per_vehicle, "assign_s": r.assign_s,
        "eta_mae_s": horizons, "eta_mape": mape,
        "eta_samples": r.eta.iter().map(|h| h.samples).collect::<Vec<_>>(),
        "eta_bias_s": r.eta.iter().map(|h| h.bias_s).collect::<Vec<_>>(),
        "eta_window": r.eta.iter().map(|h| (h.minutes.to_string(), json!({
            "coverage": h.score.coverage, "below_p10": h.score.below_p10,
            "above_p90": h.score.above_p90, "p50_too_low": h.score.p50_too_low,
            "width_s": h.score.width_s, "fixed_band_width_s": h.score.fixed_band_width_s,
            "pinball_s": h.score.pinball_s,
        }))).collect::<serde_json::Map<String, Value>>(),
        "eta_outcomes": r.stats.eta_outcomes,
        "leg_routes": s.leg_routes, "stop_leg_routes": s.stop_leg_routes,
        "reroutes": s.reroutes, "refreshes": s.refreshes, "traffic_reroutes": s.traffic_reroutes,
        "metric_updates": r.stats.metric_updates, "edges_changed": r.stats.edges_changed,
        "customization_ms": r.stats.customization_ms, "shed": r.stats.shed,
        "late_foretold": foretold_json(&r.late),
        "at_risk_foretold": foretold_json(&r.at_risk),
        "foretold_events_lost": r.events_lost,
        "odometer": json!({
            "vehicles": r.odometer.vehicles, "ratio_p10": r.odometer.ratio_p10,
            "ratio_p50": r.odometer.ratio_p50, "ratio_p90": r.odometer.ratio_p90,
            "gps_jumps_ratio_p50": r.odometer.gps_jumps_p50,
        }),
        "events": lastmile_engine::fleet::EventKind::ALL.iter()
            .map(|k| (k.as_str().to_string(), json!(s.event_count(*k))))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

fn foretold_json(f: &lastmile_engine::foretold::Foretold) -> Value {
    json!({
        "flagged": f.flagged, "truly_late": f.truly_late, "hits": f.hits,
        "precision": f.precision, "recall": f.recall,
        "raised_per_flagged": f.raised_per_flagged, "median_lead_s": f.median_lead_s,
    })
}

/// The demo's last step: a simulated delivery day through the whole
/// engine, with traffic learning off and on.
pub fn demo_fleet(g: &Arc<Graph>) -> Result<()> {
    let params = SimParams {
        vehicles: 400,
        duration_s: 2400.0,
        interval_s: 5.0,
        noise_m: 6.0,
        congestion: 0.2,
        seed: 2,
        ..SimParams::default()
    };
    let bar = Bar::new();
    bar.stage_spinner("simulating day");
    let day = Day::simulate(g, &params, &|_| {});
    bar.finish();
    let mut reports = Vec::new();
    for learning in [false, true] {
        bar.stage_count(
            if learning {
                "pings (learning)"
            } else {
                "pings"
            },
            day.pings.len() as u64,
        );
        let config = FleetConfig {
            learning,
            ..FleetConfig::default()
        };
        reports.push(run_day(
            g.clone(),
            &day,
            config,
            &DriveParams::default(),
            &|n| lastmile_roadgraph::Progress::set(&bar, n),
        ));
        bar.finish();
    }
    let (off, on) = (&reports[0], &reports[1]);
    let s = &on.stats.shards;
    let count = |k: EventKind| s.event_count(k);
    println!(
        "fleet: {} vehicles, {} stops, {} pings through match + state + ETA + detectors at {:.0} pings/s on {} shards; events: {} arrived, {} departed, {} late, {} off route, {} stalled, {} ETA changes",
        params.vehicles,
        day.stops().len(),
        on.pings,
        on.pings_per_s,
        on.shards,
        count(EventKind::Arrived),
        count(EventKind::Departed),
        count(EventKind::Late),
        count(EventKind::OffRoute),
        count(EventKind::Stalled),
        count(EventKind::EtaChanged),
    );
    let eta: Vec<String> = off
        .eta
        .iter()
        .zip(&on.eta)
        .map(|(a, b)| {
            format!(
                "{} min before: {:.0} s -> {:.0} s",
                a.minutes, a.mae_s, b.mae_s
            )
        })
        .collect();
    println!(
        "ETA mean absolute error on a day with hidden congestion, without -> with traffic learnt from the fleet: {}",
        eta.join(", ")
    );
    Ok(())
}

pub fn bench_cmd(a: BenchArgs) -> Result<()> {
    let usable = a.interval > 0.0
        && a.duration > 0.0
        && a.tick > 0.0
        && a.noise >= 0.0
        && (0.0..=1.0).contains(&a.congestion)
        && a.latency_load > 0.0
        && (0.0..=1.0).contains(&a.latency_share)
        && a.latency_batch > 0
        && a.vehicles > 0;
    if !usable {
        bail!(
            "--vehicles, --interval, --duration, --tick, --latency-load and --latency-batch must be positive, --congestion and --latency-share 0 to 1"
        );
    }
    let t0 = Instant::now();
    let bar = Bar::new();
    let g = Arc::new(lastmile_roadgraph::open(&a.graph, &bar)?);
    bar.finish();
    g.edge_index();
    let params = SimParams {
        vehicles: a.vehicles,
        duration_s: a.duration,
        interval_s: a.interval,
        noise_m: a.noise,
        seed: a.seed,
        congestion: a.congestion,
        ..SimParams::default()
    };
    bar.stage_count("simulating s", a.duration as u64);
    let mut day = Day::simulate(&g, &params, &|s| {
        lastmile_roadgraph::Progress::set(&bar, s as u64)
    });
    day.zones = lastmile_engine::bench::yards(&g, a.zones, a.seed);
    bar.finish();
    let modes: &[bool] = match a.learning {
        Learning::Off => &[false],
        Learning::On => &[true],
        Learning::Both => &[false, true],
    };
    let mut reports = Vec::new();
    for &learning in modes {
        let config = FleetConfig {
            shards: a.shards,
            learning,
            queue_capacity: 64,
            ..FleetConfig::default()
        };
        bar.stage_count(
            if learning {
                "pings (learning)"
            } else {
                "pings"
            },
            day.pings.len() as u64,
        );
        let drive = DriveParams {
            tick_s: a.tick,
            ..DriveParams::default()
        };
        let r = run_day(g.clone(), &day, config, &drive, &|n| {
            lastmile_roadgraph::Progress::set(&bar, n)
        });
        bar.finish();
        reports.push(r);
    }
    let main = reports.last().expect("at least one mode");
    // The latency run: the last mode again, paced below capacity.
    let rate = (a.latency_load * main.pings_per_s).max(1.0);
    let drive = DriveParams {
        tick_s: a.tick,
        rate: Some(rate),
        max_pings: Some(((day.pings.len() as f64 * a.latency_share) as usize).max(1)),
        warmup_pings: (day.pings.len() as f64 * a.latency_share / 10.0) as usize,
        batch: a.latency_batch,
        drivers: None,
    };
    bar.stage_count("pings (paced)", drive.max_pings.unwrap_or(0) as u64);
    let config = FleetConfig {
        shards: a.shards,
        learning: main.learning,
        queue_capacity: 64,
        ..FleetConfig::default()
    };
    let paced = run_day(g.clone(), &day, config, &drive, &|n| {
        lastmile_roadgraph::Progress::set(&bar, n)
    });
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let by_mode = |learning: bool| {
            reports
                .iter()
                .find(|r| r.learning == learning)
                .map(report_json)
                .unwrap_or(Value::Null)
        };
        let mae = |learning: bool| by_mode(learning)["eta_mae_s"].clone();
        let mape = |learning: bool| by_mode(learning)["eta_mape"].clone();
        println!(
            "{}",
            json!({
                "vehicles": a.vehicles, "shards": main.shards, "graph_edges": g.num_edges(),
                "pings": main.pings, "pings_per_s": main.pings_per_s,
                "latency_p50_us": paced.latency_p50_us, "latency_p99_us": paced.latency_p99_us,
                "latency_offered_pings_per_s": rate, "latency_pings": paced.pings,
                "bytes_per_vehicle": main.bytes_per_vehicle,
                "eta_mae_s": {"learning_off": mae(false), "learning_on": mae(true)},
                "eta_mape": {"learning_off": mape(false), "learning_on": mape(true)},
                "stops": day.stops().len(), "congested_edges": day.summary.congested_edges,
                "runs": {"learning_off": by_mode(false), "learning_on": by_mode(true)},
                "seconds": secs,
            })
        );
    } else {
        for r in &reports {
            let eta: Vec<String> = r
                .eta
                .iter()
                .map(|h| {
                    format!(
                        "{} min {:.0} s / {:.1}% (P10-P90 holds {:.0}%, {:.0} s wide)",
                        h.minutes,
                        h.mae_s,
                        h.mape * 100.0,
                        h.score.coverage * 100.0,
                        h.score.width_s
                    )
                })
                .collect();
            println!(
                "learning {}: {} pings in {:.1} s = {:.0} pings/s on {} shards; latency p50 {:.0} us p99 {:.0} us; {:.0} B/vehicle; ETA error {}",
                if r.learning { "on " } else { "off" },
                r.pings,
                r.seconds,
                r.pings_per_s,
                r.shards,
                r.latency_p50_us,
                r.latency_p99_us,
                r.bytes_per_vehicle,
                eta.join(", ")
            );
        }
        println!(
            "latency at {rate:.0} pings/s offered ({} pings): p50 {:.0} us, p99 {:.0} us",
            paced.pings, paced.latency_p50_us, paced.latency_p99_us
        );
        println!(
            "bench: {} vehicles, {} stops, {} congested edges, {:.0} pings/s, p99 {:.0} us at half load, in {secs:.1} s",
            a.vehicles,
            day.stops().len(),
            day.summary.congested_edges,
            main.pings_per_s,
            paced.latency_p99_us
        );
    }
    Ok(())
}
