//! The door for driver apps (`serve --osmand`), end to end, as the apps use
//! it: the requests Traccar Client and OsmAnd build (the fixtures in
//! `data/osmand/requests.http`) sent byte for byte to a running server;
//! devices listed in `lastmile.toml` and a fleet that takes any device;
//! the same refusal for a device nobody listed and a wrong key; a replay
//! through the door matched as the same trace over QUIC is.

mod common;
#[path = "../cluster/tests/common/mod.rs"]
mod nats;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::server::{Server, ServerExt, rt, serve_with, simulate};
use common::{lastmile, tmpdir};
use lastmile_web::osmand::fixtures::{self, Expect};
use serde_json::Value;

const ACME_READER: &str = "acme-reader-token-000001";
const ACME_DEVICE: &str = "acme-device-token-000001";
const GLOBEX_DEVICE: &str = "globex-device-token-0001";

fn key_of(device: &str) -> String {
    format!("key-of-{device}-0123456789")
}

/// A server whose fleet acme lists every device of the fixtures, each with
/// its own key, and whose bounds take the fixtures' years-old times.
fn serve_fixtures(name: &str) -> (Server, Vec<fixtures::Fixture>) {
    let all = fixtures::read(fixtures::REQUESTS);
    let mut devices = BTreeMap::new();
    for f in &all {
        if let Some(d) = f.device() {
            devices.insert(d, f.app);
        }
    }
    let mut extra = String::from("[limits]\nmax_past_s = 1e9\n");
    for (d, app) in &devices {
        let app = match app {
            lastmile_node::devices::App::Traccar => "traccar",
            lastmile_node::devices::App::Osmand => "osmand",
        };
        extra += &format!(
            "\n[[devices]]\nid = \"{d}\"\nfleet = \"acme\"\nkey = \"{}\"\napp = \"{app}\"\n",
            key_of(d)
        );
    }
    let s = serve_with(
        &tmpdir(name),
        "",
        &extra,
        &["--http", "127.0.0.1:0", "--osmand", "127.0.0.1:0"],
    );
    assert!(
        s.osmand.is_some(),
        "no driver apps' address in the ready line"
    );
    (s, all)
}

