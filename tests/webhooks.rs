//! Webhooks end to end: a real `lastmile serve` delivering to a receiver
//! that verifies every request with the Standard Webhooks reference
//! library (`tests/webhook_receiver.py`, `standardwebhooks` from PyPI), as a
//! customer's notification system would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::receiver::{Receiver, SECRET};
use common::server::{
    Server, ServerExt, collect, eventually, everything_from, rt, serve_with, simulate,
};
use common::{lastmile, tmpdir};
use serde_json::Value;

const ACME_DEVICE: &str = "acme-device-token-000001";
const ACME_DISPATCHER: &str = "acme-dispatcher-token-01";

/// Every event of the log, by id.
async fn log_ids(s: &Server) -> BTreeSet<u64> {
    let c = s.admin().await;
    let mut log = BTreeMap::new();
    let mut sub = c.subscribe(&everything_from(0)).await.unwrap();
    collect(&mut sub, Duration::from_millis(500), &mut log).await;
    c.close();
    log.into_keys().collect()
}

fn osmand_args() -> [&'static str; 4] {
    ["--http", "127.0.0.1:0", "--osmand", "127.0.0.1:0"]
}

const ANY_DEVICE: &str = "[[devices]]\nid = \"*\"\nfleet = \"acme\"\n";

/// A first position of vehicle `name` through the driver apps' door: an
/// `online` event.
fn report(s: &Server, name: &str, t: u64) {
    let url = format!(
        "{}/{ACME_DEVICE}?id={name}&lat=47.0&lon=8.0&timestamp={t}",
        s.osmand.as_ref().unwrap()
    );
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{url}");
}

