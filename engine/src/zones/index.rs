//! A fleet's zones, found by position: a grid of cells of
//! [`CELL_DEG`] degrees, each listing the zones whose bounds (widened by
//! the detectors' margin) touch it, so that a ping tests only the zones
//! near it, and of those only the ones whose widened bounds hold it. Zones
//! too wide to list cell by cell (an allowed area the size of a region)
//! are kept apart and their bounds checked at every position; they are
//! few.

use std::collections::HashMap;

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::METRES_PER_DEGREE;

use super::def::ZoneKind;
use super::shape::{Bounds, Shape};

/// A zone's id: the fleet's own string id, numbered by the node's names.
pub type ZoneId = u64;

/// Side of the grid's cells, degrees (about 1.1 km north to south).
pub const CELL_DEG: f64 = 0.01;
/// A zone covering more cells than this is tested for every position.
const MAX_CELLS_PER_ZONE: usize = 4096;
/// Cells around the globe, east to west.
const CELLS_AROUND: i64 = (360.0 / CELL_DEG) as i64;

/// A zone as the detectors read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub id: ZoneId,
    pub shape: Shape,
    /// `zone_dwell` once a vehicle has been inside this long, seconds.
    pub dwell_s: Option<f64>,
    /// What the fleet's rules make of it.
    pub kind: ZoneKind,
    /// `zone_speeding` above this inside it, km/h.
    pub speed_limit_kmh: Option<f64>,
}

/// Numbers every [`ZoneSet`] made in this process.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The zones of one fleet, indexed.
#[derive(Debug, Clone, Default)]
pub struct ZoneSet {
    /// Different for every set made (0 for the empty default): a vehicle
    /// that skipped measuring a zone's border since an earlier set measures
    /// again, since the zone may have changed.
    generation: u64,
    zones: Vec<Zone>,
    /// Each zone's bounds widened by the margin: most zones a cell lists
    /// are not near a given position, and this tells so in four
    /// comparisons.
    bounds: Vec<Bounds>,
    /// Zone id → index into `zones`.
    by_id: HashMap<ZoneId, u32>,
    /// Cell → indices into `zones`.
    cells: HashMap<(i64, i64), Vec<u32>>,
    /// Indices of the zones too wide for the grid.
    wide: Vec<u32>,
    /// Some zone is of kind `allowed`: vehicles outside every one are
    /// outside their area.
    has_allowed: bool,
}

fn cell_of(lat: f64, lon: f64) -> (i64, i64) {
    let y = (lat / CELL_DEG).floor() as i64;
    let x = ((lon / CELL_DEG).floor() as i64).rem_euclid(CELLS_AROUND);
    (y, x)
}

