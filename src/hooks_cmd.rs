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
