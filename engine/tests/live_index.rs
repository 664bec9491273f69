//! The live-vehicle index against brute force: nearest K by great-circle
//! distance and vehicles in a box, on a town and across the antimeridian and
//! a pole; invalid positions left out; answers as of the last rebuild; and
//! queries answered while another thread keeps rebuilding.

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

/// `n` vehicles at random in the box (longitudes past 180 wrap round),
/// indexed; returns their positions.
fn fleet(
    index: &LiveIndex,
    rng: &mut Rng,
    n: u64,
    lat: (f64, f64),
    lon: (f64, f64),
) -> Vec<(u64, LatLon)> {
    let positions: Vec<(u64, LivePosition)> = (0..n)
        .map(|v| {
            let mut x = rng.range_f64(lon.0, lon.1);
            if x > 180.0 {
                x -= 360.0;
            }
            (v, at(1.0, rng.range_f64(lat.0, lat.1), x))
        })
        .collect();
    index.rebuild(1.0, positions.iter().copied());
    assert_eq!(index.len(), n as usize);
    positions.into_iter().map(|(v, p)| (v, p.pos)).collect()
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
        // Query points and boxes over the whole longitude range when it wraps.
        let q_lon = if lon.1 > 180.0 { (-180.0, 180.0) } else { lon };
        check(&index, &all, &mut rng, lat, q_lon);
    }
}

#[test]
fn a_box_across_the_antimeridian() {
    let index = LiveIndex::new();
    index.rebuild(
        1.0,
        [
            (1, at(1.0, 0.0, 179.9)),
            (2, at(1.0, 0.0, -179.9)),
            (3, at(1.0, 0.0, 0.0)),
        ],
    );
    let mut got = Vec::new();
    index.in_box([179.0, -1.0, -179.0, 1.0], &mut got);
    let mut ids: Vec<u64> = got.iter().map(|f| f.vehicle).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    index.nearest(LatLon::new(0.0, 180.0), 2, &mut got);
    assert!(got.iter().all(|f| f.distance_m < 12_000.0), "{got:?}");
}

#[test]
fn invalid_positions_are_left_out_and_answers_are_as_of_the_last_rebuild() {
    let index = LiveIndex::new();
    let mut got = Vec::new();
    index.nearest(LatLon::new(47.5, 8.0), 1, &mut got);
    assert!(got.is_empty() && index.is_empty());
    index.rebuild(
        12.0,
        [
            (7, at(11.0, 47.5, 8.0)),
            (8, at(1.0, f64::NAN, 8.0)),
            (9, at(f64::INFINITY, 47.0, 8.0)),
            (10, at(1.0, 91.0, 8.0)),
        ],
    );
    assert_eq!(index.built_at(), 12.0);
    assert_eq!(index.len(), 1, "only the valid position is indexed");
    index.nearest(LatLon::new(47.5, 8.0), 3, &mut got);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].vehicle, got[0].at.time), (7, 11.0));
    // A vehicle gone from the positions is gone after the next rebuild.
    index.rebuild(13.0, []);
    index.nearest(LatLon::new(47.5, 8.0), 1, &mut got);
    assert!(got.is_empty() && index.is_empty());
    index.nearest(LatLon::new(f64::NAN, 0.0), 3, &mut got);
    index.in_box([f64::NAN, 0.0, 1.0, 1.0], &mut got);
    assert!(got.is_empty());
}

#[test]
fn queries_run_while_another_thread_rebuilds() {
    let index = Arc::new(LiveIndex::new());
    let positions = |round: u32| {
        (0..1000u64).map(move |v| {
            (
                v,
                at(
                    f64::from(round),
                    47.0 + v as f64 * 1e-4,
                    8.0 + f64::from(round) * 1e-4,
                ),
            )
        })
    };
    index.rebuild(0.0, positions(0));
    let writer = {
        let index = index.clone();
        std::thread::spawn(move || {
            for round in 1..=50 {
                index.rebuild(f64::from(round), positions(round));
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
