//! Zones' shapes: circles, and polygons with holes as GeoJSON draws them
//! (edges straight in longitude and latitude, RFC 7946), checked when they
//! are made, and the signed distance from a point to a shape's border
//! (negative inside), which the zone detectors read with a margin so that
//! a vehicle driving along a border does not flap in and out.
//!
//! A polygon is kept in a plane of metres around its first vertex, with
//! longitudes unwrapped from that vertex's: a polygon across the
//! antimeridian is one piece, and points are unwrapped the same way before
//! they are tested. The map from degrees to that plane is linear, so an
//! edge straight in degrees is straight in the plane and a point is inside
//! exactly when GeoJSON says so; distances near the border are metres to
//! within the plane's scale error (well under 1% across a city).

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::LocalPlane;

/// Vertices a polygon may have in all its rings (the self-intersection
/// check is quadratic in them).
pub const MAX_VERTICES: usize = 4096;
/// A circle's radius at most, metres, and a polygon's extent at most,
/// degrees of latitude or longitude: a zone is a place, not a continent.
pub const MAX_RADIUS_M: f64 = 100_000.0;
pub const MAX_EXTENT_DEG: f64 = 10.0;

/// Why a shape was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("a coordinate is not a number or out of range (latitude -90..90, longitude -180..180)")]
    BadCoordinate,
    #[error("a circle's radius must be above 0 and at most {MAX_RADIUS_M} m")]
    BadRadius,
    #[error("a polygon needs an outer ring")]
    NoRing,
    #[error("ring {0} has fewer than 3 distinct points")]
    TooFewPoints(usize),
    #[error("the polygon has more than {MAX_VERTICES} points")]
    TooManyPoints,
    #[error("the polygon spans more than {MAX_EXTENT_DEG} degrees")]
    TooLarge,
    #[error("ring {0} crosses itself or ring {1}")]
    SelfIntersecting(usize, usize),
    #[error("hole {0} is not inside the outer ring")]
    HoleOutside(usize),
}

/// A zone's shape, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle { centre: LatLon, radius_m: f64 },
    Polygon(Polygon),
}

/// A polygon with holes: the outer ring first, in a plane of metres.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    /// The first vertex: the plane's origin and the longitude others are
    /// unwrapped from.
    origin: LatLon,
    rings: Vec<Vec<(f64, f64)>>,
    /// The rings as given (closing point dropped), for reading back.
    given: Vec<Vec<LatLon>>,
    bounds: Bounds,
}

/// A shape's bounds in degrees, longitudes unwrapped from `lon_ref`
/// (`min_lon` may be below -180 or `max_lon` above 180 for a shape across
/// the antimeridian).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lon: f64,
    pub max_lon: f64,
}

fn valid(p: LatLon) -> bool {
    p.lat.is_finite() && p.lon.is_finite() && p.lat.abs() <= 90.0 && p.lon.abs() <= 180.0
}

/// `lon` moved by whole turns to within half a turn of `reference`.
fn unwrap(lon: f64, reference: f64) -> f64 {
    let d = (lon - reference + 540.0).rem_euclid(360.0) - 180.0;
    reference + d
}

impl Shape {
    /// A circle of `radius_m` metres around `centre`.
    pub fn circle(centre: LatLon, radius_m: f64) -> Result<Self, ShapeError> {
        if !valid(centre) {
            return Err(ShapeError::BadCoordinate);
        }
        if !(radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
            return Err(ShapeError::BadRadius);
        }
        Ok(Self::Circle { centre, radius_m })
    }

    /// A polygon from GeoJSON-style rings (outer first, then holes; the
    /// closing point may be given or not).
    pub fn polygon(rings: Vec<Vec<LatLon>>) -> Result<Self, ShapeError> {
        Polygon::new(rings).map(Self::Polygon)
    }

    /// Metres from `p` to the border: negative inside, positive outside.
    pub fn signed_distance_m(&self, p: LatLon) -> f64 {
        match self {
            Self::Circle { centre, radius_m } => {
                lastmile_roadgraph::geo::haversine_m(*centre, p) - radius_m
            }
            Self::Polygon(poly) => poly.signed_distance_m(p),
        }
    }

