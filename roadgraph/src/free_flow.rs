//! The free-flow travel-time model: what an edge takes to drive when
//! nothing is known about today's traffic.
//!
//! An edge's time is its length at the expected speed of its road class in
//! its setting (urban or rural), capped by the legal limit, plus the delays
//! at what ends it:
//! - a traffic signal on it (OSM `highway=traffic_signals`, or a crossing
//!   with lights), in the half of the edge that leads to its head: signals
//!   are mapped on the junction node or on the approach's stop line, and one
//!   just past the junction belongs to the other direction;
//! - the junction at its head: a road of a higher class crossing or joining
//!   means giving way (`Yield`); otherwise the edge is the main road or an
//!   equal one through the junction (`Through`); a bend or the continuation
//!   of one road is no junction.
//!
//! The setting is the density of junctions around the edge's head: at least
//! [`URBAN_JUNCTIONS_PER_KM2`] in the 3×3 km around it is urban.
//!
//! Each edge's features are kept in [`GraphData::edge_features`], so the
//! calibration (`lastmile calibrate`, matched traversals of real drives) can
//! read them back; the speeds and delays it found are [`SPEEDS`] and
//! [`Delays::CALIBRATED`] (the data they came from is in their docs).

use crate::graph::GraphData;
use crate::highway::{HighwayClass, SpeedLimit};

/// What ends an edge, packed in one byte: bits 0–1 the signals on it (0–3),
/// bits 2–3 the [`Junction`] at its head, bit 4 urban.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EdgeFeatures(pub u8);

/// The junction at an edge's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Junction {
    /// A bend, the continuation of the same road, or a dead end.
    None = 0,
    /// A junction the edge passes as the main road or an equal one.
    Through = 1,
    /// A junction where a road of a higher class crosses or is joined.
    Yield = 2,
}

impl EdgeFeatures {
    pub fn new(signals: u8, junction: Junction, urban: bool) -> Self {
        Self(signals.min(3) | (junction as u8) << 2 | u8::from(urban) << 4)
    }

    pub fn signals(self) -> u8 {
        self.0 & 3
    }

    pub fn junction(self) -> Junction {
        match (self.0 >> 2) & 3 {
            1 => Junction::Through,
            2 => Junction::Yield,
            _ => Junction::None,
        }
    }

    pub fn urban(self) -> bool {
        self.0 & 16 != 0
    }
}

/// Junctions per km² (over the 3×3 km around a node) from which a place is
/// urban.
pub const URBAN_JUNCTIONS_PER_KM2: f64 = 20.0;

/// Expected speed (km/h) per road class, in towns and outside them, in
/// [`HighwayClass`] order.
///
/// The urban speeds of motorways and their links, primary, secondary,
/// tertiary and residential roads are the mean speeds `lastmile calibrate`
/// fitted to 5,374 whole-edge traversals of the 146 Porto taxi trips of the
/// learning half (`../shared/data/porto-taxi`, on `maps/porto_portugal.osm.pbf`,
/// 2026-12-07; rounded). Porto's trips are almost all urban, and other
/// classes had too few traversals (under 40, or under 10 km): their urban
/// speeds are the nearest measured class's (trunk between motorway and
/// primary, unclassified as residential) or the defaults, and the rural
/// column keeps the defaults (close to OSRM's car profile) until rural
/// drives are measured.
pub const SPEEDS: [(f64, f64); 14] = [
    (95.0, 90.0), // motorway (fitted 95.0 in town)
    (67.0, 45.0), // motorway_link (fitted 67.3)
    (60.0, 85.0), // trunk
    (40.0, 40.0), // trunk_link
    (35.0, 65.0), // primary (fitted 34.9)
    (30.0, 30.0), // primary_link
    (32.0, 55.0), // secondary (fitted 31.9)
    (25.0, 25.0), // secondary_link
    (34.0, 40.0), // tertiary (fitted 33.7)
    (20.0, 20.0), // tertiary_link
    (21.0, 25.0), // unclassified
    (21.0, 25.0), // residential (fitted 20.9)
    (10.0, 10.0), // living_street
    (15.0, 15.0), // service
];

/// Seconds lost at what ends an edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delays {
    pub signal_s: f64,
    pub through_s: f64,
    pub yield_s: f64,
}

impl Delays {
    /// Fitted with the speeds above, on the same traversals (4.5, 3.0 and
    /// 6.1 s): a mean over lights met green and red, junctions crossed
    /// freely and waited at.
    pub const CALIBRATED: Delays = Delays {
        signal_s: 4.5,
        through_s: 3.0,
        yield_s: 6.1,
    };
}

/// Expected speed on a road of `class` with `limit`, in its setting: the
/// class's, capped by 90% of the legal limit (traffic rarely runs at it).
pub fn expected_speed_kmh(class: HighwayClass, limit: SpeedLimit, urban: bool) -> f64 {
    let (town, country) = SPEEDS[class as usize];
    let base = if urban { town } else { country };
    match limit {
        SpeedLimit::Kmh(v) => base.min(f64::from(v) * 0.9).max(5.0),
        SpeedLimit::Unknown | SpeedLimit::None => base,
    }
}

/// An edge's free-flow time, seconds.
pub fn edge_seconds(
    metres: f64,
    class: HighwayClass,
    limit: SpeedLimit,
    features: EdgeFeatures,
    delays: &Delays,
) -> f64 {
    let speed_ms = expected_speed_kmh(class, limit, features.urban()) / 3.6;
    let junction = match features.junction() {
        Junction::None => 0.0,
        Junction::Through => delays.through_s,
        Junction::Yield => delays.yield_s,
    };
    metres / speed_ms + f64::from(features.signals()) * delays.signal_s + junction
}

