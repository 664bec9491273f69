//! The map's base layer, drawn from the road graph the node already holds
//! (a deployment reaches no tile server, so the pages draw the roads
//! themselves): roads by class, fewer and simpler the further out one
//! zooms, served by box, either as a web-map tile (`/api/v1/roads/{z}/{x}/{y}`,
//! Web Mercator as every web map, coordinates in the tile's pixels) or as
//! any box (`/api/v1/roads?bbox=…&zoom=…`, coordinates in degrees).
//!
//! Built once, in the background when the server starts: per zoom band,
//! the classes drawn at that zoom, each road simplified (Douglas–Peucker)
//! to half a pixel at the band's deepest zoom, and a grid of cells
//! indexing them, so a tile reads only the cells it covers.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lastmile_roadgraph::{Graph, HighwayClass, LatLon};
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::{ApiError, Web};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/map", get(map))
        .route("/api/v1/roads", get(in_box))
        .route("/api/v1/roads/{z}/{x}/{y}", get(tile))
}

/// World coordinates: Web Mercator scaled to `0..2^32` (x east, y south).
type World = [u32; 2];

const WORLD: f64 = 4_294_967_296.0;

fn world(p: LatLon) -> World {
    let lat = p.lat.clamp(-85.051_128, 85.051_128).to_radians();
    let x = (p.lon + 180.0) / 360.0;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0;
    let scale = |v: f64| (v * WORLD).clamp(0.0, WORLD - 1.0) as u32;
    [scale(x), scale(y)]
}

fn unworld(w: World) -> LatLon {
    let (x, y) = (f64::from(w[0]) / WORLD, f64::from(w[1]) / WORLD);
    let n = std::f64::consts::PI * (1.0 - 2.0 * y);
    LatLon::new(n.sinh().atan().to_degrees(), x * 360.0 - 180.0)
}

/// Zoom bands: the deepest zoom of the band, and the slowest class drawn.
/// Deeper than the last band, everything is drawn at full detail.
const BANDS: [(u8, HighwayClass); 5] = [
    (9, HighwayClass::TrunkLink),
    (11, HighwayClass::PrimaryLink),
    (13, HighwayClass::TertiaryLink),
    (14, HighwayClass::LivingStreet),
    (17, HighwayClass::Service),
];

/// Most roads in one answer (then `truncated`).
const MAX_ROADS: usize = 50_000;

/// Deepest zoom asked for.
const MAX_ZOOM: u8 = 22;

/// One zoom band's roads and their index.
struct Band {
    /// Deepest zoom it serves.
    zoom: u8,
    class: Vec<u8>,
    /// Road `i`'s points are `points[first[i]..first[i + 1]]`.
    first: Vec<u32>,
    points: Vec<World>,
    /// Zoom level whose tiles are the grid's cells.
    cell_zoom: u8,
    /// (cell x << 32 | cell y, road), sorted.
    cells: Vec<(u64, u32)>,
}

/// The road layer of a graph.
pub struct RoadLayer {
    bands: Vec<Band>,
    bbox: [f64; 4],
}

impl RoadLayer {
    pub fn build(graph: &Graph) -> Self {
        let bands = BANDS
            .iter()
            .map(|&(zoom, slowest)| Band::build(graph, zoom, slowest))
            .collect();
        Self {
            bands,
            bbox: graph.bbox(),
        }
    }

    fn band(&self, zoom: u8) -> &Band {
        self.bands
            .iter()
            .find(|b| zoom <= b.zoom)
            .unwrap_or_else(|| &self.bands[self.bands.len() - 1])
    }