impl ZoneSet {
    /// Indexes `zones`, each with its bounds widened by `margin_m`.
    pub fn new(zones: Vec<Zone>, margin_m: f64) -> Self {
        let mut cells: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        let mut wide = Vec::new();
        let mut bounds = Vec::with_capacity(zones.len());
        let dlat = margin_m / METRES_PER_DEGREE;
        for (k, z) in zones.iter().enumerate() {
            let b = z.shape.bounds();
            let cos = ((b.min_lat.abs().max(b.max_lat.abs())).to_radians().cos()).max(1e-3);
            let dlon = dlat / cos;
            bounds.push(Bounds {
                min_lat: b.min_lat - dlat,
                max_lat: b.max_lat + dlat,
                min_lon: b.min_lon - dlon,
                max_lon: b.max_lon + dlon,
            });
            let (y0, x0) = (
                ((b.min_lat - dlat) / CELL_DEG).floor() as i64,
                ((b.min_lon - dlon) / CELL_DEG).floor() as i64,
            );
            let (y1, x1) = (
                ((b.max_lat + dlat) / CELL_DEG).floor() as i64,
                ((b.max_lon + dlon) / CELL_DEG).floor() as i64,
            );
            let count = (y1 - y0 + 1).saturating_mul(x1 - x0 + 1);
            if count > MAX_CELLS_PER_ZONE as i64 {
                wide.push(k as u32);
                continue;
            }
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let cell = (y, x.rem_euclid(CELLS_AROUND));
                    cells.entry(cell).or_default().push(k as u32);
                }
            }
        }
        let by_id = zones
            .iter()
            .enumerate()
            .map(|(k, z)| (z.id, k as u32))
            .collect();
        let has_allowed = zones.iter().any(|z| z.kind == ZoneKind::Allowed);
        Self {
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            zones,
            bounds,
            by_id,
            cells,
            wide,
            has_allowed,
        }
    }

    /// Whether the fleet has drawn an area its vehicles may work in.
    pub fn has_allowed(&self) -> bool {
        self.has_allowed
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn get(&self, id: ZoneId) -> Option<&Zone> {
        self.by_id.get(&id).map(|&k| &self.zones[k as usize])
    }

    /// The zones whose widened bounds hold `p` (every zone that holds it
    /// or lies within the margin of it is among them).
    pub fn near(&self, p: LatLon) -> impl Iterator<Item = &Zone> {
        let (y, x) = cell_of(p.lat, p.lon);
        self.cells
            .get(&(y, x))
            .into_iter()
            .flatten()
            .chain(&self.wide)
            .filter(move |&&k| {
                let b = &self.bounds[k as usize];
                // Longitudes unwrapped to the bounds' middle.
                let mid = (b.min_lon + b.max_lon) / 2.0;
                let lon = mid + (p.lon - mid + 540.0).rem_euclid(360.0) - 180.0;
                (b.min_lat..=b.max_lat).contains(&p.lat) && (b.min_lon..=b.max_lon).contains(&lon)
            })
            .map(|&k| &self.zones[k as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    fn circle(id: ZoneId, lat: f64, lon: f64, r: f64) -> Zone {
        Zone {
            id,
            shape: Shape::circle(ll(lat, lon), r).unwrap(),
            dwell_s: None,
            kind: ZoneKind::Plain,
            speed_limit_kmh: None,
        }
    }

    #[test]
    fn a_position_finds_the_zones_that_may_hold_it_and_no_far_one() {
        let set = ZoneSet::new(
            vec![
                circle(1, 43.7300, 7.4200, 100.0),
                circle(2, 43.7600, 7.4600, 100.0),
                // Across the antimeridian.
                circle(3, -16.8, 179.9995, 300.0),
            ],
            20.0,
        );
        let ids = |p: LatLon| set.near(p).map(|z| z.id).collect::<Vec<_>>();
        assert_eq!(ids(ll(43.7301, 7.4201)), [1]);
        assert_eq!(ids(ll(43.7601, 7.4601)), [2]);
        assert!(ids(ll(43.80, 7.50)).is_empty());
        // Every position within the zone or its margin finds it.
        for (dlat, dlon) in [(0.0009, 0.0), (-0.0010, 0.0), (0.0, 0.0014), (0.0, -0.0014)] {
            assert!(
                ids(ll(43.73 + dlat, 7.42 + dlon)).contains(&1),
                "{dlat} {dlon}"
            );
        }
        assert_eq!(ids(ll(-16.8, -179.9995)), [3]);
        assert_eq!(ids(ll(-16.8, 179.999)), [3]);
    }

    #[test]
    fn a_wide_zone_is_tested_everywhere() {
        let area = Zone {
            id: 9,
            shape: Shape::polygon(vec![vec![
                ll(40.0, 0.0),
                ll(40.0, 5.0),
                ll(45.0, 5.0),
                ll(45.0, 0.0),
            ]])
            .unwrap(),
            dwell_s: None,
            kind: ZoneKind::Plain,
            speed_limit_kmh: None,
        };
        let set = ZoneSet::new(vec![area, circle(1, 43.73, 7.42, 100.0)], 20.0);
        assert_eq!(set.wide, [0]);
        assert!(set.near(ll(42.0, 2.5)).any(|z| z.id == 9));
        assert!(
            !set.near(ll(-30.0, 100.0)).any(|z| z.id == 9),
            "far outside its bounds"
        );
        assert_eq!(set.len(), 2);
        assert!(set.get(1).is_some() && set.get(5).is_none());
    }
}