/// Sends `bytes` on a fresh connection: status and body.
fn send_raw(s: &Server, bytes: &[u8]) -> (u16, String) {
    let addr = s.osmand.as_ref().unwrap().trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(bytes).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// GET `path` of the HTTP side as acme's reader: the JSON of a `200`.
async fn read(s: &Server, path: &str) -> Value {
    let url = format!("{}{path}", s.http.as_ref().unwrap());
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(ACME_READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn vehicle(s: &Server, name: &str) -> Value {
    read(s, &format!("/api/v1/vehicles/{name}")).await
}

/// The distinct road edges of a history answer, in path order.
fn edges(history: &Value) -> Vec<i64> {
    let mut e: Vec<i64> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["edge"].as_i64())
        .collect();
    e.dedup();
    e
}

/// Every request of the fixtures, sent as the apps send it, is taken or
/// refused as written down, and what the apps said shows on the vehicle.
#[test]
fn the_requests_the_apps_build_are_taken_as_written_down() {
    let (s, all) = serve_fixtures("osmand-fixtures");
    let (mut taken, mut refused) = (0, 0);
    for f in &all {
        let key = f
            .device()
            .map_or_else(|| "no-device-no-key".into(), |d| key_of(&d));
        let (status, body) = send_raw(&s, &f.wire(&key));
        match &f.expect {
            Expect::Reads(_) => {
                assert_eq!(status, 200, "{}: {body}", f.name);
                assert!(body.is_empty(), "{}: the apps expect an empty 200", f.name);
                taken += 1;
            }
            Expect::Error(why) => {
                assert_eq!(status, 400, "{}: {body}", f.name);
                assert!(
                    body.contains(why.as_str()),
                    "{}: {body} lacks {why}",
                    f.name
                );
                refused += 1;
            }
        }
    }
    assert!(
        taken >= 14 && refused >= 6,
        "{taken} taken, {refused} refused"
    );
    rt().block_on(async {
        let stats = s.stats().await;
        assert_eq!(stats["osmand_malformed"], refused as u64);
        assert_eq!(stats["osmand_refused_device"], 0);
        // The Traccar Client's JSON: its time, battery 100 %, not moving
        // (the fixtures' positions are far from the test town: unmatched).
        let v = vehicle(&s, "48241179").await;
        assert_eq!(v["match_status"], "unmatched", "{v}");
        assert_eq!(v["time"].as_f64().unwrap(), 1_749_995_112.862, "{v}");
        let d = &v["device"];
        assert_eq!(d["app"], "traccar", "{v}");
        assert_eq!(d["battery_pct"], 100.0, "{v}");
        assert_eq!(d["moving"], false, "{v}");
        // The iOS client, then a batch sent newest first: the newest wins.
        let v = vehicle(&s, "658765").await;
        assert_eq!(v["time"].as_f64().unwrap(), 1_755_068_520.0, "{v}");
        assert_eq!(v["device"]["battery_pct"], 91.0, "{v}");
        assert_eq!(v["device"]["moving"], true, "{v}");
        assert_eq!(v["device"]["odometer_m"], 120.0, "{v}");
        // The old Android client: battery and charging from the query.
        let v = vehicle(&s, "android-legacy").await;
        assert_eq!(v["device"]["battery_pct"], 64.0, "{v}");
        assert_eq!(v["device"]["charging"], true, "{v}");
        // OsmAnd's device runs OsmAnd.
        let v = vehicle(&s, "osmand-1").await;
        assert_eq!(v["device"]["app"], "osmand", "{v}");
        assert_eq!(v["time"].as_f64().unwrap(), 1_733_497_200.0, "{v}");
    });
}

/// A device nobody listed, a wrong key, no key, another fleet's token: one
/// and the same answer, counted, revealing nothing.
#[test]
fn unknown_devices_and_wrong_keys_get_one_answer() {
    let (s, _) = serve_fixtures("osmand-refusals");
    let q = "?id=48241179&lat=47.0&lon=8.0&timestamp=1767225600";
    let right = send_raw(
        &s,
        format!(
            "GET /{}{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            key_of("48241179")
        )
        .as_bytes(),
    );
    assert_eq!(right.0, 200, "{right:?}");
    let answers: Vec<(u16, String)> = [
        format!("/{}?id=nobody-listed&lat=47.0&lon=8.0", key_of("48241179")),
        format!("/wrong-key-wrong-key{q}"),
        format!("/{q}"),
        format!("/{GLOBEX_DEVICE}{q}"),
        format!("/{ACME_READER}{q}"),
        format!("/{}{q}", key_of("658765")),
    ]
    .iter()
    .map(|target| {
        send_raw(
            &s,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    })
    .collect();
    for a in &answers {
        assert_eq!(a, &answers[0], "every refusal alike");
    }
    assert_eq!(answers[0].0, 400);
    assert!(
        answers[0].1.contains("unknown device or wrong key"),
        "{answers:?}"
    );
    // A token of the device's fleet that may send pings is a key too.
    let fleet = send_raw(
        &s,
        format!(
            "GET /{ACME_DEVICE}{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            q.replace("600", "601")
        )
        .as_bytes(),
    );
    assert_eq!(fleet.0, 200, "{fleet:?}");
    rt().block_on(async {
        let stats = s.stats().await;
        assert_eq!(stats["osmand_refused_device"], answers.len() as u64);
        assert_eq!(stats["osmand_positions_accepted"], 2);
    });
}

/// The road edges of every vehicle's matched path, from its history.
async fn matched_edges(s: &Server, vehicles: &[String]) -> BTreeMap<String, Vec<i64>> {
    let mut out = BTreeMap::new();
    for v in vehicles {
        let h = read(s, &format!("/api/v1/vehicles/{v}/history")).await;
        out.insert(v.clone(), edges(&h));
    }
    out
}

/// Drivers' phones replayed through the door (a fleet that takes any
/// device, its token in the URL) are matched onto the same ways as the
/// same trace sent over QUIC: the door changes how positions arrive, not
/// what the engine makes of them.
#[test]
fn a_replay_through_the_door_is_matched_as_over_quic() {
    let dir = tmpdir("osmand-vs-quic");
    let (trace, _) = simulate(&dir, 100, 600);
    let any = "[[devices]]\nid = \"*\"\nfleet = \"acme\"\n";
    for d in ["quic", "door"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let args = ["--http", "127.0.0.1:0", "--osmand", "127.0.0.1:0"];
    let quic = serve_with(&dir.join("quic"), "", any, &args);
    let door = serve_with(&dir.join("door"), "", any, &args);
    let t = trace.to_str().unwrap();
    let o = lastmile(&quic.cli_as(&["replay", t, "--json"], ACME_DEVICE));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = format!("{}/{ACME_DEVICE}", door.osmand.as_ref().unwrap());
    for form in ["json", "query"] {
        let o = lastmile(&[
            "replay",
            t,
            "--osmand",
            &url,
            "--form",
            form,
            "--connections",
            "4",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["rejected"], 0, "{r}");
        assert_eq!(r["accepted"], r["sent"], "{r}");
    }
    let vehicles: Vec<String> = (0..100).map(common::server::veh).collect();
    rt().block_on(async {
        let stats = door.stats().await;
        let sent = stats["osmand_positions"];
        // The second replay repeats the first: every position is late.
        assert_eq!(stats["osmand_positions_late"] * 2, sent, "{stats:?}");
        common::server::eventually("the door's pings processed", async || {
            let s = door.stats().await;
            s["engine_pings_processed"] == s["osmand_positions_accepted"]
        })
        .await;
        common::server::eventually("QUIC's pings processed", async || {
            let s = quic.stats().await;
            s["engine_pings_processed"] == s["pings_accepted"]
        })
        .await;
        // The store writes finished pieces of path as the engine hands
        // them over: wait until both servers hold the same, or time out
        // and show the difference.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (a, b) = loop {
            let a = matched_edges(&quic, &vehicles).await;
            let b = matched_edges(&door, &vehicles).await;
            if a == b || std::time::Instant::now() > deadline {
                break (a, b);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let moved = a.values().filter(|w| w.len() > 1).count();
        assert!(moved >= 50, "{moved} of 100 vehicles moved across edges");
        assert_eq!(a, b, "the same matched path through either door");
    });
}

/// One vehicle's rows of a simulated trace: (time, lat, lon, speed, heading).
fn rows_of(trace: &std::path::Path, vehicle: &str) -> Vec<(f64, f64, f64, f64, f64)> {
    let mut r = csv::Reader::from_path(trace).unwrap();
    let mut out: Vec<_> = r
        .records()
        .map(Result::unwrap)
        .filter(|x| &x[0] == vehicle)
        .map(|x| {
            let n = |i: usize| x[i].parse::<f64>().unwrap_or(-1.0);
            (n(1), n(2), n(3), n(4), n(5))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn location(&(t, lat, lon, speed, heading): &(f64, f64, f64, f64, f64)) -> Value {
    serde_json::json!({
        "timestamp": format!("{}", t),
        "coords": {"latitude": lat, "longitude": lon, "speed": speed, "heading": heading, "accuracy": 5.0},
        "is_moving": true,
    })
}

/// The distinct edges of a vehicle's history between two times.
async fn edges_between(s: &Server, v: &str, from: f64, to: f64) -> Vec<i64> {
    let h = read(
        s,
        &format!("/api/v1/vehicles/{v}/history?from={from}&to={to}"),
    )
    .await;
    let mut e = edges(&h);
    e.sort_unstable();
    e.dedup();
    e
}

/// A phone offline for four minutes uploads its buffer after newer
/// positions got through: the buffered stretch is matched into the
/// vehicle's history where its live path has a gap, as the same drive
/// sent in order is matched, and its live state stays the newest.
#[test]
fn an_offline_buffer_uploaded_late_fills_the_gap_in_the_history() {
    offline_buffer_fills_the_gap("osmand-late", None);
}

/// The same on a node of a cluster: the stretch goes to the cluster's
/// history stream, and the history is read back from it.
#[test]
fn an_offline_buffer_fills_the_gap_on_a_cluster() {
    if !nats::available() {
        return;
    }
    let cluster = nats::Nats::start("osmand-late");
    offline_buffer_fills_the_gap("osmand-late-cluster", Some(&cluster.url()));
}

fn offline_buffer_fills_the_gap(name: &str, cluster: Option<&str>) {
    let dir = tmpdir(name);
    let (trace, _) = simulate(&dir, 4, 900);
    let any = "[[devices]]\nid = \"*\"\nfleet = \"acme\"\n";
    let args = ["--http", "127.0.0.1:0", "--osmand", "127.0.0.1:0"];
    for d in ["quic", "door"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let quic = serve_with(&dir.join("quic"), "", any, &args);
    let door = match cluster {
        None => serve_with(&dir.join("door"), "", any, &args),
        Some(url) => {
            let clustered = format!("{any}\n[cluster]\npartitions = 4\nlease_s = 2\n");
            let mut args = args.to_vec();
            args.extend(["--cluster", url, "--node", "door"]);
            let door = serve_with(&dir.join("door"), "", &clustered, &args);
            rt().block_on(common::server::eventually(
                "the node owning every partition",
                async || door.stats().await["cluster_partitions_owned"] == 4,
            ));
            door
        }
    };
    let o = lastmile(&quic.cli_as(&["replay", trace.to_str().unwrap()], ACME_DEVICE));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Four minutes offline while driving: the vehicle and stretch that
    // move the most, with positions before and after.
    let (mut best, mut v, mut rows) = ((0, 0.0), String::new(), Vec::new());
    for i in 0..4 {
        let r = rows_of(&trace, &common::server::veh(i));
        for (k, start) in r.iter().enumerate().skip(10) {
            let end = start.0 + 240.0;
            if r.iter().filter(|x| x.0 > end).count() < 10 {
                break;
            }
            let moving = r[k..]
                .iter()
                .take_while(|x| x.0 < end)
                .filter(|x| x.3 > 3.0)
                .count();
            if moving > best.0 {
                (best, v, rows) = ((moving, start.0), common::server::veh(i), r.clone());
            }
        }
    }
    assert!(best.0 >= 20, "no vehicle drove for long: {best:?}");
    let (from, to) = (best.1 - 0.5, best.1 + 240.0);
    let (buffered, live): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.0 > from && r.0 < to);
    let url = format!("{}/{ACME_DEVICE}", door.osmand.as_ref().unwrap());
    rt().block_on(async {
        let http = reqwest::Client::new();
        let post = async |body: Value| {
            let r = http.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        };
        for r in &live {
            post(serde_json::json!({"device_id": v, "location": location(r)})).await;
        }
        // The buffer, as one batch, newest first.
        let batch: Vec<Value> = buffered.iter().rev().map(location).collect();
        post(serde_json::json!({"device_id": v, "locations": batch})).await;
        let stats = door.stats().await;
        assert_eq!(
            stats["osmand_positions_backfilled"],
            buffered.len() as u64,
            "{stats:?}"
        );
        assert_eq!(stats["osmand_positions_late"], 0);
        // Its live state is the newest position's.
        let snap = vehicle(&door, &v).await;
        assert_eq!(
            snap["time"].as_f64().unwrap(),
            live.last().unwrap().0,
            "{snap}"
        );
        // The gap's path, against the same drive matched in order.
        let (inside_from, inside_to) = (from + 20.0, to - 20.0);
        let mut door_edges = Vec::new();
        let mut quic_edges = Vec::new();
        common::server::eventually("both histories through the gap", async || {
            door_edges = edges_between(&door, &v, inside_from, inside_to).await;
            quic_edges = edges_between(&quic, &v, inside_from, inside_to).await;
            door_edges.len() > 3 && quic_edges.len() > 3
        })
        .await;
        let shared = door_edges.iter().filter(|e| quic_edges.contains(e)).count();
        assert!(
            shared * 10 >= door_edges.len() * 9 && shared * 10 >= quic_edges.len() * 9,
            "door {door_edges:?} vs in order {quic_edges:?}"
        );
    });
}

/// What is not a report is refused with a reason and counted, and takes
/// nothing: another method, a body past the limit, too many locations.
#[test]
fn what_is_not_a_report_is_refused_with_a_reason() {
    let (s, _) = serve_fixtures("osmand-malformed");
    let key = key_of("48241179");
    let put = send_raw(
        &s,
        format!("PUT /{key}?id=48241179&lat=47&lon=8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(put.0, 405, "{put:?}");
    assert!(put.1.contains("GET and POST"), "{put:?}");
    let location =
        r#"{"timestamp":"2026-01-01T00:00:00Z","coords":{"latitude":47.0,"longitude":8.0}}"#;
    let many = format!(
        r#"{{"device_id":"48241179","locations":[{}]}}"#,
        vec![location; 10_001].join(",")
    );
    let post = |body: &str| {
        send_raw(
            &s,
            format!(
                "POST /{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let (status, body) = post(&many);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 10000 locations"), "{body}");
    // A body announced past 4 MiB is refused before it is read.
    let huge = send_raw(
        &s,
        format!(
            "POST /{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            5 << 20
        )
        .as_bytes(),
    );
    assert_eq!(huge.0, 413, "a body past 4 MiB: {huge:?}");
    rt().block_on(async {
        let st = s.stats().await;
        assert_eq!(st["osmand_positions_accepted"], 0, "{st:?}");
        assert!(st["osmand_malformed"] >= 1, "{st:?}");
    });
}
