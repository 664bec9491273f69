//! `lastmile calibrate`: fits the free-flow model's speeds per road class
//! and setting and its junction delays to matched traversals of real trips
//! (the learning half of them, as `eta-eval` splits them), and prints them
//! beside the model's (see `lastmile_roadgraph::free_flow`).

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lastmile_engine::MatcherConfig;
use lastmile_engine::calibrate::{fit, traversals};
use lastmile_engine::trips::{Half, read_trips};

use crate::progress::Bar;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    /// Trips: the Porto taxi CSV or a trace CSV (as `eta-eval` reads them).
    trips: PathBuf,
    /// Use every trip, not only the learning half.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let bar = Bar::new();
    let graph = lastmile_roadgraph::open(&a.graph, &bar)?;
    bar.finish();
    let file =
        File::open(&a.trips).with_context(|| format!("cannot open {}", a.trips.display()))?;
    let read = read_trips(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", a.trips.display()))?;
    let trips: Vec<_> = read
        .trips
        .iter()
        .filter(|t| a.all || t.half() == Half::Learn)
        .collect();
    if trips.is_empty() {
        bail!("{} holds no trip to calibrate on", a.trips.display());
    }
    bar.stage_spinner("matching");
    let obs = traversals(&graph, &trips, &MatcherConfig::default());
    bar.finish();
    let c = fit(&graph, &obs, trips.len());
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(());
    }
    println!(
        "{:>16} {:>6} {:>10} {:>8} {:>10} {:>10}",
        "class", "urban", "traversals", "km", "fitted", "model"
    );
    for k in &c.classes {
        println!(
            "{:>16} {:>6} {:>10} {:>8.1} {:>10} {:>10.1}",
            k.class,
            if k.urban { "yes" } else { "no" },
            k.traversals,
            k.km,
            k.speed_kmh.map_or("-".to_string(), |s| format!("{s:.1}")),
            k.model_kmh
        );
    }
    println!(
        "calibrate: {} trips, {} whole-edge traversals; signal {:.1} s, through a junction {:.1} s, giving way {:.1} s; median error per traversal {:.1} s (model as it is: {:.1} s)",
        c.trips,
        c.traversals,
        c.signal_s,
        c.through_s,
        c.yield_s,
        c.median_abs_error_s,
        c.model_median_abs_error_s
    );
    Ok(())
}
