//! A fleet's zones and rules on a real map, judged against the truth: a
//! dispatcher imports an OpenStreetMap extract (`lastmile import`), draws a
//! depot and a restricted area in GeoJSON (`lastmile zones put`), its fleet
//! has working hours and a service interval in `lastmile.toml`, and its
//! devices replay a simulated day (`lastmile replay`). The zone and rule
//! events that come out are held to the simulator's true positions and
//! times, never to the engine's own output: entries where the truth
//! entered, a dwell where it stayed (a depot, a customer's yard),
//! `forbidden_zone` where it went into the restricted area,
//! `off_hours_movement` where it drove after hours, `service_due` where it
//! had truly driven the interval; and nothing for the vehicles whose day
//! touched none of it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::server::{ServerExt, replay_and_hear, serve_on};
use common::{lastmile, tmpdir};
use lastmile_ingest::protocol::WireEvent;
use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::testdata;
use serde_json::json;

const DEVICE: &str = "initech-device-token-001";
const DISPATCHER: &str = "initech-dispatcher-tok-1";
const READER: &str = "initech-reader-token-001";

/// The simulated day starts at 2026-01-01T00:00Z (a Thursday); the fleet
/// works its first twenty minutes, by its working hours in UTC.
const START: f64 = 1_767_225_600.0;
const HOURS_END: f64 = START + 1200.0;
const SERVICE_KM: f64 = 5.0;

/// The fleet, its working hours and service interval, and its tokens.
const INITECH: &str = r#"
[[fleets]]
name = "initech"
time_zone = "UTC"
working_hours = ["mon-sun 00:00-00:20"]
service_every_km = 5.0

[[tokens]]
token = "initech-device-token-001"
role = "device"
fleet = "initech"

[[tokens]]
token = "initech-dispatcher-tok-1"
role = "dispatcher"
fleet = "initech"

[[tokens]]
token = "initech-reader-token-001"
role = "reader"
fleet = "initech"
"#;

const ZONE_ENTERED: u8 = 26;
const ZONE_DWELL: u8 = 28;
const FORBIDDEN_ZONE: u8 = 29;
const OFF_HOURS: u8 = 32;
const SERVICE_DUE: u8 = 33;
/// The engine's margin inside and outside a border (`[detect] zone_margin_m`).
const MARGIN: f64 = 15.0;

/// Each vehicle's true positions, in time order.
type Truth = BTreeMap<String, Vec<(f64, LatLon)>>;

fn read_truth(trace: &Path) -> Truth {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (v, t, lat, lon) = (
        col("vehicle_id"),
        col("timestamp"),
        col("true_lat"),
        col("true_lon"),
    );
    let mut truth = Truth::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let at = LatLon::new(f[lat].parse().unwrap(), f[lon].parse().unwrap());
        truth
            .entry(f[v].to_string())
            .or_default()
            .push((f[t].parse().unwrap(), at));
    }
    truth
}

/// A zone as the test judges the truth against it: signed metres from its
/// border (negative inside).
enum Shape {
    Circle(LatLon, f64),
    /// South-west and north-east corners.
    Box(LatLon, LatLon),
}

impl Shape {
    fn depth(&self, p: LatLon) -> f64 {
        match *self {
            Shape::Circle(c, r) => haversine_m(c, p) - r,
            Shape::Box(sw, ne) => {
                // Metres to the nearest side, inside or out (the box is a
                // few hundred metres: flat enough).
                let m_lat = 111_195.0;
                let m_lon = m_lat * sw.lat.to_radians().cos();
                let dx = ((sw.lon - p.lon).max(p.lon - ne.lon)) * m_lon;
                let dy = ((sw.lat - p.lat).max(p.lat - ne.lat)) * m_lat;
                if dx <= 0.0 && dy <= 0.0 {
                    dx.max(dy)
                } else {
                    dx.max(0.0).hypot(dy.max(0.0))
                }
            }
        }
    }
}

/// The times a vehicle's true positions went `margin` inside (after being
/// `margin` outside, or at the start).
fn true_entries(path: &[(f64, LatLon)], zone: &Shape, margin: f64) -> Vec<f64> {
    let mut inside = false;
    let mut entries = Vec::new();
    for &(t, p) in path {
        let d = zone.depth(p);
        if d < -margin && !inside {
            inside = true;
            entries.push(t);
        } else if d > margin {
            inside = false;
        }
    }
    entries
}

/// The longest stretch of time the truth stayed within `margin` of the zone's inside.
fn longest_stay(path: &[(f64, LatLon)], zone: &Shape, margin: f64) -> f64 {
    let (mut best, mut since) = (0.0_f64, None);
    for &(t, p) in path {
        if zone.depth(p) < margin {
            let s = *since.get_or_insert(t);
            best = best.max(t - s);
        } else {
            since = None;
        }
    }
    best
}

