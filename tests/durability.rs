//! Durability end to end, with the real binary: a SIGTERM drains and
//! checkpoints, and the restarted server answers ETAs before any new ping;
//! a kill -9 at random moments under load never loses an acknowledged
//! command nor an event a subscriber saw; subscribers resume across
//! restarts without gaps; tracking links survive.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{
    Server, ServerExt, bind_numbers, collect, eventually, everything_from, ping_at, rt, serve,
    simulate, veh,
};
use common::{lastmile, tmpdir};
use lastmile_ingest::client::{Client, call_on};
use lastmile_ingest::protocol::{
    AT_END, FROM_NOW, NO_TIME, Request, Response, StopStatusCode, Version, WireEvent, WireProof,
    WireStop,
};

/// On-road positions: the simulated stops' (lat, lon) in 1e-7 degrees.
fn road_points(stops_csv: &Path) -> Vec<(i32, i32)> {
    let mut rdr = csv::Reader::from_path(stops_csv).unwrap();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            let d = |i: usize| (r[i].parse::<f64>().unwrap() * 1e7).round() as i32;
            (d(3), d(4))
        })
        .collect()
}

fn stop(id: u64, (lat_e7, lon_e7): (i32, i32)) -> WireStop {
    WireStop {
        id: id.to_string(),
        lat_e7,
        lon_e7,
        window_start_ms: NO_TIME,
        window_end_ms: NO_TIME,
        service_s: 60.0,
        customer_ref: format!("order-{id}"),
    }
}

/// Events compared bit for bit (their figures may be NaN).
fn same(a: Option<&WireEvent>, b: &WireEvent) -> bool {
    a.is_some_and(|a| format!("{a:?}") == format!("{b:?}"))
}

/// Reads a subscription until quiet for `quiet`: every event by id.
async fn vehicles(c: &Client, n: u64) -> Vec<Response> {
    let mut out = Vec::new();
    for v in 0..n {
        out.push(
            c.call(&Request::GetVehicle { vehicle: veh(v) })
                .await
                .unwrap(),
        );
    }
    out
}

