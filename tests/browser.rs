//! The pages in a real headless Chromium, as people use them: a dispatcher
//! plans a simulated day's routes with `lastmile assign`, the drivers'
//! pings arrive with `lastmile replay`, and the browser shows
//!
//! - the customer's tracking page (`/t/<token>`): the ETA and the stops
//!   before theirs, the van only while their stop is next, the proof of
//!   delivery after completion, one rating; a clear refusal of a wrong,
//!   foreign or expired link;
//! - the dispatcher's live map (`/dispatch`): the fleet with its count by
//!   state, a van turning late when the engine says so, a van's stops on
//!   click.
//!
//! Screenshots land in `target/screenshots/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{self, Browser};
use common::server::{Server, rt, send, serve_with, simulate};
use common::{lastmile, tmpdir};
use serde_json::json;

const ACME_DISPATCHER: &str = "acme-dispatcher-token-01";
const ACME_DEVICE: &str = "acme-device-token-000001";

fn serve_http(dir: &std::path::Path) -> Server {
    // Offline only after a minute of silence: the replays pause.
    let s = serve_with(dir, "", "", &["--http", "127.0.0.1:0"]);
    assert!(s.http.is_some());
    s
}

/// The `lastmile` client arguments for `s` with `token`.
fn as_user<'a>(s: &'a Server, token: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend([
        "--server",
        &s.addr,
        "--fingerprint",
        &s.fingerprint,
        "--token",
        token,
    ]);
    v
}