/// Where the truth stood still longest.
fn longest_stand(path: &[(f64, LatLon)]) -> LatLon {
    let (mut best, mut since) = ((0.0, path[0].1), 0);
    for i in 1..path.len() {
        if haversine_m(path[i - 1].1, path[i].1) > 0.5 {
            since = i;
        } else if path[i].0 - path[since].0 > best.0 {
            best = (path[i].0 - path[since].0, path[i].1);
        }
    }
    best.1
}

/// Metres the truth drove up to each position.
fn driven(path: &[(f64, LatLon)]) -> Vec<(f64, f64)> {
    let mut d = 0.0;
    let mut out = vec![(path[0].0, 0.0)];
    for w in path.windows(2) {
        d += haversine_m(w[0].1, w[1].1);
        out.push((w[1].0, d));
    }
    out
}

/// The longest stretch after `from` during which the truth moved at least
/// 1.5 m/s at every step: how long it drove without a stop.
fn longest_drive_after(path: &[(f64, LatLon)], from: f64) -> f64 {
    let (mut best, mut since) = (0.0_f64, None);
    for w in path.windows(2).filter(|w| w[0].0 >= from) {
        let v = haversine_m(w[0].1, w[1].1) / (w[1].0 - w[0].0);
        if v >= 1.5 {
            let s = *since.get_or_insert(w[0].0);
            best = best.max(w[1].0 - s);
        } else {
            since = None;
        }
    }
    best
}

