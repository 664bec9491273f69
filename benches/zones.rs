//! What a ping costs the zone detectors (issue 38): one vehicle's
//! `Presence::observe` at a matched position, on the 1M-edge city with 0,
//! 1,000 and 10,000 zones (customers' yards: octagons of about 150 m
//! around random junctions), with and without one wide allowed area (the
//! city's bounds, 64 points), which every position tests.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastmile_engine::zones::{Judging, Presence, Shape, Zone, ZoneKind, ZoneSet};
use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::rng::Rng;

const MARGIN_M: f64 = 15.0;
/// The detectors' defaults.
const JUDGING: Judging = Judging {
    margin_m: MARGIN_M,
    positions: 2,
};

fn yard(id: u64, c: LatLon) -> Zone {
    let (dlat, dlon) = (
        150.0 / 111_195.0,
        150.0 / (111_195.0 * c.lat.to_radians().cos()),
    );
    let ring = (0..8)
        .map(|k| {
            let a = f64::from(k) * std::f64::consts::TAU / 8.0;
            LatLon::new(c.lat + dlat * a.sin(), c.lon + dlon * a.cos())
        })
        .collect();
    Zone {
        id,
        shape: Shape::polygon(vec![ring]).unwrap(),
        dwell_s: Some(600.0),
        kind: ZoneKind::Plain,
        speed_limit_kmh: None,
    }
}

/// An ellipse of 64 points through the corners' middles of `points`' bounds.
fn area(id: u64, points: &[LatLon]) -> Zone {
    let lat = points.iter().map(|p| p.lat);
    let lon = points.iter().map(|p| p.lon);
    let (lat0, lat1) = (
        lat.clone().fold(f64::MAX, f64::min),
        lat.fold(f64::MIN, f64::max),
    );
    let (lon0, lon1) = (
        lon.clone().fold(f64::MAX, f64::min),
        lon.fold(f64::MIN, f64::max),
    );
    let (c, r) = (
        LatLon::new((lat0 + lat1) / 2.0, (lon0 + lon1) / 2.0),
        ((lat1 - lat0) * 0.7, (lon1 - lon0) * 0.7),
    );
    let ring = (0..64)
        .map(|k| {
            let a = f64::from(k) * std::f64::consts::TAU / 64.0;
            LatLon::new(c.lat + r.0 * a.sin(), c.lon + r.1 * a.cos())
        })
        .collect();
    Zone {
        id,
        shape: Shape::polygon(vec![ring]).unwrap(),
        dwell_s: None,
        kind: ZoneKind::Allowed,
        speed_limit_kmh: None,
    }
}

fn zones(c: &mut Criterion) {
    let (_, g) = common::city(1_000_000);
    let points = common::gps_points(&g, 8192, 5);
    let mut group = c.benchmark_group("zones_observe");
    group.throughput(Throughput::Elements(1));
    for (count, wide) in [(0, false), (1_000, false), (10_000, false), (10_000, true)] {
        let mut rng = Rng::seed(11);
        let mut list: Vec<Zone> = (0..count)
            .map(|k| {
                let n = rng.below(g.num_nodes() as u64) as u32;
                let p = g.node_pos(n);
                yard(k as u64, LatLon::new(p.lat, p.lon))
            })
            .collect();
        if wide {
            list.push(area(u64::MAX, &points));
        }
        let set = ZoneSet::new(list, MARGIN_M);
        // A thousand vehicles, each at a position in turn.
        let mut vehicles = vec![Presence::default(); 1000];
        let (mut i, mut out) = (0usize, Vec::new());
        let name = format!("{count}{}", if wide { "_and_an_area" } else { "" });
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let p = points[i % points.len()];
                out.clear();
                vehicles[i % 1000].observe(&set, p, i as f64, JUDGING, &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, zones);
criterion_main!(benches);
