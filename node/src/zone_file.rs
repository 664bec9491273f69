//! A fleet's zones as a dispatcher draws them: a GeoJSON
//! `FeatureCollection` (RFC 7946) whose features are `Polygon`s (outer ring
//! and holes) or `Point`s with a `radius_m`, each with the fleet's own
//! string `id` and optionally a `name`, a `kind` (`plain`, `allowed`,
//! `forbidden`), a `dwell_s` (seconds inside after which `zone_dwell` is
//! told) and a `speed_limit_kmh`. Every problem is refused with the feature
//! it is in, never a zone half read. The same form is written back
//! ([`feature`]), so a file read, listed and read again is the same.

use lastmile_engine::zones::{Outline, ZoneDef, ZoneId, ZoneKind};
use lastmile_roadgraph::LatLon;
use serde_json::{Value, json};

/// Zones one file may hold at most.
pub const MAX_ZONES: usize = 10_000;
/// Longest zone id and name, bytes.
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_NAME_BYTES: usize = lastmile_engine::zones::def::MAX_NAME_BYTES;

/// One zone as read: the fleet's id for it, and the zone (checked) with
/// the engine id still to be given.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    pub id: String,
    pub def: ZoneDef,
}

impl ZoneSpec {
    /// The zone under engine id `id`.
    pub fn numbered(&self, id: ZoneId) -> ZoneDef {
        ZoneDef {
            id,
            ..self.def.clone()
        }
    }
}

/// Why a zone file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZoneFileError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a GeoJSON FeatureCollection (a \"features\" array)")]
    NotCollection,
    #[error("more than {MAX_ZONES} zones")]
    TooMany,
    #[error("feature {index}{}: {why}", id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default())]
    Feature {
        index: usize,
        id: Option<String>,
        why: String,
    },
}

/// Reads a GeoJSON `FeatureCollection` of zones.
pub fn read_zones(text: &str) -> Result<Vec<ZoneSpec>, ZoneFileError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| ZoneFileError::NotJson(e.to_string()))?;
    let features = doc
        .get("features")
        .and_then(Value::as_array)
        .ok_or(ZoneFileError::NotCollection)?;
    if features.len() > MAX_ZONES {
        return Err(ZoneFileError::TooMany);
    }
    let mut zones: Vec<ZoneSpec> = Vec::with_capacity(features.len());
    for (index, f) in features.iter().enumerate() {
        let id = f
            .pointer("/properties/id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fail = |why: String| ZoneFileError::Feature {
            index,
            id: id.clone(),
            why,
        };
        let zone = read_feature(f).map_err(fail)?;
        if zones.iter().any(|z| z.id == zone.id) {
            return Err(fail("another feature has this id".into()));
        }
        zones.push(zone);
    }
    Ok(zones)
}

fn read_feature(f: &Value) -> Result<ZoneSpec, String> {
    let props = f
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("no properties")?;
    let id = props
        .get("id")
        .and_then(Value::as_str)
        .ok_or("properties.id (the zone's id, a string) is missing")?;
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(format!(
            "properties.id must be 1 to {MAX_ID_BYTES} bytes without control characters"
        ));
    }
    let name = match props.get("name") {
        None | Some(Value::Null) => id.to_string(),
        Some(Value::String(n)) if n.len() <= MAX_NAME_BYTES => n.clone(),
        Some(_) => {
            return Err(format!(
                "properties.name must be a string of at most {MAX_NAME_BYTES} bytes"
            ));
        }
    };
    let positive = |key: &str, what: &str| match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(d) if d > 0.0 && d.is_finite() => Ok(Some(d)),
            _ => Err(format!(
                "properties.{key} must be a positive number of {what}"
            )),
        },
    };
    let dwell_s = positive("dwell_s", "seconds")?;
    let speed_limit_kmh = positive("speed_limit_kmh", "km/h")?;
    let kind = match props.get("kind") {
        None | Some(Value::Null) => ZoneKind::Plain,
        Some(v) => v
            .as_str()
            .and_then(ZoneKind::parse)
            .ok_or("properties.kind must be \"plain\", \"allowed\" or \"forbidden\"")?,
    };
    let geometry = f.get("geometry").ok_or("no geometry")?;
    let geometry_type = geometry.get("type").and_then(Value::as_str).unwrap_or("");
    let coordinates = geometry
        .get("coordinates")
        .ok_or("geometry has no coordinates")?;
    let outline = match geometry_type {
        "Polygon" => {
            let rings = coordinates
                .as_array()
                .ok_or("a Polygon's coordinates are an array of rings")?
                .iter()
                .map(ring)
                .collect::<Result<Vec<_>, _>>()?;
            Outline::Polygon { rings }
        }
        "Point" => {
            let centre = position(coordinates)?;
            let radius = props
                .get("radius_m")
                .and_then(Value::as_f64)
                .ok_or("a Point zone needs properties.radius_m (metres)")?;
            Outline::Circle {
                centre,
                radius_m: radius,
            }
        }
        other => {
            return Err(format!(
                "geometry type {other:?}: a zone is a Polygon, or a Point with a radius_m"
            ));
        }
    };
    let def = ZoneDef {
        id: 0,
        name,
        outline,
        kind,
        dwell_s,
        speed_limit_kmh,
    };
    def.zone().map_err(|e| e.to_string())?;
    Ok(ZoneSpec {
        id: id.to_string(),
        def,
    })
}

