//! One function per subcommand: open inputs, call the library, print the
//! human summary line or the `--json` object. No algorithms here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use lastmile_roadgraph::components::ComponentSummary;
use lastmile_roadgraph::snap::SnapChoice;
use lastmile_roadgraph::{
    Cch, CityParams, Dijkstra, EdgePos, Graph, HighwayClass, LatLon, Metric, Route, Router,
    snapshot, synthetic,
};
use serde_json::json;

use crate::progress::Bar;

#[derive(Args)]
pub struct ImportArgs {
    /// OpenStreetMap extract (.osm.pbf).
    input: PathBuf,
    /// Snapshot to write.
    #[arg(long)]
    out: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Approximate number of directed edges.
    #[arg(long, default_value_t = 100_000)]
    edges: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Snapshot to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    Time,
    Distance,
}

#[derive(Args)]
pub struct RouteArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    /// Start as LAT,LON.
    #[arg(long, value_parser = parse_lat_lon)]
    from: LatLon,
    /// Destination as LAT,LON.
    #[arg(long, value_parser = parse_lat_lon)]
    to: LatLon,
    #[arg(long, value_enum, default_value = "time")]
    metric: MetricArg,
    /// Farthest a coordinate may be from a road to be snapped to it, metres.
    #[arg(long, default_value_t = 1_000.0)]
    max_snap_m: f64,
    /// Print the route as a GeoJSON Feature.
    #[arg(long, conflicts_with = "json")]
    geojson: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TableArgs {
    /// Graph snapshot or .osm.pbf.
    graph: PathBuf,
    /// CSV of points with a header naming `lat` and `lon` columns (any order).
    points: PathBuf,
    #[arg(long, value_enum, default_value = "time")]
    metric: MetricArg,
    #[arg(long, default_value_t = 1_000.0)]
    max_snap_m: f64,
    /// Print the matrices as one JSON object (`distances_m`, `durations_s`,
    /// row-major over the points in file order) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Size of the synthetic city in directed edges.
    #[arg(long, default_value_t = 200_000)]
    edges: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Vehicles in the live service stage.
    #[arg(long, default_value_t = 300)]
    vehicles: usize,
    /// Trace seconds per wall second in the live service stage.
    #[arg(long, default_value_t = 20.0)]
    speedup: f64,
    /// Where the live stage serves the dispatcher's map and the customer's
    /// tracking page (a free port if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// End the live service stage after this many seconds (default: at the
    /// end of the simulated day, or Ctrl-C).
    #[arg(long)]
    seconds: Option<f64>,
}

fn parse_lat_lon(s: &str) -> Result<LatLon, String> {
    let (lat, lon) = s.split_once(',').ok_or("expected LAT,LON")?;
    let p = LatLon::new(
        lat.trim()
            .parse()
            .map_err(|_| format!("bad latitude {lat:?}"))?,
        lon.trim()
            .parse()
            .map_err(|_| format!("bad longitude {lon:?}"))?,
    );
    if !p.is_valid() {
        return Err(format!("{s} is not a valid WGS84 position"));
    }
    Ok(p)
}

fn open_graph(path: &Path) -> Result<Graph> {
    let bar = Bar::new();
    let g = lastmile_roadgraph::open(path, &bar);
    bar.finish();
    Ok(g?)
}

fn road_km(g: &Graph) -> f64 {
    g.data()
        .road_length_cm
        .iter()
        .map(|c| f64::from(c.to_native()))
        .sum::<f64>()
        / 100_000.0
}

/// `components` in `import --json` and `info --json`.
fn components_json(c: &ComponentSummary) -> serde_json::Value {
    json!({
        "count": c.components, "main_nodes": c.main_nodes, "main_edges": c.main_edges,
        "other_edges": c.other_edges, "link_edges": c.link_edges, "next_largest": c.next_largest,
    })
}

fn save(g: &Graph, out: &Path) -> Result<u64> {
    Ok(snapshot::save(g, out)?)
}

