//! End-to-end tests of the trace commands: `simulate` writes a trace and a
//! stops file, `match` writes one matched row per input row (input in any
//! order, CSV or GPX), `evaluate` reports both outputs' accuracy as JSON, and
//! bad traces fail with a one-line error.

mod common;

use common::{assert_clean_error, lastmile, stdout, tmpdir};
use lastmile_roadgraph::testdata;

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(stdout(o).trim()).expect("one JSON object")
}

fn rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let mut out = vec![r.headers().unwrap().iter().map(String::from).collect()];
    out.extend(
        r.records()
            .map(|x| x.unwrap().iter().map(String::from).collect()),
    );
    out
}

#[test]
fn simulate_match_evaluate_round_trip() {
    let dir = tmpdir("tracking");
    let graph = dir.join("town.graph");
    let o = lastmile(&[
        "generate",
        "--edges",
        "6000",
        "--seed",
        "2",
        "--out",
        graph.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let trace = dir.join("trace.csv");
    let stops = dir.join("stops.csv");
    let o = lastmile(&[
        "simulate",
        graph.to_str().unwrap(),
        "--vehicles",
        "4",
        "--duration",
        "900",
        "--interval",
        "2",
        "--noise",
        "6",
        "--seed",
        "3",
        "--out",
        trace.to_str().unwrap(),
        "--stops-out",
        stops.to_str().unwrap(),
        "--json",
    ]);
    let sim = json(&o);
    let pings = sim["pings"].as_u64().unwrap();
    assert!(pings > 1000, "{sim}");

    let t = rows(&trace);
    let header = &t[0];
    for c in [
        "vehicle_id",
        "timestamp",
        "lat",
        "lon",
        "speed",
        "heading",
        "accuracy",
        "true_lat",
        "true_lon",
        "true_way_id",
    ] {
        assert!(header.iter().any(|h| h == c), "missing {c}: {header:?}");
    }
    assert_eq!(t.len() as u64 - 1, pings);
    // Rows come in time order, as a live stream would.
    let ts = header.iter().position(|h| h == "timestamp").unwrap();
    assert!(
        t[1..]
            .windows(2)
            .all(|w| w[0][ts].parse::<f64>().unwrap() <= w[1][ts].parse::<f64>().unwrap())
    );
    let s = rows(&stops);
    assert_eq!(&s[0][..5], ["vehicle_id", "stop_id", "seq", "lat", "lon"]);
    assert!(
        s.len() > 4 && s[1..].iter().any(|r| !r[8].is_empty()),
        "stops reached: {:?}",
        &s[..3]
    );

    // Shuffle the input: match sorts by vehicle and time itself.
    let mut shuffled = t[1..].to_vec();
    shuffled.reverse();
    let shuffled_path = dir.join("shuffled.csv");
    let mut w = csv::Writer::from_path(&shuffled_path).unwrap();
    w.write_record(header).unwrap();
    for r in &shuffled {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    for (input, immediate) in [(&trace, false), (&shuffled_path, false), (&trace, true)] {
        let out = dir.join("matched.csv");
        let mut args = vec![
            "match",
            graph.to_str().unwrap(),
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        if immediate {
            args.push("--immediate");
        }
        let m = json(&lastmile(&args));
        assert_eq!(m["pings"].as_u64(), Some(pings));
        let on_road = m["on_road"].as_u64().unwrap();
        assert!(on_road as f64 > 0.97 * pings as f64, "{m}");
        let matched = rows(&out);
        assert_eq!(matched.len(), t.len(), "one row per input row");
        let mh = &matched[0];
        for c in [
            "matched_lat",
            "matched_lon",
            "way_id",
            "edge_id",
            "offset_m",
            "status",
        ] {
            assert!(mh.iter().any(|h| h == c), "missing {c}");
        }
        let (way, truth) = (
            mh.iter().position(|h| h == "way_id").unwrap(),
            mh.iter().position(|h| h == "true_way_id").unwrap(),
        );
        let right = matched[1..].iter().filter(|r| r[way] == r[truth]).count();
        assert!(
            right as f64 > 0.85 * pings as f64,
            "{right}/{pings} on the true way"
        );
    }

    let e = json(&lastmile(&[
        "evaluate",
        graph.to_str().unwrap(),
        trace.to_str().unwrap(),
        "--json",
        "--per-vehicle",
    ]));
    for output in ["finalized", "immediate"] {
        let a = &e[output];
        assert!(a["on_true_way"].as_f64().unwrap() > 0.85, "{e}");
        assert!(a["distance_median_m"].as_f64().unwrap() < 10.0, "{e}");
        assert!(a["distance_p95_m"].as_f64().unwrap() > 0.0);
        assert!(a["route_mismatch"].as_f64().is_some());
    }
    assert_eq!(e["per_vehicle"].as_array().unwrap().len(), 4);

    // A reader that goes away (`lastmile ... | head -1`) ends the command
    // quietly, not with an internal error.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args([
            "evaluate",
            graph.to_str().unwrap(),
            trace.to_str().unwrap(),
            "--per-vehicle",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    assert!(
        matches!(done.status.code(), Some(0 | 141)),
        "{:?}",
        done.status
    );
    assert!(
        done.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(e["pings_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn match_reads_gpx() {
    let Some(map) = testdata::data_file("graphhopper-mapmatching/issue-70.osm.pbf") else {
        return;
    };
    let gpx = testdata::data_file("graphhopper-mapmatching/issue-70.gpx").unwrap();
    let out = tmpdir("gpx").join("matched.csv");
    let m = json(&lastmile(&[
        "match",
        map.to_str().unwrap(),
        gpx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(m["pings"].as_u64(), Some(17));
    assert_eq!(m["on_road"].as_u64(), Some(17));
    let r = rows(&out);
    assert_eq!(&r[0][..4], ["vehicle_id", "timestamp", "lat", "lon"]);
    assert!(r[1..].iter().all(|x| x.last().is_some()));
}

#[test]
fn bad_traces_fail_cleanly() {
    let dir = tmpdir("badtrace");
    let graph = dir.join("town.graph");
    assert!(
        lastmile(&[
            "generate",
            "--edges",
            "3000",
            "--out",
            graph.to_str().unwrap()
        ])
        .status
        .success()
    );
    let g = graph.to_str().unwrap();
    let out = dir.join("out.csv");
    let o = out.to_str().unwrap();

    let missing = dir.join("nope.csv");
    assert_clean_error(
        &lastmile(&["match", g, missing.to_str().unwrap(), "--out", o]),
        &missing,
        "cannot open",
    );

    let no_cols = dir.join("nocols.csv");
    std::fs::write(&no_cols, "vehicle,time,y,x\nv,1,2,3\n").unwrap();
    assert_clean_error(
        &lastmile(&["match", g, no_cols.to_str().unwrap(), "--out", o]),
        &no_cols,
        "vehicle_id",
    );

    let wpt = dir.join("waypoints.gpx");
    std::fs::write(&wpt, r#"<gpx><wpt lat="1" lon="2"/></gpx>"#).unwrap();
    assert_clean_error(
        &lastmile(&["match", g, wpt.to_str().unwrap(), "--out", o]),
        &wpt,
        "No tracks found",
    );

    let broken = dir.join("broken.gpx");
    std::fs::write(&broken, r#"<gpx><trk><trkpt lat="x" lon="2"/></trk></gpx>"#).unwrap();
    assert_clean_error(
        &lastmile(&["match", g, broken.to_str().unwrap(), "--out", o]),
        &broken,
        "malformed GPX",
    );

    // Garbage rows are skipped with a warning; absurd values are counted.
    let p = lastmile_roadgraph::snapshot::load(&graph)
        .unwrap()
        .node_pos(0);
    let messy = dir.join("messy.csv");
    std::fs::write(
        &messy,
        format!(
            "vehicle_id,timestamp,lat,lon\nv,100,{a},{b}\nv,not-a-time,{a},{b}\nv,101,NaN,{b}\nv,99,{a},{b}\nv,100,{a},{b}\nv,102,{a},{b}\n",
            a = p.lat,
            b = p.lon
        ),
    )
    .unwrap();
    let run = lastmile(&["match", g, messy.to_str().unwrap(), "--out", o, "--json"]);
    let m = json(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("skipped 1 unparseable row") && err.contains("[3]"),
        "{err}"
    );
    assert_eq!(m["pings"].as_u64(), Some(5));
    // Sorted per vehicle: 99, 100, 100 (a duplicate), 101 (NaN: invalid), 102.
    assert_eq!(m["status"]["invalid"].as_u64(), Some(1));
    assert_eq!(m["status"]["duplicate"].as_u64(), Some(1));
    assert_eq!(m["status"]["out_of_order"].as_u64(), Some(0));
    assert_eq!(m["status"]["matched"].as_u64(), Some(3));

    let plain = dir.join("plain.csv");
    std::fs::write(
        &plain,
        format!("vehicle_id,timestamp,lat,lon\nv,100,{},{}\n", p.lat, p.lon),
    )
    .unwrap();
    let e = lastmile(&["evaluate", g, plain.to_str().unwrap()]);
    assert_clean_error(&e, &plain, "no ground truth");
}

#[test]
fn eta_eval_and_calibrate_on_real_trips() {
    let (Some(trips), Some(map)) = (
        testdata::data_file("porto-taxi/porto_taxi_trips_318.csv"),
        testdata::data_file("maps/porto_portugal.osm.pbf"),
    ) else {
        return;
    };
    let dir = tmpdir("eta-eval");
    let graph = dir.join("porto.graph");
    let o = lastmile(&[
        "import",
        map.to_str().unwrap(),
        "--out",
        graph.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let predictions = dir.join("p.csv");
    let o = lastmile(&[
        "eta-eval",
        graph.to_str().unwrap(),
        trips.to_str().unwrap(),
        "--predictions",
        predictions.to_str().unwrap(),
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["trips"], 318);
    // Two folds: each half judged by an engine that learnt from the other,
    // so every trip is judged once.
    let folds = v["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 2);
    for (f, other) in [(0, 1), (1, 0)] {
        assert_eq!(folds[f]["learn_trips"], folds[other]["test_trips"]);
        let n =
            folds[f]["learn_trips"].as_u64().unwrap() + folds[f]["test_trips"].as_u64().unwrap();
        assert_eq!(n, 318);
        assert!(folds[f]["outcomes_learnt"].as_u64().unwrap() > 300);
        assert_eq!(folds[f]["ratios"].as_array().unwrap().len(), 8);
    }
    let all = v["all"].as_array().unwrap();
    let total = all.last().unwrap();
    assert_eq!(total["label"], "all");
    let n = total["samples"].as_u64().unwrap();
    assert!(n > 3000, "{n}");
    for key in [
        "mae_s",
        "bias_s",
        "coverage",
        "width_s",
        "fixed_band_width_s",
        "pinball_s",
    ] {
        assert!(total[key].as_f64().unwrap().is_finite(), "{key}");
    }
    let rows = rows(&predictions);
    assert_eq!(rows[0][..3], ["trip_id", "ping", "lat"]);
    assert_eq!(rows.len() as u64, n + 1);

    let o = lastmile(&[
        "calibrate",
        graph.to_str().unwrap(),
        trips.to_str().unwrap(),
        "--json",
    ]);
    let c = json(&o);
    assert_eq!(c["trips"], folds[0]["learn_trips"]);
    assert!(c["traversals"].as_u64().unwrap() > 1000);
    assert!(c["signal_s"].as_f64().unwrap() >= 0.0);

    // Nothing to judge: a clear error, not a panic.
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "vehicle_id,timestamp,lat,lon\nv,1,41.1,-8.6\n").unwrap();
    let o = lastmile(&["eta-eval", graph.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_clean_error(&o, &empty, "no trip of two points");
}