    /// Roads drawn at `zoom` that may cross `[min, max]` (world), each once:
    /// its class and points; and whether [`MAX_ROADS`] cut the answer.
    fn roads(&self, zoom: u8, min: World, max: World) -> (Vec<(u8, &[World])>, bool) {
        let band = self.band(zoom);
        let shift = 32 - u32::from(band.cell_zoom);
        let (cx0, cx1) = (min[0] >> shift, max[0] >> shift);
        let (cy0, cy1) = (u64::from(min[1] >> shift), u64::from(max[1] >> shift));
        let mut ids: Vec<u32> = Vec::new();
        for cx in cx0..=cx1 {
            let key = |cy: u64| (u64::from(cx) << 32) | cy;
            let lo = band.cells.partition_point(|e| e.0 < key(cy0));
            let hi = band.cells.partition_point(|e| e.0 <= key(cy1));
            ids.extend(band.cells[lo..hi].iter().map(|e| e.1));
        }
        ids.sort_unstable();
        ids.dedup();
        // A cell is larger than a deep tile: keep the roads whose own box
        // meets the one asked.
        let mut roads: Vec<(u8, &[World])> = ids
            .into_iter()
            .map(|i| {
                let (a, b) = (band.first[i as usize], band.first[i as usize + 1]);
                (band.class[i as usize], &band.points[a as usize..b as usize])
            })
            .filter(|(_, pts)| {
                (0..2).all(|d| {
                    pts.iter().any(|p| p[d] >= min[d]) && pts.iter().any(|p| p[d] <= max[d])
                })
            })
            .collect();
        let truncated = roads.len() > MAX_ROADS;
        roads.truncate(MAX_ROADS);
        (roads, truncated)
    }
}

impl Band {
    fn build(graph: &Graph, zoom: u8, slowest: HighwayClass) -> Self {
        // Half a pixel of a 256-pixel tile at the band's deepest zoom.
        let tolerance = WORLD / f64::from(1u32 << zoom) / 256.0 / 2.0;
        let cell_zoom = zoom.min(15);
        let shift = 32 - u32::from(cell_zoom);
        let mut band = Self {
            zoom,
            class: Vec::new(),
            first: vec![0],
            points: Vec::new(),
            cell_zoom,
            cells: Vec::new(),
        };
        let mut line: Vec<World> = Vec::new();
        for r in 0..graph.num_roads() as u32 {
            let class = graph.road_class(r);
            if class > slowest {
                continue;
            }
            line.clear();
            line.extend(graph.road_geometry(r).map(world));
            let kept = simplify(&line, tolerance);
            let i = band.class.len() as u32;
            let (mut lo, mut hi) = ([u32::MAX; 2], [0u32; 2]);
            for &k in &kept {
                let p = line[k];
                band.points.push(p);
                for d in 0..2 {
                    lo[d] = lo[d].min(p[d]);
                    hi[d] = hi[d].max(p[d]);
                }
            }
            band.class.push(class as u8);
            band.first.push(band.points.len() as u32);
            for cx in lo[0] >> shift..=hi[0] >> shift {
                for cy in lo[1] >> shift..=hi[1] >> shift {
                    band.cells.push(((u64::from(cx) << 32) | u64::from(cy), i));
                }
            }
        }
        band.cells.sort_unstable();
        band
    }
}

/// Indices of the points of `line` Douglas–Peucker keeps within
/// `tolerance` (world units), the ends always.
fn simplify(line: &[World], tolerance: f64) -> Vec<usize> {
    if line.len() <= 2 {
        return (0..line.len()).collect();
    }
    let mut keep = vec![false; line.len()];
    keep[0] = true;
    keep[line.len() - 1] = true;
    let mut todo = vec![(0, line.len() - 1)];
    let f = |p: World| [f64::from(p[0]), f64::from(p[1])];
    while let Some((a, b)) = todo.pop() {
        let (pa, pb) = (f(line[a]), f(line[b]));
        let (dx, dy) = (pb[0] - pa[0], pb[1] - pa[1]);
        let len2 = dx * dx + dy * dy;
        let mut worst = (0.0, a);
        for (k, &p) in line.iter().enumerate().take(b).skip(a + 1) {
            let p = f(p);
            let t = if len2 > 0.0 {
                (((p[0] - pa[0]) * dx + (p[1] - pa[1]) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (pa[0] + t * dx - p[0], pa[1] + t * dy - p[1]);
            let d = (ex * ex + ey * ey).sqrt();
            if d > worst.0 {
                worst = (d, k);
            }
        }
        if worst.0 > tolerance {
            keep[worst.1] = true;
            todo.push((a, worst.1));
            todo.push((worst.1, b));
        }
    }
    (0..line.len()).filter(|&k| keep[k]).collect()
}

/// The layer, once built (the server builds it in the background at start).
pub fn layer(web: &Web) -> Result<&Arc<RoadLayer>, ApiError> {
    web.roads.get().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the road map is still being prepared: try again in a moment",
        )
    })
}

