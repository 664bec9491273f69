//! The operator's window: Prometheus metrics (`GET /metrics`, text
//! exposition format) and a health check (`GET /health`: 200 when the graph
//! is loaded and every shard is alive, 503 otherwise) on a plain HTTP port
//! of their own, kept off the QUIC port. A deliberately small HTTP/1.1
//! responder: one request per connection, bounded request size, time and
//! concurrent connections, nothing but GET.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Shared;

const MAX_REQUEST: usize = 8 * 1024;
const MAX_CONNECTIONS: usize = 64;

/// Counters that only ever grow (exposed as Prometheus counters); every
/// other figure is a gauge.
fn is_gauge(name: &str) -> bool {
    name.ends_with("_open")
        || name.starts_with("process_")
        || name.starts_with("engine_latency")
        || name == "engine_vehicles"
        || name.starts_with("engine_queue_depth")
        || name.starts_with("checkpoint_") && name != "checkpoint_failures"
        || name == "store_commit_p99_us"
        || name == "store_failed"
        || name == "memory_bound_bytes"
        || name == "memory_over"
}

/// Counters shown as one labelled family: the stats prefix, the metric, the
/// label (e.g. `pings_rejected_speed` is
/// `lastmile_pings_rejected_total{reason="speed"}`).
const FAMILIES: [(&str, &str, &str); 3] = [
    ("pings_rejected_", "pings_rejected_total", "reason"),
    ("matcher_pings_", "matcher_pings_total", "status"),
    ("events_kind_", "events_total", "kind"),
];

/// The metrics page for the server's current counters.
pub fn render(shared: &Shared) -> String {
    let mut out = String::new();
    let mut typed = [false; FAMILIES.len()];
    for (name, value) in shared.stats_snapshot() {
        // Some counters form one family, labelled.
        let family = FAMILIES
            .iter()
            .enumerate()
            .find_map(|(i, f)| Some((i, f, name.strip_prefix(f.0)?)));
        if let Some((i, (_, metric, label), value_label)) = family {
            if !std::mem::replace(&mut typed[i], true) {
                out.push_str(&format!("# TYPE lastmile_{metric} counter\n"));
            }
            out.push_str(&format!(
                "lastmile_{metric}{{{label}=\"{value_label}\"}} {value}\n"
            ));
            continue;
        }
        let (metric, kind) = if is_gauge(&name) {
            (format!("lastmile_{name}"), "gauge")
        } else {
            (format!("lastmile_{name}_total"), "counter")
        };
        out.push_str(&format!("# TYPE {metric} {kind}\n{metric} {value}\n"));
    }
    let q = shared.request_latency();
    out.push_str("# TYPE lastmile_request_seconds summary\n");
    for quantile in [0.5, 0.9, 0.99] {
        out.push_str(&format!(
            "lastmile_request_seconds{{quantile=\"{quantile}\"}} {:.6}\n",
            q.quantile(quantile).as_secs_f64()
        ));
    }
    out.push_str(&format!("lastmile_request_seconds_count {}\n", q.count()));
    let (healthy, _) = health(shared);
    out.push_str(&format!(
        "# TYPE lastmile_up gauge\nlastmile_up {}\n",
        healthy as u8
    ));
    out
}

/// Whether the service can do its job, and a one-line JSON saying why.
pub fn health(shared: &Shared) -> (bool, String) {
    match shared.sink.engine() {
        Some(e) => {
            let alive = e.shards_alive();
            // A failed journal commit refuses every command until a restart.
            let store_ok = shared
                .durable
                .as_ref()
                .is_none_or(|d| d.store.failure().is_none());
            let ok = alive == e.shard_count() && store_ok;
            (
                ok,
                format!(
                    "{{\"status\":\"{}\",\"graph_loaded\":true,\"edges\":{},\"shards\":{},\"shards_alive\":{alive},\"store_ok\":{store_ok},\"memory_over\":{}}}",
                    if ok { "ok" } else { "degraded" },
                    e.graph().num_edges(),
                    e.shard_count(),
                    shared.memory.over()
                ),
            )
        }
        None => (
            true,
            "{\"status\":\"ok\",\"graph_loaded\":false,\"sink\":\"counting\"}".into(),
        ),
    }
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the limit: close at once rather than queue.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &shared)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, kind, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", render(shared)),
        (b"GET", b"/health") => {
            let (ok, body) = health(shared);
            (
                if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "application/json",
                body + "\n",
            )
        }
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
