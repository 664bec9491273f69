//! The live-vehicle index against brute force: nearest K by great-circle
//! distance and vehicles in a box, on a town and across the antimeridian and
//! a pole; latest-wins updates, removals, refused invalid positions; and
//! queries answered while another thread keeps updating and rebuilding.

use std::sync::Arc;

use lastmile_engine::live_index::{Found, LiveIndex, LivePosition};
use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::rng::Rng;

fn at(time: f64, lat: f64, lon: f64) -> LivePosition {
    LivePosition {
        time,
        pos: LatLon::new(lat, lon),
        edge: 0,
        offset_m: 0.0,
        speed_mps: 0.0,
    }
}

/// `n` vehicles at random in the box (longitudes past 180 wrap round).
fn fleet(
    index: &LiveIndex,
    rng: &mut Rng,
    n: u64,
    lat: (f64, f64),
    lon: (f64, f64),
) -> Vec<(u64, LatLon)> {
    (0..n)
        .map(|v| {
            let mut x = rng.range_f64(lon.0, lon.1);
            if x > 180.0 {
                x -= 360.0;
            }
            let p = at(1.0, rng.range_f64(lat.0, lat.1), x);
            assert!(index.update(v, p));
            (v, p.pos)
        })
        .collect()
}

fn check(
    index: &LiveIndex,
    all: &[(u64, LatLon)],
    rng: &mut Rng,
    lat: (f64, f64),
    lon: (f64, f64),
) {
    let mut got: Vec<Found> = Vec::new();
    for _ in 0..200 {
        let q = LatLon::new(rng.range_f64(lat.0, lat.1), rng.range_f64(lon.0, lon.1));
        let k = 1 + rng.below(10) as usize;
        index.nearest(q, k, &mut got);
        let mut want: Vec<f64> = all.iter().map(|(_, p)| haversine_m(q, *p)).collect();
        want.sort_by(f64::total_cmp);
        assert_eq!(got.len(), k.min(all.len()));
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.distance_m - w).abs() < 1e-3,
                "nearest {k}: {} vs {w}",
                g.distance_m
            );
        }
        let (a, b) = (rng.range_f64(lat.0, lat.1), rng.range_f64(lat.0, lat.1));
        let (c, d) = (rng.range_f64(lon.0, lon.1), rng.range_f64(lon.0, lon.1));
        let bx = [c.min(d), a.min(b), c.max(d), a.max(b)];
        index.in_box(bx, &mut got);
        let mut ids: Vec<u64> = got.iter().map(|f| f.vehicle).collect();
        ids.sort_unstable();
        let want: Vec<u64> = all
            .iter()
            .filter(|(_, p)| p.lon >= bx[0] && p.lon <= bx[2] && p.lat >= bx[1] && p.lat <= bx[3])
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(ids, want, "box {bx:?}");
    }
}

#[test]
fn nearest_and_box_equal_brute_force() {
    let mut rng = Rng::seed(3);
    // A city, then a region round the antimeridian, then one round a pole.
    for (lat, lon) in [
        ((47.0, 47.2), (8.0, 8.3)),
        ((-20.0, 20.0), (170.0, 190.0)),
        ((80.0, 90.0), (-180.0, 180.0)),
    ] {
        let index = LiveIndex::new();
        let all = fleet(&index, &mut rng, 3000, lat, lon);
        index.rebuild(2.0);
        // Query points and boxes over the whole longitude range when it wraps.
        let q_lon = if lon.1 > 180.0 { (-180.0, 180.0) } else { lon };
        check(&index, &all, &mut rng, lat, q_lon);
    }
}

#[test]
fn a_box_across_the_antimeridian() {
    let index = LiveIndex::new();
    index.update(1, at(1.0, 0.0, 179.9));
    index.update(2, at(1.0, 0.0, -179.9));
    index.update(3, at(1.0, 0.0, 0.0));
    index.rebuild(1.0);
    let mut got = Vec::new();
    index.in_box([179.0, -1.0, -179.0, 1.0], &mut got);
    let mut ids: Vec<u64> = got.iter().map(|f| f.vehicle).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    index.nearest(LatLon::new(0.0, 180.0), 2, &mut got);
    assert!(got.iter().all(|f| f.distance_m < 12_000.0), "{got:?}");
}

#[test]
fn latest_wins_removals_and_invalid_positions() {
    let index = LiveIndex::new();
    assert!(index.update(7, at(10.0, 47.0, 8.0)));
    assert!(
        index.update(7, at(5.0, 48.0, 8.0)),
        "an older position is accepted but ignored"
    );
    assert_eq!(index.get(7).unwrap().pos, LatLon::new(47.0, 8.0));
    assert!(index.update(7, at(11.0, 47.5, 8.0)));
    assert_eq!(index.get(7).unwrap().time, 11.0);
    assert!(!index.update(8, at(1.0, f64::NAN, 8.0)));
    assert!(!index.update(8, at(f64::INFINITY, 47.0, 8.0)));
    assert!(index.get(8).is_none());
    // Spatial answers are as of the last rebuild.
    let mut got = Vec::new();
    index.nearest(LatLon::new(47.5, 8.0), 1, &mut got);
    assert!(got.is_empty());
    index.rebuild(12.0);
    assert_eq!(index.built_at(), 12.0);
    index.nearest(LatLon::new(47.5, 8.0), 1, &mut got);
    assert_eq!(got[0].vehicle, 7);
    index.remove(7);
    index.rebuild(13.0);
    index.nearest(LatLon::new(47.5, 8.0), 1, &mut got);
    assert!(got.is_empty() && index.is_empty());
    index.nearest(LatLon::new(f64::NAN, 0.0), 3, &mut got);
    index.in_box([f64::NAN, 0.0, 1.0, 1.0], &mut got);
    assert!(got.is_empty());
}

#[test]
fn queries_run_while_shards_update_and_rebuild() {
    let index = Arc::new(LiveIndex::new());
    for v in 0..1000 {
        index.update(v, at(0.0, 47.0 + v as f64 * 1e-4, 8.0));
    }
    index.rebuild(0.0);
    let writer = {
        let index = index.clone();
        std::thread::spawn(move || {
            for round in 1..=50 {
                for v in 0..1000 {
                    index.update(
                        v,
                        at(
                            f64::from(round),
                            47.0 + v as f64 * 1e-4,
                            8.0 + f64::from(round) * 1e-4,
                        ),
                    );
                }
                index.rebuild(f64::from(round));
            }
        })
    };
    let mut got = Vec::new();
    let mut last = f64::NEG_INFINITY;
    while !writer.is_finished() {
        index.nearest(LatLon::new(47.05, 8.0), 5, &mut got);
        assert_eq!(got.len(), 5);
        // One consistent tree per query: all five from the same rebuild.
        assert!(got.iter().all(|f| f.at.time == got[0].at.time));
        assert!(index.built_at() >= last);
        last = index.built_at();
    }
    writer.join().unwrap();
    assert_eq!(index.built_at(), 50.0);
}
