//! Subcommands around GPS traces: `simulate`, `match`, `evaluate` (including
//! the Kubička benchmark layout). Files are opened here; parsing, matching and
//! scoring live in `lastmile-engine`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use lastmile_engine::evaluate::{
    Accuracy, Evaluation, PushEvent, evaluate, match_trace, match_trace_observed, percentile,
};
use lastmile_engine::simulate::{SimParams, simulate, write_stops};
use lastmile_engine::trace::{Trace, read_csv, read_gpx};
use lastmile_engine::{MatchStatus, MatcherConfig, kubicka};
use lastmile_roadgraph::{Graph, build};
use serde_json::{Value, json};

use crate::progress::Bar;

/// Matcher parameters shared by `match` and `evaluate`.
#[derive(Args, Clone)]
pub struct MatcherArgs {
    /// GPS noise sigma assumed for pings without an `accuracy`, metres.
    #[arg(long)]
    sigma: Option<f64>,
    /// Transition scale beta at 1 s sampling, metres.
    #[arg(long)]
    beta: Option<f64>,
    /// Growth of beta per metre of GPS sigma.
    #[arg(long)]
    beta_per_sigma: Option<f64>,
    /// Candidate search radius, metres.
    #[arg(long)]
    radius: Option<f64>,
    /// Candidate edges per ping.
    #[arg(long)]
    candidates: Option<usize>,
    /// Longest silence that does not break the chain, seconds.
    #[arg(long)]
    max_gap: Option<f64>,
    /// Log units below a typical fix at which a ping is refused as an outlier.
    #[arg(long)]
    outlier_log_odds: Option<f64>,
    /// Outliers in a row after which the chain restarts.
    #[arg(long)]
    max_outliers: Option<u32>,
}

impl MatcherArgs {
    fn config(&self) -> Result<MatcherConfig> {
        let mut c = MatcherConfig::default();
        if let Some(v) = self.sigma {
            c.sigma_m = v;
        }
        if let Some(v) = self.beta {
            c.beta_m = v;
        }
        if let Some(v) = self.beta_per_sigma {
            c.beta_per_sigma = v;
        }
        if let Some(v) = self.radius {
            c.search_radius_m = v;
        }
        if let Some(v) = self.candidates {
            c.max_candidates = v;
        }
        if let Some(v) = self.max_gap {
            c.max_gap_s = v;
        }
        if let Some(v) = self.outlier_log_odds {
            c.outlier_log_odds = v;
        }
        if let Some(v) = self.max_outliers {
            c.max_outliers = v;
        }
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    #[arg(long, default_value_t = 10)]
    vehicles: usize,
    /// Simulated seconds.
    #[arg(long, default_value_t = 3600.0)]
    duration: f64,
    /// Seconds between pings.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// GPS noise sigma per axis, metres.
    #[arg(long, default_value_t = 5.0)]
    noise: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of pings that are outliers (60-250 m off).
    #[arg(long, default_value_t = 0.002)]
    outliers: f64,
    /// Share of pings lost.
    #[arg(long, default_value_t = 0.01)]
    dropouts: f64,
    /// Share of edges (0-1) truly slower than their free-flow speed, hidden
    /// from the trace (congestion for ETA learning to discover).
    #[arg(long, default_value_t = 0.0)]
    congestion: f64,
    /// Write only positions and truth, no `speed,heading,accuracy` columns.
    #[arg(long)]
    positions_only: bool,
    /// Trace CSV to write.
    #[arg(long)]
    out: PathBuf,
    /// Stops CSV to write (the tours the vehicles drove).
    #[arg(long)]
    stops_out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct MatchArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    /// Trace CSV (or GPX, one vehicle; `.gz` accepted).
    trace: PathBuf,
    /// Matched CSV to write.
    #[arg(long)]
    out: PathBuf,
    /// Write the per-ping live estimates instead of the finalised match.
    #[arg(long)]
    immediate: bool,
    #[command(flatten)]
    matcher: MatcherArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Graph snapshot or .osm.pbf (not with --kubicka).
    graph: Option<PathBuf>,
    /// Trace CSV with ground truth columns.
    trace: Option<PathBuf>,
    /// Evaluate on the Kubička et al. benchmark directory instead (one
    /// subdirectory per track with its own road network).
    #[arg(long, conflicts_with_all = ["graph", "trace"])]
    kubicka: Option<PathBuf>,
    /// Print figures per vehicle (per track) too.
    #[arg(long)]
    per_vehicle: bool,
    #[command(flatten)]
    matcher: MatcherArgs,
    #[arg(long)]
    json: bool,
}

/// Opens a file, transparently un-gzipping `.gz`.
fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::GzDecoder::new(f))))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