    /// The shape's bounds in degrees (see [`Bounds`]).
    pub fn bounds(&self) -> Bounds {
        match self {
            Self::Circle { centre, radius_m } => {
                let dlat = radius_m / lastmile_roadgraph::geo::METRES_PER_DEGREE;
                let cos = centre.lat.to_radians().cos().max(1e-6);
                let dlon = (dlat / cos).min(180.0);
                Bounds {
                    min_lat: (centre.lat - dlat).max(-90.0),
                    max_lat: (centre.lat + dlat).min(90.0),
                    min_lon: centre.lon - dlon,
                    max_lon: centre.lon + dlon,
                }
            }
            Self::Polygon(poly) => poly.bounds,
        }
    }
}

impl Polygon {
    fn new(given: Vec<Vec<LatLon>>) -> Result<Self, ShapeError> {
        if given.is_empty() || given[0].is_empty() {
            return Err(ShapeError::NoRing);
        }
        if given.iter().flatten().any(|&p| !valid(p)) {
            return Err(ShapeError::BadCoordinate);
        }
        // Drop the closing point and repeated points.
        let given: Vec<Vec<LatLon>> = given
            .into_iter()
            .map(|mut ring| {
                ring.dedup();
                if ring.len() > 1 && ring.first() == ring.last() {
                    ring.pop();
                }
                ring
            })
            .collect();
        if let Some(k) = given.iter().position(|r| r.len() < 3) {
            return Err(ShapeError::TooFewPoints(k));
        }
        if given.iter().map(Vec::len).sum::<usize>() > MAX_VERTICES {
            return Err(ShapeError::TooManyPoints);
        }
        let origin = given[0][0];
        let unwrapped = |p: LatLon| LatLon::new(p.lat, unwrap(p.lon, origin.lon));
        let mut bounds = Bounds {
            min_lat: f64::INFINITY,
            max_lat: f64::NEG_INFINITY,
            min_lon: f64::INFINITY,
            max_lon: f64::NEG_INFINITY,
        };
        for p in given.iter().flatten().map(|&p| unwrapped(p)) {
            bounds.min_lat = bounds.min_lat.min(p.lat);
            bounds.max_lat = bounds.max_lat.max(p.lat);
            bounds.min_lon = bounds.min_lon.min(p.lon);
            bounds.max_lon = bounds.max_lon.max(p.lon);
        }
        if bounds.max_lat - bounds.min_lat > MAX_EXTENT_DEG
            || bounds.max_lon - bounds.min_lon > MAX_EXTENT_DEG
        {
            return Err(ShapeError::TooLarge);
        }
        let plane = LocalPlane::new(origin);
        let rings: Vec<Vec<(f64, f64)>> = given
            .iter()
            .map(|r| r.iter().map(|&p| plane.project(unwrapped(p))).collect())
            .collect();
        check_simple(&rings)?;
        for (k, hole) in rings.iter().enumerate().skip(1) {
            // Rings do not cross, so one vertex tells where a hole lies.
            if !inside_ring(&rings[0], hole[0]) {
                return Err(ShapeError::HoleOutside(k));
            }
        }
        Ok(Self {
            origin,
            rings,
            given,
            bounds,
        })
    }

    /// The rings as given (outer first), without their closing points.
    pub fn rings(&self) -> &[Vec<LatLon>] {
        &self.given
    }

    fn signed_distance_m(&self, p: LatLon) -> f64 {
        if !valid(p) {
            return f64::NAN;
        }
        let q = LatLon::new(p.lat, unwrap(p.lon, self.origin.lon));
        let xy = LocalPlane::new(self.origin).project(q);
        let mut inside = false;
        let mut nearest = f64::INFINITY;
        for ring in &self.rings {
            inside ^= inside_ring(ring, xy);
            for (a, b) in edges(ring) {
                nearest = nearest.min(segment_distance(a, b, xy));
            }
        }
        if inside { -nearest } else { nearest }
    }
}

