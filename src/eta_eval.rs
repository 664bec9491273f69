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
    /// Shards (worker threads); 0 = one per core.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Write every judged estimate as CSV (trip, ping, times to go).
    #[arg(long)]
    predictions: Option<PathBuf>,
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
    let config = FleetConfig {
        shards: a.shards,
        ..FleetConfig::default()
    };
    let params = TripParams {
        every: a.every.max(1),
        learn: !a.no_learning,
        ..TripParams::default()
    };
    let last = std::cell::Cell::new(0);
    let report = replay_trips(graph, config, &read.trips, &params, &|n| {
        bar.inc(n - last.replace(n));
    });
    bar.finish();
    if let Some(path) = &a.predictions {
        write_predictions(path, &read.trips, &report.predictions)?;
    }
    let all: Vec<_> = report.predictions.iter().map(|p| p.prediction).collect();
    let moving: Vec<_> = report
        .predictions
        .iter()
        .filter(|p| p.moving)
        .map(|p| p.prediction)
        .collect();
    let (all_scores, moving_scores) = (Score::by_band(&all), Score::by_band(&moving));
    let moving_trips = read.trips.iter().filter(|t| t.mostly_moves()).count();
    if a.json {
        let out = json!({
            "trips": read.trips.len(), "skipped": read.skipped,
            "learn_trips": report.learn_trips, "test_trips": report.test_trips,
            "moving_trips": moving_trips, "pings": report.pings,
            "outcomes_learnt": report.outcomes_learnt, "no_eta": report.no_eta,
            "learning": params.learn,
            "all": all_scores, "moving": moving_scores,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "trips: {} ({} learnt from, {} judged; {} mostly move), {} pings, {} outcomes learnt{}",
        read.trips.len(),
        report.learn_trips,
        report.test_trips,
        moving_trips,
        report.pings,
        report.outcomes_learnt,
        if params.learn { "" } else { " (learning off)" }
    );
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
        report.no_eta,
        m.mae_s,
        m.bias_s,
        100.0 * m.bias_s / m.mean_actual_s.max(1.0),
        m.mean_actual_s,
        100.0 * m.coverage,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
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
