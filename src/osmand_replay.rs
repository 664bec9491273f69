//! `lastmile replay TRACE --osmand URL`: a trace's pings sent to the door
//! for driver apps as the apps send them, one position per request over
//! keep-alive HTTP connections: the query form as OsmAnd and the old
//! Traccar Client build it (speed in knots), or the JSON form of the
//! current Traccar Client (`--form json`). Each vehicle is a device named
//! by its trace id, always on the same connection so its positions stay in
//! order. Reports positions/s and each request's latency until its `200`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lastmile_engine::fleet::Histogram;
use lastmile_ingest::protocol::PingRecord;
use lastmile_ingest::replay::TracePings;
use serde_json::json;

/// How positions are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Form {
    /// `GET URL?id=…&lat=…&lon=…&timestamp=…&speed=KNOTS…` (OsmAnd, old Traccar Client).
    Query,
    /// `POST URL` with `{"device_id", "location": {"timestamp", "coords"}}` (Traccar Client).
    Json,
}

pub struct Options {
    /// The door's URL, its path holding the key (`http://host:5055/KEY`).
    pub url: String,
    pub form: Form,
    pub connections: usize,
    /// Total positions per second (none: as fast as the server answers).
    pub rate: Option<f64>,
    /// Trace seconds per wall second, instead of a rate.
    pub speedup: Option<f64>,
}

/// The figures the replay ends with (`--json` keys).
#[derive(Debug, Default)]
pub struct Report {
    pub mode: &'static str,
    pub connections: usize,
    pub sent: u64,
    /// Answered `200`.
    pub accepted: u64,
    /// Answered 4xx: refused.
    pub rejected: u64,
    /// Answered `503` (the engine stayed full) and sent again.
    pub busy: u64,
    pub elapsed_s: f64,
    pub pings_per_s: f64,
    pub ack_p50_us: f64,
    pub ack_p99_us: f64,
    pub ack_max_us: f64,
    /// The first refusal's answer, if any.
    pub first_refusal: Option<String>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "mode": self.mode,
            "connections": self.connections,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "busy": self.busy,
            "elapsed_s": self.elapsed_s,
            "pings_per_s": self.pings_per_s,
            "ack_p50_us": self.ack_p50_us,
            "ack_p99_us": self.ack_p99_us,
            "ack_max_us": self.ack_max_us,
            "first_refusal": self.first_refusal,
        })
    }
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    busy: AtomicU64,
}

fn present(v: u16) -> Option<f64> {
    (v != u16::MAX).then_some(f64::from(v))
}

/// One request for `p` of device `name`.
fn request(
    http: &reqwest::Client,
    o: &Options,
    name: &str,
    p: &PingRecord,
) -> reqwest::RequestBuilder {
    let (lat, lon) = (f64::from(p.lat_e7) / 1e7, f64::from(p.lon_e7) / 1e7);
    let speed = present(p.speed_cms).map(|s| s / 100.0);
    let heading = present(p.heading_cdeg).map(|h| h / 100.0);
    let accuracy = present(p.accuracy_dm).map(|a| a / 10.0);
    match o.form {
        Form::Query => {
            let mut q = vec![
                ("id", name.to_string()),
                ("timestamp", p.time_ms.to_string()),
                ("lat", lat.to_string()),
                ("lon", lon.to_string()),
            ];
            let knots = 3600.0 / 1852.0;
            q.extend(speed.map(|s| ("speed", (s * knots).to_string())));
            q.extend(heading.map(|h| ("bearing", h.to_string())));
            q.extend(accuracy.map(|a| ("accuracy", a.to_string())));
            http.get(&o.url).query(&q)
        }
        Form::Json => http.post(&o.url).json(&json!({
            "device_id": name,
            "location": {
                "timestamp": lastmile_engine::time::format_iso8601_ms(p.time_ms as f64 / 1000.0),
                "coords": {
                    "latitude": lat,
                    "longitude": lon,
                    "speed": speed.unwrap_or(-1.0),
                    "heading": heading.unwrap_or(-1.0),
                    "accuracy": accuracy.unwrap_or(-1.0),
                },
            },
        })),
    }
}

/// Sends every position of `mine` (indices into the trace's pings) in
/// order on one keep-alive connection.
async fn connection(
    o: Arc<Options>,
    trace: Arc<TracePings>,
    mine: Vec<usize>,
    start: Instant,
    totals: Arc<Totals>,
    progress: Arc<AtomicU64>,
) -> Result<(Histogram, Option<String>)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (mut latency, mut refusal) = (Histogram::default(), None);
    let t0 = trace.pings[0].time_ms;
    let per_conn_rate = o.rate.map(|r| r / o.connections as f64);
    for (k, &i) in mine.iter().enumerate() {
        let p = &trace.pings[i];
        let due = match (per_conn_rate, o.speedup) {
            (Some(r), _) => Some(Duration::from_secs_f64(k as f64 / r)),
            (None, Some(s)) => Some(Duration::from_secs_f64((p.time_ms - t0) as f64 / 1e3 / s)),
            _ => None,
        };
        if let Some(d) = due {
            tokio::time::sleep_until((start + d).into()).await;
        }
        let name = &trace.vehicles[p.vehicle as usize];
        loop {
            let sent = Instant::now();
            let resp = request(&http, &o, name, p).send().await?;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            latency.record(sent.elapsed());
            totals.sent.fetch_add(1, Relaxed);
            match status {
                200 => totals.accepted.fetch_add(1, Relaxed),
                503 => {
                    totals.busy.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                _ => {
                    refusal.get_or_insert_with(|| format!("{status} {body}"));
                    totals.rejected.fetch_add(1, Relaxed)
                }
            };
            break;
        }
        progress.fetch_add(1, Relaxed);
    }
    Ok((latency, refusal))
}

/// Replays `trace` through the door at `o.url`.
pub async fn replay(
    o: Options,
    trace: Arc<TracePings>,
    progress: Arc<AtomicU64>,
) -> Result<Report> {
    if o.connections == 0 {
        bail!("--connections must be positive");
    }
    let o = Arc::new(o);
    let mut parts = vec![Vec::new(); o.connections];
    for (i, p) in trace.pings.iter().enumerate() {
        parts[p.vehicle as usize % o.connections].push(i);
    }
    let (start, totals) = (Instant::now(), Arc::new(Totals::default()));
    let tasks: Vec<_> = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|mine| {
            tokio::spawn(connection(
                o.clone(),
                trace.clone(),
                mine,
                start,
                totals.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let (mut latency, mut first_refusal) = (Histogram::default(), None);
    for t in tasks {
        let (mut h, r) = t.await??;
        latency.merge_from(&mut h);
        first_refusal = first_refusal.or(r);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let us = |q: f64| latency.quantile(q).as_secs_f64() * 1e6;
    let accepted = totals.accepted.load(Relaxed);
    Ok(Report {
        mode: match o.form {
            Form::Query => "osmand-query",
            Form::Json => "osmand-json",
        },
        connections: o.connections,
        sent: totals.sent.load(Relaxed),
        accepted,
        rejected: totals.rejected.load(Relaxed),
        busy: totals.busy.load(Relaxed),
        elapsed_s,
        pings_per_s: accepted as f64 / elapsed_s.max(1e-9),
        ack_p50_us: us(0.5),
        ack_p99_us: us(0.99),
        ack_max_us: us(1.0),
        first_refusal,
    })
}
