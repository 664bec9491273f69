//! Hostile input against the real `lastmile serve` on loopback: every class
//! of unusable ping is refused and counted by reason while its batch's good
//! records are applied; a source address guessing tokens is slowed to a few
//! tries a minute; one address cannot take all the connections.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::{ServerExt, T0_MS, bind_numbers, eventually, ping, rt, serve};
use common::tmpdir;
use lastmile_ingest::client::{Client, Control, ServerError};
use lastmile_ingest::protocol::{ErrorCode, PingRecord, Request, Response};

/// One record of each refused class, with the counter that must move.
fn hostile(vehicle: u64) -> Vec<(PingRecord, &'static str)> {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let with = |f: &dyn Fn(&mut PingRecord)| {
        let mut p = ping(vehicle, 20);
        f(&mut p);
        p
    };
    vec![
        (with(&|p| p.lat_e7 = 900_000_001), "position"),
        (with(&|p| p.lon_e7 = i32::MIN), "position"),
        (with(&|p| p.time_ms = 0), "time"),
        (with(&|p| p.time_ms = -5), "time"),
        // 1990: a device clock never set.
        (with(&|p| p.time_ms = 631_152_000_000), "time"),
        (with(&|p| p.time_ms = wall_ms + 3_600_000), "future"),
        (with(&|p| p.time_ms = i64::MAX), "future"),
        // Two days behind the latest accepted ping.
        (with(&|p| p.time_ms = T0_MS - 2 * 86_400_000), "past"),
        // 200 m/s.
        (with(&|p| p.speed_cms = 20_000), "speed"),
        (with(&|p| p.heading_cdeg = 36_000), "field"),
        (with(&|p| p.flags = 4), "field"),
    ]
}

fn rejected_counters(st: &std::collections::HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = st
        .iter()
        .filter(|(k, _)| k.starts_with("pings_rejected_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    v.sort();
    v
}

#[test]
fn every_class_of_bad_ping_is_refused_and_counted_by_reason() {
    let dir = tmpdir("hostile-pings");
    let s = serve(&dir, "", "");
    rt().block_on(async {
        let mut c = s.admin().await;
        bind_numbers(&c, &[30]).await;
        let mut control = c.take_control();
        let mut st = c.ping_stream().await.unwrap();
        // Good pings first: they set the event-time watermark.
        st.send(1, &[ping(30, 0), ping(30, 10)]).await.unwrap();
        let next = async |rx: &mut tokio::sync::mpsc::Receiver<Control>| {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap()
        };
        assert!(matches!(next(&mut control).await, Control::Ack(a) if a.accepted == 2));
        // A batch mixing every refused class with one good ping.
        let bad = hostile(30);
        let mut batch: Vec<PingRecord> = bad.iter().map(|(p, _)| *p).collect();
        batch.push(ping(30, 30));
        st.send(2, &batch).await.unwrap();
        let Control::Ack(a) = next(&mut control).await else {
            panic!("expected an ACK")
        };
        assert_eq!((a.accepted, a.rejected), (1, bad.len() as u32));
        // The same records as datagrams: refused and counted the same way.
        c.send_datagram(&bad.iter().map(|(p, _)| *p).collect::<Vec<_>>())
            .await
            .unwrap();
        let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, reason) in &bad {
            *expected
                .entry(format!("pings_rejected_{reason}"))
                .or_default() += 2;
        }
        let want: Vec<(String, u64)> = expected.into_iter().collect();
        eventually("datagram counted", async || {
            s.stats().await["pings_invalid"] == 2 * bad.len() as u64
        })
        .await;
        let stats = s.stats().await;
        assert_eq!(rejected_counters(&stats), want);
        // Only the good pings reached the vehicle.
        eventually("good pings processed", async || {
            s.stats().await["engine_pings_processed"] == 3
        })
        .await;
        let Response::Vehicle(v) = c
            .call(&Request::GetVehicle {
                vehicle: 30.to_string(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(v.time_ms, T0_MS + 30_000);
    });
}

#[test]
fn token_guessing_is_slowed_per_address_and_locks_no_one_out() {
    let dir = tmpdir("hostile-tokens");
    let s = serve(
        &dir,
        "",
        "[limits]\nauth_failures_burst = 3\nauth_failures_per_minute = 20\n",
    );
    rt().block_on(async {
        let code = |e: &anyhow::Error| e.downcast_ref::<ServerError>().and_then(ServerError::code);
        // A depot's device got in from this address before the guessing.
        let device = "acme-device-token-000001";
        drop(Client::connect(&s.target(device)).await.unwrap());
        for i in 0..4 {
            let e = Client::connect(&s.target(&format!("guess-{i}")))
                .await
                .err()
                .expect("a wrong token is refused");
            assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e:#}");
        }
        // The bucket is full. The device's token still gets in at once ...
        let t = std::time::Instant::now();
        drop(Client::connect(&s.target(device)).await.unwrap());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // ... a token new to this address waits for its slot (one check
        // every 3 s), then gets in: slowed, not locked out ...
        let t = std::time::Instant::now();
        let c = s.admin().await;
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // ... and a guess waits behind it.
        let t = std::time::Instant::now();
        let e = Client::connect(&s.target("guess-9")).await.err().unwrap();
        assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e:#}");
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        let Response::Stats(st) = c.call(&Request::GetStats).await.unwrap() else {
            panic!()
        };
        let st: std::collections::HashMap<String, u64> = st.into_iter().collect();
        assert_eq!(st["auth_failures"], 5, "{st:?}");
        assert!(st["auth_checks_delayed"] >= 2, "{st:?}");
        assert!(
            st["retries_sent"] >= 1,
            "suspicious addresses prove themselves: {st:?}"
        );
        assert_eq!(st["connections_refused_auth"], 0, "{st:?}");
    });
}

#[test]
fn one_address_cannot_take_every_connection() {
    let dir = tmpdir("hostile-conns");
    let s = serve(&dir, "", "[limits]\nmax_connections_per_address = 3\n");
    rt().block_on(async {
        let held = [s.admin().await, s.admin().await, s.admin().await];
        assert!(
            Client::connect(&s.target(&s.token)).await.is_err(),
            "a fourth connection from the same address"
        );
        held[0].close();
        // Its slot comes back once the server has seen it close.
        eventually("slot freed", async || {
            Client::connect(&s.target(&s.token)).await.is_ok()
        })
        .await;
        let Response::Stats(st) = held[1].call(&Request::GetStats).await.unwrap() else {
            panic!()
        };
        let refused = st
            .iter()
            .find(|(k, _)| k == "connections_refused_address")
            .map(|(_, v)| *v);
        assert!(refused >= Some(1), "{st:?}");
    });
}
