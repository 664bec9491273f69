//! The HTTP side of the real `lastmile serve` (`--http`), with a real HTTP
//! client: the JSON API answers by the fleet's names under the same roles
//! and scope rules as the QUIC side (a name another fleet has answers
//! exactly as a name nobody has), and the event feed (Server-Sent Events)
//! resumes after a dropped connection with `Last-Event-ID`, losing and
//! repeating nothing.

mod common;

use std::time::Duration;

use common::server::{
    HERE, Server, ServerExt, T0_MS, eventually, ping_at, planned as stop, rt, send, serve_with,
    simulate,
};
use common::{lastmile, tmpdir};
use futures_util::StreamExt;
use lastmile_ingest::client::Client;
use lastmile_ingest::protocol::{NO_TIME, Request, Response};
use serde_json::Value;

fn serve_http(name: &str) -> Server {
    let s = serve_with(&tmpdir(name), "", "", &["--http", "127.0.0.1:0"]);
    assert!(s.http.is_some(), "no HTTP address in the ready line");
    s
}

/// GET `path` with `token` as a bearer token (none: no header): status and JSON body.
async fn get(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!("{}{path}", s.http.as_ref().unwrap());
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn connect(s: &Server, token: &str) -> Client {
    Client::connect(&s.target(token)).await.unwrap()
}

const ACME_READER: &str = "acme-reader-token-000001";
const ACME_DISPATCHER: &str = "acme-dispatcher-token-01";
const GLOBEX_DISPATCHER: &str = "globex-dispatcher-tok-01";

#[test]
fn the_json_api_answers_by_names_within_the_callers_fleet() {
    let s = serve_http("http-api");
    rt().block_on(async {
        let acme = connect(&s, ACME_DISPATCHER).await;
        let globex = connect(&s, GLOBEX_DISPATCHER).await;
        for (c, who) in [(&acme, "acme"), (&globex, "globex")] {
            c.call(&Request::AssignRoute {
                vehicle: "van-1".into(),
                time_ms: NO_TIME,
                stops: vec![
                    stop("order-17", who),
                    stop("order-18", who),
                    stop("order-19", who),
                ],
            })
            .await
            .unwrap();
        }
        globex
            .call(&Request::AssignRoute {
                vehicle: "globex-van".into(),
                time_ms: NO_TIME,
                stops: vec![stop("globex-order", "g")],
            })
            .await
            .unwrap();
        // Acme's van reports over QUIC; HTTP sees it under the same name.
        let device = connect(&s, "acme-device-token-000001").await;
        device.bind(vec![(0, "van-1".into())]).await.unwrap();
        let mut st = device.ping_stream().await.unwrap();
        let pings: Vec<_> = (0..5).map(|k| ping_at(0, T0_MS + k * 1000, HERE)).collect();
        st.send(1, &pings).await.unwrap();
        eventually("acme's van placed", async || {
            get(&s, "/api/v1/vehicles/van-1", Some(ACME_READER)).await.1["position"].is_array()
        })
        .await;
        let (code, v) = get(&s, "/api/v1/vehicles/van-1", Some(ACME_READER)).await;
        assert_eq!(code, 200);
        assert_eq!(v["vehicle"], "van-1");
        assert_eq!(v["stops"][0]["stop"], "order-17");
        assert!(v["match_status"].is_string(), "{v}");
        // Globex's van-1 is another vehicle, which never reported.
        let (_, g) = get(&s, "/api/v1/vehicles/van-1", Some(GLOBEX_DISPATCHER)).await;
        assert!(g["position"].is_null(), "{g}");
        let (code, o) = get(&s, "/api/v1/stops/order-17", Some(ACME_READER)).await;
        assert_eq!((code, o["customer_ref"].as_str()), (200, Some("acme")));
        assert_eq!(o["vehicle"], "van-1");

        // Tokens: none, wrong, and a role that may not read.
        let (code, e) = get(&s, "/api/v1/vehicles/van-1", None).await;
        assert_eq!((code, e["code"].as_str()), (401, Some("unauthenticated")));
        let (code, _) = get(&s, "/api/v1/vehicles/van-1", Some("not-a-token-at-all")).await;
        assert_eq!(code, 401);
        let (code, e) = get(
            &s,
            "/api/v1/vehicles/van-1",
            Some("acme-device-token-000001"),
        )
        .await;
        assert_eq!((code, e["code"].as_str()), (403, Some("forbidden")));

        // Another fleet's names answer exactly as names nobody has.
        for (theirs, nobodys) in [
            ("/api/v1/vehicles/globex-van", "/api/v1/vehicles/nobody-van"),
            ("/api/v1/stops/globex-order", "/api/v1/stops/nobody-order"),
        ] {
            let (a, x) = get(&s, theirs, Some(ACME_READER)).await;
            let (b, y) = get(&s, nobodys, Some(ACME_READER)).await;
            assert_eq!(a, 404);
            assert_eq!(a, b);
            let strip = |v: &Value, name: &str| v.to_string().replace(name, "NAME");
            assert_eq!(
                strip(&x, theirs.rsplit('/').next().unwrap()),
                strip(&y, nobodys.rsplit('/').next().unwrap())
            );
        }

        // A customer's link: its own stop only, and the van only while
        // theirs is next (the van is at order-17: order-18 is next).
        let mut tokens = Vec::new();
        for stop in ["order-18", "order-19"] {
            let Response::TrackingToken { token, .. } = acme
                .call(&Request::CreateTrackingToken {
                    stop: stop.into(),
                    ttl_s: 3600,
                })
                .await
                .unwrap()
            else {
                panic!()
            };
            tokens.push(token);
        }
        let (code, t) = get(
            &s,
            &format!("/api/v1/stops/order-18?token={}", tokens[0]),
            None,
        )
        .await;
        assert_eq!((code, t["stops_before"].as_u64()), (200, Some(0)), "{t}");
        assert!(t["vehicle_position"].is_array(), "{t}");
        let (code, t) = get(&s, "/api/v1/stops/order-19", Some(&tokens[1])).await;
        assert_eq!((code, t["stops_before"].as_u64()), (200, Some(1)), "{t}");
        assert!(t["vehicle_position"].is_null(), "{t}");
        let token = &tokens[1];
        let (code, _) = get(&s, "/api/v1/stops/order-17", Some(token)).await;
        assert_eq!(code, 403);
        let (code, _) = get(&s, "/api/v1/vehicles/van-1", Some(token)).await;
        assert_eq!(code, 403);

        // Positions: near a point and in a box, the fleet's own only.
        eventually("acme's van indexed", async || {
            let (_, n) = get(&s, "/api/v1/vehicles?near=47,8&k=5", Some(ACME_READER)).await;
            n["vehicles"]
                .as_array()
                .is_some_and(|v| v.len() == 1 && v[0]["vehicle"] == "van-1")
        })
        .await;
        let (_, b) = get(
            &s,
            "/api/v1/vehicles?bbox=46,7,48,9",
            Some(GLOBEX_DISPATCHER),
        )
        .await;
        assert_eq!(b["vehicles"], serde_json::json!([]));
        for bad in ["near=91,8", "bbox=1,2,3", "near=x,y", "k=3"] {
            let (code, e) = get(&s, &format!("/api/v1/vehicles?{bad}"), Some(ACME_READER)).await;
            assert_eq!(
                (code, e["code"].as_str()),
                (400, Some("bad_value")),
                "{bad}"
            );
        }
        // A name with a slash and an accent, percent-encoded in the path.
        acme.call(&Request::AssignRoute {
            vehicle: "van/7 ü".into(),
            time_ms: NO_TIME,
            stops: vec![stop("order-20", "acme")],
        })
        .await
        .unwrap();
        // (The vehicle exists once its shard applied the route.)
        eventually("the van with a slash", async || {
            let (code, v) = get(&s, "/api/v1/vehicles/van%2F7%20%C3%BC", Some(ACME_READER)).await;
            (code, v["vehicle"].as_str()) == (200, Some("van/7 ü"))
        })
        .await;

        // The HTTP side's counters are the server's too.
        let st = s.stats().await;
        assert!(st["http_requests"] >= 20, "{st:?}");
        assert!(
            st["http_unauthenticated"] >= 2 && st["http_forbidden"] >= 3,
            "{st:?}"
        );
    });
}

/// One SSE message: its id, event name and JSON data.
struct Message {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// Reads messages from an SSE response until `want` arrived or it is quiet for `quiet`.
async fn read_feed(resp: reqwest::Response, want: usize, quiet: Duration) -> Vec<Message> {
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while out.len() < want {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout(quiet, body.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut m = Message {
                id: None,
                event: String::new(),
                data: Value::Null,
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    m.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    m.event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    m.data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                }
            }
            if !m.event.is_empty() {
                out.push(m);
            }
        }
    }
    out
}

#[test]
fn the_event_feed_resumes_after_a_dropped_connection_with_nothing_lost_or_repeated() {
    let dir = tmpdir("http-feed");
    let (trace, stops) = simulate(&dir, 8, 1200);
    let s = serve_with(&dir, "", "", &["--http", "127.0.0.1:0"]);
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--stops",
        stops.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    rt().block_on(async {
        eventually("every ping processed", async || {
            let st = s.stats().await;
            st["engine_pings_processed"] == st["pings_accepted"]
        })
        .await;
        let total = s.stats().await["engine_events"];
        assert!(total > 30, "{total} events");
        let http = s.http.clone().unwrap();
        let open = |last: Option<u64>| {
            let mut req = reqwest::Client::new()
                .get(format!("{http}/api/v1/events?from=0"))
                .bearer_auth(&s.token);
            if let Some(l) = last {
                req = req.header("Last-Event-ID", l.to_string());
            }
            req.send()
        };
        // Part of the log, then the connection drops.
        let first = open(None).await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(
            first.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let part = read_feed(first, 12, Duration::from_secs(5)).await;
        assert_eq!(part.len(), 12);
        let last = part.last().unwrap().id.unwrap();
        // Resumed with the last id seen: the rest, from the next one on.
        let rest = read_feed(
            open(Some(last)).await.unwrap(),
            usize::MAX,
            Duration::from_secs(2),
        )
        .await;
        let ids: Vec<u64> = part.iter().chain(&rest).map(|m| m.id.unwrap()).collect();
        assert_eq!(
            ids,
            (0..total).collect::<Vec<_>>(),
            "every id once, in order"
        );
        for m in part.iter().chain(&rest) {
            assert_eq!(m.data["id"], m.id.unwrap());
            assert_eq!(m.data["kind"], m.event.as_str());
            assert!(
                m.data["vehicle"].as_str().unwrap().starts_with("veh-"),
                "{}",
                m.data
            );
        }
        // Kinds filter, and a vehicle of the caller's names.
        let url = format!("{http}/api/v1/events?from=0&kinds=arrived,departed&vehicle=veh-00001");
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        let some = read_feed(resp, usize::MAX, Duration::from_secs(2)).await;
        assert!(!some.is_empty());
        assert!(
            some.iter()
                .all(|m| (m.event == "arrived" || m.event == "departed")
                    && m.data["vehicle"] == "veh-00001")
        );
        // The matched path, by the same name, as the QUIC side gives it.
        let (code, h) = get(&s, "/api/v1/vehicles/veh-00001/history", Some(&s.token)).await;
        assert_eq!(code, 200);
        let points = h["points"].as_array().unwrap();
        assert!(points.len() > 10, "{h}");
        assert_eq!(points[0]["break"], true);
        let times: Vec<f64> = points.iter().map(|p| p["time"].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let (from, to) = (times[2] + 0.5, times[times.len() / 2]);
        let (_, part) = get(
            &s,
            &format!("/api/v1/vehicles/veh-00001/history?from={from}&to={to}"),
            Some(&s.token),
        )
        .await;
        let q = Client::connect(&s.target(&s.token)).await.unwrap();
        let Response::History { points: wire, .. } = q
            .call(&Request::GetHistory {
                vehicle: "veh-00001".into(),
                from_ms: (from * 1000.0).round() as i64,
                to_ms: (to * 1000.0).round() as i64,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        let part = part["points"].as_array().unwrap();
        assert_eq!(part.len(), wire.len());
        for (j, w) in part.iter().zip(&wire) {
            assert_eq!(j["time"].as_f64().unwrap(), w.time_ms as f64 / 1000.0);
            assert_eq!(j["interpolated"], w.flags & 2 != 0);
            assert!((from..=to).contains(&j["time"].as_f64().unwrap()));
        }
        let (code, _) = get(
            &s,
            "/api/v1/vehicles/veh-00001/history?from=5&to=1",
            Some(&s.token),
        )
        .await;
        assert_eq!(code, 400);
        // Refusals before the stream starts: plain JSON errors.
        for (query, status) in [("kinds=teleported", 400), ("vehicle=nobody", 404)] {
            let (code, e) = get(&s, &format!("/api/v1/events?{query}"), Some(&s.token)).await;
            assert_eq!(code, status, "{query}: {e}");
        }
        let url = format!("{http}/api/v1/events");
        let resp = reqwest::Client::new().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    });
    // A server with a feed open still stops cleanly (the feed ends).
    let runtime = rt();
    let http = s.http.clone().unwrap();
    let open = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{http}/api/v1/events"))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(open.status(), 200);
    assert!(s.terminate(), "SIGTERM with a feed open: clean exit");
    drop((open, runtime));
}

/// Every path of the OpenAPI description the server serves is a route of
/// it, answering with a status the description lists (and the description
/// is the one in the repository).
#[test]
fn the_openapi_description_matches_the_routes() {
    let s = serve_http("http-openapi");
    rt().block_on(async {
        let (code, doc) = get(&s, "/api/v1/openapi.json", None).await;
        assert_eq!(code, 200);
        let file: Value = serde_json::from_str(include_str!("../web/openapi.json")).unwrap();
        assert_eq!(doc, file);
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 5);
        for (path, ops) in paths {
            // Feeds are streams (tested above and in tests/browser.rs);
            // commands are tested with bodies.
            let stream = ops["get"]["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some();
            if stream || ops.get("get").is_none() {
                continue;
            }
            let concrete = path
                .replace("{vehicle}", "van-404")
                .replace("{z}/{x}/{y}", "14/8555/5773")
                .replace("{stop}", "order-404");
            for token in [None, Some(s.token.as_str()), Some(ACME_READER)] {
                let (code, body) = get(&s, &concrete, token).await;
                let documented = ops["get"]["responses"].as_object().unwrap();
                assert!(
                    documented.contains_key(&code.to_string()),
                    "{path} answered {code} ({body}), documented: {:?}",
                    documented.keys().collect::<Vec<_>>()
                );
            }
        }
    });
}

#[test]
fn dispatchers_plan_and_close_stops_over_http() {
    use serde_json::json;
    let s = serve_http("http-commands");
    rt().block_on(async {
        let d = ACME_DISPATCHER;
        let plan = |id: &str| json!({"stop": id, "position": [47.0, 8.0], "service_s": 60, "customer_ref": format!("c-{id}")});
        let (code, _) = send(&s, "PUT", "/api/v1/vehicles/van-9/route", d, Some(json!({"stops": [plan("o-1"), plan("o-2")]}))).await;
        assert_eq!(code, 204);
        // The registry takes a command at once; the vehicle's snapshot (its
        // stops and ETAs) shortly after.
        let route_is = async |want: &[&str]| {
            eventually(&format!("route {want:?}"), async || {
                let (_, v) = get(&s, "/api/v1/vehicles/van-9", Some(d)).await;
                v["stops"].as_array().is_some_and(|a| {
                    a.iter().map(|s| s["stop"].as_str().unwrap_or("")).eq(want.iter().copied())
                })
            })
            .await
        };
        route_is(&["o-1", "o-2"]).await;
        let (code, _) = send(&s, "POST", "/api/v1/vehicles/van-9/stops", d, Some(json!({"stop": plan("o-3"), "index": 0}))).await;
        assert_eq!(code, 204);
        route_is(&["o-3", "o-1", "o-2"]).await;
        let (code, _) = send(&s, "PUT", "/api/v1/vehicles/van-9/order", d, Some(json!({"order": ["o-1", "o-2", "o-3"]}))).await;
        assert_eq!(code, 204);
        let (code, _) = send(&s, "DELETE", "/api/v1/vehicles/van-9/stops/o-3", d, None).await;
        assert_eq!(code, 204);
        route_is(&["o-1", "o-2"]).await;
        // Closed with a proof, or failed with a reason.
        let proof = json!({"note": "left at the door", "photo_refs": ["s3://pod/1.jpg"], "position": [47.0, 8.0]});
        let (code, _) = send(&s, "POST", "/api/v1/stops/o-1/complete", d, Some(proof.clone())).await;
        assert_eq!(code, 204);
        let (_, o) = get(&s, "/api/v1/stops/o-1", Some(d)).await;
        assert_eq!(o["status"], "completed");
        assert_eq!(o["outcome"]["completed"]["note"], "left at the door");
        assert_eq!(o["outcome"]["completed"]["photo_refs"], json!(["s3://pod/1.jpg"]));
        let (code, e) = send(&s, "POST", "/api/v1/stops/o-1/complete", d, Some(proof)).await;
        assert_eq!((code, e["code"].as_str()), (409, Some("stop_closed")));
        let (code, _) = send(&s, "POST", "/api/v1/stops/o-2/fail", d, Some(json!({"reason": "nobody home"}))).await;
        assert_eq!(code, 204);
        let (_, o) = get(&s, "/api/v1/stops/o-2", Some(d)).await;
        assert_eq!((o["status"].as_str(), &o["outcome"]["failed"]), (Some("failed"), &json!("nobody home")));
        // Moved to another van; a customer's link to it.
        send(&s, "POST", "/api/v1/vehicles/van-9/stops", d, Some(json!({"stop": plan("o-4")}))).await;
        let (code, _) = send(&s, "POST", "/api/v1/stops/o-4/reassign", d, Some(json!({"to": "van-10"}))).await;
        assert_eq!(code, 204);
        let (_, o) = get(&s, "/api/v1/stops/o-4", Some(d)).await;
        assert_eq!(o["vehicle"], "van-10");
        let (code, t) = send(&s, "POST", "/api/v1/stops/o-4/tracking-token", d, Some(json!({"ttl_s": 600}))).await;
        assert_eq!(code, 201);
        let token = t["token"].as_str().unwrap();
        assert_eq!(t["link"], format!("/t/{token}"));
        let (code, o) = get(&s, "/api/v1/stops/o-4", Some(token)).await;
        assert_eq!((code, o["stop"].as_str()), (200, Some("o-4")));

        // Refusals, each with its code.
        let refused = |r: (u16, Value)| (r.0, r.1["code"].as_str().unwrap_or("").to_string());
        let body = Some(json!({"stops": [plan("o-5")]}));
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-9/route", ACME_READER, body.clone()).await), (403, "forbidden".into()));
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-9/route", "nope-nope-nope-nope", body).await), (401, "unauthenticated".into()));
        let mut far = plan("o-5");
        far["position"] = json!([91.0, 8.0]);
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-9/route", d, Some(json!({"stops": [far]}))).await), (400, "bad_value".into()));
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-9/route", d, Some(json!({"stops": [plan("o-5")], "time": -5.0}))).await), (400, "bad_value".into()));
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-9/route", d, Some(json!({"stopz": []}))).await), (400, "bad_value".into()));
        let raw = reqwest::Client::new()
            .put(format!("{}/api/v1/vehicles/van-9/route", s.http.as_ref().unwrap()))
            .bearer_auth(d)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), 400);
        assert_eq!(refused(send(&s, "POST", "/api/v1/vehicles/van-10/stops", d, Some(json!({"stop": plan("o-4")}))).await), (409, "duplicate_stop".into()));
        assert_eq!(refused(send(&s, "PUT", "/api/v1/vehicles/van-10/order", d, Some(json!({"order": []}))).await), (400, "bad_order".into()));
        // Another fleet's stop: exactly as one nobody has.
        let g = GLOBEX_DISPATCHER;
        for (path, body) in [
            ("/api/v1/stops/{}/complete", json!({})),
            ("/api/v1/stops/{}/fail", json!({"reason": "x"})),
            ("/api/v1/stops/{}/reassign", json!({"to": "van-1"})),
            ("/api/v1/stops/{}/tracking-token", json!({})),
        ] {
            let theirs = send(&s, "POST", &path.replace("{}", "o-4"), g, Some(body.clone())).await;
            let nobodys = send(&s, "POST", &path.replace("{}", "zz-9"), g, Some(body)).await;
            assert_eq!(theirs.0, 404, "{path}");
            assert_eq!(theirs.0, nobodys.0);
            assert_eq!(theirs.1.to_string().replace("o-4", "N"), nobodys.1.to_string().replace("zz-9", "N"));
        }
        let (code, _) = send(&s, "DELETE", "/api/v1/vehicles/van-10/stops/o-4", g, None).await;
        assert_eq!(code, 404);
        // Nothing of acme's changed.
        eventually("o-4 next on van-10", async || {
            let (_, o) = get(&s, "/api/v1/stops/o-4", Some(d)).await;
            (o["vehicle"].as_str(), o["status"].as_str()) == (Some("van-10"), Some("next"))
        })
        .await;
    });
}

#[test]
fn dispatchers_keep_their_fleets_zones_over_http() {
    use serde_json::json;
    let s = serve_http("http-zones");
    let url = |path: &str| format!("{}{path}", s.http.as_ref().unwrap());
    rt().block_on(async {
        let put = async |token: &str, body: String| {
            let r = reqwest::Client::new()
                .put(url("/api/v1/zones"))
                .bearer_auth(token)
                .header("content-type", "application/geo+json")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        };
        let depot = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": "depot", "radius_m": 300, "dwell_s": 900},
             "geometry": {"type": "Point", "coordinates": [8.0, 47.0]}}]});
        let (code, body) = put(ACME_DISPATCHER, depot.to_string()).await;
        assert_eq!((code, &body), (200, &json!({"zones": 1})));
        let (code, listed) = get(&s, "/api/v1/zones", Some(ACME_READER)).await;
        assert_eq!(code, 200);
        assert_eq!(listed["features"][0]["properties"]["id"], "depot");
        assert_eq!(listed["features"][0]["properties"]["dwell_s"], 900.0);
        // Another fleet's list is its own; a reader may not change zones;
        // a bad file says which feature and why.
        let (_, theirs) = get(&s, "/api/v1/zones", Some(GLOBEX_DISPATCHER)).await;
        assert_eq!(theirs["features"], json!([]));
        let (code, e) = put(ACME_READER, depot.to_string()).await;
        assert_eq!((code, e["code"].as_str()), (403, Some("forbidden")));
        let (code, e) = put(ACME_DISPATCHER, "{not json".into()).await;
        assert_eq!((code, e["code"].as_str()), (400, Some("bad_value")));
        let mut far = depot.clone();
        far["features"][0]["geometry"]["coordinates"] = json!([8.0, 95.0]);
        let (code, e) = put(ACME_DISPATCHER, far.to_string()).await;
        assert_eq!((code, e["code"].as_str()), (400, Some("bad_value")));
        assert!(
            e["message"].as_str().unwrap().contains("feature 0 (depot)"),
            "{e}"
        );
        // Removed by its own fleet only.
        let delete = async |token: &str| {
            reqwest::Client::new()
                .delete(url("/api/v1/zones/depot"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(delete(GLOBEX_DISPATCHER).await, 404);
        assert_eq!(delete(ACME_DISPATCHER).await, 204);
        assert_eq!(delete(ACME_DISPATCHER).await, 404);
        let (_, listed) = get(&s, "/api/v1/zones", Some(ACME_READER)).await;
        assert_eq!(listed["features"], json!([]));
    });
}

/// A dispatcher records a van's upkeep (serviced, its dashboard's
/// odometer): the van's JSON shows the counts starting again and the
/// lifetime odometer set; an empty or absurd record and a reader are
/// refused, and another fleet's van of the same name is another van.
#[test]
fn dispatchers_record_a_vans_upkeep_over_http() {
    use serde_json::json;
    let s = serve_http("http-upkeep");
    rt().block_on(async {
        let c = connect(&s, "acme-device-token-000001").await;
        c.bind(vec![(0, "van-9".into())]).await.unwrap();
        let mut st = c.ping_stream().await.unwrap();
        let pings: Vec<_> = (0..5).map(|k| ping_at(0, T0_MS + k * 1000, HERE)).collect();
        st.send(1, &pings).await.unwrap();
        eventually("van-9 seen", async || {
            get(&s, "/api/v1/vehicles/van-9", Some(ACME_READER)).await.0 == 200
        })
        .await;
        let upkeep = "/api/v1/vehicles/van-9/upkeep";
        let time = T0_MS as f64 / 1000.0 + 10.0;
        let body = json!({"time": time, "serviced": true, "odometer_m": 81_234_000.0});
        let (code, e) = send(&s, "POST", upkeep, ACME_DISPATCHER, Some(body)).await;
        assert_eq!(code, 204, "{e}");
        eventually("the record applied", async || {
            let (_, v) = get(&s, "/api/v1/vehicles/van-9", Some(ACME_READER)).await;
            v["lifetime_odometer_m"] == json!(81_234_000.0)
        })
        .await;
        let (_, v) = get(&s, "/api/v1/vehicles/van-9", Some(ACME_READER)).await;
        assert_eq!(
            v["service"],
            json!({"since": time, "driven_m": 0.0, "moving_s": 0.0, "due": []})
        );
        for (body, token, want) in [
            (json!({}), ACME_DISPATCHER, (400, "bad_value")),
            (
                json!({"odometer_m": -5.0}),
                ACME_DISPATCHER,
                (400, "bad_value"),
            ),
            (
                json!({"odometer_m": 1e12}),
                ACME_DISPATCHER,
                (400, "bad_value"),
            ),
            (
                json!({"serviced": "yes"}),
                ACME_DISPATCHER,
                (400, "bad_value"),
            ),
            (json!({"serviced": true}), ACME_READER, (403, "forbidden")),
        ] {
            let (code, e) = send(&s, "POST", upkeep, token, Some(body.clone())).await;
            assert_eq!(
                (code, e["code"].as_str().unwrap_or("")),
                want,
                "{body}: {e}"
            );
        }
        // Globex's van-9 is its own: recording it leaves acme's alone.
        let body = json!({"odometer_m": 5.0});
        let (code, _) = send(&s, "POST", upkeep, GLOBEX_DISPATCHER, Some(body)).await;
        assert_eq!(code, 204);
        let (_, v) = get(&s, "/api/v1/vehicles/van-9", Some(ACME_READER)).await;
        assert_eq!(v["lifetime_odometer_m"], json!(81_234_000.0));
    });
}

/// The customer rates a delivered stop once, with the stop's tracking
/// token: the rating is kept with the outcome (through a kill -9), becomes
/// a `rated` event a dispatcher hears, and nobody else may give it.
#[test]
fn customers_rate_a_delivered_stop_once() {
    use serde_json::json;
    let dir = tmpdir("http-rating");
    let s = serve_with(&dir, "", "", &["--http", "127.0.0.1:0"]);
    let d = ACME_DISPATCHER;
    let token = rt().block_on(async {
        let plan = |id: &str| json!({"stop": id, "position": [47.0, 8.0]});
        let body = json!({"stops": [plan("r-1"), plan("r-2")]});
        let (code, _) = send(&s, "PUT", "/api/v1/vehicles/van-7/route", d, Some(body)).await;
        assert_eq!(code, 204);
        let mint = async |stop: &str| {
            let path = format!("/api/v1/stops/{stop}/tracking-token");
            let (_, t) = send(&s, "POST", &path, d, None).await;
            t["token"].as_str().unwrap().to_string()
        };
        let (t1, t2) = (mint("r-1").await, mint("r-2").await);
        let url = format!("{}/api/v1/events?kinds=rated", s.http.as_ref().unwrap());
        let feed = reqwest::Client::new()
            .get(url)
            .bearer_auth(d)
            .send()
            .await
            .unwrap();
        let rate = async |stop: &str, token: &str, body: Value| {
            let r = send(
                &s,
                "POST",
                &format!("/api/v1/stops/{stop}/rating"),
                token,
                Some(body),
            )
            .await;
            (r.0, r.1["code"].as_str().unwrap_or("").to_string())
        };
        let five = json!({"stars": 5, "comment": "  quick and friendly  "});
        // Not delivered yet.
        assert_eq!(
            rate("r-1", &t1, five.clone()).await,
            (409, "conflict".into())
        );
        let (code, _) = send(&s, "POST", "/api/v1/stops/r-1/complete", d, Some(json!({}))).await;
        assert_eq!(code, 204);
        // Only the customer's own link rates, and only with 1 to 5 stars.
        assert_eq!(
            rate("r-1", d, five.clone()).await,
            (403, "forbidden".into())
        );
        assert_eq!(
            rate("r-1", &t2, five.clone()).await,
            (403, "forbidden".into())
        );
        for bad in [
            json!({"stars": 0}),
            json!({"stars": 6}),
            json!({"stars": 3, "comment": "x".repeat(1001)}),
            json!({"stars": "five"}),
        ] {
            assert_eq!(
                rate("r-1", &t1, bad.clone()).await,
                (400, "bad_value".into()),
                "{bad}"
            );
        }
        let (code, _) = send(
            &s,
            "POST",
            "/api/v1/stops/r-1/rating",
            &t1,
            Some(five.clone()),
        )
        .await;
        assert_eq!(code, 204);
        // Once.
        assert_eq!(
            rate("r-1", &t1, json!({"stars": 1})).await,
            (409, "conflict".into())
        );
        let (_, o) = get(&s, "/api/v1/stops/r-1", Some(d)).await;
        assert_eq!(o["rating"]["stars"], 5);
        assert_eq!(o["rating"]["comment"], "quick and friendly");
        // The dispatcher sees it beside the van's stops.
        eventually("the stars in the van's stops", async || {
            let (_, v) = get(&s, "/api/v1/vehicles/van-7", Some(d)).await;
            v["stops"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["stop"] == "r-1" && x["stars"] == 5))
        })
        .await;
        let got = read_feed(feed, 1, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "one rated event");
        assert_eq!(got[0].event, "rated");
        let e = &got[0].data;
        assert_eq!(
            (e["stop"].as_str(), e["value"].as_f64()),
            (Some("r-1"), Some(5.0))
        );
        t1
    });
    s.kill9();
    let s = serve_with(&dir, "", "", &["--http", "127.0.0.1:0"]);
    rt().block_on(async {
        let (_, o) = get(&s, "/api/v1/stops/r-1", Some(&token)).await;
        assert_eq!(
            (o["status"].as_str(), o["rating"]["stars"].as_u64()),
            (Some("completed"), Some(5))
        );
        let again = send(
            &s,
            "POST",
            "/api/v1/stops/r-1/rating",
            &token,
            Some(json!({"stars": 2})),
        )
        .await;
        assert_eq!(again.0, 409, "still rated once after a restart");
    });
}

/// The map's road layer, as the pages ask for it: the graph's box, a tile
/// over the town with its roads in the tile's pixels, a box in degrees, the
/// far zooms drawing fewer roads; any valid token, and bad tiles refused.
#[test]
fn the_road_layer_is_served_by_tile_and_by_box() {
    let s = serve_http("http-roads");
    rt().block_on(async {
        let mut map = Value::Null;
        eventually("the road layer", async || {
            let (code, m) = get(&s, "/api/v1/map", Some(ACME_READER)).await;
            map = m;
            code == 200
        })
        .await;
        let b: Vec<f64> = map["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let (lat, lon) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        // The web-map tile of the town's centre at zoom 15.
        let n = f64::from(1u32 << 15);
        let x = ((lon + 180.0) / 360.0 * n) as u32;
        let r = lat.to_radians();
        let y = ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n) as u32;
        let (code, tile) = get(&s, &format!("/api/v1/roads/15/{x}/{y}"), Some(ACME_READER)).await;
        assert_eq!(code, 200);
        let roads = tile["roads"].as_array().unwrap();
        assert!(!roads.is_empty(), "the town's centre has roads");
        for r in roads {
            let r = r.as_array().unwrap();
            assert!(r.len() >= 5 && r.len() % 2 == 1, "{r:?}");
            // Quarter pixels: inside the tile, give or take an eighth and a road.
            assert!(
                r[1..]
                    .iter()
                    .all(|v| (-1100..=2200).contains(&v.as_i64().unwrap())),
                "{r:?}"
            );
        }
        let bbox = format!(
            "{},{},{},{}",
            lat - 0.005,
            lon - 0.005,
            lat + 0.005,
            lon + 0.005
        );
        let (code, near) = get(
            &s,
            &format!("/api/v1/roads?bbox={bbox}&zoom=16"),
            Some(ACME_READER),
        )
        .await;
        assert_eq!(code, 200);
        let lines = near["roads"].as_array().unwrap();
        assert!(!lines.is_empty());
        assert!(
            lines
                .iter()
                .all(|l| l["class"].is_string() && l["line"].as_array().unwrap().len() >= 2)
        );
        let (_, far) = get(
            &s,
            &format!(
                "/api/v1/roads?bbox={},{},{},{}&zoom=9",
                b[0], b[1], b[2], b[3]
            ),
            Some(ACME_READER),
        )
        .await;
        let (_, all) = get(
            &s,
            &format!(
                "/api/v1/roads?bbox={},{},{},{}&zoom=17",
                b[0], b[1], b[2], b[3]
            ),
            Some(ACME_READER),
        )
        .await;
        assert!(far["roads"].as_array().unwrap().len() < all["roads"].as_array().unwrap().len());
        for bad in [
            "/api/v1/roads/23/0/0",
            "/api/v1/roads/2/4/0",
            "/api/v1/roads/2/0/x",
            "/api/v1/roads?bbox=1,2,3&zoom=3",
        ] {
            let (code, e) = get(&s, bad, Some(ACME_READER)).await;
            assert_eq!(
                (code, e["code"].as_str()),
                (400, Some("bad_value")),
                "{bad}"
            );
        }
        let (code, _) = get(&s, &format!("/api/v1/roads/15/{x}/{y}"), None).await;
        assert_eq!(code, 401);
    });
}

/// The HTTP side's connections are bounded (`[limits] max_connections`):
/// past the bound a new connection waits, counted, until one closes, and
/// is then answered.
#[test]
fn http_connections_are_bounded_and_the_next_one_waits() {
    use std::io::{Read, Write};
    let dir = tmpdir("http-connections");
    let s = serve_with(
        &dir,
        "",
        "[limits]\nmax_connections = 2\n",
        &["--http", "127.0.0.1:0"],
    );
    let addr = s
        .http
        .clone()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    rt().block_on(eventually("two connections open", async || {
        s.stats().await.get("http_connections_open").copied() == Some(2)
    }));
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    let ask = format!(
        "GET /api/v1/map HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_READER}\r\nConnection: close\r\n\r\n"
    );
    third.write_all(ask.as_bytes()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "answered past the bound");
    rt().block_on(eventually("the wait counted", async || {
        s.stats()
            .await
            .get("http_connections_waited")
            .copied()
            .unwrap_or(0)
            >= 1
    }));
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
}

/// With a certificate configured, the HTTP side serves HTTPS with it (the
/// QUIC side's): a real client that trusts that certificate gets answers,
/// and plain HTTP gets none. Without one it may not leave loopback.
#[test]
fn the_http_side_serves_https_with_the_configured_certificate() {
    let dir = tmpdir("http-tls");
    let certs = dir.join("certs");
    lastmile_ingest::tls::Identity::dev(&certs).unwrap();
    let (cert, key) = (certs.join("dev-cert.pem"), certs.join("dev-key.pem"));
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let s = serve_with(&dir, "", &tls, &["--http", "127.0.0.1:0"]);
    let http = s.http.clone().unwrap();
    assert!(http.starts_with("https://"), "{http}");
    let port = http.rsplit(':').next().unwrap();
    let curl = |url: &str| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cert.to_str().unwrap(),
            ])
            .args(["-H", &format!("Authorization: Bearer {ACME_READER}")])
            .arg(url)
            .output()
            .expect("curl")
    };
    // The road layer is built in the background at start (503 until then;
    // later under load).
    let mut map = Value::Null;
    for _ in 0..100 {
        let o = curl(&format!("https://localhost:{port}/api/v1/map"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        map = serde_json::from_slice(&o.stdout).unwrap();
        if map["code"] != "overloaded" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(map["bbox"].as_array().map(Vec::len), Some(4), "{map}");
    let o = curl(&format!("http://localhost:{port}/api/v1/map"));
    assert!(
        !o.status.success() || o.stdout.is_empty(),
        "plain HTTP answered on the HTTPS port"
    );
    rt().block_on(eventually("the failed handshake counted", async || {
        s.stats()
            .await
            .get("http_tls_handshakes_failed")
            .copied()
            .unwrap_or(0)
            >= 1
    }));
    drop(s);
    // Without a certificate, a public address is refused at start.
    let o = lastmile(&[
        "serve",
        "--graph",
        common::server::town(&dir).to_str().unwrap(),
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "0.0.0.0:0",
        "--data-dir",
        dir.join("data2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Guessing tokens over HTTP is slowed per address by the same guard as at
/// the QUIC door, and a token that got in from the address before is not.
#[test]
fn token_guessing_over_http_is_slowed_and_known_tokens_are_not() {
    let s = serve_with(
        &tmpdir("http-guessing"),
        "",
        "[limits]\nauth_failures_burst = 3\nauth_failures_per_minute = 20\n",
        &["--http", "127.0.0.1:0"],
    );
    rt().block_on(async {
        // The admin's token gets in first: it is known at this address.
        let (code, _) = get(&s, "/api/v1/vehicles/x", Some(&s.token)).await;
        assert_eq!(code, 404);
        // Three wrong tokens fill the burst; the next check takes the
        // first slot, the one after waits for the next (3 s at 20 a minute).
        for i in 0..4 {
            let (code, _) = get(&s, "/api/v1/vehicles/x", Some(&format!("guess-{i}"))).await;
            assert_eq!(code, 401);
        }
        let t = std::time::Instant::now();
        let (code, _) = get(&s, "/api/v1/vehicles/x", Some("guess-9")).await;
        assert_eq!(code, 401);
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let (code, _) = get(&s, "/api/v1/vehicles/x", Some(&s.token)).await;
        assert_eq!(code, 404);
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    });
}

/// schemathesis (from PyPI, installed by `.ci/run`) against the served
/// OpenAPI description: every operation with generated inputs, valid and
/// not, must answer with a documented status, content type and body, and
/// never fail inside (5xx). Not asked: that every schema-valid input is
/// accepted (the server also refuses what a schema cannot say: a time
/// beyond its wall clock, a name of 128 characters but more bytes), nor
/// that every schema-invalid one is refused (headers it does not read).
#[test]
fn schemathesis_finds_nothing_wrong_with_the_api() {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is required in CI (pip install schemathesis)"
        );
        eprintln!("skipped: schemathesis not found (pip install schemathesis)");
        return;
    }
    // It tries wrong tokens on purpose: the address guard would space
    // those out to a few a minute (tested apart), so lift it here.
    let dir = tmpdir("http-schemathesis");
    let s = serve_with(
        &dir,
        "",
        "[limits]\nauth_failures_burst = 1000000\n",
        &["--http", "127.0.0.1:0"],
    );
    let http = s.http.clone().unwrap();
    let o = std::process::Command::new("schemathesis")
        .args([
            "run",
            &format!("{http}/api/v1/openapi.json"),
            "--url",
            &http,
            "-H",
            &format!("Authorization: Bearer {}", s.token),
            "--max-examples",
            "20",
            // A feed never ends: they are tested above and in tests/browser.rs.
            "--exclude-path",
            "/api/v1/events",
            "--exclude-path",
            "/api/v1/fleet/live",
            "--seed",
            "1",
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
            "--no-color",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its cache goes beside the test's files, not into the project.
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
