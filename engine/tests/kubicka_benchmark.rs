//! The public map-matching benchmark of Kubička et al. (2015): real 1 Hz
//! drives from around the world, each with its own road network and the
//! ground-truth route (../shared/data/kubicka-2015). Every track is matched
//! with the default configuration; the floors are a little below what was
//! measured (BENCHMARKS.md has the per-track table).

use std::io::BufReader;
use std::path::Path;

use lastmile_engine::evaluate::{Accuracy, match_trace};
use lastmile_engine::{MatcherConfig, kubicka};
use lastmile_roadgraph::{Graph, build, testdata};

fn open(path: &Path) -> BufReader<flate2::read::GzDecoder<std::fs::File>> {
    BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ))
}

#[test]
fn kubicka_tracks_match_their_true_routes() {
    let Some(dir) = testdata::data_subdir("kubicka-2015") else {
        return;
    };
    let ids = kubicka::track_ids(&dir).unwrap();
    assert!(ids.len() >= 50, "{} tracks", ids.len());
    let (mut total, mut good) = (Accuracy::default(), 0);
    for id in &ids {
        let file = |kind: &str| open(&dir.join(id).join(format!("{id}.{kind}.gz")));
        let net = kubicka::read_network(file("nodes"), file("arcs")).unwrap();
        let g = Graph::from_data(&build::build_matching_graph(&net.net, id.clone()).unwrap());
        let trace = kubicka::read_track(file("track"), id).unwrap();
        let route = kubicka::read_route(file("route")).unwrap();
        let m = match_trace(&g, &MatcherConfig::default(), &trace);
        let acc = kubicka::score(|e| net.arc_of(&g, e), &net.arc_length_m, &route, &m, true);
        eprintln!(
            "{id}: {:.2}% of pings on the true route, mismatch {:.2}%",
            100.0 * acc.way_share(),
            100.0 * acc.route_mismatch()
        );
        good += usize::from(acc.route_mismatch() < 0.05);
        total.merge(&acc);
    }
    eprintln!(
        "overall: {:.2}% on the true route, mismatch {:.2}%, {good}/{} tracks under 5% mismatch",
        100.0 * total.way_share(),
        100.0 * total.route_mismatch(),
        ids.len()
    );
    assert!(total.way_share() > 0.90, "{}", total.way_share());
    assert!(total.route_mismatch() < 0.05, "{}", total.route_mismatch());
    assert!(
        good >= ids.len() * 8 / 10,
        "{good} tracks under 5% mismatch"
    );
}
