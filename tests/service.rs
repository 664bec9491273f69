//! End-to-end tests of `lastmile serve` on loopback: the real binary as the
//! server; the CLI and the Rust client library as clients. Each test starts
//! its own server (one shard, a small synthetic town) and checks both what
//! the client saw and the server's own counters.

mod common;

use std::time::{Duration, Instant};

use common::server::{
    ServerExt, T0_MS, bind_numbers, eventually, ping, rt, serve, serve_with, simulate, veh,
};
use common::{lastmile, stdout, tmpdir};
use lastmile_ingest::client::{Client, Control, ServerError};
use lastmile_ingest::protocol::{
    ErrorCode, FROM_NOW, FrameType, Hello, NO_TIME, PingBatch, PingRecord, Request, Response,
    VERSION, Version, WireStop, write_frame,
};
use lastmile_ingest::tls::Trust;
use serde_json::json;

fn code_of(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<ServerError>().and_then(ServerError::code)
}

async fn next_control(rx: &mut tokio::sync::mpsc::Receiver<Control>) -> Control {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("control frame in time")
        .expect("control open")
}

#[test]
fn a_replayed_day_gives_etas_and_an_expected_late_event() {
    let dir = tmpdir("svc-day");
    let (trace, stops) = simulate(&dir, 30, 1800);
    let s = serve(&dir, "", "");
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--stops",
        stops.to_str().unwrap(),
        "--connections",
        "3",
        "--json",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let pings = std::fs::read_to_string(&trace).unwrap().lines().count() as u64 - 1;
    assert_eq!(r["sent"], pings);
    assert_eq!(r["accepted"], pings, "{r}");
    assert_eq!(r["shed"], 0);
    assert_eq!(r["routes_assigned"], 30);
    assert!(r["ack_p99_us"].as_f64().unwrap() > 0.0);

    rt().block_on(async {
        let c = s.admin().await;
        eventually("every ping processed", async || {
            let st = s.stats().await;
            st["engine_pings_processed"] == pings
        })
        .await;
        // Every vehicle has a position; those with open stops have ETAs
        // after the vehicle's last ping.
        let mut with_eta = 0;
        for v in 0..30u64 {
            let Response::Vehicle(snap) = c
                .call(&Request::GetVehicle { vehicle: veh(v) })
                .await
                .unwrap()
            else {
                panic!()
            };
            assert!(snap.has_position, "vehicle {v}");
            for st in snap.stops.iter().filter(|st| st.status as u8 <= 1) {
                assert!(
                    st.eta.eta_ms >= snap.time_ms - 1000,
                    "vehicle {v} stop {}: eta before now",
                    st.stop
                );
                with_eta += 1;
            }
        }
        assert!(with_eta > 0, "no remaining stop has an ETA");

        // A stop promised by now, kilometres away: `late` at once (no wait
        // to confirm it: the window has run out).
        let Response::Vehicle(v3) = c
            .call(&Request::GetVehicle { vehicle: veh(3) })
            .await
            .unwrap()
        else {
            panic!()
        };
        let mut sub = c
            .subscribe(&Request::Subscribe {
                from: FROM_NOW,
                kinds: 1 << 2,
                vehicles: vec![veh(3)],
                stops: vec![],
            })
            .await
            .unwrap();
        let far = WireStop {
            id: 999_001.to_string(),
            lat_e7: v3.lat_e7 + 200_000 * if v3.lat_e7 > 470_000_000 { -1 } else { 1 },
            lon_e7: v3.lon_e7,
            window_start_ms: v3.time_ms - 60_000,
            window_end_ms: v3.time_ms,
            service_s: 60.0,
            customer_ref: "late-order".into(),
        };
        c.call(&Request::AssignRoute {
            vehicle: veh(3),
            time_ms: v3.time_ms,
            stops: vec![far],
        })
        .await
        .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("late event in time")
            .unwrap()
            .unwrap();
        let Response::Events(evs) = frame else {
            panic!("{frame:?}")
        };
        assert_eq!(evs[0].kind, 2, "late");
        assert_eq!(evs[0].stop.as_deref(), Some("999001"));
        assert!(evs[0].value > evs[0].reference, "ETA after window end");

        // The stop's own view says so too, and the CLI reads it.
        let Response::Stop(view) = c
            .call(&Request::GetStop {
                stop: 999_001.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(view.late && view.eta.eta_ms > view.window_end_ms);
        assert_eq!(view.customer_ref, "late-order");
    });
    let o = lastmile(&s.cli(&["eta", "--stop", "999001", "--json"]));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["late"], true);
    // The user's own ids, as the CSVs name them: a stop of the stops CSV
    // and a vehicle of the trace.
    let o = lastmile(&s.cli(&["eta", "--stop", "veh-00004-s000", "--json"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (&v["stop"], &v["vehicle"]),
        (&json!("veh-00004-s000"), &json!("veh-00004"))
    );
    assert!(v["eta_state"].is_string(), "{v}");
    let o = lastmile(&s.cli(&["eta", "--vehicle", "veh-00004", "--json"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["vehicle"], "veh-00004");
    assert_eq!(v["stops"][0]["stop"], "veh-00004-s000");
    let o = lastmile(&s.cli(&[
        "watch", "--from", "0", "--kind", "late", "--count", "1", "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["kind"], "late");
}

#[test]
fn wrong_tokens_are_refused_with_a_code_and_counted() {
    let dir = tmpdir("svc-auth");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        for bad in [
            "",
            "nope",
            "acme-device-token-000002",
            &format!("{}x", s.token),
        ] {
            let e = Client::connect(&s.target(bad))
                .await
                .err()
                .expect("refused");
            assert_eq!(code_of(&e), Some(ErrorCode::Unauthenticated), "{e:#}");
        }
        // Pinning: a server with another certificate is not trusted.
        let mut t = s.target(&s.token);
        t.trust = Trust::Pin("00".repeat(32));
        assert!(Client::connect(&t).await.is_err());
        let st = s.stats().await;
        assert_eq!(st["auth_failures"], 4);
    });
    let o = lastmile(&[
        "eta",
        "--vehicle",
        "1",
        "--server",
        &s.addr,
        "--fingerprint",
        &s.fingerprint,
        "--token",
        "wrong",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unauthenticated"));
}

/// Roles and fleets on protocol version 1: numeric ids, a fleet's numbers
/// in its configured ranges are its vehicles, and any other number is a
/// name of its own (never another fleet's vehicle of that number).
#[test]
fn roles_and_fleets_scope_every_request_in_version_1() {
    let dir = tmpdir("svc-scope");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let device = Client::connect(&s.target_v1("acme-device-token-000001"))
            .await
            .unwrap();
        let reader = Client::connect(&s.target_v1("acme-reader-token-000001"))
            .await
            .unwrap();
        let dispatcher = Client::connect(&s.target_v1("acme-dispatcher-token-01"))
            .await
            .unwrap();
        assert_eq!(dispatcher.welcome.fleet, "acme");
        assert_eq!(dispatcher.welcome.version, 1);

        // A device sending for another fleet's vehicle (a number acme has
        // not named): that record refused and counted, its own accepted.
        let mut device = device;
        let mut control = device.take_control();
        let mut st = device.ping_stream().await.unwrap();
        st.send(7, &[ping(5, 0), ping(1500, 0), ping(6, 0)])
            .await
            .unwrap();
        let Control::Ack(ack) = next_control(&mut control).await else {
            panic!()
        };
        assert_eq!((ack.batch_id, ack.accepted, ack.rejected), (7, 2, 1));
        let Control::Error(err) = next_control(&mut control).await else {
            panic!()
        };
        assert_eq!(err.code(), Some(ErrorCode::Forbidden));
        assert!(err.message.contains("1500"), "{}", err.message);

        let forbidden = |r: anyhow::Result<Response>| {
            assert_eq!(
                code_of(&r.expect_err("refused")),
                Some(ErrorCode::Forbidden)
            )
        };
        forbidden(
            device
                .call(&Request::GetVehicle {
                    vehicle: 5.to_string(),
                })
                .await,
        );
        // Globex's 1500 is, to acme, a vehicle that does not exist.
        let e = reader
            .call(&Request::GetVehicle {
                vehicle: 1500.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), Some(ErrorCode::NotFound));
        assert!(e.to_string().contains("no vehicle 1500"), "{e:#}");
        let stop = WireStop {
            id: 42.to_string(),
            lat_e7: 470_000_000,
            lon_e7: 80_000_000,
            window_start_ms: NO_TIME,
            window_end_ms: NO_TIME,
            service_s: 60.0,
            customer_ref: String::new(),
        };
        forbidden(
            reader
                .call(&Request::AssignRoute {
                    vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    stops: vec![stop.clone()],
                })
                .await,
        );
        assert!(
            reader
                .subscribe(&Request::Subscribe {
                    from: FROM_NOW,
                    kinds: 0,
                    vehicles: vec![1500.to_string()],
                    stops: vec![]
                })
                .await
                .is_err()
        );
        // A route for "1500" in acme is a vehicle of acme's own.
        dispatcher
            .call(&Request::AssignRoute {
                vehicle: 1500.to_string(),
                time_ms: NO_TIME,
                stops: vec![WireStop {
                    id: 41.to_string(),
                    ..stop.clone()
                }],
            })
            .await
            .unwrap();
        // (Its snapshot exists once its shard applied the route.)
        eventually("acme's own 1500", async || {
            let ask = Request::GetVehicle {
                vehicle: 1500.to_string(),
            };
            matches!(dispatcher.call(&ask).await,
                Ok(Response::Vehicle(own)) if own.vehicle == "1500" && own.stops.len() == 1)
        })
        .await;

        // Readers see their own vehicles only (acme's 1500 has no position yet).
        eventually("vehicle 5 known", async || {
            reader
                .call(&Request::GetVehicle {
                    vehicle: 5.to_string(),
                })
                .await
                .is_ok()
        })
        .await;
        let all_of_it = Request::InBox {
            min_lat_e7: -900_000_000,
            min_lon_e7: -1_800_000_000,
            max_lat_e7: 900_000_000,
            max_lon_e7: 1_800_000_000,
        };
        // The admin's device adds a globex vehicle; the acme reader must not see it.
        let admin = s.admin().await;
        bind_numbers(&admin, &[1500]).await;
        let mut adm_stream = admin.ping_stream().await.unwrap();
        adm_stream.send(1, &[ping(1500, 0)]).await.unwrap();
        eventually("both fleets indexed", async || {
            match admin.call(&all_of_it).await {
                Ok(Response::Vehicles { found, .. }) => found.len() == 3,
                _ => false,
            }
        })
        .await;
        let Response::Vehicles { found, .. } = reader.call(&all_of_it).await.unwrap() else {
            panic!()
        };
        let mut seen: Vec<u64> = found.iter().map(|f| f.vehicle.parse().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![5, 6]);
        let Response::Vehicles { found, .. } = reader
            .call(&Request::Nearest {
                lat_e7: 470_000_000,
                lon_e7: 80_000_000,
                k: 3,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(
            found
                .iter()
                .all(|f| f.vehicle.parse::<u64>().unwrap() < 1000)
                && found.len() == 2
        );

        // A dispatcher's stop, and a customer's tracking token for it.
        dispatcher
            .call(&Request::AssignRoute {
                vehicle: 5.to_string(),
                time_ms: NO_TIME,
                stops: vec![
                    stop.clone(),
                    WireStop {
                        id: 43.to_string(),
                        ..stop.clone()
                    },
                ],
            })
            .await
            .unwrap();
        let Response::TrackingToken { token, .. } = dispatcher
            .call(&Request::CreateTrackingToken {
                stop: 42.to_string(),
                ttl_s: 3600,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        let customer = Client::connect(&s.target(&token)).await.unwrap();
        let Response::Stop(view) = customer
            .call(&Request::GetStop {
                stop: 42.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(view.vehicle, "5");
        forbidden(
            customer
                .call(&Request::GetStop {
                    stop: 43.to_string(),
                })
                .await,
        );
        forbidden(
            customer
                .call(&Request::GetVehicle {
                    vehicle: 5.to_string(),
                })
                .await,
        );
        forbidden(
            customer
                .call(&Request::Nearest {
                    lat_e7: 470_000_000,
                    lon_e7: 80_000_000,
                    k: 5,
                })
                .await,
        );
        assert!(
            customer
                .subscribe(&Request::Subscribe {
                    from: FROM_NOW,
                    kinds: 0,
                    vehicles: vec![],
                    stops: vec![42.to_string()]
                })
                .await
                .is_ok()
        );

        // Command errors carry their own codes.
        let e = dispatcher
            .call(&Request::RemoveStop {
                vehicle: 5.to_string(),
                time_ms: NO_TIME,
                stop: 77.to_string(),
            })
            .await
            .err()
            .unwrap();
        assert_eq!(code_of(&e), Some(ErrorCode::UnknownStop));
        let e = dispatcher
            .call(&Request::AddStop {
                vehicle: 5.to_string(),
                time_ms: NO_TIME,
                index: 0,
                stop: WireStop {
                    lat_e7: 950_000_000,
                    ..stop.clone()
                },
            })
            .await
            .err()
            .unwrap();
        assert_eq!(code_of(&e), Some(ErrorCode::BadValue));

        let st = s.stats().await;
        assert_eq!(st["pings_out_of_scope"], 1);
        assert!(st["forbidden"] >= 6, "{st:?}");
    });
}

#[test]
fn another_fleets_stops_answer_exactly_as_missing_ones() {
    let dir = tmpdir("svc-leaks");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let acme = Client::connect(&s.target("acme-dispatcher-token-01"))
            .await
            .unwrap();
        let reader = Client::connect(&s.target("acme-reader-token-000001"))
            .await
            .unwrap();
        let globex = Client::connect(&s.target("globex-dispatcher-tok-01"))
            .await
            .unwrap();
        let stop = |id| WireStop {
            id,
            lat_e7: 470_000_000,
            lon_e7: 80_000_000,
            window_start_ms: NO_TIME,
            window_end_ms: NO_TIME,
            service_s: 60.0,
            customer_ref: String::new(),
        };
        // Globex holds stops 500 (open) and 501 (closed); acme holds 42.
        globex
            .call(&Request::AssignRoute {
                vehicle: 1500.to_string(),
                time_ms: NO_TIME,
                stops: vec![stop(500.to_string()), stop(501.to_string())],
            })
            .await
            .unwrap();
        globex
            .call(&Request::Fail {
                vehicle: 1500.to_string(),
                time_ms: NO_TIME,
                stop: 501.to_string(),
                reason: "closed".into(),
            })
            .await
            .unwrap();
        acme.call(&Request::AssignRoute {
            vehicle: 5.to_string(),
            time_ms: NO_TIME,
            stops: vec![stop(42.to_string())],
        })
        .await
        .unwrap();
        // Every request and command that names a stop, about a foreign stop
        // and about one that exists nowhere: the same code, and the same
        // message but for the id.
        let asks = |id: u64| {
            vec![
                Request::GetStop {
                    stop: id.to_string(),
                },
                Request::CreateTrackingToken {
                    stop: id.to_string(),
                    ttl_s: 600,
                },
                Request::Reassign {
                    stop: id.to_string(),
                    to_vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    index: 0,
                },
                Request::RemoveStop {
                    vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    stop: id.to_string(),
                },
                Request::Complete {
                    vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    stop: id.to_string(),
                    proof: Default::default(),
                },
                Request::Fail {
                    vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    stop: id.to_string(),
                    reason: "x".into(),
                },
                Request::Reorder {
                    vehicle: 5.to_string(),
                    time_ms: NO_TIME,
                    order: vec![42.to_string(), id.to_string()],
                },
            ]
        };
        let answer = |r: anyhow::Result<Response>, id: u64| match r {
            Ok(resp) => format!("ok {resp:?}"),
            Err(e) => {
                let se = e.downcast_ref::<ServerError>().expect("a server error");
                format!("{} {}", se.code, se.message.replace(&id.to_string(), "ID"))
            }
        };
        for (who, client) in [("dispatcher", &acme), ("reader", &reader)] {
            for foreign in [500u64, 501] {
                let missing = 987_654;
                for (a, b) in asks(foreign).into_iter().zip(asks(missing)) {
                    let (x, y) = (
                        answer(client.call(&a).await, foreign),
                        answer(client.call(&b).await, missing),
                    );
                    assert_eq!(x, y, "{who}: {a:?}");
                    assert!(!x.contains("1500") && !x.contains("globex"), "{who}: {x}");
                }
            }
        }
        // Nothing of globex's changed.
        let Response::Stop(v) = globex
            .call(&Request::GetStop {
                stop: 500.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(v.vehicle, "1500");
    });
}

#[test]
fn malformed_frames_close_the_stream_or_connection_and_nothing_else() {
    let dir = tmpdir("svc-malformed");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let mut c = s.admin().await;
        bind_numbers(&c, &[10]).await;
        let mut control = c.take_control();
        // Accepted before the damage: must survive it.
        let mut good = c.ping_stream().await.unwrap();
        good.send(1, &[ping(10, 0), ping(10, 5)]).await.unwrap();
        assert!(matches!(next_control(&mut control).await, Control::Ack(a) if a.accepted == 2));

        // A PINGS frame whose count disagrees with its length.
        let mut frame = Vec::new();
        write_frame(&mut frame, FrameType::Pings, |w| PingBatch::encode(2, &[ping(11, 0)], w));
        frame[8 + 8] = 5;
        let mut st = c.ping_stream().await.unwrap();
        st.send_raw(&frame).await.unwrap();
        let Control::Error(e) = next_control(&mut control).await else { panic!() };
        assert_eq!(e.code(), Some(ErrorCode::Malformed));
        // Reserved header bits.
        let mut st = c.ping_stream().await.unwrap();
        st.send_raw(&[16, 0, 0, 0, 0x10, 0, 1, 0]).await.unwrap();
        let Control::Error(e) = next_control(&mut control).await else { panic!() };
        assert_eq!(e.code(), Some(ErrorCode::ProtocolViolation));
        // A frame above the limit on a request stream.
        let (mut send, mut recv) = c.connection().open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 2, 0x20, 0, 0, 0]).await.unwrap();
        let resp = recv.read_to_end(1 << 16).await.unwrap();
        let Response::Error { code, .. } = Response::decode(Version::LATEST, u16::from_le_bytes([resp[4], resp[5]]), &resp[8..]).unwrap() else { panic!() };
        assert_eq!(code, ErrorCode::FrameTooLarge as u16);
        // A request whose payload is cut short.
        let (mut send, mut recv) = c.connection().open_bi().await.unwrap();
        send.write_all(&[3, 0, 0, 0, 0x20, 0, 0, 0, 1, 2, 3]).await.unwrap();
        let resp = recv.read_to_end(1 << 16).await.unwrap();
        assert_eq!(u16::from_le_bytes([resp[8], resp[9]]), ErrorCode::Malformed as u16);
        // Garbage datagrams are dropped and counted.
        c.connection().send_datagram(vec![1u8, 2, 3].into()).unwrap();
        // The connection still works after all that.
        let mut good = c.ping_stream().await.unwrap();
        good.send(3, &[ping(10, 10)]).await.unwrap();
        assert!(matches!(next_control(&mut control).await, Control::Ack(a) if a.batch_id == 3 && a.accepted == 1));

        // A frame type that is not a request: protocol violation, the
        // connection is closed with that code.
        let (mut send, _recv) = c.connection().open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 0, 0x11, 0, 0, 0]).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(10), c.connection().closed()).await.unwrap();
        assert!(matches!(reason, lastmile_ingest::quinn::ConnectionError::ApplicationClosed(ref a) if a.error_code == (ErrorCode::ProtocolViolation as u32).into()), "{reason:?}");

        // A connection whose first frame is not HELLO.
        let ep = {
            let mut ep = lastmile_ingest::quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(lastmile_ingest::tls::client_config(&Trust::Pin(s.fingerprint.clone()), 1 << 20).unwrap());
            ep
        };
        let raw = ep.connect(s.addr.parse().unwrap(), "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        let mut buf = Vec::new();
        Request::GetStats.encode(Version::LATEST, &mut buf);
        send.write_all(&buf).await.unwrap();
        let resp = recv.read_to_end(1 << 16).await.unwrap();
        assert_eq!(u16::from_le_bytes([resp[8], resp[9]]), ErrorCode::ProtocolViolation as u16);

        // The server is up, counted everything, and lost nothing accepted.
        eventually("pings processed", async || s.stats().await["engine_pings_processed"] == 3).await;
        let st = s.stats().await;
        assert_eq!(st["pings_accepted"], 3);
        // Count mismatch, reserved bits, cut request, garbage datagram.
        assert_eq!(st["malformed_frames"], 4, "{st:?}");
        assert_eq!(st["oversized_frames"], 1);
        assert_eq!(st["protocol_violations"], 2);
        assert_eq!(st["datagrams_dropped"], 1);
        let Response::Vehicle(v) = s.admin().await.call(&Request::GetVehicle { vehicle: 10.to_string() }).await.unwrap() else { panic!() };
        assert_eq!(v.time_ms, T0_MS + 10_000);
    });
}

#[test]
fn every_pings_frame_is_acknowledged_and_frames_out_of_place_are_violations() {
    let dir = tmpdir("svc-conformance");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        // A role that may not send pings: an ACK per PINGS frame, all
        // rejected, and one ERROR naming the first batch.
        let mut reader = Client::connect(&s.target("acme-reader-token-000001"))
            .await
            .unwrap();
        let mut control = reader.take_control();
        let mut st = reader.ping_stream().await.unwrap();
        st.send(1, &[ping(5, 0), ping(5, 1)]).await.unwrap();
        st.send(2, &[ping(5, 2)]).await.unwrap();
        let mut acks = Vec::new();
        let mut errors = Vec::new();
        while acks.len() < 2 {
            match next_control(&mut control).await {
                Control::Ack(a) => acks.push((a.batch_id, a.accepted, a.rejected)),
                Control::Error(e) => errors.push(e),
            }
        }
        assert_eq!(acks, vec![(1, 0, 2), (2, 0, 1)]);
        let e = match errors.pop() {
            Some(e) => e,
            None => match next_control(&mut control).await {
                Control::Error(e) => e,
                other => panic!("{other:?}"),
            },
        };
        assert_eq!(e.code(), Some(ErrorCode::Forbidden));
        assert!(e.message.starts_with("batch 1:"), "{}", e.message);

        // A request frame cut off by the end of its stream: told so.
        let c = s.admin().await;
        let (mut send, mut recv) = c.connection().open_bi().await.unwrap();
        send.write_all(&[10, 0, 0, 0, 0x20, 0, 0, 0, 1, 2, 3]).await.unwrap();
        send.finish().unwrap();
        let resp = recv.read_to_end(1 << 16).await.unwrap();
        assert_eq!(u16::from_le_bytes([resp[8], resp[9]]), ErrorCode::Malformed as u16);

        // A ping stream reset in the middle of a frame is counted, as one
        // finished there is.
        let before = s.stats().await["partial_frames"];
        let mut frame = Vec::new();
        write_frame(&mut frame, FrameType::Pings, |w| PingBatch::encode(9, &[ping(6, 0)], w));
        let mut uni = c.connection().open_uni().await.unwrap();
        uni.write_all(&frame[..frame.len() - 5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        uni.reset(0u32.into()).unwrap();
        eventually("reset counted", async || s.stats().await["partial_frames"] == before + 1).await;

        // Anything after HELLO on the control stream closes the connection
        // as a protocol violation: a second HELLO, garbage, a 4 GB header.
        let hello = {
            let mut b = Vec::new();
            Hello { version: VERSION, token: s.token.clone() }.encode(&mut b);
            b
        };
        for extra in [hello.clone(), vec![1, 2, 3], vec![0xff, 0xff, 0xff, 0xff, 0x20, 0, 0, 0]] {
            let ep = {
                let mut ep = lastmile_ingest::quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
                ep.set_default_client_config(lastmile_ingest::tls::client_config(&Trust::Pin(s.fingerprint.clone()), 1 << 20).unwrap());
                ep
            };
            let raw = ep.connect(s.addr.parse().unwrap(), "localhost").unwrap().await.unwrap();
            let (mut send, mut recv) = raw.open_bi().await.unwrap();
            send.write_all(&hello).await.unwrap();
            let mut head = [0u8; 8];
            recv.read_exact(&mut head).await.unwrap();
            assert_eq!(u16::from_le_bytes([head[4], head[5]]), FrameType::Welcome as u16);
            send.write_all(&extra).await.unwrap();
            let reason = tokio::time::timeout(Duration::from_secs(10), raw.closed()).await.unwrap();
            assert!(matches!(reason, lastmile_ingest::quinn::ConnectionError::ApplicationClosed(ref a) if a.error_code == (ErrorCode::ProtocolViolation as u32).into()), "{reason:?}");
        }
        // Command times: 0 is the server's clock; negative or absurd
        // times are refused and change nothing.
        for time_ms in [-5, 1, i64::MAX, i64::MIN] {
            let e = c
                .call(&Request::Fail {
                    vehicle: 5.to_string(),
                    time_ms,
                    stop: 1.to_string(),
                    reason: "x".into(),
                })
                .await
                .err()
                .unwrap();
            assert_eq!(code_of(&e), Some(ErrorCode::BadValue), "{time_ms}: {e:#}");
        }

        // A subscription from beyond the log starts at its end and says so;
        // the next event reaches it.
        let mut sub = c
            .subscribe(&Request::Subscribe {
                from: 1_000_000,
                kinds: 0,
                vehicles: vec![],
                stops: vec![],
            })
            .await
            .unwrap();
        assert!(sub.next_id < 1_000_000, "next_id {}", sub.next_id);
        bind_numbers(&c, &[30]).await;
        let mut st = c.ping_stream().await.unwrap();
        st.send(5, &[ping(30, 0)]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event arrives")
            .unwrap();
        let Some(Response::Events(events)) = got else {
            panic!("{got:?}")
        };
        assert!(events[0].id >= sub.next_id);

        // NEAREST above its cap says the answer is cut.
        for (k, cut) in [(5, false), (5_000, true)] {
            let Response::Vehicles { truncated, .. } = c
                .call(&Request::Nearest {
                    lat_e7: 470_000_000,
                    lon_e7: 80_000_000,
                    k,
                })
                .await
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(truncated, cut, "k {k}");
        }

        let st = s.stats().await;
        assert_eq!(st["subscriptions_from_beyond"], 1, "{st:?}");
        assert_eq!(st["pings_forbidden"], 3, "{st:?}");
        assert_eq!(st["protocol_violations"], 3, "{st:?}");
    });
}

#[test]
fn a_client_gone_mid_batch_leaves_nothing_half_applied() {
    let dir = tmpdir("svc-midbatch");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let pings: Vec<PingRecord> = (0..500).map(|k| ping(20, k)).collect();
        let mut frame = Vec::new();
        write_frame(&mut frame, FrameType::Pings, |w| {
            PingBatch::encode(1, &pings, w)
        });
        // Stream finished mid-frame.
        let c = s.admin().await;
        bind_numbers(&c, &[20]).await;
        let mut st = c.ping_stream().await.unwrap();
        st.send_raw(&frame[..frame.len() / 2]).await.unwrap();
        st.finish().await.unwrap();
        // Connection dropped mid-frame.
        let c2 = s.admin().await;
        bind_numbers(&c2, &[21]).await;
        let mut st = c2.ping_stream().await.unwrap();
        let other: Vec<PingRecord> = (0..500).map(|k| ping(21, k)).collect();
        let mut frame2 = Vec::new();
        write_frame(&mut frame2, FrameType::Pings, |w| {
            PingBatch::encode(1, &other, w)
        });
        st.send_raw(&frame2[..frame2.len() - 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.connection().close(0u32.into(), b"gone");
        drop(c2);
        // A complete batch after both; once it is processed, the others
        // would have been too (one shard, in order).
        let mut c3 = s.admin().await;
        bind_numbers(&c3, &[22]).await;
        let mut control = c3.take_control();
        let mut st = c3.ping_stream().await.unwrap();
        st.send(9, &[ping(22, 0)]).await.unwrap();
        assert!(matches!(next_control(&mut control).await, Control::Ack(a) if a.accepted == 1));
        eventually("vehicle 22", async || {
            c3.call(&Request::GetVehicle {
                vehicle: 22.to_string(),
            })
            .await
            .is_ok()
        })
        .await;
        for v in [20, 21] {
            let e = c3
                .call(&Request::GetVehicle {
                    vehicle: v.to_string(),
                })
                .await
                .expect_err("never applied");
            assert_eq!(code_of(&e), Some(ErrorCode::NotFound));
        }
        let st = s.stats().await;
        assert_eq!(st["pings_received"], 1);
        // Both cut frames are counted: the FIN and the lost connection.
        assert_eq!(st["partial_frames"], 2);
    });
}

/// A 256-event ring, a subscriber with a 1 KB window that reads only after
/// a whole day was replayed, and a fast one: (slow read, slow lost, events
/// published, fast read, fast lost). The ring holds more than one shard's
/// batch publishes at once (the vehicles' first minute: every stop's
/// `out_for_delivery` together), which no subscriber could keep up with.
fn slow_subscriber(name: &str, store: bool) -> (u64, u64, u64, u64, u64) {
    let dir = tmpdir(name);
    let (trace, stops) = simulate(&dir, 30, 1800);
    let s = serve(
        &dir,
        "events_capacity = 256\n",
        &format!("[limits]\nevents_per_frame = 8\n[store]\nenabled = {store}\n"),
    );
    rt().block_on(async {
        let mut t = s.target(&s.token);
        t.stream_window = 1024;
        let everything = Request::Subscribe {
            from: FROM_NOW,
            kinds: 0,
            vehicles: vec![],
            stops: vec![],
        };
        let slow = Client::connect(&t).await.unwrap();
        let mut sub = slow.subscribe(&everything).await.unwrap();
        let fast = s.admin().await;
        let mut fast_sub = fast.subscribe(&everything).await.unwrap();
        let reader =
            tokio::spawn(async move { drain(&mut fast_sub, Duration::from_secs(3)).await });
        // Paced (about 3 s for the day): a subscriber that keeps up is one
        // that reads as events come, and as fast as possible on a loaded
        // two-core machine a burst could outrun the ring before its task
        // was scheduled at all.
        let o = lastmile(&s.cli(&[
            "replay",
            trace.to_str().unwrap(),
            "--stops",
            stops.to_str().unwrap(),
            "--rate",
            "20000",
            "--json",
        ]));
        assert!(o.status.success());
        eventually("engine done", async || {
            let st = s.stats().await;
            st["engine_pings_processed"] == st["pings_accepted"]
        })
        .await;
        let (got, lost) = drain(&mut sub, Duration::from_secs(2)).await;
        let (fast_got, fast_lost) = reader.await.unwrap();
        let total = s.stats().await["engine_events"];
        (got, lost, total, fast_got, fast_lost)
    })
}

#[test]
fn a_slow_subscriber_is_told_what_it_lost_and_hurts_no_one() {
    // From memory only: what left the ring is gone, and said to be.
    let (got, lost, total, fast_got, fast_lost) = slow_subscriber("svc-slowsub", false);
    assert!(total > 200, "{total} events");
    assert!(lost > 0, "the slow subscriber lost nothing ({got} read)");
    assert_eq!(
        got + lost,
        total,
        "every event either read or reported lost"
    );
    assert_eq!(
        (fast_got, fast_lost),
        (total, 0),
        "the fast subscriber saw everything"
    );
}

#[test]
fn with_a_store_a_slow_subscriber_misses_nothing() {
    // The same, durable: what left the ring is read from the event log.
    let (got, lost, total, fast_got, fast_lost) = slow_subscriber("svc-slowsub-store", true);
    assert!(total > 200, "{total} events");
    assert_eq!(
        (got, lost),
        (total, 0),
        "the slow subscriber read everything"
    );
    assert_eq!((fast_got, fast_lost), (total, 0));
}

/// Reads a subscription until it is quiet for `quiet`: (events read, events
/// reported lost).
async fn drain(sub: &mut lastmile_ingest::client::Subscription, quiet: Duration) -> (u64, u64) {
    let (mut got, mut lost) = (0u64, 0u64);
    while let Ok(Ok(Some(f))) = tokio::time::timeout(quiet, sub.next()).await {
        match f {
            Response::Events(e) => got += e.len() as u64,
            Response::Lost { count } => lost += count,
            other => panic!("{other:?}"),
        }
    }
    (got, lost)
}

#[test]
fn overload_is_shed_on_datagrams_pushed_back_on_streams_and_survived() {
    let dir = tmpdir("svc-overload");
    let (trace, _) = simulate(&dir, 200, 1800);
    let s = serve(&dir, "queue_capacity = 2\n", "");
    let pings = std::fs::read_to_string(&trace).unwrap().lines().count() as u64 - 1;
    // Datagrams as fast as possible over 4 connections: more than one
    // shard with a two-batch queue can take.
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--datagrams",
        "--connections",
        "4",
        "--json",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["sent"], pings);
    let (accepted, shed) = (r["accepted"].as_u64().unwrap(), r["shed"].as_u64().unwrap());
    assert!(shed > 0, "nothing shed: {r}");
    assert!(accepted + shed <= pings);
    // Streams: pushed back, nothing lost.
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--connections",
        "4",
        "--batch",
        "256",
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["accepted"], pings, "{r}");
    rt().block_on(async {
        let st = s.stats().await;
        assert!(st["backpressure_waits"] > 0, "{st:?}");
        assert_eq!(st["pings_shed"], shed);
        // Still answering.
        let c = s.admin().await;
        assert!(
            c.call(&Request::GetVehicle { vehicle: veh(1) })
                .await
                .is_ok()
        );
    });
}

#[test]
fn connections_idle_time_and_handshakes_are_bounded() {
    let dir = tmpdir("svc-limits");
    let s = serve(
        &dir,
        "",
        "[limits]\nmax_connections = 2\nmax_bidi_streams = 4\nidle_timeout_s = 3\nhello_timeout_s = 1\n",
    );
    rt().block_on(async {
        // A third connection is refused during the handshake.
        let a = s.admin().await;
        let b = s.admin().await;
        assert!(Client::connect(&s.target(&s.token)).await.is_err());
        b.close();
        drop(b);
        b_gone(&a).await;
        // Request streams per connection are capped (4 here, the control
        // stream included): a fifth concurrent one waits for a free slot.
        let mut open = Vec::new();
        for _ in 0..3 {
            let (mut send, recv) = a.connection().open_bi().await.unwrap();
            send.write_all(&[0]).await.unwrap();
            open.push((send, recv));
        }
        let fifth = tokio::time::timeout(Duration::from_millis(500), a.connection().open_bi()).await;
        assert!(fifth.is_err(), "a fifth concurrent stream was allowed");
        for (mut send, _) in open.drain(..) {
            send.reset(0u32.into()).unwrap();
        }
        // A connection that never says HELLO is closed with hello_timeout.
        let mut ep = lastmile_ingest::quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(lastmile_ingest::tls::client_config(&Trust::Pin(s.fingerprint.clone()), 1 << 20).unwrap());
        let silent = ep.connect(s.addr.parse().unwrap(), "localhost").unwrap().await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(10), silent.closed()).await.unwrap();
        assert!(
            matches!(reason, lastmile_ingest::quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == (ErrorCode::HelloTimeout as u32).into()),
            "{reason:?}"
        );
        // An idle connection is closed after idle_timeout (3 s; the
        // client's keep-alive is 10 s). The HELLO timeout (1 s) is shorter,
        // so the silent connection above was closed for the right reason.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert!(a.request(&Request::GetStats).await.is_err(), "idle connection still open");
        let st = s.stats().await;
        assert_eq!(st["connections_refused"], 1, "{st:?}");
        assert!(st["handshakes_failed"] >= 1, "{st:?}");
    });
}

/// Waits until the server has noticed a closed connection (its slot is free).
async fn b_gone(a: &Client) {
    let t = Instant::now();
    loop {
        if let Ok(Response::Stats(s)) = a.call(&Request::GetStats).await
            && s.iter().any(|(k, v)| k == "connections_open" && *v == 1)
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "closed connection never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP GET on the metrics port: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[test]
fn prometheus_metrics_and_health_are_served_and_move() {
    let dir = tmpdir("svc-metrics");
    let (trace, stops) = simulate(&dir, 10, 600);
    let s = serve_with(&dir, "", "", &["--metrics", "127.0.0.1:0"]);
    let m = s.metrics.clone().expect("metrics address printed");
    let (status, body) = http_get(&m, "/health");
    assert!(status.contains("200"), "{status}");
    let health: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["graph_loaded"], true);
    assert_eq!(health["shards_alive"], health["shards"]);

    let (status, before) = http_get(&m, "/metrics");
    assert!(status.contains("200"));
    assert!(
        before.contains("# TYPE lastmile_pings_accepted_total counter"),
        "{before}"
    );
    assert_eq!(metric(&before, "lastmile_up"), 1.0);
    assert_eq!(metric(&before, "lastmile_pings_accepted_total"), 0.0);
    let o = lastmile(&s.cli(&[
        "replay",
        trace.to_str().unwrap(),
        "--stops",
        stops.to_str().unwrap(),
        "--json",
    ]));
    assert!(o.status.success());
    let (_, after) = http_get(&m, "/metrics");
    let pings = std::fs::read_to_string(&trace).unwrap().lines().count() as f64 - 1.0;
    assert_eq!(metric(&after, "lastmile_pings_accepted_total"), pings);
    assert!(
        metric(&after, "lastmile_requests_total") >= 10.0,
        "routes assigned"
    );
    assert!(metric(&after, "lastmile_request_seconds_count") >= 10.0);
    assert!(metric(&after, "lastmile_engine_events_total") > 0.0);
    assert!(metric(&after, "lastmile_connections_accepted_total") >= 2.0);
    assert!(after.contains("# TYPE lastmile_process_rss_bytes gauge"));
    // Refused pings are one family, by reason.
    assert_eq!(
        after
            .matches("# TYPE lastmile_pings_rejected_total counter")
            .count(),
        1
    );
    for reason in ["position", "time", "future", "past", "speed", "field"] {
        let name = format!("lastmile_pings_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&after, &name), 0.0, "{reason}");
    }
    assert!(after.contains("lastmile_engine_queue_depth_pings "));
    // Matcher outcomes and events by kind are labelled families too; ETA
    // work is counted by cause.
    assert!(metric(&after, "lastmile_matcher_pings_total{status=\"matched\"}") > 0.0);
    assert!(after.contains("lastmile_matcher_pings_total{status=\"out_of_order\"} "));
    let arrived = metric(&after, "lastmile_events_total{kind=\"arrived\"}");
    assert!(arrived > 0.0, "arrivals counted");
    assert!(metric(&after, "lastmile_engine_leg_searches_total") > 0.0);
    assert!(after.contains("lastmile_engine_refreshes_total "));
    assert!(after.contains("lastmile_store_commit_p99_us "));
    assert!(metric(&after, "lastmile_journal_commands_total") >= 10.0);

    assert!(http_get(&m, "/nope").0.contains("404"));
    // Anything but a GET, and oversized requests, are refused without harm.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&m).unwrap();
        c.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut t = String::new();
        c.read_to_string(&mut t).unwrap();
        assert!(t.starts_with("HTTP/1.1 405"), "{t}");
        let mut c = std::net::TcpStream::connect(&m).unwrap();
        let _ = c.write_all(&vec![b'a'; 64 * 1024]);
        let mut t = String::new();
        let _ = c.read_to_string(&mut t);
        assert!(t.is_empty(), "an endless request line gets no answer");
    }
    assert!(http_get(&m, "/health").0.contains("200"), "still serving");
}
