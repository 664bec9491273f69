//! `lastmile eta-eval`: real trips (the Porto taxi CSV, or a trace CSV
//! whose vehicles are trips) through the whole engine, learning from one
//! half of them and judging the ETAs and windows it gives on the other:
//! P50 error and bias, and the window's coverage and width by horizon, for
//! all trips and for those that mostly move.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use lastmile_engine::eta_score::Score;
use lastmile_engine::fleet::FleetConfig;
use lastmile_engine::trip_eval::{TripParams, TripPrediction, replay_trips};
use lastmile_engine::trips::read_trips;
use serde_json::json;

use crate::progress::Bar;

#[derive(Args)]
pub struct EtaEvalArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    /// Trips: the Porto taxi CSV (`shape`, `timestamps`, `TRIP_ID`) or a
    /// trace CSV, each vehicle one trip ending at its last ping.
    trips: PathBuf,
    /// Judge the estimate at every this-many-th ping of a trip.
    #[arg(long, default_value_t = 4)]
    every: usize,
    /// Do not learn from the other half first: the engine as it starts.
    #[arg(long)]
    no_learning: bool,
    /// Judge one half only, learnt from the other (by default both halves
    /// are judged, each by an engine that learnt from the other).
    #[arg(long)]
    one_fold: bool,
    /// Shards (worker threads); 0 = one per core.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Write every judged estimate as CSV (trip, ping, times to go).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// The server's configuration file: its `[eta]`, `[traffic]`,
    /// `[matcher]` and `[detect]` settings are the ones judged.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn eta_eval(a: EtaEvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let bar = Bar::new();
    let graph = Arc::new(lastmile_roadgraph::open(&a.graph, &bar)?);
    let file =
        File::open(&a.trips).with_context(|| format!("cannot open {}", a.trips.display()))?;
    let read = read_trips(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", a.trips.display()))?;
    if read.trips.is_empty() {
        bail!("{} holds no trip of two points or more", a.trips.display());
    }
    let pings: usize = read.trips.iter().map(|t| t.pings.len()).sum();
    bar.stage_count("replaying", pings as u64);
    let base = match &a.config {
        Some(path) => lastmile_node::config::Config::load(path)?.fleet_config(),
        None => FleetConfig::default(),
    };
    let config = FleetConfig {
        shards: a.shards,
        ..base
    };
    let folds: &[bool] = if a.one_fold || a.no_learning {
        &[false]
    } else {
        &[false, true]
    };
    let mut reports = Vec::new();
    let last = std::cell::Cell::new(0);
    for &swap in folds {
        let params = TripParams {
            every: a.every.max(1),
            learn: !a.no_learning,
            swap,
            ..TripParams::default()
        };
        last.set(0);
        reports.push(replay_trips(
            graph.clone(),
            config.clone(),
            &read.trips,
            &params,
            &|n| {
                bar.inc(n - last.replace(n));
            },
        ));
    }
    bar.finish();
    let predictions: Vec<TripPrediction> = reports
        .iter()
        .flat_map(|r| r.predictions.iter().copied())
        .collect();
    if let Some(path) = &a.predictions {
        write_predictions(path, &read.trips, &predictions)?;
    }
    let all: Vec<_> = predictions.iter().map(|p| p.prediction).collect();
    let moving: Vec<_> = predictions
        .iter()
        .filter(|p| p.moving)
        .map(|p| p.prediction)
        .collect();
    let (all_scores, moving_scores) = (Score::by_band(&all), Score::by_band(&moving));
    let moving_trips = read.trips.iter().filter(|t| t.mostly_moves()).count();
    let no_eta: usize = reports.iter().map(|r| r.no_eta).sum();
    if a.json {
        let folds: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "learn_trips": r.learn_trips, "test_trips": r.test_trips,
                    "pings": r.pings, "outcomes_learnt": r.outcomes_learnt,
                    "no_eta": r.no_eta,
                    "ratios": ratios_json(&r.ratios[0]),
                    "ratios_standing": ratios_json(&r.ratios[1]),
                })
            })
            .collect();
        let out = json!({
            "trips": read.trips.len(), "skipped": read.skipped,
            "moving_trips": moving_trips, "no_eta": no_eta,
            "learning": !a.no_learning, "folds": folds,
            "all": all_scores, "moving": moving_scores,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "trips: {} ({} mostly move), judged {} way{}{}",
        read.trips.len(),
        moving_trips,
        reports.len(),
        if reports.len() == 1 {
            ""
        } else {
            "s (each half by an engine that learnt from the other)"
        },
        if a.no_learning { " (learning off)" } else { "" }
    );
    for (k, r) in reports.iter().enumerate() {
        println!(
            "\nfold {}: {} trips learnt from ({} outcomes), {} judged",
            k + 1,
            r.learn_trips,
            r.outcomes_learnt,
            r.test_trips
        );
        if !r.ratios[0].is_empty() {
            println!(
                "  learnt ratio of actual to routed time (P10 / P50 / P90, outcomes weighed), moving | standing:"
            );
            for ((centre, q, w), (_, s, ws)) in r.ratios[0].iter().zip(&r.ratios[1]) {
                println!(
                    "  {centre:>6.0} s to go: {:.2} / {:.2} / {:.2} ({w:.0}) | {:.2} / {:.2} / {:.2} ({ws:.0})",
                    q[0], q[1], q[2], s[0], s[1], s[2]
                );
            }
        }
    }
    for (title, scores) in [
        ("all judged trips", &all_scores),
        ("trips that mostly move", &moving_scores),
    ] {
        println!("\n{title}:");
        print_table(scores);
    }
    let m = moving_scores.last().cloned().unwrap_or_default();
    println!(
        "\neta-eval: {} estimates ({} without an ETA); moving trips: P50 MAE {:.0} s, bias {:+.0} s ({:+.1}% of {:.0} s), P10-P90 coverage {:.1}% in {:.2} s",
        all.len(),
        no_eta,
        m.mae_s,
        m.bias_s,
        100.0 * m.bias_s / m.mean_actual_s.max(1.0),
        m.mean_actual_s,
        100.0 * m.coverage,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ratios_json(ratios: &[(f64, [f64; 3], f64)]) -> Vec<serde_json::Value> {
    ratios
        .iter()
        .map(|(centre, q, weight)| {
            json!({"routed_s": centre, "p10": q[0], "p50": q[1], "p90": q[2], "weight": weight})
        })
        .collect()
}

fn print_table(scores: &[Score]) {
    println!(
        "{:>10} {:>6} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "horizon",
        "n",
        "MAE s",
        "median",
        "bias s",
        "low %",
        "cover %",
        "<P10 %",
        "width s",
        "fixed s",
        "pinball"
    );
    for s in scores {
        println!(
            "{:>10} {:>6} {:>8.0} {:>8.0} {:>+8.0} {:>7.1} {:>8.1} {:>7.1} {:>9.0} {:>9.0} {:>9.1}",
            s.label,
            s.samples,
            s.mae_s,
            s.median_abs_s,
            s.bias_s,
            100.0 * s.p50_too_low,
            100.0 * s.coverage,
            100.0 * s.below_p10,
            s.width_s,
            s.fixed_band_width_s,
            s.pinball_s
        );
    }
}

fn write_predictions(
    path: &PathBuf,
    trips: &[lastmile_engine::trips::Trip],
    preds: &[TripPrediction],
) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(
        w,
        "trip_id,ping,lat,lon,dest_lat,dest_lon,moving,actual_s,p10_s,p50_s,p90_s"
    )?;
    for p in preds {
        let trip = &trips[p.trip];
        let (pos, dest) = (trip.pings[p.ping].pos, trip.destination());
        let x = p.prediction;
        writeln!(
            w,
            "{},{},{:.6},{:.6},{:.6},{:.6},{},{:.0},{:.1},{:.1},{:.1}",
            trip.id,
            p.ping,
            pos.lat,
            pos.lon,
            dest.lat,
            dest.lon,
            p.moving,
            x.actual_s,
            x.p10_s,
            x.p50_s,
            x.p90_s
        )?;
    }
    w.flush()?;
    Ok(())
}