/// `lastmile replay` of `trace` at `speedup` × real time, in the background.
fn replay(s: &Server, trace: &std::path::Path, speedup: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(as_user(
            s,
            ACME_DEVICE,
            &["replay", trace.to_str().unwrap(), "--speedup", speedup],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lastmile replay")
}

/// A simulated day of `vehicles` vans over `duration` s, its routes
/// assigned by acme's dispatcher with `lastmile assign`: the server (HTTP
/// on) and the day's trace.
fn planned_day(name: &str, vehicles: usize, duration: u32) -> (Server, std::path::PathBuf) {
    let dir = tmpdir(name);
    let (trace, stops) = simulate(&dir, vehicles, duration);
    let s = serve_http(&dir);
    let o = lastmile(&as_user(
        &s,
        ACME_DISPATCHER,
        &["assign", stops.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (s, trace)
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_customer_follows_the_parcel_to_the_door_and_rates_it() {
    if !browser::available() {
        return;
    }
    let (s, trace) = planned_day("browser-track", 1, 1500);
    let http = s.http.clone().unwrap();
    rt().block_on(async {
        let d = ACME_DISPATCHER;
        let mint = async |stop: &str, ttl: u64| {
            let path = format!("/api/v1/stops/{stop}/tracking-token");
            let (code, t) = send(&s, "POST", &path, d, Some(json!({"ttl_s": ttl}))).await;
            assert_eq!(code, 201, "{t}");
            t["token"].as_str().unwrap().to_string()
        };
        let (first, mine) = ("veh-00000-s000", "veh-00000-s001");
        let token = mint(mine, 3600).await;
        let short = mint(mine, 60).await;
        let minted = Instant::now();
        let b = Browser::start("track", 390, 844).await;
        b.goto(&format!("{http}/t/{token}")).await;
        b.until("the pending stop", "return document.getElementById('status').innerText === 'On its way'").await;
        assert_eq!(b.text("before").await, "1 stop before yours");
        // What the page weighs over the wire (compressed), with its map's tiles.
        b.until("the map's tiles", "return document.querySelectorAll('.lm-roads canvas').length > 0").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let weight = b
            .js(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return performance.getEntriesByType('resource').reduce((a, r) => a + r.transferSize, n.transferSize)",
                vec![],
            )
            .await
            .as_f64()
            .unwrap();
        eprintln!("tracking page weight: {:.0} KB", weight / 1e3);
        assert!(weight > 10e3 && weight < 300e3, "the tracking page weighs {weight} bytes");
        assert!(b.text("window").await.starts_with("Your time window: "));
        assert_ne!(b.js("return document.body.dataset.van", vec![]).await, json!("shown"), "no van while another stop is first");
        b.screenshot("track-pending").await;

        // The driver sets off; the page follows the ETA the engine gives.
        let mut driving = replay(&s, &trace, "15");
        // What the page says agrees with what the API says now: the ETA
        // while the stop is to come, arrival once there.
        let page_agrees = async || {
            let (_, st) = send(&s, "GET", "/api/v1/tracking", &token, None).await;
            if st["status"] == "arrived" {
                return b.text("status").await == "The driver has arrived";
            }
            // The window when there is one ("between 14:25 and 14:40"),
            // else the ETA.
            let times = match st["eta_window"].as_array() {
                Some(w) => w.clone(),
                None => vec![st["eta"].clone()],
            };
            let shown = b.text("eta").await;
            let mut agrees = true;
            for t in times {
                let want = b.js("return lastmile.time(arguments[0])", vec![t]).await;
                agrees &= want.as_str().is_some_and(|w| !w.is_empty() && shown.contains(w));
            }
            agrees && (st["eta_window"].is_null() || shown.starts_with("Arriving between "))
        };
        wait_for("a known ETA on the page", async || page_agrees().await).await;
        // The van reaches the first stop; the driver completes it: ours is next.
        wait_for("arrival at the first stop", async || {
            let (_, st) = send(&s, "GET", &format!("/api/v1/stops/{first}"), d, None).await;
            st["status"] == "arrived"
        })
        .await;
        let (code, _) = send(&s, "POST", &format!("/api/v1/stops/{first}/complete"), d, Some(json!({}))).await;
        assert_eq!(code, 204);
        b.until("our stop next", "return document.getElementById('status').innerText === \"You're next\"").await;
        b.until("the van on the map", "return document.body.dataset.van === 'shown'").await;
        let van = "const v = lastmileTrack.van; return v ? [v.lat, v.lng] : null";
        let here = b.js(van, vec![]).await;
        wait_for("the van moving on the map", async || b.js(van, vec![]).await != here).await;
        wait_for("the page's ETA after the van moved", async || page_agrees().await).await;
        b.screenshot("track-next").await;
        let _ = driving.kill();
        let _ = driving.wait();

        // Delivered with a proof: the van goes, the proof and the rating come.
        let proof = json!({"note": "Left with the neighbour at no. 12", "photo_refs": ["s3://pod/veh-00000-s001.jpg"]});
        let (code, _) = send(&s, "POST", &format!("/api/v1/stops/{mine}/complete"), d, Some(proof)).await;
        assert_eq!(code, 204);
        b.until("delivered", "return document.getElementById('status').innerText === 'Delivered'").await;
        b.until("the van gone", "return document.body.dataset.van !== 'shown' && lastmileTrack.van === null").await;
        let outcome = b.text("outcome").await;
        assert!(outcome.contains("Left with the neighbour at no. 12"), "{outcome}");
        assert!(outcome.contains("s3://pod/veh-00000-s001.jpg"), "{outcome}");
        assert_eq!(b.js("return document.getElementById('rate').hidden", vec![]).await, json!(false));
        b.click("#stars button[data-stars='4']").await;
        b.type_into("#comment", "Friendly driver, a bit late").await;
        b.click("#send").await;
        b.until("the thanks", "return !document.getElementById('rated').hidden").await;
        assert!(b.text("rated").await.contains("★★★★☆"), "{}", b.text("rated").await);
        assert_eq!(b.js("return document.getElementById('rate').hidden", vec![]).await, json!(true));
        let (_, st) = send(&s, "GET", &format!("/api/v1/stops/{mine}"), d, None).await;
        assert_eq!((st["rating"]["stars"].as_u64(), st["rating"]["comment"].as_str()), (Some(4), Some("Friendly driver, a bit late")));
        let again = send(&s, "POST", "/api/v1/tracking/rating", &token, Some(json!({"stars": 1}))).await;
        assert_eq!(again.0, 409, "one rating per stop");
        b.screenshot("track-delivered").await;

        // Links that are not a customer's: each says so.
        b.goto(&format!("{http}/t/trk_0000000000000000000000000000000000000000000000000")).await;
        b.until("a wrong link refused", "return document.body.classList.contains('broken')").await;
        assert_eq!(b.text("status").await, "This tracking link has expired or is not valid.");
        b.goto(&format!("{http}/t/{d}")).await;
        b.until("a dispatcher's token refused", "return document.body.classList.contains('broken')").await;
        assert_eq!(b.text("status").await, "This link is not a delivery tracking link.");
        // The short link expires after its minute.
        if let Some(left) = Duration::from_secs(62).checked_sub(minted.elapsed()) {
            tokio::time::sleep(left).await;
        }
        b.goto(&format!("{http}/t/{short}")).await;
        b.until("an expired link refused", "return document.body.classList.contains('broken')").await;
        assert_eq!(b.text("status").await, "This tracking link has expired or is not valid.");
        b.screenshot("track-expired").await;
        b.close().await;
    });
}

#[test]
fn the_dispatcher_sees_the_fleet_a_late_van_and_its_stops() {
    if !browser::available() {
        return;
    }
    let vehicles = 12;
    let (s, trace) = planned_day("browser-dispatch", vehicles, 1800);
    let http = s.http.clone().unwrap();
    let mut driving = replay(&s, &trace, "20");
    rt().block_on(async {
        let d = ACME_DISPATCHER;
        // The dispatcher has drawn a depot where a van is, and a block it
        // may not enter where another is.
        let mut at = Vec::new();
        for v in ["veh-00003", "veh-00007"] {
            wait_for("a van placed", async || {
                let (_, x) = send(&s, "GET", &format!("/api/v1/vehicles/{v}"), d, None).await;
                x["position"].is_array()
            })
            .await;
            let (_, x) = send(&s, "GET", &format!("/api/v1/vehicles/{v}"), d, None).await;
            at.push((x["position"][0].as_f64().unwrap(), x["position"][1].as_f64().unwrap()));
        }
        let ((lat, lon), (flat, flon)) = (at[0], at[1]);
        let square = json!([[flon - 0.002, flat - 0.002], [flon + 0.002, flat - 0.002],
            [flon + 0.002, flat + 0.002], [flon - 0.002, flat + 0.002], [flon - 0.002, flat - 0.002]]);
        let zones = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": "depot", "name": "Depot", "radius_m": 300, "dwell_s": 600},
             "geometry": {"type": "Point", "coordinates": [lon, lat]}},
            {"type": "Feature", "properties": {"id": "old-town", "kind": "forbidden"},
             "geometry": {"type": "Polygon", "coordinates": [square]}}]});
        let (code, e) = send(&s, "PUT", "/api/v1/zones", d, Some(zones)).await;
        assert_eq!(code, 200, "{e}");
        let b = Browser::start("dispatch", 1280, 800).await;
        b.goto(&format!("{http}/dispatch?token={d}")).await;
        b.until("every van on the map", &format!("return document.body.dataset.vehicles === '{vehicles}'")).await;
        b.until("the fleet's zones on the map", "return document.body.dataset.zones === '2'").await;
        let named = b
            .js("const names = []; lastmileDispatch.map.eachLayer(l => { const t = l.getTooltip && l.getTooltip(); \
                 if (t && l.feature) names.push(t.getContent()); }); return names.sort();", vec![])
            .await;
        assert_eq!(named, json!(["Depot (dwell 10 min)", "old-town (forbidden)"]));
        assert!(!b.js("return location.search", vec![]).await.as_str().unwrap().contains("token"), "the token leaves the address bar");
        assert_eq!(b.text("total").await, format!("({vehicles})"));
        let counted = b
            .js("return [...document.querySelectorAll('#counts .n')].reduce((a, n) => a + +n.innerText, 0)", vec![])
            .await;
        assert_eq!(counted, json!(vehicles));

        // A stop whose window closed an hour ago: the engine says late, and
        // so does the map.
        let (_, v) = send(&s, "GET", "/api/v1/vehicles/veh-00003", d, None).await;
        let now = v["time"].as_f64().expect("veh-00003 has pinged");
        // Somewhere it is not: where another van is.
        let (_, elsewhere) = send(&s, "GET", "/api/v1/vehicles/veh-00007", d, None).await;
        let late = json!({"stop": {"stop": "late-1", "position": elsewhere["position"], "window": [now - 7200.0, now - 3600.0]}, "index": 0});
        let (code, e) = send(&s, "POST", "/api/v1/vehicles/veh-00003/stops", d, Some(late)).await;
        assert_eq!(code, 204, "{e}");
        b.until(
            "veh-00003 late on the map",
            "const v = lastmileDispatch.vehicles.get('veh-00003'); \
             return !!v && v.state === 'late' && v.marker.options.fillColor === '#d32f2f'",
        )
        .await;
        b.until("the late count", "return +document.querySelector('#counts [data-state=late] .n').innerText >= 1").await;

        // A click on a van shows its stops and their ETAs.
        let at = b
            .js(
                "const v = lastmileDispatch.vehicles.get('veh-00003'); \
                 const m = lastmileDispatch.map; \
                 m.invalidateSize({animate: false}); \
                 m.setView(v.marker.getLatLng(), 16, {animate: false}); \
                 v.marker.bringToFront(); \
                 const p = m.latLngToContainerPoint(v.marker.getLatLng()); \
                 const r = document.getElementById('map').getBoundingClientRect(); \
                 return [r.left + p.x, r.top + p.y];",
                vec![],
            )
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.click_at(at[0].as_f64().unwrap(), at[1].as_f64().unwrap()).await;
        b.until("the van's panel", "return document.getElementById('v-name').innerText === 'veh-00003'").await;
        let (_, v) = send(&s, "GET", "/api/v1/vehicles/veh-00003", d, None).await;
        let want = v["stops"].as_array().unwrap().len();
        b.until("its stops listed", &format!("return document.querySelectorAll('#v-stops li').length === {want}")).await;
        let first = b.js("const li = document.querySelector('#v-stops li'); return [li.innerText, li.classList.contains('late')]", vec![]).await;
        assert!(first[0].as_str().unwrap().starts_with("late-1 — ETA "), "{first}");
        assert_eq!(first[1], json!(true), "{first}");
        b.until("an event in the feed", "return document.querySelectorAll('#events li').length > 0").await;

        // A customer's bad rating reaches the dispatcher at once: in the
        // feed, and beside the van's stop.
        let (code, _) = send(&s, "POST", "/api/v1/stops/late-1/complete", d, Some(json!({}))).await;
        assert_eq!(code, 204);
        let (_, t) = send(&s, "POST", "/api/v1/stops/late-1/tracking-token", d, None).await;
        let customer = t["token"].as_str().unwrap();
        let rating = json!({"stars": 2, "comment": "Parcel left in the rain"});
        let (code, _) = send(&s, "POST", "/api/v1/tracking/rating", customer, Some(rating)).await;
        assert_eq!(code, 204);
        b.until(
            "the rating in the feed",
            "return [...document.querySelectorAll('#events li.rated')].some(li => li.innerText.includes('veh-00003 rated ★★☆☆☆ · late-1'))",
        )
        .await;
        b.until(
            "the rating beside the stop",
            "return [...document.querySelectorAll('#v-stops li.bad-rating')].some(li => li.innerText.startsWith('late-1') && li.innerText.includes('★★☆☆☆'))",
        )
        .await;
        b.screenshot("dispatch").await;
        b.close().await;
    });
    let _ = driving.kill();
    let _ = driving.wait();
}

/// The harness's answer to a crashed renderer (tests/common/browser.rs):
/// the page is opened again in a fresh session and the command repeated.
#[test]
fn a_crashed_tab_is_opened_again_once() {
    if !browser::available() {
        return;
    }
    rt().block_on(async {
        let b = Browser::start("crash", 400, 300).await;
        b.goto("data:text/html,<p id=x>hello</p>").await;
        let _ = b.client().goto("chrome://crash").await;
        assert_eq!(b.text("x").await, "hello");
        b.close().await;
    });
}
