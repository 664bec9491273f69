//! The HTTP side of the real `lastmile serve` (`--http`), with a real HTTP
//! client: the JSON API answers by the fleet's names under the same roles
//! and scope rules as the QUIC side (a name another fleet has answers
//! exactly as a name nobody has), and the event feed (Server-Sent Events)
//! resumes after a dropped connection with `Last-Event-ID`, losing and
//! repeating nothing.

mod common;

use std::time::Duration;

use common::server::{Server, ServerExt, T0_MS, eventually, ping_at, rt, serve_with, simulate};
use common::{lastmile, tmpdir};
use futures_util::StreamExt;
use lastmile_ingest::client::Client;
use lastmile_ingest::protocol::{NO_TIME, Request, Response, WireStop};
use serde_json::Value;

const HERE: (i32, i32) = (470_000_000, 80_000_000);

fn stop(id: &str, customer: &str) -> WireStop {
    WireStop {
        id: id.into(),
        lat_e7: HERE.0,
        lon_e7: HERE.1,
        window_start_ms: NO_TIME,
        window_end_ms: NO_TIME,
        service_s: 60.0,
        customer_ref: customer.into(),
    }
}

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
        let (code, v) = get(&s, "/api/v1/vehicles/van%2F7%20%C3%BC", Some(ACME_READER)).await;
        assert_eq!((code, v["vehicle"].as_str()), (200, Some("van/7 ü")));

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
        // Refusals before the stream starts: plain JSON errors.
        let url = format!("{http}/api/v1/events?kinds=teleported");
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let url = format!("{http}/api/v1/events?vehicle=nobody");
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
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
            if path.ends_with("/events") {
                continue; // a stream: tested above
            }
            let concrete = path
                .replace("{vehicle}", "van-404")
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