fn read_trace(path: &Path) -> Result<Trace> {
    let mut input = open_text(path)?;
    let is_gpx = {
        let head = input
            .fill_buf()
            .with_context(|| path.display().to_string())?;
        let first = head.iter().find(|b| !b.is_ascii_whitespace());
        first == Some(&b'<')
    };
    let name = path
        .file_name()
        .map_or_else(|| "track".to_string(), |n| n.to_string_lossy().into_owned());
    let trace = if is_gpx {
        read_gpx(input, name.trim_end_matches(".gz").trim_end_matches(".gpx"))
    } else {
        read_csv(input)
    }
    .with_context(|| format!("{}", path.display()))?;
    if trace.times_synthesized {
        eprintln!(
            "warning: {}: no usable timestamps (missing or not increasing); times synthesised from distances",
            path.display()
        );
    }
    if trace.skipped > 0 {
        eprintln!(
            "warning: {}: skipped {} unparseable row(s), first at line(s) {:?}",
            path.display(),
            trace.skipped,
            trace.skipped_lines
        );
    }
    Ok(trace)
}

fn open_graph(path: &Path) -> Result<Graph> {
    let bar = Bar::new();
    let g = lastmile_roadgraph::open(path, &bar);
    bar.finish();
    Ok(g?)
}

pub fn simulate_cmd(a: SimulateArgs) -> Result<()> {
    let usable = a.interval > 0.0
        && a.interval.is_finite()
        && a.duration >= 0.0
        && a.noise >= 0.0
        && (0.0..=1.0).contains(&a.congestion);
    if !usable {
        bail!(
            "--interval must be positive, --duration and --noise zero or more, --congestion 0 to 1"
        );
    }
    let t0 = Instant::now();
    let g = open_graph(&a.graph)?;
    let params = SimParams {
        vehicles: a.vehicles,
        duration_s: a.duration,
        interval_s: a.interval,
        noise_m: a.noise,
        seed: a.seed,
        outlier_rate: a.outliers,
        dropout_rate: a.dropouts,
        motion_columns: !a.positions_only,
        congestion: a.congestion,
        ..SimParams::default()
    };
    let out = File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let bar = Bar::new();
    bar.stage_count("simulated s", a.duration as u64);
    let summary = simulate(&g, &params, BufWriter::new(out), &|s| {
        lastmile_roadgraph::Progress::set(&bar, s as u64)
    })
    .with_context(|| format!("writing {}", a.out.display()))?;
    bar.finish();
    if let Some(path) = &a.stops_out {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        write_stops(&summary.stops, BufWriter::new(f))
            .with_context(|| path.display().to_string())?;
    }
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({"pings": summary.pings, "outliers": summary.outliers, "dropped": summary.dropped,
                   "stops": summary.stops.len(), "driven_km": summary.driven_m / 1000.0,
                   "congested_edges": summary.congested_edges, "seconds": secs})
        );
    } else {
        println!(
            "simulated {} vehicles for {:.0} s: {} pings ({} outliers, {} lost), {:.0} km driven, {} stops, in {secs:.1} s -> {}",
            a.vehicles,
            a.duration,
            summary.pings,
            summary.outliers,
            summary.dropped,
            summary.driven_m / 1000.0,
            summary.stops.len(),
            a.out.display()
        );
    }
    Ok(())
}

