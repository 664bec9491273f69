//! `lastmile feeds`: what thousands of open tracking pages cost a server.
//! Against a running `serve --http`, as a dispatcher: plans routes of stops
//! on the map's roads, mints a tracking link per stop, opens each link's
//! event feed (`/api/v1/events?token=…`, as the tracking page does, one
//! connection each), reads the server's resident memory before and after,
//! then completes stops at a steady rate and times each completion from
//! the command's answer to its `completed` event reaching that stop's
//! feed. Run it beside `lastmile replay` for the engine's normal load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use lastmile_roadgraph::Progress;

use crate::progress::Bar;
use crate::service::Conn;

#[derive(Args)]
pub struct FeedsArgs {
    /// The server's HTTP side, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    http: String,
    #[command(flatten)]
    conn: Conn,
    /// Tracking pages (event feeds) to hold open.
    #[arg(long, default_value_t = 1000)]
    feeds: usize,
    /// Stops completed during the measurement.
    #[arg(long, default_value_t = 1000)]
    completions: usize,
    /// Completions per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Stops per planned route.
    #[arg(long, default_value_t = 50)]
    stops_per_route: usize,
    #[arg(long)]
    json: bool,
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.with_context(|| path.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

/// Percentile `q` of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn feeds(a: FeedsArgs) -> Result<()> {
    crate::service::block_on(run(a))
}

async fn run(a: FeedsArgs) -> Result<()> {
    if a.feeds == 0 || a.rate.is_nan() || a.rate <= 0.0 || a.stops_per_route == 0 {
        bail!("--feeds, --rate and --stops-per-route must be positive");
    }
    let target = a.conn.target()?;
    let token = target.token.clone();
    let quic = lastmile_ingest::client::Client::connect(&target).await?;
    let base = a.http.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let get = reqwest::Method::GET;

    // Stops on the map's roads, around its centre.
    let map = call(&http, &base, &token, get.clone(), "/api/v1/map", None).await?;
    let b: Vec<f64> = map["bbox"]
        .as_array()
        .context("no map box")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let (lat, lon) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let near = format!(
        "/api/v1/roads?bbox={},{},{},{}&zoom=17",
        lat - 0.02,
        lon - 0.03,
        lat + 0.02,
        lon + 0.03
    );
    let roads = call(&http, &base, &token, get.clone(), &near, None).await?;
    let places: Vec<Value> = roads["roads"]
        .as_array()
        .context("no roads")?
        .iter()
        .filter_map(|r| r["line"].as_array()?.first().cloned())
        .collect();
    if places.is_empty() {
        bail!("no roads near the map's centre");
    }
    let bar = Bar::new();
    let routes = a.feeds.div_ceil(a.stops_per_route);
    bar.stage_count("planning routes", routes as u64);
    let mut stops = Vec::with_capacity(a.feeds);
    for r in 0..routes {
        let plan: Vec<Value> = (0..a.stops_per_route)
            .map(|k| r * a.stops_per_route + k)
            .take_while(|&i| i < a.feeds)
            .map(|i| {
                let stop = format!("feeds-s{i:06}");
                stops.push(stop.clone());
                json!({"stop": stop, "position": places[i % places.len()]})
            })
            .collect();
        let path = format!("/api/v1/vehicles/feeds-v{r:05}/route");
        call(
            &http,
            &base,
            &token,
            reqwest::Method::PUT,
            &path,
            Some(json!({"stops": plan})),
        )
        .await?;
        bar.inc(1);
    }
    bar.finish();

    bar.stage_count("minting tracking links", a.feeds as u64);
    let gate = Arc::new(Semaphore::new(32));
    let mut minted = Vec::with_capacity(a.feeds);
    for s in &stops {
        let (http, base, token, gate, s) = (
            http.clone(),
            base.clone(),
            token.clone(),
            gate.clone(),
            s.clone(),
        );
        minted.push(tokio::spawn(async move {
            let _p = gate.acquire().await;
            let path = format!("/api/v1/stops/{s}/tracking-token");
            let t = call(
                &http,
                &base,
                &token,
                reqwest::Method::POST,
                &path,
                Some(json!({"ttl_s": 86_400})),
            )
            .await?;
            Ok::<_, anyhow::Error>(t["token"].as_str().unwrap_or_default().to_string())
        }));
    }
    let mut links = Vec::with_capacity(a.feeds);
    for m in minted {
        links.push(m.await??);
        bar.inc(1);
    }
    bar.finish();

    let rss = async || {
        lastmile_ingest::replay::server_stats(&quic)
            .await
            .get("process_rss_bytes")
            .copied()
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss().await;

    // One connection per page, as browsers hold them.
    bar.stage_count("opening feeds", a.feeds as u64);
    let opened = Arc::new(AtomicUsize::new(0));
    let (tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = Vec::with_capacity(a.feeds);
    let gate = Arc::new(Semaphore::new(256));
    for (i, link) in links.iter().enumerate() {
        let client = reqwest::Client::builder().build()?;
        let url = format!("{base}/api/v1/events?token={link}");
        let (tx, opened, gate) = (tx.clone(), opened.clone(), gate.clone());
        readers.push(tokio::spawn(async move {
            let resp = {
                let _p = gate.acquire().await;
                client.get(url).send().await
            };
            let Ok(resp) = resp else { return };
            if !resp.status().is_success() {
                return;
            }
            opened.fetch_add(1, Relaxed);
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if block
                        .lines()
                        .any(|l| l == "event: completed" || l == "event:completed")
                    {
                        let _ = tx.send((i, Instant::now()));
                    }
                }
            }
        }));
    }
    drop(tx);
    let t = Instant::now();
    while opened.load(Relaxed) < a.feeds && t.elapsed() < Duration::from_secs(120) {
        bar.set(opened.load(Relaxed) as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();
    let open = opened.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss().await;

    // Completions at a steady rate, each timed to its feed.
    let n = a.completions.min(open);
    bar.stage_count("completing stops", n as u64);
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; a.feeds]));
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now();
    let mut done = Vec::with_capacity(n);
    for (i, s) in stops.iter().enumerate().take(n) {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (http, base, token, sent, s) = (
            http.clone(),
            base.clone(),
            token.clone(),
            sent.clone(),
            s.clone(),
        );
        done.push(tokio::spawn(async move {
            let path = format!("/api/v1/stops/{s}/complete");
            let r = call(
                &http,
                &base,
                &token,
                reqwest::Method::POST,
                &path,
                Some(json!({})),
            )
            .await;
            if r.is_ok() {
                sent.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(Instant::now());
            }
            r.map(|_| ())
        }));
        bar.inc(1);
    }
    let mut refused = 0;
    for d in done {
        if d.await.is_err() {
            refused += 1;
        }
    }
    bar.finish();
    let mut got = vec![None; a.feeds];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.iter().take(n).any(Option::is_none) {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some((i, at))) => got[i] = Some(at),
            _ => break,
        }
    }
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ms: Vec<f64> = (0..n)
        .filter_map(|i| {
            let (s, g) = (sent[i]?, got[i]?);
            // An event may reach the feed before the command's answer
            // reaches us: that is no latency at all.
            Some(g.saturating_duration_since(s).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let missing = n - ms.len();
    for r in readers {
        r.abort();
    }
    let per_feed = (after as f64 - before as f64) / open.max(1) as f64;
    let report = json!({
        "feeds_open": open,
        "completions": n,
        "events_missing": missing,
        "commands_refused": refused,
        "latency_ms": {"p50": pct(&ms, 0.5), "p90": pct(&ms, 0.9), "p99": pct(&ms, 0.99), "max": pct(&ms, 1.0)},
        "server_rss_before_mb": before as f64 / 1e6,
        "server_rss_after_mb": after as f64 / 1e6,
        "server_bytes_per_feed": per_feed.round(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "feeds: {open} open, {n} stops completed at {:.0}/s: event to feed p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({missing} missing, {refused} refused); server memory {:.0} → {:.0} MB, {:.1} KB per feed",
            a.rate,
            pct(&ms, 0.5),
            pct(&ms, 0.99),
            pct(&ms, 1.0),
            before as f64 / 1e6,
            after as f64 / 1e6,
            per_feed / 1e3
        );
    }
    quic.close();
    Ok(())
}