/// A ring's edges, the last one closing it.
fn edges(ring: &[(f64, f64)]) -> impl Iterator<Item = ((f64, f64), (f64, f64))> + '_ {
    ring.iter()
        .copied()
        .zip(ring.iter().copied().cycle().skip(1))
}

/// Even-odd rule: whether `p` is inside `ring`.
fn inside_ring(ring: &[(f64, f64)], p: (f64, f64)) -> bool {
    let mut inside = false;
    for (a, b) in edges(ring) {
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
            if p.0 < x {
                inside = !inside;
            }
        }
    }
    inside
}

fn segment_distance(a: (f64, f64), b: (f64, f64), p: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (x, y) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (x * x + y * y).sqrt()
}

fn cross(o: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// Whether segments `a`–`b` and `c`–`d` share a point (touching counts).
fn segments_meet(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    let on = |p: (f64, f64), q: (f64, f64), r: (f64, f64)| {
        r.0 >= p.0.min(q.0) && r.0 <= p.0.max(q.0) && r.1 >= p.1.min(q.1) && r.1 <= p.1.max(q.1)
    };
    let (d1, d2) = (cross(c, d, a), cross(c, d, b));
    let (d3, d4) = (cross(a, b, c), cross(a, b, d));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on(c, d, a))
        || (d2 == 0.0 && on(c, d, b))
        || (d3 == 0.0 && on(a, b, c))
        || (d4 == 0.0 && on(a, b, d))
}

/// An edge: its ring, its place in the ring, its ends.
type Edge = (usize, usize, (f64, f64), (f64, f64));

