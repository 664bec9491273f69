//! The live-vehicle index: spatial queries (nearest K vehicles to a point,
//! all vehicles in a box) against an R-tree of the vehicles' latest matched
//! positions, rebuilt from them, say once a second, and swapped in whole.
//! The positions themselves live where the shards publish each vehicle's
//! state (the engine's snapshot table, read point by point without this
//! index); a rebuild takes them from there. Queries hold the tree they
//! started with, so they never wait for the shards and the shards never
//! wait for them; answers are as fresh as the last rebuild.
//!
//! Points are kept on a sphere in 3-D (metres), where straight-line distance
//! grows with great-circle distance, so "nearest" is exact anywhere on Earth,
//! the poles and the antimeridian included.

use std::sync::{Arc, RwLock};

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::{EARTH_RADIUS_M, haversine_m};
use rstar::{AABB, PointDistance, RTree, RTreeObject};

/// What the index knows of a vehicle: where and when it was last matched.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct LivePosition {
    /// Event time of the ping, seconds.
    pub time: f64,
    pub pos: LatLon,
    pub edge: u32,
    pub offset_m: f64,
    /// Metres per second, as last estimated.
    pub speed_mps: f32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    xyz: [f64; 3],
    vehicle: u64,
    at: LivePosition,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 3]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for Entry {
    fn distance_2(&self, p: &[f64; 3]) -> f64 {
        (0..3).map(|i| (self.xyz[i] - p[i]).powi(2)).sum()
    }
}

/// A point on the sphere of the Earth's mean radius, metres.
fn xyz(p: LatLon) -> [f64; 3] {
    let (lat, lon) = (p.lat.to_radians(), p.lon.to_radians());
    [
        EARTH_RADIUS_M * lat.cos() * lon.cos(),
        EARTH_RADIUS_M * lat.cos() * lon.sin(),
        EARTH_RADIUS_M * lat.sin(),
    ]
}

/// A vehicle found by a spatial query.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Found {
    pub vehicle: u64,
    pub at: LivePosition,
    /// Great-circle metres from the query point (0 for box queries).
    pub distance_m: f64,
}

struct Published {
    tree: RTree<Entry>,
    built_at: f64,
}

/// The spatial index over the vehicles' positions; share it by `Arc`.
pub struct LiveIndex {
    published: RwLock<Arc<Published>>,
}

impl Default for LiveIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveIndex {
    pub fn new() -> Self {
        Self {
            published: RwLock::new(Arc::new(Published {
                tree: RTree::new(),
                built_at: f64::NEG_INFINITY,
            })),
        }
    }

    /// Vehicles in the index (as of the last rebuild).
    pub fn len(&self) -> usize {
        self.current().tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds the spatial index from the vehicles' latest positions (bulk
    /// load) and swaps it in; `now` is recorded as its age. Positions that
    /// are not valid coordinates at a finite time are left out.
    pub fn rebuild(&self, now: f64, positions: impl IntoIterator<Item = (u64, LivePosition)>) {
        let entries: Vec<Entry> = positions
            .into_iter()
            .filter(|(_, at)| at.pos.is_valid() && at.time.is_finite())
            .map(|(vehicle, at)| Entry {
                xyz: xyz(at.pos),
                vehicle,
                at,
            })
            .collect();
        let fresh = Arc::new(Published {
            tree: RTree::bulk_load(entries),
            built_at: now,
        });
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// When the spatial index was last rebuilt.
    pub fn built_at(&self) -> f64 {
        self.current().built_at
    }

    fn current(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `k` vehicles nearest to `p`, nearest first, as of the last rebuild.
    pub fn nearest(&self, p: LatLon, k: usize, out: &mut Vec<Found>) {
        out.clear();
        if !p.is_valid() {
            return;
        }
        let published = self.current();
        let q = xyz(p);
        out.extend(
            published
                .tree
                .nearest_neighbor_iter(&q)
                .take(k)
                .map(|e| Found {
                    vehicle: e.vehicle,
                    at: e.at,
                    distance_m: haversine_m(p, e.at.pos),
                }),
        );
    }

    /// Every vehicle inside the box `[min_lon, min_lat, max_lon, max_lat]`
    /// (a box with `min_lon > max_lon` crosses the antimeridian), as of the
    /// last rebuild.
    pub fn in_box(&self, b: [f64; 4], out: &mut Vec<Found>) {
        out.clear();
        let [min_lon, min_lat, max_lon, max_lat] = b;
        if b.iter().any(|v| !v.is_finite()) || min_lat > max_lat {
            return;
        }
        if min_lon > max_lon {
            let mut east = Vec::new();
            self.in_box([min_lon, min_lat, 180.0, max_lat], &mut east);
            self.in_box([-180.0, min_lat, max_lon, max_lat], out);
            out.extend(east);
            return;
        }
        let published = self.current();
        let inside = |p: LatLon| {
            (min_lat..=max_lat).contains(&p.lat) && (min_lon..=max_lon).contains(&p.lon)
        };
        let envelope = sphere_envelope(b);
        out.extend(
            published
                .tree
                .locate_in_envelope(&envelope)
                .filter(|e| inside(e.at.pos))
                .map(|e| Found {
                    vehicle: e.vehicle,
                    at: e.at,
                    distance_m: 0.0,
                }),
        );
    }
}

/// A 3-D box holding every point of a lat/lon box: the extremes of a grid
/// of points over it, padded by how far the sphere can bulge between them.
fn sphere_envelope(b: [f64; 4]) -> AABB<[f64; 3]> {
    const N: usize = 16;
    let [min_lon, min_lat, max_lon, max_lat] = b;
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for i in 0..=N {
        for j in 0..=N {
            let p = LatLon::new(
                min_lat + (max_lat - min_lat) * i as f64 / N as f64,
                min_lon + (max_lon - min_lon) * j as f64 / N as f64,
            );
            let q = xyz(p);
            for k in 0..3 {
                lo[k] = lo[k].min(q[k]);
                hi[k] = hi[k].max(q[k]);
            }
        }
    }
    // Each coordinate is a smooth function of (lat, lon) with second
    // derivatives at most R (radians), so inside a grid cell of side s it
    // exceeds its values at the corners by at most about R·s²/8 per
    // direction: pad by twice R(1 - cos(s/2)) ≈ R·s²/4, plus a metre.
    let step = ((max_lat - min_lat).max(max_lon - min_lon) / N as f64).to_radians();
    let pad =
        2.0 * EARTH_RADIUS_M * (1.0 - (step / 2.0).min(std::f64::consts::FRAC_PI_2).cos()) + 1.0;
    AABB::from_corners(lo.map(|v| v - pad), hi.map(|v| v + pad))
}