pub fn match_cmd(a: MatchArgs) -> Result<()> {
    let config = a.matcher.config()?;
    let g = open_graph(&a.graph)?;
    let trace = read_trace(&a.trace)?;
    g.edge_index(); // built once at load, as `serve` does; not part of matching
    let bar = Bar::new();
    bar.stage_count("pings", trace.rows.len() as u64);
    // Per-ping latency, microseconds.
    let mut latency_us = Vec::with_capacity(trace.rows.len());
    let mut started = Instant::now();
    let t0 = Instant::now();
    let m = match_trace_observed(&g, &config, &trace, &mut |e| match e {
        PushEvent::Before => started = Instant::now(),
        PushEvent::After => {
            latency_us.push(started.elapsed().as_secs_f64() * 1e6);
            if latency_us.len() % 4096 == 0 {
                lastmile_roadgraph::Progress::set(&bar, latency_us.len() as u64);
            }
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    bar.finish();

    let f = File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut w = csv::Writer::from_writer(BufWriter::new(f));
    let mut header = trace.header.clone();
    for c in [
        "matched_lat",
        "matched_lon",
        "way_id",
        "edge_id",
        "offset_m",
        "status",
        "confidence",
    ] {
        header.push_field(c);
    }
    w.write_record(&header)?;
    for (i, row) in trace.rows.iter().enumerate() {
        let im = m.immediate[i];
        let (status, place) = if a.immediate {
            (
                im.status,
                im.status
                    .is_on_road()
                    .then_some((im.edge, im.offset_m, im.point)),
            )
        } else if let Some(f) = m.finalized[i] {
            (f.status, Some((f.edge, f.offset_m, f.point)))
        } else {
            (im.status, None)
        };
        let mut rec = row.fields.clone();
        match place {
            Some((edge, offset, p)) => {
                rec.push_field(&format!("{:.7}", p.lat));
                rec.push_field(&format!("{:.7}", p.lon));
                rec.push_field(&g.way_id(edge).to_string());
                rec.push_field(&edge.to_string());
                rec.push_field(&format!("{offset:.2}"));
            }
            None => (0..5).for_each(|_| rec.push_field("")),
        }
        rec.push_field(status.as_str());
        rec.push_field(&if a.immediate {
            format!("{:.3}", im.confidence)
        } else {
            String::new()
        });
        w.write_record(&rec)?;
    }
    w.flush().with_context(|| a.out.display().to_string())?;
    let on_road = MatchStatus::ALL
        .iter()
        .filter(|s| s.is_on_road())
        .map(|&s| m.stats.count(s))
        .sum::<u64>();
    let rate = trace.rows.len() as f64 / secs.max(1e-9);
    if a.json {
        let by: serde_json::Map<String, Value> = MatchStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), json!(m.stats.count(*s))))
            .collect();
        println!(
            "{}",
            json!({"pings": trace.rows.len(), "on_road": on_road, "status": by,
                   "seconds": secs, "pings_per_s": rate, "skipped_rows": trace.skipped,
                   "latency_p50_us": percentile(&latency_us, 0.5),
                   "latency_p99_us": percentile(&latency_us, 0.99),
                   "latency_max_us": percentile(&latency_us, 1.0),
                   "searches": m.stats.searches, "settled": m.stats.settled,
                   "forced_finalisations": m.stats.forced})
        );
    } else {
        println!(
            "matched {} pings of {} vehicle(s): {} on a road, {} unmatched, {} outliers, {} resets, {} breaks between unconnected roads, {} dropped (order/duplicate/invalid); {:.0} pings/s, latency p50 {:.1} us / p99 {:.1} us -> {}",
            trace.rows.len(),
            m.paths.len(),
            on_road,
            m.stats.count(MatchStatus::Unmatched),
            m.stats.count(MatchStatus::Outlier),
            m.stats.count(MatchStatus::Reset),
            m.stats.count(MatchStatus::Break),
            m.stats.count(MatchStatus::OutOfOrder)
                + m.stats.count(MatchStatus::Duplicate)
                + m.stats.count(MatchStatus::Invalid),
            rate,
            percentile(&latency_us, 0.5),
            percentile(&latency_us, 0.99),
            a.out.display()
        );
    }
    Ok(())
}