/// No edge meets another except where neighbours in one ring share their
/// vertex.
fn check_simple(rings: &[Vec<(f64, f64)>]) -> Result<(), ShapeError> {
    let all: Vec<Edge> = rings
        .iter()
        .enumerate()
        .flat_map(|(r, ring)| edges(ring).enumerate().map(move |(i, (a, b))| (r, i, a, b)))
        .collect();
    for (x, &(r1, i1, a, b)) in all.iter().enumerate() {
        for &(r2, i2, c, d) in &all[x + 1..] {
            if r1 == r2 {
                let n = rings[r1].len();
                if i2 == i1 + 1 || (i1 == 0 && i2 == n - 1) {
                    continue;
                }
            }
            if a.0.max(b.0) < c.0.min(d.0)
                || c.0.max(d.0) < a.0.min(b.0)
                || a.1.max(b.1) < c.1.min(d.1)
                || c.1.max(d.1) < a.1.min(b.1)
            {
                continue;
            }
            if segments_meet(a, b, c, d) {
                return Err(ShapeError::SelfIntersecting(r1, r2));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    /// A square of `side` degrees with its south-west corner at (lat, lon).
    fn square(lat: f64, lon: f64, side: f64) -> Vec<LatLon> {
        vec![
            ll(lat, lon),
            ll(lat, lon + side),
            ll(lat + side, lon + side),
            ll(lat + side, lon),
            ll(lat, lon),
        ]
    }

    #[test]
    fn a_square_has_its_inside_and_its_border_in_metres() {
        let s = Shape::polygon(vec![square(43.73, 7.42, 0.01)]).unwrap();
        let centre = ll(43.735, 7.425);
        // The nearest sides are the east and west ones, 0.005° of
        // longitude away: 556 m × cos 43.73° = 402 m.
        let d = s.signed_distance_m(centre);
        assert!((d + 402.0).abs() < 3.0, "{d}");
        // North of it, 0.005° of latitude: 556 m.
        let d = s.signed_distance_m(ll(43.745, 7.425));
        assert!((d - 556.0).abs() < 3.0, "{d}");
        assert!(s.signed_distance_m(ll(43.735, 7.4301)) > 0.0);
        assert!(s.signed_distance_m(ll(43.735, 7.4299)) < 0.0);
    }

    #[test]
    fn a_hole_is_outside() {
        let outer = square(43.73, 7.42, 0.01);
        let hole = square(43.733, 7.423, 0.004);
        let s = Shape::polygon(vec![outer, hole]).unwrap();
        assert!(s.signed_distance_m(ll(43.735, 7.425)) > 0.0, "in the hole");
        assert!(
            s.signed_distance_m(ll(43.7315, 7.4215)) < 0.0,
            "between rings"
        );
        assert!(s.signed_distance_m(ll(43.75, 7.425)) > 0.0, "beyond");
    }

    #[test]
    fn a_polygon_across_the_antimeridian_is_one_piece() {
        // Fiji's Taveuni side: from 179.9°E to 179.9°W.
        let ring = vec![
            ll(-16.9, 179.9),
            ll(-16.9, -179.9),
            ll(-16.7, -179.9),
            ll(-16.7, 179.9),
        ];
        let s = Shape::polygon(vec![ring]).unwrap();
        assert!(s.signed_distance_m(ll(-16.8, 179.99)) < 0.0);
        assert!(s.signed_distance_m(ll(-16.8, -179.99)) < 0.0);
        assert!(s.signed_distance_m(ll(-16.8, 180.0)) < 0.0);
        assert!(s.signed_distance_m(ll(-16.8, 179.8)) > 0.0);
        assert!(s.signed_distance_m(ll(-16.8, -179.8)) > 0.0);
        let b = s.bounds();
        assert!((b.max_lon - b.min_lon - 0.2).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn a_circle_is_its_radius() {
        let s = Shape::circle(ll(43.73, 7.42), 200.0).unwrap();
        assert!((s.signed_distance_m(ll(43.73, 7.42)) + 200.0).abs() < 1e-6);
        let d = s.signed_distance_m(ll(43.73 + 300.0 / 111_195.0, 7.42));
        assert!((d - 100.0).abs() < 2.0, "{d}");
    }

    #[test]
    fn bad_shapes_are_refused_by_reason() {
        use ShapeError::*;
        let bow_tie = vec![ll(0.0, 0.0), ll(0.01, 0.01), ll(0.0, 0.01), ll(0.01, 0.0)];
        let cases: Vec<(Vec<Vec<LatLon>>, ShapeError)> = vec![
            (vec![], NoRing),
            (vec![vec![]], NoRing),
            (
                vec![vec![ll(0.0, 0.0), ll(0.0, 0.01), ll(0.0, 0.0)]],
                TooFewPoints(0),
            ),
            (vec![bow_tie], SelfIntersecting(0, 0)),
            (vec![square(95.0, 0.0, 0.01)], BadCoordinate),
            (vec![square(f64::NAN, 0.0, 0.01)], BadCoordinate),
            (vec![square(0.0, 0.0, 20.0)], TooLarge),
            (
                vec![square(0.0, 0.0, 0.01), square(0.005, 0.005, 0.01)],
                SelfIntersecting(0, 1),
            ),
            (
                vec![square(0.0, 0.0, 0.01), square(0.02, 0.02, 0.001)],
                HoleOutside(1),
            ),
        ];
        for (rings, why) in cases {
            assert_eq!(Shape::polygon(rings.clone()), Err(why.clone()), "{rings:?}");
        }
        let many: Vec<LatLon> = (0..=MAX_VERTICES)
            .map(|i| {
                let a = i as f64 / (MAX_VERTICES + 1) as f64 * std::f64::consts::TAU;
                ll(0.01 * a.sin(), 0.01 * a.cos())
            })
            .collect();
        assert_eq!(Shape::polygon(vec![many]), Err(TooManyPoints));
        assert_eq!(Shape::circle(ll(0.0, 0.0), 0.0), Err(BadRadius));
        assert_eq!(Shape::circle(ll(0.0, 0.0), f64::NAN), Err(BadRadius));
        assert_eq!(Shape::circle(ll(0.0, 200.0), 10.0), Err(BadCoordinate));
    }
}
