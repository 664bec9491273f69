//! A `lastmile serve` child process for end-to-end tests: a small synthetic
//! town, simulated days on it, and a dev-mode server with two fleets and a
//! token per role, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lastmile_ingest::client::{Client, Subscription, Target};
use lastmile_ingest::protocol::{PingRecord, Request, Response, WireEvent};
use lastmile_ingest::tls::Trust;

use super::lastmile;

pub struct Server {
    child: Child,
    /// HOST:PORT it listens on.
    pub addr: String,
    /// SHA-256 of its dev certificate.
    pub fingerprint: String,
    /// Its dev admin token.
    pub token: String,
    /// Its data directory (dev certificate and token).
    pub data: PathBuf,
    /// HOST:PORT of its metrics endpoint, if started with `--metrics`.
    pub metrics: Option<String>,
    /// `http://HOST:PORT` of its HTTP side, if started with `--http`.
    pub http: Option<String>,
    /// `http://HOST:PORT` of its door for driver apps, if started with `--osmand`.
    pub osmand: Option<String>,
}

impl Server {
    /// Stops it as a service manager would (SIGTERM) and waits: it drains,
    /// checkpoints and exits. Returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return sent && status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it outright (SIGKILL): no drain, no checkpoint.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small town, simulated once per test directory.
pub fn town(dir: &Path) -> PathBuf {
    let g = dir.join("town.graph");
    if !g.exists() {
        let o = lastmile(&[
            "generate",
            "--edges",
            "20000",
            "--seed",
            "3",
            "--out",
            g.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    g
}

/// A day on the town (see [`simulate_on`]).
pub fn simulate(dir: &Path, vehicles: usize, duration: u32) -> (PathBuf, PathBuf) {
    simulate_on(&town(dir), dir, vehicles, duration)
}

/// `lastmile simulate` of a fleet on `graph` (5 s pings, 5 m noise, seed
/// 1): the trace and the stops CSV in `dir`.
pub fn simulate_on(graph: &Path, dir: &Path, vehicles: usize, duration: u32) -> (PathBuf, PathBuf) {
    let (trace, stops) = (dir.join("trace.csv"), dir.join("stops.csv"));
    let o = lastmile(&[
        "simulate",
        graph.to_str().unwrap(),
        "--vehicles",
        &vehicles.to_string(),
        "--duration",
        &duration.to_string(),
        "--interval",
        "5",
        "--noise",
        "5",
        "--seed",
        "1",
        "--out",
        trace.to_str().unwrap(),
        "--stops-out",
        stops.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (trace, stops)
}

/// 2026-01-01T00:00:00Z in ms: where the tests' hand-made pings start.
pub const T0_MS: i64 = 1_767_225_600_000;

/// A position-only ping of `vehicle` at `time_ms`, at (lat, lon) in 1e-7
/// degrees.
pub fn ping_at(vehicle: u64, time_ms: i64, (lat_e7, lon_e7): (i32, i32)) -> PingRecord {
    PingRecord {
        vehicle,
        time_ms,
        lat_e7,
        lon_e7,
        speed_cms: u16::MAX,
        heading_cdeg: u16::MAX,
        accuracy_dm: u16::MAX,
        flags: 0,
    }
}

/// A ping of `vehicle` `k` seconds after [`T0_MS`], in the test town.
pub fn ping(vehicle: u64, k: i64) -> PingRecord {
    ping_at(vehicle, T0_MS + k * 1000, (470_000_000, 80_000_000))
}

pub const FLEETS: &str = r#"
[engine]
shards = 1
tick_ms = 200

[[fleets]]
name = "acme"
vehicles = [[0, 999]]

[[fleets]]
name = "globex"
vehicles = [[1000, 1999]]

[[tokens]]
token = "acme-device-token-000001"
role = "device"
fleet = "acme"

[[tokens]]
token = "acme-reader-token-000001"
role = "reader"
fleet = "acme"

[[tokens]]
token = "acme-dispatcher-token-01"
role = "dispatcher"
fleet = "acme"

[[tokens]]
token = "globex-dispatcher-tok-01"
role = "dispatcher"
fleet = "globex"

[[tokens]]
token = "globex-device-token-0001"
role = "device"
fleet = "globex"
"#;

/// Starts a dev-mode server on the town with the fleets above, plus
/// `engine_extra` lines in `[engine]` and `extra` sections after.
pub fn serve(dir: &Path, engine_extra: &str, extra: &str) -> Server {
    serve_with(dir, engine_extra, extra, &[])
}

/// [`serve`] with more `lastmile serve` arguments.
pub fn serve_with(dir: &Path, engine_extra: &str, extra: &str, args: &[&str]) -> Server {
    serve_on(&town(dir), dir, engine_extra, extra, args)
}

/// [`serve_with`] on another graph (an imported map).
pub fn serve_on(
    graph: &Path,
    dir: &Path,
    engine_extra: &str,
    extra: &str,
    args: &[&str],
) -> Server {
    let fleets = FLEETS.replace("tick_ms = 200\n", &format!("tick_ms = 200\n{engine_extra}"));
    let config = dir.join("lastmile.toml");
    std::fs::write(&config, format!("{fleets}\n{extra}")).unwrap();
    let data = dir.join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args([
            "serve",
            "--graph",
            graph.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--dev",
        ])
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(args)
        .env("LASTMILE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lastmile serve");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server ready line");
    assert!(line.starts_with("listening on "), "{line}");
    let addr = line.split_whitespace().nth(2).unwrap().to_string();
    let metrics = line
        .split("metrics on http://")
        .nth(1)
        .map(|m| m.split([',', '/']).next().unwrap_or(m).to_string());
    let after = |label: &str| {
        line.split(label).nth(1).map(|h| {
            h.split(',')
                .next()
                .unwrap_or(h)
                .trim_end_matches('/')
                .to_string()
        })
    };
    let (http, osmand) = (after("http on "), after("driver apps on "));
    let fingerprint = line
        .split("sha256 ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(data.join("dev-token"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        child,
        addr,
        fingerprint,
        token,
        data,
        metrics,
        http,
        osmand,
    }
}

/// What the tests do with a running server.
pub trait ServerExt {
    fn target(&self, token: &str) -> Target;
    /// A target offering protocol version 1 only (numeric ids).
    fn target_v1(&self, token: &str) -> Target {
        Target {
            version: 1,
            ..self.target(token)
        }
    }
    fn cli<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        self.cli_as(args, self.admin_token())
    }
    /// A client command's arguments for this server, with `token`.
    fn cli_as<'a>(&'a self, args: &[&'a str], token: &'a str) -> Vec<&'a str>;
    fn admin_token(&self) -> &str;
    async fn admin(&self) -> Client;
    async fn stats(&self) -> std::collections::HashMap<String, u64>;
}

impl ServerExt for Server {
    fn target(&self, token: &str) -> Target {
        Target::new(
            &self.addr,
            Trust::Pin(self.fingerprint.clone()),
            token.to_string(),
        )
        .unwrap()
    }

    fn cli_as<'a>(&'a self, args: &[&'a str], token: &'a str) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend([
            "--server",
            &self.addr,
            "--fingerprint",
            &self.fingerprint,
            "--token",
            token,
        ]);
        v
    }

    fn admin_token(&self) -> &str {
        &self.token
    }

    async fn admin(&self) -> Client {
        Client::connect(&self.target(&self.token)).await.unwrap()
    }

    async fn stats(&self) -> std::collections::HashMap<String, u64> {
        let c = self.admin().await;
        let Response::Stats(s) = c.call(&Request::GetStats).await.unwrap() else {
            panic!()
        };
        c.close();
        s.into_iter().collect()
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls until `f` holds (the engine works asynchronously).
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The name `lastmile simulate` gives vehicle `i` in its CSVs.
pub fn veh(i: u64) -> String {
    format!("veh-{i:05}")
}

/// Binds, on `c`'s connection, each number as the ping alias of the
/// vehicle named by it (protocol version 2: ping records carry aliases).
pub async fn bind_numbers(c: &Client, ids: &[u64]) {
    c.bind(ids.iter().map(|&i| (i, i.to_string())).collect())
        .await
        .unwrap();
}

/// A place on a road of the test town.
pub const HERE: (i32, i32) = (470_000_000, 80_000_000);

/// A stop planned at [`HERE`], named `id`, for `customer`.
pub fn planned(id: &str, customer: &str) -> lastmile_ingest::protocol::WireStop {
    lastmile_ingest::protocol::WireStop {
        id: id.into(),
        lat_e7: HERE.0,
        lon_e7: HERE.1,
        window_start_ms: lastmile_ingest::protocol::NO_TIME,
        window_end_ms: lastmile_ingest::protocol::NO_TIME,
        service_s: 60.0,
        customer_ref: customer.into(),
    }
}

/// An HTTP request to `s`'s HTTP side with `token` and a JSON body (or
/// none): the status and the JSON answer (`Null` if none).
pub async fn send(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", s.http.as_ref().expect("serve --http"));
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Every event from id `from` on, of every kind.
pub fn everything_from(from: u64) -> Request {
    Request::Subscribe {
        from,
        kinds: 0,
        vehicles: vec![],
        stops: vec![],
    }
}

/// Reads a subscription's events into `into` until it is quiet for `quiet`.
pub async fn collect(
    sub: &mut Subscription,
    quiet: Duration,
    into: &mut std::collections::BTreeMap<u64, WireEvent>,
) {
    while let Ok(Ok(Some(f))) = tokio::time::timeout(quiet, sub.next()).await {
        match f {
            Response::Events(evs) => {
                for e in evs {
                    into.insert(e.id, e);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Replays `trace` with `device`'s token while `reader` listens to the
/// event kinds in `kinds` (a SUBSCRIBE mask): every event heard once the
/// server has processed every ping, by id.
pub fn replay_and_hear(
    s: &Server,
    trace: &Path,
    device: &str,
    reader: &str,
    kinds: u64,
) -> std::collections::BTreeMap<u64, WireEvent> {
    rt().block_on(async {
        let c = Client::connect(&s.target(reader)).await.unwrap();
        let mut sub = c
            .subscribe(&Request::Subscribe {
                from: lastmile_ingest::protocol::FROM_NOW,
                kinds,
                vehicles: vec![],
                stops: vec![],
            })
            .await
            .unwrap();
        let o = lastmile(&s.cli_as(&["replay", trace.to_str().unwrap()], device));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        eventually("every ping processed", async || {
            let st = s.stats().await;
            st["engine_pings_processed"] == st["pings_accepted"]
        })
        .await;
        let mut events = std::collections::BTreeMap::new();
        collect(&mut sub, Duration::from_secs(2), &mut events).await;
        events
    })
}