fn accuracy_json(a: &Accuracy) -> Value {
    json!({
        "pings": a.pings,
        "on_true_way": a.way_share(),
        "distance_median_m": a.distance_percentile(0.5),
        "distance_p95_m": a.distance_percentile(0.95),
        "route_mismatch": a.route_mismatch(),
        "added_km": a.added_m / 1000.0,
        "removed_km": a.removed_m / 1000.0,
        "true_length_km": a.true_length_m / 1000.0,
    })
}

fn accuracy_line(name: &str, a: &Accuracy) -> String {
    format!(
        "{name:>10}: {:.2}% on the true way, distance median {:.1} m / p95 {:.1} m, route mismatch {:.2}%",
        100.0 * a.way_share(),
        a.distance_percentile(0.5),
        a.distance_percentile(0.95),
        100.0 * a.route_mismatch()
    )
}

pub fn evaluate_cmd(a: EvaluateArgs) -> Result<()> {
    let config = a.matcher.config()?;
    if let Some(dir) = &a.kubicka {
        return evaluate_kubicka(dir, &config, a.per_vehicle, a.json);
    }
    let (Some(graph), Some(trace_path)) = (&a.graph, &a.trace) else {
        bail!("evaluate needs CITY TRACE, or --kubicka DIR");
    };
    let g = open_graph(graph)?;
    let trace = read_trace(trace_path)?;
    if !trace.has_truth() {
        bail!(
            "{} has no ground truth (columns true_lat,true_lon,true_way_id on every row)",
            trace_path.display()
        );
    }
    g.edge_index(); // built once at load, as `serve` does; not part of matching
    let t0 = Instant::now();
    let m = match_trace(&g, &config, &trace);
    let match_s = t0.elapsed().as_secs_f64();
    let e: Evaluation = evaluate(&g, &trace, &m);
    let rate = trace.rows.len() as f64 / match_s.max(1e-9);
    if a.json {
        let mut out = json!({
            "pings": trace.rows.len(),
            "vehicles": e.vehicles.len(),
            "finalized": accuracy_json(&e.finalized),
            "immediate": accuracy_json(&e.immediate),
            "pings_per_s": rate,
            "truth_unplaced": e.truth_unplaced,
            "outside_main": {"pings": e.outside_main.pings, "finalized_on_true_way": e.outside_main.way_share()},
        });
        if a.per_vehicle {
            out["per_vehicle"] = e
                .vehicles
                .iter()
                .map(|v| json!({"vehicle": v.vehicle, "finalized": accuracy_json(&v.finalized), "immediate": accuracy_json(&v.immediate)}))
                .collect();
        }
        println!("{out}");
    } else {
        if a.per_vehicle {
            for v in &e.vehicles {
                println!("{}", v.vehicle);
                println!("{}", accuracy_line("finalized", &v.finalized));
                println!("{}", accuracy_line("immediate", &v.immediate));
            }
        }
        println!("{}", accuracy_line("finalized", &e.finalized));
        println!("{}", accuracy_line("immediate", &e.immediate));
        if e.outside_main.pings > 0 {
            println!(
                "outside the main component: {} pings, {:.2}% finalised on the true way",
                e.outside_main.pings,
                100.0 * e.outside_main.way_share()
            );
        }
        println!(
            "evaluated {} pings of {} vehicles at {rate:.0} pings/s (one thread)",
            trace.rows.len(),
            e.vehicles.len()
        );
    }
    Ok(())
}

