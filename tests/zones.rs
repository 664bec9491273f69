//! A fleet's zones through `lastmile serve`, as a dispatcher keeps them:
//! drawn in a GeoJSON file, put with `lastmile zones put`, listed back,
//! removed; a replayed day tells `zone_entered` and `zone_left` under the
//! fleet's own zone ids; another fleet neither sees them nor can touch
//! them; bad files are refused saying which feature and why; and the zones
//! survive a restart.

mod common;

use std::path::Path;

use common::server::{ServerExt, replay_and_hear, serve, simulate};
use common::{lastmile, stdout, tmpdir};
use serde_json::{Value, json};

const ACME_DISPATCHER: &str = "acme-dispatcher-token-01";
const ACME_READER: &str = "acme-reader-token-000001";
const ACME_DEVICE: &str = "acme-device-token-000001";
const GLOBEX_DISPATCHER: &str = "globex-dispatcher-tok-01";

/// Where vehicle `veh-00000` truly was halfway through the trace.
fn halfway(trace: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (v, lat, lon) = (col("vehicle_id"), col("true_lat"), col("true_lon"));
    let mine: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[v] == "veh-00000")
        .collect();
    let mid = &mine[mine.len() / 2];
    (mid[lat].parse().unwrap(), mid[lon].parse().unwrap())
}

/// A yard of 200 m around `(lat, lon)`, and a square of about 1 km around
/// it with a hole where the yard is.
fn zones_file(dir: &Path, (lat, lon): (f64, f64)) -> std::path::PathBuf {
    let d = 0.0045;
    let h = 0.0005;
    let square = |s: f64| {
        json!([
            [lon - s, lat - s],
            [lon + s, lat - s],
            [lon + s, lat + s],
            [lon - s, lat + s],
            [lon - s, lat - s]
        ])
    };
    let doc = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature",
         "properties": {"id": "yard-7", "name": "Customer yard", "radius_m": 200, "dwell_s": 600},
         "geometry": {"type": "Point", "coordinates": [lon, lat]}},
        {"type": "Feature",
         "properties": {"id": "ring", "kind": "allowed"},
         "geometry": {"type": "Polygon", "coordinates": [square(d), square(h)]}}
    ]});
    let path = dir.join("zones.geojson");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

fn list(s: &common::server::Server, token: &str) -> Value {
    let o = lastmile(&s.cli_as(&["zones", "list"], token));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

fn ids(doc: &Value) -> Vec<String> {
    doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_dispatchers_zones_tell_entries_under_its_own_ids_and_stay_its_own() {
    let dir = tmpdir("zones-service");
    let (trace, _) = simulate(&dir, 4, 1200);
    let s = serve(&dir, "", "");
    let file = zones_file(&dir, halfway(&trace));

    // Put, then read back as written.
    let o = lastmile(&s.cli_as(&["zones", "put", file.to_str().unwrap()], ACME_DISPATCHER));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = list(&s, ACME_READER);
    assert_eq!(ids(&listed), ["ring", "yard-7"]);
    let yard = &listed["features"][1];
    assert_eq!(yard["properties"]["name"], "Customer yard");
    assert_eq!(yard["properties"]["radius_m"], 200.0);
    assert_eq!(listed["features"][0]["properties"]["kind"], "allowed");
    assert_eq!(
        listed["features"][0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the hole is kept"
    );

    // Another fleet sees none of them and cannot remove them.
    assert_eq!(ids(&list(&s, GLOBEX_DISPATCHER)), Vec::<String>::new());
    let o = lastmile(&s.cli_as(&["zones", "remove", "yard-7"], GLOBEX_DISPATCHER));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("zone yard-7 does not exist"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A reader may not change them.
    let o = lastmile(&s.cli_as(&["zones", "put", file.to_str().unwrap()], ACME_READER));
    assert_eq!(o.status.code(), Some(1));

    // A day replayed by acme's devices: its vehicle drives through the yard.
    let kinds = (1 << 26) | (1 << 27);
    let events = replay_and_hear(&s, &trace, ACME_DEVICE, ACME_READER, kinds);
    let entered: Vec<(&str, &str)> = events
        .values()
        .filter(|e| e.kind == 26)
        .map(|e| (e.vehicle.as_str(), e.zone.as_deref().unwrap_or("")))
        .collect();
    assert!(entered.contains(&("veh-00000", "yard-7")), "{events:?}");
    assert!(events.values().all(|e| e.stop.is_none()));

    // Bad files: refused whole, saying which feature and why.
    let bad = dir.join("bad.geojson");
    std::fs::write(
        &bad,
        json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": "ok", "radius_m": 50},
             "geometry": {"type": "Point", "coordinates": [8.0, 47.0]}},
            {"type": "Feature", "properties": {"id": "bow-tie"},
             "geometry": {"type": "Polygon", "coordinates": [
                 [[8.0, 47.0], [8.01, 47.01], [8.01, 47.0], [8.0, 47.01], [8.0, 47.0]]]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let o = lastmile(&s.cli_as(&["zones", "put", bad.to_str().unwrap()], ACME_DISPATCHER));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("feature 1 (bow-tie)") && err.contains("crosses itself"),
        "{err}"
    );
    assert_eq!(ids(&list(&s, ACME_READER)), ["ring", "yard-7"]);

    // Removed, and the rest kept across a crash (from the journal) and a
    // clean restart (from the checkpoint).
    let o = lastmile(&s.cli_as(&["zones", "remove", "ring"], ACME_DISPATCHER));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.kill9();
    let s = serve(&dir, "", "");
    assert_eq!(ids(&list(&s, ACME_READER)), ["yard-7"]);
    assert!(s.terminate());
    let s = serve(&dir, "", "");
    assert_eq!(ids(&list(&s, ACME_READER)), ["yard-7"]);
    assert_eq!(
        list(&s, ACME_READER)["features"][0]["properties"]["dwell_s"],
        600.0
    );
}
