//! Fleets as tenants, over protocol version 2 against the real `lastmile
//! serve`: each fleet names its vehicles and stops with its own strings,
//! two fleets may use the same names without meeting, every request and
//! command about a name only another fleet has answers exactly as about a
//! name nobody has, and the names survive a crash. And a new user's path:
//! the ids of their own CSVs work from `assign` to `eta`.

mod common;

use std::time::Duration;

use common::server::{
    HERE, ServerExt, T0_MS, eventually, ping_at, planned as stop, rt, serve, simulate,
};
use common::{lastmile, stdout, tmpdir};
use lastmile_ingest::client::{Client, Control, ServerError};
use lastmile_ingest::protocol::{
    AT_END, ErrorCode, FROM_NOW, NO_TIME, PingRecord, Request, Response, WireProof, WireStopView,
    WireVehicle,
};

/// Pings of the vehicle a connection bound to alias 0.
fn pings(from_s: i64, n: i64) -> Vec<PingRecord> {
    (from_s..from_s + n)
        .map(|k| ping_at(0, T0_MS + k * 1000, HERE))
        .collect()
}

async fn connect(s: &common::server::Server, token: &str) -> Client {
    Client::connect(&s.target(token)).await.unwrap()
}

async fn reader_of_acme(s: &common::server::Server) -> Client {
    connect(s, "acme-reader-token-000001").await
}