fn evaluate_kubicka(
    dir: &Path,
    config: &MatcherConfig,
    per_track: bool,
    as_json: bool,
) -> Result<()> {
    let tracks =
        kubicka::track_ids(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if tracks.is_empty() {
        bail!("{} holds no track directories", dir.display());
    }
    let bar = Bar::new();
    bar.stage_count("tracks", tracks.len() as u64);
    let (mut fin, mut imm) = (Accuracy::default(), Accuracy::default());
    let mut rows = Vec::new();
    let mut match_s = 0.0;
    for (i, id) in tracks.iter().enumerate() {
        let file = |kind: &str| -> Result<Box<dyn BufRead>> {
            let plain = dir.join(id).join(format!("{id}.{kind}"));
            let gz = dir.join(id).join(format!("{id}.{kind}.gz"));
            open_text(if gz.is_file() { &gz } else { &plain })
        };
        let net = kubicka::read_network(file("nodes")?, file("arcs")?)
            .with_context(|| format!("track {id}"))?;
        let data = build::build_matching_graph(&net.net, format!("kubicka:{id}"))
            .with_context(|| format!("track {id}: no roads"))?;
        let g = Graph::from_data(&data);
        drop(data);
        let trace =
            kubicka::read_track(file("track")?, id).with_context(|| format!("track {id}"))?;
        let route = kubicka::read_route(file("route")?).with_context(|| format!("track {id}"))?;
        g.edge_index();
        let t0 = Instant::now();
        let m = match_trace(&g, config, &trace);
        match_s += t0.elapsed().as_secs_f64();
        let arc_of = |e| net.arc_of(&g, e);
        let f = kubicka::score(arc_of, &net.arc_length_m, &route, &m, true);
        let im = kubicka::score(arc_of, &net.arc_length_m, &route, &m, false);
        if per_track {
            rows.push((id.clone(), f.clone(), im.clone()));
        }
        fin.merge(&f);
        imm.merge(&im);
        lastmile_roadgraph::Progress::set(&bar, i as u64 + 1);
    }
    bar.finish();
    let rate = fin.pings as f64 / match_s.max(1e-9);
    let kub_json = |a: &Accuracy| json!({"pings": a.pings, "on_true_route": a.way_share(), "route_mismatch": a.route_mismatch(), "true_length_km": a.true_length_m / 1000.0});
    if as_json {
        let mut out = json!({"tracks": tracks.len(), "finalized": kub_json(&fin), "immediate": kub_json(&imm), "pings_per_s": rate});
        if per_track {
            out["per_track"] = rows
                .iter()
                .map(|(id, f, i)| json!({"track": id, "finalized": kub_json(f), "immediate": kub_json(i)}))
                .collect();
        }
        println!("{out}");
    } else {
        let line = |name: &str, a: &Accuracy| {
            format!(
                "{name:>10}: {:.2}% of pings on the true route, route mismatch {:.2}% of {:.0} km",
                100.0 * a.way_share(),
                100.0 * a.route_mismatch(),
                a.true_length_m / 1000.0
            )
        };
        for (id, f, i) in &rows {
            println!("{id}\n{}\n{}", line("finalized", f), line("immediate", i));
        }
        println!("{}", line("finalized", &fin));
        println!("{}", line("immediate", &imm));
        println!(
            "evaluated {} Kubička tracks, {} pings at {rate:.0} pings/s (one thread)",
            tracks.len(),
            fin.pings
        );
    }
    Ok(())
}

/// The demo's map-matching part: a simulated fleet through the matcher,
/// scored against its own ground truth.
pub fn demo_matching(g: &Graph) -> Result<()> {
    let params = SimParams {
        vehicles: 50,
        duration_s: 900.0,
        interval_s: 1.0,
        noise_m: 8.0,
        seed: 1,
        ..SimParams::default()
    };
    let bar = Bar::new();
    bar.stage_spinner("simulating fleet");
    let mut csv = Vec::new();
    let summary = simulate(g, &params, &mut csv, &|_| {})?;
    let trace = read_csv(csv.as_slice())?;
    bar.finish();
    let t0 = Instant::now();
    let m = match_trace(g, &MatcherConfig::default(), &trace);
    let rate = trace.rows.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    let e = evaluate(g, &trace, &m);
    println!(
        "matched {} pings of {} simulated vehicles (8 m noise) at {rate:.0} pings/s on one thread: {:.1}% on the true road finalised, {:.1}% live; median {:.1} m from the true position",
        summary.pings,
        params.vehicles,
        100.0 * e.finalized.way_share(),
        100.0 * e.immediate.way_share(),
        e.finalized.distance_percentile(0.5)
    );
    Ok(())
}