/// A zone as a GeoJSON feature, under the fleet's id for it.
pub fn feature(id: &str, def: &ZoneDef) -> Value {
    let point = |p: &LatLon| json!([p.lon, p.lat]);
    let mut props = json!({"id": id, "name": def.name, "kind": def.kind.as_str()});
    if let Some(d) = def.dwell_s {
        props["dwell_s"] = json!(d);
    }
    if let Some(v) = def.speed_limit_kmh {
        props["speed_limit_kmh"] = json!(v);
    }
    let geometry = match &def.outline {
        Outline::Circle { centre, radius_m } => {
            props["radius_m"] = json!(radius_m);
            json!({"type": "Point", "coordinates": point(centre)})
        }
        Outline::Polygon { rings } => {
            // GeoJSON rings are closed: the first position again last.
            let rings: Vec<Value> = rings
                .iter()
                .map(|r| {
                    let mut points: Vec<Value> = r.iter().map(point).collect();
                    if let Some(first) = r.first()
                        && r.last() != Some(first)
                    {
                        points.push(point(first));
                    }
                    Value::Array(points)
                })
                .collect();
            json!({"type": "Polygon", "coordinates": rings})
        }
    };
    json!({"type": "Feature", "properties": props, "geometry": geometry})
}

/// Zones as a GeoJSON `FeatureCollection`.
pub fn collection(features: Vec<Value>) -> Value {
    json!({"type": "FeatureCollection", "features": features})
}

fn ring(v: &Value) -> Result<Vec<LatLon>, String> {
    v.as_array()
        .ok_or("a ring is an array of positions")?
        .iter()
        .map(position)
        .collect()
}

