//! `lastmile webhooks --http URL`: the webhook endpoints of the token's
//! fleet (an admin's: all), with their backlog, counters and last error,
//! from the server's HTTP side (`GET /api/v1/webhooks`).

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct WebhooksArgs {
    /// The server's HTTP side, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    http: String,
    /// Access token (or set LASTMILE_TOKEN): a reader, dispatcher or admin.
    #[arg(long, env = "LASTMILE_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    json: bool,
}

pub fn webhooks(a: WebhooksArgs) -> Result<()> {
    let url = format!("{}/api/v1/webhooks", a.http.trim_end_matches('/'));
    let body: Value = crate::service::block_on(async {
        let r = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&a.token)
            .send()
            .await
            .with_context(|| url.clone())?;
        let status = r.status();
        let body: Value = r.json().await.with_context(|| url.clone())?;
        if !status.is_success() {
            bail!(
                "{url}: {status}: {}",
                body["message"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    })?;
    if a.json {
        println!("{body}");
        return Ok(());
    }
    let endpoints = body["endpoints"].as_array().cloned().unwrap_or_default();
    if endpoints.is_empty() {
        println!("no webhook endpoints");
        return Ok(());
    }
    for e in &endpoints {
        let state = if e["disabled"] == true {
            "disabled"
        } else if e["delivering"] == false {
            "standing by: another node delivers it"
        } else {
            "active"
        };
        println!(
            "{} ({}, fleet {}) {}: {} delivered, backlog {}, {} failed attempts, {} given up, delivery p50 {:.3} s p99 {:.3} s",
            e["name"].as_str().unwrap_or(""),
            state,
            e["fleet"].as_str().unwrap_or(""),
            e["url"].as_str().unwrap_or(""),
            e["delivered"],
            e["backlog"],
            e["failed_attempts"],
            e["gave_up"],
            e["latency_p50_s"].as_f64().unwrap_or(0.0),
            e["latency_p99_s"].as_f64().unwrap_or(0.0),
        );
        if let Some(m) = e["last_error"]["message"].as_str() {
            println!("  last error: {m}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct SinkArgs {
    /// TCP address to listen on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// The endpoint's secrets (whsec_…), comma-separated.
    #[arg(long)]
    secret: String,
    /// Report and exit after this many verified deliveries.
    #[arg(long)]
    count: u64,
    /// Answer each delivery this many milliseconds late, as a receiver
    /// across a network would (its round trip).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Tally {
    verified: u64,
    rejected: u64,
    /// Deliveries whose event id was not above the one before.
    out_of_order: u64,
    last_id: Option<u64>,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

/// What the sink's handler shares.
struct Sink {
    secrets: Vec<lastmile_hooks::sign::Secret>,
    tally: std::sync::Mutex<Tally>,
    done: tokio::sync::watch::Sender<bool>,
    count: u64,
    delay: std::time::Duration,
}

/// One delivery: verified (counted, its order checked) or refused.
async fn receive(
    axum::extract::State(sink): axum::extract::State<std::sync::Arc<Sink>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    if !sink.delay.is_zero() {
        tokio::time::sleep(sink.delay).await;
    }
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts) = (
        h("webhook-id"),
        h("webhook-timestamp").parse::<u64>().unwrap_or(0),
    );
    let ok = lastmile_hooks::sign::verify(&sink.secrets, id, ts, &body, h("webhook-signature"));
    let mut t = sink.tally.lock().unwrap_or_else(|p| p.into_inner());
    if !ok {
        t.rejected += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let now = std::time::Instant::now();
    t.first.get_or_insert(now);
    t.last = Some(now);
    t.verified += 1;
    let event = id.strip_prefix("evt_").and_then(|n| n.parse::<u64>().ok());
    if let (Some(e), Some(last)) = (event, t.last_id)
        && e <= last
    {
        t.out_of_order += 1;
    }
    t.last_id = event.or(t.last_id);
    if t.verified >= sink.count {
        sink.done.send_replace(true);
    }
    StatusCode::NO_CONTENT
}

/// `lastmile webhook-sink`: a receiver for benchmarks. It verifies each
/// delivery's Standard Webhooks signature, counts, and reports the rate
/// from the first delivery to the `count`-th.
pub fn sink(a: SinkArgs) -> Result<()> {
    let secrets = a
        .secret
        .split(',')
        .map(lastmile_hooks::sign::Secret::parse)
        .collect::<Result<Vec<_>>>()?;
    let (done, mut done_rx) = tokio::sync::watch::channel(false);
    let sink = std::sync::Arc::new(Sink {
        secrets,
        tally: std::sync::Mutex::new(Tally::default()),
        done,
        count: a.count,
        delay: std::time::Duration::from_millis(a.delay_ms),
    });
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(sink.clone());
    crate::service::block_on(async move {
        let l = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        eprintln!("webhook sink on http://{}/", l.local_addr()?);
        axum::serve(l, app)
            .with_graceful_shutdown(async move {
                let _ = done_rx.wait_for(|d| *d).await;
            })
            .await?;
        anyhow::Ok(())
    })?;
    let t = sink.tally.lock().unwrap_or_else(|p| p.into_inner());
    let secs = match (t.first, t.last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let rate = t.verified as f64 / secs.max(1e-9);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"verified": t.verified, "rejected": t.rejected, "out_of_order": t.out_of_order, "seconds": secs, "events_per_s": rate})
        );
    } else {
        println!(
            "received {} verified deliveries in {secs:.2} s ({rate:.0}/s), {} rejected, {} out of order",
            t.verified, t.rejected, t.out_of_order
        );
    }
    Ok(())
}
