//! GraphHopper's own map-matching test tracks on the maps that cover them
//! (../shared/data/graphhopper-mapmatching, EXPECTED.md), with the
//! expectations GraphHopper's tests state, adapted where an engine's own
//! numbers (times, exact lengths) do not carry over.

mod common;

use std::collections::HashMap;
use std::path::Path;

use lastmile_engine::MatcherConfig;
use lastmile_engine::evaluate::match_trace;
use lastmile_engine::trace::{Trace, read_gpx};
use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::{Graph, NoProgress, testdata};

fn load(map: &str, gpx: &str) -> Option<(Graph, Trace)> {
    let map = testdata::data_file(&format!("graphhopper-mapmatching/{map}"))?;
    let gpx = testdata::data_file(&format!("graphhopper-mapmatching/{gpx}"))?;
    let (data, _) = lastmile_roadgraph::import_pbf(&map, &NoProgress).expect("import");
    let trace = read_gpx(std::fs::File::open(&gpx).unwrap(), "gpx").expect("gpx");
    Some((Graph::from_data(&data), trace))
}

fn gpx_length(t: &Trace) -> f64 {
    t.rows
        .windows(2)
        .map(|w| haversine_m(w[0].ping.pos, w[1].ping.pos))
        .sum()
}

fn match_length(g: &Graph, t: &Trace, config: &MatcherConfig) -> (f64, Vec<i64>) {
    let m = match_trace(g, config, t);
    assert!(
        m.finalized.iter().all(Option::is_some),
        "every point must match"
    );
    let length = m.paths.iter().flatten().map(|p| p.to_m - p.from_m).sum();
    let mut ways: Vec<i64> = m.paths.iter().flatten().map(|p| g.way_id(p.edge)).collect();
    ways.dedup();
    (length, ways)
}

/// Way id -> `name` tag, read straight from the PBF.
fn way_names(pbf: &Path) -> HashMap<i64, String> {
    let mut names = HashMap::new();
    osmpbf::ElementReader::from_path(pbf)
        .unwrap()
        .for_each(|e| {
            if let osmpbf::Element::Way(w) = e
                && let Some((_, n)) = w.tags().find(|(k, _)| *k == "name")
            {
                names.insert(w.id(), n.to_string());
            }
        })
        .unwrap();
    names
}

/// GraphHopper `testIssue13`: points all stamped with the same time (so
/// times are synthesised), matched along the street: the match is as long
/// as the GPX track, within GraphHopper's 2.5 m.
#[test]
fn issue_13_match_is_as_long_as_the_track() {
    let Some((g, t)) = load("map-issue13.osm.pbf", "issue-13.gpx") else {
        return;
    };
    assert!(t.times_synthesized);
    let (len, _) = match_length(&g, &t, &MatcherConfig::default());
    let gpx = gpx_length(&t);
    assert!((len - gpx).abs() < 2.5, "match {len:.1} m, GPX {gpx:.1} m");
}

/// GraphHopper `testIssue127`: two identical points match, with no length.
#[test]
fn issue_127_two_identical_points() {
    let Some((g, t)) = load("map-issue13.osm.pbf", "issue-127.gpx") else {
        return;
    };
    assert_eq!(t.rows.len(), 2);
    let (len, _) = match_length(&g, &t, &MatcherConfig::default());
    assert!(len < 0.5, "{len}");
}

/// GraphHopper `testIssue70`: one-minute sampling through Novi Sad gives the
/// streets Милана Видака, Бранка Радичевића, Здравка Челара in that order.
#[test]
fn issue_70_street_sequence() {
    let Some((g, t)) = load("issue-70.osm.pbf", "issue-70.gpx") else {
        return;
    };
    let config = MatcherConfig {
        sigma_m: 10.0, // GraphHopper's default
        ..MatcherConfig::default()
    };
    let (_, ways) = match_length(&g, &t, &config);
    let names =
        way_names(&testdata::data_file("graphhopper-mapmatching/issue-70.osm.pbf").unwrap());
    let mut streets: Vec<&str> = ways
        .iter()
        .filter_map(|w| names.get(w).map(String::as_str))
        .collect();
    streets.dedup();
    assert_eq!(
        streets,
        ["Милана Видака", "Бранка Радичевића", "Здравка Челара"]
    );
}

/// GraphHopper `testIssue3023_noDeadEndDetours` (Andorra, CG-2 near Soldeu,
/// sigma 20, no timestamps): a match, no longer than 1.5 times the track.
#[test]
fn andorra_track_without_dead_end_detours() {
    let Some(g) = common::map("andorra.osm.pbf") else {
        return;
    };
    let Some(gpx) = testdata::data_file("graphhopper-mapmatching/andorra_for_map_matching.gpx")
    else {
        return;
    };
    let t = read_gpx(std::fs::File::open(&gpx).unwrap(), "gpx").unwrap();
    let config = MatcherConfig {
        sigma_m: 20.0,
        ..MatcherConfig::default()
    };
    let (len, ways) = match_length(g, &t, &config);
    let gpx_len = gpx_length(&t);
    assert!(!ways.is_empty());
    assert!(
        len > 0.5 * gpx_len && len / gpx_len < 1.5,
        "match {len:.0} m for a {gpx_len:.0} m track"
    );
}

/// GraphHopper's GPX parsing tests (`TrkTest`, `testGPX10`, `testEmptyGPX`) on
/// the Leipzig files, whose map is not here: times with and without
/// milliseconds, GPX 1.0, and a file with waypoints only.
#[test]
fn gpx_files_parse_like_graphhopper() {
    let read = |name: &str| {
        let path = testdata::data_file(&format!("graphhopper-mapmatching/{name}"))?;
        Some(read_gpx(std::fs::File::open(path).unwrap(), "gpx"))
    };
    let Some(with_millis) = read("test2.gpx") else {
        return;
    };
    let with_millis = with_millis.unwrap();
    assert!(!with_millis.times_synthesized);
    assert!(with_millis.rows.len() >= 2);
    // 1970-01-01T00:00:00.001Z and 00:00:14.002Z: milliseconds are kept.
    assert!((with_millis.rows[0].ping.time - 0.001).abs() < 1e-9);
    assert!((with_millis.rows[1].ping.time - 14.002).abs() < 1e-9);
    let without = read("test2_no_millis.gpx").unwrap().unwrap();
    assert!(without.rows.len() >= 2);
    for name in [
        "test1.gpx",
        "gpxv1_0.gpx",
        "tour2-with-loop.gpx",
        "another-tour-with-loop.gpx",
    ] {
        let t = read(name).unwrap().unwrap();
        assert!(t.rows.len() >= 2, "{name}");
        assert!(t.rows.iter().all(|r| r.ping.pos.is_valid()), "{name}");
    }
    assert!(matches!(
        read("test-only-wpt.gpx").unwrap(),
        Err(lastmile_engine::trace::TraceError::NoTracks)
    ));
}