/// Starts building the layer of the node's graph on a thread of its own.
pub fn prepare(web: &Arc<Web>) {
    let Some(engine) = web.node.sink.engine().cloned() else {
        return;
    };
    let web = Arc::downgrade(web);
    std::thread::Builder::new()
        .name("road-layer".into())
        .spawn(move || {
            let layer = Arc::new(RoadLayer::build(engine.graph()));
            if let Some(web) = web.upgrade() {
                let _ = web.roads.set(layer);
            }
        })
        .ok();
}

/// Class names by number, for the answers' `classes`.
fn class_names() -> Vec<&'static str> {
    HighwayClass::ALL.iter().map(|c| c.as_str()).collect()
}

/// The roads don't change while the server runs: let the browser keep them.
fn cached(body: Value) -> Response {
    (
        [(header::CACHE_CONTROL, "private, max-age=3600")],
        Json(body),
    )
        .into_response()
}

/// What the map covers: the graph's box (`[min_lat, min_lon, max_lat,
/// max_lon]`) and the class names the road answers number.
async fn map(State(web): State<Arc<Web>>, _c: Caller) -> Result<Response, ApiError> {
    let l = layer(&web)?;
    let [min_lon, min_lat, max_lon, max_lat] = l.bbox;
    Ok(cached(json!({
        "bbox": [min_lat, min_lon, max_lat, max_lon],
        "classes": class_names(),
        "max_zoom": MAX_ZOOM,
    })))
}

/// A web-map tile: roads as `[class, x0, y0, x1, y1, …]` in quarter pixels
/// of the 256-pixel tile (they may run past its edges).
async fn tile(
    State(web): State<Arc<Web>>,
    _c: Caller,
    Path((z, x, y)): Path<(u8, u32, String)>,
) -> Result<Response, ApiError> {
    let y: u32 = y
        .strip_suffix(".json")
        .unwrap_or(&y)
        .parse()
        .map_err(|_| ApiError::bad_value("tile y: not a number"))?;
    if z > MAX_ZOOM || u64::from(x) >= 1u64 << z || u64::from(y) >= 1u64 << z {
        return Err(ApiError::bad_value(format!(
            "no tile {z}/{x}/{y} (zoom 0 to {MAX_ZOOM}, x and y below 2^zoom)"
        )));
    }
    let l = layer(&web)?;
    let shift = 32 - u32::from(z);
    // The tile grown by an eighth on every side, for lines' widths.
    let size = 1u64 << shift;
    let grow = size / 8;
    let lo = |v: u32| ((u64::from(v) << shift).saturating_sub(grow)) as u32;
    let hi = |v: u32| ((u64::from(v) << shift) + size + grow).min(WORLD as u64 - 1) as u32;
    let (min, max) = ([lo(x), lo(y)], [hi(x), hi(y)]);
    let (roads, truncated) = l.roads(z, min, max);
    // World units per quarter pixel at this zoom.
    let unit = (size / 1024).max(1) as f64;
    let origin = [
        (u64::from(x) << shift) as f64,
        (u64::from(y) << shift) as f64,
    ];
    let roads: Vec<Value> = roads
        .into_iter()
        .map(|(class, pts)| {
            let mut v = Vec::with_capacity(1 + 2 * pts.len());
            v.push(json!(class));
            for p in pts {
                for d in 0..2 {
                    v.push(json!(((f64::from(p[d]) - origin[d]) / unit).round() as i64));
                }
            }
            Value::Array(v)
        })
        .collect();
    Ok(cached(json!({"roads": roads, "truncated": truncated})))
}

#[derive(serde::Deserialize)]
struct BoxQuery {
    /// `min_lat,min_lon,max_lat,max_lon`.
    bbox: String,
    zoom: u8,
}