async fn get_stop(c: &Client, name: &str) -> WireStopView {
    match c
        .call(&Request::GetStop { stop: name.into() })
        .await
        .unwrap()
    {
        Response::Stop(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn get_vehicle(c: &Client, name: &str) -> WireVehicle {
    match c
        .call(&Request::GetVehicle {
            vehicle: name.into(),
        })
        .await
        .unwrap()
    {
        Response::Vehicle(v) => v,
        other => panic!("{other:?}"),
    }
}

/// The code and message of a refusal, with `name` written as NAME.
fn refusal(r: anyhow::Result<Response>, name: &str) -> String {
    match r {
        Ok(resp) => format!("ok {resp:?}"),
        Err(e) => {
            let se = e.downcast_ref::<ServerError>().expect("a server error");
            format!("{} {}", se.code, se.message.replace(name, "NAME"))
        }
    }
}

#[test]
fn two_fleets_use_the_same_names_without_meeting() {
    let dir = tmpdir("tenancy");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let acme = connect(&s, "acme-dispatcher-token-01").await;
        let globex = connect(&s, "globex-dispatcher-tok-01").await;
        assert_eq!(acme.welcome.version, 4);
        // The same vehicle and stop names in both fleets: two routes, no
        // `duplicate_stop`, each its own customer.
        for (c, who) in [(&acme, "acme"), (&globex, "globex")] {
            c.call(&Request::AssignRoute {
                vehicle: "van-1".into(),
                time_ms: NO_TIME,
                stops: vec![stop("order-17", who), stop("order-18", who)],
            })
            .await
            .unwrap();
        }
        for (c, who) in [(&acme, "acme"), (&globex, "globex")] {
            let v = get_stop(c, "order-17").await;
            assert_eq!((v.stop.as_str(), v.vehicle.as_str()), ("order-17", "van-1"));
            assert_eq!(v.customer_ref, who);
        }
        // Inside one fleet a name is still used once.
        let e = acme
            .call(&Request::AddStop {
                vehicle: "van-2".into(),
                time_ms: NO_TIME,
                index: AT_END,
                stop: stop("order-17", "again"),
            })
            .await
            .unwrap_err();
        let se = e.downcast_ref::<ServerError>().unwrap();
        assert!(
            se.code() == Some(ErrorCode::DuplicateStop) && se.message.contains("order-17"),
            "{se:?}"
        );

        // A device binds its van's name and reports: acme's van moves,
        // globex's does not.
        let mut device = connect(&s, "acme-device-token-000001").await;
        let mut control = device.take_control();
        device.bind(vec![(0, "van-1".into())]).await.unwrap();
        let mut st = device.ping_stream().await.unwrap();
        st.send(1, &pings(0, 5)).await.unwrap();
        let Control::Ack(a) = control.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!((a.accepted, a.rejected), (5, 0));
        // An alias nobody bound is refused, and the ERROR says so.
        st.send(2, &[ping_at(9, T0_MS + 9_000, HERE)])
            .await
            .unwrap();
        let Control::Ack(a) = control.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!((a.accepted, a.rejected), (0, 1));
        let Control::Error(e) = control.recv().await.unwrap() else {
            panic!()
        };
        assert!(e.message.starts_with("batch 2:") && e.message.contains("BIND"), "{}", e.message);
        eventually("acme's van placed", async || {
            matches!(acme.call(&Request::GetVehicle { vehicle: "van-1".into() }).await,
                Ok(Response::Vehicle(v)) if v.has_position)
        })
        .await;
        let g = get_vehicle(&globex, "van-1").await;
        assert!(!g.has_position, "globex's van-1 never reported");
        assert_eq!(g.stops[0].stop, "order-17");
        // Positions queries show each fleet its own van, by its name (the
        // live index is refreshed every tick).
        let nearest = Request::Nearest {
            lat_e7: HERE.0,
            lon_e7: HERE.1,
            k: 10,
        };
        eventually("acme's van indexed", async || {
            matches!(acme.call(&nearest).await,
                Ok(Response::Vehicles { found, .. }) if found.iter().map(|f| f.vehicle.as_str()).eq(["van-1"]))
        })
        .await;
        let Response::Vehicles { found, .. } = globex
            .call(&Request::Nearest {
                lat_e7: HERE.0,
                lon_e7: HERE.1,
                k: 10,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(found.is_empty(), "{found:?}");
        // Events name vehicles and stops as their fleet does.
        let mut sub = acme
            .subscribe(&Request::Subscribe {
                from: 0,
                kinds: 0,
                vehicles: vec!["van-1".into()],
                stops: vec![],
            })
            .await
            .unwrap();
        let Some(Response::Events(events)) =
            tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap()
                .unwrap()
        else {
            panic!()
        };
        assert!(events.iter().all(|e| e.vehicle == "van-1"));
        assert!(
            events
                .iter()
                .filter_map(|e| e.stop.as_deref())
                .all(|s| s.starts_with("order-"))
        );

        // Globex's van reports too; an unfiltered acme subscription hears
        // acme's vehicles only.
        let globex_device = connect(&s, "globex-device-token-0001").await;
        globex_device
            .bind(vec![(0, "globex-van".into())])
            .await
            .unwrap();
        let mut gst = globex_device.ping_stream().await.unwrap();
        gst.send(1, &pings(0, 5)).await.unwrap();
        eventually("globex's van placed", async || {
            let ask = Request::GetVehicle {
                vehicle: "globex-van".into(),
            };
            matches!(globex.call(&ask).await, Ok(Response::Vehicle(v)) if v.has_position)
        })
        .await;
        let mut everything = reader_of_acme(&s)
            .await
            .subscribe(&Request::Subscribe {
                from: 0,
                kinds: 0,
                vehicles: vec![],
                stops: vec![],
            })
            .await
            .unwrap();
        let mut heard = Vec::new();
        while let Ok(Ok(Some(Response::Events(evs)))) =
            tokio::time::timeout(Duration::from_millis(500), everything.next()).await
        {
            heard.extend(evs.into_iter().map(|e| e.vehicle));
        }
        assert!(!heard.is_empty());
        assert!(heard.iter().all(|v| v == "van-1"), "{heard:?}");

        // Every request and command naming something only globex has
        // answers as one naming something nobody has.
        globex
            .call(&Request::AssignRoute {
                vehicle: "globex-van".into(),
                time_ms: NO_TIME,
                stops: vec![stop("globex-order", "g"), stop("globex-done", "g")],
            })
            .await
            .unwrap();
        globex
            .call(&Request::Fail {
                vehicle: "globex-van".into(),
                time_ms: NO_TIME,
                stop: "globex-done".into(),
                reason: "closed".into(),
            })
            .await
            .unwrap();
        let reader = connect(&s, "acme-reader-token-000001").await;
        let asks = |vehicle: &str, stop: &str| {
            let (v, s) = (vehicle.to_string(), stop.to_string());
            vec![
                Request::GetVehicle { vehicle: v.clone() },
                Request::GetHistory {
                    vehicle: v.clone(),
                    from_ms: NO_TIME,
                    to_ms: NO_TIME,
                },
                Request::GetStop { stop: s.clone() },
                Request::CreateTrackingToken {
                    stop: s.clone(),
                    ttl_s: 600,
                },
                Request::Reassign {
                    stop: s.clone(),
                    to_vehicle: "van-1".into(),
                    time_ms: NO_TIME,
                    index: 0,
                },
                Request::RemoveStop {
                    vehicle: v.clone(),
                    time_ms: NO_TIME,
                    stop: "order-18".into(),
                },
                Request::RemoveStop {
                    vehicle: "van-1".into(),
                    time_ms: NO_TIME,
                    stop: s.clone(),
                },
                Request::Reorder {
                    vehicle: "van-1".into(),
                    time_ms: NO_TIME,
                    order: vec![s.clone(), "order-17".into(), "order-18".into()],
                },
                Request::Complete {
                    vehicle: v.clone(),
                    time_ms: NO_TIME,
                    stop: s.clone(),
                    proof: WireProof::default(),
                },
                Request::Fail {
                    vehicle: "van-1".into(),
                    time_ms: NO_TIME,
                    stop: s.clone(),
                    reason: "x".into(),
                },
            ]
        };
        for (who, c) in [("dispatcher", &acme), ("reader", &reader)] {
            for foreign_stop in ["globex-order", "globex-done"] {
                let theirs = asks("globex-van", foreign_stop);
                let nobodys = asks("nobody-van", "nobody-order");
                for (a, b) in theirs.into_iter().zip(nobodys) {
                    let x = refusal(c.call(&a).await, "globex-van").replace(foreign_stop, "NAME");
                    let y = refusal(c.call(&b).await, "nobody-van").replace("nobody-order", "NAME");
                    assert_eq!(x, y, "{who}: {a:?}");
                    assert!(!x.starts_with("ok"), "{who}: {a:?} answered");
                }
            }
            // A reader's subscription to a name only globex has.
            let sub = |v: &str| Request::Subscribe {
                from: FROM_NOW,
                kinds: 0,
                vehicles: vec![v.into()],
                stops: vec![],
            };
            if who == "reader" {
                let x = c.subscribe(&sub("globex-van")).await.err().unwrap();
                let y = c.subscribe(&sub("nobody-van")).await.err().unwrap();
                assert_eq!(
                    x.to_string().replace("globex-van", "NAME"),
                    y.to_string().replace("nobody-van", "NAME")
                );
            }
        }
        // Nothing of globex's changed.
        let v = get_stop(&globex, "globex-order").await;
        assert_eq!(v.vehicle, "globex-van");
        // The server's counters span every fleet: not a fleet token's to read.
        let e = acme.call(&Request::GetStats).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<ServerError>().unwrap().code(),
            Some(ErrorCode::Forbidden)
        );
        // Names are checked: too long, control characters, empty.
        for bad in ["", "a\tb", &"x".repeat(129)] {
            let e = acme
                .call(&Request::GetVehicle {
                    vehicle: bad.to_string(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.downcast_ref::<ServerError>().unwrap().code(),
                Some(ErrorCode::BadValue),
                "{bad:?}"
            );
        }
    });
    // The names are in the store, committed with the commands that made
    // them: after a crash (no checkpoint, no flush) each fleet still finds
    // its own.
    s.kill9();
    let s = serve(&dir, "", "");
    rt().block_on(async {
        for (token, who) in [
            ("acme-dispatcher-token-01", "acme"),
            ("globex-dispatcher-tok-01", "globex"),
        ] {
            let c = connect(&s, token).await;
            let v = get_stop(&c, "order-17").await;
            assert_eq!(
                (v.vehicle.as_str(), v.customer_ref.as_str()),
                ("van-1", who)
            );
            // A new name after the restart gets an id of its own.
            c.call(&Request::AddStop {
                vehicle: "van-1".into(),
                time_ms: NO_TIME,
                index: AT_END,
                stop: stop("order-19", who),
            })
            .await
            .unwrap();
            // (The vehicle's snapshot has it once its shard applied it.)
            eventually("the new stop on the route", async || {
                let v = get_vehicle(&c, "van-1").await;
                v.stops
                    .iter()
                    .map(|s| s.stop.as_str())
                    .eq(["order-17", "order-18", "order-19"])
            })
            .await;
        }
    });
}

/// As a new user tries it: simulate a day with its stops CSV, `assign` the
/// CSV, ask `eta` about a stop and a vehicle by the ids the CSV gives them,
/// replay the trace (the same vehicle ids), and ask again.
#[test]
fn the_ids_of_a_users_csvs_work_from_assign_to_eta() {
    let dir = tmpdir("tenancy-user-path");
    let (trace, stops) = simulate(&dir, 3, 900);
    let s = serve(&dir, "", "");
    let o = lastmile(&s.cli(&["assign", stops.to_str().unwrap()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eta = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["eta", "--json"];
        a.extend_from_slice(args);
        let o = lastmile(&s.cli(&a));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(stdout(&o).trim()).unwrap()
    };
    let stop = eta(&["--stop", "veh-00000-s000"]);
    assert_eq!(stop["stop"], "veh-00000-s000");
    assert_eq!(stop["vehicle"], "veh-00000");
    assert_eq!(stop["status"], "next");
    let vehicle = eta(&["--vehicle", "veh-00001"]);
    assert_eq!(vehicle["stops"][0]["stop"], "veh-00001-s000");
    assert!(vehicle["position"].is_null(), "no ping yet");
    // The trace names the same vehicles: their pings reach the routes.
    let o = lastmile(&s.cli(&["replay", trace.to_str().unwrap()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    rt().block_on(eventually("every ping processed", async || {
        let st = s.stats().await;
        st["engine_pings_processed"] == st["pings_accepted"]
    }));
    let vehicle = eta(&["--vehicle", "veh-00001"]);
    assert!(vehicle["position"].is_array(), "{vehicle}");
    let stop = eta(&["--stop", "veh-00001-s000"]);
    assert_eq!(stop["eta_state"], "known", "{stop}");
    // Ids the CSV does not have are refused as such, with their own text.
    let o = lastmile(&s.cli(&["eta", "--stop", "veh-00099-s000"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no stop veh-00099-s000"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