pub fn import(a: ImportArgs) -> Result<()> {
    let t0 = Instant::now();
    let bar = Bar::new();
    let imported = lastmile_roadgraph::import_pbf(&a.input, &bar);
    bar.finish();
    let (data, report) = imported?;
    let g = Graph::from_data(&data);
    let bytes = save(&g, &a.out)?;
    let secs = t0.elapsed().as_secs_f64();
    let m = g.meta();
    let comps = ComponentSummary::of(&g);
    if a.json {
        println!(
            "{}",
            json!({
                "nodes": g.num_nodes(), "edges": g.num_edges(), "roads": g.num_roads(),
                "road_km": road_km(&g), "seconds": secs, "bytes": bytes,
                "components": components_json(&comps),
                "turn_restrictions": g.restrictions().len(),
                "unresolved_restrictions": m.unresolved_restrictions.to_native(),
                "skipped_restrictions": report.skipped_restrictions,
                "osm_nodes": report.osm_nodes, "osm_ways": report.osm_ways, "car_ways": report.car_ways,
                "missing_nodes": report.missing_nodes,
            })
        );
    } else {
        println!(
            "imported {}: {} nodes, {} edges, {:.1} km of road, {} turn restrictions in {:.2} s; \
             {}; wrote {} ({:.1} MB)",
            a.input.display(),
            g.num_nodes(),
            g.num_edges(),
            road_km(&g),
            g.restrictions().len(),
            secs,
            comps.describe(),
            a.out.display(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    if a.edges < 100 {
        bail!("--edges must be at least 100");
    }
    let t0 = Instant::now();
    let bar = Bar::new();
    bar.stage_spinner("generating");
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(a.edges, a.seed)));
    bar.finish();
    let bytes = save(&g, &a.out)?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({"nodes": g.num_nodes(), "edges": g.num_edges(), "road_km": road_km(&g), "seconds": secs, "bytes": bytes})
        );
    } else {
        println!(
            "generated synthetic city (seed {}): {} nodes, {} edges, {:.1} km of road in {:.2} s; wrote {} ({:.1} MB)",
            a.seed,
            g.num_nodes(),
            g.num_edges(),
            road_km(&g),
            secs,
            a.out.display(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

pub fn info(a: InfoArgs) -> Result<()> {
    let t0 = Instant::now();
    let g = open_graph(&a.graph)?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let bytes = std::fs::metadata(&a.graph)
        .with_context(|| a.graph.display().to_string())?
        .len();
    let bbox = g.bbox();
    let mut classes: Vec<(HighwayClass, usize, f64)> =
        HighwayClass::ALL.iter().map(|&c| (c, 0, 0.0)).collect();
    let lengths = &g.data().road_length_cm;
    for r in 0..g.num_roads() as u32 {
        let row = &mut classes[g.road_class(r) as usize];
        row.1 += 1;
        row.2 += f64::from(lengths[r as usize].to_native()) / 100_000.0;
    }
    classes.retain(|c| c.1 > 0);
    let m = g.meta();
    let cch = Cch::new(&g);
    let comps = ComponentSummary::of(&g);
    if a.json {
        let hist: serde_json::Map<String, serde_json::Value> = classes
            .iter()
            .map(|(c, n, km)| (c.as_str().to_string(), json!({"roads": n, "km": km})))
            .collect();
        println!(
            "{}",
            json!({
                "source": m.source.as_str(), "nodes": g.num_nodes(), "edges": g.num_edges(), "roads": g.num_roads(),
                "road_km": road_km(&g), "bbox": bbox, "bytes": bytes, "open_ms": open_ms,
                "turn_restrictions": g.restrictions().len(),
                "cch_arcs": cch.num_arcs(), "cch_levels": cch.levels(),
                "components": components_json(&comps),
                "classes": hist,
            })
        );
        return Ok(());
    }
    println!("{} ({})", a.graph.display(), m.source.as_str());
    println!("  nodes      {}", g.num_nodes());
    println!(
        "  edges      {} directed, over {} roads, {:.1} km of road",
        g.num_edges(),
        g.num_roads(),
        road_km(&g)
    );
    println!(
        "  bbox       [{:.6}, {:.6}, {:.6}, {:.6}] (min lon, min lat, max lon, max lat)",
        bbox[0], bbox[1], bbox[2], bbox[3]
    );
    println!("  bytes      {bytes}");
    println!(
        "  restrictions {} ({} unresolved)",
        g.restrictions().len(),
        m.unresolved_restrictions
    );
    println!("  components {}", comps.describe());
    println!(
        "  cch        {} arcs ({:.2} per edge), elimination tree height {}",
        cch.num_arcs(),
        cch.num_arcs() as f64 / g.num_edges().max(1) as f64,
        cch.levels()
    );
    println!("  opened in  {open_ms:.1} ms");
    println!("  {:<16} {:>9} {:>10}", "class", "roads", "km");
    for (c, n, km) in &classes {
        println!("  {:<16} {:>9} {:>10.1}", c.as_str(), n, km);
    }
    Ok(())
}

/// Where `p` meets the roads within `max_m` (see [`SnapChoice`]).
fn snap_choice(g: &Graph, p: LatLon, max_m: f64, what: &str) -> Result<SnapChoice> {
    SnapChoice::find(g, p, max_m, &mut Vec::new()).with_context(|| {
        format!(
            "no road within {max_m} m of the {what} point {:.6},{:.6}",
            p.lat, p.lon
        )
    })
}

/// Both directions of the road `p` snaps to, as route endpoints.
fn snap(g: &Graph, p: LatLon, max_m: f64, what: &str) -> Result<Vec<EdgePos>> {
    Ok(snap_choice(g, p, max_m, what)?.preferred().positions(g))
}

/// A route was asked between two points that no road joins (an answer,
/// not a failure: `route` exits with [`NoRoute::EXIT_CODE`]).
#[derive(Debug)]
pub struct NoRoute {
    pub from_component: u32,
    pub to_component: u32,
}

impl NoRoute {
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unreachable: no road leads from the start (component {}) to the destination (component {})",
            self.from_component, self.to_component
        )
    }
}

impl std::error::Error for NoRoute {}

/// The route between the preferred snaps of two points or, when those are
/// not connected, between the alternatives (the main network's road, or
/// the much closer one outside it).
fn find_route(router: &mut Router, from: LatLon, to: LatLon, max_snap_m: f64) -> Result<Route> {
    let g = router.graph();
    let (a, b) = (
        snap_choice(g, from, max_snap_m, "start")?,
        snap_choice(g, to, max_snap_m, "destination")?,
    );
    Ok(route_between(router, &a, &b)?)
}

/// [`find_route`] between points already snapped.
fn route_between(
    router: &mut Router,
    a: &SnapChoice,
    b: &SnapChoice,
) -> std::result::Result<Route, NoRoute> {
    let g = router.graph();
    let tries = [
        Some((a.preferred(), b.preferred())),
        a.alternative().map(|x| (x, b.preferred())),
        b.alternative().map(|y| (a.preferred(), y)),
        a.alternative().zip(b.alternative()),
    ];
    for (x, y) in tries.into_iter().flatten() {
        if let Some(r) = router.route(&x.positions(g), &y.positions(g)) {
            return Ok(r);
        }
    }
    Err(NoRoute {
        from_component: a.preferred().component,
        to_component: b.preferred().component,
    })
}

fn describe(r: &Route) -> String {
    let secs = r.duration_s.round() as u64;
    format!(
        "{:.2} km, {} min {:02} s ({:.1} s), {} edges",
        r.distance_m / 1000.0,
        secs / 60,
        secs % 60,
        r.duration_s,
        r.edges.len()
    )
}

pub fn route(a: RouteArgs) -> Result<()> {
    let g = open_graph(&a.graph)?;
    let metric = match a.metric {
        MetricArg::Time => Metric::Time,
        MetricArg::Distance => Metric::Distance,
    };
    let r = match find_route(&mut Router::new(&g, metric), a.from, a.to, a.max_snap_m) {
        Ok(r) => r,
        Err(e) => {
            if let Some(n) = e.downcast_ref::<NoRoute>()
                && (a.json || a.geojson)
            {
                println!(
                    "{}",
                    json!({"code": "NoRoute", "message": n.to_string(),
                           "from_component": n.from_component, "to_component": n.to_component})
                );
            }
            return Err(e);
        }
    };
    let way_ids: Vec<i64> = r.edges.iter().map(|&e| g.way_id(e)).collect();
    if a.geojson {
        let coords: Vec<[f64; 2]> = r.geometry(&g).iter().map(|p| [p.lon, p.lat]).collect();
        println!(
            "{}",
            json!({
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": coords},
                "properties": {"distance_m": r.distance_m, "duration_s": r.duration_s, "edges": r.edges, "way_ids": way_ids},
            })
        );
    } else if a.json {
        println!(
            "{}",
            json!({"distance_m": r.distance_m, "duration_s": r.duration_s, "edges": r.edges, "way_ids": way_ids})
        );
    } else {
        println!("{}", describe(&r));
    }
    Ok(())
}

pub fn demo(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let bar = Bar::new();
    bar.stage_spinner("generating city");
    let data = synthetic::generate_city(&CityParams::new(a.edges, a.seed));
    bar.finish();
    let gen_s = t0.elapsed().as_secs_f64();
    println!(
        "generated a synthetic city of {} edges (seed {}) in {gen_s:.2} s",
        data.head.len(),
        a.seed
    );

    let dir = std::env::temp_dir().join(format!("lastmile-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let path = dir.join("city.graph");
    let bytes = save(&Graph::from_data(&data), &path)?;
    drop(data);
    let t1 = Instant::now();
    let g = snapshot::load(&path)?;
    let load_ms = t1.elapsed().as_secs_f64() * 1e3;
    println!(
        "snapshot {} ({:.1} MB) mapped in {load_ms:.1} ms",
        path.display(),
        bytes as f64 / 1e6
    );

    info(InfoArgs {
        graph: path.clone(),
        json: false,
    })?;

    // Across the region: from the main network's junction nearest its
    // south-west corner to the one nearest its north-east corner (corners
    // may be open country).
    let b = g.bbox();
    let nearest_node = |lat: f64, lon: f64| {
        (0..g.num_nodes() as u32)
            .filter(|&v| g.component(v) == 0)
            .map(|v| g.node_pos(v))
            .min_by(|p, q| {
                let d = |x: &LatLon| (x.lat - lat).powi(2) + (x.lon - lon).powi(2);
                d(p).total_cmp(&d(q))
            })
            .expect("a graph has nodes")
    };
    let from = nearest_node(b[1], b[0]);
    let to = nearest_node(b[3], b[2]);
    let t2 = Instant::now();
    let mut router = Router::new(&g, Metric::Time);
    let custom_ms = t2.elapsed().as_secs_f64() * 1e3;
    g.edge_index();
    let sources = snap(&g, from, 1_000.0, "start")?;
    let targets = snap(&g, to, 1_000.0, "destination")?;
    let t3 = Instant::now();
    let r = router
        .route(&sources, &targets)
        .context("no route across the city")?;
    let cch_us = t3.elapsed().as_secs_f64() * 1e6;
    let t4 = Instant::now();
    let reference = Dijkstra::new(&g)
        .route(&g, &Metric::Time, &sources, &targets)
        .context("no route across the city")?;
    let dijkstra_us = t4.elapsed().as_secs_f64() * 1e6;
    anyhow::ensure!(
        reference.cost == r.cost,
        "CCH and Dijkstra disagree: {} vs {}",
        r.cost,
        reference.cost
    );
    println!(
        "route {:.5},{:.5} -> {:.5},{:.5}: {}; CCH customized in {custom_ms:.0} ms, query {cch_us:.0} µs (Dijkstra: {dijkstra_us:.0} µs, same cost)",
        from.lat,
        from.lon,
        to.lat,
        to.lon,
        describe(&r)
    );
    crate::tracking::demo_matching(&g)?;
    let g = std::sync::Arc::new(g);
    crate::bench::demo_fleet(&g)?;
    crate::live_demo::run(
        &g,
        &dir,
        &crate::live_demo::LiveParams {
            vehicles: a.vehicles,
            day_s: 2.0 * 3600.0,
            speedup: a.speedup,
            seconds: a.seconds,
            http: a.http,
        },
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("demo done in {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Reads `lat`/`lon` columns of a CSV with a header.
fn read_points(path: &Path) -> Result<Vec<LatLon>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(lat), Some(lon)) = (col("lat"), col("lon")) else {
        bail!(
            "{}: the header must name `lat` and `lon` columns",
            path.display()
        );
    };
    lines
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let field = |c: usize| fields.get(c).and_then(|f| f.parse::<f64>().ok());
            let p = LatLon::new(
                field(lat).unwrap_or(f64::NAN),
                field(lon).unwrap_or(f64::NAN),
            );
            if !p.is_valid() {
                bail!(
                    "{}: line {}: not a valid lat,lon position: {line}",
                    path.display(),
                    i + 2
                );
            }
            Ok(p)
        })
        .collect()
}

pub fn table(a: TableArgs) -> Result<()> {
    let points = read_points(&a.points)?;
    let g = open_graph(&a.graph)?;
    let metric = match a.metric {
        MetricArg::Time => Metric::Time,
        MetricArg::Distance => Metric::Distance,
    };
    let places: Vec<SnapChoice> = points
        .iter()
        .enumerate()
        .map(|(i, &p)| snap_choice(&g, p, a.max_snap_m, &format!("#{}", i + 1)))
        .collect::<Result<_>>()?;
    let mut router = Router::new(&g, metric);
    let n = places.len();
    let (mut distances, mut durations) = (vec![vec![None; n]; n], vec![vec![None; n]; n]);
    for (i, from) in places.iter().enumerate() {
        for (j, to) in places.iter().enumerate() {
            if let Ok(r) = route_between(&mut router, from, to) {
                distances[i][j] = Some(r.distance_m);
                durations[i][j] = Some(r.duration_s);
            }
        }
    }
    if a.json {
        let name = match metric {
            Metric::Time => "time",
            Metric::Distance => "distance",
        };
        println!(
            "{}",
            json!({"distances_m": distances, "durations_s": durations, "metric": name})
        );
        return Ok(());
    }
    // A readable matrix: duration (minutes) and distance (km) per cell.
    print!("{:>6}", "from\\to");
    for j in 0..n {
        print!(" {:>19}", j + 1);
    }
    println!();
    for i in 0..n {
        print!("{:>6}", i + 1);
        for j in 0..n {
            match (durations[i][j], distances[i][j]) {
                (Some(t), Some(d)) => print!(" {:>7.1} min {:>4.1} km", t / 60.0, d / 1000.0),
                _ => print!(" {:>19}", "unreachable"),
            }
        }
        println!();
    }
    Ok(())
}