#[test]
fn sigterm_checkpoints_and_the_restarted_server_answers_at_once() {
    let dir = tmpdir("dur-sigterm");
    let (trace, stops) = simulate(&dir, 30, 1800);
    let s = serve(&dir, "", "");
    // Ticks come and go before the first ping: the engine's event time must
    // still be the replayed day's, or the restart below resumes on the wall
    // clock and expires the day's history as a month old.
    std::thread::sleep(Duration::from_millis(600));
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--stops",
        stops.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (before, events, done_stop, tracking) = rt().block_on(async {
        eventually("every ping processed", async || {
            let st = s.stats().await;
            st["engine_pings_processed"] == st["pings_accepted"]
        })
        .await;
        let c = s.admin().await;
        // A delivery completed with its proof, and a customer's link.
        let points = road_points(&stops);
        let open = [7_000_001u64, 7_000_002];
        for (i, id) in open.iter().enumerate() {
            c.call(&Request::AddStop {
                vehicle: veh(0),
                time_ms: NO_TIME,
                index: AT_END,
                stop: stop(*id, points[i]),
            })
            .await
            .unwrap();
        }
        let proof = WireProof {
            photo_refs: vec!["s3://pod/0.jpg".into()],
            note: "left with the neighbour".into(),
            ..WireProof::default()
        };
        c.call(&Request::Complete {
            vehicle: veh(0),
            time_ms: NO_TIME,
            stop: open[0].to_string(),
            proof,
        })
        .await
        .unwrap();
        let Response::TrackingToken { token, .. } = c
            .call(&Request::CreateTrackingToken {
                stop: open[1].to_string(),
                ttl_s: 3600,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        let mut events = BTreeMap::new();
        let mut sub = c.subscribe(&everything_from(0)).await.unwrap();
        collect(&mut sub, Duration::from_secs(1), &mut events).await;
        (vehicles(&c, 30).await, events, open[0], (token, open[1]))
    });
    assert!(events.len() > 100, "{} events", events.len());
    let ids: Vec<u64> = events.keys().copied().collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "no gaps");
    assert!(s.terminate(), "SIGTERM: clean exit");

    let s = serve(&dir, "", "");
    rt().block_on(async {
        let c = s.admin().await;
        // Before any ping: every vehicle's position and ETAs as they were.
        assert_eq!(vehicles(&c, 30).await, before, "state after restart");
        let Response::Stop(view) = c
            .call(&Request::GetStop {
                stop: done_stop.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(view.status, StopStatusCode::Completed);
        // The customer's link still works, for its stop only.
        let t = Client::connect(&s.target(&tracking.0)).await.unwrap();
        let Response::Stop(view) = t
            .call(&Request::GetStop {
                stop: tracking.1.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(view.stop, tracking.1.to_string());
        assert!(
            t.call(&Request::GetStop {
                stop: done_stop.to_string()
            })
            .await
            .is_err()
        );
        // A subscriber resuming from 0 gets the same log, and new events
        // continue its numbering.
        let mut again = BTreeMap::new();
        let mut sub = c.subscribe(&everything_from(0)).await.unwrap();
        collect(&mut sub, Duration::from_secs(1), &mut again).await;
        for (id, e) in &events {
            assert!(same(again.get(id), e), "event {id} after restart");
        }
        let st = s.stats().await;
        assert_eq!(st["engine_events"], again.len() as u64, "ids continue");
    });
    // The day's matched path, from the store, as GeoJSON: as long as the
    // vehicle's odometer says it drove, and in time order.
    for v in [3u64, 17] {
        let o = lastmile(&s.cli(&["history", "--vehicle", &veh(v)]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let features = g["features"].as_array().unwrap();
        assert!(!features.is_empty(), "vehicle {v} has no history");
        let (mut length, mut last_t) = (0.0, 0.0);
        for f in features {
            let c = f["geometry"]["coordinates"].as_array().unwrap();
            let times = f["properties"]["times"].as_array().unwrap();
            assert_eq!(c.len(), times.len());
            for w in c.windows(2) {
                length += metres(&w[0], &w[1]);
            }
            for t in times {
                let t = t.as_f64().unwrap();
                assert!(
                    t >= last_t - 1e-3,
                    "vehicle {v}: times go back: {last_t} -> {t} in {}",
                    f["properties"]
                );
                last_t = t;
            }
        }
        let Response::Vehicle(snap) = &before[v as usize] else {
            panic!()
        };
        let odo = snap.odometer_m;
        assert!(
            (length - odo).abs() < 0.05 * odo + 50.0,
            "vehicle {v}: history {length:.0} m, odometer {odo:.0} m"
        );
        // A range picks the part inside it.
        let mid = last_t - 300.0;
        let o = lastmile(&s.cli(&[
            "history",
            "--vehicle",
            &veh(v),
            "--from",
            &mid.to_string(),
            "--csv",
        ]));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let times: Vec<f64> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(!times.is_empty() && times.iter().all(|&t| t >= mid - 600.0));
    }
}

/// Great-circle metres between two GeoJSON [lon, lat] positions.
fn metres(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let (lo1, la1) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
    let (lo2, la2) = (b[0].as_f64().unwrap(), b[1].as_f64().unwrap());
    let (p1, p2) = (la1.to_radians(), la2.to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((lo2 - lo1).to_radians() / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

/// The replay CLI pushing a trace at the server in the background.
fn load(s: &Server, trace: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(s.cli(&["replay", trace.to_str().unwrap(), "--connections", "2"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Dispatchers sending commands at once in the kill -9 test.
const DISPATCHERS: usize = 6;

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_command_nor_seen_event() {
    let dir = tmpdir("dur-kill9");
    let (trace, stops) = simulate(&dir, 30, 1800);
    let points = road_points(&stops);
    let rounds = if std::env::var_os("CI").is_some() {
        6
    } else {
        12
    };
    // Acknowledged: stop id -> (vehicle, completed).
    let mut acked: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
    let mut seen: BTreeMap<u64, WireEvent> = BTreeMap::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next_id = 5_000_000u64;
    for round in 0..rounds {
        let s = serve(&dir, "", "[store]\ncheckpoint_every_s = 0.3\n");
        let mut pusher = load(&s, &trace);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(150 + rng % 900);
        rt().block_on(async {
            let c = s.admin().await;
            // Everything acknowledged before is still there.
            for (&id, &(vehicle, completed)) in &acked {
                let r = c
                    .call(&Request::GetStop {
                        stop: id.to_string(),
                    })
                    .await;
                let Ok(Response::Stop(view)) = r else {
                    panic!("round {round}: acknowledged stop {id} lost: {r:?}")
                };
                assert_eq!(
                    view.vehicle,
                    vehicle.to_string(),
                    "round {round}: stop {id}"
                );
                if completed {
                    assert_eq!(view.status, StopStatusCode::Completed, "stop {id}");
                }
            }
            // Every event a subscriber saw is in the log, unchanged.
            let mut log = BTreeMap::new();
            let mut sub = c.subscribe(&everything_from(0)).await.unwrap();
            // Until the log has come as far as what was seen (a quiet spell
            // on a loaded machine is not the log's end), or 10 s.
            let last_seen = seen.keys().next_back().copied().unwrap_or(0);
            let reading = Instant::now();
            loop {
                collect(&mut sub, Duration::from_millis(300), &mut log).await;
                let far = log.keys().next_back().is_some_and(|&id| id >= last_seen);
                if far || seen.is_empty() || reading.elapsed() > Duration::from_secs(10) {
                    break;
                }
            }
            for (id, e) in &seen {
                assert!(same(log.get(id), e), "round {round}: event {id}");
            }
            // Dispatchers issuing commands concurrently (so the server
            // journals several per flush) and a subscriber, while a thread
            // kills the server: commands are in flight at the kill.
            let mut live = c.subscribe(&everything_from(FROM_NOW)).await.unwrap();
            let killed = Arc::new(AtomicBool::new(false));
            let killer = {
                let (killed, pid) = (killed.clone(), s.pid());
                std::thread::spawn(move || {
                    std::thread::sleep(kill_after);
                    let status = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    killed.store(true, Relaxed);
                    assert!(status.unwrap().success(), "kill -9 {pid}");
                })
            };
            let acked_now = Arc::new(Mutex::new(Vec::new()));
            let next = Arc::new(AtomicU64::new(next_id));
            let mut dispatchers = tokio::task::JoinSet::new();
            for _ in 0..DISPATCHERS {
                let (conn, killed, next) = (c.connection().clone(), killed.clone(), next.clone());
                let (acked_now, points) = (acked_now.clone(), points.clone());
                dispatchers.spawn(async move {
                    // A request the dead server never answers times out.
                    let call = |req: Request| {
                        let conn = conn.clone();
                        async move {
                            let answer = tokio::time::timeout(
                                Duration::from_millis(500),
                                call_on(&conn, Version::LATEST, &req),
                            );
                            matches!(answer.await, Ok(Ok(_)))
                        }
                    };
                    while !killed.load(Relaxed) {
                        let id = next.fetch_add(1, Relaxed);
                        let vehicle = id % 30;
                        let add = Request::AddStop {
                            vehicle: vehicle.to_string(),
                            time_ms: NO_TIME,
                            index: AT_END,
                            stop: stop(id, points[(id as usize) % points.len()]),
                        };
                        if !call(add).await {
                            continue;
                        }
                        acked_now.lock().unwrap().push((id, vehicle, false));
                        let done = Request::Complete {
                            vehicle: vehicle.to_string(),
                            time_ms: NO_TIME,
                            stop: id.to_string(),
                            proof: WireProof::default(),
                        };
                        if id.is_multiple_of(3) && call(done).await {
                            acked_now.lock().unwrap().push((id, vehicle, true));
                        }
                    }
                });
            }
            // Events until the server is gone (the stream then fails, or
            // goes quiet).
            let until = tokio::time::Instant::now() + kill_after + Duration::from_millis(600);
            let _ = tokio::time::timeout_at(until, async {
                collect(&mut live, Duration::from_secs(5), &mut seen).await
            })
            .await;
            while dispatchers.join_next().await.is_some() {}
            killer.join().unwrap();
            next_id = next.load(Relaxed);
            for (id, vehicle, completed) in acked_now.lock().unwrap().drain(..) {
                let e = acked.entry(id).or_insert((vehicle, completed));
                e.1 |= completed;
            }
        });
        s.kill9();
        let _ = pusher.kill();
        let _ = pusher.wait();
    }
    assert!(
        acked.len() > 20 * rounds / 2,
        "{} commands acknowledged",
        acked.len()
    );
    // A last start checks the last round.
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let c = s.admin().await;
        for (&id, &(vehicle, completed)) in &acked {
            let Ok(Response::Stop(view)) = c
                .call(&Request::GetStop {
                    stop: id.to_string(),
                })
                .await
            else {
                panic!("acknowledged stop {id} lost")
            };
            assert_eq!(view.vehicle, vehicle.to_string());
            if completed {
                assert_eq!(view.status, StopStatusCode::Completed);
            }
        }
    });
}

/// A stop closed longer ago than the engine keeps closed stops is answered
/// from the store's record: its outcome, note and what was planned. With no
/// store the engine has forgotten it (the check that the fallback is what
/// answers).
#[test]
fn stops_closed_long_ago_are_answered_from_the_store() {
    let dir = tmpdir("dur-archive");
    let (_, stops) = simulate(&dir, 2, 600);
    let point = road_points(&stops)[0];
    // Closed at this (event) time, an hour before the server's clock.
    let closed_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000;
    for store in [false, true] {
        let extra = if store {
            ""
        } else {
            "[store]\nenabled = false\n"
        };
        let s = serve(&dir, "closed_retention_s = 60\n", extra);
        rt().block_on(async {
            let c = s.admin().await;
            let mut plan = stop(42, point);
            plan.window_end_ms = closed_ms + 600_000;
            c.call(&Request::AddStop {
                vehicle: 7.to_string(),
                time_ms: closed_ms - 60_000,
                index: AT_END,
                stop: plan.clone(),
            })
            .await
            .unwrap();
            let proof = WireProof {
                note: "signed by J. Doe".into(),
                ..WireProof::default()
            };
            c.call(&Request::Complete {
                vehicle: 7.to_string(),
                time_ms: closed_ms,
                stop: 42.to_string(),
                proof,
            })
            .await
            .unwrap();
            // A ping gives the server its event time (now); the next ticks
            // drop the stop, closed an hour before, from memory.
            let mut ping_client = s.admin().await;
            bind_numbers(&ping_client, &[7]).await;
            let _acks = ping_client.take_control();
            let mut pings = ping_client.ping_stream().await.unwrap();
            let now = ping_at(7, closed_ms + 3_590_000, point);
            pings.send(1, &[now]).await.unwrap();
            eventually("the engine to forget the stop", async || {
                let r = c
                    .request(&Request::GetStop {
                        stop: 42.to_string(),
                    })
                    .await
                    .unwrap();
                match r {
                    Response::Stop(v) => {
                        store && v.lat_e7 == plan.lat_e7 && {
                            // Answered by the store once the engine forgot it:
                            // the same record as the engine's.
                            assert_eq!(v.vehicle, "7");
                            assert_eq!(v.status, StopStatusCode::Completed);
                            assert_eq!(v.closed_ms, closed_ms);
                            assert_eq!(v.outcome_text, "signed by J. Doe");
                            assert_eq!(v.customer_ref, plan.customer_ref);
                            assert_eq!(v.window_end_ms, plan.window_end_ms);
                            s.stats().await["engine_stops_forgotten"] > 0
                        }
                    }
                    Response::Error { .. } => !store,
                    other => panic!("{other:?}"),
                }
            })
            .await;
        });
    }
}
