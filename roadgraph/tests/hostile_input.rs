//! Corrupt inputs must give an error, never a panic: random byte damage and
//! truncation of a real PBF, and snapshots whose payload is damaged but whose
//! checksum was recomputed (so the structural validation is what stands).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::snapshot::HEADER_LEN;
use lastmile_roadgraph::{
    Cch, CchMetric, CchQuery, CityParams, EdgePos, Graph, Metric, NoProgress, snapshot, synthetic,
};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lastmile-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn damaged_pbf_is_an_error_not_a_panic() {
    let Some(src) = common::map_path("andorra.osm.pbf") else {
        return;
    };
    let original = std::fs::read(&src).unwrap();
    let dir = tmp("pbf");
    let path = dir.join("damaged.osm.pbf");
    let mut rng = Rng::seed(11);
    let (mut errors, mut oks) = (0, 0);
    for round in 0..120 {
        let mut bytes = original.clone();
        match round % 3 {
            0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            1 => {
                for _ in 0..1 + rng.below(20) {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            _ => {
                // Damage inside the first blob headers, where lengths live.
                for _ in 0..4 {
                    let i = rng.below(200.min(bytes.len() as u64)) as usize;
                    bytes[i] = rng.next_u64() as u8;
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            lastmile_roadgraph::open(&path, &NoProgress)
        }));
        match outcome {
            Ok(Ok(_)) => oks += 1,
            Ok(Err(e)) => {
                errors += 1;
                assert!(
                    e.to_string().contains("damaged.osm.pbf"),
                    "error names the file: {e}"
                );
            }
            Err(_) => panic!("round {round}: import panicked"),
        }
    }
    assert!(
        errors > 40,
        "most damage must be detected ({errors} errors, {oks} ok)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_snapshot_payload_with_valid_checksum_does_not_panic() {
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(3_000, 4)));
    let dir = tmp("snap");
    let path = dir.join("g.graph");
    snapshot::save(&g, &path).unwrap();
    let original = std::fs::read(&path).unwrap();
    let mut rng = Rng::seed(12);
    let mut rejected = 0;
    for round in 0..300 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(4) {
            let i = HEADER_LEN + rng.below((bytes.len() - HEADER_LEN) as u64) as usize;
            bytes[i] = rng.next_u64() as u8;
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[HEADER_LEN..]);
        bytes[24..32].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let Ok(g) = snapshot::load(&path) else {
                return false;
            };
            // Whatever loads must be safe to walk completely.
            let _ = g.bbox();
            for e in 0..g.num_edges() as u32 {
                let _ = g.edge_geometry(e);
                let _ = g.point_on_edge(e, 1.0);
                let _ = g.reverse_edge(e);
            }
            // And to customize and route on (the CCH is walked by its
            // stored tree; damage there must be caught at load).
            let cch = Cch::new(&g);
            let metric = CchMetric::for_metric(&cch, Metric::Time);
            let mut q = CchQuery::new(&cch);
            let m = g.num_edges() as u64;
            for k in 0..20 {
                let at = |i: u64| EdgePos {
                    edge: (i % m) as u32,
                    offset_m: 0.0,
                };
                let _ = q.route(&cch, &metric, &[at(k * 7919)], &[at(k * 104_729 + 1)]);
            }
            true
        }));
        match outcome {
            Ok(true) => {}
            Ok(false) => rejected += 1,
            Err(_) => panic!("round {round}: damaged snapshot panicked"),
        }
    }
    // Most random damage hits plain numbers (coordinates, weights) and loads;
    // damage to offsets and indices must be among the rejected.
    assert!(rejected > 0, "structural damage was never detected");
    std::fs::remove_dir_all(&dir).unwrap();
}
