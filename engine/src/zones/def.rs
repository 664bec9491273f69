//! A zone as a dispatcher gives it and the journal and checkpoint keep it:
//! its outline as drawn (the checked [`Shape`] is made from it again on
//! every load, so a stored zone is checked like a new one), its name, and
//! what the fleet's rules say about it.

use lastmile_roadgraph::LatLon;

use super::index::{Zone, ZoneId};
use super::shape::{Shape, ShapeError};

/// A zone's outline as drawn.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub enum Outline {
    Circle {
        centre: LatLon,
        radius_m: f64,
    },
    /// GeoJSON-style rings: the outer one first, then holes.
    Polygon {
        rings: Vec<Vec<LatLon>>,
    },
}

/// What the fleet's rules make of a zone.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ZoneKind {
    /// Entries, leavings and dwells only.
    #[default]
    Plain,
    /// Vehicles should stay inside (the area a van may work in).
    Allowed,
    /// Vehicles should stay out.
    Forbidden,
}

impl ZoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Allowed => "allowed",
            Self::Forbidden => "forbidden",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Plain, Self::Allowed, Self::Forbidden]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Longest a zone's name may be, bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A zone as given.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct ZoneDef {
    pub id: ZoneId,
    /// For people ("Depot north"); may be empty.
    pub name: String,
    pub outline: Outline,
    pub kind: ZoneKind,
    /// `zone_dwell` once a vehicle has been inside this long, seconds.
    pub dwell_s: Option<f64>,
    /// `zone_speeding` above this inside the zone, km/h.
    pub speed_limit_kmh: Option<f64>,
}

/// Why a zone was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZoneError {
    #[error("{0}")]
    Shape(#[from] ShapeError),
    #[error("the name is longer than {MAX_NAME_BYTES} bytes")]
    LongName,
    #[error("dwell_s must be a positive number of seconds")]
    BadDwell,
    #[error("speed_limit_kmh must be a positive number")]
    BadSpeedLimit,
}

impl ZoneDef {
    /// The zone the detectors read, checked.
    pub fn zone(&self) -> Result<Zone, ZoneError> {
        if self.name.len() > MAX_NAME_BYTES {
            return Err(ZoneError::LongName);
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(self.dwell_s) {
            return Err(ZoneError::BadDwell);
        }
        if !positive(self.speed_limit_kmh) {
            return Err(ZoneError::BadSpeedLimit);
        }
        let shape = match &self.outline {
            Outline::Circle { centre, radius_m } => Shape::circle(*centre, *radius_m)?,
            Outline::Polygon { rings } => Shape::polygon(rings.clone())?,
        };
        Ok(Zone {
            id: self.id,
            shape,
            dwell_s: self.dwell_s,
            kind: self.kind,
            speed_limit_kmh: self.speed_limit_kmh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(outline: Outline) -> ZoneDef {
        ZoneDef {
            id: 1,
            name: "yard".into(),
            outline,
            kind: ZoneKind::Plain,
            dwell_s: Some(300.0),
            speed_limit_kmh: None,
        }
    }

    #[test]
    fn a_bad_zone_says_why() {
        let circle = Outline::Circle {
            centre: LatLon::new(43.7, 7.4),
            radius_m: 100.0,
        };
        assert!(def(circle.clone()).zone().is_ok());
        let mut d = def(circle.clone());
        d.dwell_s = Some(f64::NAN);
        assert_eq!(d.zone().unwrap_err(), ZoneError::BadDwell);
        let mut d = def(circle.clone());
        d.speed_limit_kmh = Some(-5.0);
        assert_eq!(d.zone().unwrap_err(), ZoneError::BadSpeedLimit);
        let mut d = def(circle);
        d.name = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(d.zone().unwrap_err(), ZoneError::LongName);
        let empty = def(Outline::Polygon { rings: Vec::new() });
        assert!(matches!(empty.zone(), Err(ZoneError::Shape(_))));
        let far = def(Outline::Circle {
            centre: LatLon::new(91.0, 0.0),
            radius_m: 10.0,
        });
        assert!(matches!(far.zone(), Err(ZoneError::Shape(_))));
    }

    #[test]
    fn kinds_read_back_by_name() {
        for k in [ZoneKind::Plain, ZoneKind::Allowed, ZoneKind::Forbidden] {
            assert_eq!(ZoneKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ZoneKind::parse("restricted"), None);
    }
}