/// A GeoJSON position: longitude, latitude (and an altitude, ignored).
fn position(v: &Value) -> Result<LatLon, String> {
    let a = v.as_array().ok_or("a position is [longitude, latitude]")?;
    match (
        a.first().and_then(Value::as_f64),
        a.get(1).and_then(Value::as_f64),
    ) {
        (Some(lon), Some(lat)) if a.len() <= 3 => Ok(LatLon::new(lat, lon)),
        _ => Err("a position is [longitude, latitude]".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_engine::zones::Shape;

    fn collection(features: &[Value]) -> String {
        serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
    }

    fn depot() -> Value {
        serde_json::json!({
            "type": "Feature",
            "properties": {"id": "depot-north", "name": "North depot", "dwell_s": 1800},
            "geometry": {"type": "Polygon", "coordinates": [
                [[7.42, 43.73], [7.43, 43.73], [7.43, 43.74], [7.42, 43.74], [7.42, 43.73]],
                [[7.424, 43.734], [7.426, 43.734], [7.426, 43.736], [7.424, 43.736], [7.424, 43.734]]
            ]}
        })
    }

    fn yard() -> Value {
        serde_json::json!({
            "type": "Feature",
            "properties": {"id": "yard 7"},
            "geometry": {"type": "Point", "coordinates": [7.41, 43.72]}
        })
    }

    #[test]
    fn polygons_with_holes_and_circles_are_read() {
        let mut circle = yard();
        circle["properties"]["radius_m"] = 150.into();
        let zones = read_zones(&collection(&[depot(), circle])).unwrap();
        assert_eq!(zones.len(), 2);
        let z = &zones[0];
        assert_eq!(
            (z.id.as_str(), z.def.name.as_str(), z.def.dwell_s),
            ("depot-north", "North depot", Some(1800.0))
        );
        let shape = z.def.zone().unwrap().shape;
        let Shape::Polygon(p) = &shape else {
            panic!("{z:?}")
        };
        assert_eq!(p.rings().len(), 2);
        assert!(shape.signed_distance_m(LatLon::new(43.732, 7.422)) < 0.0);
        assert!(
            shape.signed_distance_m(LatLon::new(43.735, 7.425)) > 0.0,
            "the hole"
        );
        assert_eq!(
            zones[1].def.name, "yard 7",
            "the id names a zone without a name"
        );
        assert_eq!(
            zones[1].def.outline,
            Outline::Circle {
                centre: LatLon::new(43.72, 7.41),
                radius_m: 150.0
            }
        );
        assert_eq!(zones[1].def.kind, ZoneKind::Plain);
    }

    #[test]
    fn zones_written_back_read_the_same() {
        let mut circle = yard();
        circle["properties"]["radius_m"] = 150.into();
        circle["properties"]["kind"] = "forbidden".into();
        circle["properties"]["speed_limit_kmh"] = 20.into();
        let zones = read_zones(&collection(&[depot(), circle])).unwrap();
        let again: Vec<Value> = zones.iter().map(|z| feature(&z.id, &z.def)).collect();
        let text = super::collection(again).to_string();
        assert_eq!(read_zones(&text).unwrap(), zones);
        assert_eq!(zones[1].def.kind, ZoneKind::Forbidden);
        assert_eq!(zones[1].def.speed_limit_kmh, Some(20.0));
    }

    #[test]
    fn bad_files_and_zones_are_refused_saying_which_and_why() {
        assert!(matches!(read_zones("{"), Err(ZoneFileError::NotJson(_))));
        assert_eq!(
            read_zones("{\"type\": \"Feature\"}"),
            Err(ZoneFileError::NotCollection)
        );
        let bow_tie = serde_json::json!({
            "type": "Feature", "properties": {"id": "x"},
            "geometry": {"type": "Polygon", "coordinates": [
                [[0.0, 0.0], [0.01, 0.01], [0.01, 0.0], [0.0, 0.01], [0.0, 0.0]]]}
        });
        let mut no_id = depot();
        no_id["properties"] = serde_json::json!({"name": "nameless"});
        let mut absurd = depot();
        absurd["geometry"]["coordinates"][0][1] = serde_json::json!([7.43, 143.73]);
        let mut empty = depot();
        empty["geometry"]["coordinates"] = serde_json::json!([]);
        let mut line = depot();
        line["geometry"] =
            serde_json::json!({"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]]});
        let mut bad_dwell = depot();
        bad_dwell["properties"]["dwell_s"] = (-5).into();
        let mut bad_kind = depot();
        bad_kind["properties"]["kind"] = "restricted".into();
        let mut bad_limit = depot();
        bad_limit["properties"]["speed_limit_kmh"] = "fast".into();
        for (feature, says) in [
            (bow_tie, "crosses itself"),
            (no_id, "properties.id"),
            (absurd, "out of range"),
            (empty, "outer ring"),
            (line, "LineString"),
            (yard(), "radius_m"),
            (bad_dwell, "dwell_s"),
            (bad_kind, "properties.kind"),
            (bad_limit, "speed_limit_kmh"),
        ] {
            let e = read_zones(&collection(&[depot_with_id("ok"), feature])).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("feature 1"), "{text}");
            assert!(text.contains(says), "{text}");
        }
        let twice = read_zones(&collection(&[depot(), depot()])).unwrap_err();
        assert!(
            twice.to_string().contains("another feature has this id"),
            "{twice}"
        );
    }

    fn depot_with_id(id: &str) -> Value {
        let mut d = depot();
        d["properties"]["id"] = id.into();
        d
    }
}