/// Any box: roads as `{class, line: [[lat, lon], …]}`.
async fn in_box(
    State(web): State<Arc<Web>>,
    _c: Caller,
    Query(q): Query<BoxQuery>,
) -> Result<Response, ApiError> {
    let [min_lat, min_lon, max_lat, max_lon] = crate::api::numbers::<4>(&q.bbox, "bbox")?;
    if min_lat > max_lat || min_lon > max_lon || q.zoom > MAX_ZOOM {
        return Err(ApiError::bad_value(format!(
            "bbox must have min before max, zoom at most {MAX_ZOOM}"
        )));
    }
    let l = layer(&web)?;
    let (a, b) = (
        world(LatLon::new(max_lat, min_lon)),
        world(LatLon::new(min_lat, max_lon)),
    );
    let (roads, truncated) = l.roads(q.zoom, a, b);
    let round = |x: f64| (x * 1e6).round() / 1e6;
    let roads: Vec<Value> = roads
        .into_iter()
        .map(|(class, pts)| {
            let line: Vec<[f64; 2]> = pts
                .iter()
                .map(|&p| {
                    let q = unworld(p);
                    [round(q.lat), round(q.lon)]
                })
                .collect();
            json!({"class": HighwayClass::ALL[usize::from(class)].as_str(), "line": line})
        })
        .collect();
    Ok(cached(json!({"roads": roads, "truncated": truncated})))
}

/// The layer is shared by every request once built.
pub type Slot = OnceLock<Arc<RoadLayer>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_coordinates_round_trip() {
        for (lat, lon) in [(0.0, 0.0), (47.37, 8.54), (-33.9, 151.2), (41.15, -8.61)] {
            let p = unworld(world(LatLon::new(lat, lon)));
            assert!(
                (p.lat - lat).abs() < 1e-6 && (p.lon - lon).abs() < 1e-6,
                "{p:?}"
            );
        }
    }

    #[test]
    fn simplification_keeps_the_ends_and_the_corners() {
        let line: Vec<World> = vec![[0, 0], [100, 1], [200, 0], [200, 300], [201, 600]];
        assert_eq!(simplify(&line, 5.0), vec![0, 2, 4]);
        assert_eq!(simplify(&line, 0.1), vec![0, 1, 2, 3, 4]);
        assert_eq!(simplify(&line[..2], 1e9), vec![0, 1]);
    }

    #[test]
    fn a_tile_finds_the_roads_through_it_and_far_zooms_draw_fewer() {
        use lastmile_roadgraph::synthetic::{CityParams, generate_city};
        let g = Graph::from_data(&generate_city(&CityParams::new(20_000, 1)));
        let layer = RoadLayer::build(&g);
        let [min_lon, min_lat, max_lon, max_lat] = g.bbox();
        let all = layer.roads(
            17,
            world(LatLon::new(max_lat, min_lon)),
            world(LatLon::new(min_lat, max_lon)),
        );
        assert_eq!(all.0.len(), g.num_roads(), "deep zooms draw every road");
        // Every road crossing a small box is found: checked against a scan.
        let c = LatLon::new((min_lat + max_lat) / 2.0, (min_lon + max_lon) / 2.0);
        let (a, b) = (
            world(LatLon::new(c.lat + 0.002, c.lon - 0.002)),
            world(LatLon::new(c.lat - 0.002, c.lon + 0.002)),
        );
        let (found, _) = layer.roads(17, a, b);
        let inside = |p: &World| (a[0]..=b[0]).contains(&p[0]) && (a[1]..=b[1]).contains(&p[1]);
        let want = (0..g.num_roads() as u32)
            .filter(|&r| g.road_geometry(r).map(world).any(|p| inside(&p)))
            .count();
        let got = found
            .iter()
            .filter(|(_, pts)| pts.iter().any(inside))
            .count();
        assert!(want > 0 && got == want, "found {got} of {want}");
        let far = layer.roads(
            9,
            world(LatLon::new(max_lat, min_lon)),
            world(LatLon::new(min_lat, max_lon)),
        );
        assert!(
            far.0.len() < all.0.len() / 4,
            "{} of {}",
            far.0.len(),
            all.0.len()
        );
    }
}