#[test]
fn a_replayed_day_on_a_real_map_raises_the_zone_and_rule_events_the_truth_does() {
    let Some(pbf) = testdata::data_file("maps/monaco.osm.pbf") else {
        return;
    };
    let dir = tmpdir("zone-day");
    let graph = dir.join("monaco.graph");
    let o = lastmile(&[
        "import",
        pbf.to_str().unwrap(),
        "--out",
        graph.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = dir.join("trace.csv");
    let o = lastmile(&[
        "simulate",
        graph.to_str().unwrap(),
        "--vehicles",
        "10",
        "--duration",
        "1800",
        "--interval",
        "2",
        "--noise",
        "5",
        "--seed",
        "4",
        "--out",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth = read_truth(&trace);

    // The depot where the first van starts its day, and a restricted block
    // the second one drives through later.
    let depot_at = truth["veh-00000"][0].1;
    let second = &truth["veh-00001"];
    let through = second[second.len() * 3 / 5].1;
    let (h_lat, h_lon) = (0.0012, 0.0016);
    let sw = LatLon::new(through.lat - h_lat, through.lon - h_lon);
    let ne = LatLon::new(through.lat + h_lat, through.lon + h_lon);
    // A customer's yard where the third one stood longest (a delivery).
    let yard_at = longest_stand(&truth["veh-00002"]);
    let zones = [
        ("depot", Shape::Circle(depot_at, 150.0)),
        ("old-town", Shape::Box(sw, ne)),
        ("yard", Shape::Circle(yard_at, 80.0)),
    ];
    let file = dir.join("zones.geojson");
    let ring = json!([
        [sw.lon, sw.lat],
        [ne.lon, sw.lat],
        [ne.lon, ne.lat],
        [sw.lon, ne.lat],
        [sw.lon, sw.lat]
    ]);
    std::fs::write(
        &file,
        json!({"type": "FeatureCollection", "features": [
            {"type": "Feature",
             "properties": {"id": "depot", "name": "Depot", "radius_m": 150, "dwell_s": 120},
             "geometry": {"type": "Point", "coordinates": [depot_at.lon, depot_at.lat]}},
            {"type": "Feature",
             "properties": {"id": "yard", "radius_m": 80, "dwell_s": 60},
             "geometry": {"type": "Point", "coordinates": [yard_at.lon, yard_at.lat]}},
            {"type": "Feature",
             "properties": {"id": "old-town", "name": "Old town, no vans", "kind": "forbidden"},
             "geometry": {"type": "Polygon", "coordinates": [ring]}}
        ]})
        .to_string(),
    )
    .unwrap();

    let s = serve_on(&graph, &dir, "", INITECH, &[]);
    let o = lastmile(&s.cli_as(&["zones", "put", file.to_str().unwrap()], DISPATCHER));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kinds = (26..=33).map(|k| 1u64 << k).sum();
    let events: Vec<WireEvent> = replay_and_hear(&s, &trace, DEVICE, READER, kinds)
        .into_values()
        .collect();
    let of = |vehicle: &str, kind: u8, zone: Option<&str>| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e.vehicle == vehicle && e.kind == kind && e.zone.as_deref() == zone)
            .map(|e| e.value)
            .collect()
    };

    let mut seen = BTreeMap::<&str, usize>::new();
    for (vehicle, path) in &truth {
        let v = vehicle.as_str();
        for (zone, shape) in &zones {
            // Entries: those well inside are all there, and no more than
            // the truth made at the margin's edge; each at a true entry's
            // time, give or take a few fixes.
            let strict = true_entries(path, shape, MARGIN + 10.0);
            let loose = true_entries(path, shape, MARGIN - 10.0);
            let got = of(v, ZONE_ENTERED, Some(zone));
            assert!(
                (strict.len()..=loose.len()).contains(&got.len()),
                "{v} {zone}: {} entries, the truth {} to {}",
                got.len(),
                strict.len(),
                loose.len()
            );
            for t in &got {
                assert!(
                    loose.iter().any(|l| (l - 10.0..=l + 60.0).contains(t)),
                    "{v} {zone}: entered at {t}, the truth at {loose:?}"
                );
            }
            *seen.entry(zone).or_default() += strict.len();
            // The restricted block is told as forbidden at each entry
            // (at most once per cool-down, 900 s).
            let forbidden = of(v, FORBIDDEN_ZONE, Some(zone));
            if *zone == "old-town" {
                assert_eq!(
                    forbidden.len().min(1),
                    got.len().min(1),
                    "{v}: {forbidden:?}"
                );
            } else {
                assert!(forbidden.is_empty(), "{v} {zone}: {forbidden:?}");
            }
        }
        // A dwell where the truth stayed inside long enough (depot 120 s,
        // yard 60 s), none where it did not.
        for (zone, dwell_s) in [("depot", 120.0), ("yard", 60.0)] {
            let shape = &zones.iter().find(|z| z.0 == zone).unwrap().1;
            let dwells = of(v, ZONE_DWELL, Some(zone));
            if longest_stay(path, shape, -(MARGIN + 10.0)) >= dwell_s + 30.0 {
                assert!(!dwells.is_empty(), "{v} stayed in {zone}");
            }
            if longest_stay(path, shape, -(MARGIN - 10.0)) < dwell_s - 20.0 {
                assert!(dwells.is_empty(), "{v} never stayed in {zone}: {dwells:?}");
            }
            *seen.entry("dwell").or_default() += dwells.len();
        }

        // Driving after hours: told once (the cool-down outlasts the day's
        // rest), when the truth drove on for a couple of minutes; never for
        // a van that stood still after hours, never for the hours themselves.
        let off = of(v, OFF_HOURS, None);
        assert!(off.len() <= 1, "{v}: {off:?}");
        assert!(
            off.iter().all(|&since| since >= HOURS_END - 5.0),
            "{v}: {off:?}"
        );
        let drive = longest_drive_after(path, HOURS_END);
        if drive >= 150.0 {
            assert_eq!(off.len(), 1, "{v} drove {drive} s after hours");
        }
        if drive == 0.0 {
            assert!(off.is_empty(), "{v} stood still after hours: {off:?}");
        }

        // Service due once the truth had driven the interval (the matched
        // odometer is within a few percent of it, and a few fixes late).
        let d = SERVICE_KM * 1000.0;
        let metres = driven(path);
        let total = metres.last().unwrap().1;
        let due: Vec<&WireEvent> = events
            .iter()
            .filter(|e| e.vehicle == *vehicle && e.kind == SERVICE_DUE)
            .collect();
        match due.as_slice() {
            [] => assert!(
                total < 1.06 * d + 400.0,
                "{v} drove {total:.0} m, never told"
            ),
            [e] => {
                let t = e.time_ms as f64 / 1000.0;
                let at = metres.iter().take_while(|m| m.0 <= t).last().unwrap().1;
                assert!(
                    (0.94 * d..=d + 400.0).contains(&at),
                    "{v}: service due when it had truly driven {at:.0} m"
                );
                assert!(e.value >= d && e.reference == 1.0, "{e:?}");
            }
            more => panic!("{v}: told {} times", more.len()),
        }
        if total < 0.94 * d {
            assert!(due.is_empty(), "{v} drove {total:.0} m");
        }

        // A van whose day never came near a zone hears nothing of zones.
        let far = zones
            .iter()
            .all(|(_, shape)| path.iter().all(|&(_, p)| shape.depth(p) > MARGIN + 30.0));
        if far {
            assert!(
                events
                    .iter()
                    .all(|e| e.vehicle != *vehicle || e.zone.is_none()),
                "{v} was never near a zone"
            );
            *seen.entry("clean").or_default() += 1;
        }
    }
    for what in ["depot", "old-town", "yard", "dwell", "clean"] {
        assert!(seen.get(what).is_some_and(|&n| n >= 1), "{seen:?}");
    }
    let kinds = |k: u8| events.iter().filter(|e| e.kind == k).count();
    assert!(kinds(OFF_HOURS) >= 3, "few vans drove after hours");
    assert!(kinds(SERVICE_DUE) >= 2, "few vans drove {SERVICE_KM} km");
}