/// Sets every edge's features and free-flow time in `data`, whose edges,
/// adjacency, roads and limits are built; `signals[e]` counts the signals
/// on edge `e` (see the module documentation for which count).
pub fn apply(data: &mut GraphData, signals: &[u8]) {
    let m = data.tail.len();
    let n = data.node_lat.len();
    let road_of = |e: usize| (data.edge_road[e] & !crate::graph::REVERSED) as usize;
    let class_of = |e: usize| {
        HighwayClass::from_u8(data.road_class[road_of(e)]).unwrap_or(HighwayClass::Service)
    };
    // Per node: the distinct roads meeting there, with their classes.
    let mut roads_at: Vec<Vec<(u32, u8)>> = vec![Vec::new(); n];
    for e in 0..m {
        let r = road_of(e) as u32;
        let c = data.road_class[r as usize];
        for v in [data.tail[e], data.head[e]] {
            let list = &mut roads_at[v as usize];
            if !list.iter().any(|&(x, _)| x == r) {
                list.push((r, c));
            }
        }
    }
    let junction_at = |v: usize| roads_at[v].len() >= 3;
    let urban = urban_nodes(data, &junction_at);
    data.edge_features = Vec::with_capacity(m);
    data.travel_time_ms = Vec::with_capacity(m);
    for (e, &on_edge) in signals.iter().enumerate().take(m) {
        let head = data.head[e] as usize;
        let own = road_of(e) as u32;
        let class = class_of(e);
        let junction = if !junction_at(head) {
            Junction::None
        } else {
            // Classes are ordered fastest first: a lower value is a
            // higher class (and a link yields to its own road).
            let higher = roads_at[head]
                .iter()
                .any(|&(r, c)| r != own && c < class as u8);
            if higher {
                Junction::Yield
            } else {
                Junction::Through
            }
        };
        let features = EdgeFeatures::new(on_edge, junction, urban[head]);
        let metres = f64::from(data.road_length_cm[road_of(e)]) / 100.0;
        let limit = SpeedLimit::from_u8(data.speed_limit[e]);
        let s = edge_seconds(metres, class, limit, features, &Delays::CALIBRATED);
        data.edge_features.push(features.0);
        data.travel_time_ms
            .push((s * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32);
    }
}

/// Whether each node is in an urban setting: junctions per km² over the
/// 3×3 km around it.
fn urban_nodes(data: &GraphData, junction_at: &dyn Fn(usize) -> bool) -> Vec<bool> {
    let n = data.node_lat.len();
    if n == 0 {
        return Vec::new();
    }
    let mid_lat = f64::from(data.node_lat[n / 2]) * 1e-7;
    // Cells of about 1 km.
    let lat_step = 1e7 / 111.2;
    let lon_step = lat_step / mid_lat.to_radians().cos().max(0.1);
    let cell = |v: usize| {
        (
            (f64::from(data.node_lat[v]) / lat_step).floor() as i64,
            (f64::from(data.node_lon[v]) / lon_step).floor() as i64,
        )
    };
    let mut counts: std::collections::HashMap<(i64, i64), u32> = std::collections::HashMap::new();
    for v in (0..n).filter(|&v| junction_at(v)) {
        *counts.entry(cell(v)).or_default() += 1;
    }
    (0..n)
        .map(|v| {
            let (a, b) = cell(v);
            let around: u32 = (-1..=1)
                .flat_map(|i| (-1..=1).map(move |j| (a + i, b + j)))
                .map(|k| counts.get(&k).copied().unwrap_or(0))
                .sum();
            f64::from(around) / 9.0 >= URBAN_JUNCTIONS_PER_KM2
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_pack_and_unpack() {
        for signals in 0..4 {
            for junction in [Junction::None, Junction::Through, Junction::Yield] {
                for urban in [false, true] {
                    let f = EdgeFeatures::new(signals, junction, urban);
                    assert_eq!(
                        (f.signals(), f.junction(), f.urban()),
                        (signals, junction, urban)
                    );
                }
            }
        }
        assert_eq!(EdgeFeatures::new(7, Junction::None, false).signals(), 3);
    }

    #[test]
    fn the_limit_caps_the_expected_speed() {
        let (primary, _) = SPEEDS[HighwayClass::Primary as usize];
        assert_eq!(
            expected_speed_kmh(HighwayClass::Primary, SpeedLimit::Kmh(30), true),
            27.0f64.min(primary)
        );
        let (_, motorway) = SPEEDS[HighwayClass::Motorway as usize];
        assert_eq!(
            expected_speed_kmh(HighwayClass::Motorway, SpeedLimit::None, false),
            motorway
        );
        assert_eq!(
            expected_speed_kmh(HighwayClass::Service, SpeedLimit::Kmh(1), true),
            5.0
        );
    }

    #[test]
    fn delays_add_to_the_driving_time() {
        let d = Delays {
            signal_s: 10.0,
            through_s: 2.0,
            yield_s: 5.0,
        };
        let plain = edge_seconds(
            360.0,
            HighwayClass::Residential,
            SpeedLimit::Unknown,
            EdgeFeatures::new(0, Junction::None, true),
            &d,
        );
        let (town, _) = SPEEDS[HighwayClass::Residential as usize];
        assert!((plain - 360.0 / (town / 3.6)).abs() < 1e-9);
        let busy = edge_seconds(
            360.0,
            HighwayClass::Residential,
            SpeedLimit::Unknown,
            EdgeFeatures::new(1, Junction::Yield, true),
            &d,
        );
        assert!((busy - plain - 15.0).abs() < 1e-9);
    }
}
