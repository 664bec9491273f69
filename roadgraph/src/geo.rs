//! Geographic primitives: fixed-point coordinates, great-circle distance, and
//! point-to-segment projection in a local equirectangular plane.
//!
//! The graph stores coordinates as 1e-7 degree integers (as OSM PBF does), which
//! is about 1 cm of precision in 8 bytes per point. Distances along roads are
//! haversine; projections of a query point onto a segment use a plane centred
//! on the query point, whose error over the tens of metres a candidate search
//! covers is far below GPS noise.

/// Mean Earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Metres per degree of latitude on the mean sphere.
pub const METRES_PER_DEGREE: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
/// Scale of the fixed-point coordinates: units per degree.
pub const FIXED_PER_DEGREE: f64 = 1e7;

/// A WGS84 position in degrees.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// From 1e-7 degree integers.
    pub fn from_fixed(lat: i32, lon: i32) -> Self {
        Self {
            lat: f64::from(lat) / FIXED_PER_DEGREE,
            lon: f64::from(lon) / FIXED_PER_DEGREE,
        }
    }

    /// To 1e-7 degree integers (rounded to nearest).
    pub fn to_fixed(self) -> (i32, i32) {
        (
            (self.lat * FIXED_PER_DEGREE).round() as i32,
            (self.lon * FIXED_PER_DEGREE).round() as i32,
        )
    }

    /// True when both components are finite and within the WGS84 ranges.
    pub fn is_valid(self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// A position as 1e-7 degree integers: half the size of [`LatLon`], for
/// state held per vehicle or per candidate by the million. Exact for any
/// position given to 7 decimals (the trace and wire formats); about 1 cm
/// of rounding otherwise.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LatLonE7 {
    pub lat: i32,
    pub lon: i32,
}

impl LatLonE7 {
    pub fn latlon(self) -> LatLon {
        LatLon::from_fixed(self.lat, self.lon)
    }
}

impl From<LatLon> for LatLonE7 {
    fn from(p: LatLon) -> Self {
        let (lat, lon) = p.to_fixed();
        Self { lat, lon }
    }
}

/// Great-circle distance in metres (haversine); NaN when either position is
/// NaN (`clamp` keeps a NaN where `min` would turn it into the antipode).
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat * 0.5).sin().powi(2) + la1.cos() * la2.cos() * (dlon * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().clamp(0.0, 1.0).asin()
}

/// A tangent plane (equirectangular) centred on one point: x east, y north, metres.
#[derive(Clone, Copy, Debug)]
pub struct LocalPlane {
    origin: LatLon,
    metres_per_degree_lon: f64,
}

impl LocalPlane {
    pub fn new(origin: LatLon) -> Self {
        Self {
            origin,
            metres_per_degree_lon: METRES_PER_DEGREE * origin.lat.to_radians().cos(),
        }
    }

    pub fn project(&self, p: LatLon) -> (f64, f64) {
        (
            (p.lon - self.origin.lon) * self.metres_per_degree_lon,
            (p.lat - self.origin.lat) * METRES_PER_DEGREE,
        )
    }

    pub fn unproject(&self, x: f64, y: f64) -> LatLon {
        LatLon {
            lat: self.origin.lat + y / METRES_PER_DEGREE,
            lon: self.origin.lon + x / self.metres_per_degree_lon,
        }
    }
}

/// Projection of the plane's origin onto segment `a`–`b` (plane coordinates):
/// returns the fraction `t` in `[0, 1]` along the segment and the squared
/// distance from the origin to the projected point.
#[inline]
pub fn project_origin_on_segment(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (px, py) = (a.0 + t * dx, a.1 + t * dy);
    (t, px * px + py * py)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_of_an_unknown_position_is_unknown() {
        let nowhere = LatLon::new(f64::NAN, f64::NAN);
        assert!(haversine_m(nowhere, LatLon::new(43.7, 7.4)).is_nan());
        assert!(haversine_m(LatLon::new(43.7, 7.4), nowhere).is_nan());
    }

    #[test]
    fn haversine_matches_known_distance() {
        // One degree of latitude along a meridian.
        let d = haversine_m(LatLon::new(0.0, 0.0), LatLon::new(1.0, 0.0));
        assert!((d - METRES_PER_DEGREE).abs() < 1e-6);
        // Paris – London, about 343.5 km.
        let d = haversine_m(LatLon::new(48.8566, 2.3522), LatLon::new(51.5074, -0.1278));
        assert!((d - 343_500.0).abs() < 1_000.0, "{d}");
    }

    #[test]
    fn plane_round_trip_and_agrees_with_haversine_locally() {
        let o = LatLon::new(43.73, 7.42);
        let plane = LocalPlane::new(o);
        let p = LatLon::new(43.7312, 7.4185);
        let (x, y) = plane.project(p);
        let back = plane.unproject(x, y);
        assert!((back.lat - p.lat).abs() < 1e-12 && (back.lon - p.lon).abs() < 1e-12);
        let planar = (x * x + y * y).sqrt();
        assert!((planar - haversine_m(o, p)).abs() < 0.01, "{planar}");
    }

    #[test]
    fn segment_projection_clamps_to_ends() {
        assert_eq!(
            project_origin_on_segment((1.0, 1.0), (3.0, 1.0)),
            (0.0, 2.0)
        );
        let (t, d2) = project_origin_on_segment((-2.0, 1.0), (2.0, 1.0));
        assert_eq!((t, d2), (0.5, 1.0));
        assert_eq!(
            project_origin_on_segment((1.0, 0.0), (1.0, 0.0)),
            (0.0, 1.0)
        );
    }

    #[test]
    fn fixed_point_round_trip() {
        let p = LatLon::new(-33.8688197, 151.2092955);
        let (a, b) = p.to_fixed();
        let q = LatLon::from_fixed(a, b);
        assert!((q.lat - p.lat).abs() < 1e-7 && (q.lon - p.lon).abs() < 1e-7);
        assert!(!LatLon::new(f64::NAN, 0.0).is_valid());
        assert!(!LatLon::new(91.0, 0.0).is_valid());
    }

    #[test]
    fn e7_positions_are_exact_for_seven_decimals() {
        // As a trace or the wire gives them: parsed from 7 decimals.
        let mut rng = crate::rng::Rng::seed(11);
        for _ in 0..10_000 {
            let lat = rng.range_f64(-90.0, 90.0) * 1e7;
            let lon = rng.range_f64(-180.0, 180.0) * 1e7;
            let text = format!("{:.7} {:.7}", lat.round() / 1e7, lon.round() / 1e7);
            let (a, b) = text.split_once(' ').unwrap();
            let p = LatLon::new(a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(LatLonE7::from(p).latlon(), p, "{text}");
        }
        // Anything else is rounded to the nearest 1e-7 degree (about 1 cm).
        let p = LatLon::new(48.856_613_37, 2.352_221_91);
        let q = LatLonE7::from(p).latlon();
        assert!((q.lat - p.lat).abs() <= 0.5e-7 && (q.lon - p.lon).abs() <= 0.5e-7);
    }
}
