//! The Kubička benchmark drives (../shared/data/kubicka-2015) through the
//! path a user takes: each track's road network written as an OSM PBF file
//! (one way per pair of nodes joined by arcs, `oneway=yes` where the data has
//! one direction only), `lastmile import`, then `lastmile match` on the track
//! as a CSV. The imported graph must be the one the benchmark reader builds
//! (every road kept, whatever its component), and the finalised matches
//! must score exactly the same through both paths.

mod common;

use std::collections::HashSet;
use std::io::BufReader;
use std::path::Path;

use common::{lastmile, pbf, tmpdir};
use lastmile_engine::MatcherConfig;
use lastmile_engine::evaluate::match_trace;
use lastmile_engine::kubicka::{self, ArcNetwork};
use lastmile_engine::trace::Trace;
use lastmile_roadgraph::{Graph, build, snapshot, testdata};

fn open(path: &Path) -> BufReader<flate2::read::GzDecoder<std::fs::File>> {
    BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ))
}

/// The network as an OSM file: node `i` is OSM node `i + 1`.
fn osm_file(net: &ArcNetwork) -> Vec<u8> {
    let nodes: Vec<(i64, f64, f64)> = (0..net.net.lat.len())
        .map(|i| {
            (
                i as i64 + 1,
                f64::from(net.net.lat[i]) / 1e7,
                f64::from(net.net.lon[i]) / 1e7,
            )
        })
        .collect();
    let ways: Vec<pbf::Way> = net
        .ways()
        .map(|w| {
            let mut tags = vec![("highway", "unclassified")];
            if w.oneway {
                tags.push(("oneway", "yes"));
            }
            pbf::Way {
                id: w.id,
                refs: w.nodes.iter().map(|&n| i64::from(n) + 1).collect(),
                tags,
            }
        })
        .collect();
    pbf::write(&nodes, &ways)
}

fn trace_csv(trace: &Trace) -> String {
    let mut out = String::from("vehicle_id,timestamp,lat,lon\n");
    for r in &trace.rows {
        out.push_str(&format!(
            "{},{},{},{}\n",
            r.vehicle, r.ping.time, r.ping.pos.lat, r.ping.pos.lon
        ));
    }
    out
}

#[test]
fn kubicka_tracks_score_the_same_through_import_and_match() {
    let Some(dir) = testdata::data_subdir("kubicka-2015") else {
        return;
    };
    let ids = kubicka::track_ids(&dir).unwrap();
    assert!(ids.len() >= 50, "{} tracks", ids.len());
    let tmp = tmpdir("kubicka-osm");
    let (mut pings, mut on_route, mut outside_main) = (0u64, 0u64, 0usize);
    for id in &ids {
        let file = |kind: &str| open(&dir.join(id).join(format!("{id}.{kind}.gz")));
        let net = kubicka::read_network(file("nodes"), file("arcs")).unwrap();
        let trace = kubicka::read_track(file("track"), id).unwrap();
        let route = kubicka::read_route(file("route")).unwrap();

        // The benchmark's own path.
        let direct = Graph::from_data(&build::build_matching_graph(&net.net, id.clone()).unwrap());
        let m = match_trace(&direct, &MatcherConfig::default(), &trace);
        let want = kubicka::score(
            |e| net.arc_of(&direct, e),
            &net.arc_length_m,
            &route,
            &m,
            true,
        );

        // The user's path.
        let (osm, graph, csv, out) = (
            tmp.join(format!("{id}.osm.pbf")),
            tmp.join(format!("{id}.graph")),
            tmp.join(format!("{id}.csv")),
            tmp.join(format!("{id}.matched.csv")),
        );
        std::fs::write(&osm, osm_file(&net)).unwrap();
        std::fs::write(&csv, trace_csv(&trace)).unwrap();
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let o = lastmile(&["import", &path(&osm), "--out", &path(&graph)]);
        assert!(
            o.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let imported = snapshot::load(&graph).unwrap();
        let (a, b) = (imported.to_data(), direct.to_data());
        assert!(
            a.node_lat == b.node_lat
                && a.node_lon == b.node_lon
                && a.tail == b.tail
                && a.head == b.head
                && a.edge_road == b.edge_road
                && a.road_way == b.road_way
                && a.travel_time_ms == b.travel_time_ms
                && a.node_component == b.node_component,
            "{id}: the imported graph differs from the benchmark's"
        );
        outside_main += usize::from(imported.num_components() > 1);
        let o = lastmile(&["match", &path(&graph), &path(&csv), "--out", &path(&out)]);
        assert!(
            o.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );

        // Score the matched CSV: each finalised edge names its arc.
        let true_arcs: HashSet<i64> = route.iter().copied().collect();
        let mut reader = csv::Reader::from_path(&out).unwrap();
        let edge_col = reader
            .headers()
            .unwrap()
            .iter()
            .position(|h| h == "edge_id")
            .unwrap();
        let (mut n, mut good) = (0u64, 0u64);
        for row in reader.records() {
            let row = row.unwrap();
            n += 1;
            if let Ok(edge) = row[edge_col].parse::<u32>() {
                good += u64::from(true_arcs.contains(&net.arc_of(&imported, edge)));
            }
        }
        assert_eq!(
            (n, good),
            (want.pings, want.on_true_way),
            "{id}: scores differ"
        );
        pings += n;
        on_route += good;
    }
    eprintln!(
        "{} tracks through import and match: {:.2}% of {pings} pings on the true route; {outside_main} networks with more than one component",
        ids.len(),
        100.0 * on_route as f64 / pings as f64
    );
    assert!(
        outside_main > 0,
        "some networks have roads outside the main component"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
