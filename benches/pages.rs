//! The pages in headless Chromium against a real `lastmile serve`:
//!
//! - `tracking_page/first_render`: from navigation to the stop's status on
//!   screen (the page's own `lastmile-status` mark), loopback, a warm
//!   browser (its cache revalidates assets with their ETags);
//! - `dispatcher_5000/frame`: the time per animation frame of the
//!   dispatcher's map while 5,000 vehicles each report every 5 s (a
//!   simulated fleet replayed in real time); frames per second = 1000 / it.
//!
//! Needs Debian's `chromium` and `chromium-driver` (skipped without).
//! `cargo bench --bench pages`.

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const LASTMILE: &str = env!("CARGO_BIN_EXE_lastmile");

fn run(args: &[&str]) {
    let o = Command::new(LASTMILE).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Serve {
    child: Child,
    addr: String,
    fingerprint: String,
    http: String,
    token: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, graph: &Path) -> Serve {
    let config = dir.join("lastmile.toml");
    std::fs::write(&config, "[limits]\nmax_subscribers = 20000\n").unwrap();
    let mut child = Command::new(LASTMILE)
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--graph", graph.to_str().unwrap()])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .env("LASTMILE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // The server goes on printing: keep reading, or it writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let field = |after: &str| {
        line.split(after)
            .nth(1)
            .unwrap_or_else(|| panic!("{after} in {line}"))
            .split([',', ' '])
            .next()
            .unwrap()
            .trim()
            .trim_end_matches('/')
            .to_string()
    };
    let token = std::fs::read_to_string(dir.join("data/dev-token"))
        .unwrap()
        .trim()
        .to_string();
    Serve {
        addr: field("listening on "),
        fingerprint: field("sha256 "),
        http: field("http on "),
        token,
        child,
    }
}

impl Serve {
    fn cli<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend([
            "--server",
            &self.addr,
            "--fingerprint",
            &self.fingerprint,
            "--token",
            &self.token,
        ]);
        v
    }
}

/// A city, a simulated fleet's day (trace and stops) and a server with
/// its routes: `vehicles` vans over `duration` s.
fn fleet(name: &str, vehicles: usize, duration: u32) -> (PathBuf, Serve, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "lastmile-bench-pages-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let graph = dir.join("city.graph");
    run(&[
        "generate",
        "--edges",
        "200000",
        "--seed",
        "1",
        "--out",
        graph.to_str().unwrap(),
    ]);
    let (trace, stops) = (dir.join("trace.csv"), dir.join("stops.csv"));
    run(&[
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
    let s = serve(&dir, &graph);
    run(&s.cli(&["assign", stops.to_str().unwrap()]));
    (dir, s, trace)
}

fn pages(c: &mut Criterion) {
    if !browser::available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The customer's page: navigation to status, again and again.
    {
        let (dir, s, _) = fleet("track", 20, 600);
        // The second stop of the stops CSV.
        let csv = std::fs::read_to_string(dir.join("stops.csv")).unwrap();
        let stop = csv
            .lines()
            .nth(2)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_string();
        let token = rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/api/v1/stops/{stop}/tracking-token", s.http))
                .bearer_auth(&s.token)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["token"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string()
        });
        let b = rt.block_on(browser::Browser::start("bench-track", 390, 844));
        let url = format!("{}/t/{token}", s.http);
        let mut g = c.benchmark_group("tracking_page");
        g.sample_size(20).measurement_time(Duration::from_secs(20));
        g.bench_function("first_render", |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        b.goto(&url).await;
                        b.until("the status", "return !!document.body.dataset.status").await;
                        let ms = b
                            .js("return performance.getEntriesByName('lastmile-status')[0].startTime", vec![])
                            .await;
                        total += Duration::from_secs_f64(ms.as_f64().unwrap() / 1e3);
                    }
                    total
                })
            })
        });
        g.finish();
        rt.block_on(b.close());
    }

    // The dispatcher's map with 5,000 vans reporting every 5 s.
    {
        let (_dir, s, trace) = fleet("dispatch", 5000, 1800);
        let mut replay = Command::new(LASTMILE)
            .args(s.cli(&[
                "replay",
                trace.to_str().unwrap(),
                "--speedup",
                "1",
                "--connections",
                "4",
            ]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = rt.block_on(browser::Browser::start("bench-dispatch", 1280, 800));
        rt.block_on(async {
            b.goto(&format!("{}/dispatch?token={}", s.http, s.token))
                .await;
            let t = std::time::Instant::now();
            while b
                .js("return +(document.body.dataset.vehicles || 0)", vec![])
                .await
                .as_u64()
                < Some(5000)
            {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "5,000 vans never showed"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut g = c.benchmark_group("dispatcher_5000");
        g.sample_size(10).measurement_time(Duration::from_secs(30));
        g.bench_function("frame", |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let ms = b
                        .client()
                        .execute_async(
                            "const [n, done] = arguments; let k = 0; const t0 = performance.now(); \
                             const f = () => { if (++k >= n) done(performance.now() - t0); else requestAnimationFrame(f); }; \
                             requestAnimationFrame(f);",
                            vec![json!(iters)],
                        )
                        .await
                        .unwrap();
                    Duration::from_secs_f64(ms.as_f64().unwrap() / 1e3)
                })
            })
        });
        g.finish();
        rt.block_on(b.close());
        let _ = replay.kill();
        let _ = replay.wait();
    }
}

criterion_group!(benches, pages);
criterion_main!(benches);