/// A replayed day with routes, the server killed with SIGKILL halfway and
/// started again: every event of the log reaches the receiver, signed,
/// verified, first in the order of the log, at least once.
#[test]
fn every_event_is_delivered_signed_and_in_order_across_a_kill9() {
    let dir = tmpdir("hooks-kill9");
    let rx = Receiver::start(&dir);
    let (trace, stops) = simulate(&dir, 20, 900);
    // The day in two halves by time.
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let half = rows.len() / 2;
    let (a, b) = (dir.join("first.csv"), dir.join("second.csv"));
    std::fs::write(&a, format!("{header}\n{}\n", rows[..half].join("\n"))).unwrap();
    std::fs::write(&b, format!("{header}\n{}\n", rows[half..].join("\n"))).unwrap();
    let replay = |s: &Server, t: &Path| {
        let o = lastmile(&s.cli_as(&["replay", t.to_str().unwrap()], ACME_DEVICE));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let s = serve_with(&dir, "", &rx.config(""), &[]);
    let o = lastmile(&[
        "assign",
        stops.to_str().unwrap(),
        "--server",
        &s.addr,
        "--fingerprint",
        &s.fingerprint,
        "--token",
        ACME_DISPATCHER,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    replay(&s, &a);
    // Some events delivered, then SIGKILL while more may be on their way.
    rt().block_on(eventually("first deliveries", async || {
        !rx.records().is_empty()
    }));
    s.kill9();
    let s = serve_with(&dir, "", &rx.config(""), &[]);
    replay(&s, &b);
    rt().block_on(async {
        let log = log_ids(&s).await;
        assert!(log.len() > 100, "{} events in the log", log.len());
        eventually("every event delivered", async || {
            log.is_subset(&rx.delivered())
        })
        .await;
    });
    let records = rx.records();
    assert!(
        records.iter().all(|r| r["verified"] == true),
        "every request verifies"
    );
    // In order: each event's first delivery after the one before it.
    let mut first = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &records {
        let id = r["event_id"].as_u64().unwrap();
        if seen.insert(id) {
            first.push(id);
        }
        assert_eq!(
            r["webhook_id"],
            format!("evt_{id}"),
            "the id is the event's"
        );
        // Both secrets of the rotation sign.
        let sigs = r["headers"]["webhook-signature"].as_str().unwrap();
        assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    }
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "first deliveries in log order"
    );
    let kinds: BTreeSet<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(
        kinds.contains("arrived") && kinds.contains("online"),
        "{kinds:?}"
    );
}

/// The customer milestones of a simulated day (what the tests compare them with).
const MILESTONES: [&str; 6] = [
    "out_for_delivery",
    "next_stop",
    "arriving",
    "delivered",
    "failed_attempt",
    "rescheduled",
];

/// A replayed day whose drivers close their stops (`replay --drivers`),
/// delivered with eight requests in flight: the receiver gets every
/// customer milestone of the log, signed, each stop's in order (out for
/// delivery, next stop, arriving, then delivered or failed) with the
/// customer's reference, the ETA, the reason or the delivery note, and a tracking token that opens that stop's tracking
/// API and no other; the times agree with what the simulated drivers truly
/// did (never with the engine's own output).
#[test]
fn every_customer_milestone_of_a_replayed_day_reaches_the_receiver() {
    let dir = tmpdir("hooks-milestones");
    let rx = Receiver::start(&dir);
    let (trace, stops) = simulate(&dir, 8, 1800);
    // The shop's own order references, as a user's stops CSV has them.
    let text = std::fs::read_to_string(&stops).unwrap();
    let mut with_refs = String::new();
    for (i, line) in text.lines().enumerate() {
        let extra = match i {
            0 => "customer_ref".to_string(),
            _ => format!("order-{}", line.split(',').nth(1).unwrap()),
        };
        with_refs += &format!("{line},{extra}\n");
    }
    std::fs::write(&stops, with_refs).unwrap();
    // Several requests in flight: each vehicle's events (so each stop's
    // milestones) still in order.
    let kinds = format!("kinds = {MILESTONES:?}\nmax_in_flight = 8\n");
    let s = serve_with(&dir, "", &rx.config(&kinds), &["--http", "127.0.0.1:0"]);
    let (trace_s, stops_s) = (trace.to_str().unwrap(), stops.to_str().unwrap());
    let args = [
        "replay",
        trace_s,
        "--stops",
        stops_s,
        "--drivers",
        "--fail-every",
        "4",
        "--dispatch-token",
        ACME_DISPATCHER,
    ];
    let o = lastmile(&s.cli_as(&args, ACME_DEVICE));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("stops closed by their drivers"), "{out}");
    // Every milestone of the log delivered.
    rt().block_on(async {
        let c = s.admin().await;
        let mut log = BTreeMap::new();
        let mut sub = c.subscribe(&everything_from(0)).await.unwrap();
        collect(&mut sub, Duration::from_millis(500), &mut log).await;
        c.close();
        let want: BTreeSet<u64> = log
            .values()
            .filter(|e| (18..=23).contains(&e.kind))
            .map(|e| e.id)
            .collect();
        assert!(want.len() > 60, "{} milestones in the log", want.len());
        eventually("every milestone delivered", async || rx.delivered() == want).await;
    });
    // Each stop's milestones, first deliveries in order.
    let mut by_stop: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for r in rx.records() {
        assert_eq!(r["verified"], true);
        if seen.insert(r["event_id"].as_u64().unwrap()) {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            let stop = body["data"]["stop"].as_str().unwrap().to_string();
            by_stop.entry(stop).or_default().push(body);
        }
    }
    let last_ping: f64 = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.parse().ok())
        .fold(0.0, f64::max);
    let http = s.http.clone().unwrap();
    let mut reader = csv::Reader::from_path(&stops).unwrap();
    let (mut delivered, mut failed, mut reached) = (0, 0, 0);
    for rec in reader.records() {
        let rec = rec.unwrap();
        let (stop, service): (&str, f64) = (&rec[1], rec[7].parse().unwrap());
        let Ok(arrival) = rec[8].parse::<f64>() else {
            let got = by_stop
                .get(stop)
                .map_or(0, |m| m.iter().filter(|b| b["type"] == "delivered").count());
            assert_eq!(got, 0, "stop {stop} was never reached");
            continue;
        };
        reached += 1;
        let fails = reached % 4 == 0;
        let left = arrival + service;
        if left > last_ping {
            continue;
        }
        let m = &by_stop[stop];
        let names: Vec<&str> = m.iter().map(|b| b["type"].as_str().unwrap()).collect();
        let outcome = if fails { "failed_attempt" } else { "delivered" };
        assert_eq!(
            names,
            ["out_for_delivery", "next_stop", "arriving", outcome],
            "stop {stop}"
        );
        let time = |b: &Value| b["data"]["time"].as_f64().unwrap();
        for b in m {
            let c = &b["data"]["customer"];
            assert_eq!(c["ref"], format!("order-{stop}"), "{b}");
            assert!(c["window"].is_array(), "{b}");
        }
        for b in &m[..3] {
            assert!(
                b["data"]["customer"]["eta"].as_f64().unwrap() > time(b) - 60.0,
                "{b}"
            );
        }
        let arriving = &m[2];
        assert!(
            time(arriving) <= arrival + 30.0,
            "stop {stop}: {arriving} vs {arrival}"
        );
        let eta_in = arriving["data"]["customer"]["eta"].as_f64().unwrap() - time(arriving);
        assert!(eta_in <= 600.5, "stop {stop}: arriving {eta_in} s ahead");
        let end = &m[3]["data"];
        assert!(
            (time(&m[3]) - left).abs() < 0.01,
            "stop {stop}: closed at {}, truly {left}",
            time(&m[3])
        );
        if fails {
            failed += 1;
            assert_eq!(end["customer"]["reason"], "nobody home");
        } else {
            delivered += 1;
            assert_eq!(end["customer"]["proof"]["note"], "handed to the customer");
        }
        // One tracking link (two if the replay crossed midnight), for
        // this stop only.
        let tokens: BTreeSet<&str> = m
            .iter()
            .map(|b| b["data"]["customer"]["tracking_token"].as_str().unwrap())
            .collect();
        assert!(tokens.len() <= 2, "{tokens:?}");
        let token = tokens.first().unwrap();
        let code = |path: &str| {
            let o = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .arg(format!("{http}{path}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        assert_eq!(code(&format!("/api/v1/stops/{stop}")), "200", "stop {stop}");
    }
    assert!(
        delivered >= 10 && failed >= 3,
        "{delivered} delivered, {failed} failed"
    );
    // A link opens its own stop only.
    let (a, b) = {
        let mut keys = by_stop.keys();
        (keys.next().unwrap().clone(), keys.next().unwrap().clone())
    };
    let token = by_stop[&a][0]["data"]["customer"]["tracking_token"]
        .as_str()
        .unwrap();
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{http}/api/v1/stops/{b}"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&o.stdout);
    assert!(code == "403" || code == "404", "another stop: {code}");
}

/// An endpoint that fails (500, a timeout, 503 with Retry-After) gets the
/// same event again until it takes it; `410 Gone` disables it, for good
/// across a restart; a forged, altered or replayed request is caught by
/// the receiver's verification or its id.
#[test]
fn failures_are_retried_and_gone_disables_the_endpoint() {
    let dir = tmpdir("hooks-retries");
    let rx = Receiver::start(&dir);
    let cfg = format!("{ANY_DEVICE}\n{}", rx.config(""));
    let s = serve_with(&dir, "", &cfg, &osmand_args());
    let stat = |k: &str| rt().block_on(async { s.stats().await[k] });
    let wait_for = |what: &str, k: &str, n: u64| {
        rt().block_on(eventually(what, async || s.stats().await[k] >= n));
    };
    // 500 twice, then taken: the same webhook id each time.
    rx.answer(serde_json::json!({"status": 500}));
    report(&s, "van-1", 1_767_225_600);
    wait_for("two failed attempts", "webhook_notify_failed_attempts", 2);
    rx.answer(serde_json::json!({}));
    wait_for("delivered", "webhook_notify_delivered", 1);
    let r = rx.records();
    assert!(
        r.len() >= 3 && r.iter().all(|x| x["webhook_id"] == r[0]["webhook_id"]),
        "{r:?}"
    );
    // A timeout (the endpoint's limit is 1 s), then taken.
    let failed = stat("webhook_notify_failed_attempts");
    rx.answer(serde_json::json!({"delay_s": 1.5}));
    report(&s, "van-2", 1_767_225_601);
    wait_for(
        "a timed-out attempt",
        "webhook_notify_failed_attempts",
        failed + 1,
    );
    rx.answer(serde_json::json!({}));
    wait_for("delivered after the timeout", "webhook_notify_delivered", 2);
    // 503 with Retry-After: 1 waits a second, not the schedule's 0.3 s.
    rx.answer(serde_json::json!({"status": 503, "retry_after": 1}));
    report(&s, "van-3", 1_767_225_602);
    rt().block_on(eventually("a 503", async || {
        rx.records().iter().any(|x| x["status"] == 503)
    }));
    rx.answer(serde_json::json!({}));
    wait_for("delivered after Retry-After", "webhook_notify_delivered", 3);
    let r = rx.records();
    let asked = r.iter().find(|x| x["status"] == 503).unwrap();
    let at = |x: &Value| x["at"].as_f64().unwrap();
    let taken = r
        .iter()
        .find(|x| x["status"] == 200 && x["webhook_id"] == asked["webhook_id"] && at(x) > at(asked))
        .unwrap();
    let gap = at(taken) - at(asked);
    assert!(gap >= 0.9, "Retry-After honoured: {gap} s");
    assert!(stat("webhook_notify_failed_attempts") >= 4);
    assert_eq!(stat("webhook_notify_delivered"), 3);
    // Forged, altered, replayed: what the receiver sees.
    let sent = taken;
    let post = |headers: &Value, body: &str| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"]);
        for (k, v) in headers.as_object().unwrap() {
            c.args(["-H", &format!("{k}: {}", v.as_str().unwrap())]);
        }
        c.args([
            "--data-binary",
            body,
            &format!("http://127.0.0.1:{}/hook", rx.port),
        ]);
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let body = sent["body"].as_str().unwrap();
    assert_eq!(
        post(&sent["headers"], &body.replace("online", "arrived")),
        "401",
        "altered body"
    );
    let mut old = sent["headers"].clone();
    old["webhook-timestamp"] = Value::from((sent["at"].as_f64().unwrap() as i64 - 600).to_string());
    assert_eq!(post(&old, body), "401", "replayed ten minutes later");
    assert_eq!(
        post(&sent["headers"], body),
        "200",
        "a replay at once verifies…"
    );
    let r = rx.records();
    assert_eq!(
        r[r.len() - 1]["webhook_id"],
        sent["webhook_id"],
        "…and repeats an id already seen"
    );
    // 410 Gone: disabled; nothing more is sent, even after a restart.
    rx.answer(serde_json::json!({"status": 410}));
    report(&s, "van-4", 1_767_225_603);
    rt().block_on(async {
        eventually("disabled", async || {
            s.stats().await["webhook_notify_disabled"] == 1
        })
        .await;
    });
    rx.answer(serde_json::json!({}));
    let before = rx.records().len();
    drop(s);
    let s = serve_with(&dir, "", &cfg, &osmand_args());
    report(&s, "van-5", 1_767_225_604);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rx.records().len(),
        before,
        "a disabled endpoint gets nothing"
    );
    rt().block_on(async {
        assert_eq!(s.stats().await["webhook_notify_disabled"], 1);
    });
    // `lastmile webhooks` lists it for its fleet, with why it stopped;
    // another fleet sees none of it.
    let http = s.http.clone().unwrap();
    let list = |token: &str| {
        let o = lastmile(&["webhooks", "--http", &http, "--token", token, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let mine = list("acme-reader-token-000001");
    let e = &mine["endpoints"][0];
    assert_eq!(
        (e["name"].as_str(), e["disabled"].as_bool()),
        (Some("notify"), Some(true)),
        "{mine}"
    );
    assert!(
        e["last_error"]["message"].as_str().unwrap().contains("410"),
        "{mine}"
    );
    assert_eq!(
        list("globex-dispatcher-tok-01")["endpoints"],
        serde_json::json!([])
    );
    let o = lastmile(&[
        "webhooks",
        "--http",
        &http,
        "--token",
        "acme-reader-token-000001",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("notify (disabled, fleet acme)"), "{text}");
}

/// A dead endpoint (it accepts connections and never answers) leaves
/// ingest and the other endpoints alone: every ping of a replay is taken,
/// no engine queue fills, a live endpoint gets every event, and the dead
/// one's events wait in the log.
#[test]
fn a_dead_endpoint_never_slows_ingest_or_other_endpoints() {
    let dir = tmpdir("hooks-dead");
    let rx = Receiver::start(&dir);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    let cfg = format!(
        "{}\n[[webhooks]]\nname = \"dead\"\nfleet = \"acme\"\nurl = \"http://127.0.0.1:{port}/\"\nsecrets = [\"{SECRET}\"]\nallow_private = true\ntimeout_s = 1\nretry_schedule_s = [60]\n",
        rx.config("")
    );
    let (trace, _) = simulate(&dir, 50, 600);
    let s = serve_with(&dir, "", &cfg, &[]);
    let o = lastmile(&s.cli_as(&["replay", trace.to_str().unwrap(), "--json"], ACME_DEVICE));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["accepted"], r["sent"], "{r}");
    rt().block_on(async {
        eventually("the first attempt timed out", async || {
            s.stats().await["webhook_dead_failed_attempts"] >= 1
        })
        .await;
        let st = s.stats().await;
        assert_eq!(st["engine_queue_full"], 0, "{st:?}");
        assert_eq!(st["webhook_dead_delivered"], 0);
        assert!(st["webhook_dead_backlog"] > 10, "{st:?}");
        let events = log_ids(&s).await.len() as u64;
        eventually("the live endpoint got every event", async || {
            s.stats().await["webhook_notify_delivered"] >= events
        })
        .await;
    });
    drop(dead);
}

/// A webhook may not reach the server's own network unless allowed: an
/// address in the URL stops the server at start with the reason; a name
/// that resolves there fails each attempt with it.
#[test]
fn webhooks_do_not_reach_private_addresses_unless_allowed() {
    let dir = tmpdir("hooks-ssrf");
    let rx = Receiver::start(&dir);
    let literal = rx.config("").replace("allow_private = true\n", "");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("a/lastmile.toml"),
        format!("{}\n{literal}", common::server::FLEETS),
    )
    .unwrap();
    let o = lastmile(&[
        "serve",
        "--graph",
        common::server::town(&dir).to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--dev",
        "--data-dir",
        dir.join("a/data").to_str().unwrap(),
        "--config",
        dir.join("a/lastmile.toml").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("127.0.0.1 is not a public address"), "{err}");
    let named = literal.replace("127.0.0.1", "localhost");
    let cfg = format!("{ANY_DEVICE}\n{named}");
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let s = serve_with(&dir.join("b"), "", &cfg, &osmand_args());
    report(&s, "van-1", 1_767_225_600);
    rt().block_on(async {
        eventually("a refused attempt", async || {
            s.stats().await["webhook_notify_failed_attempts"] >= 1
        })
        .await;
    });
    assert!(rx.records().is_empty(), "nothing reached the receiver");
}

/// `lastmile webhook-sink`, the benchmarks' receiver, verifies and counts
/// what a server delivers, and says so.
#[test]
fn the_benchmark_sink_verifies_and_counts_deliveries() {
    let dir = tmpdir("hooks-sink");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args([
            "webhook-sink",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            SECRET,
        ])
        .args(["--count", "3", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let cfg = format!(
        "{ANY_DEVICE}\n[[webhooks]]\nname = \"bench\"\nfleet = \"acme\"\nurl = \"http://127.0.0.1:{port}/\"\nsecrets = [\"{SECRET}\"]\nallow_private = true\n"
    );
    let s = serve_with(&dir, "", &cfg, &osmand_args());
    for (i, v) in ["van-1", "van-2", "van-3"].into_iter().enumerate() {
        report(&s, v, 1_767_225_600 + i as u64);
    }
    let out = sink.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["verified"].as_u64(), r["rejected"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    assert_eq!(r["out_of_order"], 0);
}
