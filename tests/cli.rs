//! End-to-end tests of the `lastmile` binary: import, info, route and
//! generate on real and hand-made maps, and every bad-input case exiting
//! non-zero with a one-line error that names the file, never a panic.

mod common;

use std::path::PathBuf;

use common::{assert_clean_error, lastmile, pbf, stdout, tmpdir};

use lastmile_roadgraph::testdata;

/// A 3x3 grid of nodes about 110 m apart around (50.0, 8.0).
fn grid_nodes() -> Vec<(i64, f64, f64)> {
    (0..9)
        .map(|i| {
            (
                100 + i,
                50.0 + (i / 3) as f64 * 0.001,
                8.0 + (i % 3) as f64 * 0.0015,
            )
        })
        .collect()
}

#[test]
fn hand_made_pbf_imports_with_the_right_attributes() {
    let dir = tmpdir("handmade");
    let ways = vec![
        pbf::Way {
            id: 1,
            refs: vec![100, 101, 102, 105, 108, 107, 106, 103, 100],
            tags: vec![("highway", "residential"), ("maxspeed", "20 mph")],
        },
        pbf::Way {
            id: 2,
            refs: vec![101, 104, 107],
            tags: vec![("highway", "primary"), ("oneway", "yes")],
        },
        pbf::Way {
            id: 3,
            refs: vec![103, 104],
            tags: vec![("highway", "footway")],
        },
        pbf::Way {
            id: 4,
            refs: vec![104, 105],
            tags: vec![("highway", "service"), ("access", "private")],
        },
    ];
    let input = dir.join("grid.osm.pbf");
    std::fs::write(&input, pbf::write(&grid_nodes(), &ways)).unwrap();
    let out = dir.join("grid.graph");
    let o = lastmile(&[
        "import",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // Junctions 101, 107 (shared with way 2) and the ring's closing node 100
    // split way 1 into three roads (six edges); way 2 is one one-way edge.
    assert_eq!(report["car_ways"], 2);
    assert_eq!(report["nodes"], 3);
    assert_eq!(report["edges"], 7);

    let g = lastmile_roadgraph::open(&out, &lastmile_roadgraph::NoProgress).unwrap();
    for e in 0..g.num_edges() as u32 {
        match g.way_id(e) {
            1 => assert_eq!(g.speed_limit(e), lastmile_roadgraph::SpeedLimit::Kmh(32)),
            2 => {
                assert_eq!(g.reverse_edge(e), None);
                assert_eq!(g.class(e), lastmile_roadgraph::HighwayClass::Primary);
            }
            w => panic!("unexpected way {w}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file() {
    let p = PathBuf::from("/nonexistent/nowhere.osm.pbf");
    assert_clean_error(
        &lastmile(&["info", p.to_str().unwrap()]),
        &p,
        "No such file",
    );
    assert_clean_error(
        &lastmile(&["import", p.to_str().unwrap(), "--out", "/tmp/x.graph"]),
        &p,
        "No such file",
    );
}

#[test]
fn not_a_pbf() {
    let dir = tmpdir("notpbf");
    let p = dir.join("notes.osm.pbf");
    std::fs::write(&p, "vehicle_id,timestamp,lat,lon\n1,0,50,8\n").unwrap();
    assert_clean_error(
        &lastmile(&["info", p.to_str().unwrap()]),
        &p,
        "not an OSM PBF file or a lastmile graph snapshot",
    );
    let empty = dir.join("empty.osm.pbf");
    std::fs::write(&empty, "").unwrap();
    assert_clean_error(
        &lastmile(&["import", empty.to_str().unwrap(), "--out", "/tmp/x.graph"]),
        &empty,
        "not an OSM PBF",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pbf_without_roads() {
    let dir = tmpdir("noroads");
    let p = dir.join("buildings.osm.pbf");
    let ways = vec![pbf::Way {
        id: 1,
        refs: vec![100, 101, 104, 103, 100],
        tags: vec![("building", "yes")],
    }];
    std::fs::write(&p, pbf::write(&grid_nodes(), &ways)).unwrap();
    let out = dir.join("x.graph");
    assert_clean_error(
        &lastmile(&[
            "import",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        &p,
        "no car-routable roads",
    );
    assert!(!out.exists(), "no snapshot may be written on failure");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_and_corrupt_pbf() {
    let Some(src) = testdata::data_file("maps/andorra.osm.pbf") else {
        return;
    };
    let bytes = std::fs::read(&src).unwrap();
    let dir = tmpdir("corrupt");
    let truncated = dir.join("truncated.osm.pbf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &lastmile(&[
            "import",
            truncated.to_str().unwrap(),
            "--out",
            "/tmp/x.graph",
        ]),
        &truncated,
        "corrupt or truncated OSM PBF",
    );
    let corrupt = dir.join("corrupt.osm.pbf");
    let mut flipped = bytes.clone();
    for i in (bytes.len() / 3..bytes.len() / 3 + 64).step_by(3) {
        flipped[i] ^= 0x5A;
    }
    std::fs::write(&corrupt, &flipped).unwrap();
    assert_clean_error(
        &lastmile(&["import", corrupt.to_str().unwrap(), "--out", "/tmp/x.graph"]),
        &corrupt,
        "corrupt or truncated OSM PBF",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_snapshots() {
    let dir = tmpdir("snap");
    let good = dir.join("city.graph");
    let o = lastmile(&[
        "generate",
        "--edges",
        "2000",
        "--seed",
        "3",
        "--out",
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let bytes = std::fs::read(&good).unwrap();

    let version = dir.join("old.graph");
    let mut v = bytes.clone();
    v[8] = 99;
    std::fs::write(&version, &v).unwrap();
    assert_clean_error(
        &lastmile(&["info", version.to_str().unwrap()]),
        &version,
        "snapshot format version 99",
    );

    let truncated = dir.join("short.graph");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert_clean_error(
        &lastmile(&["info", truncated.to_str().unwrap()]),
        &truncated,
        "truncated snapshot",
    );
    let header_only = dir.join("header.graph");
    std::fs::write(&header_only, &bytes[..20]).unwrap();
    assert_clean_error(
        &lastmile(&["info", header_only.to_str().unwrap()]),
        &header_only,
        "truncated snapshot",
    );

    let corrupt = dir.join("corrupt.graph");
    let mut c = bytes.clone();
    let mid = c.len() / 2;
    c[mid] ^= 0xFF;
    std::fs::write(&corrupt, &c).unwrap();
    assert_clean_error(
        &lastmile(&[
            "route",
            corrupt.to_str().unwrap(),
            "--from",
            "47,8",
            "--to",
            "47.01,8.01",
        ]),
        &corrupt,
        "checksum mismatch",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_coordinates_and_points_off_the_map() {
    let dir = tmpdir("coords");
    let g = dir.join("city.graph");
    assert!(
        lastmile(&["generate", "--edges", "2000", "--out", g.to_str().unwrap()])
            .status
            .success()
    );
    let gs = g.to_str().unwrap();
    for bad in ["NaN,8", "91,8", "47;8", "47,abc"] {
        let o = lastmile(&["route", gs, "--from", bad, "--to", "47,8"]);
        assert_eq!(o.status.code(), Some(2), "clap rejects {bad}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    let o = lastmile(&["route", gs, "--from", "10,10", "--to", "47,8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("no road within 1000 m of the start point"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn import_info_route_on_real_maps() {
    // Places on either side of each map, as a person would type them.
    let cases = [
        ("monaco.osm.pbf", "43.7384,7.4246", "43.7311,7.4197"),
        ("andorra.osm.pbf", "42.5078,1.5211", "42.4637,1.4913"),
    ];
    for (map, from, to) in cases {
        let Some(src) = testdata::data_file(&format!("maps/{map}")) else {
            return;
        };
        let dir = tmpdir(map);
        let g = dir.join("map.graph");
        let o = lastmile(&[
            "import",
            src.to_str().unwrap(),
            "--out",
            g.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary = stdout(&o);
        assert_eq!(summary.lines().count(), 1, "one-line summary: {summary}");
        assert!(summary.contains("km of road"), "{summary}");

        let o = lastmile(&["info", g.to_str().unwrap(), "--json"]);
        let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert!(info["nodes"].as_u64().unwrap() > 1000);
        assert_eq!(info["bbox"].as_array().unwrap().len(), 4);

        for input in [g.to_str().unwrap(), src.to_str().unwrap()] {
            let o = lastmile(&["route", input, "--from", from, "--to", to, "--json"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            let (d, t) = (
                r["distance_m"].as_f64().unwrap(),
                r["duration_s"].as_f64().unwrap(),
            );
            assert!(d > 500.0 && d < 20_000.0 && t > 30.0, "{map}: {d} m, {t} s");
            let by_distance = lastmile(&[
                "route", input, "--from", from, "--to", to, "--metric", "distance", "--json",
            ]);
            let rd: serde_json::Value = serde_json::from_str(&stdout(&by_distance)).unwrap();
            assert!(
                rd["distance_m"].as_f64().unwrap() <= d + 0.01,
                "shortest is never longer than fastest"
            );
        }
        let o = lastmile(&[
            "route",
            g.to_str().unwrap(),
            "--from",
            from,
            "--to",
            to,
            "--geojson",
        ]);
        let f: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(f["geometry"]["type"], "LineString");
        assert!(f["geometry"]["coordinates"].as_array().unwrap().len() >= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The demo's two links open while its fleet drives: the dispatcher's
/// page, and the customer's stop through the tracking link's token.
#[test]
fn the_demos_links_open_while_its_fleet_drives() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args([
            "demo",
            "--edges",
            "20000",
            "--vehicles",
            "20",
            "--seconds",
            "60",
        ])
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut dispatcher, mut customer) = (None, None);
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(l) = line.strip_prefix("dispatcher: ") {
            dispatcher = Some(l.trim().to_string());
        }
        if let Some(l) = line.strip_prefix("customer:   ") {
            customer = Some(l.trim().to_string());
            break;
        }
    }
    let (dispatcher, customer) = (
        dispatcher.expect("a dispatcher link"),
        customer.expect("a customer link"),
    );
    // Keep reading what the demo prints: a closed pipe would end it (its
    // progress lines would meet a broken pipe) before the links are tried.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let (base, token) = customer.split_once("/t/").unwrap();
    common::server::rt().block_on(async {
        let http = reqwest::Client::new();
        let page = http.get(&dispatcher).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("/assets/dispatch.js"));
        let page = http.get(&customer).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let stop = http
            .get(format!("{base}/api/v1/tracking"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(stop.status(), 200);
        let stop: serde_json::Value = stop.json().await.unwrap();
        assert!(
            stop["stop"].is_string() && stop["status"].is_string(),
            "{stop}"
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
}

#[test]
fn demo_runs() {
    // One town, and a metropolitan region (towns and open country between).
    for edges in ["20000", "60000"] {
        let o = lastmile(&[
            "demo",
            "--edges",
            edges,
            "--vehicles",
            "100",
            "--seconds",
            "4",
        ]);
        assert!(
            o.status.success(),
            "{edges}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = stdout(&o);
        assert!(
            out.contains("route ")
                && out.contains("same cost")
                && out.contains("on the true road")
                && out.contains("service: lastmile/1 on 127.0.0.1:")
                && out.contains("pings accepted over QUIC")
                && out.contains("dispatcher: http://127.0.0.1:")
                && out.contains("customer:   http://127.0.0.1:")
                && !out.contains("service: 0 pings accepted")
                && out.contains("demo done"),
            "{out}"
        );
    }
}

#[test]
fn table_matches_routes_and_rejects_bad_points() {
    let Some(src) = testdata::data_file("maps/monaco.osm.pbf") else {
        return;
    };
    let dir = tmpdir("table");
    let g = dir.join("monaco.graph");
    assert!(
        lastmile(&[
            "import",
            src.to_str().unwrap(),
            "--out",
            g.to_str().unwrap()
        ])
        .status
        .success()
    );
    let points = dir.join("points.csv");
    let coords = ["43.7384,7.4246", "43.7311,7.4197", "43.7402,7.4271"];
    std::fs::write(
        &points,
        format!(
            "name,lat,lon\na,{}\nb,{}\nc,{}\n",
            coords[0], coords[1], coords[2]
        ),
    )
    .unwrap();
    let o = lastmile(&[
        "table",
        g.to_str().unwrap(),
        points.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let (dist, dur) = (
        t["distances_m"].as_array().unwrap(),
        t["durations_s"].as_array().unwrap(),
    );
    assert_eq!((dist.len(), dur.len()), (3, 3));
    for i in 0..3 {
        assert_eq!(dist[i][i].as_f64().unwrap(), 0.0);
        for j in 0..3 {
            if i == j {
                continue;
            }
            let o = lastmile(&[
                "route",
                g.to_str().unwrap(),
                "--from",
                coords[i],
                "--to",
                coords[j],
                "--json",
            ]);
            let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            assert!(
                (r["duration_s"].as_f64().unwrap() - dur[i][j].as_f64().unwrap()).abs() < 1e-6,
                "{i}->{j}"
            );
            assert!(
                (r["distance_m"].as_f64().unwrap() - dist[i][j].as_f64().unwrap()).abs() < 1e-6,
                "{i}->{j}"
            );
        }
    }
    let human = lastmile(&["table", g.to_str().unwrap(), points.to_str().unwrap()]);
    assert!(human.status.success());
    assert_eq!(
        stdout(&human).lines().count(),
        4,
        "a header and one row per point"
    );
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "x,y\n1,2\n").unwrap();
    assert_clean_error(
        &lastmile(&[
            "table",
            g.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
        ]),
        &bad,
        "must name `lat` and `lon`",
    );
    std::fs::write(&bad, "lat,lon\n43.73,NaN\n").unwrap();
    assert_clean_error(
        &lastmile(&[
            "table",
            g.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
        ]),
        &bad,
        "line 2",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_between_islands_are_unreachable_answers() {
    // Malta and Gozo: one map, two road networks no road joins (the ferry
    // is not a road). Every road is kept, so both islands are in the graph.
    let Some(src) = testdata::data_file("maps/malta-latest-2018.osm.pbf") else {
        return;
    };
    let dir = tmpdir("islands");
    let g = dir.join("malta.graph");
    let o = lastmile(&[
        "import",
        src.to_str().unwrap(),
        "--out",
        g.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let comps = &report["components"];
    assert!(comps["count"].as_u64().unwrap() > 2, "{comps}");
    assert!(
        comps["next_largest"][0].as_u64().unwrap() > 1000,
        "Gozo is the second component: {comps}"
    );
    let info = lastmile(&["info", g.to_str().unwrap()]);
    assert!(stdout(&info).contains("strongly connected components"));

    let (valletta, victoria, xaghra) = ("35.8989,14.5146", "36.0443,14.2397", "36.05,14.25");
    let graph = g.to_str().unwrap();
    let o = lastmile(&["route", graph, "--from", valletta, "--to", victoria]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "unreachable has its own exit code"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unreachable") && err.lines().count() == 1,
        "{err}"
    );
    let o = lastmile(&[
        "route", graph, "--from", valletta, "--to", victoria, "--json",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["code"], "NoRoute");
    assert_eq!(
        (r["from_component"].as_u64(), r["to_component"].as_u64()),
        (Some(0), Some(1))
    );
    // Within Gozo there is a route.
    let o = lastmile(&["route", graph, "--from", xaghra, "--to", victoria, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The table gives null for the pairs no road joins, as OSRM does.
    let points = dir.join("points.csv");
    std::fs::write(
        &points,
        format!("lat,lon\n{valletta}\n{victoria}\n{xaghra}\n"),
    )
    .unwrap();
    let o = lastmile(&["table", graph, points.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in ["durations_s", "distances_m"] {
        let m = &t[key];
        assert!(
            m[0][1].is_null() && m[1][0].is_null() && m[0][2].is_null(),
            "{t}"
        );
        assert!(m[1][2].as_f64().unwrap() > 10.0 && m[2][1].as_f64().unwrap() > 10.0);
    }
    let human = lastmile(&["table", graph, points.to_str().unwrap()]);
    assert!(stdout(&human).contains("unreachable"));
    std::fs::remove_dir_all(&dir).unwrap();
}
